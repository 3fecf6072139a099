"""The command-line conventions every script shares: counts, output paths, and Ctrl-C.

A bad argument ends the script with argparse's usage line and status 2 before any
training starts; Ctrl-C ends it with one line saying what was kept and status 130; a file
that cannot be written (a full disk) ends it with one line naming the file and status 1.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from maml_sine.interrupts import exit_interrupted, stop_on_ctrl_c
from utils import WriteError, check_writable


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
        check_writable(parser, option, folder)


def run_command(main: Callable[[Sequence[str]], object], argv: Sequence[str]) -> None:
    """Run a script's `main(argv)` with the project's Ctrl-C handler (`interrupts`). A KeyboardInterrupt
    ends it with the interrupt's message, which says where it stopped and what is kept, and status 130; a
    `WriteError` with `error: ` and its line, which names the file and what is kept, and status 1."""
    stop_on_ctrl_c()
    try:
        main(argv)
    except KeyboardInterrupt as interrupt:
        exit_interrupted(str(interrupt) or "interrupted")
    except WriteError as error:
        sys.exit(f"error: {error}")
