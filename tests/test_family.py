"""The MAML family's studies (`--study family`, `--study family_meta_sgd`): Meta-SGD's sines and stream, the held-out
tasks with their frequencies, what each learner learned read back from its params, Li et al.'s Table 1 beside ours,
and (slow) both studies end to end in a process of their own, short."""

import json

import numpy as np
import pytest
import torch

from helpers import ROOT, run_python
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.evaluation import draw_held_out_tasks
from maml_sine.learned import adapted_contexts, learned, r_squared
from maml_sine.learners import FAMILY, LEARNERS, RECIPES, STUDIES, meta_sgd_protocol, paper_protocol
from maml_sine.pages import LI_SECTIONS, LI_TABLE_1, one_run_difference, table_1
from maml_sine.streams import FREQUENCY_RANGE
from maml_sine.training import lane_seeds


def test_meta_sgds_stream_gives_the_papers_tasks_with_a_frequency_each():
    """The frequency stream draws as the paper stream draws (amplitudes, phases, x), then one frequency per task: its y
    is a sin(w x + p) with w in [0.8, 1.2)."""
    seeds = lane_seeds(2)
    stream = meta_sgd_protocol(5, 10).streams(seeds)
    batch = stream.next_batch()
    x, y, amplitudes, phases = (part.double() for part in stream.drawn)
    draws = []
    for seed, _ in seeds:  # the paper stream's draws, in its order, then the frequencies
        rng = np.random.default_rng(seed)
        shape = (500, 4)
        draws.append([rng.uniform(0.1, 5.0, shape), rng.uniform(0, np.pi, shape), rng.uniform(-5, 5, (*shape, 10, 1)),
                      rng.uniform(*FREQUENCY_RANGE, shape)])  # fmt: skip
    expected_a, expected_p, expected_x, w = (torch.from_numpy(np.stack(part, axis=1)) for part in zip(*draws))
    for drawn, expected in ((amplitudes, expected_a), (phases, expected_p), (x, expected_x)):
        torch.testing.assert_close(drawn, expected, rtol=1e-6, atol=1e-6)
    assert ((w >= 0.8) & (w < 1.2)).all() and w.std() > 0.1
    expected_y = expected_a[..., None, None] * torch.sin(w[..., None, None] * expected_x + expected_p[..., None, None])
    torch.testing.assert_close(y, expected_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch[1].double(), expected_y[0, :, :, :5], rtol=1e-5, atol=1e-5)


def test_held_out_sines_with_frequencies_keep_the_tasks_they_had_without():
    plain, li = draw_held_out_tasks(20, 10), draw_held_out_tasks(20, 10, frequency_range=FREQUENCY_RANGE)
    assert plain.frequencies is None and np.array_equal(plain.amplitudes, li.amplitudes)
    assert torch.equal(plain.support_x, li.support_x) and ((li.frequencies >= 0.8) & (li.frequencies < 1.2)).all()
    x = li.support_x.double()
    expected = li.amplitudes[:, None, None] * np.sin(
        li.frequencies[:, None, None] * x.numpy() + li.phases[:, None, None]
    )
    np.testing.assert_allclose(li.targets(li.support_x).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_the_family_studies_hold_every_learner_and_their_protocols():
    family, li = STUDIES["family"](), STUDIES["family_meta_sgd"]()
    assert family.learners == (*FAMILY, *RECIPES) and li.learners == FAMILY
    assert [p.record() for p in family.training] == [paper_protocol(k).record() for k in (5, 10)]
    (protocol,) = li.training
    assert (protocol.stream, protocol.support_points, protocol.tasks_per_update, protocol.updates) == (
        "frequency", 5, 4, 60_000)  # fmt: skip
    assert li.frequency_range == FREQUENCY_RANGE and li.scores == ("grid",)
    assert LEARNERS["reptile_recipe"].trained_under(paper_protocol(10)).record() == {
        **paper_protocol(10).record(), "tasks_per_update": 1, "updates": 30_000}  # fmt: skip
    assert LEARNERS["cavia_recipe"].trained_under(paper_protocol(10, 20)).updates == 20, "never more than the study's"


def test_cavias_context_is_read_back_from_the_bias_it_moved():
    """`adapted_contexts` recovers the context of CAVIA's inner step: the one the gradient of the support loss
    with respect to a context fed as inputs gives, computed here by autograd on [x, c]."""
    learner = LEARNERS["cavia"]
    model = BatchedMAML(initializations_from_seeds(lane_seeds(1), inputs=6), learner.algorithm).params(0)
    tasks = draw_held_out_tasks(6, 10)
    support_x, support_y = tasks.support(10)
    contexts = adapted_contexts(learner.algorithm, model, support_x, support_y)
    first_layer = torch.cat([model["w1"], model["w_context"]], dim=1)
    for task in range(6):
        context = torch.zeros(5, requires_grad=True)
        inputs = torch.cat([support_x[task], context.expand(10, 5)], dim=1)
        hidden = torch.relu(inputs @ first_layer.T + model["b1"])
        hidden = torch.relu(hidden @ model["w2"].T + model["b2"])
        loss = ((hidden @ model["w3"].T + model["b3"] - support_y[task]) ** 2).mean()
        (gradient,) = torch.autograd.grad(loss, context)
        torch.testing.assert_close(contexts[task], -learner.algorithm.inner_lr * gradient, rtol=1e-3, atol=1e-6)


def test_r_squared_of_an_exact_affine_read_out_is_one_and_of_noise_near_zero():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 3))
    assert r_squared(features, features @ [1.0, -2.0, 0.5] + 3.0) == pytest.approx(1.0)
    assert abs(r_squared(features, rng.normal(size=500))) < 0.02


def test_what_is_learned_is_read_for_the_learners_that_learn_more():
    seeds, tasks = lane_seeds(2), draw_held_out_tasks(8, 5)
    records = {}
    for name in FAMILY:
        learner = LEARNERS[name]
        lanes = BatchedMAML(initializations_from_seeds(seeds, inputs=learner.network_inputs), learner.algorithm)
        records[name] = learned(name, [lanes.params(seed) for seed in range(2)], tasks, 5)
    assert {name for name, record in records.items() if record is not None} == {"meta_sgd", "maml_plus_plus", "cavia"}
    assert records["meta_sgd"]["mean_step_size"]["w2"] == [0.01, 0.01], "Meta-SGD's alpha starts at 0.01"
    assert records["maml_plus_plus"]["step_sizes_per_step"]["b3"] == [[0.01] * 5] * 2
    assert np.array(records["cavia"]["context"]["seed_0_contexts"]).shape == (8, 5)


def test_the_one_run_spread_widens_the_between_seed_interval_by_the_task_sampling_of_both_runs():
    result = {"per_seed": [[0.0, 1.0], [0.0, 1.2], [0.0, 0.8], [0.0, 1.1], [0.0, 0.9]], "ci95": [0.0, 0.1]}
    difference, spread = one_run_difference(result, 1, published=0.9, published_ci95=0.2)
    seeds = 2.776 * np.std([1.0, 1.2, 0.8, 1.1, 0.9], ddof=1) * np.sqrt(1 + 1 / 5)  # t(4) = 2.776
    assert difference == pytest.approx(0.1)
    assert spread == pytest.approx(np.sqrt(seeds**2 + 0.1**2 + 0.2**2), rel=1e-3)
    assert np.isnan(one_run_difference({**result, "per_seed": [[0.0, 1.0]]}, 1, 0.9, 0.2)[1]), "one seed: no spread"


@pytest.mark.slow
@pytest.mark.parametrize("study", ["family", "family_meta_sgd"])
def test_a_short_family_study_runs_end_to_end(tmp_path, study):
    """A few updates of every learner of the study, 2 seeds, in a process of its own: every learner scored (finite
    before any step), what the learners learned beside their initialization recorded and drawn, and, for Meta-SGD's
    protocol, Li et al.'s Table 1 written from its results.json."""
    out = tmp_path / "out"
    arguments = ["--study", study, "--updates", "30", "--tasks", "8", "--seeds", "2", "--out-dir", str(out),
                 "--checkpoint-dir", str(tmp_path / "checkpoints")]  # fmt: skip
    finished = run_python(ROOT / "scripts" / "evaluate.py", *arguments)
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads((out / "results.json").read_text())
    score = report["study"]["scores"][0]
    assert set(report["mse"][score]) == set(STUDIES[study]().learners)
    assert all(np.isfinite(sections[key]["mean"][0]) for sections in report["mse"][score].values() for key in sections)
    assert {"meta_sgd", "maml_plus_plus", "cavia"} <= set(report["learned"])
    assert (out / "learned.png").stat().st_size > 10_000
    if study == "family_meta_sgd":
        assert report["evaluation"]["frequencies"] is not None
        table = table_1(report, LI_SECTIONS)
        assert all(
            f"{mean:.2f} ± {ci:.2f}" in table for means, cis in LI_TABLE_1.values() for mean, ci in zip(means, cis)
        )
