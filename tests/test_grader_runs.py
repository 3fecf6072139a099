"""The two seeded 40,000-episode runs a grader makes (CONTRACT.md): mean of the last 500 losses."""

import numpy as np
import pytest
import torch

from assignment import MAML
from utils import SineGenerator

EPISODES = 40_000


@pytest.mark.slow
@pytest.mark.parametrize("k, num_steps, threshold", [(10, 1, 0.7), (5, 5, 0.8)], ids=["K10-S1", "K5-S5"])
def test_grader_run_meets_its_threshold(k, num_steps, threshold, capsys):
    np.random.seed(1337)
    torch.manual_seed(42)
    sine = SineGenerator(k=k, k_test=40)
    maml = MAML(num_steps=num_steps)
    for _, task in sine.generator(EPISODES):
        maml.train(task)
    final_mse = float(np.mean(maml.history[-500:]))
    with capsys.disabled():  # the figure itself belongs in the CI log, pass or fail
        print(f"\ngrader run K={k}, S={num_steps}: mean of the last 500 query losses = {final_mse:.4f}")
    assert final_mse < threshold
