"""Ctrl-C, handled once, at the entry point: the first stops at the next safe point, a second ends the program.

A script calls `exit_on_ctrl_c()` first, before its imports: until it runs, a Ctrl-C ends it at once with
one line and status 130, since nothing has been computed that could be kept (Python's own handler would
end it with the traceback of whichever import torch was in). Its entry point then calls `stop_on_ctrl_c()`
once (`cli.run_command` does, and `test.py`). From then on:

- the first Ctrl-C inside a loop that checks `stop_requested()` after each of its steps (the training
  loop, `training.LockstepRun.train`) only sets a flag: the loop finishes the chunk of updates it is in
  (well under a second), raises KeyboardInterrupt there, and its caller saves what it has (the learning
  curve so far, the checkpoints of the learners that finished). Nothing is raised inside torch, whose compiler would
  swallow some KeyboardInterrupts;
- the first Ctrl-C anywhere else raises KeyboardInterrupt at once, as Python's own handler does;
- a second Ctrl-C ends the program at once with status 130. Every file is written atomically, so
  what was saved before it is whole.

Once the entry point's work is done and saved, `ctrl_c_ignored_from_now()` lets the program end as it
finished (status 0): a Ctrl-C during the interpreter's teardown, where Python puts its default handler
back, would otherwise kill the finished program by the signal.

Without the handler (the package imported by a notebook or the tests) Ctrl-C is Python's own
KeyboardInterrupt everywhere.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

INTERRUPTED = 130  # the shell's exit status for "stopped by Ctrl-C"


class _CtrlC:
    """What the handler knows: whether a Ctrl-C has come, and how many loops check for one."""

    def __init__(self) -> None:
        self.requested = False
        self.checking_loops = 0


_ctrl_c = _CtrlC()


def exit_on_ctrl_c() -> None:
    """Until `stop_on_ctrl_c()`: a Ctrl-C ends the program at once, with one line and status 130. For a script's
    first lines, under `if __name__ == "__main__"`, so that importing the script installs nothing."""
    signal.signal(signal.SIGINT, _exit_while_starting)


def stop_on_ctrl_c() -> None:
    """Install the handler described above (from the main thread, the one signal handlers are set from)."""
    if threading.current_thread() is threading.main_thread():
        _ctrl_c.requested = False
        signal.signal(signal.SIGINT, _on_ctrl_c)


def stop_at_safe_points() -> None:
    """The handler for a worker process (`maml_sine.processes`), which checks `stop_requested()` before each task
    and in the training loop: there, a first Ctrl-C only sets the flag, wherever it lands, so that an idle worker
    goes on taking tasks (each returns at once) rather than dying of a KeyboardInterrupt."""
    stop_on_ctrl_c()
    _ctrl_c.checking_loops += 1


def ctrl_c_ignored_from_now() -> None:
    """Ignore Ctrl-C for the rest of the process: for an entry point whose work is done and saved. The teardown
    that follows (torch's compile workers can make it last seconds) then ends with the status the work earned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C ignored inside the block, and by the processes it starts until they set a handler of their own (a
    child keeps an ignored signal ignored); the handler before it put back after."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def checked_after_each_step() -> Iterator[None]:
    """Mark a loop that calls `stop_requested()` after each step: a first Ctrl-C inside it waits for that call."""
    _ctrl_c.checking_loops += 1
    try:
        yield
    finally:
        _ctrl_c.checking_loops -= 1


def stop_requested() -> bool:
    """Whether a Ctrl-C has come since `stop_on_ctrl_c()`, while its handler is still the one in place."""
    return _ctrl_c.requested and signal.getsignal(signal.SIGINT) is _on_ctrl_c


def exit_interrupted(line: str) -> NoReturn:
    """End the program after a Ctrl-C, once what it keeps is saved: `line` on stderr and status 130, at once.
    Not through the interpreter's teardown (torch's compile workers can make it last seconds), during which
    Python puts its default SIGINT handler back and a second Ctrl-C would kill the program by the signal."""
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    os._exit(INTERRUPTED)


def _on_ctrl_c(signum: int, frame: object) -> None:
    if _ctrl_c.requested:
        _say("Ctrl-C again: stopped at once (files already written are whole)")
        os._exit(INTERRUPTED)
    _ctrl_c.requested = True
    if not _ctrl_c.checking_loops:
        raise KeyboardInterrupt
    _say("Ctrl-C: stopping after this update and saving (Ctrl-C again to stop at once)")


def _exit_while_starting(signum: int, frame: object) -> None:
    _say("interrupted while starting; nothing was run")
    os._exit(INTERRUPTED)


def _say(line: str) -> None:
    """Write a line to stderr without Python's buffered stream, which the interrupted code may be writing to."""
    os.write(2, f"\n{line}\n".encode())
