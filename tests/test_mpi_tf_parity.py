"""TensorFlow parity under MPI (issue 12): what the ported TF tests do not cover by themselves.

Items 1-5 of the issue each have a test here that uses only the API main already had
(so that it fails on the code before the fix); the rest covers the new behaviours:
slots created on restore, write callbacks, ValueError-compatible errors, the
management helpers called from every rank, ``restore_or_initialize``'s status.
"""

from __future__ import annotations

import json
import os
import threading
import warnings

import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import Layout

pytestmark = [pytest.mark.mpi(min_size=1), pytest.mark.timeout(180)]

COMM = MPI.COMM_WORLD


def V(value, layout=None):
    return hpckpt.Variable(np.asarray(value, dtype=np.float64), layout=layout)


class Clock:
    """A settable clock, the same on every rank."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def exists(prefix: str) -> bool:
    """Whether the checkpoint's index exists (rank 0 looks, after the others arrive)."""
    COMM.Barrier()
    return bool(COMM.bcast(os.path.exists(prefix + ".index.json") if COMM.rank == 0 else None))


def state_doc(directory: str) -> dict:
    COMM.Barrier()
    with open(os.path.join(directory, "checkpoint")) as f:
        return json.load(f)


# --- item 1: a new manager neither adopts nor deletes checkpoints it did not make ----------


def test_manager_leaves_checkpoint_save_checkpoints_alone(shared_dir):
    v = V(1.0)
    user = hpckpt.Checkpoint(v=v)
    mine = [user.save(os.path.join(shared_dir, "ckpt")) for _ in range(2)]  # ckpt-1, ckpt-2
    clock = Clock(4e9)  # later than the user's saves
    m = hpckpt.CheckpointManager(hpckpt.Checkpoint(v=v), shared_dir, max_to_keep=1, clock=clock)
    assert m.checkpoints == []
    assert m.latest_checkpoint == mine[-1]  # still the directory's latest
    saved = []
    for n in (10, 11, 12):
        clock.t += 1
        saved.append(m.save(checkpoint_number=n))
    assert m.checkpoints == [saved[-1]]
    assert all_ranks(all(exists(p) for p in mine))  # never adopted, never deleted
    assert all_ranks(not exists(saved[0]) and not exists(saved[1]))


# --- item 2: Checkpoint.save lists only the latest save -----------------------------------


def test_checkpoint_save_state_file_lists_only_the_latest(shared_dir):
    ckpt = hpckpt.Checkpoint(v=V(1.0))
    paths = [ckpt.save(os.path.join(shared_dir, "ckpt")) for _ in range(3)]
    doc = state_doc(shared_dir)
    with Agreed():
        assert doc["latest"] == "ckpt-3"
        assert [c["path"] for c in doc["checkpoints"]] == ["ckpt-3"]
        assert doc["last_preserved_timestamp"] == doc["checkpoints"][0]["time"]
    assert hpckpt.latest_checkpoint(shared_dir) == paths[-1]
    assert all_ranks(all(exists(p) for p in paths))  # all still on disk


# --- item 3: a clock behind the last preserved timestamp ----------------------------------


def test_clock_behind_last_preserved_timestamp_warns_and_keeps_old(shared_dir):
    clock = Clock(10000.0)
    ckpt = hpckpt.Checkpoint()
    first = hpckpt.CheckpointManager(
        ckpt, shared_dir, max_to_keep=1, keep_checkpoint_every_n_hours=1.0, clock=clock
    )
    old = []
    for _ in range(3):
        old.append(first.save())
        clock.t += 3600.0
    assert state_doc(shared_dir)["last_preserved_timestamp"] == 13600.0  # ckpt-2 preserved
    clock.t = 5000.0  # the clock goes back
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        second = hpckpt.CheckpointManager(ckpt, shared_dir, max_to_keep=1, clock=clock)
    said = COMM.allgather([str(w.message) for w in rec])
    assert "behind the last preserved checkpoint timestamp" in str(said)
    assert second.checkpoints == [] and second.latest_checkpoint == old[-1]
    for _ in range(3):
        clock.t += 10.0
        second.save()
    assert all_ranks(exists(old[1]) and exists(old[2]))  # never deleted
    assert len(second.checkpoints) == 1
    assert state_doc(shared_dir)["last_preserved_timestamp"] == 5000.0


# --- item 4: a list changed in a way that renames items refuses to save -------------------


@pytest.mark.parametrize("how", ["del", "sort", "imul", "slice"])
def test_list_after_untracked_mutation_refuses_to_save(shared_dir, how):
    a, b, c = V(1.0), V(2.0), V(3.0)
    ckpt = hpckpt.Checkpoint(l=[a, b, c])
    if how == "del":
        del ckpt.l[0]
    elif how == "sort":
        ckpt.l.sort(key=lambda v: -float(v.local))
    elif how == "imul":
        ckpt.l *= -1
    else:
        ckpt.l[0:2] = [b]
    with pytest.raises(ValueError, match="Unable to save"):
        ckpt.save(os.path.join(shared_dir, "ckpt"))
    assert all_ranks(not os.path.exists(os.path.join(shared_dir, "ckpt-1.index.json")))
    assert int(ckpt.save_counter.local) == 0


def test_restore_never_puts_list_values_on_renumbered_items(shared_dir):
    path = hpckpt.Checkpoint(l=[V(1.0), V(2.0)]).save(os.path.join(shared_dir, "ckpt"))
    a, b = V(0.0), V(0.0)
    ckpt = hpckpt.Checkpoint(l=[a, b])
    del ckpt.l[0]  # b is now at index 0, where a's value was saved
    status = ckpt.restore(path).expect_partial()
    assert all_ranks(float(b.local) == 0.0)  # not a's value
    with pytest.raises(AssertionError):
        status.assert_consumed()


# --- item 5: the most recent restore() wins ------------------------------------------------


def test_most_recent_restore_wins_over_an_older_pending_one(shared_dir):
    save = hpckpt.Checkpoint()
    save.dep = hpckpt.Module()
    save.dep.var = V(12.0)
    first = save.save(os.path.join(shared_dir, "first"))
    save.dep.var.assign(13.0)
    second = save.save(os.path.join(shared_dir, "second"))
    old_root, new_root = hpckpt.Checkpoint(), hpckpt.Checkpoint()
    old_status = old_root.restore(second)  # older call
    new_status = new_root.restore(first)  # newer call
    dep = hpckpt.Module()
    dep.var = V(0.0)
    new_root.dep = dep
    assert all_ranks(float(dep.var.local) == 12.0)
    old_root.dep = dep  # the older restore's pending value must not overwrite it
    assert all_ranks(float(dep.var.local) == 12.0)
    old_status.assert_consumed()  # matched all the same
    new_status.assert_consumed()


# --- slots created on restore ----------------------------------------------------------------


def test_restore_creates_the_slots_of_an_existing_optimizer(shared_dir):
    mesh = hpckpt.create_mesh([("x", COMM.size)])
    lay = Layout(["x"], mesh)
    w = V(np.arange(2.0 * COMM.size), layout=lay)
    opt = hpckpt.optimizers.Adam(0.1)
    opt.apply_gradients([(np.ones_like(w.local), w)])
    want_m = opt.get_slot(w, "m").numpy()
    path = hpckpt.Checkpoint(w=w, opt=opt).save(os.path.join(shared_dir, "ckpt"))

    w2 = V(np.zeros(2 * COMM.size), layout=lay)
    opt2 = hpckpt.optimizers.Adam(0.1)
    hpckpt.Checkpoint(w=w2, opt=opt2).restore(path).assert_consumed()
    # created and filled by the restore, before any apply_gradients
    assert all_ranks(np.array_equal(opt2.get_slot(w2, "m").numpy(), want_m))
    assert opt2.get_slot(w2, "m").layout == lay


def test_a_trackable_with_a_slot_factory_gets_its_slot_on_restore(shared_dir):
    class Tracker(hpckpt.Module):
        def _create_slot_for_restore(self, variable, slot_name):
            if slot_name != "ema":
                return None
            slot = V(np.zeros(variable.shape))
            return self._add_slot(variable, slot_name, slot)

    v = V([1.0, 2.0])
    t = Tracker()
    t._add_slot(v, "ema", V([5.0, 6.0]))
    path = hpckpt.Checkpoint(v=v, t=t).save(os.path.join(shared_dir, "ckpt"))
    v2, t2 = V([0.0, 0.0]), Tracker()
    ckpt = hpckpt.Checkpoint(t=t2)
    status = ckpt.restore(path)
    assert t2._get_slot(v2, "ema") is None
    ckpt.v = v2  # the variable arrives after the owner: the slot is created then
    assert all_ranks(np.array_equal(t2._get_slot(v2, "ema").numpy(), [5.0, 6.0]))
    status.assert_consumed()


# --- write callbacks ---------------------------------------------------------------------------


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
def test_write_callbacks_run_on_rank_0_after_the_commit(shared_dir, enable_async):
    seen = []

    def with_path(path):
        # committed, and (for save) already the directory's latest
        seen.append((path, os.path.exists(path + ".index.json"), threading.current_thread().name))

    def no_arg():
        seen.append("no-arg")

    opts = hpckpt.CheckpointOptions(enable_async=enable_async, write_callbacks=[with_path, no_arg])
    ckpt = hpckpt.Checkpoint(v=V(1.0))
    p1 = ckpt.save(os.path.join(shared_dir, "ckpt"), options=opts)
    p2 = ckpt.write(os.path.join(shared_dir, "plain"), options=opts)
    m = hpckpt.CheckpointManager(ckpt, os.path.join(shared_dir, "m"), max_to_keep=1)
    p3 = m.save(options=opts)
    ckpt.sync()
    m.checkpoint.sync()
    got = COMM.allgather(seen)
    with Agreed():
        assert all(g == [] for g in got[1:])  # rank 0 only
        assert [s[:2] for s in got[0] if s != "no-arg"] == [(p1, True), (p2, True), (p3, True)]
        assert got[0].count("no-arg") == 3
        threads = {s[2] for s in got[0] if s != "no-arg"}
        assert (
            (threads == {"hpckpt-async-save"})
            if enable_async
            else ("hpckpt-async-save" not in threads)
        )


def test_a_failing_write_callback_is_raised_everywhere_and_the_save_stays(shared_dir):
    def boom(path):
        raise RuntimeError("callback broke")

    opts = hpckpt.CheckpointOptions(write_callbacks=[boom])
    ckpt = hpckpt.Checkpoint(v=V(1.0))
    prefix = os.path.join(shared_dir, "ckpt")
    with pytest.raises(hpckpt.WriteCallbackError, match="callback broke"):
        ckpt.save(prefix, options=opts)
    assert int(ckpt.save_counter.local) == 1  # committed: the number is kept
    assert hpckpt.latest_checkpoint(shared_dir) == prefix + "-1"
    assert ckpt.save(prefix) == prefix + "-2"
    with pytest.raises(ValueError, match="path or no argument"):
        hpckpt.CheckpointOptions(write_callbacks=[lambda a, b: None])
    with pytest.raises(TypeError):
        hpckpt.CheckpointOptions(write_callbacks=[1])


# --- errors TF users catch as ValueError -------------------------------------------------------


def test_shape_mismatch_is_a_checkpoint_error_and_a_value_error(shared_dir):
    path = hpckpt.Checkpoint(v=V([1.0, 2.0])).save(os.path.join(shared_dir, "ckpt"))
    w = V([5.0])
    with pytest.raises(hpckpt.CheckpointValueError, match="shape") as e:
        hpckpt.Checkpoint(v=w).restore(path)
    assert isinstance(e.value, ValueError) and isinstance(e.value, hpckpt.CheckpointError)
    assert all_ranks(float(w.local[0]) == 5.0)  # nothing changed


def test_invalid_state_file_is_a_value_error_everywhere(shared_dir):
    if COMM.rank == 0:
        open(os.path.join(shared_dir, "checkpoint"), "w").close()  # empty
    COMM.Barrier()
    with pytest.raises(hpckpt.InvalidStateFileError):
        hpckpt.CheckpointManager(hpckpt.Checkpoint(), shared_dir, max_to_keep=1)
    with pytest.raises(ValueError):
        hpckpt.get_checkpoint_state(shared_dir)
    with pytest.raises(hpckpt.CorruptCheckpointError):
        hpckpt.latest_checkpoint(shared_dir)


def test_reader_unknown_key_is_not_found_and_a_key_error(shared_dir):
    path = hpckpt.Checkpoint(v=V(1.0)).save(os.path.join(shared_dir, "ckpt"))
    reader = hpckpt.load_checkpoint(path)
    for exc in (hpckpt.NotFoundError, KeyError):
        with pytest.raises(exc, match="nope"):
            reader.get_tensor("nope")
    assert hpckpt.load_variable(shared_dir, "v/.ATTRIBUTES/VARIABLE_VALUE:0") == 1.0


# --- the manager: interval, restore_or_initialize ----------------------------------------------


def test_save_twice_at_one_step_and_restore_or_initialize_status(shared_dir):
    step = hpckpt.Variable(np.int64(0))
    ckpt = hpckpt.Checkpoint(step=step, v=V(3.0))
    m = hpckpt.CheckpointManager(
        ckpt, shared_dir, max_to_keep=None, step_counter=step, checkpoint_interval=5
    )
    assert m.save(check_interval=False) is not None
    assert m.save(check_interval=False) is None  # already saved at step 0
    step.local[...] = 1
    assert m.save(check_interval=False) is not None  # forced, before the interval
    restored = hpckpt.CheckpointManager(
        hpckpt.Checkpoint(step=hpckpt.Variable(np.int64(0)), v=V(0.0)),
        shared_dir,
        max_to_keep=None,
    ).restore_or_initialize()
    assert restored == m.latest_checkpoint and isinstance(restored, str)
    restored.status.assert_consumed()


# --- helpers from every rank -------------------------------------------------------------------


def test_state_helpers_called_by_every_rank_at_once(shared_dir):
    sub = os.path.join(shared_dir, "sub")
    ckpt = hpckpt.Checkpoint(v=V(1.0))
    paths = [ckpt.save(os.path.join(sub, "model")) for _ in range(3)]
    for _ in range(3):  # no barrier: every rank writes and removes at the same time
        hpckpt.update_checkpoint_state(sub, paths[1], paths[:2], [1.0, 2.0], 0.5)
        hpckpt.remove_checkpoint(paths[2])
    COMM.Barrier()
    state = hpckpt.get_checkpoint_state(sub)
    with Agreed():
        assert state.model_checkpoint_path == paths[1]
        assert state.all_model_checkpoint_paths == paths[:2]
        assert state.all_model_checkpoint_timestamps == [1.0, 2.0]
        assert state.last_preserved_timestamp == 0.5
        assert not hpckpt.checkpoint_exists(paths[2]) and hpckpt.checkpoint_exists(paths[1])
        leftovers = [n for n in os.listdir(sub) if "model-3" in n or ".tmp-" in n]
        assert leftovers == []
    with pytest.raises(ValueError, match="not inside"):
        hpckpt.update_checkpoint_state(sub, os.path.join(shared_dir, "elsewhere"))


def test_checkpoints_iterator_with_a_communicator_yields_the_same_paths(shared_dir):
    ckpt = hpckpt.Checkpoint(v=V(1.0))
    first = ckpt.save(os.path.join(shared_dir, "ckpt"))
    got = []
    calls = []

    def timeout_fn():
        calls.append(1)
        return True

    for path in hpckpt.checkpoints_iterator(
        shared_dir, timeout=0, timeout_fn=timeout_fn, comm=COMM
    ):
        got.append(path)
        if len(got) == 1:
            ckpt.save(os.path.join(shared_dir, "ckpt"))  # a new one while "evaluating"
    with Agreed():
        assert got == [first, os.path.join(shared_dir, "ckpt-2")]
        assert calls == ([1] if COMM.rank == 0 else [])  # rank 0 decides
    assert hpckpt.wait_for_new_checkpoint(shared_dir, got[-1], timeout=0, comm=COMM) is None
