"""Ctrl-C with the project's handler (`maml_sine.interrupts`): the first stops the training loop after the
update it is in, or raises at once outside it; a second ends the program with status 130. Before it, while an
entry point imports, a Ctrl-C ends the program at once with one line and status 130.

Real SIGINTs to this process (or to a child, for the second Ctrl-C and the imports, which end its process).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, interrupted, run_python
from maml_sine import interrupts, studies
from maml_sine.batched import initializations_from_seeds
from maml_sine.cli import run_command
from maml_sine.core import Algorithm
from maml_sine.learners import assignment_protocol
from maml_sine.training import LockstepRun, lane_seeds

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")


@pytest.fixture
def handler(python_sigint_handler):
    """The project's handler for the test; Python's own is put back after (by `python_sigint_handler`)."""
    interrupts.stop_on_ctrl_c()


def ctrl_c() -> None:
    """A real SIGINT to this process, its handler run before this returns."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)


def test_a_first_ctrl_c_outside_the_training_loop_raises_at_once(handler):
    with pytest.raises(KeyboardInterrupt):
        ctrl_c()
        time.sleep(5)
    assert interrupts.stop_requested()


def test_in_a_worker_process_a_first_ctrl_c_only_asks_to_stop_wherever_it_lands(python_sigint_handler, monkeypatch):
    """`stop_at_safe_points`, a worker's handler (`maml_sine.processes`): outside any training loop a first Ctrl-C
    raises nothing, and the worker's next task returns at once, having trained and saved nothing."""
    monkeypatch.setattr(interrupts._ctrl_c, "checking_loops", interrupts._ctrl_c.checking_loops)  # put back after
    interrupts.stop_at_safe_points()
    ctrl_c()
    time.sleep(0.1)
    assert interrupts.stop_requested()
    assert studies._trained_in_worker(None, "maml", None, None) == (None, [])


def test_a_first_ctrl_c_in_the_training_loop_stops_it_after_the_chunk_it_is_in(handler):
    seeds = lane_seeds(2)
    run = LockstepRun(assignment_protocol().streams(seeds), 100, "test", compile=False, chunk=10)
    learners = run.maml("maml", initializations_from_seeds(seeds), Algorithm(1))
    train_many = learners.train_many

    def interrupted_in_the_second_chunk(batches):
        if len(learners.losses) == 10:
            ctrl_c()  # the handler runs inside the chunk, which goes on to its end
        train_many(batches)

    learners.train_many = interrupted_in_the_second_chunk
    with pytest.raises(KeyboardInterrupt):
        run.train()
    assert learners.histories.shape == (2, 20)
    assert (learners.state.step == 20).all()


def test_once_a_script_has_done_its_work_a_ctrl_c_in_the_teardown_changes_nothing(python_sigint_handler):
    """`cli.run_command` ignores Ctrl-C once the script's `main` has returned: Python puts its default handler back
    during the interpreter's teardown, where a Ctrl-C would kill the finished program by the signal."""
    done = []
    run_command(lambda argv: done.append(argv), ["--x"])
    assert done == [["--x"]]
    ctrl_c()  # ignored: the test goes on
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_without_the_handler_ctrl_c_is_pythons_own(handler):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a notebook, or another program, would have it
    with pytest.raises(KeyboardInterrupt):
        ctrl_c()
        time.sleep(5)
    interrupts._ctrl_c.requested = True  # a Ctrl-C that came under the project's handler, earlier
    assert not interrupts.stop_requested(), "a loop must not stop for a Ctrl-C its handler no longer handles"


def test_a_second_ctrl_c_ends_the_program_at_once_with_130():
    """In a child: the first Ctrl-C comes inside a loop that never checks for it, the second ends the process."""
    program = (
        "import os, signal, time\n"
        "from maml_sine import interrupts\n"
        "interrupts.stop_on_ctrl_c()\n"
        "with interrupts.checked_after_each_step():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    start = time.monotonic()
    child = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert child.returncode == 130, child.stderr
    assert time.monotonic() - start < 30
    assert "Traceback" not in child.stderr, child.stderr
    assert "stopping after this update" in child.stderr and "stopped at once" in child.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry_point, arguments",
    [
        ("test.py", ["--fast", "--episodes", "1000000", "--no-show", "--out", "{tmp}/curve.png"]),
        ("scripts/grader_margin.py", ["--seeds", "2", "--episodes", "1000", "--out-dir", "{tmp}"]),
    ],
)
def test_ctrl_c_while_an_entry_point_imports_ends_it_at_once_with_one_line_and_130(tmp_path, entry_point, arguments):
    """`python test.py` and a script, each sent a real SIGINT at moments spread over its imports (torch's take a
    second or more; the faster of two `--help` runs times them): status 130 after the one Ctrl-C, one line on
    stderr, no traceback. A run can import faster than the `--help` runs did (once in CI: past its imports at 70%
    of their time), and a late moment then meets the script's own handler, whose one line is as right; the early
    moments must land in the imports."""
    script, arguments = ROOT / entry_point, [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    importing = min(seconds_to_help(script) for _ in range(2))
    while_starting = []
    for share in (0.1, 0.25, 0.4, 0.55, 0.7):
        moment, log = share * importing, tmp_path / f"stderr-{share}.txt"
        status, _, twice = interrupted(script, arguments, lambda process, moment=moment: time.sleep(moment), log)
        errors = log.read_text()
        assert (status, twice) == (130, False), f"SIGINT at {moment:.2f} s: status {status}, {errors}"
        lines = [line for line in errors.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted"), f"SIGINT at {moment:.2f} s: {errors}"
        while_starting.append(lines == ["interrupted while starting; nothing was run"])
    assert while_starting[:2] == [True, True], f"the SIGINTs at 10% and 25% of the imports: {while_starting}"


def seconds_to_help(script) -> float:
    """How long `python script --help` takes: the interpreter's start and the script's imports, and little more."""
    start = time.monotonic()
    assert run_python(script, "--help").returncode == 0
    return time.monotonic() - start
