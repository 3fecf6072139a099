"""Draw maml.png: MAML's idea as a picture of parameter space.

    python scripts/draw_maml_diagram.py [--out maml.png]

A random initialization theta_0 is meta-trained (solid path) to a point theta from
which a few SGD steps on each task's support set (dashed steps) land close to that
task's optimum theta*_i. The picture is schematic: a 2-D stand-in for the weights.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Ellipse

from maml_sine.cli import run_command
from maml_sine.files import save_figure

ROOT = Path(__file__).resolve().parent.parent

THETA = np.array([0.0, 0.0])
TASK_OPTIMA = {1: np.array([-2.6, 1.6]), 2: np.array([2.7, 1.3]), 3: np.array([0.6, -2.2])}
TASK_COLORS = {1: "tab:blue", 2: "tab:green", 3: "tab:red"}
INNER_STEPS = 3
META_PATH = np.array([[-4.6, -3.4], [-4.1, -2.0], [-3.0, -1.3], [-1.9, -0.9], [-0.9, -0.4], THETA])


def draw_task(axes: Axes, task: int, optimum: np.ndarray) -> None:
    """A task's loss basin around theta*_i and S shrinking SGD steps from theta towards it."""
    color = TASK_COLORS[task]
    angle = np.degrees(np.arctan2(*(optimum - THETA)[::-1]))
    for scale in (0.8, 1.5, 2.2):
        basin = Ellipse(optimum, 1.4 * scale, 0.8 * scale, angle=angle, fill=False, color=color, alpha=0.25)
        axes.add_patch(basin)
    axes.plot(*optimum, marker="*", markersize=16, color=color)
    axes.annotate(rf"$\theta^*_{task}$", optimum, xytext=(8, 6), textcoords="offset points", fontsize=14, color=color)
    fractions = np.cumsum([0.4, 0.25, 0.15][:INNER_STEPS])
    points = [THETA + f * (optimum - THETA) for f in np.concatenate([[0.0], fractions])]
    for start, end in pairwise(points):
        arrow = {"arrowstyle": "-|>", "mutation_scale": 16, "color": color, "linestyle": "--", "lw": 1.6}
        axes.annotate("", xy=end, xytext=start, arrowprops=arrow)
    axes.plot(*points[-1], marker="o", markersize=7, color=color)
    label_offset = {"xytext": (-20, -16), "textcoords": "offset points"}
    axes.annotate(rf"$\phi_{task}$", points[-1], fontsize=13, color=color, **label_offset)


def draw_meta_path(axes: Axes) -> None:
    """The meta-training path from a random theta_0 to the learned theta, one dot per update."""
    axes.plot(*META_PATH.T, color="black", lw=3, solid_capstyle="round")
    axes.plot(*META_PATH[:-1].T, "o", color="black", markersize=4)
    axes.plot(*META_PATH[0], "s", color="gray", markersize=9)
    axes.annotate(r"$\theta_0$ (random)", META_PATH[0], xytext=(10, -4), textcoords="offset points", fontsize=12)
    axes.plot(*THETA, "o", color="black", markersize=12)
    axes.annotate(r"$\theta$", THETA, xytext=(10, -18), textcoords="offset points", fontsize=16, weight="bold")


def draw_explanations(axes: Axes) -> None:
    """What the two kinds of step are, and the update equations."""
    pointer = {"arrowstyle": "-", "color": "gray", "lw": 0.8}
    meta_text = "meta-learning: one Adam step\non each task's query loss"
    axes.annotate(meta_text, META_PATH[2], xytext=(-3.5, -2.75), fontsize=10, arrowprops=pointer)
    adaptation_text = f"adaptation: S = {INNER_STEPS} SGD steps\non task i's support set"
    adaptation_step = THETA + 0.5 * (TASK_OPTIMA[2] - THETA)
    axes.annotate(adaptation_text, adaptation_step, xytext=(1.5, -0.9), fontsize=10, arrowprops=pointer)
    equations = (
        r"$\phi_i \leftarrow \phi_i - \alpha\,\nabla_{\phi}\mathcal{L}^{\mathrm{support}}_i(\phi_i)$"
        r"  (S times, from $\phi_i = \theta$)"
        "\n"
        r"$\theta \leftarrow \mathrm{Adam}_\beta\left(\theta,\ "
        r"\nabla_{\theta}\mathcal{L}^{\mathrm{query}}_i(\phi_i(\theta))\right)$"
    )
    axes.text(0.5, 0.02, equations, transform=axes.transAxes, ha="center", va="bottom", fontsize=11)


def draw(out: Path) -> None:
    """Draw the whole diagram and save it as a PNG at `out`."""
    figure, axes = plt.subplots(figsize=(8, 5.6))
    for task, optimum in TASK_OPTIMA.items():
        draw_task(axes, task, optimum)
    draw_meta_path(axes)
    draw_explanations(axes)
    axes.set_xlim(-5.3, 4.6)
    axes.set_ylim(-5.4, 3.2)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title(r"MAML learns an initialization $\theta$ a few gradient steps from every task's optimum")
    figure.tight_layout()
    save_figure(figure, out)


def main(argv: Sequence[str]) -> None:
    """Draw the diagram where the command line `argv` says (--out)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "maml.png", help="PNG to write (default: maml.png)")
    draw(parser.parse_args(argv).out)


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
