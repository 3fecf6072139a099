"""The one meta-update (maml_sine.core) and the lockstep learners built on it: every lane is the learner
`MAML.train` would have trained, eager or compiled, and stops only where `MAML.train` raises."""

import math
import os
import re
import signal
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters
from torch.func import vmap

import maml_sine.core
from assignment import MAML, all_finite
from helpers import sine_task, weights_of
from maml_sine.batched import BatchedMAML, BatchedTrainFromScratch, initializations_from_seeds
from maml_sine.core import Algorithm, compiled, named, network
from maml_sine.learners import ASSIGNMENT, assignment_protocol
from maml_sine.training import lane_seeds
from utils import BaseLearner, SineGenerator, TrainFromScratch

EPISODES = 100
TOLERANCE = 1e-5  # relative, per episode: what "the same numbers, up to rounding" means here


def run_batched(num_steps, k, episodes, num_learners=3, compile=False, **options):
    seeds = lane_seeds(num_learners)
    initializations = initializations_from_seeds(seeds)
    algorithm = Algorithm(num_steps, **{key: options.pop(key) for key in list(options) if key != "stop_diverged"})
    learners = BatchedMAML(initializations, algorithm, compile=compile, **options)
    streams = assignment_protocol(k).streams(seeds)
    batches = [streams.next_batch() for _ in range(episodes)]
    learners.train_many(batches)  # compiled: CHUNK updates per call
    return learners, initializations, batches


def maml_from(initialization, num_steps, first_order=False):
    maml = MAML(num_steps, first_order=first_order)
    with torch.no_grad():
        for weight, start in zip(maml.initialization, initialization, strict=True):
            weight.copy_(start)
    return maml


def relative(mine, reference):
    return ((mine - reference).abs().max() / reference.abs().max()).item()


def assert_lanes_took_the_updates_of_maml_train(learners, initializations, batches, num_steps, first_order=False):
    state = learners.state
    for lane, initialization in enumerate(initializations):
        maml = maml_from(initialization, num_steps, first_order)
        for tasks in batches:
            maml.train([part[lane, 0] for part in tasks])
        history = np.array(maml.history)
        assert np.max(np.abs(learners.histories[lane] - history) / history) < TOLERANCE
        for mine, theirs in zip(learners.initialization(lane), weights_of(maml), strict=True):
            assert relative(mine, theirs) < TOLERANCE
        for layer, weight in enumerate(maml.initialization):
            adam = maml.meta_optimizer.state[weight]
            assert state.step[lane].item() == adam["step"].item() == len(batches)
            assert relative(network(state.exp_avgs)[layer][lane], adam["exp_avg"]) < 1e-4
            assert relative(network(state.exp_avg_sqs)[layer][lane], adam["exp_avg_sq"]) < 1e-4


@pytest.mark.parametrize(
    "num_steps, k, first_order",
    [(1, 10, False), (2, 5, False), (1, 10, True), (0, 10, False)],
    ids=["S1-K10", "S2-K5", "first-order", "S0"],
)
def test_each_learner_takes_the_updates_of_maml_train(num_steps, k, first_order):
    learners, initializations, batches = run_batched(num_steps, k, EPISODES, first_order=first_order)
    assert_lanes_took_the_updates_of_maml_train(learners, initializations, batches, num_steps, first_order)


@pytest.mark.slow
@pytest.mark.parametrize(
    "num_steps, k, num_learners, first_order",
    [(1, 10, 1, False), (5, 5, 2, False), (2, 5, 2, True)],
    ids=["one-learner", "K5-S5", "first-order"],
)
def test_compiled_learners_take_the_updates_of_maml_train(num_steps, k, num_learners, first_order):
    """The compiled path, for one learner (the single-learner fast path) and for several."""
    learners, initializations, batches = run_batched(
        num_steps, k, 200, num_learners, compile=True, first_order=first_order
    )
    assert_lanes_took_the_updates_of_maml_train(learners, initializations, batches, num_steps, first_order)


@pytest.mark.slow
def test_compiled_learners_clip_and_stop_as_the_eager_ones():
    """What the graders' margin study runs: compiled, clipped, and a lane that overflows and stops."""
    runs = []
    for compile in (False, True):
        learners, _, batches = run_batched(1, 10, 20, compile=compile, max_meta_gradient_norm=0.5, stop_diverged=True)
        learners.train(scaled(batches[0], 1, 1e30))
        learners.train(batches[1])
        runs.append(learners)
    eager, fast = runs
    assert eager.diverged_at == fast.diverged_at == {1: 20}
    np.testing.assert_allclose(fast.histories, eager.histories, rtol=TOLERANCE)
    np.testing.assert_allclose(fast.gradient_norm_histories, eager.gradient_norm_histories, rtol=TOLERANCE)


def nan_task(tasks, lane):
    """The batch with learner `lane`'s last query y NaN."""
    return [*tasks[:3], tasks[3].index_fill(0, torch.tensor([lane]), math.nan)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop_diverged, fault, error",
    [
        (False, lambda tasks: scaled(tasks, 1, 1e30), r"FloatingPointError: learner\(s\) \[1\]: the query loss"),
        (False, lambda tasks: nan_task(tasks, 2), r"ValueError: learner\(s\) \[2\]: the tasks hold NaN"),
        (False, lambda tasks: tasks[:3], "ValueError: tasks must have 4 parts"),
        (False, lambda tasks: [part[:, :, :5] for part in tasks], None),  # another shape: a chunk of its own
        (True, lambda tasks: scaled(tasks, 1, 1e30), None),  # learner 1 stops there, the others go on
        (True, lambda tasks: nan_task(tasks, 0), r"ValueError: learner\(s\) \[0\]: the tasks hold NaN"),
    ],
    ids=["diverges", "NaN-task", "malformed", "other-shape", "stops", "stopping-NaN-task"],
)
def test_a_fault_inside_a_compiled_chunk_ends_it_where_one_update_at_a_time_does(stop_diverged, fault, error):
    """12 batches in one call, the eighth faulty: the compiled chunk raises the error of the eager updates (or
    goes on as they do), after the same updates, with the same records and stops."""
    ends = []
    for compile in (False, True):
        learners, _, _ = run_batched(1, 10, 2, compile=compile, stop_diverged=stop_diverged)
        streams = assignment_protocol().streams(lane_seeds(3, first=5))
        more = [streams.next_batch() for _ in range(12)]
        more[7] = fault(more[7])
        try:
            learners.train_many(more)
            raised = None
        except (ValueError, FloatingPointError) as caught:
            raised = f"{type(caught).__name__}: {caught}"
        ends.append((learners, raised))
    (eager, eager_error), (fast, fast_error) = ends
    assert fast_error == eager_error
    assert (error is None) == (eager_error is None) and (error is None or re.match(error, eager_error))
    assert fast.diverged_at == eager.diverged_at and fast.active.tolist() == eager.active.tolist()
    assert fast.state.step.tolist() == eager.state.step.tolist()
    np.testing.assert_allclose(fast.histories, eager.histories, rtol=TOLERANCE)
    np.testing.assert_allclose(fast.gradient_norm_histories, eager.gradient_norm_histories, rtol=TOLERANCE)
    for mine, theirs in zip(fast.weights, eager.weights, strict=True):
        assert relative(mine, theirs) < TOLERANCE


@pytest.mark.slow
def test_compiled_from_scratch_learners_match_the_eager_ones():
    seeds = lane_seeds(2)
    batches = [assignment_protocol().streams(seeds).next_batch() for _ in range(20)]
    histories = []
    for compile in (False, True):
        learners = BatchedTrainFromScratch(initializations_from_seeds(seeds), 10, compile=compile)
        for tasks in batches:
            learners.train(tasks)
        histories.append(learners.histories)
    np.testing.assert_allclose(histories[1], histories[0], rtol=TOLERANCE)


@pytest.mark.slow
def test_compiled_learners_of_ten_algorithms_take_their_own_updates():
    """Every lockstep learner is torch.func's one vmap wrapper, so their compiled code shares one cache: ten
    algorithms in one process each get a graph of their own (none runs eager past dynamo's limit of 8
    configurations, which `compiled` raises), and each takes its own updates."""
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    tasks = assignment_protocol().streams(seeds).next_batch()
    before = counters["stats"]["unique_graphs"]
    for index in range(10):
        algorithm = Algorithm(num_steps=0, meta_lr=(index + 1) / 997)
        learners = [BatchedMAML(initializations, algorithm, compile=compile) for compile in (False, True)]
        for learner in learners:
            learner.train(tasks)
            learner.train(tasks)
        eager, fast = learners
        for mine, expected in zip(fast.weights, eager.weights, strict=True):
            torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-7)
    assert counters["stats"]["unique_graphs"] - before == 10


@pytest.mark.slow
def test_a_batch_whose_query_set_is_its_support_set_is_trained_as_eager():
    """The same tensor objects as support and query set: the compiled code must not take them for two (a guard
    filter that kept only the tensors' shapes once dropped the check of such aliasing and ran a stale graph:
    wrong updates from then on)."""
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    streams = assignment_protocol().streams(seeds)
    batches = [streams.next_batch() for _ in range(4)]
    train_x, train_y = batches[1][:2]
    batches[1] = [train_x, train_y, train_x, train_y]
    learners = [BatchedMAML(initializations, Algorithm(1), compile=compile) for compile in (False, True)]
    for tasks in batches:
        for learner in learners:
            learner.train(tasks)
    eager, fast = learners
    np.testing.assert_allclose(fast.histories, eager.histories, rtol=1e-5)
    for mine, expected in zip(fast.weights, eager.weights, strict=True):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-7)


def test_a_learners_algorithm_cannot_be_changed_once_built():
    learners, _, _ = run_batched(1, 10, 1)
    with pytest.raises(AttributeError):
        learners.algorithm = Algorithm(num_steps=5)


@pytest.mark.slow
def test_a_compiled_function_compiles_again_for_tasks_of_another_shape():
    double = compiled(lambda x: 2 * x)
    before = counters["stats"]["unique_graphs"]
    for x in (torch.ones(3), torch.ones(2, 5), torch.ones(3, dtype=torch.float64), torch.ones(3)):
        assert torch.equal(double(x), 2 * x)
    assert counters["stats"]["unique_graphs"] - before == 3


def test_learner_zero_is_the_learner_of_test_py():
    """The first stream and initialization are the assignment's: numpy 1337, torch 42, MAML built first."""
    np.random.seed(1337)
    torch.manual_seed(42)
    sine = SineGenerator(k=10, k_test=40)
    maml = MAML(num_steps=1)
    contract_tasks = [task for _, task in sine.generator(3)]
    numpy_state = np.random.get_state()[1].copy()
    streams = assignment_protocol().streams(lane_seeds(2))
    batches = [streams.next_batch() for _ in range(3)]
    (initialization, _) = initializations_from_seeds(lane_seeds(2))
    assert (np.random.get_state()[1] == numpy_state).all(), "the streams must leave np.random alone"
    assert all(torch.equal(a, b) for a, b in zip(initialization, weights_of(maml), strict=True))
    for tasks, contract_task in zip(batches, contract_tasks, strict=True):
        assert all(torch.equal(tasks[part][0, 0], contract_task[part]) for part in range(4))
        assert not torch.equal(tasks[0][1, 0], contract_task[0]), "learner 1 has a stream of its own"


def test_seeds_are_an_explicit_range():
    assert lane_seeds(3) == [(1337, 42), (1338, 43), (1339, 44)]
    assert lane_seeds(2, first=5) == lane_seeds(7)[5:], "a sweep split in two gives the seeds of one run"


@pytest.mark.parametrize("num_steps, first_order", [(1, False), (2, False), (2, True)])
def test_meta_gradient_of_several_tasks_is_the_mean_of_their_meta_gradients(float64, num_steps, first_order):
    """B tasks per update: the gradient of the mean query loss, against `MAML.adapt` task by task."""
    seeds = lane_seeds(2)
    initializations = [[w.double() for w in initialization] for initialization in initializations_from_seeds(seeds)]
    tasks = [part.double() for part in assignment_protocol(5).streams(seeds).next_batch()]
    tasks = [torch.cat([part] * 4, dim=1) + 0.01 * torch.arange(4.0).reshape(1, 4, 1, 1) for part in tasks]
    stacked = [torch.stack(layer) for layer in zip(*initializations)]
    algorithm = Algorithm(num_steps, first_order=first_order)
    meta_gradients, _ = vmap(lambda w, t: algorithm.meta_gradient(w, t))(named(stacked), tasks)
    for lane, initialization in enumerate(initializations):
        maml = maml_from(initialization, num_steps, first_order)
        per_task = []
        for b in range(4):
            train_x, train_y, test_x, test_y = (part[lane, b] for part in tasks)
            query_loss = maml.loss_fn(BaseLearner.forward(test_x, maml.adapt(train_x, train_y)), test_y)
            per_task.append(torch.autograd.grad(query_loss, maml.initialization))
        for layer, gradient in enumerate(network(meta_gradients)):
            expected = torch.stack([gradients[layer] for gradients in per_task]).mean(dim=0)
            torch.testing.assert_close(gradient[lane], expected, rtol=1e-10, atol=1e-12)


def snapshot(learners):
    state = learners.state
    tensors = [*state.params.values(), *state.exp_avgs.values(), *state.exp_avg_sqs.values(), state.step]
    return [tensor.clone() for tensor in tensors], len(learners.losses)


def assert_unchanged(before, learners):
    (tensors_before, updates_before), (tensors_after, updates_after) = before, snapshot(learners)
    assert updates_before == updates_after
    assert all(torch.equal(a, b) for a, b in zip(tensors_before, tensors_after, strict=True))


def scaled(tasks, lane, factor):
    """The batch with learner `lane`'s y values multiplied by `factor`."""
    return [part if index % 2 == 0 else torch.cat([part[:lane], part[lane : lane + 1] * factor, part[lane + 1 :]])
            for index, part in enumerate(tasks)]  # fmt: skip


def test_an_overflowing_learner_is_named_and_no_learner_changes():
    learners, _, _ = run_batched(1, 10, 3)
    tasks = scaled(assignment_protocol().streams(lane_seeds(3)).next_batch(), 1, 1e30)
    before = snapshot(learners)
    with pytest.raises(FloatingPointError, match=r"learner\(s\) \[1\].*no learner changed"):
        learners.train(tasks)
    assert_unchanged(before, learners)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda tasks: tasks[:3], "tasks must have 4 parts"),
        (lambda tasks: [tasks[0][:2], *tasks[1:]], r"train_x must be a tensor of shape \(N=3, B, n, 1\), got \(2, 1"),
        (lambda tasks: [*tasks[:3], tasks[3][:, :, :7]], r"test_x \(3, 1, 40, 1\) and test_y \(3, 1, 7, 1\) differ"),
        (lambda tasks: [*tasks[:3], tasks[3].index_fill(0, torch.tensor([2]), math.nan)], r"learner\(s\) \[2\].*NaN"),
        (
            lambda tasks: [*tasks[:2], *(part.repeat(1, 2, 1, 1) for part in tasks[2:])],
            "1 tasks per learner but test_x 2",
        ),
        (lambda tasks: [tasks[0][:, :, :0], tasks[1][:, :, :0], *tasks[2:]], "train_x must hold .* at least one task"),
        (
            lambda tasks: [*tasks[:2], tasks[2].long(), tasks[3]],
            r"test_x must hold floating-point numbers, .*, got torch.int64 of shape \(3, 1, 40, 1\)$",
        ),
    ],
    ids=["three-parts", "wrong-N", "lengths-differ", "NaN", "tasks-differ", "empty-support", "int"],
)
def test_a_malformed_batch_is_refused_and_no_learner_changes(corrupt, message):
    learners, _, _ = run_batched(1, 10, 3)
    before = snapshot(learners)
    with pytest.raises(ValueError, match=message):
        learners.train(corrupt(assignment_protocol().streams(lane_seeds(3)).next_batch()))
    assert_unchanged(before, learners)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_tasks_that_are_not_finite_are_refused_also_by_learners_that_stop_instead(compile):
    """The update itself finds non-finite tasks (its finite check covers them); they are refused with a
    ValueError, not taken for a divergence, also for a learner that has stopped."""
    learners, _, _ = run_batched(1, 10, 3, compile=compile, stop_diverged=True)
    learners.stop(torch.tensor([False, True, False]))
    tasks = assignment_protocol().streams(lane_seeds(3)).next_batch()
    before = snapshot(learners)
    for lane, value in ((0, math.nan), (1, math.inf)):
        corrupt = [*tasks[:3], tasks[3].index_fill(0, torch.tensor([lane]), value)]
        with pytest.raises(ValueError, match=rf"learner\(s\) \[{lane}\]: the tasks hold NaN"):
            learners.train(corrupt)
    assert_unchanged(before, learners)
    assert learners.diverged_at == {}


def test_all_finite_is_exact_for_huge_finite_values():
    """A float32 sum of finite entries can overflow; the check must not call such a gradient non-finite."""
    huge = torch.full((100,), 3e38)
    assert bool(all_finite([huge, -huge[:3]]))
    assert not bool(all_finite([huge, torch.tensor([math.nan])]))
    assert not bool(all_finite([torch.tensor([math.inf, -math.inf])]))


@pytest.mark.parametrize("factor", [1e3, 1e12, 1e30])
def test_a_lane_stops_exactly_where_maml_train_raises(factor):
    """The same task of very large amplitude: a lane stops if and only if `MAML.train` raises on it."""
    learners, initializations, batches = run_batched(1, 10, 2, num_learners=2, stop_diverged=True)
    maml = maml_from(initializations[0], 1)
    for tasks in batches:
        maml.train([part[0, 0] for part in tasks])
    tasks = scaled(assignment_protocol().streams(lane_seeds(2)).next_batch(), 0, factor)
    try:
        maml.train([part[0, 0] for part in tasks])
        raised = False
    except FloatingPointError:
        raised = True
    learners.train(tasks)
    assert (0 in learners.diverged_at) == raised
    assert learners.active.tolist() == [not raised, True]


def test_each_from_scratch_learner_records_what_train_from_scratch_records():
    seeds = lane_seeds(3)
    initializations = initializations_from_seeds(seeds, skip=1)
    learners = BatchedTrainFromScratch(initializations, num_steps=10)
    streams = assignment_protocol().streams(seeds)
    batches = [streams.next_batch() for _ in range(20)]
    for tasks in batches:
        learners.train(tasks)
    for lane, initialization in enumerate(initializations):
        scratch = TrainFromScratch(num_steps=10)
        with torch.no_grad():
            for weight, start in zip(scratch.initialization, initialization, strict=True):
                weight.copy_(start)
        for tasks in batches:
            scratch.train([part[lane, 0] for part in tasks])
        np.testing.assert_allclose(learners.histories[lane], scratch.history, rtol=TOLERANCE)


def test_skip_draws_the_from_scratch_learner_of_test_py():
    torch.manual_seed(42)
    MAML(num_steps=1)
    scratch = TrainFromScratch(num_steps=10)
    (initialization,) = initializations_from_seeds(lane_seeds(1), skip=1)
    assert all(torch.equal(a, b) for a, b in zip(initialization, weights_of(scratch), strict=True))


def test_a_diverged_learner_stops_and_the_others_go_on_when_asked():
    seeds = lane_seeds(3)
    learners = BatchedMAML(initializations_from_seeds(seeds), Algorithm(1), stop_diverged=True)
    reference = BatchedMAML(initializations_from_seeds(seeds), Algorithm(1))
    streams = assignment_protocol().streams(seeds)
    first, poisoned, last = (streams.next_batch() for _ in range(3))
    for learner_set in (learners, reference):
        learner_set.train(first)
    state_after_first = [w[1].clone() for w in learners.weights]
    poisoned = scaled(poisoned, 1, 1e30)
    learners.train(poisoned)
    learners.train(last)
    reference.train([torch.cat([p[:1], q[1:2], p[2:]]) for p, q in zip(poisoned, first, strict=True)])
    assert learners.diverged_at == {1: 1}
    assert learners.active.tolist() == [True, False, True]
    assert all(torch.equal(w[1], before) for w, before in zip(learners.weights, state_after_first, strict=True))
    assert learners.state.step.tolist() == [3, 1, 3]
    assert np.isnan(learners.histories[1, 1:]).all() and np.isfinite(learners.histories[[0, 2]]).all()
    for lane in (0, 2):  # the others took their updates as if nothing had happened
        np.testing.assert_allclose(learners.histories[lane, :2], reference.histories[lane], rtol=1e-6)


def test_the_record_of_losses_keeps_every_update_in_order():
    from maml_sine.batched import _Record

    record = _Record(3)
    rows = [torch.arange(3.0) + update for update in range(2 * _Record.BLOCK + 5)]
    for row in rows:
        record.append(row)
    assert len(record) == len(rows)
    np.testing.assert_array_equal(record.array(), torch.stack(rows).T.double().numpy())
    assert _Record(2).array().shape == (2, 0)


def test_clipped_meta_gradients_are_scaled_to_the_norm_before_adam():
    seeds = lane_seeds(2)
    initializations = initializations_from_seeds(seeds)
    max_norm = 0.5
    algorithm = Algorithm(1, max_meta_gradient_norm=max_norm)
    learners = BatchedMAML(initializations, algorithm)
    copies = [[w.detach().clone().requires_grad_() for w in initialization] for initialization in initializations]
    optimizers = [torch.optim.Adam(weights, lr=0.001) for weights in copies]
    streams = assignment_protocol().streams(seeds)
    for _ in range(3):
        tasks = streams.next_batch()
        meta_gradients, _ = vmap(lambda w, t: algorithm.meta_gradient(w, t))(learners.state.params, tasks)
        for lane, (weights, optimizer) in enumerate(zip(copies, optimizers, strict=True)):
            gradient = [g[lane] for g in network(meta_gradients)]
            norm = torch.sqrt(sum((g * g).sum() for g in gradient))
            assert norm > max_norm, "the test needs gradients to clip"
            for weight, g in zip(weights, gradient, strict=True):
                weight.grad = g * (max_norm / norm)
            optimizer.step()
        learners.train(tasks)
        for lane, weights in enumerate(copies):
            for mine, expected in zip(learners.initialization(lane), weights, strict=True):
                torch.testing.assert_close(mine, expected.detach(), rtol=1e-5, atol=1e-7)


def test_compiling_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    def broken_compile(function, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")

        return fail

    monkeypatch.setattr(maml_sine.core.torch, "compile", broken_compile)
    add_one = compiled(lambda x: x + 1)
    assert [add_one(torch.tensor(value)).item() for value in (1, 2, 3)] == [2, 3, 4]
    assert capsys.readouterr().err.count("compiling unavailable (RuntimeError); running eager") == 1


def test_ctrl_c_while_compiling_is_not_taken_for_a_compiler_failure(monkeypatch, python_sigint_handler):
    """torch's compiler wraps what it catches; a Ctrl-C inside it must still stop the program."""

    def interrupted_compile(function, **options):
        def fail(*args, **kwargs):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the signal's handler raises in here
            except KeyboardInterrupt as interrupt:
                raise RuntimeError("backend compiler failed") from interrupt

        return fail

    monkeypatch.setattr(maml_sine.core.torch, "compile", interrupted_compile)
    with pytest.raises(KeyboardInterrupt):
        compiled(lambda x: x + 1)(torch.tensor(1))


def test_a_task_of_one_learner_is_a_task_of_maml_train():
    """The sine tasks the tests share fit the lockstep learners as a batch of one."""
    task = sine_task(0, dtype=torch.float32)
    learners = BatchedMAML([BaseLearner.random_initial_weights()], Algorithm(1))
    learners.train([part[None, None] for part in task])
    assert learners.histories.shape == (1, 1)


@dataclass(frozen=True)
class FiniteButHuge(Algorithm):
    """MAML whose meta-gradient is 1e30 everywhere: finite in float32, but its square is not."""

    kind: str = field(default="finite_but_huge_meta_gradient", init=False)

    def meta_gradient(self, params, tasks, progress=0.0):
        gradients, losses = super().meta_gradient(params, tasks, progress)
        return {name: torch.full_like(gradient, 1e30) for name, gradient in gradients.items()}, losses


def test_an_update_that_would_overflow_adams_second_moment_is_refused_like_a_non_finite_one():
    """torch's Adam would square 1e30 to infinity and freeze those weights silently; the lockstep learner refuses
    the update (nothing changes), or, stopping the diverged, stops the learner before it."""
    seeds = lane_seeds(2)
    tasks = ASSIGNMENT.streams(seeds).next_batch()
    refusing = BatchedMAML(initializations_from_seeds(seeds), FiniteButHuge(1))
    before = {name: tensor.clone() for name, tensor in refusing.state.params.items()}
    with pytest.raises(FloatingPointError, match=r"learner\(s\) \[0, 1\]"):
        refusing.train(tasks)
    assert all(torch.equal(refusing.state.params[name], tensor) for name, tensor in before.items())
    stopping = BatchedMAML(initializations_from_seeds(seeds), FiniteButHuge(1), stop_diverged=True)
    stopping.train(tasks)
    assert stopping.diverged_at == {0: 0, 1: 0} and torch.isfinite(stopping.state.exp_avg_sqs["w2"]).all()
