"""Will a task's test-time SGD diverge? Warnings from what is known before its loss rises, and where MAML puts its
initialization relative to the step size it adapts with.

Four predictors of one seed-task pair, each known at the step named beside it, before SGD has moved far:

    first_step        alpha * |g|, the length of the first SGD step (g: the support loss's gradient)   step 0
    lambda_start      alpha * lambda at the initialization (lambda: the support loss's top Hessian
                      eigenvalue; plain gradient descent on a quadratic diverges past 2)                step 0
    lambda_step_1     alpha * lambda after the first step                                                step 1
    support_amplitude the largest |y| among the support points (a large wave, seen before any step)      step 0

A predictor warns when its value is above a threshold. The threshold is chosen on tasks of their own (the
validation tasks, never the evaluation's): the one that best separates the pairs that diverged from the rest
(the largest share caught minus the share of false alarms). It is then tested on the held-out tasks, with
Wilson 95% intervals on every rate, as so few pairs diverge.
"""

from collections.abc import Sequence

import numpy as np
import torch
from torch.func import grad, vmap

from maml_sine.core import mse, network
from maml_sine.evaluation import (
    DIVERGED,
    Z_95,
    Model,
    for_every_model,
    mse_after_each_step,
    sgd_steps,
    top_hessian_eigenvalues,
)

WARNS_AT = {"first_step": 0, "lambda_start": 0, "lambda_step_1": 1, "support_amplitude": 0}


def predictors(models: Sequence[Model], sets: dict, lr: float) -> dict[str, np.ndarray]:
    """Every predictor of WARNS_AT for each of S `models` (one per seed) on each task of `sets` (`scored_sets`),
    fine-tuned by SGD at `lr`, and the step at which its query MSE first passes DIVERGED (or is not finite; -1 if
    never): {name: (S, n)}."""
    params, repeated = for_every_model(models, sets)
    support_x, support_y = repeated["support"]
    start, after_one = list(sgd_steps(params, support_x, support_y, 1, lr))
    gradients = vmap(grad(mse))(start, support_x, support_y)
    length = lr * torch.sqrt(sum(g.flatten(1).square().sum(1) for g in gradients))
    values = {
        "first_step": length,
        "lambda_start": lr * top_hessian_eigenvalues(start, support_x, support_y),
        "lambda_step_1": lr * top_hessian_eigenvalues(after_one, support_x, support_y),
        "support_amplitude": support_y.abs().flatten(1).amax(1),
    }
    shaped = {name: value.detach().cpu().double().numpy().reshape(len(models), -1) for name, value in values.items()}
    query = np.nan_to_num(mse_after_each_step(models, sets, ("query",), lr)["query"], nan=np.inf)  # (S, steps + 1, n)
    passed = query > DIVERGED
    shaped["diverged_at"] = np.where(passed.any(axis=1), passed.argmax(axis=1), -1)
    return shaped


def wilson(hits: int, trials: int) -> list[float]:
    """The share `hits / trials` and its Wilson 95% interval, [share, low, high] (NaN for no trials): honest near
    0 and 1, where a normal interval would cross them."""
    if trials == 0:
        return [float("nan")] * 3
    share, z2 = hits / trials, Z_95**2
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z_95 * np.sqrt(share * (1 - share) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    return [share, float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def chosen_threshold(values: np.ndarray, diverged: np.ndarray) -> float | None:
    """The threshold t (warn where value >= t) that maximizes the share of diverged pairs caught minus the share of
    the others flagged; None without a diverged pair. Only a diverged pair's value can be the best t."""
    values, diverged = np.nan_to_num(values, nan=np.inf).ravel(), diverged.ravel()
    if not diverged.any():
        return None
    candidates = np.unique(values[diverged])
    caught = (values[diverged][None, :] >= candidates[:, None]).mean(axis=1)
    false_alarms = (values[~diverged][None, :] >= candidates[:, None]).mean(axis=1) if (~diverged).any() else 0
    return float(candidates[np.argmax(caught - false_alarms)])


def warning_record(values: np.ndarray, diverged_at: np.ndarray, threshold: float | None, warns_at: int) -> dict:
    """How a warning at `threshold` fares on seed-task pairs ((S, n) each): the pairs and distinct tasks that
    diverged and that it caught, the share caught and the share of the others it flags (Wilson intervals), and
    how many steps before its divergence each caught pair was warned (from the step the warning is known at)."""
    values = np.nan_to_num(values, nan=np.inf)
    diverged = diverged_at >= 0
    flagged = values >= threshold if threshold is not None else np.zeros_like(diverged)
    caught = diverged & flagged
    ahead = (diverged_at[caught] - warns_at).tolist()
    return {
        "threshold": threshold,
        "pairs": int(diverged.size),
        "diverged_pairs": int(diverged.sum()),
        "diverged_tasks": int(diverged.any(axis=0).sum()),
        "caught_pairs": int(caught.sum()),
        "caught_tasks": int(caught.any(axis=0).sum()),
        "caught_share": wilson(int(caught.sum()), int(diverged.sum())),
        "false_alarm_share": wilson(int((flagged & ~diverged).sum()), int((~diverged).sum())),
        "steps_ahead": sorted(ahead),
    }


def warnings(validation: dict[str, np.ndarray], held_out: dict[str, np.ndarray]) -> dict[str, dict]:
    """Each predictor's threshold chosen on the `validation` pairs and its record there and on the `held_out` ones
    (each from `predictors`, sections side by side): {name: {"validation": record, "held_out": record}}."""
    records = {}
    for name, step in WARNS_AT.items():
        threshold = chosen_threshold(validation[name], validation["diverged_at"] >= 0)
        records[name] = {
            where: warning_record(found[name], found["diverged_at"], threshold, step)
            for where, found in (("validation", validation), ("held_out", held_out))
        }
    return records


def side_by_side(found: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`predictors` of several sections as one set of pairs: (S, n1 + n2 + ...) each."""
    return {name: np.concatenate([part[name] for part in found], axis=1) for name in found[0]}


def median_alpha_lambda(models: Sequence[Model], sets: dict, lr: float) -> list[float]:
    """Each model's median over the tasks of alpha * lambda at the initialization: where it sits against the edge of
    stability (2) of SGD at `lr`."""
    params, repeated = for_every_model(models, sets)
    lambdas = top_hessian_eigenvalues(network(params), *repeated["support"]).cpu().double().numpy()
    lambdas = lambdas.reshape(len(models), -1)
    return np.round(lr * np.median(lambdas, axis=1), 4).tolist()
