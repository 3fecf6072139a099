"""What the MAML family's learners learn beside an initialization, read from their params for the family's page:

    meta_sgd         the mean step size alpha of each of the network's tensors, per seed
    maml_plus_plus   the S step sizes of each tensor, per seed (LSLR)
    cavia            the context each held-out task adapts to, against the task's amplitude and phase

`learned(name, models, tasks, k)` gives a learner's record (plain lists, for results.json), or None for a
learner that learns an initialization alone.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch.func import vmap

from maml_sine.cavia import CAVIA, CONTEXT
from maml_sine.core import NETWORK, Params
from maml_sine.evaluation import HeldOutTasks
from maml_sine.learners import LEARNERS
from maml_sine.meta_sgd import STEP_SIZE  # MAML++ names its step sizes as Meta-SGD does


def mean_step_sizes(models: Sequence[Params]) -> dict[str, list[float]]:
    """Meta-SGD: each network tensor's mean learned step size, one per seed."""
    return {name: [round(float(model[STEP_SIZE + name].mean()), 6) for model in models] for name in NETWORK}


def step_sizes_per_step(models: Sequence[Params]) -> dict[str, list[list[float]]]:
    """MAML++: each network tensor's S learned step sizes, one list per seed."""
    return {name: [np.round(model[STEP_SIZE + name].tolist(), 6).tolist() for model in models] for name in NETWORK}


def adapted_contexts(
    algorithm: CAVIA, model: Params, support_x: torch.Tensor, support_y: torch.Tensor
) -> torch.Tensor:  # fmt: skip
    """CAVIA: each task's context after the learner's inner steps on its support set (n, k, 1): (n, context_size).
    The inner step folds W_c c into the first layer's bias, so c is recovered from the bias's move by least squares
    (exact while W_c, 40 x context_size, has full column rank)."""
    moved = vmap(lambda x, y: algorithm.adapt(model, x, y)[1])(support_x, support_y) - model["b1"]
    return torch.linalg.lstsq(model[CONTEXT], moved.T).solution.T


def r_squared(features: np.ndarray, target: np.ndarray) -> float:
    """The share of `target`'s variance a least-squares affine fit on `features` (n, f) explains."""
    design = np.column_stack([features, np.ones(len(features))])
    fitted = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    return float(1 - ((target - fitted) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def contexts(algorithm: CAVIA, models: Sequence[Params], tasks: HeldOutTasks, k: int) -> dict:
    """CAVIA: per seed, how much of each held-out task's coordinates a linear read-out of its adapted context explains
    (R^2): its amplitude a, and a cos p and a sin p, in which the task is linear (a sin(x + p) = a cos p sin x +
    a sin p cos x); and seed 0's contexts, task by task (the tasks' amplitudes and phases are the evaluation's)."""
    support = tasks.support(k)
    every = [adapted_contexts(algorithm, model, *support).cpu().double().numpy() for model in models]
    coordinates = {
        "amplitude": tasks.amplitudes,
        "a_cos_p": tasks.amplitudes * np.cos(tasks.phases),
        "a_sin_p": tasks.amplitudes * np.sin(tasks.phases),
    }
    return {
        "k": k,
        "r_squared": {name: [round(r_squared(c, values), 4) for c in every] for name, values in coordinates.items()},
        "seed_0_contexts": np.round(every[0], 4).tolist(),
    }


READ_OUTS = {  # a learner's kind -> what it learned beside an initialization, from its algorithm, models, tasks, K
    "meta_sgd": lambda algorithm, models, tasks, k: {"mean_step_size": mean_step_sizes(models)},
    "maml_plus_plus": lambda algorithm, models, tasks, k: {"step_sizes_per_step": step_sizes_per_step(models)},
    "cavia": lambda algorithm, models, tasks, k: {"context": contexts(algorithm, models, tasks, k)},
}


def learned(name: str, models: Sequence[Params], tasks: HeldOutTasks, k: int) -> dict | None:
    """What learner `name` learned beside its initialization (its models, one per seed, trained at K = k), or None."""
    algorithm = LEARNERS[name].algorithm
    read_out = READ_OUTS.get(getattr(algorithm, "kind", None))
    return None if read_out is None else read_out(algorithm, models, tasks, k)
