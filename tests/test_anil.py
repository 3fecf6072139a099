"""ANIL (`maml_sine.anil`) against references written here, apart from the project's functions: an eager autograd
loop (a matmul network, inner SGD steps on the head alone through `torch.autograd.grad(create_graph=True)`) with
torch's own Adam over all six tensors for its updates, float64 finite differences of that loop's query loss for its
meta-gradient, and the same loop without a graph for its test-time steps. It goes through the project's machinery
like any learner: lockstep lanes, checkpoints, the evaluation."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import ROOT, import_script, reference_forward, sine_task
from maml_sine.anil import ANIL
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import CheckpointError, load, save
from maml_sine.core import NETWORK, network
from maml_sine.evaluation import sgd_steps
from maml_sine.learners import ASSIGNMENT, LEARNED, LEARNERS, Learner, assignment_study
from maml_sine.training import lane_seeds

ALPHA = 0.01  # the inner step size (MAML's)
SHAPES = [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def support_loss(weights, x, y):
    return ((reference_forward(weights, x) - y) ** 2).mean()


def reference_query_loss(weights, task, steps):
    """The query MSE after `steps` SGD steps of the head (W3, b3) alone on the support set; the body stays."""
    support_x, support_y, query_x, query_y = task
    body, head = list(weights[:4]), list(weights[4:])
    for _ in range(steps):
        gradients = torch.autograd.grad(support_loss([*body, *head], support_x, support_y), head, create_graph=True)
        head = [w - ALPHA * g for w, g in zip(head, gradients, strict=True)]
    return ((reference_forward([*body, *head], query_x) - query_y) ** 2).mean()


TOLERANCES = {  # float32, the project's dtype; float64, where no rounding hides a difference
    torch.float32: {"losses": 1e-5, "rtol": 1e-5, "atol": 1e-7},
    torch.float64: {"losses": 1e-12, "rtol": 1e-10, "atol": 1e-12},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("steps", [1, 2])
def test_lockstep_anil_takes_the_updates_of_an_eager_loop(steps, dtype):
    """Three learners, four updates, each against autograd through a matmul network (inner steps on the head alone)
    and torch.optim.Adam over all six tensors."""
    tolerance = TOLERANCES[dtype]
    seeds = lane_seeds(3)
    inputs = LEARNERS["anil"].network_inputs
    initializations = [[w.to(dtype) for w in init] for init in initializations_from_seeds(seeds, inputs=inputs)]
    learners = BatchedMAML(initializations, ANIL(num_steps=steps))
    streams = ASSIGNMENT.streams(seeds)
    batches = [[part.to(dtype) for part in streams.next_batch()] for _ in range(4)]
    for tasks in batches:
        learners.train(tasks)
    for lane, initialization in enumerate(initializations):
        weights = [w.detach().clone().requires_grad_() for w in initialization]
        optimizer = torch.optim.Adam(weights, lr=0.001)
        losses = []
        for tasks in batches:
            loss = reference_query_loss(weights, [part[lane, 0] for part in tasks], steps)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        np.testing.assert_allclose(learners.histories[lane], losses, rtol=tolerance["losses"])
        params = learners.params(lane)
        assert set(params) == set(NETWORK), "ANIL learns the network and nothing else"
        for name, weight, start in zip(NETWORK, weights, initialization, strict=True):
            assert params[name].dtype == dtype
            torch.testing.assert_close(params[name], weight.detach(), rtol=tolerance["rtol"], atol=tolerance["atol"])
            assert not torch.equal(params[name], start), f"{name} is learned in the outer loop"


def test_the_meta_gradient_matches_float64_finite_differences(float64):
    """The directional derivative of the mean query loss (2 head steps, B = 2) along a random direction in all six
    tensors: the body's gradient comes through the query loss and through the head's inner steps."""
    torch.manual_seed(3)
    weights = [torch.randn(shape) * 0.3 for shape in SHAPES]
    algorithm = ANIL(num_steps=2)
    params = algorithm.start(weights)
    tasks = [torch.stack([part, part + 0.1]) for part in sine_task(seed=4)]  # B = 2 tasks
    gradient, losses = algorithm.meta_gradient(params, tasks)
    direction = {name: torch.randn_like(tensor) for name, tensor in params.items()}

    def loss(shifted):
        per_task = [reference_query_loss(network(shifted), [p[b] for p in tasks], 2) for b in range(2)]
        return torch.stack(per_task)

    torch.testing.assert_close(losses, loss({name: p.clone().requires_grad_() for name, p in params.items()}))
    h = 1e-6
    shifted = [
        {name: (p + sign * h * direction[name]).requires_grad_() for name, p in params.items()} for sign in (1, -1)
    ]
    plus, minus = (loss(point).mean() for point in shifted)
    numeric = (plus - minus) / (2 * h)
    analytic = sum((gradient[name] * direction[name]).sum() for name in params)
    torch.testing.assert_close(numeric, analytic, rtol=1e-6, atol=1e-9)
    assert all((gradient[name] != 0).any() for name in NETWORK), "every tensor is meta-learned"


def test_at_test_time_it_steps_the_head_alone():
    """`sgd_steps` with ANIL itself: two SGD steps at alpha on the head; the body stays as it started, bit for bit."""
    weights = initializations_from_seeds(lane_seeds(1))[0]
    algorithm = ANIL(num_steps=1)
    params = algorithm.start(weights)
    task = sine_task(seed=5, support=5, dtype=torch.float32)
    support_x, support_y = (part[None] for part in task[:2])
    *_, stepped = sgd_steps(params, support_x, support_y, 2, algorithm)
    body, head = list(weights[:4]), [w.detach().clone() for w in weights[4:]]
    for _ in range(2):
        head = [w.requires_grad_() for w in head]
        gradients = torch.autograd.grad(support_loss([*body, *head], task[0], task[1]), head)
        head = [(w - ALPHA * g).detach() for w, g in zip(head, gradients, strict=True)]
    for mine, start in zip(stepped[:4], body, strict=True):
        assert torch.equal(mine[0], start), "the body does not move at test time"
    for mine, expected, start in zip(stepped[4:], head, weights[4:], strict=True):
        torch.testing.assert_close(mine[0], expected, rtol=1e-5, atol=1e-7)
        assert not torch.equal(mine[0], start), "the head moves"


def test_a_checkpoint_round_trips_it_and_is_not_taken_for_maml(tmp_path):
    """ANIL's params have MAML's names and shapes: only the record's kind tells them apart."""
    seeds = lane_seeds(2)
    learners = BatchedMAML(initializations_from_seeds(seeds), ANIL(num_steps=1))
    streams = ASSIGNMENT.streams(seeds)
    for _ in range(2):
        learners.train(streams.next_batch())
    protocol = dataclasses.replace(ASSIGNMENT, updates=2).record()
    record = {"learner": LEARNERS["anil"].training(), "protocol": protocol, "seeds": [list(s) for s in seeds]}
    save(learners, record, tmp_path / "anil.pt")
    loaded = load(tmp_path / "anil.pt", record)
    assert loaded.algorithm == learners.algorithm and isinstance(loaded.algorithm, ANIL)
    assert set(loaded.state.params) == set(learners.state.params) == set(NETWORK)
    for field in ("params", "exp_avgs", "exp_avg_sqs"):
        saved, restored = getattr(learners.state, field), getattr(loaded.state, field)
        assert all(torch.equal(restored[name], saved[name]) for name in saved)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    with pytest.raises(CheckpointError, match="'kind': 'anil'"):
        load(tmp_path / "anil.pt", {**record, "learner": LEARNERS["maml"].training()})


def test_the_evaluation_trains_and_scores_it_adapting_its_head(tmp_path, monkeypatch):
    evaluate = import_script(ROOT / "scripts" / "evaluate.py")
    study = dataclasses.replace(assignment_study(updates=3), learners=("maml", "anil"))
    monkeypatch.setitem(evaluate.STUDIES, "assignment", lambda **options: study)
    folders = ["--out-dir", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    report = evaluate.main(["--updates", "3", "--tasks", "4", "--seeds", "2", *folders])
    assert report["evaluation"]["test_lr"]["anil"] == {"5": LEARNED, "10": LEARNED}
    assert report["learners"]["anil"]["learner"]["algorithm"]["kind"] == "anil"
    assert all(np.isfinite(report["mse"]["grid"]["anil"]["10"]["mean"]))
    assert LEARNERS["anil"] == Learner(ANIL(num_steps=1), test_lr=LEARNED)


@pytest.mark.slow
def test_compiled_anil_lanes_take_the_eager_updates(capfd):
    seeds = lane_seeds(2)
    streams = ASSIGNMENT.streams(seeds)
    batches = [streams.next_batch() for _ in range(20)]
    learners = [BatchedMAML(initializations_from_seeds(seeds), ANIL(1), compile=compile) for compile in (False, True)]
    for tasks in batches:
        for learner in learners:
            learner.train(tasks)
    eager, fast = learners
    assert "compiling unavailable" not in capfd.readouterr().err, "the lanes ran compiled"
    np.testing.assert_allclose(fast.histories, eager.histories, rtol=1e-5)
    for name, tensor in eager.state.params.items():
        torch.testing.assert_close(fast.state.params[name], tensor, rtol=1e-5, atol=1e-7)
