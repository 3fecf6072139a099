"""Meta-testing on held-out tasks: how well does an initialization fit a new sine from K points after n SGD steps?

The protocol of Finn et al. (2017), Section 5.1: a fixed set of new tasks, K support
points each, 0..10 plain SGD steps, the error averaged over tasks with a 95% confidence
interval. The error is measured on a grid of 100 evenly spaced x in [-5, 5], or, as the
authors' code measures it, on K further random points of each task (`HeldOutTasks.query`).

The held-out tasks come from `numpy.random.default_rng(seed)`, never from `np.random`, so
every run scores on the same tasks and evaluating changes nothing a later seeded run
draws. All tasks adapt at once: `torch.func.vmap` over `torch.func.grad`, with batched
weights that are `BaseLearner`'s 6 tensors, each with a leading task dimension n:
W1 (n, 40, 1), b1 (n, 40), W2 (n, 40, 40), b2 (n, 40), W3 (n, 1, 40), b3 (n, 1).

The tasks are drawn with numpy and put on a `device` (`draw_held_out_tasks`), where the models to score must
be: every tensor of the evaluation is made there, and what it measures comes back to the host as numpy.
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.func import grad, vmap

from maml_sine.core import Algorithm, Params, mse, named, network
from maml_sine.streams import with_amplitude_and_phase
from utils import AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE, BaseLearner

HELD_OUT_SEED = 3_031_703  # any fixed seed; the held-out tasks never come from np.random
HELD_OUT_TASKS = 600
SUPPORT_SIZES = (5, 10)
BASE_POINTS = 10  # support and query points per task drawn as the first runs drew them
MAX_STEPS = 10
GRID_X = np.linspace(*X_RANGE, 100)
Z_95 = 1.96  # two-sided 95% quantile of the normal distribution
TEST_LR_GRID = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # a "tuned" learner's choices
VALIDATION_SEED = HELD_OUT_SEED + 1  # the tasks step sizes are tuned on: never the evaluation's
VALIDATION_TASKS = 200
POWER_ITERATIONS = 20
# A task's MSE above this counts as diverged: predicting y = 0 everywhere scores a^2 / 2 <= 12.5 on average.
DIVERGED = 100.0


@dataclass(frozen=True)
class HeldOutTasks:
    """n sine tasks y = a * sin(w * x + p), each with `max_support` support x, as many query x of its own
    (new random points to score on, as Finn et al.'s code scores), and a shared grid of x to score on.
    The frequency w is 1 (Finn et al.'s sines) unless `frequencies` are given (Meta-SGD's).

    amplitudes, phases, frequencies: (n,) float64 (numpy); support_x, query_x: (n, max_support, 1) float32; grid_x:
    (m, 1) float32; the tensors on one device.
    """

    amplitudes: np.ndarray
    phases: np.ndarray
    support_x: torch.Tensor
    query_x: torch.Tensor
    grid_x: torch.Tensor
    frequencies: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.amplitudes)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's y at x, float32, on x's device: x of shape (n, m, 1), or (m, 1) shared by all tasks, gives
        (n, m, 1). Computed by numpy on the host, as the training streams compute theirs."""
        host_x = x.cpu().double().numpy()
        frequencies = np.ones_like(self.amplitudes) if self.frequencies is None else self.frequencies
        y = self.amplitudes[:, None, None] * np.sin(frequencies[:, None, None] * host_x + self.phases[:, None, None])
        return torch.from_numpy(y.astype(np.float32)).to(x.device)

    def support(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first k support points of every task: x and y, each of shape (n, k, 1).

        Taking a prefix makes each task's K = 5 support set part of its K = 10 one.
        """
        support_x = self.support_x[:, :k]
        return support_x, self.targets(support_x)

    def query(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first k query points of every task, drawn independently of its support points: x and y, (n, k, 1)."""
        query_x = self.query_x[:, :k]
        return query_x, self.targets(query_x)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The scoring grid: x of shape (m, 1), shared, and every task's y, (n, m, 1)."""
        return self.grid_x, self.targets(self.grid_x)


def _scale(unit: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return low + (high - low) * unit


def draw_held_out_tasks(
    num_tasks: int = HELD_OUT_TASKS,
    max_support: int = max(SUPPORT_SIZES),
    seed: int = HELD_OUT_SEED,
    grid=GRID_X,
    frequency_range: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
) -> HeldOutTasks:
    """Draw `num_tasks` tasks from utils' distributions: a ~ U[0.1, 5), p ~ U[0, pi), support and query x ~ U[-5, 5),
    and, with a `frequency_range`, a frequency w from it (from a stream of its own: the rest stays as without); their
    points on `device` (drawn by numpy: the same tasks on every device).

    Task i uses row i of one (num_tasks, 2 + 10) block of uniform draws (a, p and 10 support x),
    and row i of a block of 10 query x from a second stream of the same seed; support and query
    x beyond the 10th (up to `max_support`) come from two more streams. So the first tasks, and
    their first 10 points, are the same whatever `num_tasks` and `max_support` are. `grid` holds
    the x to score on.
    """
    unit = np.random.default_rng(seed).random((num_tasks, 2 + BASE_POINTS))
    # Streams of their own: the support points (and the scores on the grid) stay those of runs before them.
    query_unit = np.random.default_rng([seed, 1]).random((num_tasks, BASE_POINTS, 1))
    more = max(max_support - BASE_POINTS, 0)
    more_support, more_query = (np.random.default_rng([seed, stream]).random((num_tasks, more, 1)) for stream in (2, 3))
    support_unit = np.concatenate([unit[:, 2:, None], more_support], axis=1)[:, :max_support]
    query_unit = np.concatenate([query_unit, more_query], axis=1)[:, :max_support]
    return HeldOutTasks(
        amplitudes=_scale(unit[:, 0], AMPLITUDE_RANGE),
        phases=_scale(unit[:, 1], PHASE_RANGE),
        support_x=torch.from_numpy(_scale(support_unit, X_RANGE).astype(np.float32)).to(device),
        query_x=torch.from_numpy(_scale(query_unit, X_RANGE).astype(np.float32)).to(device),
        grid_x=torch.from_numpy(np.asarray(grid, dtype=np.float32).reshape(-1, 1)).to(device),
        frequencies=None if frequency_range is None else _scale(np.random.default_rng([seed, 4]).random(num_tasks),
                                                                  frequency_range),
    )  # fmt: skip


_mse_per_task = vmap(mse)
_predict_per_task = vmap(BaseLearner.forward, in_dims=(0, 0))


Model = Sequence[torch.Tensor] | Params  # a network's 6 tensors, or a learner's params (its network and its own)
Step = float | Algorithm  # an SGD step size, or the algorithm whose `inner_step` takes each step (a learner's own)


def as_params(model: Model) -> Params:
    """A model (a list of BaseLearner's 6 tensors, or named tensors) as named tensors."""
    return dict(model) if isinstance(model, Mapping) else named(model)


def _as_algorithm(step: Step) -> Algorithm:
    """What takes each step: the algorithm given, or, for a step size, plain SGD on the network at that size."""
    return step if isinstance(step, Algorithm) else Algorithm(num_steps=1, inner_lr=step)


def sgd_steps(
    initialization: Model, support_x: torch.Tensor, support_y: torch.Tensor, steps: int, lr: Step
) -> Iterator[list[torch.Tensor]]:
    """Yield the batched network weights before adaptation and after each of `steps` steps (steps + 1 in all).

    support_x, support_y: (n, k, d). Every task starts from `initialization` (unbatched, left untouched;
    or already batched, n in front) and takes one step at a time on its own support set: `MAML.adapt`'s
    SGD step at step size `lr`, or the step of the algorithm `lr` (which may learn more than the network,
    as Meta-SGD learns a step size per parameter).
    """
    params, algorithm = as_params(initialization), _as_algorithm(lr)
    if params["w1"].ndim == 2:  # W1 is (40, d) alone, (n, 40, d) batched
        params = {name: tensor.detach().expand(len(support_x), *tensor.shape) for name, tensor in params.items()}
    yield network(params)
    for index in range(steps):
        params = vmap(partial(algorithm.inner_step, index=index))(params, support_x, support_y)
        yield network(params)


def scored_sets(
    tasks: HeldOutTasks, k: int, inputs: int = 1, half: str | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """The held-out tasks' points for K = k, as a learner of `inputs` inputs takes them, each (n tasks, m, d):
    "support" (k points), and the two sets a learner is scored on: "query", k new points per task, and
    "grid", the same evenly spaced x for every task. The oracle's (3 inputs) carry amplitude and phase.

    With `half` "left", the support points are moved into [-5, 0) and the query points into [0, 5) (x ->
    -5 + (x + 5) / 2 and x -> (x + 5) / 2: the same draws, halved): the learner sees one half of the
    range and is scored on K points of the other half, and on the whole grid.
    """
    support_x, query_x = tasks.support_x[:, :k], tasks.query_x[:, :k]
    if half == "left":
        low, high = X_RANGE
        middle = (low + high) / 2
        support_x, query_x = low + (support_x - low) / 2, middle + (query_x - low) / 2
    elif half is not None:
        raise ValueError(f"half must be None or 'left', got {half!r}")
    grid_x, grid_y = tasks.grid()
    sets = {
        "support": (support_x, tasks.targets(support_x)),
        "query": (query_x, tasks.targets(query_x)),
        "grid": (grid_x.expand(len(tasks), -1, -1), grid_y),
    }
    if inputs == 3:
        amplitudes, phases = (
            torch.from_numpy(values).to(support_x.device) for values in (tasks.amplitudes, tasks.phases)
        )
        sets = {name: (with_amplitude_and_phase(x, amplitudes, phases), y) for name, (x, y) in sets.items()}
    return sets


def for_every_model(models: Sequence[Model], sets: dict) -> tuple[Params, dict]:
    """S models' tensors, each repeated for the n tasks of `sets` ((S * n, ...), model by model), and `sets`
    repeated S times: every model's every task adapted in one batch, which costs little more than one model's."""
    n = len(sets["support"][0])
    models = [as_params(model) for model in models]
    params = {name: torch.stack([model[name].detach() for model in models]).repeat_interleave(n, dim=0)
              for name in models[0]}  # fmt: skip
    repeated = {name: tuple(t.repeat(len(models), *[1] * (t.ndim - 1)) for t in pair) for name, pair in sets.items()}
    return params, repeated


def mse_after_each_step(
    models: Sequence[Model], sets: dict, scores: Sequence[str], lr: Step, steps: int = MAX_STEPS
) -> dict[str, np.ndarray]:
    """For each score (a key of `sets`, from `scored_sets`): every task's MSE after 0..`steps` SGD steps on its
    support set, from each of S `models` (initializations): shape (S, steps + 1, n)."""
    weights, sets = for_every_model(models, sets)
    errors = {score: [] for score in scores}
    for stepped in sgd_steps(weights, *sets["support"], steps, lr):
        for score, per_step in errors.items():
            per_step.append(_mse_per_task(stepped, *sets[score]))
    shape = (steps + 1, len(models), -1)
    return {
        score: torch.stack(per_step).reshape(shape).transpose(0, 1).cpu().numpy() for score, per_step in errors.items()
    }


def tuned_test_lr(
    initializations: Sequence[Model], tasks: HeldOutTasks, k: int, inputs: int = 1,
    half: str | None = None, grid: Sequence[float] = TEST_LR_GRID,
) -> tuple[float, dict[str, float | None]]:  # fmt: skip
    """The SGD step size of `grid` that fine-tunes the models (one per seed) best on `tasks`, tasks of their own,
    never the evaluation's: the lowest mean MSE on K new points over steps 1..MAX_STEPS, all tasks and
    seeds. Returns it and every step size's score (None where some task's SGD diverged, MSE > DIVERGED)."""
    sets = scored_sets(tasks, k, inputs, half)
    scores = {}
    for lr in grid:
        errors = mse_after_each_step(initializations, sets, ("query",), lr)["query"][:, 1:]
        scores[f"{lr:g}"] = float(errors.mean()) if (errors <= DIVERGED).all() else None  # NaN fails the test too
    kept = {lr: score for lr, score in scores.items() if score is not None}
    if not kept:
        raise FloatingPointError(f"SGD diverged on some task at every step size of {tuple(grid)}")
    return float(min(kept, key=kept.get)), scores


def top_hessian_eigenvalues(
    weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, iterations: int = POWER_ITERATIONS
) -> torch.Tensor:
    """The eigenvalue of largest magnitude of each task's Hessian of `mse` at its weights: (n,).

    `weights` are batched (n tasks in front), x, y (n, k, d). Power iteration on Hessian-vector
    products (never the 1761 x 1761 Hessian), from a fixed random
    vector, then the Rayleigh quotient. SGD at step size lr on a quadratic with this curvature
    diverges when lr * lambda > 2.
    """

    def hessian_vector_product(w, x, y, v):  # the gradient of <grad mse(w), v>: reverse over reverse
        return grad(lambda point: sum((g * u).sum() for g, u in zip(grad(mse)(point, x, y), v)))(w)

    product = vmap(hessian_vector_product)
    generator = torch.Generator().manual_seed(0)  # on the host: the same start on every device
    vector = [torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device) for w in weights]
    for _ in range(iterations):
        vector = _unit(product(list(weights), x, y, vector))
    return sum((h * v).flatten(1).sum(1) for h, v in zip(product(list(weights), x, y, vector), vector))


def _unit(vector: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each task's part of `vector` (6 batched tensors) scaled to length 1."""
    norm = sum(part.flatten(1).square().sum(1) for part in vector).sqrt()
    return [part / norm.view(-1, *[1] * (part.ndim - 1)) for part in vector]


def curvature_along_sgd(models: Sequence[Model], sets: dict, lr: Step, steps: int = MAX_STEPS) -> np.ndarray:
    """Every task's `top_hessian_eigenvalues` of its support loss at the weights before each of `steps` SGD steps,
    from each of S `models`: (S, steps, n), float64 (NaN once the weights are no longer finite)."""
    weights, sets = for_every_model(models, sets)
    support = sets["support"]
    before_each_step = zip(range(steps), sgd_steps(weights, *support, steps, lr))
    along = np.stack([top_hessian_eigenvalues(w, *support).cpu().double().numpy() for _, w in before_each_step])
    return along.reshape(steps, len(models), -1).transpose(1, 0, 2)


def predictions_after_each_step(
    initialization: Model, sets: dict, task: int, lr: Step, steps: int = MAX_STEPS
) -> np.ndarray:
    """Held-out `task`'s prediction on the grid after 0..`steps` SGD steps on its support set: (steps + 1, m)."""
    support_x, support_y = (tensor[task : task + 1] for tensor in sets["support"])
    grid_x = sets["grid"][0][task : task + 1]
    predictions = [_predict_per_task(grid_x, w) for w in sgd_steps(initialization, support_x, support_y, steps, lr)]
    return torch.stack(predictions)[:, 0, :, 0].cpu().numpy()


def mean_and_ci95(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the last axis (the tasks) and the half-width of its 95% confidence interval.

    The half-width is 1.96 * std / sqrt(n) with the population std (ddof=0), as in
    Finn et al.'s evaluation code. `errors` of shape (..., n) gives two arrays of shape (...).
    """
    errors = np.asarray(errors, dtype=np.float64)
    return errors.mean(axis=-1), Z_95 * errors.std(axis=-1) / np.sqrt(errors.shape[-1])


def task_to_draw(tasks: HeldOutTasks, min_amplitude: float = 3.0) -> int:
    """The first held-out task with an amplitude above `min_amplitude` (else task 0): picked by its shape, not a fit.

    A small wave, or one close to the mean of all tasks (about 1.6 cos x, as phases lie in
    [0, pi)), would make every learner's fit look alike.
    """
    large = np.flatnonzero(tasks.amplitudes > min_amplitude)
    return int(large[0]) if len(large) else 0


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t distribution with `df` degrees of freedom (2.262 for df = 9).

    The density is integrated numerically and the quantile found by bisection, to about 1e-6:
    enough for a confidence interval, without a dependency on scipy.
    """
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf_above_half(x: float) -> float:  # P(0 < T < x), by Simpson's rule on 2,000 intervals
        t = np.linspace(0.0, x, 2001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df))
        return float((x / 6000) * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum()))

    low, high = 0.0, 1.0
    while cdf_above_half(high) < 0.475:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf_above_half(middle) < 0.475 else (low, middle)
    return (low + high) / 2


def between_seeds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean over seeds (the first axis of `values`, at least one seed) and the half-width of its between-seed
    95% interval: Student t, seeds - 1 degrees of freedom; NaN for one seed, which has no spread to measure, and
    where a seed's value is infinite."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) > 1:
        with np.errstate(invalid="ignore"):  # a seed whose value is infinite has no spread to measure: NaN
            ci95 = t_quantile_975(len(values) - 1) * values.std(axis=0, ddof=1) / np.sqrt(len(values))
    else:
        ci95 = np.full(values.shape[1:], np.nan)
    return values.mean(axis=0), ci95


def one_run_difference(result: Mapping, step: int, published: float, published_ci95: float) -> tuple[float, float]:
    """Our mean minus a published one-run number, and the 95% half-width of that difference, the three sources of
    spread combined in quadrature, each as its own 95% half-width: the seeds (our mean of n seeds against their one
    seed: the between-seed standard deviation times sqrt(1 + 1/n), Student t with n - 1 degrees of freedom), the
    sampling of our tasks (our interval) and of theirs (their interval). NaN where our seeds give no spread."""
    per_seed = np.array(result["per_seed"], dtype=float)[:, step]
    if len(per_seed) < 2 or not np.isfinite(per_seed).all():
        return float(np.mean(per_seed) - published), float("nan")
    seeds = t_quantile_975(len(per_seed) - 1) * per_seed.std(ddof=1) * np.sqrt(1 + 1 / len(per_seed))
    spread = np.sqrt(seeds**2 + result["ci95"][step] ** 2 + published_ci95**2)
    return float(per_seed.mean() - published), float(spread)


def over_seeds(per_seed: Sequence[dict[str, list[float]]]) -> dict[str, list]:
    """Many seeds' {"mean", "ci95"} (each over the tasks, one entry per step) as one: the mean over seeds,
    the between-seed 95% interval (`between_seeds`), the mean task-sampling interval, and every seed's means."""
    if not per_seed:
        raise ValueError("no seed to summarize")
    means = np.array([seed["mean"] for seed in per_seed])  # (seeds, steps + 1)
    mean, seed_ci95 = between_seeds(means)
    return {
        "mean": mean.tolist(),
        "seed_ci95": seed_ci95.tolist(),
        "ci95": np.mean([seed["ci95"] for seed in per_seed], axis=0).tolist(),
        "per_seed": means.tolist(),
    }


def summarize(errors: Sequence[np.ndarray]) -> dict[str, list]:
    """Every seed's MSEs, (steps + 1, tasks) each, as one entry per step: `over_seeds` of the seeds' means
    over tasks, the median over all seeds' tasks, and the share of them that have diverged by that step
    (an MSE above DIVERGED, or not finite, at that step or before), and the mean over all seeds' tasks
    that have not. A few diverged tasks make a mean meaningless, not a median; an overflowed (NaN) MSE
    ranks as the worst."""
    per_seed = []
    for seed_errors in errors:
        with np.errstate(invalid="ignore"):  # a diverged task makes the seed's mean infinite, its interval NaN
            mean, ci95 = mean_and_ci95(seed_errors)
        per_seed.append({"mean": mean.tolist(), "ci95": ci95.tolist()})
    every_task = np.concatenate(errors, axis=1).astype(np.float64)  # (steps + 1, seeds * tasks)
    every_task[np.isnan(every_task)] = np.inf
    diverged = np.maximum.accumulate(every_task > DIVERGED, axis=0)
    with np.errstate(invalid="ignore"):  # no task left at a step: NaN
        rest = np.where(diverged, np.nan, every_task)
        mean_of_the_rest = np.nanmean(rest, axis=1) if (~diverged).any(axis=1).all() else np.full(len(rest), np.nan)
    return {
        **over_seeds(per_seed),
        "median": np.median(every_task, axis=1).tolist(),
        "diverged": diverged.mean(axis=1).tolist(),
        "mean_of_the_rest": mean_of_the_rest.tolist(),
    }
