"""Ctrl-C that stops the program within a second, also while torch compiles.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread is. Inside some
code that exception is lost: CPython ignores an exception raised in a weakref callback or a
`__del__` (it prints "Exception ignored in ..." and goes on), and torch's compiler runs such
callbacks while it traces (one of dynamo's swallowed a Ctrl-C sent during a compiled start
here, torch 2.13); torch's guard code clears an exception raised in a guard written in
Python. A program that runs such code in a `Honoured` block does not lose a Ctrl-C:

    with Honoured() as block:
        ...                      # may swallow a KeyboardInterrupt
    # here, if a SIGINT arrived inside, KeyboardInterrupt has been raised

Every SIGINT is counted; while the main thread is still inside a block half a second after
one arrived, the signal is sent to it again, and again, until it is out; and a block that a
SIGINT arrived in and that ends as usual raises KeyboardInterrupt at its end.
"""

import signal
import threading

REPEAT_AFTER = 0.5  # seconds after a SIGINT before it is sent again to a block still running

_sigints = [0]  # SIGINTs received since `count_sigints` took over Python's handler
_inside: list["Honoured"] = []  # the blocks the main thread is in, innermost last
_sent_again: list["Honoured"] = []  # the blocks SIGINTs were sent to again, oldest first, until handled


def count_sigints() -> None:
    """From now on, count every SIGINT and then raise KeyboardInterrupt as Python's own handler does.
    Only where Python's handler is in place (a program that handles SIGINT itself keeps its handler),
    and only from the main thread, the one signal handlers can be set from. It stays for the process."""
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _counting_handler)


class Honoured:
    """A block of code that may swallow a KeyboardInterrupt, in which a Ctrl-C still stops the program.
    `interrupted` says whether a SIGINT has arrived since the block began."""

    def __enter__(self) -> "Honoured":
        self.received = _sigints[0]
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to it alone
            _inside.append(self)
        return self

    @property
    def interrupted(self) -> bool:
        return _sigints[0] != self.received

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        if self in _inside:
            _inside.remove(self)
            if kind is None and self.interrupted:
                raise KeyboardInterrupt  # one that the code inside swallowed


def _counting_handler(signum: int, frame: object) -> None:
    if _sent_again and _sent_again.pop(0) not in _inside:
        return  # sent again to a block that has ended since: its KeyboardInterrupt is on its way
    _sigints[0] += 1
    if _inside:
        _send_again_if_still_inside(_inside[-1])
    signal.default_int_handler(signum, frame)


def _send_again_if_still_inside(block: Honoured) -> None:
    def again() -> None:
        if block in _inside:
            _sent_again.append(block)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    timer = threading.Timer(REPEAT_AFTER, again)
    timer.daemon = True
    timer.start()
