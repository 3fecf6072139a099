"""`python test.py` as a user runs it: headless, short, and refusing bad arguments.

The runs of the script in a process of its own (end to end, compiled, interrupted) are the slow tier.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import HEADLESS, ROOT, interrupt_after_progress, interrupted, is_png, run_python
from utils import SineGenerator, TrainFromScratch

SCRIPT = ROOT / "test.py"


def run_script(*arguments, backend="Agg"):
    """Run `python test.py` with no display; `backend=None` lets matplotlib choose one itself."""
    return run_python(SCRIPT, *arguments, env=HEADLESS if backend is None else {**HEADLESS, "MPLBACKEND": backend})


def test_learning_curve_saves_a_png(script, tmp_path):
    out = tmp_path / "curve.png"
    maml, scratch = script.learning_curve(maml_steps=1, plot_tfs=True, episodes=50, out=out, show=False)
    assert len(maml.history) == len(scratch.history) == 50
    assert is_png(out)


@pytest.mark.parametrize("fails_in", ["savefig", "replace"])
def test_a_figure_that_cannot_be_written_is_named_and_the_old_one_stays(script, tmp_path, monkeypatch, fails_in):
    """test.py's own atomic save (it runs without the package): one line naming the file, the old file whole,
    no temporary file left."""
    out = tmp_path / "curve.png"
    out.write_bytes(b"the old figure")
    figure = script.plot_history(None, [1.0, 2.0], show=False)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fails_in == "savefig":
        monkeypatch.setattr(figure, "savefig", no_space)
    else:
        monkeypatch.setattr(script.os, "replace", no_space)
    with pytest.raises(script.FigureWriteError) as error:
        script.save_png(figure, out)
    assert str(error.value) == f"cannot write {out}: {os.strerror(errno.ENOSPC)}"
    assert out.read_bytes() == b"the old figure"
    assert [path.name for path in tmp_path.iterdir()] == ["curve.png"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--plot-tfs"]], ids=["maml", "maml+scratch"])
def test_short_run_writes_a_png_and_a_summary(tmp_path, extra):
    out = tmp_path / "curve.png"
    result = run_script("--episodes", "600", "--no-show", "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    assert is_png(out)
    assert "MAML (S=1): query MSE" in result.stdout
    assert ("from scratch (10 Adam steps)" in result.stdout) == bool(extra)
    assert "Warning" not in result.stderr


@pytest.mark.slow
def test_fast_run_reports_what_the_eager_run_reports(tmp_path):
    """--fast compiles both learners (the lockstep learners with one seed); after 600 episodes the printed
    query MSEs are the eager ones."""
    runs = [run_script("--episodes", "600", "--plot-tfs", "--no-show", "--out", str(tmp_path / f"{i}.png"), *extra)
            for i, extra in enumerate([[], ["--fast"]])]  # fmt: skip
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    summaries = [[line for line in run.stdout.splitlines() if "query MSE" in line] for run in runs]
    assert len(summaries[0]) == 2 and summaries[0] == summaries[1]
    assert is_png(tmp_path / "1.png")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="only Linux falls back to no window without a DISPLAY")
def test_headless_run_without_no_show_does_not_warn(tmp_path):
    out = tmp_path / "curve.png"
    result = run_script("--episodes", "300", "--steps", "0", "--out", str(out), backend=None)
    assert result.returncode == 0, result.stderr
    assert is_png(out)
    assert "Warning" not in result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--episodes", "0"], "must be at least 1"),
        (["--episodes", "-5"], "must be at least 1, got -5"),
        (["--episodes", "ten"], "argument --episodes: invalid int value: 'ten'"),
        (["--episodes", "2.5"], "argument --episodes: invalid int value: '2.5'"),
        (["--steps", "-1"], "must be at least 0"),
        (["--steps", "one"], "argument --steps: invalid int value"),
        (["--seeds", "0"], "argument --seeds: must be at least 1, got 0"),
        (["--out", "no/such/folder/curve.png"], "does not exist"),
        (["--out", "tests"], "is a folder"),
        (["--out", "curve.jpg"], "must end in .png"),
        (["--device", "cuda"], "--device: without --seeds or --fast, MAML.train runs on the CPU alone"),
        (["--seeds", "2", "--device", "gpu"], "argument --device: 'gpu' is not a device"),
        pytest.param(
            ["--fast", "--device", "cuda"],
            "argument --device: 'cuda': torch sees no CUDA device here; use cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device here"),
        ),
        pytest.param(
            ["--out", "/proc/curve.png"],
            "cannot write in folder '/proc'",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's"),
        ),
    ],
)
def test_bad_arguments_exit_2_before_training(script, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit:
        script.parse_args(arguments)
    assert exit.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.startswith("usage:") and captured.out == "", "nothing may run before the error"


@pytest.mark.slow
def test_a_bad_argument_ends_the_script_with_status_2_before_training():
    result = run_script("--episodes", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    assert result.stderr.startswith("usage:") and result.stdout == ""


def test_learning_curve_draws_the_same_tasks_and_weights_with_or_without_scratch(script):
    """MAML and the from-scratch learner are both built, in this order, whatever `plot_tfs` says."""
    histories, torch_states = {}, {}
    for plot_tfs in (False, True):
        np.random.seed(1337)
        torch.manual_seed(42)
        maml, scratch = script.learning_curve(maml_steps=1, plot_tfs=plot_tfs, episodes=20, show=False)
        histories[plot_tfs], torch_states[plot_tfs] = maml.history, torch.get_rng_state()
        assert (scratch is not None) == plot_tfs
    np.random.seed(1337)
    torch.manual_seed(42)
    sine = SineGenerator(k=10, k_test=40)
    maml = MAML(num_steps=1)
    TrainFromScratch(num_steps=10)
    for _, task in sine.generator(20):
        maml.train(task)
    assert histories[False] == histories[True] == maml.history
    assert torch.equal(torch_states[False], torch.get_rng_state())
    assert torch.equal(torch_states[True], torch.get_rng_state())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_saves_the_curve_so_far_and_exits_130(tmp_path):
    out, log = tmp_path / "curve.png", tmp_path / "stderr.txt"
    arguments = ["--episodes", "1000000", "--no-show", "--out", str(out)]
    returncode = interrupt_after_progress(SCRIPT, arguments, 1_000_000, log)
    errors = log.read_text()
    assert returncode == 130, errors
    done = re.search(r"interrupted after ([\d,]+) of 1,000,000 episodes", errors)
    assert done and int(done[1].replace(",", "")) > 0, errors
    assert f"the curve so far is saved to {out}" in errors
    assert is_png(out)


def test_ctrl_c_once_the_figure_is_saved_says_so(script, tmp_path, monkeypatch):
    """While the window is open, say: the run is complete, and the interrupt's one line says where its figure is."""
    out = tmp_path / "curve.png"

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "show_figures", ctrl_c)
    with pytest.raises(KeyboardInterrupt, match=f"interrupted; the figure is saved to {re.escape(str(out))}"):
        script.main(["--episodes", "5", "--out", str(out)])
    assert is_png(out)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_a_ctrl_c_as_a_finished_run_exits_changes_nothing(tmp_path):
    """A SIGINT just after the last line, in the interpreter's teardown (where Python puts back the default handler,
    which would kill the finished run by the signal): status 0, no traceback."""
    out = tmp_path / "curve.png"
    for delay in (0.05, 0.2, 0.4):
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--episodes", "30", "--no-show", "--out", str(out)],
            cwd=ROOT,
            env={**HEADLESS, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for line in process.stdout:
                if "figure saved" in line:
                    time.sleep(delay)
                    process.send_signal(signal.SIGINT)
                    break
            _, errors = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 0, f"SIGINT {delay} s after the last line: status {process.returncode}, {errors}"
        assert "Traceback" not in errors


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_ctrl_c_at_random_moments_of_a_compiled_run_ends_it_with_130(tmp_path, cache):
    """`python test.py --fast`, interrupted at random moments of its first seconds (importing, tracing,
    compiling C++, the first updates), with an empty compile cache or a filled one: every run ends with
    status 130, within 2 s of the first Ctrl-C or at once after a second; a curve it says it saved is whole."""
    out = tmp_path / "curve.png"
    arguments = ["--fast", "--episodes", "1000000", "--no-show", "--out", str(out)]
    warm = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compiled")}
    if cache == "warm":
        filled = run_python(
            SCRIPT, "--fast", "--episodes", "5", "--no-show", "--out", str(out), env={**HEADLESS, **warm}
        )
        assert filled.returncode == 0, filled.stderr
    # From 0.1 s on: the interpreter's own start, a few hundredths of a second, comes before any line of test.py.
    moments = np.random.default_rng(7 + (cache == "warm")).uniform(0.1, 12.0, size=4)
    for moment in moments:
        log = tmp_path / f"stderr-{moment:.2f}.txt"
        out.unlink(missing_ok=True)
        env = warm if cache == "warm" else {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"compiled-{moment:.2f}")}
        status, seconds, twice = interrupted(
            SCRIPT, arguments, lambda process, moment=moment: time.sleep(moment), log, env
        )
        errors = log.read_text()
        assert status == 130, f"SIGINT at {moment:.2f} s: {errors}"
        assert not twice or seconds < 2, f"a second SIGINT at {moment:.2f} s took {seconds:.1f} s to stop the program"
        assert "Traceback" not in errors, errors
        if f"the curve so far is saved to {out}" in errors:
            assert is_png(out), errors


@pytest.mark.slow
def test_many_seeds_write_a_png_and_the_spread_of_the_final_mse(tmp_path):
    out = tmp_path / "seeds.png"
    result = run_script("--seeds", "3", "--episodes", "300", "--plot-tfs", "--no-show", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert is_png(out)
    spread = r", 3 seeds: final MSE median [\d.]+, from [\d.]+ to [\d.]+"
    for learner in ("MAML (S=1)", "from scratch (10 Adam steps)"):
        assert re.search(re.escape(learner) + spread, result.stdout)
    assert "Warning" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")
def test_ctrl_c_of_many_seeds_saves_the_curves_so_far_and_exits_130(tmp_path):
    out, log = tmp_path / "seeds.png", tmp_path / "stderr.txt"
    arguments = ["--seeds", "2", "--episodes", "1000000", "--no-show", "--out", str(out)]
    returncode = interrupt_after_progress(SCRIPT, arguments, 1_000_000, log)
    errors = log.read_text()
    assert returncode == 130, errors
    assert re.search(rf"interrupted after [\d,]+ of 1,000,000 episodes; the curve so far is saved to {out}", errors)
    assert is_png(out)
