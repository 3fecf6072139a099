"""The public API the graders rely on (docs/api.md): names, signatures, attributes, RNG order."""

import ast
import importlib
import inspect
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import assignment
import utils
from assignment import MAML
from helpers import ROOT
from utils import BaseLearner, SineGenerator, TrainFromScratch

WEIGHT_SHAPES = [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def parameter_names(function):
    return list(inspect.signature(function).parameters)


def sequential_network(weights):
    """The base-learner as an ordinary nn.Module holding copies of `weights`."""
    network = torch.nn.Sequential(
        torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(), torch.nn.Linear(40, 1)
    )
    with torch.no_grad():
        for parameter, weight in zip(network.parameters(), weights, strict=True):
            parameter.copy_(weight)
    return network


def test_signatures(script):
    assert parameter_names(SineGenerator)[:2] == ["k", "k_test"]
    assert parameter_names(TrainFromScratch)[:1] == ["num_steps"]
    assert parameter_names(MAML)[:1] == ["num_steps"]
    assert parameter_names(MAML.train) == ["self", "task"]
    assert parameter_names(MAML.copy_params) == parameter_names(MAML(num_steps=1).copy_params) == ["params"]
    assert parameter_names(utils.plot_history)[:2] == ["tfs_history", "maml_history"]
    curve = inspect.signature(script.learning_curve).parameters
    assert [(name, curve[name].default) for name in list(curve)[:2]] == [("maml_steps", 5), ("plot_tfs", False)]
    for function in (MAML, TrainFromScratch, SineGenerator, utils.plot_history, script.learning_curve):
        extras = list(inspect.signature(function).parameters.values())[2:]
        assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extras), function


def test_maml_attributes():
    maml = MAML(num_steps=3)
    assert maml.num_steps == 3
    assert isinstance(maml.loss_fn, torch.nn.MSELoss)
    assert [tuple(w.shape) for w in maml.initialization] == WEIGHT_SHAPES
    assert all(w.is_leaf and w.requires_grad for w in maml.initialization)
    assert isinstance(maml.meta_optimizer, torch.optim.Adam)
    (group,) = maml.meta_optimizer.param_groups
    assert group["lr"] == 0.001
    assert all(a is b for a, b in zip(group["params"], maml.initialization, strict=True))
    assert maml.history == []


def test_copy_params_returns_new_leaves_that_require_grad_and_share_nothing():
    """The skeleton's helper, on the class and on a learner, for leaves, for fast weights (functions of the
    initialization) and for tensors that require no grad."""
    torch.manual_seed(0)
    maml = MAML(num_steps=1)
    before = [w.detach().clone() for w in maml.initialization]
    fast = [2 * w for w in maml.initialization]
    for params in (maml.initialization, fast, tuple(before)):
        for copies in (MAML.copy_params(params), maml.copy_params(iter(params))):
            assert type(copies) is list and copies is not params and len(copies) == len(params)
            for copy, param in zip(copies, params, strict=True):
                assert copy is not param and torch.equal(copy, param.detach())
                assert copy.is_leaf and copy.requires_grad
                assert copy.data_ptr() != param.data_ptr(), "a copy must hold memory of its own"
    copies = MAML.copy_params(fast)
    sum(copy.sum() for copy in copies).backward()
    with torch.no_grad():
        for copy in copies:
            copy.add_(1.0)
    assert all(w.grad is None for w in maml.initialization), "no gradient may reach the originals"
    assert all(torch.equal(w, b) for w, b in zip(maml.initialization, before, strict=True))


def test_random_initial_weights_are_nn_linear_layers_with_zero_biases():
    torch.manual_seed(123)
    weights = BaseLearner.random_initial_weights()
    after_weights = torch.get_rng_state()
    torch.manual_seed(123)
    layers = [torch.nn.Linear(1, 40), torch.nn.Linear(40, 40), torch.nn.Linear(40, 1)]
    assert torch.equal(after_weights, torch.get_rng_state()), "torch's RNG consumed differently"
    expected = []
    for layer in layers:
        expected += [layer.weight.detach(), torch.zeros_like(layer.bias)]
    assert len(weights) == 6
    for actual, wanted in zip(weights, expected):
        assert torch.equal(actual.detach(), wanted)
        assert actual.is_leaf and actual.requires_grad and actual.dtype == torch.float32


def test_maml_draws_its_initialization_from_torch_rng():
    torch.manual_seed(5)
    expected = BaseLearner.random_initial_weights()
    torch.manual_seed(5)
    maml = MAML(num_steps=1)
    assert all(torch.equal(a, b) for a, b in zip(maml.initialization, expected))


def test_sine_generator_draws_in_contract_order():
    np.random.seed(99)
    fn, (train_x, train_y, test_x, test_y) = SineGenerator(k=3, k_test=7).generate_task()
    state_after = np.random.get_state()[1].copy()

    np.random.seed(99)
    amplitude = np.random.uniform(0.1, 5.0)
    phase = np.random.uniform(0, np.pi)
    support_x = np.random.uniform(-5, 5, size=(3, 1)).astype(np.float32)
    query_x = np.random.uniform(-5, 5, size=(7, 1)).astype(np.float32)
    assert np.array_equal(state_after, np.random.get_state()[1])

    for tensor, shape in [(train_x, (3, 1)), (train_y, (3, 1)), (test_x, (7, 1)), (test_y, (7, 1))]:
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        assert tuple(tensor.shape) == shape
    assert np.array_equal(train_x.numpy(), support_x)
    assert np.array_equal(test_x.numpy(), query_x)
    assert np.array_equal(train_y.numpy(), amplitude * np.sin(support_x + phase))
    assert np.array_equal(test_y.numpy(), amplitude * np.sin(query_x + phase))
    np.testing.assert_allclose(fn(np.float64(0.5)), amplitude * np.sin(0.5 + phase))


def test_generator_yields_the_asked_number_of_tasks():
    np.random.seed(0)
    tasks = list(SineGenerator(k=2, k_test=2).generator(episodes=4))
    assert len(tasks) == 4
    assert all(callable(fn) and len(task) == 4 for fn, task in tasks)


@pytest.mark.parametrize("k, k_test", [(2.0, 3), (2, "3"), (None, 3), (True, 3)])
def test_sine_generator_refuses_non_int_sizes(k, k_test):
    with pytest.raises(TypeError, match="must be an int"):
        SineGenerator(k=k, k_test=k_test)


def test_forward_matches_nn_sequential_and_leaves_weights_untouched():
    torch.manual_seed(0)
    weights = [torch.randn(shape, requires_grad=True) for shape in WEIGHT_SHAPES]
    before = [w.detach().clone() for w in weights]
    x = torch.linspace(-5, 5, 17).reshape(17, 1)
    network = sequential_network(weights)
    prediction = BaseLearner.forward(x, weights)
    assert prediction.shape == (17, 1)
    torch.testing.assert_close(prediction, network(x))
    prediction.sum().backward()
    assert all(torch.equal(w.detach(), b) for w, b in zip(weights, before))


def test_train_from_scratch_matches_adam_on_an_nn_module():
    torch.manual_seed(1)
    learner = TrainFromScratch(num_steps=5)
    initialization = [w.detach().clone() for w in learner.initialization]
    np.random.seed(2)
    _, task = SineGenerator(k=10, k_test=40).generate_task()
    learner.train(task)
    learner.train(task)

    network = sequential_network(initialization)
    optimizer = torch.optim.Adam(network.parameters())
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(network(task[0]), task[1]).backward()
        optimizer.step()
    expected = torch.nn.functional.mse_loss(network(task[2]), task[3]).item()
    assert learner.history == [pytest.approx(expected, rel=1e-5)] * 2, "each task must start afresh"
    assert all(type(loss) is float for loss in learner.history)
    assert all(torch.equal(a.detach(), b) for a, b in zip(learner.initialization, initialization))


def test_assignment_imports_only_base_learner_from_utils():
    tree = ast.parse((ROOT / "assignment.py").read_text())
    imported = [
        (node.module, [alias.name for alias in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "utils"
    ]
    assert imported == [("utils", ["BaseLearner"])]
    plain_imports = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "utils" not in plain_imports


def test_assignment_runs_beside_a_utils_with_only_the_two_base_learner_functions(monkeypatch):
    """What the original assignment's utils.py is guaranteed to offer: nothing more is used."""
    stub = types.ModuleType("utils")
    stub.BaseLearner = type(
        "BaseLearner",
        (),
        {
            "random_initial_weights": staticmethod(BaseLearner.random_initial_weights),
            "forward": staticmethod(BaseLearner.forward),
        },
    )
    monkeypatch.setitem(sys.modules, "utils", stub)
    monkeypatch.delitem(sys.modules, "assignment")
    isolated = importlib.import_module("assignment")
    assert isolated is not assignment
    np.random.seed(0)
    _, task = SineGenerator(k=5, k_test=5).generate_task()
    maml = isolated.MAML(num_steps=2)
    maml.train(task)
    assert len(maml.history) == 1


def test_importing_test_py_trains_nothing_and_draws_nothing():
    probe = (
        "import numpy as np, torch, assignment, utils\n"
        "calls = []\n"
        "assignment.MAML.train = utils.TrainFromScratch.train = lambda *args: calls.append(args)\n"
        "numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()\n"
        "import test\n"
        "assert test.__file__.endswith('test.py') and not test.__file__.endswith('lib/test.py'), test.__file__\n"
        "assert calls == [], 'importing test.py trained'\n"
        "assert (np.random.get_state()[1] == numpy_state).all(), 'importing test.py drew from numpy'\n"
        "assert torch.equal(torch.get_rng_state(), torch_state), 'importing test.py drew from torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_maml_meta_optimizer_is_plain_adam_as_the_assignment_builds_it():
    (group,) = MAML(num_steps=1).meta_optimizer.param_groups
    assert not group.get("fused") and not group["amsgrad"] and not group["weight_decay"]
    assert (group["lr"], group["betas"], group["eps"]) == (0.001, (0.9, 0.999), 1e-8)


def imported_modules(path):
    """Every module `path` imports, at its top level or inside functions: {(module, inside a function)}."""
    tree = ast.parse(path.read_text())
    inside = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
              for node in ast.walk(function)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add((node.module.split(".")[0], id(node) in inside))
        elif isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], id(node) in inside) for alias in node.names)
    return found


def test_dependencies_run_one_way():
    """utils uses neither assignment nor the package; assignment uses utils; test.py reaches the package only
    inside the functions that need it (--seeds, --fast), so the three files stand alone."""
    utils_imports = {module for module, _ in imported_modules(ROOT / "utils.py")}
    assert not utils_imports & {"assignment", "maml_sine", "test"}
    assert not {module for module, _ in imported_modules(ROOT / "assignment.py")} & {"maml_sine", "test"}
    assert ("maml_sine", False) not in imported_modules(ROOT / "test.py")
    assert ("tqdm", False) not in imported_modules(ROOT / "test.py"), "tqdm is used only where it is installed"
