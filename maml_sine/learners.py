"""Learners and protocols as data: what is trained, and on what tasks. Both are frozen records,
written as they are into checkpoints and results.json, so a file says what it holds.

A new learner is one entry in LEARNERS; a new protocol, one `Protocol` and, if it draws its
tasks in a new way, one stream class in STREAMS.
"""

from dataclasses import asdict, dataclass

from maml_sine.core import Algorithm
from utils import EPISODES, QUERY_POINTS, SUPPORT_POINTS


@dataclass(frozen=True)
class Learner:
    """A learner: how it is meta-trained (`algorithm`, None for the random initialization, never trained),
    the network's number of inputs (3 for the oracle: x, and the task's amplitude and phase), and the
    step size of the SGD that adapts it to a new task at test time."""

    algorithm: Algorithm | None
    inputs: int = 1
    test_lr: float = Algorithm(num_steps=0).inner_lr

    def record(self) -> dict:
        return asdict(self)


LEARNERS = {
    "maml": Learner(Algorithm(num_steps=1)),
    "first_order_maml": Learner(Algorithm(num_steps=1, first_order=True)),
    "pretrained": Learner(Algorithm(num_steps=0)),
    "scratch": Learner(None),
    "oracle": Learner(Algorithm(num_steps=0), inputs=3),
}


@dataclass(frozen=True)
class Protocol:
    """How learners are meta-trained: `stream` names the task stream (a key of STREAMS), each meta-update
    takes `tasks_per_update` tasks of `support_points` + `query_points` points, `updates` times."""

    stream: str
    support_points: int
    query_points: int
    tasks_per_update: int
    updates: int

    def record(self) -> dict:
        return asdict(self)

    def streams(self, seeds: list[tuple[int, int]], inputs: int = 1):
        """One task stream per seed, as `next_batch()` gives them: four tensors (N, B, n, d or 1)."""
        from maml_sine.streams import STREAMS  # the streams draw tasks; this module only names them

        return STREAMS[self.stream](seeds, self, inputs)


def assignment_protocol(k: int = SUPPORT_POINTS, updates: int = EPISODES) -> Protocol:
    """`python test.py`'s and the graders': one task per update, K support and 40 query points, 40,000 updates."""
    return Protocol("assignment", k, QUERY_POINTS, tasks_per_update=1, updates=updates)


ASSIGNMENT = assignment_protocol()


def paper_protocol(k: int, updates: int = 70_000) -> Protocol:
    """Finn et al.'s: 25 tasks per update, each of K support and K query points, 70,000 updates."""
    return Protocol("paper", k, k, tasks_per_update=25, updates=updates)


@dataclass(frozen=True)
class Study:
    """A held-out evaluation: `learners` (keys of LEARNERS), one model of each per training protocol, each
    section (key, K it was trained at, K it is fine-tuned on) scored by each of `scores` ("grid": the
    100-point grid; "query": K new points per task), with the median beside the mean if `medians`."""

    name: str
    learners: tuple[str, ...]
    training: tuple[Protocol, ...]
    sections: tuple[tuple[str, int, int], ...]
    scores: tuple[str, ...]
    medians: bool

    def record(self) -> dict:
        return asdict(self)


def assignment_study(updates: int = EPISODES) -> Study:
    """The project's evaluation: the learners of `python test.py` and its variants, trained on the
    assignment's stream at K = 10, fine-tuned on 5 or 10 points, scored on the grid."""
    sections = (("5", SUPPORT_POINTS, 5), ("10", SUPPORT_POINTS, 10))
    training = (assignment_protocol(updates=updates),)
    return Study("assignment", ("maml", "first_order_maml", "pretrained", "scratch"), training, sections,
                 scores=("grid",), medians=False)  # fmt: skip


K10_MODEL_AT_K5 = "5, trained at K=10"  # the paper study's section of the K = 10 models fine-tuned on 5 points


def paper_study(updates: int = 70_000) -> Study:
    """Finn et al.'s: MAML, the pretrained network and the oracle, one model per K, scored on K new points per
    task (as the authors' code scores) and on the grid; the K = 10 models are also fine-tuned on 5 points,
    as the paper's text describes."""
    sections = (("5", 5, 5), ("10", 10, 10), (K10_MODEL_AT_K5, 10, 5))
    return Study("paper", ("maml", "pretrained", "oracle"), (paper_protocol(5, updates), paper_protocol(10, updates)),
                 sections, scores=("query", "grid"), medians=True)  # fmt: skip


STUDIES = {"assignment": assignment_study, "paper": paper_study}
