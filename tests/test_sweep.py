"""scripts/sweep.py: every cell of the grid trained as it would be alone, scored at its own α, and written once."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from helpers import ROOT, import_script, is_png
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.core import Algorithm
from maml_sine.evaluation import draw_held_out_tasks, mse_after_each_step, scored_sets, summarize
from maml_sine.files import WriteError, as_written
from maml_sine.learners import paper_protocol
from maml_sine.training import LockstepRun, final_mse_per_seed, lane_seeds

SEEDS, UPDATES, TASKS = 2, 3, 6


@pytest.fixture(scope="module")
def sweep():
    return import_script(ROOT / "scripts" / "sweep.py")


@pytest.fixture(scope="module")
def small_sweep(sweep, tmp_path_factory):
    """A short run of the small grid, in process: its out dir and report."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["--seeds", str(SEEDS), "--updates", str(UPDATES), "--tasks", str(TASKS), "--out-dir", str(out)]
    return out, sweep.main(argv)


def test_every_cell_is_trained_as_alone_and_scored_at_its_own_inner_step_size(sweep, small_sweep):
    """The cells share a run and a task stream, not their numbers: each cell's final MSE and held-out MSE are those
    of its learners trained in a run of their own, fine-tuned by plain SGD at the cell's α."""
    _, report = small_sweep
    seeds = lane_seeds(SEEDS)
    assert len(report["cells"]) == len(sweep.SMALL.algorithms())
    sets = scored_sets(draw_held_out_tasks(TASKS, sweep.K), sweep.K)
    for algorithm, cell in zip(sweep.SMALL.algorithms(), report["cells"], strict=True):
        assert cell["algorithm"] == as_written(asdict(algorithm))
        alone = LockstepRun(paper_protocol(sweep.K, UPDATES).streams(seeds), UPDATES, "alone", compile=False)
        learners = alone.maml("alone", initializations_from_seeds(seeds), algorithm)
        alone.train()
        final = final_mse_per_seed(learners.histories)
        assert cell["final_training_mse"]["per_seed"] == final.tolist() and cell["final_training_mse"]["seeds"] == SEEDS
        assert cell["final_training_mse"]["mean"] == pytest.approx(final.mean(), rel=1e-12)
        models = [learners.params(seed) for seed in range(SEEDS)]
        errors = mse_after_each_step(models, sets, ("grid",), algorithm.inner_lr)["grid"]
        assert as_written(cell["held_out"]) == as_written(summarize(list(errors)))


def test_a_seed_that_diverges_is_named_and_left_out_of_the_final_training_mse(sweep):
    seeds = lane_seeds(2)
    learners = BatchedMAML(initializations_from_seeds(seeds), Algorithm(1), stop_diverged=True)
    streams = paper_protocol(sweep.K).streams(seeds)
    learners.train(streams.next_batch())
    tasks = streams.next_batch()
    tasks[1][1] *= 1e30  # seed 1's support targets: its loss overflows
    learners.train(tasks)
    record = sweep.cell_record(learners, scored_sets(draw_held_out_tasks(TASKS, sweep.K), sweep.K))
    assert record["stopped_at_update"] == {"1": 1}
    final = record["final_training_mse"]
    assert final["seeds"] == 1 and np.isnan(final["per_seed"][1]) and final["mean"] == final["per_seed"][0]
    assert np.shape(record["held_out"]["per_seed"]) == (2, sweep.MAX_STEPS + 1), "every seed is evaluated as it was"


def test_the_sweep_writes_its_record_table_and_heatmap(sweep, small_sweep):
    out, report = small_sweep
    assert sorted(path.name for path in out.iterdir()) == ["heatmap.png", "results.json", "results.md"]
    results = json.loads((out / "results.json").read_text())
    assert results == as_written(report)
    assert results["grid"] == as_written({**asdict(sweep.SMALL), "seeds": SEEDS, "updates": UPDATES})
    assert results["seeds"] == as_written(lane_seeds(SEEDS)) and results["device"] == "cpu"
    assert results["held_out"]["tasks"] == TASKS and results["protocol"] == paper_protocol(sweep.K, UPDATES).record()
    assert (out / "results.md").read_text() == sweep.markdown(results)
    assert is_png(out / "heatmap.png")


def test_the_committed_results_md_is_the_table_of_the_committed_results_json(sweep):
    folder = ROOT / "docs" / "sweep"
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "results.md").read_text() == sweep.markdown(results)
    assert results["grid"] == as_written(asdict(sweep.SMALL)) and len(results["seeds"]) >= 20


def test_ctrl_c_writes_nothing(sweep, tmp_path, monkeypatch):
    def interrupted(run, *args, **kwargs):
        raise KeyboardInterrupt("interrupted after 1 update")

    monkeypatch.setattr(sweep.LockstepRun, "train", interrupted)
    with pytest.raises(KeyboardInterrupt, match=f"interrupted after 1 update; nothing was written to {tmp_path}"):
        sweep.main(["--seeds", "1", "--updates", "1", "--tasks", "2", "--out-dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_a_figure_that_cannot_be_written_keeps_the_results(sweep, tmp_path, monkeypatch):
    def full_disk(figure, path):
        raise WriteError(path, OSError(28, "No space left on device"))

    monkeypatch.setattr(sweep, "save_figure", full_disk)
    with pytest.raises(WriteError, match=f"results.json and results.md in {tmp_path} are complete"):
        sweep.main(["--seeds", "1", "--updates", "1", "--tasks", "2", "--out-dir", str(tmp_path)])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json", "results.md"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--seeds", "0"], "must be at least 1"),
        (["--device", "gpu"], "argument --device: 'gpu' is not a device"),
        pytest.param(
            ["--device", "cuda"],
            "torch sees no CUDA device here; use cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device here"),
        ),
    ],
)
def test_bad_arguments_exit_2_before_anything_is_made(sweep, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exited:
        sweep.parse_args(["--out-dir", str(tmp_path / "out"), *bad])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.startswith("usage:") and captured.out == ""
    assert not (tmp_path / "out").exists()
