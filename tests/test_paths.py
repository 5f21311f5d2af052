"""File-name rules, pure: classification, leftovers, paths that must stay inside DIR."""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpckpt.errors import CorruptCheckpointError
from hpckpt.io.paths import (
    INDEX_SUFFIX,
    STATE_FILE,
    check_relative,
    data_file_name,
    find_leftovers,
    index_path,
    is_data_file_name,
    normalize_prefix,
    parse_name,
    relative_to,
    step_of,
)
from hpckpt.io.statefile import CheckpointState, parse_state, resolve_latest

path_text = st.lists(
    st.sampled_from(["a", "b", ".", "..", "/", "\\", "\x00", "~", "c"]), max_size=12
).map("".join)


@given(path_text)
def test_check_relative_never_leaves_the_directory(p: str) -> None:
    try:
        rel = check_relative(p)
    except CorruptCheckpointError:
        return
    base = "/base/dir"
    joined = posixpath.normpath(posixpath.join(base, rel))
    assert joined == base or joined.startswith(base + "/"), (p, joined)


@given(path_text)
def test_relative_to_only_returns_paths_inside(p: str) -> None:
    if "\x00" in p:
        return
    d = "/base/dir"
    try:
        rel = relative_to(d, posixpath.join(d, p))
    except ValueError:
        return
    joined = posixpath.normpath(posixpath.join(d, rel))
    assert joined == d or joined.startswith(d + "/")


def test_names_are_classified() -> None:
    assert parse_name("ckpt-3.index.json").kind == "index"
    assert parse_name("ckpt-3.index.json").checkpoint == "ckpt-3"
    d = data_file_name("runs/ckpt-3", "0123456789abcdef")
    assert d == "ckpt-3.data-0123456789abcdef.h5" and is_data_file_name(d)
    assert parse_name(d).kind == "data" and parse_name(d).checkpoint == "ckpt-3"
    assert parse_name("ckpt-3.index.json.tmp-ab12").kind == "tmp"
    assert parse_name("checkpoint.tmp-ab12").target == STATE_FILE
    assert parse_name(STATE_FILE).kind == "state"
    assert parse_name(".hpckpt.lock").kind == "lock"
    for other in ["notes.txt", ".ckpt.index.json", "x.data-XYZ.h5", "x.data-01.h5", "foo.tmp-1"]:
        assert parse_name(other).kind == "other", other
    assert not is_data_file_name("../x.data-0123456789abcdef.h5")
    assert normalize_prefix("a/ckpt-1" + INDEX_SUFFIX) == "a/ckpt-1"
    assert index_path("a/ckpt-1") == "a/ckpt-1.index.json"
    assert step_of("a/ckpt-12") == 12 and step_of("a/final") is None
    with pytest.raises(ValueError, match="NUL"):
        normalize_prefix("a\x00b")
    with pytest.raises(ValueError, match="non-empty"):
        normalize_prefix("")


def test_leftovers_rule() -> None:
    names = [
        "ckpt-1.index.json",
        "ckpt-1.data-aaaaaaaaaaaaaaaa.h5",  # committed
        "ckpt-1.data-bbbbbbbbbbbbbbbb.h5",  # stale: the index names the other one
        "ckpt-2.data-cccccccccccccccc.h5",  # no index: an interrupted save
        "ckpt-2.index.json.tmp-12ab",  # an interrupted commit
        "checkpoint.tmp-99",
        "mine-7.data-dddddddddddddddd.h5",  # someone else's prefix
        "checkpoint",
        "notes.txt",
    ]
    named = {"ckpt-1": "ckpt-1.data-aaaaaaaaaaaaaaaa.h5"}
    every = find_leftovers(names, named.get)
    assert [lo.name for lo in every] == sorted(
        [
            "ckpt-1.data-bbbbbbbbbbbbbbbb.h5",
            "ckpt-2.data-cccccccccccccccc.h5",
            "ckpt-2.index.json.tmp-12ab",
            "checkpoint.tmp-99",
            "mine-7.data-dddddddddddddddd.h5",
        ]
    )
    own = find_leftovers(names, named.get, checkpoint_name="ckpt")
    assert "mine-7.data-dddddddddddddddd.h5" not in [lo.name for lo in own]
    assert "checkpoint.tmp-99" in [lo.name for lo in own]
    reasons = {lo.name: lo.reason for lo in every}
    assert "not named by its index" in reasons["ckpt-1.data-bbbbbbbbbbbbbbbb.h5"]
    assert "no index" in reasons["ckpt-2.data-cccccccccccccccc.h5"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["ckpt-1", "ckpt-2", "x-3"]), st.sampled_from("abc")),
        max_size=8,
    ),
    st.dictionaries(st.sampled_from(["ckpt-1", "ckpt-2", "x-3"]), st.sampled_from("abc")),
)
def test_leftovers_never_include_a_committed_data_file(files, committed) -> None:
    names = [data_file_name(ck, t * 16) for ck, t in files]
    named = {ck: data_file_name(ck, t * 16) for ck, t in committed.items()}
    out = {lo.name for lo in find_leftovers(names, named.get)}
    for n in names:
        ck = parse_name(n).checkpoint
        assert (n in out) == (named.get(ck) != n)


def test_state_walk_back(tmp_path) -> None:
    d = str(tmp_path)
    for name in ["ckpt-1", "ckpt-2"]:
        open(os.path.join(d, name + INDEX_SUFFIX), "w").close()
    state = CheckpointState([("ckpt-1", 1.0), ("ckpt-2", 2.0), ("ckpt-3", 3.0)], "ckpt-3")
    assert resolve_latest(d, state) == "ckpt-2"  # ckpt-3 never committed
    assert resolve_latest(d, None) is None
    state.latest = "ckpt-1"
    assert resolve_latest(d, state) == "ckpt-1"


@pytest.mark.parametrize(
    "doc,message",
    [
        ('{"format": "hpckpt-state", "version": 1, "latest": "../x", "checkpoints": []}', "leaves"),
        (
            '{"format": "hpckpt-state", "version": 1, '
            '"checkpoints": [{"path": "/etc", "time": 1}]}',
            "bad",
        ),
        (
            '{"format": "hpckpt-state", "version": 1, '
            '"checkpoints": [{"path": "a", "time": true}]}',
            "bad entry",
        ),
        ('{"format": "other"}', "not an hpckpt state file"),
        ("[" * 50_000, "not valid JSON"),
    ],
)
def test_hostile_state_files(doc: str, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        parse_state(doc)


def test_state_round_trip() -> None:
    s = CheckpointState([("ckpt-1", 1.5), ("sub/ckpt-2", 2.5)], "sub/ckpt-2", 0.25)
    assert parse_state(s.to_json()) == s
