"""Running a study (`maml_sine.learners.Study`): every learner trained or loaded, the step size it is fine-tuned
with chosen, every section scored, and the curvature of the support loss recorded. `scripts/evaluate.py`
runs one and writes what it measured.
"""

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from maml_sine import multitask
from maml_sine.batched import initializations_from_seeds
from maml_sine.core import Algorithm
from maml_sine.evaluation import (
    DIVERGED,
    MAX_STEPS,
    HeldOutTasks,
    curvature_along_sgd,
    mse_after_each_step,
    predictions_after_each_step,
    scored_sets,
    summarize,
    task_to_draw,
    tuned_test_lr,
)
from maml_sine.interrupts import stop_requested
from maml_sine.learned import learned
from maml_sine.learners import LEARNERS, Learner, MultiTask, Protocol, Study
from maml_sine.training import final_mse_per_seed, trained_or_loaded
from utils import NUMPY_SEED


@dataclass(frozen=True)
class Run:
    """A run of `study`: its learners trained with `seeds` (explicit (numpy, torch) seed pairs), their checkpoints
    in `checkpoint_dir` (trained again if `retrain`), and the multi-task baselines with `regressors` regressors
    (None: the registry's number); every model trained or loaded onto `device`."""

    study: Study
    seeds: list[tuple[int, int]]
    checkpoint_dir: Path
    retrain: bool = False
    regressors: int | None = None
    device: torch.device | str = "cpu"

    def seed_range(self) -> str:
        first, last = (seed - NUMPY_SEED for seed in (self.seeds[0][0], self.seeds[-1][0]))
        return f"seeds{first}-{last}"


def trained_learners(run: Run, saved: list[str]) -> tuple[dict, dict]:
    """Every learner of the study, trained or loaded, one model per training protocol: {(name, K): each seed's
    initialization} and {name: {"K=k": where it came from, its final training MSE of each seed, ...}}.
    Learners that differ only in how they are tested share one training. `saved` gains each learner as its
    checkpoint is written or found."""
    initializations, records, shared = {}, {name: {} for name in run.study.learners}, {}
    for study_protocol in run.study.training:
        k = study_protocol.support_points
        for name in run.study.learners:
            learner = _for_this_run(LEARNERS[name], run)
            protocol = learner.trained_under(study_protocol)
            depends_on_k = isinstance(learner.algorithm, Algorithm)
            key = json.dumps([learner.training(), protocol.record() if depends_on_k else None])
            if key not in shared:
                shared[key] = _trained(run, name, learner, protocol, saved)
            initializations[name, k], records[name][f"K={k}"] = shared[key]
    return initializations, records


def _for_this_run(learner: Learner, run: Run) -> Learner:
    """The learner as this run trains it: a multi-task baseline with the run's number of regressors, each trained
    for no more updates than the study's meta-learners."""
    if not isinstance(learner.algorithm, MultiTask):
        return learner
    spec = learner.algorithm
    updates = min(protocol.updates for protocol in run.study.training)
    spec = replace(spec, regressors=run.regressors or spec.regressors, max_updates=min(spec.max_updates, updates))
    return replace(learner, algorithm=replace(spec, at_once=min(spec.at_once, spec.regressors)))


def _trained(run: Run, name: str, learner: Learner, protocol: Protocol, saved: list[str]) -> tuple:
    """One learner's models (one per seed) under `protocol`, trained or loaded, and the record of where from."""
    start, seeds, folder, stem = time.perf_counter(), run.seeds, run.checkpoint_dir, run.study.name
    if learner.algorithm is None:  # never trained: the random initialization of each seed
        models = [[weight.to(run.device) for weight in network]
                  for network in initializations_from_seeds(seeds, inputs=learner.inputs)]  # fmt: skip
        return models, {"source": "random", "updates": 0}
    if isinstance(learner.algorithm, MultiTask):
        spec = learner.algorithm
        path = folder / f"{stem}-{name}-{spec.regressors}x{spec.max_updates}-{run.seed_range()}.pt"
        models, errors, source = multitask.trained_or_loaded(name, spec, seeds, path, retrain=run.retrain,
                                                             device=run.device)  # fmt: skip
        saved.append(name)
        record = {"source": source, "regressors": spec.record(), "regressor_mse": errors.tolist(),
                  "share_fitted": float((errors < spec.target_mse).float().mean())}  # fmt: skip
        return models, {**record, "seconds": round(time.perf_counter() - start, 2)}
    k = protocol.support_points
    # Named by the stream, not the study: studies that train a learner under one protocol share its checkpoint.
    path = folder / f"{protocol.stream}-{name}-K{k}-{protocol.updates}-{run.seed_range()}.pt"
    try:
        learners, source = trained_or_loaded(name, learner, protocol, seeds, path, retrain=run.retrain,
                                             device=run.device)  # fmt: skip
    except KeyboardInterrupt:
        if stop_requested():  # stopped between two updates by the project's handler, and saved there
            saved.append(f"{name}, K={k} (part-trained: the next run resumes it)")
        raise
    saved.append(f"{name}, K={k}")
    record = {
        "source": source,
        "updates": len(learners.losses),
        "final_training_query_mse": final_mse_per_seed(learners.histories).tolist(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if learners.diverged_at:  # a seed whose training diverged: it is evaluated as it was before that update
        record["stopped_at_update"] = {str(seed): update for seed, update in sorted(learners.diverged_at.items())}
    return [learners.params(seed) for seed in range(len(seeds))], record


def test_lrs(study: Study, initializations: dict, validation: HeldOutTasks) -> dict:
    """Each learner's SGD step size at test, per section: its own, or, where it has none (None), the one
    `tuned_test_lr` chooses on the validation tasks: {name: {section: lr}}, and the tuning's scores."""
    chosen, tuning = {}, {}
    for name in study.learners:
        learner = LEARNERS[name]
        chosen[name] = {}
        for section in study.sections:
            if learner.test_lr is not None:
                chosen[name][section.key] = learner.test_lr
                continue
            models = initializations[name, section.trained_k]
            lr, scores = tuned_test_lr(models, validation, section.k, learner.inputs, section.half)
            chosen[name][section.key] = lr
            tuning.setdefault(name, {})[section.key] = scores
    return chosen, tuning


def evaluated(study: Study, initializations: dict, tasks, lrs: dict) -> tuple[dict, dict, dict]:
    """Every learner's summary per score and section ({score: {name: {section: summary}}}), the fits of seed 0
    on the drawn task ({name: {section: (steps + 1, grid points)}}), and the curvature record of
    `study.curvature`'s learners ({name: {section: per seed-task lists}})."""
    results = {score: {name: {} for name in study.learners} for score in study.scores}
    fits, curvature = {name: {} for name in study.learners}, {name: {} for name in study.curvature}
    fit_task = task_to_draw(tasks)
    for section in study.sections:
        for name in study.learners:
            learner, lr = LEARNERS[name], lrs[name][section.key]
            step = learner.test_step(lr)
            sets = scored_sets(tasks, section.k, learner.inputs, section.half)
            models = initializations[name, section.trained_k]
            every_model = mse_after_each_step(models, sets, study.scores, step)  # {score: (seeds, steps + 1, tasks)}
            errors = [{score: every_model[score][seed] for score in study.scores} for seed in range(len(models))]
            for score in study.scores:
                results[score][name][section.key] = summarize([seed_errors[score] for seed_errors in errors])
            steps = 0 if learner.inputs > 1 else MAX_STEPS  # the oracle, told the task, is not fine-tuned
            fits[name][section.key] = predictions_after_each_step(models[0], sets, fit_task, step, steps)
            if name in study.curvature:
                curvature[name][section.key] = {"test_lr": lr, **curvature_record(models, sets, step, errors)}
    return results, fits, curvature


def curvature_record(models: list, sets: dict, lr: float | Algorithm, errors: list[dict]) -> dict:
    """Per seed and task: the top eigenvalue of the support loss's Hessian at the initialization and the largest
    at the weights before each of the test-time SGD steps (of those still finite), and whether that SGD
    diverged (query MSE above DIVERGED, or not finite, at some step)."""
    along = curvature_along_sgd(models, sets, lr)  # (seeds, steps, tasks)
    diverged = [~(np.nan_to_num(seed_errors["query"], nan=np.inf) <= DIVERGED).all(axis=0) for seed_errors in errors]
    with np.errstate(invalid="ignore"):  # weights that overflowed have no curvature: the largest before them counts
        largest = [np.nanmax(np.where(np.isfinite(seed), seed, np.nan), axis=0) for seed in along]
    return {
        "lambda_at_start": [np.round(seed[0], 4).tolist() for seed in along],
        "lambda_max_along_sgd": [np.round(seed, 4).tolist() for seed in largest],
        "diverged": [flags.tolist() for flags in diverged],
    }


def what_was_learned(study: Study, initializations: dict, tasks: HeldOutTasks) -> dict:
    """What each learner of the study learned beside its initialization (`maml_sine.learned`), per training protocol:
    {name: {"K=k": record}}, for the learners that learn more."""
    found = {}
    for name in study.learners:
        for protocol in study.training:
            k = protocol.support_points
            record = learned(name, initializations[name, k], tasks, k)
            if record is not None:
                found.setdefault(name, {})[f"K={k}"] = record
    return found
