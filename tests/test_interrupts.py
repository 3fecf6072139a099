"""A Ctrl-C stops the program also where the code running swallows the KeyboardInterrupt (`maml_sine.interrupts`).

Real SIGINTs to this process, under Python's own handler, in about two seconds.
"""

import contextlib
import os
import signal
import sys
import time

import pytest

from maml_sine import interrupts
from maml_sine.interrupts import Honoured, count_sigints

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX's")


@pytest.fixture
def counting(python_sigint_handler):
    count_sigints()


def swallowed_sigint() -> None:
    """A SIGINT whose KeyboardInterrupt is raised and ignored, as CPython ignores one raised in a weakref callback."""
    with contextlib.suppress(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_a_block_that_swallowed_a_ctrl_c_raises_it_at_its_end(counting):
    with pytest.raises(KeyboardInterrupt), Honoured() as block:
        swallowed_sigint()
        assert block.interrupted
    with Honoured() as block:
        pass  # a block without a SIGINT ends as usual
    assert not block.interrupted


def test_a_block_that_goes_on_gets_the_signal_again_within_a_second(counting):
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), Honoured():
        swallowed_sigint()
        time.sleep(60)  # works on: the signal sent again stops it
    assert time.monotonic() - start < 10


def test_a_signal_sent_again_to_a_block_that_has_ended_is_dropped(counting):
    """The block's own KeyboardInterrupt is already on its way; a second one would land in the code that
    handles it (saving the curve so far)."""
    with Honoured() as block:
        pass
    interrupts._sent_again.append(block)  # as a timer does just as the block ends
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # no KeyboardInterrupt: the handler has run, and dropped it
    assert not interrupts._sent_again
    with pytest.raises(KeyboardInterrupt):  # and the next Ctrl-C counts again
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
