"""The command-line conventions every script shares: counts, output paths, the device, and Ctrl-C.

A bad argument (a device torch does not see among them) ends the script with argparse's usage line and status 2
before any training starts; Ctrl-C ends it with one line saying what was kept and status 130; a file
that cannot be written (a full disk) ends it with one line naming the file and status 1.
"""

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from maml_sine.files import WriteError
from maml_sine.interrupts import ctrl_c_ignored_from_now, exit_interrupted, stop_on_ctrl_c

DEVICE_HELP = "where the learners train and are evaluated: cpu (default) or cuda (cuda:N), where torch sees one"


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse `type=` that accepts the text of an integer >= `minimum` and refuses anything else."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def check_writable(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    """Refuse (status 2) a folder no file can be created in: trying is the only reliable test, since root
    ignores permission bits and read-only mounts do not."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        parser.error(f"{option}: cannot write in folder {str(folder)!r} ({error.strerror})")


def parse_device(text: str) -> torch.device:
    """The device `text` names, for `--device`: the CPU, or a CUDA device that torch sees here (`cuda` is the
    current one); an `argparse.ArgumentTypeError` in one line otherwise."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu or cuda (cuda:N)") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"{text!r}: the learners run on cpu or cuda")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: torch sees no CUDA device here; use cpu")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise argparse.ArgumentTypeError(f"{text!r}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """`--device`, parsed by `parse_device` (default the CPU)."""
    parser.add_argument("--device", type=parse_device, default="cpu", help=DEVICE_HELP)


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
    """Run a script's `main(argv)`, from its `__main__` block, with the project's Ctrl-C handler (`interrupts`),
    and with Ctrl-C ignored for the rest of the process once it has returned or failed to write a file (nothing
    more is saved; only the interpreter's teardown is left). A KeyboardInterrupt
    ends it with the interrupt's message, which says where it stopped and what is kept, and status 130; a
    `WriteError` with `error: ` and its line, which names the file and what is kept, and status 1."""
    stop_on_ctrl_c()
    try:
        main(argv)
        ctrl_c_ignored_from_now()
    except KeyboardInterrupt as interrupt:
        exit_interrupted(str(interrupt) or "interrupted")
    except WriteError as error:
        ctrl_c_ignored_from_now()  # nothing more is saved: a Ctrl-C in the teardown must not change the status
        sys.exit(f"error: {error}")
