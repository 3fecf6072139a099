"""Files that are either whole or absent: atomic writes, and a folder test that really writes.

Every file the project writes (figures, checkpoints, results) goes through `write_atomically`,
so a failed disk or a Ctrl-C in the middle leaves the previous file as it was and no
partial file behind.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # matplotlib is loaded only by the code that draws
    from matplotlib.figure import Figure


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary binary file beside `path`, then move it onto `path`.

    The temporary file is in the same folder and reaches the disk before `os.replace`
    renames it, which is atomic: readers see either the old file or the complete new
    one. If `write` or the disk fails, or the write is interrupted, the old file stays
    as it was and the temporary file is removed.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` as UTF-8 at `path`, atomically (see `write_atomically`)."""
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def save_figure(figure: "Figure", path: str | os.PathLike) -> None:
    """Write `figure` as a PNG at `path`, atomically (see `write_atomically`)."""
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=150))


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and delete a temporary file in `folder`; raise OSError if that is not possible.

    Trying is the only reliable test: root ignores permission bits, read-only mounts do not.
    """
    with tempfile.TemporaryFile(dir=folder):
        pass


def write_json_atomically(path: str | os.PathLike, value: object, indent: int | None = 2) -> None:
    """Write `value` as strict JSON, atomically: every NaN or infinity (a learner or a task that
    diverged) becomes null, which any JSON reader accepts."""
    text = json.dumps(_finite_or_null(value), indent=indent, allow_nan=False) + "\n"
    write_text_atomically(path, text)


def _finite_or_null(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value
