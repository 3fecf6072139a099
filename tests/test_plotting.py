"""The sliding-window curve, the figure and its atomic save."""

import numpy as np
import pytest

import utils
from helpers import ROOT, is_png, run_python
from maml_sine.files import save_figure


def test_windowed_mean_matches_a_plain_loop():
    losses = np.random.default_rng(0).exponential(size=1000)
    episodes, means = utils.windowed_mean(losses, window=300)
    assert episodes[0] == 300 and episodes[-1] == 1000 and len(means) == 701
    expected = [losses[end - 300 : end].mean() for end in range(300, 1001)]
    np.testing.assert_allclose(means, expected, rtol=1e-12)


def test_windowed_mean_of_a_short_history_averages_what_there_is():
    episodes, means = utils.windowed_mean([1.0, 2.0, 3.0], window=300)
    assert episodes.tolist() == [3] and means.tolist() == [2.0]


@pytest.mark.parametrize("with_tfs", [False, True])
def test_plot_history_writes_a_labelled_png(tmp_path, with_tfs):
    maml_history = list(np.linspace(4, 0.3, 700))
    tfs_history = list(np.full(700, 3.5)) if with_tfs else None
    out = tmp_path / "curve.png"
    figure = utils.plot_history(tfs_history, maml_history, maml_steps=1, tfs_steps=10, show=False)
    save_figure(figure, out)
    (axes,) = figure.axes
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == ["MAML, S=1 inner SGD step"] + (["from scratch, 10 Adam steps"] if with_tfs else [])
    assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()
    assert is_png(out)
    assert list(tmp_path.iterdir()) == [out], "no temporary file may be left behind"


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    out = tmp_path / "curve.png"
    out.write_bytes(b"previous figure")
    figure = utils.plot_history(None, [1.0] * 400, show=False)

    def broken_savefig(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        save_figure(figure, out)
    assert out.read_bytes() == b"previous figure"
    assert list(tmp_path.iterdir()) == [out]


def test_diagram_script_draws_maml_png(tmp_path):
    out = tmp_path / "maml.png"
    script = ROOT / "scripts" / "draw_maml_diagram.py"
    result = run_python(script, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert is_png(out)
