"""Independent trainings side by side, one process each: a study's learners on every core of the machine.

Lockstep learners already share one process's updates, but on a few CPU cores a small network's ops leave
most of a second core idle (two threads train MAML's five seeds about 1.2x faster than one), and compiling,
a good share of a cold run, uses one. `in_processes` runs whole trainings in `jobs` processes instead, each
on `cores // jobs` threads. A training gives the same numbers on any number of threads, so which process ran
it changes nothing but the time.

The workers are spawned (a fresh interpreter each: forking a process that has run torch's thread pools can
hang), install the project's Ctrl-C handler and draw no progress bars. Ctrl-C at the terminal reaches every
process of the program: each worker stops its training at the end of the chunk of updates it is in and
saves it, as the training loop does alone, and the main process waits for them before it reports what was
kept; a second Ctrl-C ends them all at once.
"""

import os
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed, wait
from multiprocessing import get_context
from typing import Any

import torch

from maml_sine import training
from maml_sine.interrupts import stop_on_ctrl_c


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_processes(
    function: Callable[..., Any], calls: Mapping[Hashable, tuple], jobs: int
) -> Iterator[tuple[Hashable, Any]]:
    """`(key, function(*arguments))` for each `{key: arguments}` of `calls`, as each finishes, computed in up to
    `jobs` worker processes (`function` and its arguments must pickle). An error in a worker is raised here once
    the calls running beside it have finished.

    On KeyboardInterrupt (Ctrl-C reaches the workers too: see the module), the calls not started are dropped,
    the running ones are waited for (they stop at their next safe point), what they returned is given, and the
    KeyboardInterrupt goes on, without waiting for the workers to exit."""
    threads = max(1, available_cores() // jobs)
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(threads,))
    futures = {pool.submit(function, *arguments): key for key, arguments in calls.items()}
    given: set[Future] = set()
    try:
        for future in as_completed(futures):
            given.add(future)
            yield futures[future], future.result()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        running = [future for future in futures if future not in given and not future.cancelled()]
        wait(running)
        for future in running:
            if future.exception() is None:
                yield futures[future], future.result()
        raise
    finally:  # on any way out: nothing more starts, and idle workers exit
        pool.shutdown(wait=False, cancel_futures=True)


def _start_worker(threads: int) -> None:
    """A worker's first step: its share of the cores, no progress bars, and the Ctrl-C handler of the program's
    entry point."""
    training.SHOW_PROGRESS = False
    torch.set_num_threads(threads)
    stop_on_ctrl_c()
