"""What the tests share: seeded tasks that leave the global RNGs alone, an independent network,
learner snapshots, a PNG check, running the scripts as a user does, and another process holding a
checkpoint folder."""

import dataclasses
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
import pytest
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


def compiled_and_eager_lanes(algorithm, updates: int, inputs: int = 1, capfd=None):
    """Two lanes of `algorithm` (annealing over `updates`), eager and compiled, trained on the same `updates` batches
    of the assignment's stream; the compiled lanes' losses and params must be the eager ones' up to rounding (and,
    given `capfd`, compiled for real: no fallback line). Returns (eager, compiled)."""
    # Imported here: the assignment's tests import this module under Python 3.8, where the package is not installed.
    from maml_sine.batched import BatchedMAML, initializations_from_seeds
    from maml_sine.learners import ASSIGNMENT
    from maml_sine.training import lane_seeds

    seeds = lane_seeds(2)
    streams = ASSIGNMENT.streams(seeds)
    batches = [streams.next_batch() for _ in range(updates)]
    initializations = initializations_from_seeds(seeds, inputs=inputs)
    lanes = [BatchedMAML(initializations, algorithm, compile=compile, updates=updates) for compile in (False, True)]
    for tasks in batches:
        for learners in lanes:
            learners.train(tasks)
    eager, fast = lanes
    if capfd is not None:
        assert "compiling unavailable" not in capfd.readouterr().err, "the lanes ran compiled"
    np.testing.assert_allclose(fast.histories, eager.histories, rtol=1e-5)
    for name, tensor in eager.state.params.items():
        torch.testing.assert_close(fast.state.params[name], tensor, rtol=1e-5, atol=1e-7)
    return eager, fast


def assert_directional_derivative(loss: Callable, params: dict, gradient: dict, direction: dict, h: float = 1e-6):
    """`gradient` (named as `params`) along `direction` against central float64 finite differences of the scalar
    `loss(params)`, each side evaluated at params +- h * direction."""
    plus, minus = (loss({name: (p + sign * h * direction[name]).requires_grad_() for name, p in params.items()})
                   for sign in (1, -1))  # fmt: skip
    analytic = sum((gradient[name] * direction[name]).sum() for name in params)
    torch.testing.assert_close((plus - minus) / (2 * h), analytic, rtol=1e-6, atol=1e-9)


def eager_adam_losses(parameters: list, batches: list, loss_of: Callable) -> list[float]:
    """The losses of a plain training loop: for each batch (e.g. one lane's task of each update), `loss_of(batch)`,
    its gradient, one `torch.optim.Adam` (lr 0.001) step on `parameters` (leaves that require grad, changed in
    place)."""
    optimizer = torch.optim.Adam(parameters, lr=0.001)
    losses = []
    for batch in batches:
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def round_trip_checkpoint(name: str, folder: Path, updates: int = 2):
    """Registry learner `name`, 2 lanes trained `updates` updates on the assignment's stream, saved to `folder` and
    loaded back: the algorithm, every tensor of its state and its losses must come back equal, and the file must be
    refused as MAML's, naming its kind. Returns (the learners, the loaded ones)."""
    from maml_sine.batched import BatchedMAML, initializations_from_seeds  # the package, imported here as above
    from maml_sine.checkpoints import CheckpointError, load, save
    from maml_sine.learners import ASSIGNMENT, LEARNERS
    from maml_sine.training import lane_seeds

    learner, seeds = LEARNERS[name], lane_seeds(2)
    learners = BatchedMAML(initializations_from_seeds(seeds, inputs=learner.network_inputs), learner.algorithm,
                           updates=updates)  # fmt: skip
    streams = ASSIGNMENT.streams(seeds)
    for _ in range(updates):
        learners.train(streams.next_batch())
    protocol = dataclasses.replace(ASSIGNMENT, updates=updates).record()
    record = {"learner": learner.training(), "protocol": protocol, "seeds": [list(seed) for seed in seeds]}
    save(learners, record, folder / f"{name}.pt")
    loaded = load(folder / f"{name}.pt", record)
    assert loaded.algorithm == learners.algorithm
    for field in ("params", "exp_avgs", "exp_avg_sqs"):
        saved, restored = getattr(learners.state, field), getattr(loaded.state, field)
        assert list(restored) == list(saved) and all(torch.equal(restored[key], saved[key]) for key in saved)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    with pytest.raises(CheckpointError, match=f"'kind': '{learner.algorithm.kind}'"):
        load(folder / f"{name}.pt", {**record, "learner": LEARNERS["maml"].training()})
    return learners, loaded


def evaluated_by_the_script(folder: Path, monkeypatch, names: tuple[str, ...]) -> dict:
    """scripts/evaluate.py's assignment study with learners `names` (3 updates, 4 tasks, 2 seeds, in `folder`): each
    must adapt at test time as it learned to, be recorded with its kind, and score finite MSEs. Returns the report."""
    from maml_sine.learners import LEARNED, LEARNERS, assignment_study  # the package, imported here as above

    evaluate = import_script(ROOT / "scripts" / "evaluate.py")
    study = dataclasses.replace(assignment_study(updates=3), learners=names)
    monkeypatch.setitem(evaluate.STUDIES, "assignment", lambda **options: study)
    folders = ["--out-dir", str(folder / "out"), "--checkpoint-dir", str(folder / "checkpoints")]
    report = evaluate.main(["--updates", "3", "--tasks", "4", "--seeds", "2", *folders])
    for name in names:
        if LEARNERS[name].test_lr == LEARNED:
            assert report["evaluation"]["test_lr"][name] == {"5": LEARNED, "10": LEARNED}, name
        assert report["learners"][name]["learner"]["algorithm"]["kind"] == LEARNERS[name].algorithm.kind
        assert all(np.isfinite(report["mse"]["grid"][name][section]["mean"]).all() for section in ("5", "10")), name
    return report


def trained_lanes(algorithm, inputs: int = 1, dtype=torch.float32, lanes: int = 3, updates: int = 4):
    """`lanes` learners of `algorithm` (networks of `inputs` inputs, in `dtype`) trained `updates` updates on the
    assignment's stream, one task per update: (the learners, their initializations, the batches they took)."""
    from maml_sine.batched import BatchedMAML, initializations_from_seeds  # the package, imported here as above
    from maml_sine.learners import ASSIGNMENT
    from maml_sine.training import lane_seeds

    seeds = lane_seeds(lanes)
    initializations = [[w.to(dtype) for w in init] for init in initializations_from_seeds(seeds, inputs=inputs)]
    learners = BatchedMAML(initializations, algorithm)
    streams = ASSIGNMENT.streams(seeds)
    batches = [[part.to(dtype) for part in streams.next_batch()] for _ in range(updates)]
    for tasks in batches:
        learners.train(tasks)
    return learners, initializations, batches
