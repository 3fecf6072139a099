"""Independent trainings side by side, one process each: a study's learners on every core of the machine.

Lockstep learners already share one process's updates, but on a few CPU cores a small network's ops leave
most of a second core idle (two threads train MAML's five seeds about 1.2x faster than one), and compiling,
a good share of a cold run, uses one. `in_processes` runs whole trainings in `jobs` processes instead, each
on `cores // jobs` threads. A training gives the same numbers on any number of threads, so which process ran
it changes nothing but the time.

The workers are spawned (a fresh interpreter each: forking a process that has run torch's thread pools can
hang) with Ctrl-C ignored until their handler is in place, and draw no progress bars. Ctrl-C at the terminal
reaches every process of the program: each worker stops at its next safe point, the end of the chunk of
updates it is in (after compiling it, if it is compiling), and saves its learner's progress, as the training
loop does alone; a task that starts after it returns at once. The main process waits for them before it
reports what was kept; a second Ctrl-C ends them all at once. A SIGINT sent to the main process alone does
not reach the workers: it waits for their learners to finish, or for a second Ctrl-C.
"""

import os
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed, wait
from multiprocessing import get_context
from typing import Any

import torch

from maml_sine import training
from maml_sine.interrupts import ctrl_c_ignored, stop_at_safe_points


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
    KeyboardInterrupt goes on once the workers have exited."""
    threads = max(1, available_cores() // jobs)
    # Workers start with Ctrl-C ignored (as children keep it), until their handler is in place: one that came while
    # a worker imports torch would kill it with a traceback.
    with ctrl_c_ignored():
        pool = ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(threads,)
        )
        futures = {pool.submit(function, *arguments): key for key, arguments in calls.items()}
    given: set[Future] = set()
    try:
        for future in as_completed(futures):
            given.add(future)
            yield futures[future], future.result()
    except KeyboardInterrupt:
        running = [future for future in futures if future not in given and not future.cancel()]
        wait(running)  # each stops at its next safe point, or returns at once if it starts now
        for future in running:
            if future.exception() is None:
                yield futures[future], future.result()
        raise
    finally:  # on any way out: nothing more starts, and the workers exit (once their calls end)
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(threads: int) -> None:
    """A worker's first step: its share of the cores, no progress bars, and the project's Ctrl-C handler, which
    stops it at its next safe point."""
    training.SHOW_PROGRESS = False
    torch.set_num_threads(threads)
    stop_at_safe_points()
