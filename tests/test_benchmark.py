"""The benchmark's textbook MAML, the baseline every speed-up is measured against, computes what `MAML.train` does."""

import numpy as np
import pytest
import torch

from assignment import MAML
from helpers import ROOT, import_script, sine_task, weights_of


@pytest.fixture(scope="module")
def benchmark():
    return import_script(ROOT / "benchmarks" / "bench_train.py")


@pytest.mark.parametrize("num_steps, support", [(1, 10), (5, 5)])
def test_textbook_loop_takes_the_update_of_maml_train(benchmark, num_steps, support):
    torch.manual_seed(0)
    textbook = benchmark.TextbookMAML(num_steps)
    torch.manual_seed(0)
    maml = MAML(num_steps)
    assert all(torch.equal(a, b) for a, b in zip(textbook.weights, maml.initialization, strict=True))
    for seed in range(3):
        task = sine_task(seed, support, 40, dtype=torch.float32)
        textbook.train(task)
        maml.train(task)
        assert textbook.history[-1] == pytest.approx(maml.history[-1], rel=1e-6)
        for mine, theirs in zip(weights_of(maml), textbook.weights, strict=True):
            torch.testing.assert_close(mine, theirs.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_the_compiled_update_from_maml_trains_state_differs_by_rounding_only(benchmark):
    """The benchmark's one-update deviation: the compiled path started from `MAML.train`'s weights and Adam state."""
    assert benchmark.one_step_deviation(1, benchmark.draw_tasks(20, 10)) < 1e-5


def test_the_jax_peer_takes_the_updates_of_maml_train():
    """The peer the benchmark times computes the same second-order update (where jax is installed)."""
    pytest.importorskip("jax")
    Peer = import_script(ROOT / "benchmarks" / "jax_peer.py").Peer
    torch.manual_seed(0)
    maml = MAML(2)
    tasks = [sine_task(seed, 5, 40, dtype=torch.float32) for seed in range(10)]
    block = [torch.stack([task[part] for task in tasks])[:, None].numpy() for part in range(4)]  # (T, N=1, n, 1)
    peer = Peer([[weight.detach().numpy() for weight in maml.initialization]], num_steps=2)
    losses = peer.train(block)[:, 0]
    for task in tasks:
        maml.train(task)
    np.testing.assert_allclose(losses, maml.history, rtol=1e-4)
