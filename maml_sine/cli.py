"""The command-line conventions every script shares: counts, output paths, and Ctrl-C.

A bad argument ends the script with argparse's usage line and status 2 before any
training starts; Ctrl-C ends it with one line saying what was kept and status 130.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from maml_sine.files import probe_writable

INTERRUPTED = 130  # the shell's exit status for "stopped by Ctrl-C"


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse `type=`: the text of an integer of at least `minimum`, refused with a message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def check_png_path(parser: argparse.ArgumentParser, option: str, path: Path) -> None:
    """Refuse (status 2) a PNG path that cannot be written: a folder, a missing folder, not .png, no write access."""
    if path.is_dir():
        parser.error(f"{option}: {str(path)!r} is a folder; give the path of a PNG file")
    if not path.parent.is_dir():
        parser.error(f"{option}: folder {str(path.parent)!r} does not exist")
    if path.suffix.lower() != ".png":
        parser.error(f"{option}: {str(path)!r} must end in .png (the figure is saved as a PNG)")
    _check_writable(parser, option, path.parent)


def make_output_folders(parser: argparse.ArgumentParser, folders: dict[str, Path]) -> None:
    """Create each `{option: folder}` and write in it now, or refuse (status 2): a folder that
    cannot hold the results must not cost the training."""
    for option, folder in folders.items():
        if folder.exists() and not folder.is_dir():
            parser.error(f"{option}: {str(folder)!r} is a file, not a folder")
    for option, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"{option}: cannot write in folder {str(folder)!r} ({error.strerror})")
        _check_writable(parser, option, folder)


def _check_writable(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    try:
        probe_writable(folder)
    except OSError as error:
        parser.error(f"{option}: cannot write in folder {str(folder)!r} ({error.strerror})")


def run_command(main: Callable[[Sequence[str]], object], argv: Sequence[str]) -> None:
    """Run a script's `main(argv)`. A KeyboardInterrupt (Ctrl-C) ends it with the interrupt's
    message, which says where it stopped and what is kept, and exit status 130."""
    try:
        main(argv)
    except KeyboardInterrupt as interrupt:
        print(str(interrupt) or "interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED)
