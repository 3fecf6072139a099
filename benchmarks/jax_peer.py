"""The peer a user would pick instead: the same MAML update in JAX, jitted, many updates per call.

Second-order MAML on the 1-40-40-1 ReLU network (weights in torch's (out, in) layout), S inner SGD
steps, the query loss's gradient through them, and torch.optim.Adam's step written out (default
betas and eps, bias corrections as torch computes them). N learners are vmapped; a block of T
pre-drawn tasks runs as one `lax.scan` inside one jitted call, the state threaded through it. This
is what makes JAX fast here: one call, one dispatch, for T updates.

Used by `bench_train.py` where `jax` is installed; never a requirement of the project.
"""

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def forward(weights: Sequence[jax.Array], x: jax.Array) -> jax.Array:
    """x (n, 1) -> (n, 1) through linear, ReLU, linear, ReLU, linear."""
    w1, b1, w2, b2, w3, b3 = weights
    hidden = jax.nn.relu(x @ w1.T + b1)
    hidden = jax.nn.relu(hidden @ w2.T + b2)
    return hidden @ w3.T + b3


def mse(weights: Sequence[jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((forward(weights, x) - y) ** 2)


def query_loss(weights, task, num_steps: int, inner_lr: float):
    """The query MSE after `num_steps` SGD steps on the support set, a function of the initialization `weights`."""
    train_x, train_y, test_x, test_y = task
    fast = weights
    for _ in range(num_steps):
        gradients = jax.grad(mse)(fast, train_x, train_y)
        fast = [w - inner_lr * g for w, g in zip(fast, gradients)]
    return mse(fast, test_x, test_y)


def update(state, task, num_steps: int, inner_lr: float, meta_lr: float):
    """One learner's meta-update on one task: the new (weights, first moments, second moments, step), the loss."""
    weights, exp_avgs, exp_avg_sqs, step = state
    loss, gradients = jax.value_and_grad(query_loss)(weights, task, num_steps, inner_lr)
    step = step + 1
    step_size = meta_lr / (1 - BETA1**step)
    bias_correction2_sqrt = jnp.sqrt(1 - BETA2**step)
    exp_avgs = [m * BETA1 + (1 - BETA1) * g for m, g in zip(exp_avgs, gradients)]
    exp_avg_sqs = [v * BETA2 + (1 - BETA2) * g * g for v, g in zip(exp_avg_sqs, gradients)]
    weights = [
        w - step_size * m / (jnp.sqrt(v) / bias_correction2_sqrt + EPS)
        for w, m, v in zip(weights, exp_avgs, exp_avg_sqs)
    ]
    return (weights, exp_avgs, exp_avg_sqs, step), loss


class Peer:
    """N learners, each from its own initialization; `train(block)` runs a block of tasks, each part (T, N, n, 1)."""

    def __init__(self, initializations: Sequence[Sequence[np.ndarray]], num_steps: int, inner_lr=0.01, meta_lr=1e-3):
        weights = [jnp.stack([np.asarray(w) for w in layer]) for layer in zip(*initializations)]
        zeros = [jnp.zeros_like(w) for w in weights]
        self.state = (weights, zeros, list(zeros), jnp.zeros(len(initializations)))
        one = partial(update, num_steps=num_steps, inner_lr=inner_lr, meta_lr=meta_lr)
        self._block = jax.jit(lambda state, tasks: jax.lax.scan(jax.vmap(one), state, tasks))

    def train(self, block: Sequence[np.ndarray]) -> np.ndarray:
        """Meta-train on T tasks per learner; returns the (T, N) query losses (waits for them)."""
        self.state, losses = self._block(self.state, tuple(block))
        return np.asarray(jax.block_until_ready(losses))
