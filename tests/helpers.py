"""What the tests share: seeded tasks that leave the global RNGs alone, an independent network,
learner snapshots, a PNG check, running the scripts as a user does, and another process holding a
checkpoint folder."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# The environment of a machine with no display: a window never opens, matplotlib never warns.
HEADLESS = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}


def sine_task(seed: int, support: int = 10, query: int = 40, dtype=torch.float64) -> list[torch.Tensor]:
    """A sine task drawn from its own generator (the global RNGs are left alone)."""
    rng = np.random.default_rng(seed)
    amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
    xs = [rng.uniform(-5.0, 5.0, size=(n, 1)) for n in (support, query)]
    arrays = [xs[0], amplitude * np.sin(xs[0] + phase), xs[1], amplitude * np.sin(xs[1] + phase)]
    return [torch.tensor(a, dtype=dtype) for a in arrays]


def reference_forward(weights, x):
    """The 1-40-40-1 ReLU network written with matmuls, apart from `BaseLearner.forward`."""
    w1, b1, w2, b2, w3, b3 = weights
    hidden = torch.relu(x @ w1.T + b1)
    hidden = torch.relu(hidden @ w2.T + b2)
    return hidden @ w3.T + b3


def weights_of(learner) -> tuple[torch.Tensor, ...]:
    """Copies of a learner's initialization, detached."""
    return tuple(weight.detach().clone() for weight in learner.initialization)


def adam_state(maml) -> list[dict[str, torch.Tensor]]:
    """The meta-optimizer's state of each weight, in the order of the initialization."""
    return [maml.meta_optimizer.state[weight] for weight in maml.initialization]


def is_png(path: Path) -> bool:
    """True if `path` holds a PNG that decodes to a non-empty RGB(A) image."""
    import matplotlib.image

    if path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    image = matplotlib.image.imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


def import_script(path: Path) -> ModuleType:
    """A script imported as a module, under a name of its own (`test.py` must not become the stdlib's `test`)."""
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_python(script: Path, *arguments: str, env: dict | None = None, timeout: float = 600):
    """Run `python script arguments...` from the repository root, headless; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(script), *arguments],
        cwd=ROOT,
        env=HEADLESS if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def interrupt_after_progress(script: Path, arguments: list[str], episodes: int, log: Path) -> int:
    """Start the script, send it a real SIGINT once its progress bar shows an episode done; return its exit status.

    Its standard error goes to `log`. The script must end within a minute of the signal, even on a
    loaded machine (a second SIGINT is sent only then); it is killed in any case, so that no child
    outlives the test.
    """

    def trained_an_episode(process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 300
        while not re.search(rf"\|\s*[1-9]\d*/{episodes}", log.read_text()) and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.1)  # wait until episodes are done, so the interrupt lands in training

    return interrupted(script, arguments, trained_an_episode, log, patience=60)[0]


def interrupted(
    script: Path, arguments: list[str], wait: Callable[[subprocess.Popen], None], log: Path, env: dict | None = None,
    patience: float = 2.0,
) -> tuple[int, float, bool]:  # fmt: skip
    """Start the script, `wait(process)`, send it a real SIGINT and, as a user would, a second one if it still runs
    `patience` seconds later. Returns its exit status, the seconds it took to end after the last signal, and
    whether a second was sent. Its standard error goes to `log`. It must end within a minute of the last
    signal; it is killed in any case, so that no child outlives the test."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), *arguments],
            cwd=ROOT,
            env={**HEADLESS, "MPLBACKEND": "Agg", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            # A shell starts background jobs with SIGINT ignored, and a child inherits that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            wait(process)
            process.send_signal(signal.SIGINT)
            sent = time.monotonic()
            try:
                return process.wait(timeout=patience), time.monotonic() - sent, False
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
                sent = time.monotonic()
                return process.wait(timeout=60), time.monotonic() - sent, True
        finally:
            process.kill()
            process.wait()


# A run of its own holding a checkpoint folder: one line on its stdin lets go of the folder (it then says so and
# lives on until its stdin closes, so that what lets go is the lock's release, not the end of the process).
HOLDER = """
import sys
from maml_sine.checkpoints import one_writer
with one_writer(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
print("let go", flush=True)
sys.stdin.readline()
"""


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A process of its own (`HOLDER`) that holds checkpoint folder `folder` from the start of the block;
    its stdin and stdout are pipes of text. It is killed at the end of the block in any case."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "held\n", "the holder could not take the lock"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()
