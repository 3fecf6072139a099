"""The device: learners, task streams, checkpoints and the evaluation all on the learners' device, and `--device`.

No test here needs a GPU. The CPU is the one device these machines have, so the check that nothing is made off the
learners' device runs the learners on the CPU with torch's default device set to `meta` (`with torch.device("meta")`):
a tensor the package made without naming a device would be made on meta, and an op mixing it with the learners'
tensors fails (torch refuses to mix meta and CPU tensors, even 0-d ones, which it lets pass between a GPU and the
CPU), or it comes out on meta, which the check of every tensor's device catches. What the package moves to the device
by name (the streams' draws, the held-out tasks, a checkpoint's tensors) is on the CPU here either way: the device
check on a GPU machine is still to see those.
"""

import argparse
import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from helpers import ROOT, import_script
from maml_sine import multitask
from maml_sine.batched import BatchedMAML, BatchedTrainFromScratch, initializations_from_seeds
from maml_sine.checkpoints import Progress, load, load_progress, save
from maml_sine.cli import parse_device
from maml_sine.core import Algorithm
from maml_sine.evaluation import (
    curvature_along_sgd,
    draw_held_out_tasks,
    mse_after_each_step,
    predictions_after_each_step,
    scored_sets,
    tuned_test_lr,
)
from maml_sine.learned import learned
from maml_sine.learners import FAMILY, LEARNERS, MultiTask, assignment_protocol, meta_sgd_protocol, paper_protocol
from maml_sine.streams import FREQUENCY_RANGE, on_device
from maml_sine.training import LockstepRun, lane_seeds

UPDATES, SEEDS = 3, 2
CPU = torch.device("cpu")


def tensors_of(value: object) -> Iterator[torch.Tensor]:
    """Every tensor in `value`: a tensor, or a mapping, list or tuple (a learner's state) of them, at any depth."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_of(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_of(item)


def held_by(learners: BatchedMAML | BatchedTrainFromScratch) -> list[torch.Tensor]:
    """Every tensor lockstep learners hold: their state, records (blocks and rows), and anchors and stops."""
    records = [learners.losses, *([learners.gradient_norms] if isinstance(learners, BatchedMAML) else [])]
    held = [*tensors_of(learners.state), *(t for record in records for t in [*record.blocks, *record.rows])]
    if isinstance(learners, BatchedMAML):
        held += [*tensors_of(learners.anchors), learners.active]
    return held


def trained(run: LockstepRun) -> list[torch.Tensor]:
    """`run` trained, and every tensor of its learners."""
    run.train()
    return [tensor for learners in run.learners.values() for tensor in held_by(learners)]


def test_nothing_in_the_package_makes_a_tensor_off_the_learners_device(tmp_path):
    seeds, made = lane_seeds(SEEDS), []
    with torch.device("meta"):
        family = LockstepRun(paper_protocol(5, UPDATES).streams(seeds), UPDATES, "family", compile=False)
        for name in FAMILY:
            learner = LEARNERS[name]
            initializations = initializations_from_seeds(seeds, inputs=learner.network_inputs)
            family.maml(name, initializations, learner.algorithm, stop_diverged=True)
        oracle = LockstepRun(paper_protocol(5, UPDATES).streams(seeds, inputs=3), UPDATES, "oracle", compile=False)
        oracle.maml("oracle", initializations_from_seeds(seeds, inputs=3), LEARNERS["oracle"].algorithm)
        sines = LockstepRun(meta_sgd_protocol(5, UPDATES).streams(seeds), UPDATES, "frequency", compile=False)
        sines.maml("meta_sgd", initializations_from_seeds(seeds), LEARNERS["meta_sgd"].algorithm)
        assignment = LockstepRun(assignment_protocol(updates=UPDATES).streams(seeds), UPDATES, "tfs", compile=False)
        starts = initializations_from_seeds(seeds)
        assignment.maml("pulled", starts, Algorithm(1, weight_decay=0.1), anchors=initializations_from_seeds(seeds, 1))
        assignment.from_scratch("scratch", starts, num_steps=2)
        runs = [family, oracle, sines, assignment]
        for run in runs:
            made += trained(run)
        # The multi-task baseline: the one-task stream, the regressors' fit, the running mean as anchors, its file.
        spec = MultiTask("running_mean", 0.01, regressors=4, at_once=2, max_updates=UPDATES, check_every=1)
        for _ in ("trained", "loaded"):
            made += tensors_of(multitask.trained_or_loaded("multitask", spec, seeds, tmp_path / "multitask.pt")[:2])
        # A checkpoint of part of a run, loaded and resumed from; then the whole run's, loaded.
        protocol, maml = paper_protocol(5, 2 * UPDATES), Algorithm(1)
        record = {"learner": LEARNERS["maml"].training(), "protocol": protocol.record(), "seeds": [*map(list, seeds)]}
        part = LockstepRun(protocol.streams(seeds), UPDATES, "part", compile=False)
        part.maml("maml", starts, maml)
        made += trained(part)
        save(part.learners["maml"], record, tmp_path / "maml.pt", part.streams.state())
        progress = load_progress(tmp_path / "maml.pt", record)
        assert isinstance(progress, Progress)
        whole = LockstepRun(protocol.streams(seeds), 2 * UPDATES, "whole", compile=False)
        whole.maml("maml", starts, maml)
        whole.resume({"maml": progress.learners}, progress.streams)
        made += trained(whole)
        save(whole.learners["maml"], record, tmp_path / "maml.pt")
        made += held_by(load(tmp_path / "maml.pt", record))
        made += [part for run in [*runs, whole] for part in run.streams.next_batch()]
        # The evaluation of every learner; the tuning, fits and curvature of MAML; what the family learned.
        tasks = draw_held_out_tasks(6, 10, frequency_range=FREQUENCY_RANGE)
        for name, learners in [*family.learners.items(), ("oracle", oracle.learners["oracle"])]:
            learner, models = LEARNERS[name], [learners.params(seed) for seed in range(SEEDS)]
            made += tensors_of(models)
            sets = scored_sets(tasks, 5, learner.inputs, half="left")
            step = learner.test_step(learner.test_lr)
            assert mse_after_each_step(models, sets, ("grid", "query"), step, steps=2)["grid"].shape == (SEEDS, 3, 6)
            learned(name, models, tasks, 5)
        models, sets = [family.learners["maml"].params(seed) for seed in range(SEEDS)], scored_sets(tasks, 5)
        made += tensors_of(sets)
        assert predictions_after_each_step(models[0], sets, 0, 0.01, steps=1).shape == (2, len(tasks.grid_x))
        assert curvature_along_sgd(models, sets, 0.01, steps=1).shape == (SEEDS, 1, 6)
        tuned_test_lr(models, tasks, 5, grid=(0.01,))
    assert {tensor.device for tensor in made} == {CPU}


def test_a_chunk_of_tasks_goes_to_the_device_in_one_buffer_and_comes_back_bitwise():
    """`on_device` packs the parts into one buffer (one copy to a device) and gives them back exactly, as views; the
    streams' tasks are checked against their references where they are (test_batched, test_paper_protocol)."""
    seeds = lane_seeds(SEEDS)
    for protocol in (assignment_protocol(), paper_protocol(5)):
        batch = protocol.streams(seeds).next_batch()
        copied = on_device(batch, CPU)
        assert all(torch.equal(mine, theirs) for mine, theirs in zip(copied, batch, strict=True))
        assert len({tensor.untyped_storage().data_ptr() for tensor in copied}) == 1, "one buffer, one copy"
    on_meta = on_device(batch, torch.device("meta"))
    assert [(t.shape, t.device.type) for t in on_meta] == [(t.shape, "meta") for t in batch]


def test_learners_go_on_only_from_learners_on_their_device():
    initializations = initializations_from_seeds(lane_seeds(1))
    learners, saved = BatchedMAML(initializations, Algorithm(1)), BatchedMAML(initializations, Algorithm(1))
    saved.state = saved.state._replace(params={name: t.to("meta") for name, t in saved.state.params.items()})
    with pytest.raises(ValueError, match="on their device"):
        learners.go_on_from(saved)


def test_device_cpu_gives_the_results_of_a_run_without_it(tmp_path):
    """`--device cpu` is the default: scripts/evaluate.py with and without it writes the same results.json, every
    number bitwise (the seconds apart), and its checkpoints hold the same bytes."""
    evaluate = import_script(ROOT / "scripts" / "evaluate.py")
    results = []
    for run, extra in enumerate([[], ["--device", "cpu"]]):
        folders = ["--out-dir", str(tmp_path / f"out{run}"), "--checkpoint-dir", str(tmp_path / f"checkpoints{run}")]
        evaluate.main(["--updates", "3", "--tasks", "5", "--seeds", "2", *folders, *extra])
        report = json.loads((tmp_path / f"out{run}" / "results.json").read_text())
        del report["wall_seconds"]
        for learner in report["learners"].values():
            learner["K=10"].pop("seconds", None)
        results.append(report)
    assert results[0] == results[1]
    for path in (tmp_path / "checkpoints0").glob("*.pt"):
        assert path.read_bytes() == (tmp_path / "checkpoints1" / path.name).read_bytes()


def test_a_device_is_the_cpu_or_a_cuda_device_torch_sees():
    assert parse_device("cpu") == CPU
    for text, message in [("gpu", "'gpu' is not a device"), ("meta", "run on cpu or cuda"), ("cuda:x", "not a")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse_device(text)
    if torch.cuda.is_available():
        assert parse_device("cuda") == torch.device("cuda", torch.cuda.current_device())
        with pytest.raises(argparse.ArgumentTypeError, match="CUDA device"):
            parse_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="torch sees no CUDA device here; use cpu"):
            parse_device("cuda")


def test_records_stay_with_the_learners_and_are_read_on_the_host():
    learners = BatchedMAML(initializations_from_seeds(lane_seeds(SEEDS)), Algorithm(1))
    streams = assignment_protocol().streams(lane_seeds(SEEDS))
    for _ in range(UPDATES):
        learners.train(streams.next_batch())
    histories = learners.histories
    assert isinstance(histories, np.ndarray) and histories.shape == (SEEDS, UPDATES) and histories.dtype == np.float64
    np.testing.assert_array_equal(histories, torch.stack(learners.losses.rows).T.double().numpy())


def test_test_py_with_device_cpu_trains_its_seeds_as_without_it(script, tmp_path):
    """`python test.py --seeds 2 --device cpu` passes the device to the package, and the CPU is the default there."""
    finals = []
    for run, extra in enumerate([[], ["--device", "cpu"]]):
        out = tmp_path / f"curves{run}.png"
        script.main(["--seeds", "2", "--episodes", "20", "--no-show", "--out", str(out), *extra])
        finals.append(json.loads(out.with_suffix(".json").read_text()))
    assert finals[0] == finals[1]


@pytest.mark.slow
def test_a_study_runs_end_to_end_with_meta_as_the_default_device(tmp_path):
    """scripts/evaluate.py, trained and then loaded from its checkpoints, with torch's default device `meta`: the
    study's runs, checkpoints, scores, tables and figures make nothing off the learners' device."""
    evaluate = import_script(ROOT / "scripts" / "evaluate.py")
    argv = ["--updates", "3", "--tasks", "5", "--seeds", "2", "--out-dir", str(tmp_path / "out"),
            "--checkpoint-dir", str(tmp_path / "checkpoints")]  # fmt: skip
    with torch.device("meta"):
        trained = evaluate.main(argv)
        loaded = evaluate.main(argv)
    assert {record["K=10"]["source"] for record in loaded["learners"].values()} == {"checkpoint", "random"}
    assert loaded["mse"] == trained["mse"]
