"""Files written whole or not at all: figures, text, strict JSON, and (in `checkpoints`) tensors.

Every file the project writes goes through `write_atomically`, so a failed disk or a Ctrl-C in the
middle leaves the previous file as it was and no partial file behind; a file that cannot be written
raises `WriteError`, whose text is one line naming it, for a script to end with (status 1).
`test.py` saves its figure the same way with a few lines of its own, so that it runs without the package.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # matplotlib is imported by whoever draws the figure, not here
    from matplotlib.figure import Figure


class WriteError(OSError):
    """A file that could not be written, and why (a full disk, say). Its text is one line that names the file, for a
    script to end with instead of a traceback; `kept` adds what is safe on disk all the same."""

    def __init__(self, path: str | os.PathLike, reason: OSError, kept: str = "") -> None:
        super().__init__(reason.errno, reason.strerror or str(reason), os.fspath(path))
        self.kept = kept

    def __str__(self) -> str:
        line = f"cannot write {self.filename}: {self.strerror}"
        return f"{line}; {self.kept}" if self.kept else line

    def keeping(self, kept: str) -> "WriteError":
        """This error, saying also what is kept (`kept`, in place of what it said)."""
        return WriteError(self.filename, self, kept)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary file beside `path`, sync it and rename it onto `path`. Readers see the
    old file or the whole new one; if anything fails or interrupts, the old file stays and the temporary goes.
    An operating-system error (no space left, no permission) is raised as a `WriteError` naming `path`."""
    try:
        _write_beside_and_rename(path, write)
    except Exception as error:
        reason = _os_error_behind(error)
        if reason is None:
            raise
        raise WriteError(path, reason) from error


def _write_beside_and_rename(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    handle, temporary = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes files readable by their owner only
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _os_error_behind(error: BaseException | None) -> OSError | None:
    """`error` if it is an OSError, else the OSError it was raised from or while handling, if any: torch's save
    meets a full disk as an OSError and raises a RuntimeError while handling it."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def save_figure(figure: "Figure", path: str | os.PathLike) -> None:
    """Write `figure` as a PNG at `path`, atomically."""
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=150))


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 at `path`, atomically (see `write_atomically`)."""
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def write_json_atomically(path: str | os.PathLike, value: object, indent: int | None = 2) -> None:
    """Write `value` as strict JSON, atomically: every NaN or infinity (a learner or a task that
    diverged) becomes null, which any JSON reader accepts."""
    text = json.dumps(as_written(value), indent=indent, allow_nan=False) + "\n"
    write_text_atomically(path, text)


def as_written(value: object) -> object:
    """`value` as `write_json_atomically` writes it and a reader gets it back: NaN and infinities null,
    tuples lists."""
    return json.loads(json.dumps(_finite_or_null(value), allow_nan=False))


def _finite_or_null(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
