"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then renamed over the target."""

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary binary file beside `path`, then move it onto `path`.

    `os.replace` within one folder is atomic: readers see either the old file or the
    complete new one. If `write` or the disk fails, the old file stays as it was and
    the temporary file is removed.
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
