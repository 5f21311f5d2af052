"""Readers while ``write(P)`` overwrites the same prefix again and again (issue 11, item 10).

A 2-rank job rewrites ``P`` (each commit removes the previous data file); this process
reads ``P`` meanwhile, every way there is: the reader (``load_checkpoint`` +
``get_tensor``), ``hpckpt verify``, and a collective restore (here a job of one rank),
in place and not. A healthy checkpoint must never be reported damaged or missing: each
read returns one whole version (all tensors of the same step), or, if ``P`` is replaced
during every retry, ``CheckpointChangedError``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time

import numpy as np
from launch import mpi_env, mpirun_cmd

import hpckpt
from hpckpt.cli.main import main as cli_main
from hpckpt.errors import CheckpointChangedError

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "lifecycle.py")
W = np.arange(64 * 33, dtype=np.float64).reshape(64, 33) + 1
B = np.arange(7, dtype=np.int32) + 3


def step_of(w: np.ndarray, b: np.ndarray) -> int:
    """The step whose values ``w`` and ``b`` hold (both the same), else raise."""
    k = round(float(w[0, 0] / W[0, 0]))
    if not (np.array_equal(w, W * k) and np.array_equal(b, B * k)):
        raise AssertionError(f"not one version: w of step {w[0, 0] / W[0, 0]}, b {b[:2]}")
    return k


def test_readers_never_see_damage_while_a_prefix_is_overwritten(tmp_path):
    d = str(tmp_path)
    p = os.path.join(d, "p")
    writer = subprocess.Popen(
        mpirun_cmd(2, PROGRAM, "overwrite", d, "60"),
        env=mpi_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    w = hpckpt.Variable(np.zeros((64, 33)))
    b = hpckpt.Variable(np.zeros(7, np.int32))
    ck = hpckpt.Checkpoint(w=w, b=b)
    in_place = [hpckpt.CheckpointOptions(), hpckpt.CheckpointOptions(restore_in_place=False)]
    counts = {"reader": 0, "verify": 0, "restore": 0, "changed": 0}
    errors: list[str] = []
    steps = set()
    try:
        i = 0
        while writer.poll() is None:
            i += 1
            if not os.path.exists(p + ".index.json"):
                time.sleep(0.01)
                continue
            try:
                kind = ("reader", "verify", "restore")[i % 3]
                if kind == "reader":
                    r = hpckpt.load_checkpoint(p)
                    time.sleep(0.02)  # the writer moves on meanwhile
                    steps.add(
                        step_of(
                            r.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE"),
                            r.get_tensor("b/.ATTRIBUTES/VARIABLE_VALUE"),
                        )
                    )
                elif kind == "verify":
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        code = cli_main(["verify", "--json", p])
                    if code != 0:
                        errors.append(f"verify exit {code}: {out.getvalue()[-400:]}")
                    elif not json.loads(out.getvalue())["ok"]:
                        errors.append(f"verify not ok: {out.getvalue()[-400:]}")
                else:
                    ck.read(p, options=in_place[i % 2]).assert_consumed()
                    steps.add(step_of(w.local, b.local))
                counts[kind] += 1
            except CheckpointChangedError:
                counts["changed"] += 1
            except Exception as e:  # anything else is a false alarm
                errors.append(f"{kind}: {type(e).__name__}: {e}")
        out = writer.communicate(timeout=120)[0]
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert "WRITER-DONE" in out, out
    assert not errors, (len(errors), counts, errors[:5])
    assert min(counts["reader"], counts["verify"], counts["restore"]) >= 3, counts
    assert len(steps) >= 2, (steps, counts)
