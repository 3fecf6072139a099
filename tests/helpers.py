"""Helpers the tests share: a seeded sine task that leaves the global RNGs alone, a PNG check."""

from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def is_png(path: Path) -> bool:
    """True if `path` holds a PNG that decodes to a non-empty RGB(A) image."""
    import matplotlib.image

    if path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    image = matplotlib.image.imread(path)
    return image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


def sine_task(seed: int, support: int = 10, query: int = 40, dtype=torch.float64) -> list[torch.Tensor]:
    """A sine task drawn from its own generator (the global RNGs are left alone)."""
    rng = np.random.default_rng(seed)
    amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
    xs = [rng.uniform(-5.0, 5.0, size=(n, 1)) for n in (support, query)]
    arrays = [xs[0], amplitude * np.sin(xs[0] + phase), xs[1], amplitude * np.sin(xs[1] + phase)]
    return [torch.tensor(a, dtype=dtype) for a in arrays]
