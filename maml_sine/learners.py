"""Learners and protocols as data: what is trained, and on what tasks. Both are frozen records,
written as they are into checkpoints and results.json, so a file says what it holds.

A new learner is one entry in LEARNERS; a new protocol, one `Protocol` and, if it draws its
tasks in a new way, one stream class in STREAMS.
"""

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch

from assignment import INNER_LR
from maml_sine.anil import ANIL
from maml_sine.cavia import CAVIA
from maml_sine.core import Algorithm
from maml_sine.maml_plus_plus import MAMLPlusPlus
from maml_sine.meta_sgd import MetaSGD
from maml_sine.reptile import Reptile
from utils import EPISODES, QUERY_POINTS, SUPPORT_POINTS

REGULARIZERS = ("none", "l2", "running_mean")
# How a network's weights are drawn from its torch seed (`batched.initializations_from_seeds`): "torch", as
# `torch.nn.Linear` draws them (the assignment's); "truncated_normal", as Finn et al.'s code does (std 0.01, cut at
# two standard deviations). Biases start at zero in both.
INITIALIZATIONS = ("torch", "truncated_normal")
STARTS = ("shared", "independent")  # where a multi-task baseline's regressors start from


@dataclass(frozen=True)
class MultiTask:
    """How the regressors of one of the paper's multi-task baselines are trained (`maml_sine.multitask`)."""

    regularizer: str = "none"
    weight_decay: float = 0.0  # the L2 coefficient of "l2" and "running_mean"
    regressors: int = 500
    at_once: int = 100  # regressors of a seed trained in lockstep, a group at a time
    points: int = 25  # new points of its task per update
    adam_lr: float = 0.01
    max_updates: int = 3000
    target_mse: float = 0.02  # on 100 evenly spaced x in [-5, 5]
    check_every: int = 100  # updates between measurements of the regressors' fit
    start: str = "shared"  # every regressor of a seed from its initialization, or each from a random one of its own

    def __post_init__(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if (self.regularizer == "none") != (self.weight_decay == 0):
            raise ValueError(f"a weight decay goes with a regularizer: got {self.regularizer!r}, {self.weight_decay}")
        if min(self.regressors, self.at_once, self.points, self.max_updates, self.check_every) < 1:
            raise ValueError(f"counts must be at least 1: {self}")

    def record(self) -> dict:
        record = asdict(self)
        if self.start == "shared":  # recorded as checkpoints written before `start` existed record it: still valid
            del record["start"]
        return record

    def protocol(self) -> "Protocol":
        """Each regressor's updates: one task, `points` new query points (and one support point, unused: a
        network without inner steps is fitted to the query points)."""
        return Protocol("one_task", 1, self.points, tasks_per_update=1, updates=self.max_updates)


LEARNED = "learned"  # a learner's test_lr when it adapts at test time as it learned to, by its own `inner_step`


@dataclass(frozen=True)
class Learner:
    """A learner: how it is trained (`algorithm`: an `Algorithm` of the MAML family, or the multi-task
    baseline's regressors, or None for the random initialization, never trained), the network's number of
    inputs (3 for the oracle: x, and the task's amplitude and phase), how its weights are drawn
    (INITIALIZATIONS), and the step size of the SGD that adapts it to a new task at test time (0: not
    adapted; None: tuned on tasks of their own, `evaluation.tuned_test_lr`; LEARNED: no SGD of ours, the
    algorithm's own `inner_step`, e.g. with the step sizes it learned)."""

    algorithm: Algorithm | MultiTask | None
    inputs: int = 1
    test_lr: float | str | None = INNER_LR
    updates: int | None = None  # its own paper's recipe, where it departs from the study's protocol (no more updates)
    tasks_per_update: int | None = None
    initialization: str = "torch"

    def __post_init__(self) -> None:
        if self.initialization not in INITIALIZATIONS:
            raise ValueError(f"initialization must be one of {INITIALIZATIONS}, got {self.initialization!r}")

    def trained_under(self, protocol: "Protocol") -> "Protocol":
        """The protocol it is trained under in a study of `protocol`: that one, with its own recipe's tasks per update
        and number of updates (never more than the study's, so a short run stays short) where it has them."""
        return replace(
            protocol,
            updates=min(protocol.updates, self.updates or protocol.updates),
            tasks_per_update=self.tasks_per_update or protocol.tasks_per_update,
        )

    @property
    def network_inputs(self) -> int:
        """The inputs of the network it starts from: its tasks' `inputs`, and whatever its algorithm adds."""
        return self.algorithm.network_inputs(self.inputs) if isinstance(self.algorithm, Algorithm) else self.inputs

    def test_step(self, lr: float | str) -> float | Algorithm:
        """What adapts it at test time, given its chosen `lr`: SGD at that step size, or its own algorithm."""
        return self.algorithm if lr == LEARNED else lr

    def record(self) -> dict:
        return asdict(self)

    def training(self) -> dict:
        """What its training depends on (not how it is tested): learners that share it share their models."""
        trained = {"algorithm": None if self.algorithm is None else asdict(self.algorithm), "inputs": self.inputs}
        if self.initialization != "torch":  # the record checkpoints of the default were written under stays theirs
            trained["initialization"] = self.initialization
        return trained


ALPHA_OF_THE_CODE = 0.001  # the authors' code's `update_lr` default, which their sine command keeps
# The largest weight decay of WEIGHT_DECAYS at which the regressors still fit their tasks as well as without
# (scripts/weight_decay_sweep.py; docs/paper_protocol/weight_decay_sweep.json).
L2_WEIGHT_DECAY = 0.001
RUNNING_MEAN_WEIGHT_DECAY = 0.003
L2_WEIGHT_DECAY_INDEPENDENT = 0.003  # the same rule, the regressors each from a random start of its own
RUNNING_MEAN_WEIGHT_DECAY_INDEPENDENT = 0.003

LEARNERS = {
    "maml": Learner(Algorithm(num_steps=1)),
    "maml_alpha0.001": Learner(Algorithm(num_steps=1, inner_lr=ALPHA_OF_THE_CODE), test_lr=ALPHA_OF_THE_CODE),
    "maml_alpha0.001_code_init": Learner(
        Algorithm(num_steps=1, inner_lr=ALPHA_OF_THE_CODE), test_lr=ALPHA_OF_THE_CODE, initialization="truncated_normal"
    ),
    # The alpha = 0.01 model fine-tuned with smaller steps than it was trained for.
    "maml_tested_at_0.005": Learner(Algorithm(num_steps=1), test_lr=0.005),
    "maml_tested_at_0.001": Learner(Algorithm(num_steps=1), test_lr=ALPHA_OF_THE_CODE),
    "first_order_maml": Learner(Algorithm(num_steps=1, first_order=True)),
    "pretrained": Learner(Algorithm(num_steps=0)),
    "pretrained_alpha0.001": Learner(Algorithm(num_steps=0), test_lr=ALPHA_OF_THE_CODE),
    "pretrained_tuned": Learner(Algorithm(num_steps=0), test_lr=None),
    "meta_sgd": Learner(MetaSGD(num_steps=1), test_lr=LEARNED),
    "anil": Learner(ANIL(num_steps=1), test_lr=LEARNED),
    "cavia": Learner(CAVIA(num_steps=1), test_lr=LEARNED),
    # Clipped: unclipped, seed 1 of Meta-SGD's protocol met meta-gradients of 1e25 by update 3,217 and overflowed.
    "maml_plus_plus": Learner(MAMLPlusPlus(num_steps=5, max_meta_gradient_norm=100.0), test_lr=LEARNED),
    "reptile": Learner(Reptile(num_steps=5, inner_lr=0.02, meta_lr=0.1), test_lr=LEARNED),
    # Their papers' own budgets: CAVIA's code takes 50,000 updates of 25 tasks; Reptile's sine demo 30,000 of one task.
    "cavia_recipe": Learner(CAVIA(num_steps=1), test_lr=LEARNED, updates=50_000),
    "reptile_recipe": Learner(
        Reptile(num_steps=5, inner_lr=0.02, meta_lr=0.1), test_lr=LEARNED, updates=30_000, tasks_per_update=1
    ),
    "scratch": Learner(None),
    # Told the task: scored as it is (SGD at step size 0), and fine-tuned as the authors' code does, at each alpha.
    "oracle": Learner(Algorithm(num_steps=0), inputs=3, test_lr=0.0),
    "oracle_alpha0.01": Learner(Algorithm(num_steps=0), inputs=3),
    "oracle_alpha0.001": Learner(Algorithm(num_steps=0), inputs=3, test_lr=ALPHA_OF_THE_CODE),
    "multitask": Learner(MultiTask(), test_lr=None),
    "multitask_l2": Learner(MultiTask("l2", L2_WEIGHT_DECAY), test_lr=None),
    "multitask_running_mean": Learner(MultiTask("running_mean", RUNNING_MEAN_WEIGHT_DECAY), test_lr=None),
    # The next weight decay of the sweep, at which a third of the regressors no longer fit: how much the rows depend
    # on the reading of "as high as possible without significantly deterring performance".
    "multitask_l2_wd0.01": Learner(MultiTask("l2", 0.01), test_lr=None),
    "multitask_running_mean_wd0.01": Learner(MultiTask("running_mean", 0.01), test_lr=None),
    # As Appendix C.1 says: every regressor "initialized randomly", each from a start of its own.
    "multitask_independent": Learner(MultiTask(start="independent"), test_lr=None),
    "multitask_l2_independent": Learner(
        MultiTask("l2", L2_WEIGHT_DECAY_INDEPENDENT, start="independent"), test_lr=None
    ),
    "multitask_running_mean_independent": Learner(
        MultiTask("running_mean", RUNNING_MEAN_WEIGHT_DECAY_INDEPENDENT, start="independent"), test_lr=None
    ),
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

    def streams(self, seeds: list[tuple[int, int]], inputs: int = 1, device: torch.device | str = "cpu"):
        """One task stream per seed, as `next_batch()` gives them: four tensors (N, B, n, d or 1) on `device`."""
        from maml_sine.streams import STREAMS  # the streams draw tasks; this module only names them

        return STREAMS[self.stream](seeds, self, inputs, device)


def assignment_protocol(k: int = SUPPORT_POINTS, updates: int = EPISODES) -> Protocol:
    """`python test.py`'s and the graders': one task per update, K support and 40 query points, 40,000 updates."""
    return Protocol("assignment", k, QUERY_POINTS, tasks_per_update=1, updates=updates)


ASSIGNMENT = assignment_protocol()


def paper_protocol(k: int, updates: int = 70_000) -> Protocol:
    """Finn et al.'s: 25 tasks per update, each of K support and K query points, 70,000 updates."""
    return Protocol("paper", k, k, tasks_per_update=25, updates=updates)


class Section(NamedTuple):
    """Part of a study: the models trained at K = `trained_k`, fine-tuned on `k` points of each held-out task,
    drawn from the whole input range or, with `half` "left", from [-5, 0) alone (then scored on the other half)."""

    key: str
    trained_k: int
    k: int
    half: str | None = None


class Plot(NamedTuple):
    """A figure of a study: `kind` "mse" (the paper's Figure 3: MSE against SGD steps, a column per section),
    "fits" (its Figure 2: one task's fits, a row per section), "curvature" (the top Hessian eigenvalue of
    every seed-task pair of the first section against its amplitude), or "learned" (what the learners learned
    beside an initialization: `maml_sine.learned`), "seeds" (each seed's mean after 1, 5 and 10 steps, with the
    spread of one run and the paper's Table 2), or "curvature_along" (alpha * lambda before each SGD step, the
    diverged pairs against the rest, in the section with the most divergences), of `learners` in `sections` (keys;
    None: all of the study's). An "mse" figure has a `scale` ("log" or "linear", the paper's) and may mark the
    paper's Table 2 (`paper_values`)."""

    name: str
    kind: str
    sections: tuple[str, ...] | None = None
    learners: tuple[str, ...] | None = None
    scale: str = "log"
    paper_values: bool = False


@dataclass(frozen=True)
class Study:
    """A held-out evaluation: `learners` (keys of LEARNERS), one model of each per training protocol, each
    section scored by each of `scores` ("grid": the 100-point grid; "query": K new points per task), with the
    median beside the mean if `medians`; `curvature` names the learners whose support-loss curvature is
    measured on every held-out task (`evaluation.top_hessian_eigenvalues`); `seeds`, how many seeds each
    learner is trained with unless told; `frequency_range`, where the held-out tasks' frequencies are drawn from
    (Meta-SGD's sines), if they vary; `along_training`, the earlier points of training at which the curvature
    learners' initializations are looked at too (each trained that far on its own: the same seeds, so the same
    tasks, as the first updates of the full run)."""

    name: str
    learners: tuple[str, ...]
    training: tuple[Protocol, ...]
    sections: tuple[Section, ...]
    scores: tuple[str, ...]
    medians: bool
    figures: tuple[Plot, ...]
    curvature: tuple[str, ...] = ()
    seeds: int = 10
    frequency_range: tuple[float, float] | None = None  # the held-out sines' frequencies; None: all 1, as Finn's
    along_training: tuple[int, ...] = ()  # updates (fewer than the run's) at which the curvature learners are looked at

    def record(self) -> dict:
        return asdict(self)

    def drawn(self, plot: Plot) -> tuple[list[Section], tuple[str, ...]]:
        """The sections (in the plot's order) and learners of the study that `plot` draws."""
        by_key = {section.key: section for section in self.sections}
        sections = self.sections if plot.sections is None else [by_key[key] for key in plot.sections]
        return list(sections), self.learners if plot.learners is None else plot.learners


def assignment_study(updates: int = EPISODES) -> Study:
    """The project's evaluation: the learners of `python test.py` and its variants, trained on the
    assignment's stream at K = 10, fine-tuned on 5 or 10 points, scored on the grid."""
    sections = (Section("5", SUPPORT_POINTS, 5), Section("10", SUPPORT_POINTS, 10))
    training = (assignment_protocol(updates=updates),)
    learners = ("maml", "first_order_maml", "pretrained", "scratch")
    figures = (Plot("mse_vs_steps", "mse"), Plot("fits", "fits"))
    return Study("assignment", learners, training, sections, scores=("grid",), medians=False, figures=figures)


K10_MODEL_AT_K5 = "5, trained at K=10"  # the section of Table 2: the K = 10 models fine-tuned on 5 points
PAPER_LEARNERS = ("maml", "maml_alpha0.001", "maml_alpha0.001_code_init", "maml_tested_at_0.005",
                  "maml_tested_at_0.001", "pretrained", "pretrained_alpha0.001", "pretrained_tuned", "oracle",
                  "oracle_alpha0.01", "oracle_alpha0.001", "multitask", "multitask_l2", "multitask_running_mean",
                  "multitask_l2_wd0.01", "multitask_running_mean_wd0.01", "multitask_independent",
                  "multitask_l2_independent", "multitask_running_mean_independent")  # fmt: skip


def paper_study(updates: int = 70_000) -> Study:
    """Finn et al.'s sine section: MAML at the paper's alpha and the code's, the pretrained network at both and
    at a tuned step size, the oracle, and the multi-task baselines of Table 2; one model per K (5 and 10)
    where training depends on K. Fine-tuned on 5, 10 and 20 points (the K = 10 models, as the paper's
    text describes), and on 5 or 10 points of the left half only; scored on K new points per task (as the
    authors' code scores) and on the grid."""
    sections = (
        Section("5", 5, 5),
        Section("10", 10, 10),
        Section(K10_MODEL_AT_K5, 10, 5),
        Section("20, trained at K=10", 10, 20),
        Section("5 in the left half, trained at K=10", 10, 5, half="left"),
        Section("10 in the left half", 10, 10, half="left"),
    )
    training = (paper_protocol(5, updates), paper_protocol(10, updates))
    drawn = ("maml", "maml_alpha0.001", "pretrained_tuned", "oracle")
    one_model = (K10_MODEL_AT_K5, "10", "20, trained at K=10")
    table_2 = ("maml", "maml_alpha0.001", "pretrained_tuned", "multitask", "multitask_l2", "multitask_running_mean",
               "multitask_l2_independent")  # fmt: skip
    alphas = ("maml", "maml_tested_at_0.005", "maml_tested_at_0.001", "maml_alpha0.001", "maml_alpha0.001_code_init")
    figures = (
        Plot("mse_vs_steps", "mse", one_model, drawn, scale="linear"),
        Plot("mse_vs_steps_per_k", "mse", ("5", "10"), drawn, scale="linear"),
        Plot("table2", "mse", (K10_MODEL_AT_K5,), table_2, scale="linear", paper_values=True),
        Plot("half_range", "mse", tuple(section.key for section in sections if section.half), drawn, scale="linear"),
        Plot("fits", "fits", (K10_MODEL_AT_K5, "10", sections[4].key), drawn),
        Plot("alpha_seeds", "seeds", (K10_MODEL_AT_K5,), alphas),
        Plot("curvature", "curvature", (K10_MODEL_AT_K5,)),
        Plot("curvature_along_sgd", "curvature_along"),
    )
    return Study("paper", PAPER_LEARNERS, training, sections, scores=("query", "grid"), medians=True,
                 figures=figures, curvature=("maml", "maml_alpha0.001"), seeds=5,
                 along_training=(0, 1_000, 10_000))  # fmt: skip


def meta_sgd_study(updates: int = 70_000) -> Study:
    """Meta-SGD beside MAML under Finn et al.'s protocol: the paper study's training and sections, 5 seeds; Meta-SGD
    adapts at test time with the step sizes it learned, MAML with SGD at its alpha."""
    paper = paper_study(updates)
    learners = ("maml", "meta_sgd")
    one_model = (K10_MODEL_AT_K5, "10", "20, trained at K=10")
    figures = (
        Plot("mse_vs_steps", "mse", one_model, learners),
        Plot("mse_vs_steps_per_k", "mse", ("5", "10"), learners),
        Plot("fits", "fits", (K10_MODEL_AT_K5, "10"), learners),
    )
    return Study("meta_sgd", learners, paper.training, paper.sections, scores=paper.scores, medians=True,
                 figures=figures, seeds=5)  # fmt: skip


FAMILY = ("maml", "first_order_maml", "meta_sgd", "anil", "cavia", "maml_plus_plus", "reptile")
RECIPES = ("cavia_recipe", "reptile_recipe")  # learners of the family trained on their own papers' budgets


def family_study(updates: int = 70_000) -> Study:
    """The MAML family under Finn et al.'s protocol, every learner with the same network, tasks and number of
    updates (the paper study's training), 5 seeds, each adapting at test time as it learned to; beside them, CAVIA
    and Reptile on their own papers' budgets (RECIPES). Fine-tuned on 5, 10 and 20 points of the paper study's
    held-out tasks (the K = 10 models) and on 5 (the K = 5 models)."""
    paper = paper_study(updates)
    sections = paper.sections[:4]
    one_model = (K10_MODEL_AT_K5, "10", "20, trained at K=10")
    figures = (
        Plot("mse_vs_steps", "mse", one_model),
        Plot("mse_vs_steps_per_k", "mse", ("5", "10")),
        Plot("fits", "fits", (K10_MODEL_AT_K5, "10")),
        Plot("learned", "learned"),
    )
    return Study("family", (*FAMILY, *RECIPES), paper.training, sections, scores=paper.scores, medians=True,
                 figures=figures, seeds=5)  # fmt: skip


def meta_sgd_protocol(k: int = 5, updates: int = 60_000) -> Protocol:
    """Li et al.'s (Meta-SGD's) sine protocol: y = a sin(w x + b), w ~ U[0.8, 1.2), 4 tasks per update, 60,000
    updates; K support points, and K query points (which the paper leaves open: Finn et al.'s choice)."""
    return Protocol("frequency", k, k, tasks_per_update=4, updates=updates)


def family_meta_sgd_study(updates: int = 60_000) -> Study:
    """The MAML family under Meta-SGD's protocol: trained at K = 5, tested at 5, 10 and 20 points, scored on the
    100-point grid of each held-out sine (Li et al. score on 100 points per curve), 5 seeds: the row of their
    Table 1 trained at 5 shots."""
    from maml_sine.streams import FREQUENCY_RANGE

    sections = (Section("5", 5, 5), Section("10, trained at K=5", 5, 10), Section("20, trained at K=5", 5, 20))
    figures = (Plot("mse_vs_steps", "mse"), Plot("fits", "fits", ("5",)), Plot("learned", "learned"))
    return Study("family_meta_sgd", FAMILY, (meta_sgd_protocol(5, updates),), sections, scores=("grid",),
                 medians=True, figures=figures, seeds=5, frequency_range=FREQUENCY_RANGE)  # fmt: skip


STUDIES = {"assignment": assignment_study, "paper": paper_study, "meta_sgd": meta_sgd_study, "family": family_study,
           "family_meta_sgd": family_meta_sgd_study}  # fmt: skip
