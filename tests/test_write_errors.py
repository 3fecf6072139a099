"""Files that cannot be written (a full disk): the script ends with one line naming the file, status 1 and no
traceback, and loses nothing it had already written: results.json comes before the figures, the checkpoints saved
before the failure stay, and no temporary file is left.

The fast tier makes the disk fail as the operating system does (a write that raises ENOSPC, part of the file
written). The slow tier runs the scripts against a real full filesystem: a small tmpfs mounted for the test and
filled up, which needs root and a `mount` that works; the tests skip, saying why, where it does not.
"""

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from helpers import ROOT, import_script, run_python
from maml_sine import checkpoints, files
from maml_sine.checkpoints import load
from maml_sine.cli import run_command
from maml_sine.files import WriteError, write_atomically
from maml_sine.learners import LEARNERS, assignment_protocol
from maml_sine.training import lane_seeds

NO_SPACE = os.strerror(errno.ENOSPC)
FILLER = "filler"
PAGE = 4096  # tmpfs gives and takes back space in pages
TRAINED = ("maml", "first_order_maml", "pretrained")  # the assignment study's learners with a checkpoint


def no_space(file=None) -> None:
    """A full disk met partway through a file: some bytes written, then ENOSPC."""
    if file is not None:
        file.write(b"part of a file")
    raise OSError(errno.ENOSPC, NO_SPACE)


def torch_save_on_a_full_disk(content, file) -> None:
    """What `torch.save` does on a full disk: its write meets ENOSPC, and it raises a RuntimeError while handling it."""
    try:
        no_space(file)
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None


def arguments(out: Path, checkpoints_dir: Path) -> list[str]:
    """A small run of scripts/evaluate.py (one seed, one update, four tasks)."""
    folders = ["--out-dir", str(out), "--checkpoint-dir", str(checkpoints_dir)]
    return ["--updates", "1", "--tasks", "4", "--seeds", "1", *folders]


def checkpoint_name(name: str) -> str:
    return f"assignment-{name}-K10-1-seeds0-0.pt"


def kept_line(checkpoints_dir: Path, names: tuple[str, ...]) -> str:
    return f"checkpoints of {', '.join(f'{name}, K=10' for name in names)} are kept in {checkpoints_dir}: run again"


# --- The one place: write_atomically raises a WriteError naming the file ---------------------------------------


def _fails_in_write(monkeypatch):
    return lambda file: no_space(file)


def _fails_in_torch_save(monkeypatch):
    return lambda file: torch_save_on_a_full_disk(None, file)


def _fails_to_create_the_temporary(monkeypatch):
    monkeypatch.setattr(files.tempfile, "mkstemp", lambda **kwargs: no_space())
    return lambda file: file.write(b"new")


def _fails_to_rename(monkeypatch):
    monkeypatch.setattr(files.os, "replace", lambda source, target: no_space())
    return lambda file: file.write(b"new")


@pytest.mark.parametrize(
    "failing", [_fails_in_write, _fails_in_torch_save, _fails_to_create_the_temporary, _fails_to_rename]
)
def test_a_write_that_fails_raises_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, failing):
    path = tmp_path / "results.json"
    path.write_bytes(b"previous")
    write = failing(monkeypatch)
    with pytest.raises(WriteError) as raised:
        write_atomically(path, write)
    monkeypatch.undo()
    assert str(raised.value) == f"cannot write {path}: {NO_SPACE}"
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path], "no temporary file may be left behind"


@pytest.mark.parametrize("error", [ValueError("not a write"), KeyboardInterrupt()], ids=["ValueError", "Ctrl-C"])
def test_what_is_not_a_write_error_passes_as_it_is(tmp_path, error):
    def fail(file):
        raise error

    with pytest.raises(type(error)) as raised:
        write_atomically(tmp_path / "out.png", fail)
    assert raised.value is error
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_says_what_is_kept_when_told():
    error = WriteError("/out/fits.png", OSError(errno.ENOSPC, NO_SPACE))
    kept = error.keeping("results.json is complete")
    assert str(kept) == f"cannot write /out/fits.png: {NO_SPACE}; results.json is complete"
    assert kept.errno == errno.ENOSPC and str(error) == f"cannot write /out/fits.png: {NO_SPACE}"


def test_a_script_ends_a_write_error_with_one_line_and_status_1(python_sigint_handler):
    def main(argv):
        raise WriteError("/out/results.json", OSError(errno.ENOSPC, NO_SPACE))

    with pytest.raises(SystemExit) as exited:
        run_command(main, [])
    assert exited.value.code == f"error: cannot write /out/results.json: {NO_SPACE}", "a string: status 1"


# --- The scripts, with the disk failing as the operating system fails it ---------------------------------------


def test_evaluate_writes_results_json_before_the_figures_and_says_so_when_a_figure_fails(
    evaluate, tmp_path, monkeypatch
):
    out, checkpoints_dir = tmp_path / "out", tmp_path / "checkpoints"
    monkeypatch.setattr(Figure, "savefig", lambda figure, file, **kwargs: no_space(file))
    with pytest.raises(WriteError) as raised:
        evaluate.main(arguments(out, checkpoints_dir))
    assert str(raised.value) == (
        f"cannot write {out / 'mse_vs_steps.png'}: {NO_SPACE}; {kept_line(checkpoints_dir, TRAINED)} to go on from "
        f"them; results.json, results.md in {out} are complete and this run's"
    )
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md"]
    assert set(json.loads((out / "results.json").read_text())["mse"]["grid"]) == set(TRAINED) | {"scratch"}


def test_a_checkpoint_that_cannot_be_written_is_named_and_the_saved_ones_stay(evaluate, tmp_path, monkeypatch):
    out, checkpoints_dir = tmp_path / "out", tmp_path / "checkpoints"
    save = torch.save
    calls = []

    def full_after_the_first(content, file):
        calls.append(None)
        (save if len(calls) == 1 else torch_save_on_a_full_disk)(content, file)

    monkeypatch.setattr(checkpoints.torch, "save", full_after_the_first)
    with pytest.raises(WriteError) as raised:
        evaluate.main(arguments(out, checkpoints_dir))
    second = checkpoints_dir / checkpoint_name("first_order_maml")
    assert str(raised.value) == (
        f"cannot write {second}: {NO_SPACE}; {kept_line(checkpoints_dir, ('maml',))} to go on from them; "
        f"nothing was written to {out}"
    )
    monkeypatch.undo()
    (kept,) = checkpoints_dir.iterdir()
    assert kept.name == checkpoint_name("maml"), "the first checkpoint stays; no temporary file, no lock file"
    record = {"learner": LEARNERS["maml"].training(), "protocol": assignment_protocol(updates=1).record(),
              "seeds": [list(seed) for seed in lane_seeds(1)]}  # fmt: skip
    assert load(kept, record).histories.shape == (1, 1)
    assert not any(out.iterdir())


def test_grader_margin_writes_results_json_before_its_figure(tmp_path, monkeypatch):
    grader_margin = import_script(ROOT / "scripts" / "grader_margin.py")
    trained = {"final_mse": [0.5, 0.6], "curves": [[1.0], [2.0]], "gradient_norm_curves": [[1.0], [2.0]]}
    monkeypatch.setattr(grader_margin, "train_run", lambda *args: {**trained})
    monkeypatch.setattr(Figure, "savefig", lambda figure, file, **kwargs: no_space(file))
    out = tmp_path / "out"
    with pytest.raises(WriteError) as raised:
        grader_margin.main(["--seeds", "2", "--episodes", "1", "--out-dir", str(out)])
    assert str(raised.value) == (
        f"cannot write {out / 'margin.png'}: {NO_SPACE}; results.json and results.md in {out} are complete"
    )
    assert sorted(path.name for path in out.iterdir()) == ["results.json", "results.md"]
    assert json.loads((out / "results.json").read_text())["results"]["K5-S5"]["first-order"]["final_mse"] == [0.5, 0.6]


# --- The scripts against a real full filesystem (slow) ---------------------------------------------------------


@pytest.fixture
def full_folder(tmp_path):
    """A factory: `full_folder(room)` is a folder on a 1 MiB tmpfs of its own, filled up but for `room` bytes
    (whole pages); every one is unmounted after the test."""
    mounted = []

    def make(room: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem to fill up needs root")
        if shutil.which("mount") is None:
            pytest.skip("no mount command here")
        folder = tmp_path / f"full{len(mounted)}"
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(folder)
        fill(folder / FILLER, room)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def fill(path: Path, room: int) -> None:
    """Write zeros to `path` until the filesystem is full, then give `room` bytes back."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, bytes(64 * 1024))
        os.ftruncate(descriptor, max(0, os.fstat(descriptor).st_size - room))
    finally:
        os.close(descriptor)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run's last line on stderr, once it is checked to be the run's only error: status 1, no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def written_in(folder: Path) -> list[str]:
    """The files the script left in a full folder (the filler aside): a temporary file would be one."""
    return sorted(path.name for path in folder.iterdir() if path.name != FILLER)


@pytest.mark.slow
def test_test_py_on_a_full_disk_names_the_figure(full_folder):
    folder = full_folder(0)
    out = folder / "curve.png"
    result = run_python(ROOT / "test.py", "--episodes", "20", "--no-show", "--out", str(out))
    assert one_error_line(result) == f"error: cannot write {out}: {NO_SPACE}"
    assert written_in(folder) == []


@pytest.mark.slow
def test_test_py_with_seeds_writes_the_final_mses_before_the_figure(full_folder):
    folder = full_folder(2 * PAGE)  # room for the .json, not for the PNG
    out = folder / "curve.png"
    result = run_python(ROOT / "test.py", "--seeds", "2", "--episodes", "20", "--no-show", "--out", str(out))
    assert one_error_line(result) == f"error: cannot write {out}: {NO_SPACE}; {out.with_suffix('.json')} is complete"
    assert written_in(folder) == ["curve.json"]
    assert len(json.loads(out.with_suffix(".json").read_text())["final_mse"]["maml"]) == 2


@pytest.mark.slow
def test_evaluate_on_a_full_out_dir_keeps_results_json(full_folder, tmp_path):
    out, checkpoints_dir = full_folder(10 * PAGE), tmp_path / "checkpoints"  # results.json and .md, no figure
    result = run_python(ROOT / "scripts" / "evaluate.py", *arguments(out, checkpoints_dir))
    assert one_error_line(result) == (
        f"error: cannot write {out / 'mse_vs_steps.png'}: {NO_SPACE}; {kept_line(checkpoints_dir, TRAINED)} to go "
        f"on from them; results.json, results.md in {out} are complete and this run's"
    )
    assert written_in(out) == ["results.json", "results.md"]
    assert json.loads((out / "results.json").read_text())["evaluation"]["tasks"] == 4


@pytest.mark.slow
def test_evaluate_on_a_full_checkpoint_dir_names_the_checkpoint_and_keeps_the_saved_ones(full_folder, tmp_path):
    checkpoints_dir, out = full_folder(10 * PAGE), tmp_path / "out"  # one checkpoint (29 kB) and the lock file
    result = run_python(ROOT / "scripts" / "evaluate.py", *arguments(out, checkpoints_dir))
    second = checkpoints_dir / checkpoint_name("first_order_maml")
    assert one_error_line(result) == (
        f"error: cannot write {second}: {NO_SPACE}; {kept_line(checkpoints_dir, ('maml',))} to go on from them; "
        f"nothing was written to {out}"
    )
    assert written_in(checkpoints_dir) == [checkpoint_name("maml")]
    assert not any(out.iterdir())
