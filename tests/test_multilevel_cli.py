"""``hpckpt ls --local`` and ``hpckpt verify`` on the local tier of multi-level checkpointing.

One real mpirun job (4 ranks as 2 emulated nodes) writes the tier; the command line
then lists and verifies it, after damage and after the loss of a node.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from launch import run_mpi

from hpckpt.cli.main import main
from hpckpt.io import parse_local_index

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "multilevel.py")


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tier"))
    r = run_mpi(4, PROGRAM, "save", d, "3", "-", "0", "none", env={"HPCKPT_RANKS_PER_NODE": "2"})
    assert r.returncode == 0 and "SURVIVED" in r.stdout, r.stdout + r.stderr
    return d


def cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def copy(tier, tmp_path):
    d = str(tmp_path / "t")
    shutil.copytree(tier, d)
    return d, os.path.join(d, "local-{node}")


def test_ls_lists_both_tiers(tier, capsys):
    pattern = os.path.join(tier, "local-{node}")
    code, out, _ = cli(capsys, "ls", os.path.join(tier, "pfs"), "--local", pattern)
    assert code == 0, out
    assert f"local tier {pattern}" in out
    assert "ckpt-2" in out and "latest local" in out
    code, out, _ = cli(capsys, "ls", "--json", os.path.join(tier, "pfs"), "--local", pattern)
    doc = json.loads(out)
    assert [c["name"] for c in doc["checkpoints"]] == ["ckpt-2"]
    assert all(c["tier"] == "persisted" for c in doc["checkpoints"])
    local = doc["local"]["checkpoints"]
    assert [(c["name"], c["tier"], c["complete"], c["latest"]) for c in local] == [
        ("ckpt-2", "local", True, False),
        ("ckpt-3", "local", True, True),
    ]
    assert local[1]["own"] == [True, True] and local[1]["partner"] == [True, True]


def test_verify_a_local_checkpoint(tier, capsys):
    path = os.path.join(tier, "local-{node}", "ckpt-3")
    code, out, _ = cli(capsys, "verify", path)
    assert code == 0, out
    assert "node 0: own ok, partner ok" in out and "node 1: own ok, partner ok" in out
    code, _, err = cli(capsys, "verify", os.path.join(tier, "local-{node}", "ckpt-9"))
    assert code == 2 and "no local checkpoint" in err


def test_verify_names_a_damaged_copy(tier, tmp_path, capsys):
    d, pattern = copy(tier, tmp_path)
    node1 = os.path.join(d, "local-1")
    with open(os.path.join(node1, "ckpt-3.local.json"), "rb") as f:
        li = parse_local_index(f.read())
    loc = li.locations["w/.ATTRIBUTES/VARIABLE_VALUE"]
    i = next(k for k, r in enumerate(loc.ranks) if li.nodes.node_of[r] == 1)
    with open(os.path.join(node1, li.data_file(1, "own")), "r+b") as f:
        f.seek(int(loc.offsets[i]))
        b = f.read(1)
        f.seek(int(loc.offsets[i]))
        f.write(bytes([b[0] ^ 1]))
    code, out, _ = cli(capsys, "verify", "--json", os.path.join(pattern, "ckpt-3"))
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    assert doc["nodes"][1] == {"node": 1, "own": "damaged", "partner": "ok"}
    (e,) = doc["errors"]
    assert e["tensor"] == "w/.ATTRIBUTES/VARIABLE_VALUE" and e["copy"] == "own"
    assert "checksum mismatch" in e["message"] and e["byte_range"][0] == int(loc.offsets[i])


def test_a_lost_node_is_a_warning_until_no_copy_is_left(tier, tmp_path, capsys):
    d, pattern = copy(tier, tmp_path)
    shutil.rmtree(os.path.join(d, "local-1"))
    code, out, _ = cli(capsys, "verify", os.path.join(pattern, "ckpt-3"))
    assert code == 0, out
    assert "node 1: own missing, partner ok" in out and "warning: node 1" in out
    code, out, _ = cli(capsys, "ls", os.path.join(d, "pfs"), "--local", pattern)
    assert code == 0 and "node(s) [1] only in their partner copy" in out
    for name in os.listdir(os.path.join(d, "local-0")):
        if ".node-1.partner-" in name:
            os.remove(os.path.join(d, "local-0", name))
    code, out, _ = cli(capsys, "verify", os.path.join(pattern, "ckpt-3"))
    assert code == 1 and "node 1: no intact copy" in out
    code, out, _ = cli(capsys, "ls", os.path.join(d, "pfs"), "--local", pattern)
    assert code == 0 and "INCOMPLETE: node 1 has neither its data" in out
