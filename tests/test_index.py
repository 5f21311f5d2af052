"""The index format, pure: round trips, the two parser modes agree, hostile documents,
coverage, version 1 still read.

No MPI, no HDF5, no files: these run in the serial pass.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpckpt.errors import CorruptCheckpointError
from hpckpt.io.index import (
    MAX_INDEX_BYTES,
    REPLICA_SPLIT_BYTES,
    CheckpointIndex,
    TensorEntry,
    dataset_name_for_key,
)
from hpckpt.io.index_parse import parse_index
from hpckpt.io.slicing import DerivedSlicing, ListedSlicing
from hpckpt.layout import LayoutSpec, dim_bounds

DTYPES = ["<f8", "<f4", "<i8", "<i4", "|u1", "|b1", "<c16", "<u2"]
names = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
keys = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/\\."),
        min_size=1,
        max_size=8,
    ),
    min_size=1,
    max_size=3,
).map(lambda parts: "/".join(parts) + "/.ATTRIBUTES/VARIABLE_VALUE")
tokens = st.text("0123456789abcdef", min_size=8, max_size=16)


@st.composite
def layouts(draw: st.DrawFn, shape: tuple[int, ...], nprocs: int) -> LayoutSpec:
    """A layout over a mesh of ``nprocs`` ranks (1-D or 2-D), maybe with splits."""
    if nprocs > 1 and draw(st.booleans()):
        a = draw(st.sampled_from([d for d in range(1, nprocs + 1) if nprocs % d == 0]))
        mesh_names, mesh_shape = ("x", "y"), (a, nprocs // a)
    else:
        mesh_names, mesh_shape = ("x",), (nprocs,)
    free = list(mesh_names)
    specs = []
    for _ in shape:
        s = draw(st.sampled_from(["unsharded", *free]))
        if s != "unsharded":
            free.remove(s)
        specs.append(s)
    splits = []
    for d, s in enumerate(specs):
        if s != "unsharded" and draw(st.booleans()):
            k = mesh_shape[mesh_names.index(s)]
            inner = sorted(draw(st.lists(st.integers(0, shape[d]), min_size=k - 1, max_size=k - 1)))
            splits.append((s, (0, *inner, shape[d])))
    return LayoutSpec(tuple(specs), mesh_names, mesh_shape, tuple(sorted(splits)))


@st.composite
def entries(draw: st.DrawFn, key: str, offset: int, nprocs: int) -> tuple[TensorEntry, int]:
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    nbytes = math.prod(shape) * dtype.itemsize
    if draw(st.booleans()):
        layout: LayoutSpec | None = draw(layouts(shape, nprocs))
        slicing: DerivedSlicing | ListedSlicing = DerivedSlicing(
            shape, layout, dtype.itemsize, draw(st.sampled_from([1, 16, REPLICA_SPLIT_BYTES]))
        )
        slicing = DerivedSlicing(
            shape, layout, dtype.itemsize, REPLICA_SPLIT_BYTES, draw(st.booleans())
        )
    else:
        layout = None
        # a grid of boxes: an exact cover
        cuts = [dim_bounds(n, draw(st.integers(1, 3))) for n in shape]
        boxes = [
            (
                tuple(c[i] for c, i in zip(cuts, idx, strict=True)),
                tuple(c[i + 1] - c[i] for c, i in zip(cuts, idx, strict=True)),
            )
            for idx in np.ndindex(*[len(c) - 1 for c in cuts])
        ]
        boxes = [b for b in boxes if math.prod(b[1]) or not shape] or (
            [((), ())] if not shape else []
        )
        slicing = ListedSlicing(
            np.array([b[0] for b in boxes], dtype=np.int64).reshape(len(boxes), ndim),
            np.array([b[1] for b in boxes], dtype=np.int64).reshape(len(boxes), ndim),
        )
    crcs = np.array(
        draw(st.lists(st.integers(0, (1 << 32) - 1), min_size=len(slicing), max_size=len(slicing))),
        dtype=np.uint32,
    )
    logical = draw(st.sampled_from([None, "bfloat16"])) if dtype.itemsize == 2 else None
    entry = TensorEntry(
        key,
        dataset_name_for_key(key),
        dtype,
        shape,
        offset if nbytes else None,
        layout,
        slicing,
        crcs,
        logical,
    )
    return entry, nbytes


@st.composite
def indexes(draw: st.DrawFn) -> CheckpointIndex:
    nprocs = draw(st.integers(1, 6))
    ks = draw(st.lists(keys, min_size=0, max_size=5, unique=True))
    tensors = {}
    offset = 4096
    for k in ks:
        entry, nbytes = draw(entries(k, offset, nprocs))
        tensors[k] = entry
        offset += nbytes
    graph = draw(
        st.none()
        | st.just({"nodes": [{"children": [], "slots": [], "key": None, "kind": "object"}]})
    )
    return CheckpointIndex(
        data_file=f"ckpt-{draw(st.integers(0, 99))}.data-{draw(tokens)}.h5",
        data_size=offset + draw(st.integers(0, 100)),
        tensors=tensors,
        nprocs=nprocs,
        created=draw(st.floats(0, 2e9, allow_nan=False)),
        graph=graph,
        library={"hpckpt": "0.1.0"},
        checksum=draw(st.sampled_from(["crc32c", "crc32"])),
    )


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(indexes())
def test_parse_of_serialize_is_identity_in_both_modes(index: CheckpointIndex) -> None:
    text = index.to_json()
    validated = parse_index(text)
    trusted = parse_index(text, trusted=True)
    assert validated == index
    assert trusted == validated  # the two modes of the one parser agree


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_derived_slices_tile_every_tensor_exactly_once(data: st.DataObject) -> None:
    nprocs = data.draw(st.integers(1, 8))
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
    layout = data.draw(layouts(shape, nprocs))
    split = data.draw(st.sampled_from([1, 8, 1 << 20]))
    s = DerivedSlicing(shape, layout, 8, split, data.draw(st.booleans()))
    cover = np.zeros(shape, dtype=np.int64)
    nonempty = s.nonempty()
    for i in range(len(s)):
        start, sh = s.box(i)
        assert bool(math.prod(sh)) or not shape or not nonempty[i]
        cover[tuple(slice(a, a + n) for a, n in zip(start, sh, strict=True))] += 1
    assert (cover == 1).all()
    # every slice is written by exactly one mesh position
    writers = np.zeros(len(s), dtype=np.int64)
    vectorized = s.writers(5)  # rank 0's view of who wrote what, for every rank at once
    for r in range(nprocs):
        coords = np.unravel_index(r, layout.mesh_shape)
        unused = [
            (n, k)
            for n, k in zip(s.spec.dim_names, s.spec.mesh_shape, strict=True)
            if n not in s.spec.specs
        ]
        rep = 0
        for n, k in unused:
            rep = rep * k + int(coords[s.spec.dim_names.index(n)])
        assert s.replica_index([int(c) for c in coords]) == rep
        i = s.written_by([int(c) for c in coords], ordinal=5)
        assert vectorized[r] == (-1 if i is None else i)
        if i is not None:
            writers[i] += 1
    assert (writers[nonempty] == 1).all() and (writers[~nonempty] == 0).all()


def _good() -> dict:
    spec = LayoutSpec(("x", "unsharded"), ("x",), (2,))
    slicing = DerivedSlicing((6, 4), spec, 8, REPLICA_SPLIT_BYTES)
    entry = TensorEntry(
        W, "w", np.dtype("<f8"), (6, 4), 4096, spec, slicing, np.array([7, 9], dtype=np.uint32)
    )
    state = TensorEntry(
        "s",
        "s%",
        np.dtype("|u1"),
        (5,),
        5000,
        None,
        ListedSlicing(np.array([[0]]), np.array([[5]])),
        np.array([3], dtype=np.uint32),
    )
    index = CheckpointIndex(
        "ckpt-1.data-0123456789abcdef.h5", 8192, {entry.key: entry, "s": state}, 2, 1.0
    )
    return json.loads(index.to_json())


W = "w/.ATTRIBUTES/VARIABLE_VALUE"


def _set(path: list, value: object):
    def apply(doc: dict) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value

    return apply


def _del(path: list):
    def apply(doc: dict) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return apply


def _crcs(n: int) -> str:
    return base64.b64encode(np.zeros(n, dtype="<u4").tobytes()).decode()


HOSTILE = {
    "not an object": (lambda d: d.clear() or d.update(format="nope"), "not an hpckpt index"),
    "version 3": (_set(["version"], 3), "version 3"),
    "version is a bool": (_set(["version"], True), "wrong type"),
    "unknown checksum": (_set(["checksum"], "md5"), "unknown checksum"),
    "data file with ..": (
        _set(["data_file", "name"], "../x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "absolute data file": (
        _set(["data_file", "name"], "/tmp/x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "hidden data file": (
        _set(["data_file", "name"], ".x.data-0123456789abcdef.h5"),
        "bad data file name",
    ),
    "negative size": (_set(["data_file", "size"], -1), "bad data file size"),
    "no tensors": (_del(["tensors"]), "lacks 'tensors'"),
    "no layouts": (_del(["layouts"]), "lacks 'layouts'"),
    "NUL key": (lambda d: d["tensors"].update({"a\x00b": d["tensors"].pop(W)}), "NUL"),
    "key with ..": (lambda d: d["tensors"].update({"a/../b": d["tensors"].pop(W)}), "'..'"),
    "absolute key": (lambda d: d["tensors"].update({"/etc": d["tensors"].pop(W)}), "absolute"),
    "dataset with slash": (_set(["tensors", W, "dataset"], "a/b"), "not a flat name"),
    "dataset ..": (_set(["tensors", W, "dataset"], ".."), "'..'"),
    "object dtype": (_set(["tensors", W, "dtype"], "|O"), "unsupported dtype"),
    "structured dtype": (_set(["tensors", W, "dtype"], [["a", "<f8"]]), "unsupported dtype"),
    "bad logical dtype": (_set(["tensors", W, "logical_dtype"], "../x"), "logical dtype"),
    "huge shape": (_set(["tensors", W, "shape"], [1 << 40, 4]), "more than the data file"),
    "negative dim": (_set(["tensors", W, "shape"], [-6, 4]), "bad shape"),
    "too many dims": (_set(["tensors", W, "shape"], [1] * 40), "bad shape"),
    "nbytes disagrees": (_set(["tensors", W, "nbytes"], 8), "nbytes disagrees"),
    "offset outside": (_set(["tensors", W, "offset"], 8190), "outside the data file"),
    "negative offset": (_set(["tensors", W, "offset"], -1), "not a valid offset"),
    "layout number out of range": (_set(["tensors", W, "layout"], 7), "bad layout"),
    "neither layout nor slices": (_set(["tensors", W, "layout"], None), "neither a layout"),
    "layout rank": (_set(["layouts", 0, "sharding_specs"], ["x"]), "layout rank"),
    "spec names no mesh dim": (
        _set(["layouts", 0, "sharding_specs"], ["q", "unsharded"]),
        "names no dimension",
    ),
    "mesh dim twice": (_set(["layouts", 0, "sharding_specs"], ["x", "x"]), "used twice"),
    "mesh zero size": (_set(["layouts", 0, "mesh", "shape"], [0]), "malformed layout"),
    "mesh of another size": (_set(["layouts", 0, "mesh", "shape"], [3]), "ranks that saved"),
    "mesh of 2**40 ranks": (_set(["layouts", 0, "mesh", "shape"], [1 << 40]), "bad mesh"),
    "duplicate mesh names": (
        lambda d: d["layouts"][0]["mesh"].update(dim_names=["x", "x"], shape=[1, 2]),
        "bad mesh",
    ),
    "splits of the wrong length": (
        _set(["layouts", 0, "splits"], {"x": [0, 6]}),
        "needs 3",
    ),
    "splits that do not fit the shape": (
        _set(["layouts", 0, "splits"], {"x": [0, 2, 5]}),
        "covers 5 elements",
    ),
    "checksums missing": (_del(["tensors", W, "checksums"]), "packed array of 2 checksums"),
    "too few checksums": (_set(["tensors", W, "checksums"], _crcs(1)), "packed array of 2"),
    "checksums not base64": (_set(["tensors", W, "checksums"], "!!!!!!!!!!!!"), "malformed"),
    "slices not a list": (_set(["tensors", "s", "slices"], {}), "no slice list"),
    "negative slice": (_set(["tensors", "s", "slices"], [[-1, 5]]), "bad value"),
    "slice outside": (_set(["tensors", "s", "slices"], [[3, 5]]), "outside the tensor"),
    "slice rank": (_set(["tensors", "s", "slices"], [[0]]), "malformed"),
    "a hole": (_set(["tensors", "s", "slices"], [[0, 4]]), "do not cover it exactly once"),
    "an overlap": (
        lambda d: d["tensors"]["s"].update(slices=[[0, 3], [2, 3]], checksums=_crcs(2)),
        "do not cover it exactly once",
    ),
    "structure checksum not an int": (
        _set(["data_file", "structure_checksum"], "1"),
        "bad data file structure checksum",
    ),
    "structure checksum of 33 bits": (
        _set(["data_file", "structure_checksum"], 1 << 32),
        "bad data file structure checksum",
    ),
    "graph not an object": (_set(["graph"], [1, 2]), "graph is not an object"),
    "bad library": (_set(["library"], {"a": 1}), "bad library"),
    "duplicate dataset": (
        lambda d: d["tensors"].update({"v": dict(d["tensors"][W])}),
        "used twice",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_documents_are_refused_with_a_clear_error(case: str) -> None:
    edit, text = HOSTILE[case]
    doc = _good()
    parse_index(json.dumps(doc))  # the unedited document is fine
    edit(doc)
    with pytest.raises(CorruptCheckpointError) as info:
        parse_index(json.dumps(doc), source="the-index")
    assert text in str(info.value), str(info.value)


def _v1() -> dict:
    """A version-1 index, as hpckpt 0.1 wrote it (every slice listed, JSON checksums)."""
    return {
        "format": "hpckpt",
        "version": 1,
        "created": 1.0,
        "nprocs": 2,
        "library": {},
        "checksum": "crc32c",
        "data_file": {"name": "ckpt-1.data-0123456789abcdef.h5", "size": 8192},
        "tensors": {
            W: {
                "dataset": "w",
                "dtype": "<f8",
                "shape": [6, 4],
                "offset": 4096,
                "nbytes": 192,
                "layout": {
                    "sharding_specs": ["x", "unsharded"],
                    "mesh": {"dim_names": ["x"], "shape": [2]},
                },
                "slices": [
                    {"start": [0, 0], "shape": [3, 4], "crc32c": 7},
                    {"start": [3, 0], "shape": [3, 4], "crc32c": 9},
                ],
            }
        },
        "graph": None,
    }


def test_version_1_indexes_are_read_in_both_modes() -> None:
    text = json.dumps(_v1())
    a, b = parse_index(text), parse_index(text, trusted=True)
    assert a == b
    e = a.tensors[W]
    assert a.version == 1 and e.sharding_specs == ("x", "unsharded")
    assert [(s.start, s.shape, s.checksum) for s in e.slices] == [
        ((0, 0), (3, 4), 7),
        ((3, 0), (3, 4), 9),
    ]
    # re-serialized in the current format, it reads back equal (but for the version)
    again = parse_index(a.to_json())
    assert again.version == 2 and again.tensors == a.tensors


@pytest.mark.parametrize(
    "edit,text",
    [
        (lambda d: d["tensors"][W]["slices"].pop(), "do not cover it exactly once"),
        (lambda d: d["tensors"][W]["slices"][1].update(start=[2, 0]), "do not cover"),
        (lambda d: d["tensors"][W]["slices"][0].update(start=[-1, 0]), "bad value"),
        (lambda d: d["tensors"][W]["slices"][0].pop("crc32c"), "malformed"),
    ],
    ids=["hole", "overlap", "negative", "no checksum"],
)
def test_hostile_version_1_indexes(edit, text) -> None:
    doc = _v1()
    edit(doc)
    with pytest.raises(CorruptCheckpointError, match=text):
        parse_index(json.dumps(doc))


def test_dataset_names_are_flat_and_distinct() -> None:
    ks = ["a/b/.ATTRIBUTES/VARIABLE_VALUE", "a.b/.ATTRIBUTES/VARIABLE_VALUE", "a/b", "a%2Eb"]
    ds = [dataset_name_for_key(k) for k in ks]
    assert len(set(ds)) == len(ds)
    assert all("/" not in d for d in ds)
    assert dataset_name_for_key("net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE") == "net.l1.kernel"


@pytest.mark.parametrize(
    "text,message",
    [
        (b"\xff\xfe garbage", "not valid JSON"),
        (b'{"format": "hpckpt", "version": 1', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"", "not valid JSON"),
    ],
    ids=["binary", "truncated", "nesting bomb", "empty"],
)
def test_unparseable_text_is_corrupt(text: bytes, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        parse_index(text)


def test_oversized_text_is_refused_before_parsing() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_INDEX_BYTES + 1

    with pytest.raises(CorruptCheckpointError, match="larger than"):
        parse_index(Huge(b"{}"))
