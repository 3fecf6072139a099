"""maml_sine.checkpoints: an exact round trip, a record that must match field by field, clear refusals of bad
files, damaged ones (digests, values) among them, saves that never destroy the old file, one writer per
checkpoint folder, against other processes, and learners stopped part way that resume bitwise equal to a run
that was never stopped."""

import io
import os
import re
import struct
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import held_by_another_process
from maml_sine import checkpoints, streams, training
from maml_sine.batched import BatchedMAML, initializations_from_seeds
from maml_sine.checkpoints import (
    LOCK_FILE,
    VERSION,
    CheckpointError,
    FolderInUseError,
    Progress,
    data_digest,
    digest,
    load,
    load_networks,
    load_progress,
    one_writer,
    save,
    save_networks,
)
from maml_sine.core import NETWORK, named, network_shapes
from maml_sine.learners import ASSIGNMENT, LEARNERS, paper_protocol
from maml_sine.training import lane_seeds, meta_trained, trained_or_loaded
from utils import BaseLearner

PROTOCOL = paper_protocol(5, updates=3)


def record_of(name="maml", protocol=None, seeds=None):
    """The record of learners trained under `protocol` (default: the assignment's, 4 updates, as `trained_learners`)."""
    protocol = protocol or replace(ASSIGNMENT, updates=4)
    seeds = seeds or lane_seeds(3)
    return {"learner": LEARNERS[name].training(), "protocol": protocol.record(), "seeds": [list(s) for s in seeds]}


def trained_learners(episodes=4, name="maml"):
    seeds = lane_seeds(3)
    learner = LEARNERS[name]
    learners = BatchedMAML(initializations_from_seeds(seeds), learner.algorithm)
    streams = ASSIGNMENT.streams(seeds)
    for _ in range(episodes):
        learners.train(streams.next_batch())
    return learners, streams


def assert_same_state(first, second):
    for name in ("params", "exp_avgs", "exp_avg_sqs"):
        mine, theirs = getattr(first.state, name), getattr(second.state, name)
        assert list(mine) == list(theirs)
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)
    assert torch.equal(first.state.step, second.state.step)


@pytest.mark.parametrize("name", ["maml", "first_order_maml", "pretrained"])
def test_round_trip_rebuilds_the_learners_exactly_and_they_train_on_alike(tmp_path, name):
    learners, streams = trained_learners(name=name)
    save(learners, record_of(name), tmp_path / "learners.pt")
    loaded = load(tmp_path / "learners.pt", record_of(name))
    assert loaded.algorithm == learners.algorithm
    assert_same_state(learners, loaded)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    np.testing.assert_array_equal(loaded.gradient_norm_histories, learners.gradient_norm_histories)
    tasks = streams.next_batch()
    learners.train(tasks)
    loaded.train(tasks)
    np.testing.assert_array_equal(loaded.histories, learners.histories)
    assert_same_state(learners, loaded)


@pytest.mark.parametrize(
    "expected, differing",
    [
        (record_of("first_order_maml"), "learner"),
        (record_of(protocol=paper_protocol(10)), "protocol"),
        (record_of(seeds=lane_seeds(3, first=1)), "seeds"),
    ],
    ids=["another-learner", "another-protocol", "other-seeds"],
)
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path, expected, differing):
    learners, _ = trained_learners()
    save(learners, record_of(), tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=rf"learners\.pt.*holds {{'{differing}': .*expected {{'{differing}'"):
        load(tmp_path / "learners.pt", expected)


def test_an_oracle_round_trips_and_is_not_taken_for_the_pretrained_network(tmp_path):
    """The paper protocol's oracle has 3 inputs: its checkpoint loads as it is, and is refused as another learner."""
    seeds = lane_seeds(2)
    path = tmp_path / "oracle.pt"
    oracle, source = trained_or_loaded("oracle", LEARNERS["oracle"], PROTOCOL, seeds, path)
    assert source == "trained" and oracle.weights[0].shape == (2, 40, 3)
    loaded, source = trained_or_loaded("oracle", LEARNERS["oracle"], PROTOCOL, seeds, path)
    assert source == "checkpoint"
    assert_same_state(oracle, loaded)
    with pytest.raises(CheckpointError, match=r"oracle\.pt.*holds {'learner': .*'inputs': 3.*expected .*'inputs': 1"):
        trained_or_loaded("pretrained", LEARNERS["pretrained"], PROTOCOL, seeds, path)


@pytest.mark.parametrize("inputs", [1, 3, 6])
def test_a_checkpoint_names_the_network_tensors_as_it_always_has_in_the_shapes_base_learner_draws(inputs):
    """The names files on disk hold the network under, and the shapes they are checked against, both derived from
    utils' LAYER_SIZES (`core.network_shapes`): those of BaseLearner's draws, for the sine's x, the oracle's 3
    inputs and CAVIA's 6."""
    assert NETWORK == ("w1", "b1", "w2", "b2", "w3", "b3")
    drawn = named(BaseLearner.random_initial_weights(inputs=inputs))
    assert list(network_shapes(inputs).items()) == [(name, tuple(weight.shape)) for name, weight in drawn.items()]


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "learners.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"learners\.pt.*cannot be read as a torch checkpoint.*truncated"):
        load(path, record_of())


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "learners.pt"
    save(trained_learners()[0], record_of(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint"):
        load(path, record_of())


@pytest.mark.parametrize(
    "content, message",
    [
        ({"weights": []}, "not a maml-sine-checkpoint file .it holds a dict"),
        (torch.zeros(3), "not a maml-sine-checkpoint file .it holds a Tensor"),
        ({"format": "maml-sine-checkpoint", "version": 2}, f"format version 2; this code reads version {VERSION}"),
        ({"format": "maml-sine-checkpoint", "version": VERSION, "record": {}}, "missing field.s. params, exp_avgs"),
    ],
    ids=["plain-dict", "tensor", "version-2-without-digests", "fields"],
)
def test_file_of_another_kind_is_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path / "learners.pt", record_of())


def rewritten(tmp_path, change, digests="recomputed"):
    """A checkpoint of three learners, loaded as plain data, changed by `change`, and saved again with the digests
    of the tensors it now holds ("recomputed", as a writer that made these values would save them) or with those
    it was written with ("kept", as damage on the disk leaves them)."""
    save(trained_learners()[0], record_of(), tmp_path / "learners.pt")
    content = torch.load(tmp_path / "learners.pt", weights_only=True)
    change(content)
    if digests == "recomputed":
        content["digests"] = digests_of(content)
    torch.save(content, tmp_path / "learners.pt")
    return tmp_path / "learners.pt"


def digests_of(content):
    """The digest of every tensor and field of plain data of a checkpoint's content, named as the format names
    them: "params[w1]", "step", "streams"."""
    named = {}
    for field, value in content.items():
        if isinstance(value, torch.Tensor):
            named[field] = value
        elif isinstance(value, list):
            named.update({f"{field}[{i}]": t for i, t in enumerate(value) if isinstance(t, torch.Tensor)})
        elif field != "digests" and isinstance(value, dict):
            named.update({f"{field}[{key}]": t for key, t in value.items() if isinstance(t, torch.Tensor)})
    return {**{name: digest(tensor) for name, tensor in named.items()},
            **{field: data_digest(content[field]) for field in checkpoints.PROGRESS}}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["params"].pop("b3"), r"its params must hold the tensors \['w1', 'b1', 'w2', 'b2', 'w3', 'b3'\]"),
        (lambda c: c.update(params=[]), r"its params must hold the tensors"),
        (
            lambda c: c["exp_avgs"].__setitem__("w2", torch.zeros(3, 40, 30)),
            r"its exp_avgs\[w2\] is not a \(3, 40, 40\)",
        ),
        (lambda c: c["params"].__setitem__("w1", torch.zeros(3, 40, 1).double()), r"params\[w1\] is not .*float32"),
        (lambda c: c.update(step=torch.zeros(2)), r"its step is not a float tensor of shape \(3,\)"),
        (lambda c: c.update(losses=torch.zeros(5)), r"its losses is not a float tensor of shape \(3, None\)"),
        (
            lambda c: c.update(losses=c["losses"][:, :1]),
            r"holds 4 of 4 updates, 1 losses, 4 gradient norms, Adam steps \[4.0, 4.0, 4.0\]: they do not agree",
        ),
        (lambda c: c.update(step=torch.full((3,), 7.0)), r"holds 4 of 4 updates, 4 losses, .*Adam steps \[7.0"),
        (lambda c: c.update(updates=5), r"holds 5 of 4 updates, 4 losses"),
        (lambda c: c.update(updates=4.0), r"holds 4.0 of 4 updates"),
        (lambda c: c.update(record=[1, 2]), "its record is a list, not a dict"),
    ],
    ids=[
        "weight-missing",
        "no-params",
        "moment-shape",
        "dtype",
        "steps",
        "losses",
        "cut-losses",
        "steps-ahead",
        "more-updates-than-the-protocol",
        "updates-not-an-int",
        "record",
    ],
)
def test_a_misshapen_checkpoint_is_refused(tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        load(rewritten(tmp_path, change), record_of())


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "absent.pt", record_of())


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "learners.pt"
    two_updates = record_of(protocol=replace(ASSIGNMENT, updates=2))
    save(trained_learners(episodes=2)[0], two_updates, path)
    previous = path.read_bytes()

    def save_half_then_fail(content, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(trained_learners(episodes=4)[0], record_of(), path)
    assert path.read_bytes() == previous
    assert list(tmp_path.iterdir()) == [path], "no temporary file may be left behind"
    monkeypatch.undo()
    assert load(path, two_updates).histories.shape == (3, 2)


def stopped_learners():
    """`trained_learners`' three learners, stopping the diverged, whose learner 2 overflows at update 2 of 4."""
    seeds = lane_seeds(3)
    learners = BatchedMAML(initializations_from_seeds(seeds), LEARNERS["maml"].algorithm, stop_diverged=True)
    streams = ASSIGNMENT.streams(seeds)
    for update in range(4):
        tasks = streams.next_batch()
        if update == 2:
            tasks[1][2] *= 1e30  # learner 2's support and query y: its loss overflows
            tasks[3][2] *= 1e30
        learners.train(tasks)
    return learners


def test_a_stopped_learner_is_saved_as_it_stopped_and_loads_stopped(tmp_path):
    learners = stopped_learners()
    assert learners.diverged_at == {2: 2}
    save(learners, record_of(), tmp_path / "learners.pt")
    loaded = load(tmp_path / "learners.pt", record_of())
    assert loaded.diverged_at == {2: 2} and loaded.active.tolist() == [True, True, False] and loaded.stop_diverged
    assert_same_state(loaded, learners)
    assert loaded.state.step.tolist() == [4.0, 4.0, 2.0]
    np.testing.assert_array_equal(loaded.histories, learners.histories)  # NaN where learner 2 stopped
    assert np.isnan(loaded.histories[2, 2:]).all() and np.isfinite(loaded.histories[2, :2]).all()


def test_learners_that_all_stopped_are_saved_and_loaded_and_take_no_more_work(tmp_path):
    """Every lane stopped (one seed that diverged, say): the checkpoint loads, and further updates only record NaN."""
    seeds = lane_seeds(1)
    learners = BatchedMAML(initializations_from_seeds(seeds), LEARNERS["maml"].algorithm, stop_diverged=True)
    streams = ASSIGNMENT.streams(seeds)
    learners.train(streams.next_batch())
    tasks = streams.next_batch()
    tasks[1] *= 1e30
    tasks[3] *= 1e30
    learners.train(tasks)
    learners.train(streams.next_batch())
    protocol = replace(ASSIGNMENT, updates=3)
    save(learners, record_of(protocol=protocol, seeds=seeds), tmp_path / "learners.pt")
    loaded = load(tmp_path / "learners.pt", record_of(protocol=protocol, seeds=seeds))
    assert loaded.diverged_at == {0: 1} and not loaded.active.any() and loaded.state.step.tolist() == [1.0]
    assert np.isnan(loaded.histories[0, 1:]).all() and np.isfinite(loaded.histories[0, 0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["losses"][2, 3].fill_(1.0), r"learner 2 stopped at update 2 but records values after it"),
        (lambda c: c["losses"][0, 1].fill_(float("nan")), r"its losses holds nan at \(0, 1\): learner 0 took 4"),
        (lambda c: c["step"][2].fill_(2.5), r"learner 2 took 2.5 updates: a count of updates is whole"),
    ],
    ids=["values-after-the-stop", "nan-before-the-stop", "part-of-an-update"],
)
def test_records_that_are_not_a_stop_are_refused(tmp_path, change, message):
    """NaN is allowed in a checkpoint's records only as a stopped learner leaves it: from its stop on."""
    save(stopped_learners(), record_of(), tmp_path / "learners.pt")
    content = torch.load(tmp_path / "learners.pt", weights_only=True)
    change(content)
    content["digests"] = digests_of(content)
    torch.save(content, tmp_path / "learners.pt")
    with pytest.raises(CheckpointError, match=message):
        load(tmp_path / "learners.pt", record_of())


# --- Checkpoints that prove their content -------------------------------------------------------------------------


def test_the_digest_is_of_the_dtype_and_shape_as_well_as_the_bytes():
    tensor = torch.randn(4, 6)
    assert digest(tensor) == digest(tensor.clone()) == digest(tensor.T.contiguous().T), "values, not storage"
    assert digest(tensor) != digest(tensor.view(torch.int32)), "the same bytes and shape, another dtype"
    assert digest(tensor) != digest(tensor.reshape(6, 4)), "the same bytes and dtype, another shape"
    changed = tensor.clone()
    changed[3, 5] = torch.nextafter(changed[3, 5], torch.tensor(np.inf))
    assert digest(tensor) != digest(changed), "the last bit of the last value"


def test_a_bit_flipped_on_the_disk_is_refused(tmp_path):
    """The exponent's top bit of the first float of params[w1], flipped in the file's bytes: torch reads the
    file (a plausible, finite 2e38), the digest does not."""
    path = tmp_path / "learners.pt"
    learners = trained_learners()[0]
    save(learners, record_of(), path)
    content = bytearray(path.read_bytes())
    first = struct.pack("<f", learners.weights[0][0, 0, 0].item())
    assert content.count(first) == 1
    content[content.index(first) + 3] ^= 0x40
    path.write_bytes(content)
    flipped = torch.load(path, weights_only=True)["params"]["w1"][0, 0, 0].item()
    assert 1e38 < flipped < 3.4e38, flipped
    with pytest.raises(CheckpointError, match=r"learners\.pt'.*its params\[w1\] does not match its SHA-256 digest"):
        load(path, record_of())


def set_at(field, index, where, value):
    """A change that sets one value of the tensor content[field] (or content[field][index], if not None)."""

    def change(content):
        tensor = content[field] if index is None else content[field][index]
        tensor[where] = value

    return change


@pytest.mark.parametrize(
    "change, digests, message",
    [
        (set_at("params", "w1", (0, 0, 0), 1.98e38), "kept", r"its params\[w1\] does not match its SHA-256 digest"),
        (
            set_at("params", "w2", (1, 3, 5), np.nan),
            "recomputed",
            r"its params\[w2\] holds nan at \(1, 3, 5\): .*finite",
        ),
        (set_at("exp_avgs", "w3", (2, 0, 7), np.inf), "recomputed", r"its exp_avgs\[w3\] holds inf at \(2, 0, 7\)"),
        (set_at("exp_avg_sqs", "b2", (0, 9), -np.inf), "recomputed", r"its exp_avg_sqs\[b2\] holds -inf at \(0, 9\)"),
        (
            set_at("exp_avg_sqs", "w2", (0, 7, 2), -1e-8),
            "recomputed",
            r"its exp_avg_sqs\[w2\] holds -1e-08 at \(0, 7, 2\): Adam's second moments .* cannot be negative",
        ),
        (set_at("losses", None, (1, 2), np.nan), "recomputed", r"its losses holds nan at \(1, 2\)"),
        (set_at("losses", None, (2, 3), -0.5), "recomputed", r"its losses holds -0.5 at \(2, 3\): losses .* negative"),
        (set_at("step", None, 0, np.nan), "recomputed", r"its step holds nan at \(0,\)"),
        (
            lambda c: c["digests"].update({"exp_avgs[b2]": "0" * 64}),
            "kept",
            r"its exp_avgs\[b2\] does not match its SHA-256 digest",
        ),
        (lambda c: c["digests"].pop("step"), "kept", r"has no digest of its step"),
        (lambda c: c.update(digests=[]), "kept", r"its digests are a list, not a dict"),
        (lambda c: c.update(losses=c["losses"].float()), "kept", r"its losses does not match its SHA-256 digest"),
        (lambda c: c.update(losses=c["losses"].flip(1)), "kept", r"its losses does not match its SHA-256 digest"),
    ],
    ids=[
        "first-float-1.98e38",
        "nan-weight",
        "infinite-first-moment",
        "infinite-second-moment",
        "negative-second-moment",
        "nan-loss",
        "negative-loss",
        "nan-step",
        "digest-mismatch",
        "digest-missing",
        "digests-not-a-dict",
        "other-dtype-same-shape",
        "values-moved",
    ],
)
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_tensor(tmp_path, change, digests, message):
    path = rewritten(tmp_path, change, digests)
    with pytest.raises(CheckpointError, match=rf"^checkpoint '{re.escape(str(path))}': {message}") as refused:
        load(path, record_of())
    assert "\n" not in str(refused.value)


def test_a_score_of_saved_networks_read_as_another_dtype_is_refused(tmp_path):
    """The scores' very bytes, read as float16 (twice as many columns, which no check of shapes can refuse):
    only the digest's dtype and shape tell them from the scores written."""
    record = {"learner": LEARNERS["multitask"].training(), "seeds": lane_seeds(2)}
    save_networks(initializations_from_seeds(lane_seeds(2)), torch.rand(2, 3), record, tmp_path / "average.pt")
    content = torch.load(tmp_path / "average.pt", weights_only=True)
    content["losses"] = content["losses"].view(torch.float16)
    torch.save(content, tmp_path / "average.pt")
    with pytest.raises(CheckpointError, match=r"average\.pt': its losses does not match its SHA-256 digest"):
        load_networks(tmp_path / "average.pt", record)


@pytest.mark.parametrize(
    "scores, message",
    [
        (torch.tensor([[0.1, 0.2, np.nan], [0.3, 0.4, 0.5]]), r"its losses holds nan at \(0, 2\)"),
        (torch.tensor([[0.1, 0.2, 0.3], [0.3, -0.4, 0.5]]), r"its losses holds -0.4 at \(1, 1\)"),
    ],
    ids=["nan", "negative"],
)
def test_values_that_loading_would_refuse_are_never_written(tmp_path, scores, message):
    """A regressor's final MSE is finite and non-negative: a save that breaks the rule fails, and writes nothing."""
    record = {"learner": LEARNERS["multitask"].training(), "seeds": lane_seeds(2)}
    with pytest.raises(CheckpointError, match=rf"average\.pt': {message}"):
        save_networks(initializations_from_seeds(lane_seeds(2)), scores, record, tmp_path / "average.pt")
    assert not any(tmp_path.iterdir())


# --- One writer per checkpoint folder -----------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_process_that_holds_the_folder(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(FolderInUseError) as refused, one_writer(tmp_path):
            pytest.fail("the block must not run")
        message = str(refused.value)
        assert message.startswith(f"checkpoint '{tmp_path}': in use by process {holder.pid} (")
        assert " -c " in message and "one_writer" in message, "the holder's command"
        assert message.endswith("run again once it has finished, or with --wait-for-lock")
        assert "\n" not in message
        holding = (tmp_path / LOCK_FILE).read_text()
        assert holding.startswith(f"process {holder.pid} ("), "the refused run leaves the holder's lock as it was"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "let go\n"
        assert not (tmp_path / LOCK_FILE).exists(), "a holder that lets go removes its lock file"
        with one_writer(tmp_path):
            assert (tmp_path / LOCK_FILE).read_text().startswith(f"process {os.getpid()} (")


def test_a_waiting_writer_goes_on_once_the_holder_lets_go(tmp_path, capsys):
    with held_by_another_process(tmp_path) as holder:
        told = []

        def let_go():
            told.append(time.monotonic())
            holder.stdin.write("\n")
            holder.stdin.flush()

        timer = threading.Timer(1.0, let_go)
        timer.start()
        try:
            with one_writer(tmp_path, wait=True):
                held = time.monotonic()
                assert (tmp_path / LOCK_FILE).read_text().startswith(f"process {os.getpid()} (")
        finally:
            timer.cancel()
        assert told and held > told[0], "the lock was taken before the holder let go"
        assert holder.stdout.readline() == "let go\n" and holder.poll() is None, "the holder lets go, and lives on"
    waited = capsys.readouterr().err
    assert waited.startswith(f"waiting for process {holder.pid} (")
    assert waited.endswith(f"to finish with checkpoint folder '{tmp_path}'\n") and waited.count("\n") == 1
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        holder.kill()
        holder.wait()
        assert (tmp_path / LOCK_FILE).read_text().startswith(f"process {holder.pid} ("), "its file stays behind"
        with one_writer(tmp_path):  # without waiting: a stale lock would be refused, not waited for
            assert (tmp_path / LOCK_FILE).read_text().startswith(f"process {os.getpid()} (")
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_writer_that_waited_on_a_removed_lock_file_locks_the_new_one(tmp_path, capsys):
    """A waiting run gets the lock of the file its holder removed as it let go: it must lock the file now in
    the folder, or a third run would take that one and two would write at once. (flock locks an open file,
    so runs in one process, on threads, exclude each other as runs in two do.)"""
    holds, done = threading.Event(), threading.Event()

    def second_writer():
        with one_writer(tmp_path, wait=True):
            holds.set()
            done.wait(timeout=60)

    with one_writer(tmp_path):
        thread = threading.Thread(target=second_writer)
        thread.start()
        deadline, said = time.monotonic() + 60, ""
        while "waiting for" not in said and time.monotonic() < deadline:
            time.sleep(0.01)
            said += capsys.readouterr().err
        assert "waiting for" in said, "the second writer never waited on the first one's file"
    try:
        assert holds.wait(timeout=60), "the waiting writer never got the lock"
        with pytest.raises(FolderInUseError, match=rf"in use by process {os.getpid()} "), one_writer(tmp_path):
            pytest.fail("two writers at once")
    finally:
        done.set()
        thread.join()
    assert not (tmp_path / LOCK_FILE).exists()


# --- Learners stopped part way, resumed ---------------------------------------------------------------------------


def stopped_by_ctrl_c_at(monkeypatch, points):
    """Ctrl-C, as the handler of `interrupts` gives it to the training loop, after each update of `points` (counted
    over every run of the test: each resumed run goes on from the update the last one stopped after), the loop
    drawing and taking one update at a time (its chunks made 1 update long)."""
    monkeypatch.setattr(training, "CHUNK", 1)
    calls = []

    def stop_requested():
        calls.append(None)
        return len(calls) in points

    monkeypatch.setattr(training, "stop_requested", stop_requested)


def assert_bitwise_equal(learners, reference):
    assert_same_state(learners, reference)
    np.testing.assert_array_equal(learners.histories, reference.histories)
    np.testing.assert_array_equal(learners.gradient_norm_histories, reference.gradient_norm_histories)


def stopped_and_resumed(tmp_path, monkeypatch, protocol, stops):
    """`maml` under `protocol`, 2 seeds, stopped by Ctrl-C after each update of `stops` and run again each time
    (each stop leaves a checkpoint of that many updates); the learners of the last run, which finishes."""
    seeds, path = lane_seeds(2), tmp_path / "maml.pt"
    stopped_by_ctrl_c_at(monkeypatch, set(stops))
    for stop in stops:
        with pytest.raises(KeyboardInterrupt):
            trained_or_loaded("maml", LEARNERS["maml"], protocol, seeds, path)
        with pytest.raises(
            CheckpointError, match=rf"holds {stop} of its protocol's {protocol.updates} updates: not one"
        ):
            load(path, record_of(protocol=protocol, seeds=seeds))
        saved = load_progress(path, record_of(protocol=protocol, seeds=seeds))
        assert isinstance(saved, Progress) and saved.learners.histories.shape == (2, stop)
    learners, source = trained_or_loaded("maml", LEARNERS["maml"], protocol, seeds, path)
    assert source == ("resumed" if stops else "trained")
    assert_bitwise_equal(load(path, record_of(protocol=protocol, seeds=seeds)), learners)
    return learners


@pytest.mark.parametrize("protocol", [replace(ASSIGNMENT, updates=60), paper_protocol(5, updates=60)],
                         ids=["assignment", "paper"])  # fmt: skip
def test_a_learner_stopped_by_ctrl_c_and_resumed_ends_bitwise_equal_to_one_run(tmp_path, monkeypatch, protocol):
    """Stops before, at and after the end of the paper stream's blocks of tasks (made 16 updates long here)."""
    monkeypatch.setattr(streams, "DRAWN_AT_ONCE", 16)
    straight = meta_trained("maml", LEARNERS["maml"], protocol, lane_seeds(2))
    assert_bitwise_equal(stopped_and_resumed(tmp_path, monkeypatch, protocol, [1, 15, 16, 17, 32, 59]), straight)


@pytest.mark.slow
def test_a_2000_update_learner_stopped_at_5_random_points_ends_bitwise_equal_to_one_run(tmp_path, monkeypatch):
    protocol = paper_protocol(5, updates=2_000)
    stops = sorted(np.random.default_rng(2017).choice(np.arange(1, 2_000), size=5, replace=False).tolist())
    straight = meta_trained("maml", LEARNERS["maml"], protocol, lane_seeds(2))
    assert_bitwise_equal(stopped_and_resumed(tmp_path, monkeypatch, protocol, stops), straight)


@pytest.mark.parametrize("stream", ["assignment", "paper"])
def test_a_stream_restored_to_its_state_gives_the_batches_it_gave_after_it(stream):
    protocol = replace(ASSIGNMENT, updates=4) if stream == "assignment" else paper_protocol(5)
    for taken in (0, 1, streams.DRAWN_AT_ONCE - 1, streams.DRAWN_AT_ONCE, streams.DRAWN_AT_ONCE + 1):
        original = protocol.streams(lane_seeds(2))
        for _ in range(taken):
            original.next_batch()
        restored = protocol.streams(lane_seeds(2))
        restored.restore(torch_round_trip(original.state()))
        for _ in range(2):
            assert all(torch.equal(a, b) for a, b in zip(original.next_batch(), restored.next_batch(), strict=True))


def torch_round_trip(value):
    """`value` as a checkpoint gives it back: saved and loaded with `torch.load(weights_only=True)`."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_progress_is_saved_every_save_every_seconds_and_a_stop_mid_update_loses_only_what_followed(
    tmp_path, monkeypatch
):
    """With SAVE_EVERY at 0, every update is saved; a KeyboardInterrupt raised inside an update (as Python's own
    handler raises it) saves nothing more, and the rerun goes on from the update before."""
    protocol, seeds, path = replace(ASSIGNMENT, updates=40), lane_seeds(2), tmp_path / "maml.pt"
    monkeypatch.setattr(training, "SAVE_EVERY", 0.0)
    held, save = [], checkpoints.save
    monkeypatch.setattr(
        training, "save", lambda learners, *args: held.append(len(learners.losses)) or save(learners, *args)
    )
    monkeypatch.setattr(training, "CHUNK", 1)  # the loop takes one update at a time
    train_many, calls = BatchedMAML.train_many, []

    def killed_in_update_30(self, batches):
        calls.append(None)
        if len(calls) == 30:
            raise KeyboardInterrupt
        train_many(self, batches)

    monkeypatch.setattr(BatchedMAML, "train_many", killed_in_update_30)
    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        trained_or_loaded("maml", LEARNERS["maml"], protocol, seeds, path)
    assert held == list(range(1, 30))
    saved = load_progress(path, record_of(protocol=protocol, seeds=seeds))
    assert isinstance(saved, Progress) and len(saved.learners.losses) == 29
    monkeypatch.setattr(BatchedMAML, "train_many", train_many)
    learners, source = trained_or_loaded("maml", LEARNERS["maml"], protocol, seeds, path)
    assert source == "resumed" and held == [*range(1, 30), *range(30, 40), 40], "the last update is saved whole"
    assert_bitwise_equal(learners, meta_trained("maml", LEARNERS["maml"], protocol, seeds))


def partial_checkpoint(tmp_path, monkeypatch, seeds=None):
    """The checkpoint of `maml`, 2 seeds, stopped by Ctrl-C after 3 of 8 updates: its path and record."""
    protocol, seeds = replace(ASSIGNMENT, updates=8), seeds or lane_seeds(2)
    stopped_by_ctrl_c_at(monkeypatch, {3})
    with pytest.raises(KeyboardInterrupt):
        trained_or_loaded("maml", LEARNERS["maml"], protocol, seeds, tmp_path / "maml.pt")
    return tmp_path / "maml.pt", protocol


@pytest.mark.parametrize("other", ["seeds", "protocol", "learner"])
def test_part_of_another_run_is_not_resumed(tmp_path, monkeypatch, other):
    path, protocol = partial_checkpoint(tmp_path, monkeypatch)
    seeds = lane_seeds(2, first=1) if other == "seeds" else lane_seeds(2)
    protocol = replace(protocol, updates=9) if other == "protocol" else protocol
    name = "first_order_maml" if other == "learner" else "maml"
    saved = path.read_bytes()
    with pytest.raises(CheckpointError, match=rf"maml\.pt': holds {{'{other}': .*expected {{'{other}'"):
        trained_or_loaded(name, LEARNERS[name], protocol, seeds, path)
    assert path.read_bytes() == saved


@pytest.mark.parametrize(
    "change, message",
    [
        (set_at("gradient_norms", None, (1, 2), 7.5), r"its gradient_norms does not match its SHA-256 digest"),
        (set_at("exp_avgs", "b1", (0, 4), 0.25), r"its exp_avgs\[b1\] does not match its SHA-256 digest"),
        (lambda c: c["streams"]["generators"][1]["state"]["key"].__setitem__(7, 12345), r"its streams does not match"),
        (lambda c: c.update(streams=None), r"its streams does not match its SHA-256 digest"),
        (lambda c: c.update(updates=8), r"its updates does not match its SHA-256 digest"),
    ],
    ids=["gradient-norm", "moment", "stream-state", "stream-state-dropped", "updates"],
)
def test_a_damaged_partial_checkpoint_is_refused_naming_what_is_damaged(tmp_path, monkeypatch, change, message):
    path, protocol = partial_checkpoint(tmp_path, monkeypatch)
    content = torch.load(path, weights_only=True)
    change(content)
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint '{re.escape(str(path))}': {message}"):
        trained_or_loaded("maml", LEARNERS["maml"], protocol, lane_seeds(2), path)


def test_part_of_a_run_is_saved_only_with_its_streams_state(tmp_path):
    learners, _ = trained_learners(episodes=2)
    with pytest.raises(ValueError, match="2 of 4 updates: part of a run is saved with its streams' state"):
        save(learners, record_of(), tmp_path / "learners.pt")
    assert not (tmp_path / "learners.pt").exists()
