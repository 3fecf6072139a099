"""maml_sine.processes and `scripts/evaluate.py --jobs`: learners trained in several processes are the learners
trained in one, bit for bit, and a Ctrl-C at the terminal stops every process, keeping whole files a rerun goes
on from."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import HEADLESS, ROOT
from maml_sine.checkpoints import Progress, load_progress
from maml_sine.learners import LEARNERS, STUDIES, assignment_protocol
from maml_sine.processes import in_processes
from maml_sine.studies import default_jobs
from maml_sine.training import COMPILE_FROM, lane_seeds

SCRIPT = ROOT / "scripts" / "evaluate.py"
LEARNED = ("maml", "first_order_maml", "pretrained")  # the assignment study's trained learners


def arguments(folder, *extra: str, updates: int = 2, seeds: int = 1) -> list[str]:
    folders = ["--out-dir", str(folder / "out"), "--checkpoint-dir", str(folder / "checkpoints")]
    return ["--updates", str(updates), "--tasks", "4", "--seeds", str(seeds), *folders, *extra]


def without_times(results: dict) -> dict:
    """results.json less what depends on the clock: the seconds of each learner and of the run."""
    learners = {name: {k: {key: value for key, value in record.items() if key != "seconds"}
                       for k, record in records.items()} for name, records in results["learners"].items()}  # fmt: skip
    return {**results, "learners": learners, "wall_seconds": None}


def test_learners_trained_in_two_processes_are_bitwise_those_trained_in_one(tmp_path, evaluate):
    """The assignment study trained with --jobs 2 and with --jobs 1: the same checkpoint files, byte for byte, and
    the same results."""
    for jobs in ("2", "1"):
        evaluate.main(arguments(tmp_path / jobs, "--jobs", jobs))
    reports = {jobs: json.loads((tmp_path / jobs / "out" / "results.json").read_text()) for jobs in ("2", "1")}
    assert without_times(reports["2"]) == without_times(reports["1"])
    assert reports["2"]["learners"]["maml"]["K=10"]["source"] == "trained"
    files = {jobs: sorted((tmp_path / jobs / "checkpoints").glob("*.pt")) for jobs in reports}
    assert [path.name for path in files["2"]] == [path.name for path in files["1"]]
    assert len(files["2"]) == len(LEARNED)
    assert all(two.read_bytes() == one.read_bytes() for two, one in zip(files["2"], files["1"], strict=True))


def test_results_come_back_as_each_call_finishes_and_errors_are_raised():
    """`in_processes` gives every call's result under its key, and a worker's error is raised in the caller."""
    assert dict(in_processes(divmod, {"a": (7, 2), "b": (9, 4)}, jobs=2)) == {"a": (3, 1), "b": (2, 1)}
    with pytest.raises(ZeroDivisionError):
        dict(in_processes(divmod, {"a": (7, 0), "b": (9, 4)}, jobs=2))


def test_long_trainings_on_the_cpu_use_every_core_by_default():
    assert default_jobs(STUDIES["paper"](), "cpu") == len(os.sched_getaffinity(0))
    assert default_jobs(STUDIES["paper"](), "meta") == 1
    assert default_jobs(STUDIES["paper"](updates=COMPILE_FROM - 1), "cpu") == 1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT and process groups are POSIX's")
def test_ctrl_c_at_the_terminal_stops_every_worker_within_2_s_keeping_whole_checkpoints_to_resume(tmp_path):
    """A real SIGINT to the whole process group (as a terminal sends it) while two workers train: status 130 within
    2 s, one line naming what is kept, nothing written to --out-dir, no temporary file, and each checkpoint a part of
    its run that the next run resumes (as one process's are: tests/test_evaluation.py)."""
    updates, log = COMPILE_FROM - 1, tmp_path / "log"
    command = [sys.executable, str(SCRIPT), *arguments(tmp_path, "--jobs", "2", updates=updates, seeds=2)]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**HEADLESS, "MPLBACKEND": "Agg"}, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # a process group of its own, as a terminal's foreground job
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while "trained in 2 processes" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(10)  # the workers start (a fresh interpreter each) and train part of their first learners
            os.killpg(process.pid, signal.SIGINT)
            sent = time.monotonic()
            returncode = process.wait(timeout=60)
            seconds = time.monotonic() - sent
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    errors = log.read_text()
    assert returncode == 130 and seconds < 2, (seconds, errors)
    assert "Traceback" not in errors and not list((tmp_path / "out").iterdir()), errors
    folder = tmp_path / "checkpoints"
    assert not [path for path in folder.iterdir() if path.name.startswith(".")], "no temporary file left"
    kept = [name for name in LEARNED if (folder / f"assignment-{name}-K10-{updates}-seeds0-1.pt").exists()]
    assert kept, errors
    part_trained = ", ".join(f"{name}, K=10 (part-trained: the next run resumes it)" for name in kept)
    assert f"\ninterrupted while training; checkpoints of {part_trained} are kept in {folder}" in errors, errors
    for name in kept:
        protocol = assignment_protocol(updates=updates)
        record = {"learner": LEARNERS[name].training(), "protocol": protocol.record(),
                  "seeds": [list(seed) for seed in lane_seeds(2)]}  # fmt: skip
        progress = load_progress(folder / f"assignment-{name}-K10-{updates}-seeds0-1.pt", record)
        assert isinstance(progress, Progress) and 0 < len(progress.learners.losses) < updates
