"""Text and strict JSON, written whole or not at all.

Every file the project writes (figures, checkpoints, results) goes through `utils.write_atomically`,
so a failed disk or a Ctrl-C in the middle leaves the previous file as it was and no
partial file behind; a file that cannot be written raises `utils.WriteError`, which names it.
"""

import json
import math
import os

from utils import write_atomically


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
