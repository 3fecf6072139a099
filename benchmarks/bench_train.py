"""How long one episode takes: the textbook MAML loop, the shipped `train`, and the compiled fast path.

    python benchmarks/bench_train.py            # the full table, then 40,000 episodes of memory (about 5 min)
    python benchmarks/bench_train.py --quick    # fewer repeats, no 40,000-episode memory run
    python benchmarks/bench_train.py --batched  # only the batched learner against MAML.train (about 2 min)
    python benchmarks/bench_train.py --peer     # only the compiled learners against the JAX peer, if jax is installed
    python benchmarks/bench_train.py --family   # only the MAML family's learners, time per update (about 5 min)
    python benchmarks/bench_train.py --lanes 1 1000 100000 --device cuda   # learner-updates per second on a GPU

Everything runs in this one process, on the same pre-drawn tasks and from the same
initialization. For each thread count and setting, every contender first runs
WARMUP episodes (the compiled path compiles then; that time is reported apart), then
REPEATS blocks of BLOCK episodes, the contenders taking turns in a rotating order so
that a slow moment of the machine hits them all; the table gives the median time
per episode and the speed-up over the textbook loop at the same thread count.

Deviation: fresh copies run DEVIATION_EPISODES episodes on the same tasks, and each
history is compared with the textbook's, episode by episode (max |h - h_ref| / h_ref).
Rounding differences grow over a long run (a ReLU that flips on one task changes
everything after it), so the textbook loop itself run with 2 threads instead of 1
is printed as the yardstick. Memory: the peak resident set during each contender's
deviation run (Linux: /proc/self/status, reset through /proc/self/clear_refs) and,
without --quick, the resident set along 40,000 episodes of `train` and of the
compiled path, which must stay flat.

Batched: tasks per second of `maml_sine.batched.BatchedMAML` (compiled) against
`MAML.train` run one learner after another on the same pre-drawn tasks, in alternating
blocks, for N=10 learners with B=1 task per update and for N=1 learner with B=25; then
the resident set along 40,000 updates of the N=10 learners.

The family: each learner of the MAML family (`maml_sine.learners.FAMILY`) as the family study trains it, its
time per update against MAML's, measured in a rotating order of blocks, and its compile time.

Lanes: learner-updates per second of N compiled MAML learners alone (S = 1, K = 10, one task per update), for each
N of `--lanes`; past LANES_DRAWN lanes, the tasks and initializations of LANES_DRAWN seeds are taken in turn (a
throughput, not a study). `--device` puts the batched, family and lanes sections' learners and task streams on
that device (`MAML.train` beside them stays on the CPU); the clock is read after the device has finished.

The peer: where `jax` is installed, the same second-order update in JAX (`jax_peer.py`), run as a
user of JAX would run it, many updates per jitted call, against the compiled lockstep learner, in
alternating blocks on the same tasks; per learner-update times, their ratio, and compile times.
"""

from maml_sine.interrupts import exit_on_ctrl_c

if __name__ == "__main__":  # before the imports below, which load torch for a second or more
    exit_on_ctrl_c()

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from assignment import MAML
from maml_sine.batched import CHUNK, BatchedMAML, BatchedTrainFromScratch, initializations_from_seeds
from maml_sine.cli import add_device_option, run_command, whole_number
from maml_sine.core import Algorithm, LearnerState, named
from maml_sine.learners import FAMILY, LEARNERS, assignment_protocol, paper_protocol
from maml_sine.training import lane_seeds
from utils import BaseLearner, SineGenerator, TrainFromScratch

SEED = 0
QUERY_POINTS = 40
MAML_SETTINGS = ((1, 10), (5, 5))  # (S, K): the two grader runs
SCRATCH_STEPS, SCRATCH_K = 10, 10  # the from-scratch learner of `python test.py --plot-tfs`
THREADS = (1, 2)
WARMUP = 50
BLOCK = 200
REPEATS = 7
DEVIATION_EPISODES = 2000
MEMORY_EPISODES = 40_000
MEMORY_EVERY = 5000


class TextbookMAML:
    """The baseline: MAML as a course writes it (autograd.grad with create_graph, fresh lists, plain Adam)."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.weights = BaseLearner.random_initial_weights()
        self.optimizer = torch.optim.Adam(self.weights, lr=0.001)
        self.history: list[float] = []

    def train(self, task: list[torch.Tensor]) -> None:
        train_x, train_y, test_x, test_y = task
        fast_weights = self.weights
        for _ in range(self.num_steps):
            loss = F.mse_loss(BaseLearner.forward(train_x, fast_weights), train_y)
            gradients = torch.autograd.grad(loss, fast_weights, create_graph=True)
            fast_weights = [w - 0.01 * g for w, g in zip(fast_weights, gradients)]
        query_loss = F.mse_loss(BaseLearner.forward(test_x, fast_weights), test_y)
        self.optimizer.zero_grad()
        query_loss.backward()
        self.optimizer.step()
        self.history.append(query_loss.item())


class TextbookScratch:
    """The from-scratch baseline as a course writes it: a fresh copy and a fresh Adam per task."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.weights = BaseLearner.random_initial_weights()
        self.history: list[float] = []

    def train(self, task: list[torch.Tensor]) -> None:
        train_x, train_y, test_x, test_y = task
        weights = [w.detach().clone().requires_grad_() for w in self.weights]
        optimizer = torch.optim.Adam(weights)
        for _ in range(self.num_steps):
            optimizer.zero_grad()
            F.mse_loss(BaseLearner.forward(train_x, weights), train_y).backward()
            optimizer.step()
        with torch.no_grad():
            self.history.append(F.mse_loss(BaseLearner.forward(test_x, weights), test_y).item())


class CompiledOfOne:
    """The compiled fast path for one learner: the lockstep learners with N = 1, fed one task at a time."""

    def __init__(self, learners: BatchedMAML | BatchedTrainFromScratch) -> None:
        self.learners = learners

    def train(self, task: list[torch.Tensor]) -> None:
        self.learners.train([part[None, None] for part in task])

    @property
    def history(self) -> np.ndarray:
        return self.learners.histories[0]


def contenders(textbook: type, shipped: type, compiled: Callable, num_steps: int) -> dict[str, tuple[Callable, object]]:
    """name -> (train function, learner with .history): the textbook loop, the shipped class, its compiled path.

    Each learner is built right after seeding torch, so all three start from the same weights.
    """
    made = {}
    kinds = {"textbook loop": textbook, f"{shipped.__name__}.train (shipped)": shipped, "compiled fast path": compiled}
    for name, kind in kinds.items():
        torch.manual_seed(SEED)
        learner = kind(num_steps)
        made[name] = (learner.train, learner)
    return made


def compiled_maml(num_steps: int) -> CompiledOfOne:
    return CompiledOfOne(BatchedMAML([BaseLearner.random_initial_weights()], Algorithm(num_steps), compile=True))


def compiled_scratch(num_steps: int) -> CompiledOfOne:
    return CompiledOfOne(BatchedTrainFromScratch([BaseLearner.random_initial_weights()], num_steps, compile=True))


def maml_contenders(num_steps: int) -> dict[str, tuple[Callable, object]]:
    return contenders(TextbookMAML, MAML, compiled_maml, num_steps)


def scratch_contenders(num_steps: int) -> dict[str, tuple[Callable, object]]:
    return contenders(TextbookScratch, TrainFromScratch, compiled_scratch, num_steps)


def draw_tasks(count: int, support: int) -> list[list[torch.Tensor]]:
    np.random.seed(SEED)
    return [task for _, task in SineGenerator(k=support, k_test=QUERY_POINTS).generator(count)]


def resident_mb() -> tuple[float, float]:
    """(current, peak) resident set in MB, from /proc/self/status (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak resident set (VmHWM) to the current one


def time_contenders(contenders: dict, tasks: list, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median microseconds per episode of each contender, and the seconds its first episode took (compiling)."""
    first_episode, samples = {}, {name: [] for name in contenders}
    for name, (train, _) in contenders.items():
        start = time.perf_counter()
        train(tasks[0])
        first_episode[name] = time.perf_counter() - start
        for task in tasks[1:WARMUP]:
            train(task)
    cursor = WARMUP
    names = list(contenders)
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        block = tasks[cursor : cursor + BLOCK]
        cursor += BLOCK
        for name in order:
            train = contenders[name][0]
            start = time.perf_counter()
            for task in block:
                train(task)
            samples[name].append((time.perf_counter() - start) / len(block) * 1e6)
    return {name: statistics.median(times) for name, times in samples.items()}, first_episode


def deviations(make_contenders: Callable, tasks: list) -> dict[str, tuple[float, float]]:
    """Each fresh contender over `tasks`: (max relative deviation of its history from the textbook's, peak MB)."""
    histories, peaks = {}, {}
    for name, (train, learner) in make_contenders().items():
        reset_peak()
        for task in tasks:
            train(task)
        histories[name], peaks[name] = np.array(learner.history), resident_mb()[1]
    reference = histories["textbook loop"]
    return {name: (float(np.max(np.abs(h - reference) / reference)), peaks[name]) for name, h in histories.items()}


def one_step_deviation(num_steps: int, tasks: list) -> float:
    """Max relative difference of the compiled meta-update from `MAML.train`'s, both started from the same state.

    Before every episode the compiled learner is given the readable learner's weights and
    Adam state, so this measures one update's rounding, free of any drift between runs.
    """
    torch.manual_seed(SEED)
    readable = MAML(num_steps)
    fast, worst = compiled_maml(num_steps), 0.0
    readable.train(tasks[0])  # from here on, Adam has a state to copy
    for task in tasks[1:]:
        state = [readable.meta_optimizer.state[weight] for weight in readable.initialization]
        fast.learners.state = LearnerState(
            named([weight.detach()[None].clone() for weight in readable.initialization]),
            *(named([adam[key][None].clone() for adam in state]) for key in ("exp_avg", "exp_avg_sq")),
            step=torch.tensor([state[0]["step"].item()]),
        )
        readable.train(task)
        fast.train(task)
        loss_error = abs(fast.history[-1] - readable.history[-1]) / readable.history[-1]
        weight_errors = [
            ((mine - theirs).abs().max() / theirs.abs().max()).item()
            for mine, theirs in zip(fast.learners.initialization(0), readable.initialization)
        ]
        worst = max(worst, loss_error, *weight_errors)
    return worst


def yardstick(make_contenders: Callable, tasks: list) -> float:
    """How far the textbook loop drifts from itself when only the thread count (so the rounding) changes."""
    histories = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        train, learner = make_contenders()["textbook loop"]
        for task in tasks:
            train(task)
        histories.append(np.array(learner.history))
    return float(np.max(np.abs(histories[1] - histories[0]) / histories[0]))


def print_table(title: str, timings: dict, firsts: dict, drift: dict | None) -> None:
    baseline = timings["textbook loop"]
    print(f"\n{title}")
    header = f"{'contender':34} {'us/episode':>11} {'speed-up':>9} {'1st episode':>12}"
    if drift:
        header += f" {'max rel. deviation':>19} {'peak RSS':>9}"
    print(header)
    for name, micros in timings.items():
        row = f"{name:34} {micros:11.0f} {baseline / micros:8.2f}x {firsts[name]:11.2f}s"
        if drift:
            row += f" {drift[name][0]:19.1e} {drift[name][1]:7.0f}MB"
        print(row)


def memory_run() -> None:
    """Resident set along MEMORY_EPISODES episodes (S=1, K=10): shipped train and compiled path."""
    torch.set_num_threads(1)
    tasks = draw_tasks(MEMORY_EVERY, 10)
    print(f"\nresident set (MB) along {MEMORY_EPISODES:,} episodes, S=1, K=10, 1 thread (tasks reused cyclically)")
    for name, (train, _) in maml_contenders(1).items():
        if name == "textbook loop":
            continue
        readings = []
        for episode in range(1, MEMORY_EPISODES + 1):
            train(tasks[episode % MEMORY_EVERY])
            if episode % MEMORY_EVERY == 0:
                readings.append(f"{resident_mb()[0]:.0f}")
        print(f"{name:34} every {MEMORY_EVERY:,} episodes: {' '.join(readings)}")


BATCHED_SETTINGS = ((10, 1), (1, 25))  # (learners N, tasks per update B), S=1, K=10
BATCHED_UPDATES = 300


def finished(device: torch.device) -> float:
    """`time.perf_counter()` once everything queued on `device` has run (a GPU runs behind the Python that queues)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def batched_throughput(repeats: int, device: torch.device) -> None:
    """Tasks per second: the compiled batched learner (on `device`) against MAML.train, one learner after another."""
    torch.set_num_threads(1)
    print(f"\nbatched learner on {device}, S=1, K=10, 1 thread: tasks per second, medians of {repeats} blocks")
    print(f"{'setting':22} {'MAML.train':>11} {'batched':>9} {'speed-up':>9} {'compile':>8}")
    for num_learners, per_update in BATCHED_SETTINGS:
        seeds = lane_seeds(num_learners)
        batched = BatchedMAML(initializations_from_seeds(seeds), Algorithm(1), compile=True, device=device)
        streams = replace(assignment_protocol(10), tasks_per_update=per_update).streams(seeds, device=device)
        batches = [streams.next_batch() for _ in range(BATCHED_UPDATES)]
        start = finished(device)
        batched.train(batches[0])
        compile_seconds = finished(device) - start
        readable = [MAML(1) for _ in range(num_learners)]
        readable_tasks = [[part[lane, b].cpu() for part in tasks] for tasks in batches for lane in range(num_learners)
                          for b in range(per_update)]  # fmt: skip
        rates = {"MAML.train": [], "batched": []}
        for _ in range(repeats):
            start = time.perf_counter()
            for index, task in enumerate(readable_tasks):
                readable[index % num_learners].train(task)
            rates["MAML.train"].append(len(readable_tasks) / (time.perf_counter() - start))
            start = finished(device)
            batched.train_many(batches)
            rates["batched"].append(len(readable_tasks) / (finished(device) - start))
        readable_rate, batched_rate = (statistics.median(rates[name]) for name in ("MAML.train", "batched"))
        setting = f"N={num_learners}, B={per_update}"
        speed_up = batched_rate / readable_rate
        print(f"{setting:22} {readable_rate:11.0f} {batched_rate:9.0f} {speed_up:8.1f}x {compile_seconds:7.1f}s")


def batched_memory_run(device: torch.device) -> None:
    """Resident set along MEMORY_EPISODES updates of the N=10 compiled batched learner (tasks reused cyclically)."""
    torch.set_num_threads(1)
    seeds = lane_seeds(10)
    batched = BatchedMAML(initializations_from_seeds(seeds), Algorithm(1), compile=True, device=device)
    streams = assignment_protocol(10).streams(seeds, device=device)
    batches = [streams.next_batch() for _ in range(500)]
    readings = []
    for update in range(CHUNK, MEMORY_EPISODES + 1, CHUNK):
        batched.train_many([batches[row % len(batches)] for row in range(update - CHUNK, update)])
        if update % MEMORY_EVERY == 0:
            readings.append(f"{resident_mb()[0]:.0f}")
    every = f"every {MEMORY_EVERY:,} of {MEMORY_EPISODES:,} updates"
    print(f"batched N=10, resident set (MB) {every}: {' '.join(readings)}")


PEER_SETTINGS = ((1, 1, 10), (1, 5, 5), (10, 1, 10))  # (learners N, S, K), one task per update
PEER_BLOCK = 500  # updates per block: one call of the peer's scan


def peer_comparison(repeats: int) -> None:
    """Per learner-update time of the JAX peer (`jax_peer.py`: jit, vmap, lax.scan over a block of pre-drawn
    tasks) against the project's compiled lockstep learner, in alternating blocks on the same tasks from the
    same initializations; the losses of their first block compared, and each one's compile time."""
    try:
        from jax_peer import Peer
    except ImportError:
        print("\nthe JAX peer: jax is not installed (pip install jax), so it is not measured")
        return
    torch.set_num_threads(1)
    print(f"\nagainst the JAX peer, 1 thread, {PEER_BLOCK} updates a block, medians of {repeats} blocks")
    print(f"{'setting':20} {'peer us':>8} {'project us':>11} {'ratio':>7} {'compile':>14} {'1st block dev.':>15}")
    for num_learners, num_steps, k in PEER_SETTINGS:
        seeds = lane_seeds(num_learners)
        initializations = initializations_from_seeds(seeds)
        streams = assignment_protocol(k).streams(seeds)
        batches = [streams.next_batch() for _ in range(PEER_BLOCK)]
        block = [torch.stack([batch[part][:, 0] for batch in batches]).numpy() for part in range(4)]  # (T, N, n, 1)
        project = BatchedMAML(initializations, Algorithm(num_steps), compile=True)
        peer = Peer([[w.detach().numpy() for w in weights] for weights in initializations], num_steps)
        seconds = {"peer": [], "project": []}
        compile_seconds = {}
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            peer_losses = peer.train(block)
            seconds["peer"].append(time.perf_counter() - start)
            start = time.perf_counter()
            project.train_many(batches)  # as a LockstepRun trains: CHUNK updates per call of compiled code
            seconds["project"].append(time.perf_counter() - start)
            if repeat == 0:  # compiling is in the first block: reported apart, with the deviation
                deviation = np.max(np.abs(project.histories[:, :20].T - peer_losses[:20]) / peer_losses[:20])
                compile_seconds = {name: times.pop() for name, times in seconds.items()}
        micros = {name: statistics.median(times) / (PEER_BLOCK * num_learners) * 1e6 for name, times in seconds.items()}
        setting = f"N={num_learners}, S={num_steps}, K={k}"
        compiles = f"{compile_seconds['peer']:.1f}s / {compile_seconds['project']:.1f}s"
        ratio = micros["project"] / micros["peer"]
        times = f"{micros['peer']:8.0f} {micros['project']:11.0f} {ratio:6.1f}x"
        print(f"{setting:20} {times} {compiles:>14} {deviation:15.1e}")
    print("(ratio: project / peer; compile: peer / project, each one's first block; 1st block dev.: the largest")
    print(" relative difference of their first 20 query losses, equal up to rounding before the runs drift apart)")


FAMILY_LANES, FAMILY_K, FAMILY_BLOCK = 5, 10, 100  # the family study's seeds, its K = 10 models, updates a block


def family_speed(repeats: int, device: torch.device) -> None:
    """Each learner of the MAML family as the family study trains it (compiled lockstep lanes, one per seed, 25 tasks
    of K support and K query points per update) on `device`: time per update, against MAML's in the same rotation of
    blocks, and its compile time (the first update)."""
    torch.set_num_threads(1)
    seeds = lane_seeds(FAMILY_LANES)
    streams = paper_protocol(FAMILY_K).streams(seeds, device=device)
    batches = [streams.next_batch() for _ in range(FAMILY_BLOCK)]
    learners, compile_seconds = {}, {}
    for name in FAMILY:
        learner = LEARNERS[name]
        initializations = initializations_from_seeds(seeds, inputs=learner.network_inputs)
        learners[name] = BatchedMAML(initializations, learner.algorithm, compile=True, updates=70_000, device=device)
        start = finished(device)
        learners[name].train(batches[0])
        compile_seconds[name] = finished(device) - start
    seconds = {name: [] for name in FAMILY}
    for repeat in range(repeats):
        for name in FAMILY[repeat % len(FAMILY) :] + FAMILY[: repeat % len(FAMILY)]:  # a rotating order
            start = finished(device)
            learners[name].train_many(batches)
            seconds[name].append(finished(device) - start)
    print(
        f"\nthe MAML family on {device}, {FAMILY_LANES} lanes, 25 tasks of K={FAMILY_K} + {FAMILY_K} points per update,"
    )
    print(f"1 thread, compiled; medians of {repeats} blocks of {FAMILY_BLOCK} updates")
    print(f"{'learner':16} {'ms/update':>10} {'vs MAML':>8} {'compile':>8}")
    per_update = {name: statistics.median(times) / FAMILY_BLOCK * 1e3 for name, times in seconds.items()}
    for name in FAMILY:
        ratio = per_update[name] / per_update["maml"]
        print(f"{name:16} {per_update[name]:10.2f} {ratio:7.2f}x {compile_seconds[name]:7.1f}s")


LANES_DRAWN = 1000  # seeds whose tasks and initializations are drawn for `--lanes`; more lanes take them in turn
LANES_BATCHES, LANES_BLOCK = 20, 100  # distinct batches of tasks, taken in turn; updates per timed block


def lanes_throughput(lanes: list[int], repeats: int, device: torch.device) -> None:
    """Learner-updates per second of N compiled MAML learners (S = 1, K = 10, one task of the assignment's stream per
    update) on `device`, for each N of `lanes`; medians of `repeats` blocks, and the compile time (the first update)."""
    torch.set_num_threads(1)
    print(f"\nlanes on {device}: N compiled MAML learners alone, S=1, K=10, one task per update, medians of {repeats}")
    print(f"{'N':>8} {'updates/s':>11} {'learner-updates/s':>18} {'compile':>8}")
    drawn = lane_seeds(min(max(lanes), LANES_DRAWN))
    initializations = initializations_from_seeds(drawn)
    streams = assignment_protocol(10).streams(drawn, device=device)
    pool = [streams.next_batch() for _ in range(LANES_BATCHES)]
    for count in lanes:
        taken = [lane % len(drawn) for lane in range(count)]
        batches = [[part[taken] for part in batch] for batch in pool]
        learners = BatchedMAML([initializations[lane] for lane in taken], Algorithm(1), compile=True, device=device)
        start = finished(device)
        learners.train(batches[0])
        compile_seconds = finished(device) - start
        seconds = []
        for _ in range(repeats):
            start = finished(device)
            learners.train_many([batches[update % LANES_BATCHES] for update in range(LANES_BLOCK)])
            seconds.append(finished(device) - start)
        per_second = LANES_BLOCK / statistics.median(seconds)
        print(f"{count:8d} {per_second:11.0f} {per_second * count:18.0f} {compile_seconds:7.1f}s")


def main(argv: Sequence[str]) -> None:
    """Run the benchmarks the command line `argv` asks for (all of them, by default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and no 40,000-episode memory run")
    parser.add_argument("--batched", action="store_true", help="only the batched learner against MAML.train")
    parser.add_argument("--peer", action="store_true", help="only the compiled learners against the JAX peer")
    parser.add_argument("--family", action="store_true", help="only the MAML family's learners, time per update")
    parser.add_argument("--lanes", type=whole_number(1), nargs="+", help="only N compiled learners, for each N given")
    add_device_option(parser)
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else REPEATS
    if args.lanes:
        lanes_throughput(args.lanes, repeats, args.device)
        return
    if args.family:
        family_speed(repeats, args.device)
        return
    if args.batched:
        batched_throughput(repeats, args.device)
        batched_memory_run(args.device)
        return
    if args.peer:
        peer_comparison(repeats)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default; medians of {repeats} blocks")
    settings = [(f"MAML S={s}, K={k}", lambda s=s: maml_contenders(s), k, s) for s, k in MAML_SETTINGS]
    scratch_title = f"from scratch, {SCRATCH_STEPS} Adam steps, K={SCRATCH_K}"
    settings.append((scratch_title, lambda: scratch_contenders(SCRATCH_STEPS), SCRATCH_K, None))
    for title, make_contenders, support, maml_steps in settings:
        tasks = draw_tasks(WARMUP + BLOCK * repeats, support)
        deviation_tasks = draw_tasks(DEVIATION_EPISODES, support)
        for threads in THREADS:
            torch.set_num_threads(threads)
            timings, firsts = time_contenders(make_contenders(), tasks, repeats)
            drift = deviations(make_contenders, deviation_tasks) if threads == 1 else None
            print_table(f"{title}, {threads} thread{'s' * (threads > 1)}", timings, firsts, drift)
        print(f"yardstick, the textbook loop with 2 threads vs 1: {yardstick(make_contenders, deviation_tasks):.1e}")
        if maml_steps is not None:
            torch.set_num_threads(1)
            error = one_step_deviation(maml_steps, deviation_tasks)
            print(f"one update from the same state, compiled vs MAML.train, max rel. deviation: {error:.1e}")
    batched_throughput(repeats, args.device)
    peer_comparison(repeats)
    if not args.quick:
        memory_run()
        batched_memory_run(args.device)


if __name__ == "__main__":
    run_command(main, sys.argv[1:])
