"""Running a study (`maml_sine.learners.Study`): every learner trained or loaded, the step size it is fine-tuned
with chosen, every section scored, and the curvature of the support loss recorded. `scripts/evaluate.py`
runs one and writes what it measured.
"""

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maml_sine import multitask
from maml_sine.batched import initializations_from_seeds
from maml_sine.core import Algorithm
from maml_sine.divergence import median_alpha_lambda, predictors, side_by_side, warnings
from maml_sine.evaluation import (
    DIVERGED,
    MAX_STEPS,
    HeldOutTasks,
    as_params,
    curvature_along_sgd,
    mse_after_each_step,
    predictions_after_each_step,
    scored_sets,
    summarize,
    task_to_draw,
    tuned_test_lr,
)
from maml_sine.files import write_text_atomically
from maml_sine.interrupts import stop_requested
from maml_sine.learned import learned
from maml_sine.learners import LEARNERS, Learner, MultiTask, Protocol, Study
from maml_sine.processes import available_cores, in_processes
from maml_sine.training import cached, final_mse_per_seed, trained_or_loaded, worth_compiling
from utils import NUMPY_SEED

LAMBDA_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class Run:
    """A run of `study`: its learners trained with `seeds` (explicit (numpy, torch) seed pairs), their checkpoints
    in `checkpoint_dir` (trained again if `retrain`), and the multi-task baselines with `regressors` regressors
    (None: the registry's number); every model trained or loaded onto `device`. The learners without a checkpoint
    are trained in `jobs` processes at once (`maml_sine.processes`), the same models as in one."""

    study: Study
    seeds: list[tuple[int, int]]
    checkpoint_dir: Path
    retrain: bool = False
    regressors: int | None = None
    device: torch.device | str = "cpu"
    jobs: int = 1

    def seed_range(self) -> str:
        first, last = (seed - NUMPY_SEED for seed in (self.seeds[0][0], self.seeds[-1][0]))
        return f"seeds{first}-{last}"


def default_jobs(study: Study, device: torch.device | str) -> int:
    """Processes that train a study's learners at once, unless told: every core for long trainings on the CPU
    (those `worth_compiling`, whose compiling and updates both gain), one otherwise."""
    long = worth_compiling(min(protocol.updates for protocol in study.training))
    return available_cores() if long and torch.device(device).type == "cpu" else 1


def trained_learners(run: Run, saved: list[str]) -> tuple[dict, dict]:
    """Every learner of the study, trained or loaded, one model per training protocol: {(name, K): each seed's
    initialization} and {name: {"K=k": where it came from, its final training MSE of each seed, ...}}.
    Learners that differ only in how they are tested share one training. `saved` gains each learner as its
    checkpoint is written or found."""
    units, unit_of = {}, {}
    for study_protocol in run.study.training:
        for name in run.study.learners:
            learner = _for_this_run(LEARNERS[name], run)
            protocol = learner.trained_under(study_protocol)
            depends_on_k = isinstance(learner.algorithm, Algorithm)
            key = json.dumps([learner.training(), protocol.record() if depends_on_k else None])
            units.setdefault(key, (name, learner, protocol))
            unit_of[name, study_protocol.support_points] = key
    trained = _all_trained(run, units, saved)
    initializations, records = {}, {name: {} for name in run.study.learners}
    for (name, k), key in unit_of.items():
        initializations[name, k], records[name][f"K={k}"] = trained[key]
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


def _all_trained(run: Run, units: dict, saved: list[str]) -> dict:
    """`{key: _trained(run, *unit)}` for each `{key: (name, learner, protocol)}` of `units`: the learners without a
    checkpoint in `run.jobs` processes at once (if more than one), then the others here, in order."""
    paths = {key: _checkpoint(run, *unit) for key, unit in units.items()}
    to_train = {key: (run, *unit) for key, unit in units.items()
                if paths[key] is not None and (run.retrain or not paths[key].exists())}  # fmt: skip
    jobs, trained, interrupted = min(run.jobs, len(to_train)), {}, False
    if jobs > 1:  # no more processes than learners, so that each has its share of the cores
        description = f"{len(to_train)} learners trained in {jobs} processes"
        with tqdm(total=len(to_train), unit="learner", desc=description) as progress:
            for key, (result, kept) in in_processes(_trained_in_worker, to_train, jobs):
                saved.extend(kept)
                interrupted |= result is None
                if result is not None:
                    trained[key] = result
                    progress.update()
    if interrupted:  # a worker stopped by a Ctrl-C that this process did not see
        raise KeyboardInterrupt
    return {key: trained[key] if key in trained else _trained(run, *unit, saved) for key, unit in units.items()}


def _trained_in_worker(run: Run, name: str, learner: Learner, protocol: Protocol) -> tuple:
    """`_trained` in a worker process: its result (None if Ctrl-C stopped it, or came before it started) and what
    it saved."""
    saved: list[str] = []
    if stop_requested():  # already queued when the Ctrl-C came
        return None, saved
    try:
        return _trained(run, name, learner, protocol, saved), saved
    except KeyboardInterrupt:
        return None, saved


def _checkpoint(run: Run, name: str, learner: Learner, protocol: Protocol) -> Path | None:
    """Where a learner's models are saved (None for one never trained). Meta-learners are named by their stream,
    not the study: studies that train a learner under one protocol share its checkpoint."""
    if learner.algorithm is None:
        return None
    if isinstance(learner.algorithm, MultiTask):
        spec = learner.algorithm
        return (
            run.checkpoint_dir / f"{run.study.name}-{name}-{spec.regressors}x{spec.max_updates}-{run.seed_range()}.pt"
        )
    stem = f"{protocol.stream}-{name}-K{protocol.support_points}-{protocol.updates}"
    return run.checkpoint_dir / f"{stem}-{run.seed_range()}.pt"


def _trained(run: Run, name: str, learner: Learner, protocol: Protocol, saved: list[str]) -> tuple:
    """One learner's models (one per seed) under `protocol`, trained or loaded, and the record of where from."""
    start, seeds, path = time.perf_counter(), run.seeds, _checkpoint(run, name, learner, protocol)
    if learner.algorithm is None:  # never trained: the random initialization of each seed
        models = [[weight.to(run.device) for weight in network]
                  for network in initializations_from_seeds(seeds, inputs=learner.inputs)]  # fmt: skip
        return models, {"source": "random", "updates": 0}
    if isinstance(learner.algorithm, MultiTask):
        spec = learner.algorithm
        models, errors, source = multitask.trained_or_loaded(name, spec, seeds, path, retrain=run.retrain,
                                                             device=run.device)  # fmt: skip
        saved.append(name)
        record = {"source": source, "regressors": spec.record(), "regressor_mse": errors.tolist(),
                  "share_fitted": float((errors < spec.target_mse).float().mean())}  # fmt: skip
        return models, {**record, "seconds": round(time.perf_counter() - start, 2)}
    k = protocol.support_points
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


def trained_along(run: Run, saved: list[str]) -> dict:
    """The curvature learners of the study at each of its `along_training` updates (those fewer than the run's), one
    training protocol at a time, trained or loaded as any learner: {(name, K): {updates: each seed's model}}; at 0
    updates, the initialization training starts from."""
    units = {
        (name, protocol.support_points, updates): (name, LEARNERS[name], replace(protocol, updates=updates))
        for name in run.study.curvature
        for protocol in run.study.training
        for updates in run.study.along_training
        if 0 < updates < protocol.updates
    }
    trained, along = _all_trained(run, units, saved), {}
    for name in run.study.curvature:
        for protocol in run.study.training:
            k, earlier = protocol.support_points, {}
            for updates in (u for u in run.study.along_training if u < protocol.updates):
                if updates == 0:
                    earlier[0] = initializations_from_seeds(run.seeds, initialization=LEARNERS[name].initialization)
                else:
                    earlier[updates] = trained[name, k, updates][0]
            along[name, k] = earlier
    return along


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
            steps = 0 if lr == 0 else MAX_STEPS  # a learner not fine-tuned (the oracle, told the task) has one fit
            fits[name][section.key] = predictions_after_each_step(models[0], sets, fit_task, step, steps)
            if name in study.curvature:
                curvature[name][section.key] = {"test_lr": lr, **curvature_record(models, sets, step, errors)}
    return results, fits, curvature


def curvature_record(models: list, sets: dict, lr: float | Algorithm, errors: list[dict]) -> dict:
    """Per seed and task: the top eigenvalue of the support loss's Hessian at the initialization and the largest
    at the weights before each of the test-time SGD steps (of those still finite), and whether that SGD
    diverged (query MSE above DIVERGED, or not finite, at some step)."""
    along = curvature_along_sgd(models, sets, lr)  # (seeds, steps, tasks)
    diverged = np.array(
        [~(np.nan_to_num(seed_errors["query"], nan=np.inf) <= DIVERGED).all(axis=0) for seed_errors in errors]
    )
    with np.errstate(invalid="ignore"):  # weights that overflowed have no curvature: the largest before them counts
        finite = np.where(np.isfinite(along), along, np.nan)
        largest = np.nanmax(finite, axis=1)
        rest = np.nanpercentile(finite.transpose(1, 0, 2)[:, ~diverged], LAMBDA_PERCENTILES, axis=1)  # (q, steps)
    return {
        "lambda_at_start": [np.round(seed[0], 4).tolist() for seed in along],
        "lambda_max_along_sgd": [np.round(seed, 4).tolist() for seed in largest],
        "diverged": diverged.tolist(),
        # lambda before each SGD step: each diverged pair's own, and percentiles of the others' (null: overflowed)
        "lambda_along_sgd_of_the_diverged": [
            {"seed": int(seed), "task": int(task), "lambda": _rounded(finite[seed, :, task])}
            for seed, task in np.argwhere(diverged)
        ],
        "lambda_along_sgd_percentiles_of_the_rest": {
            f"{q:g}": np.round(values, 4).tolist() for q, values in zip(LAMBDA_PERCENTILES, rest)
        },
    }


def _rounded(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(value) else round(float(value), 4) for value in values]


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


def divergence_warnings(study: Study, initializations: dict, tasks: HeldOutTasks, validation: HeldOutTasks,
                        lrs: dict) -> dict:  # fmt: skip
    """For each curvature learner of the study: `divergence.warnings`, every section's seed-task pairs side by side,
    thresholds chosen on the `validation` tasks and tested on the held-out `tasks`."""
    found = {}
    for name in study.curvature:
        parts = {"validation": [], "held_out": []}
        for section in study.sections:
            models, lr = initializations[name, section.trained_k], lrs[name][section.key]
            for where, drawn in (("validation", validation), ("held_out", tasks)):
                sets = scored_sets(drawn, section.k, LEARNERS[name].inputs, section.half)
                parts[where].append(predictors(models, sets, lr))
        found[name] = warnings(side_by_side(parts["validation"]), side_by_side(parts["held_out"]))
    return found


def edge_of_stability(study: Study, initializations: dict, along: dict, tasks: HeldOutTasks) -> dict:
    """Where each curvature learner's initialization sits against the edge of stability of its own inner step:
    the median over the held-out tasks of alpha * lambda (K support points, the K it was trained with), per seed,
    at each point of training looked at: {name: {"K=k": {updates: [per seed]}}}."""
    found = {}
    for name in study.curvature:
        lr = LEARNERS[name].algorithm.inner_lr
        for protocol in study.training:
            k = protocol.support_points
            sets = scored_sets(tasks, k)
            models = {**along.get((name, k), {}), protocol.updates: initializations[name, k]}
            found.setdefault(name, {})[f"K={k}"] = {
                str(updates): median_alpha_lambda(models[updates], sets, lr) for updates in sorted(models)
            }
    return found


EVALUATION_CODE = ("evaluation.py", "studies.py", "divergence.py", "learned.py", "learners.py")  # what it depends on


def evaluation_record(study: Study, seeds: list, tasks: int, initializations: dict, along: dict) -> dict:
    """What a study's evaluation comes from: the study, its seeds and number of held-out tasks, a SHA-256 digest of
    every model it evaluates (each tensor's bytes, in a fixed order), and one of the package's evaluation code."""
    models = hashlib.sha256()
    for key, seed_models in sorted({**initializations, **along}.items(), key=lambda item: str(item[0])):
        models.update(str(key).encode())
        for model in _models_of(seed_models):
            for name, tensor in sorted(as_params(model).items()):
                models.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    code = hashlib.sha256(b"".join((Path(__file__).parent / name).read_bytes() for name in EVALUATION_CODE))
    return {"study": study.record(), "seeds": [list(seed) for seed in seeds], "tasks": tasks,
            "models": models.hexdigest(), "code": code.hexdigest()}  # fmt: skip


def _models_of(value) -> list:
    """The models under a value of `trained_learners`' or `trained_along`'s dicts: a list of seeds' models, or
    {updates: such a list}."""
    return [model for models in value.values() for model in models] if isinstance(value, dict) else list(value)


def cached_evaluation(path: Path, record: dict, measure: Callable[[], tuple[dict, dict]], *,
                      retrain: bool = False) -> tuple[dict, dict]:  # fmt: skip
    """`measure()`'s (measured, fits), read from `path` if a cache of the same `record` is there (and not
    `retrain`), else measured and cached there (`training.cached`). The cache is JSON with NaN and infinities kept
    (Python's own reading of them), so the results are those just measured, to the bit. A cache that cannot be
    read, or of another record, is measured again and replaced, with one line saying so."""
    return cached(path, record, measure, save=_save_evaluation, load=_load_evaluation, retrain=retrain)[0]


def _load_evaluation(path: Path, record: dict) -> tuple[dict, dict] | None:
    """The cached (measured, fits) at `path`, or None (said in one line) if it is damaged or of another record."""
    try:
        found = json.loads(path.read_text())
        if found["record"] == json.loads(json.dumps(record)):  # as it reads back: tuples become lists
            fits = {name: {key: np.array(fit) for key, fit in by_section.items()}
                    for name, by_section in found["fits"].items()}  # fmt: skip
            return found["measured"], fits
        print(f"{path} holds the evaluation of other models, tasks or code: evaluating again")
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"cannot read the cached evaluation {path} ({error}): evaluating again")
    return None


def _save_evaluation(evaluation: tuple[dict, dict], record: dict, path: Path) -> None:
    measured, fits = evaluation
    listed = {
        name: {key: np.asarray(fit).tolist() for key, fit in by_section.items()} for name, by_section in fits.items()
    }
    write_text_atomically(path, json.dumps({"record": record, "measured": measured, "fits": listed}))
