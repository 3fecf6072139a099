"""The opt-in fast path: a whole MAML meta-update (or a whole from-scratch fit) as one compiled function.

`MAML.train` in assignment.py is the specification; this module computes the same
numbers faster. Per episode the eager loop pays for hundreds of small operator
dispatches and autograd-graph nodes; here `torch.func` expresses the meta-gradient
as a pure function (grad of the query loss through S inner `grad` steps), Adam's
update is written out as tensor arithmetic, and `torch.compile` (inductor on CPU)
turns the lot into a few fused C++ kernels.

The learner keeps all of its state: each compiled step reads and writes
`maml.initialization` and the Adam moments in `maml.meta_optimizer.state` in place,
so a run can switch between `CompiledMAML(maml)` and `maml.train`, or be checkpointed,
at any episode. As in `MAML.train`, a task is checked first, and an update whose
query loss or meta-gradient is not finite is not applied: every write is guarded
by `torch.where(finite, new, old)`, and the error is raised after the step.

    trainer = compiled_trainer(maml)   # falls back to maml.train, with one line, if compiling is not possible
    for _, task in tasks:
        trainer(task)
"""

import sys
from collections.abc import Callable, Sequence

import torch

from assignment import MAML, NOT_APPLIED, all_finite, check_finite, check_task
from maml_sine.functional import adam_update_, adapted, mse
from utils import TrainFromScratch

Task = Sequence[torch.Tensor]
# A C++ wrapper calls the generated kernels without Python in between: about 1.5x
# faster per episode than inductor's default Python wrapper here, for ~10 s more compiling.
COMPILE_OPTIONS = {"cpp_wrapper": True}
ADAM_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}  # torch.optim.Adam's: TrainFromScratch's


def _meta_step(weights, exp_avgs, exp_avg_sqs, steps, task, *, num_steps, first_order, inner_lr, adam):
    """One meta-update, in place; returns (query loss, whether the update was applied)."""
    train_x, train_y, test_x, test_y = task

    def query_loss(initialization):
        fast_weights = adapted(
            initialization, train_x, train_y, num_steps=num_steps, inner_lr=inner_lr, first_order=first_order
        )
        return mse(fast_weights, test_x, test_y)

    meta_gradients, loss = torch.func.grad_and_value(query_loss)(list(weights))
    finite = torch.isfinite(loss) & all_finite(meta_gradients)
    with torch.no_grad():
        adam_update_(weights, meta_gradients, exp_avgs, exp_avg_sqs, steps, **adam, apply=finite)
    return loss, finite


class CompiledMAML:
    """`maml.train`, compiled: `CompiledMAML(maml)(task)` does what `maml.train(task)` does."""

    def __init__(self, maml: MAML) -> None:
        (group,) = maml.meta_optimizer.param_groups
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("the compiled path implements plain Adam (no weight decay, amsgrad or maximize)")
        self.maml = maml
        self._compiled = torch.compile(_meta_step, dynamic=False, options=COMPILE_OPTIONS)

    def _adam_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """The optimizer's own state tensors, created as torch's Adam creates them if it has not stepped yet."""
        optimizer = self.maml.meta_optimizer
        for weight in self.maml.initialization:
            if not optimizer.state[weight]:
                optimizer.state[weight] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(weight, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(weight, memory_format=torch.preserve_format),
                }
        states = [optimizer.state[weight] for weight in self.maml.initialization]
        return tuple([state[key] for state in states] for key in ("exp_avg", "exp_avg_sq", "step"))

    def __call__(self, task: Task) -> None:
        maml = self.maml
        task = check_task(task, maml.initialization[0].dtype)
        consequence = NOT_APPLIED
        if maml.num_steps == 0:  # the step never reads the support set: look at it before anything is written
            check_finite(task, 0.0, support_used=False, consequence=consequence)
        (group,) = maml.meta_optimizer.param_groups
        beta1, beta2 = group["betas"]
        adam = {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"]}
        exp_avgs, exp_avg_sqs, steps = self._adam_state()
        with torch.no_grad():  # the weights are updated in place; torch.func tracks its own gradients
            loss, applied = self._compiled(
                maml.initialization, exp_avgs, exp_avg_sqs, steps, task,
                num_steps=maml.num_steps, first_order=maml.first_order, inner_lr=maml.inner_lr, adam=adam,
            )  # fmt: skip
        loss_value = loss.item()
        # support_used=True: with S >= 1 the support set reaches the loss; with S = 0 it was checked above.
        check_finite(task, loss_value, support_used=True, consequence=consequence)
        if not applied:
            raise FloatingPointError(f"the meta-gradient is not finite on this task; {consequence}")
        maml.history.append(loss_value)


def scratch_query_loss(initialization, task, *, num_steps, adam):
    """TrainFromScratch.train as a pure function: Adam from zero state on a copy, then the query MSE."""
    train_x, train_y, test_x, test_y = task
    weights = [weight.clone() for weight in initialization]
    exp_avgs = [torch.zeros_like(weight) for weight in weights]
    exp_avg_sqs = [torch.zeros_like(weight) for weight in weights]
    steps = [torch.zeros((), dtype=torch.float32) for _ in weights]
    for _ in range(num_steps):
        gradients = torch.func.grad(mse)(weights, train_x, train_y)
        adam_update_(weights, gradients, exp_avgs, exp_avg_sqs, steps, **adam, apply=torch.tensor(True))
    return mse(weights, test_x, test_y)


class CompiledTrainFromScratch:
    """`scratch.train`, compiled: all `num_steps` Adam steps of one task in one function."""

    def __init__(self, scratch: TrainFromScratch) -> None:
        self.scratch = scratch
        self._compiled = torch.compile(scratch_query_loss, dynamic=False, options=COMPILE_OPTIONS)

    def __call__(self, task: Task) -> None:
        scratch = self.scratch
        task = check_task(task, scratch.initialization[0].dtype)
        with torch.no_grad():
            initialization = [weight.detach() for weight in scratch.initialization]
            loss_value = self._compiled(initialization, task, num_steps=scratch.num_steps, adam=ADAM_DEFAULTS).item()
        check_finite(task, loss_value, support_used=scratch.num_steps > 0, consequence="nothing was recorded")
        scratch.history.append(loss_value)


def compiled_trainer(learner: MAML | TrainFromScratch) -> Callable[[Task], None]:
    """The learner's `train`, compiled; if compiling fails on this machine, its eager `train`, said in one line.

    The first call compiles (a few seconds); compiling fails before anything is
    written, so falling back loses nothing.
    """
    fast = CompiledMAML(learner) if isinstance(learner, MAML) else CompiledTrainFromScratch(learner)
    return with_eager_fallback(fast, learner.train, what="fast path", instead="the eager train")


def with_eager_fallback(fast: Callable, eager: Callable, *, what: str, instead: str) -> Callable:
    """`fast` (a compiled function) from its first call on; if compiling fails there, `eager` from then
    on, said in one line. Compiling fails before anything is written, so falling back loses nothing;
    an error about the input (ValueError, TypeError, FloatingPointError) is raised, not a reason to fall back."""
    chosen: list[Callable] = []

    def call(*args, **kwargs):
        if chosen:
            return chosen[0](*args, **kwargs)
        try:
            result = fast(*args, **kwargs)
            chosen.append(fast)
        except (ValueError, TypeError, FloatingPointError):
            raise  # bad input, not a compiler problem
        except Exception as error:  # whatever the compiler raised: the eager path still works
            print(f"compiled {what} unavailable ({type(error).__name__}); using {instead}", file=sys.stderr)
            chosen.append(eager)
            result = eager(*args, **kwargs)
        return result

    return call
