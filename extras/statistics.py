"""Mean and 95% confidence interval of an error measured on many tasks."""

import numpy as np

Z_95 = 1.96  # two-sided 95% quantile of the normal distribution


def mean_and_ci95(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the last axis (the tasks) and the half-width of its 95% confidence interval.

    The half-width is 1.96 * std / sqrt(n) with the population std (ddof=0), as in
    Finn et al.'s evaluation code. `errors` of shape (..., n) gives two arrays of shape (...).
    """
    errors = np.asarray(errors, dtype=np.float64)
    return errors.mean(axis=-1), Z_95 * errors.std(axis=-1) / np.sqrt(errors.shape[-1])
