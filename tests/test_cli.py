"""The ``hpckpt`` command line, run as a subprocess without an MPI launcher.

Checkpoints are created in-process on a 1-rank MPI world (no ``mpirun``), then
damaged by hand: a flipped byte inside a tensor, a truncated data file, a
garbage index, a missing data file, a missing path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout
from hpckpt.cli.diff import compare_arrays
from hpckpt.cli.progress import PROGRESS_THRESHOLD, Progress

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: run without mpirun"
)

KERNEL = "net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE"
BIAS = "net/l1/bias/.ATTRIBUTES/VARIABLE_VALUE"
SLOT_M = "net/l1/kernel/.OPTIMIZER_SLOT/opt/m"


class Dense(hpckpt.Module):
    def __init__(self, mesh: hpckpt.Mesh, n: int, m: int) -> None:
        super().__init__()
        self.kernel = hpckpt.Variable(
            np.arange(n * m, dtype=np.float32).reshape(n, m), layout=Layout(["x", "y"], mesh)
        )
        self.bias = hpckpt.Variable(np.zeros(m, np.float32), layout=Layout([UNSHARDED], mesh))


class Net(hpckpt.Module):
    def __init__(self, mesh: hpckpt.Mesh) -> None:
        super().__init__()
        self.l1 = Dense(mesh, 4, 3)
        self.steps = hpckpt.Variable(np.int64(5), layout=Layout([], mesh))


class Cursor(hpckpt.PythonState):
    def __init__(self) -> None:
        self.pos = 3

    def serialize(self) -> str:
        return json.dumps({"pos": self.pos})

    def deserialize(self, s: str) -> None:
        self.pos = json.loads(s)["pos"]


def _model() -> tuple[Net, hpckpt.optimizers.Adam, hpckpt.Checkpoint]:
    mesh = hpckpt.create_mesh([("x", 1), ("y", 1)])
    net = Net(mesh)
    opt = hpckpt.optimizers.Adam(0.1)
    opt.apply_gradients([(np.ones_like(net.l1.kernel.local), net.l1.kernel)])
    ck = hpckpt.Checkpoint(net=net, opt=opt, data=Cursor())
    return net, opt, ck


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ckpt-1, ckpt-2 (latest), an untracked ``manual`` checkpoint,
    ``other`` (a different model) and an uncommitted leftover data file."""
    d = tmp_path_factory.mktemp("cli") / "run"
    net, _, ck = _model()
    ck.save(str(d / "ckpt"))
    net.l1.kernel.assign(net.l1.kernel.numpy() + np.eye(4, 3, dtype=np.float32))
    ck.save(str(d / "ckpt"))
    ck.write(str(d / "manual"))
    mesh = hpckpt.create_mesh([("x", 1)])
    m = hpckpt.Module()
    m.kernel = hpckpt.Variable(np.zeros((2, 2), np.float64), layout=Layout(["x", UNSHARDED], mesh))
    m.extra = hpckpt.Variable(np.ones(3, np.int32))
    hpckpt.Checkpoint(net=hpckpt.Module(), l1=m).write(str(d / "other"))
    (d / "ckpt-3.data-0123456789abcdef.h5").write_bytes(b"partial")
    return d


def hp(*args: str | os.PathLike, init_mpi: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m hpckpt.cli ARGS`` (no MPI launcher).

    By default MPI is not even initialized (``MPI4PY_RC_INITIALIZE=0``): faster, and
    it proves the command line makes no MPI call. ``init_mpi=True`` runs it as users
    do, as an MPI singleton.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    if not init_mpi:
        env["MPI4PY_RC_INITIALIZE"] = "0"
    return subprocess.run(
        [sys.executable, "-m", "hpckpt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def hpjson(*args: str | os.PathLike, code: int = 0) -> dict:
    r = hp(*args, "--json")
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)


def assert_clean_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """Non-zero exit, one line on stderr naming the problem, no traceback."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hpckpt: error: ")
    for w in words:
        assert w in lines[0], (w, lines[0])


def copy_dir(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def index_of(prefix: Path) -> dict:
    return json.loads(Path(f"{prefix}.index.json").read_text())


def data_file_of(prefix: Path) -> Path:
    return prefix.parent / index_of(prefix)["data_file"]["name"]


# --- ls ------------------------------------------------------------------------------


def test_ls_text(good: Path) -> None:
    r = hp("ls", good)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "latest" in lines["ckpt-2"]
    assert "latest" not in lines["ckpt-1"]
    assert "not in state file" in lines["manual"]
    assert "not in state file" in lines["other"]
    assert "ckpt-3.data-0123456789abcdef.h5" in out and "interrupted save" in out
    assert "4 committed checkpoint(s)" in out


def test_ls_json(good: Path) -> None:
    doc = hpjson("ls", good)
    assert doc["ok"] and doc["latest"] == "ckpt-2"
    by = {c["name"]: c for c in doc["checkpoints"]}
    assert set(by) == {"ckpt-1", "ckpt-2", "manual", "other"}
    assert [by["ckpt-1"]["step"], by["ckpt-2"]["step"], by["manual"]["step"]] == [1, 2, None]
    assert by["ckpt-2"]["latest"] and not by["ckpt-1"]["latest"]
    # Checkpoint.save lists only its latest save in the state file (as TF does)
    assert by["ckpt-2"]["in_state_file"] and not by["ckpt-1"]["in_state_file"]
    assert not by["manual"]["in_state_file"]
    for name in ("ckpt-1", "ckpt-2"):
        prefix = good / name
        size = os.path.getsize(f"{prefix}.index.json") + os.path.getsize(data_file_of(prefix))
        assert by[name]["size"] == size
        assert by[name]["tensors"] == len(index_of(prefix)["tensors"])
        assert by[name]["saved"] == pytest.approx(index_of(prefix)["created"])
    assert [lo["file"] for lo in doc["leftovers"]] == ["ckpt-3.data-0123456789abcdef.h5"]


def test_ls_missing_and_not_a_directory(good: Path, tmp_path: Path) -> None:
    assert_clean_error(hp("ls", tmp_path / "nope"), 2, "does not exist")
    assert_clean_error(hp("ls", f"{good}/checkpoint"), 2, "not a directory")
    doc = hpjson("ls", tmp_path / "nope", code=2)
    assert doc["ok"] is False and doc["error"]["kind"] == "not_found"


def test_ls_damaged_entries(good: Path, tmp_path: Path) -> None:
    d = copy_dir(good, tmp_path)
    Path(f"{d}/ckpt-1.index.json").write_text("{garbage")
    r = hp("ls", d)
    assert r.returncode == 1
    assert "DAMAGED" in r.stdout and "ckpt-2" in r.stdout
    (d / "checkpoint").write_text("not json")
    doc = hpjson("ls", d, code=1)
    assert "not valid JSON" in doc["state_file"]["error"]
    assert {c["name"] for c in doc["checkpoints"]} >= {"ckpt-2", "manual"}


# --- inspect -------------------------------------------------------------------------


def test_inspect_tree(good: Path) -> None:
    r = hp("inspect", good)  # a directory: its latest checkpoint
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"checkpoint  {good / 'ckpt-2'}" in out
    lines = out.splitlines()
    kernel = next(i for i, ln in enumerate(lines) if ln.strip().startswith("kernel:"))
    assert "float32 [4, 3]" in lines[kernel] and "layout [x, y]" in lines[kernel]
    assert "mesh x=1,y=1" in lines[kernel] and "48 B" in lines[kernel]
    slot = lines[kernel + 1]
    assert "[slot m of opt]" in slot
    indent = len(lines[kernel]) - len(lines[kernel].lstrip())
    assert len(slot) - len(slot.lstrip()) > indent  # the slot sits under its variable
    assert any(ln.strip() == "net/" for ln in lines) and any(ln.strip() == "l1/" for ln in lines)
    assert any("data: python state" in ln for ln in lines)
    assert "steps: int64 []  layout []" in out
    assert "variables (2 slots)" in out


def test_inspect_json_and_paths(good: Path) -> None:
    doc = hpjson("inspect", f"{good}/ckpt-1.index.json")
    assert doc["checkpoint"] == str(good / "ckpt-1")
    tree = doc["tree"]
    assert tree["kind"] == "object"
    net = next(c for c in tree["children"] if c["name"] == "net")
    l1 = next(c for c in net["children"] if c["name"] == "l1")
    kernel = next(c for c in l1["children"] if c["name"] == "kernel")
    assert kernel["key"] == KERNEL
    t = kernel["tensor"]
    assert t["shape"] == [4, 3] and t["dtype"] == "float32" and t["nbytes"] == 48
    assert t["sharding_specs"] == ["x", "y"]
    assert t["mesh"] == {"dim_names": ["x", "y"], "shape": [1, 1]}
    assert {s["slot"] for s in kernel["slots"]} == {"m", "v"}
    assert all(s["owner"] == "opt" for s in kernel["slots"])
    tot = doc["totals"]
    assert tot["tensors"] == len(doc["tensors"]) == len(index_of(good / "ckpt-1")["tensors"])
    assert tot["slot_variables"] == 2 and tot["python_states"] == 1
    assert tot["tensor_bytes"] == sum(x["nbytes"] for x in doc["tensors"])
    # The prefix itself and the data file name resolve to the same checkpoint.
    assert hpjson("inspect", good / "ckpt-1")["checkpoint"] == str(good / "ckpt-1")
    assert hpjson("inspect", data_file_of(good / "ckpt-1"))["checkpoint"] == str(good / "ckpt-1")


def test_inspect_flat(good: Path) -> None:
    r = hp("inspect", "--flat", good / "ckpt-2")
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith(KERNEL))
    assert row.split()[1:] == ["float32", "[4,", "3]", "[x,", "y]", "x=1,y=1", "48"]


def test_inspect_shared_object_and_control_characters(tmp_path: Path) -> None:
    v = hpckpt.Variable(np.arange(3.0))
    m = hpckpt.Module()
    m.first = v
    m.again = v  # the same variable twice: one node, two edges
    m.table = {"evil\x1b[31mred": hpckpt.Variable(np.zeros(2))}
    hpckpt.Checkpoint(m=m).write(str(tmp_path / "c"))
    r = hp("inspect", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert "again -> same object as m/first" in r.stdout
    assert "\x1b" not in r.stdout and "evil\\x1b[31mred" in r.stdout
    doc = hpjson("inspect", tmp_path / "c")
    m_doc = doc["tree"]["children"][0]
    again = next(c for c in m_doc["children"] if c["name"] == "again")
    assert again["ref"] == "m/first"
    assert doc["totals"]["variables"] == 2


# --- verify --------------------------------------------------------------------------


def test_verify_good(good: Path) -> None:
    r = hp("verify", good)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: ") and str(good / "ckpt-2") in r.stdout
    doc = hpjson("verify", good / "ckpt-1")
    assert doc["ok"] is True and doc["errors"] == []
    assert doc["tensors_checked"] == doc["tensors_total"] > 0
    doc = hpjson("verify", "--all", good)
    assert doc["ok"] and len(doc["checkpoints"]) == 4
    r = hp("verify", "-v", good)
    assert f"OK    {KERNEL}" in r.stdout


def test_verify_flipped_byte(good: Path, tmp_path: Path) -> None:
    d = copy_dir(good, tmp_path)
    prefix = d / "ckpt-2"
    entry = index_of(prefix)["tensors"][KERNEL]
    pos = entry["offset"] + 13
    data = data_file_of(prefix)
    raw = bytearray(data.read_bytes())
    raw[pos] ^= 0x5A
    data.write_bytes(bytes(raw))

    r = hp("verify", prefix)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    bad = [ln for ln in r.stdout.splitlines() if ln.startswith("BAD:")]
    assert len(bad) == 1 and KERNEL in bad[0]
    lo, hi = entry["offset"], entry["offset"] + entry["nbytes"]
    assert f"file bytes [{lo}, {hi})" in bad[0]
    assert r.stdout.splitlines()[-1].startswith("DAMAGED:")

    doc = hpjson("verify", prefix, code=1)
    assert doc["ok"] is False and doc["tensors_bad"] == 1
    (err,) = doc["errors"]
    assert err["tensor"] == KERNEL and err["byte_range"][0] <= pos < err["byte_range"][1]
    statuses = {t["key"]: t["status"] for t in doc["tensors"]}
    assert statuses[KERNEL] == "bad" and statuses[BIAS] == "ok"
    # Reading commands refuse the damaged tensor with a clean one-line error.
    assert_clean_error(hp("export", prefix, tmp_path / "o.npz"), 1, KERNEL, "checksum")
    assert not (tmp_path / "o.npz").exists()
    assert not list(tmp_path.glob("o.npz*"))
    assert_clean_error(hp("diff", good / "ckpt-2", prefix), 1, KERNEL)
    # The other checkpoints of the directory are intact.
    doc = hpjson("verify", "--all", d, code=1)
    assert [c["ok"] for c in doc["checkpoints"]].count(False) == 1


def test_verify_truncated_data_file(good: Path, tmp_path: Path) -> None:
    d = copy_dir(good, tmp_path)
    prefix = d / "ckpt-2"
    entry = index_of(prefix)["tensors"][KERNEL]
    os.truncate(data_file_of(prefix), entry["offset"] + 4)
    r = hp("verify", prefix)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "truncated" in r.stdout
    assert any(KERNEL in ln for ln in r.stdout.splitlines() if ln.startswith("BAD:"))
    doc = hpjson("verify", prefix, code=1)
    assert KERNEL in {e["tensor"] for e in doc["errors"]}
    for cmd in (["inspect", prefix], ["export", prefix, tmp_path / "o.npz"]):
        assert_clean_error(hp(*cmd), 1, "truncated")
    doc = hpjson("inspect", prefix, code=1)
    assert doc["error"]["kind"] == "damaged"


def test_garbage_index(good: Path, tmp_path: Path) -> None:
    d = copy_dir(good, tmp_path)
    prefix = d / "ckpt-2"
    Path(f"{prefix}.index.json").write_bytes(b"\x00garbage{[")
    r = hp("verify", prefix)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not valid JSON" in r.stdout
    assert hpjson("verify", prefix, code=1)["ok"] is False
    assert_clean_error(hp("inspect", prefix), 1, "damaged checkpoint", "not valid JSON")
    assert_clean_error(hp("diff", prefix, good / "ckpt-1"), 1, "not valid JSON")
    # A well-formed JSON document that is not an index, and a hostile one.
    Path(f"{prefix}.index.json").write_text(json.dumps({"format": "other"}))
    assert_clean_error(hp("inspect", prefix), 1, "not an hpckpt index")
    doc = index_of(good / "ckpt-2")
    doc["tensors"][KERNEL]["dataset"] = "../etc"
    Path(f"{prefix}.index.json").write_text(json.dumps(doc))
    r = hp("verify", prefix)
    assert r.returncode == 1 and "'..'" in r.stdout


def test_missing_data_file(good: Path, tmp_path: Path) -> None:
    d = copy_dir(good, tmp_path)
    prefix = d / "ckpt-2"
    data_file_of(prefix).unlink()
    r = hp("verify", prefix)
    assert r.returncode == 1 and "is missing" in r.stdout
    assert_clean_error(hp("inspect", prefix), 1, "is missing")


def test_missing_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "ckpt-1"
    for cmd in (
        ["verify", missing],
        ["inspect", missing],
        ["export", missing, tmp_path / "o.npz"],
        ["diff", missing, missing],
    ):
        assert_clean_error(hp(*cmd), 2, "no checkpoint at")
        doc = hpjson(*cmd, code=2)
        assert doc["error"]["kind"] == "not_found" and doc["error"]["exit_code"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(hp("verify", empty), 2, "no checkpoint in directory")
    assert_clean_error(hp("verify", "--all", empty), 2, "no committed checkpoint")


def test_usage_errors() -> None:
    r = hp()
    assert r.returncode == 2 and "usage:" in r.stderr
    r = hp("verify")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = hp("frobnicate", "x")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = hp("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"hpckpt {hpckpt.__version__}"


# --- diff ----------------------------------------------------------------------------


def test_diff(good: Path) -> None:
    r = hp("diff", good / "ckpt-1", good / "ckpt-2", init_mpi=True)
    assert r.returncode == 0, r.stderr
    changed = [ln for ln in r.stdout.splitlines() if ln.startswith("~")]
    assert any(KERNEL in ln and "3 of 12 elements differ, max abs diff 1" in ln for ln in changed)
    assert any("save_counter" in ln for ln in changed)
    assert r.stdout.splitlines()[-1].startswith("different: 0 added, 0 removed, 2 changed")

    doc = hpjson("diff", good / "ckpt-1", good / "ckpt-2")
    assert doc["identical"] is False
    ch = {c["key"]: c for c in doc["changed"]}
    assert set(ch) == {KERNEL, "save_counter/.ATTRIBUTES/VARIABLE_VALUE"}
    k = ch[KERNEL]
    assert k["change"] == "values" and k["num_different"] == 3 and k["num_elements"] == 12
    assert k["max_abs_diff"] == pytest.approx(1.0)
    assert ch["save_counter/.ATTRIBUTES/VARIABLE_VALUE"]["max_abs_diff"] == 1
    assert BIAS in {u["key"] for u in doc["unchanged"]}

    same = hpjson("diff", good / "ckpt-2", good / "manual")  # write() right after save
    assert same["identical"] is True and same["summary"]["unchanged"] > 0
    assert hp("diff", "--exit-code", good / "ckpt-2", good / "manual").returncode == 0
    assert hp("diff", "--exit-code", good / "ckpt-1", good / "ckpt-2").returncode == 3


def test_diff_added_removed_shape_dtype(good: Path) -> None:
    doc = hpjson("diff", good / "ckpt-2", good / "other")
    added = {t["key"] for t in doc["added"]}
    removed = {t["key"] for t in doc["removed"]}
    assert "l1/extra/.ATTRIBUTES/VARIABLE_VALUE" in added
    assert KERNEL in removed and "data/.ATTRIBUTES/py_state" in removed
    r = hp("diff", good / "ckpt-2", good / "other")
    assert "+ added      l1/extra/.ATTRIBUTES/VARIABLE_VALUE" in r.stdout
    assert f"- removed    {KERNEL}" in r.stdout


def test_diff_shape_and_dtype_change(tmp_path: Path) -> None:
    mesh = hpckpt.create_mesh([("x", 1)])
    m = hpckpt.Module()
    m.w = hpckpt.Variable(np.zeros((2, 2), np.float32))
    m.b = hpckpt.Variable(np.zeros(2, np.float32), layout=Layout([UNSHARDED], mesh))
    hpckpt.Checkpoint(m=m).write(str(tmp_path / "a"))
    m2 = hpckpt.Module()
    m2.w = hpckpt.Variable(np.zeros((2, 3), np.float32))
    m2.b = hpckpt.Variable(np.zeros(2, np.float64), layout=Layout(["x"], mesh))
    hpckpt.Checkpoint(m=m2).write(str(tmp_path / "b"))
    doc = hpjson("diff", tmp_path / "a", tmp_path / "b")
    ch = {c["key"]: c for c in doc["changed"]}
    assert ch["m/w/.ATTRIBUTES/VARIABLE_VALUE"]["change"] == "shape"
    b = ch["m/b/.ATTRIBUTES/VARIABLE_VALUE"]
    assert b["change"] == "dtype" and b["layout_changed"] is True
    assert b["a"]["dtype"] == "float32" and b["b"]["dtype"] == "float64"
    r = hp("diff", tmp_path / "a", tmp_path / "b")
    assert "shape: float32 [2, 2] -> float32 [2, 3]" in r.stdout


def test_compare_arrays() -> None:
    a = np.array([1.0, np.nan, 3.0, 4.0])
    assert compare_arrays(a, a.copy()) == (0, 0.0)
    b = np.array([1.0, np.nan, 3.5, 2.0])
    assert compare_arrays(a, b) == (2, 2.0)
    assert compare_arrays(a, b, atol=0.6) == (1, 2.0)
    n, d = compare_arrays(a, np.array([np.nan, np.nan, 3.0, 4.0]))
    assert n == 1 and np.isnan(d)
    i = np.array([[1, 2], [3, 4]], np.int64)
    assert compare_arrays(i, i + np.array([[0, 0], [0, 7]])) == (1, 7.0)
    assert compare_arrays(np.array([True, False]), np.array([True, True])) == (1, 1.0)
    c = np.array([1 + 1j])
    assert compare_arrays(c, c + 3j) == (1, 3.0)


# --- export --------------------------------------------------------------------------


def test_export(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.npz"
    r = hp("export", good, out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("exported ")
    reader = hpckpt.load_checkpoint(str(good))
    shapes = reader.get_variable_to_shape_map()
    with np.load(out, allow_pickle=False) as z:
        assert set(z.files) == set(shapes)
        for key in shapes:
            assert z[key].dtype != object
            np.testing.assert_array_equal(z[key], reader.get_tensor(key))
        assert json.loads(bytes(z["data/.ATTRIBUTES/py_state"]).decode()) == {"pos": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]

    doc = hpjson("export", "--compress", "--include", "net/*", good / "ckpt-1", out)
    assert {t["key"] for t in doc["tensors"]} == {k for k in shapes if k.startswith("net/")}
    assert doc["compressed"] is True and doc["file_bytes"] == os.path.getsize(out)
    with np.load(out, allow_pickle=False) as z:
        assert z[KERNEL].shape == (4, 3)
    assert_clean_error(hp("export", "--include", "zzz*", good, out), 2, "matches")


# --- progress ------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar() -> None:
    tty = _Tty()
    small = Progress(PROGRESS_THRESHOLD - 1, "verify", stream=tty)
    assert not small.enabled
    assert not Progress(PROGRESS_THRESHOLD, "verify", stream=io.StringIO()).enabled
    with Progress(2 * PROGRESS_THRESHOLD, "verify", stream=tty) as bar:
        assert bar.enabled
        bar.update(PROGRESS_THRESHOLD)
        assert "50%" in bar.render()
        bar.update(PROGRESS_THRESHOLD)
    text = tty.getvalue()
    assert "verify [" in text and "100%" in text and text.endswith("\r\x1b[K")


def test_progress_flag(good: Path) -> None:
    r = hp("verify", "--progress", good, init_mpi=True)
    assert r.returncode == 0 and "verify [" in r.stderr and "100%" in r.stderr
    r = hp("verify", good, init_mpi=True)  # stderr is a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""


def test_console_script(good: Path) -> None:
    script = Path(sys.executable).parent / "hpckpt"
    if not script.exists():
        pytest.skip("the hpckpt console script is not installed beside this interpreter")
    r = subprocess.run([str(script), "ls", str(good)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ckpt-2" in r.stdout


def test_verify_fails_on_a_tensor_its_slices_do_not_cover(good: Path, tmp_path: Path) -> None:
    """A committed index whose slices leave part of a tensor uncovered is damaged: verify
    says so (exit 1), and no reader hands the uncovered bytes over."""
    d = copy_dir(good, tmp_path)
    prefix = d / "ckpt-2"
    doc = index_of(prefix)
    key = next(k for k, t in doc["tensors"].items() if t["slices"] is not None)
    doc["tensors"][key]["slices"] = []
    doc["tensors"][key]["checksums"] = ""
    Path(f"{prefix}.index.json").write_text(json.dumps(doc))
    r = hp("verify", prefix)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "do not cover it exactly once" in r.stdout
    assert hpjson("verify", prefix, code=1)["ok"] is False
    with pytest.raises(hpckpt.CorruptCheckpointError, match="do not cover"):
        hpckpt.load_checkpoint(str(prefix))
