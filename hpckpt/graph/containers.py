"""Tracked containers: lists, dicts, tuples and namedtuples in the object graph.

As in TensorFlow (``ListWrapper``, ``_DictWrapper``), a list or dict assigned to a
tracked attribute is *wrapped*, not copied: the wrapper keeps the caller's own
object as its storage, so a change made through either one shows in the other.
Checkpoints name list items by index and dict items by key. A change that would
silently give tracked items other names (deleting, replacing, inserting or moving
a trackable item of a list) or that bypassed the wrapper (a change made to the
caller's object directly) makes the container refuse to be saved with
``ValueError`` ("Unable to save ..."), instead of saving the values under names
that no longer identify the objects they came from.

Each wrapper is also a real ``list``/``dict`` (for ``isinstance`` and C code that
reads the built-in storage): that built-in storage mirrors the wrapped object as
of the last change made through the wrapper, which is also how a change made
around the wrapper is noticed.
"""

from __future__ import annotations

import collections
import collections.abc as abc
import copy
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..variable import Variable
from .base import Trackable

__all__ = ["TrackedDict", "TrackedList", "children_of", "is_trackable", "wrap"]

_REJECTED = (abc.Set, collections.deque)


def wrap(value: Any) -> Any:
    """Wrap lists and dicts for tracking; rebuild tuples with wrapped contents.

    A plain ``list`` becomes a :class:`TrackedList` and a ``dict`` or ``OrderedDict`` a
    :class:`TrackedDict`, each wrapping the caller's object itself (its items are
    replaced in place by their wrapped values). Subclasses of list or dict are left as
    they are when they hold no trackables, and rejected when they do. A namedtuple is
    rebuilt by calling its class with its fields as keyword arguments (as TensorFlow
    does); when that fails the tuple is kept as it is and cannot be saved.

    Raises:
        ValueError: ``value`` is a set or another container that cannot be tracked.
    """
    if isinstance(value, (Trackable, Variable)):
        return value
    if type(value) is list:
        return TrackedList(value)
    if type(value) in (dict, collections.OrderedDict):
        return TrackedDict(value)
    if isinstance(value, (list, dict)):
        # Subclasses (defaultdict, Counter, ...) keep their behaviour untouched; they
        # may not hold trackables, which their mutations could not track.
        items = value.values() if isinstance(value, dict) else value
        if any(_holds_trackables(v) for v in items):
            raise ValueError(
                f"cannot track a {type(value).__name__}: use a plain list or dict for "
                "Variables and trackables"
            )
        return value
    if isinstance(value, tuple):
        return _wrap_tuple(value)
    if isinstance(value, _REJECTED) or (
        isinstance(value, (abc.Mapping, abc.MutableSequence))
        and not isinstance(value, (str, bytes))
    ):
        raise ValueError(
            f"cannot track a {type(value).__name__} ({value!r:.60}): checkpoints track "
            "Variables, trackables, lists, dicts, tuples and namedtuples"
        )
    return value


def _wrap_tuple(value: tuple) -> tuple:
    items = [wrap(v) for v in value]
    if all(a is b for a, b in zip(items, value, strict=True)):
        return value
    cls: Any = type(value)
    fields = getattr(value, "_fields", None)
    try:
        if fields is not None:
            return cls(**dict(zip(fields, items, strict=True)))
        return cls(items)
    except TypeError:
        # e.g. a namedtuple subclass whose __new__ takes other arguments: it keeps its
        # unwrapped lists and dicts, whose changes cannot be tracked; saving it raises.
        return value


def _needs_wrap(v: Any) -> bool:
    return type(v) in (list, dict, collections.OrderedDict)


def _holds_trackables(value: Any) -> bool:
    if isinstance(value, (Trackable, Variable)):
        return True
    return isinstance(value, tuple) and any(_holds_trackables(v) for v in value)


def is_trackable(value: Any) -> bool:
    """Whether ``value`` is a node of the object graph."""
    if isinstance(value, (Trackable, Variable)):
        return True
    if isinstance(value, tuple):
        return any(is_trackable(v) or _needs_wrap(v) for v in value)
    return False


def _same_items(a: Any, b: Any, eq: Callable[[Any, Any], Any]) -> bool:
    """Whether two containers hold the same items (``False`` if comparing fails)."""
    try:
        return bool(eq(a, b))
    except Exception:
        return False


class TrackedList(Trackable, list):
    """A list whose trackable items are dependencies named by their index.

    Wraps the caller's list (see the module docstring). ``append``, ``extend`` and
    ``*=`` by a positive number keep item names stable and restore values waiting
    for new items; deleting, replacing, inserting or moving a trackable item, or
    changing the wrapped list directly, makes the list unsaveable.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, wrapped: Iterable[Any] | None = None) -> None:
        storage = wrapped if type(wrapped) is list else list(wrapped or ())
        for i, v in enumerate(storage):
            w = wrap(v)
            if w is not v:
                storage[i] = w
        self._hpckpt_storage: list = storage
        self._hpckpt_mutated = False  # a non-append change touched trackable items
        self._hpckpt_external = False  # the wrapped list changed around the wrapper
        list.__init__(self, storage)

    # -- bookkeeping --

    def _sync(self) -> None:
        list.__setitem__(self, slice(None), self._hpckpt_storage)

    def _check_external(self) -> None:
        """Notice a change made to the wrapped list around the wrapper."""
        st = self._hpckpt_storage
        if list.__len__(self) != len(st) or not _same_items(self, st, list.__eq__):
            if not self._hpckpt_mutated:
                self._hpckpt_external = True
            self._sync()

    def _dirty(self) -> bool:
        self._check_external()
        return self._hpckpt_mutated or self._hpckpt_external

    def _mark_if_trackables(self, extra: Any = None) -> None:
        if (
            self._hpckpt_mutated
            or is_trackable(extra)
            or any(is_trackable(v) for v in self._hpckpt_storage)
        ):
            self._hpckpt_mutated = True

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        self._check_external()
        if self._hpckpt_mutated:
            raise ValueError(
                f"Unable to save the object {self!r:.200} (a list wrapper constructed to "
                "track trackable objects): a list element was replaced (__setitem__, "
                "__setslice__), deleted (__delitem__, __delslice__, pop, remove, clear) "
                "or moved (insert, sort, reverse). Checkpoints name list items by index, "
                "so tracking is for append-only lists. If this list need not be "
                "checkpointed, keep it in an object that is not tracked."
            )
        if self._hpckpt_external:
            raise ValueError(
                f"Unable to save the object {self!r:.200} (a list wrapper constructed to "
                "track trackable objects): the wrapped list was modified outside the "
                "wrapper, so its items may no longer have the names they had when they "
                "were added. If this list need not be checkpointed, keep it in an "
                "object that is not tracked."
            )
        return [(str(i), v) for i, v in enumerate(self._hpckpt_storage) if is_trackable(v)]

    def _restorable(self) -> bool:
        return not self._dirty()

    def _after_append(self) -> None:
        st = self._hpckpt()
        if not st.deferred or self._hpckpt_mutated or self._hpckpt_external:
            return
        storage = self._hpckpt_storage
        for name in list(st.deferred):
            i = int(name) if name.isdigit() else -1
            if 0 <= i < len(storage) and is_trackable(storage[i]):
                self._run_deferred(name, storage[i])

    # -- reading --

    def __getitem__(self, index: Any) -> Any:
        return self._hpckpt_storage[index]

    def __len__(self) -> int:
        return len(self._hpckpt_storage)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._hpckpt_storage)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._hpckpt_storage)

    def __contains__(self, value: object) -> bool:
        return value in self._hpckpt_storage

    def count(self, value: Any) -> int:
        return self._hpckpt_storage.count(value)

    def index(self, value: Any, *args: Any) -> int:
        return self._hpckpt_storage.index(value, *args)

    def copy(self) -> TrackedList:  # type: ignore[override]
        return self.__copy__()

    @staticmethod
    def _other(other: Any) -> Any:
        return other._hpckpt_storage if isinstance(other, TrackedList) else other

    def __eq__(self, other: object) -> bool:
        return self._hpckpt_storage == self._other(other)

    def __ne__(self, other: object) -> bool:
        return self._hpckpt_storage != self._other(other)

    def __lt__(self, other: Any) -> bool:
        return self._hpckpt_storage < self._other(other)

    def __le__(self, other: Any) -> bool:
        return self._hpckpt_storage <= self._other(other)

    def __gt__(self, other: Any) -> bool:
        return self._hpckpt_storage > self._other(other)

    def __ge__(self, other: Any) -> bool:
        return self._hpckpt_storage >= self._other(other)

    def __add__(self, other: Any) -> list:  # type: ignore[override]
        return self._hpckpt_storage + self._other(other)

    def __radd__(self, other: Any) -> list:
        return self._other(other) + self._hpckpt_storage

    def __mul__(self, n: Any) -> list:  # type: ignore[override]
        return self._hpckpt_storage * n

    def __rmul__(self, n: Any) -> list:  # type: ignore[override]
        return n * self._hpckpt_storage

    def __sizeof__(self) -> int:
        return list.__sizeof__(self) + sys.getsizeof(self._hpckpt_storage)

    def __repr__(self) -> str:
        return f"TrackedList({self._hpckpt_storage!r})"

    # -- append-only changes: item names stay stable --

    def append(self, value: Any) -> None:
        self._check_external()
        value = wrap(value)
        self._hpckpt_storage.append(value)
        list.append(self, value)
        self._after_append()

    def extend(self, values: Iterable[Any]) -> None:
        self._check_external()
        new = [wrap(v) for v in values]
        self._hpckpt_storage.extend(new)
        list.extend(self, new)
        self._after_append()

    def __iadd__(self, values: Iterable[Any]) -> TrackedList:  # type: ignore[override, misc]
        self.extend(values)
        return self

    def __imul__(self, n: Any) -> TrackedList:  # type: ignore[override, misc]
        if n <= 0:
            self._check_external()
            self._mark_if_trackables()
            self._hpckpt_storage *= n
            self._sync()
            return self
        items = list(self._hpckpt_storage)
        for _ in range(n - 1):
            self.extend(items)
        return self

    # -- changes that may rename items --

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_external()
        storage = self._hpckpt_storage
        if isinstance(index, slice):
            before = list(storage)
            storage[index] = value
            for i in range(max(len(before), len(storage))):
                old = before[i] if i < len(before) else None
                if is_trackable(old):
                    self._hpckpt_mutated = True
                if i < len(storage) and storage[i] is not None and storage[i] is not old:
                    storage[i] = wrap(storage[i])
        else:
            if is_trackable(storage[index]):
                self._hpckpt_mutated = True
            storage[index] = wrap(value)
        self._sync()
        self._after_append()

    def __delitem__(self, index: Any) -> None:
        self._check_external()
        self._mark_if_trackables()
        del self._hpckpt_storage[index]
        self._sync()

    def insert(self, index: Any, value: Any) -> None:
        self._check_external()
        value = wrap(value)
        self._mark_if_trackables(value)
        self._hpckpt_storage.insert(index, value)
        self._sync()

    def pop(self, index: Any = -1) -> Any:
        self._check_external()
        self._mark_if_trackables()
        out = self._hpckpt_storage.pop(index)
        self._sync()
        return out

    def remove(self, value: Any) -> None:
        self._check_external()
        self._mark_if_trackables()
        self._hpckpt_storage.remove(value)
        self._sync()

    def clear(self) -> None:
        self._check_external()
        self._mark_if_trackables()
        self._hpckpt_storage.clear()
        self._sync()

    def reverse(self) -> None:
        self._check_external()
        self._mark_if_trackables()
        self._hpckpt_storage.reverse()
        self._sync()

    def sort(self, *, key: Any = None, reverse: bool = False) -> None:
        self._check_external()
        self._mark_if_trackables()
        self._hpckpt_storage.sort(key=key, reverse=reverse)
        self._sync()

    # -- copies and pickling --

    def __copy__(self) -> TrackedList:
        self._check_external()
        new = TrackedList(list(self._hpckpt_storage))
        new._hpckpt_mutated = self._hpckpt_mutated
        new._hpckpt_external = self._hpckpt_external
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedList:
        self._check_external()
        new = TrackedList.__new__(TrackedList)
        memo[id(self)] = new
        TrackedList.__init__(new, copy.deepcopy(self._hpckpt_storage, memo))
        new._hpckpt_mutated = self._hpckpt_mutated
        new._hpckpt_external = self._hpckpt_external
        return new

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (TrackedList, (self._hpckpt_storage,))


class TrackedDict(Trackable, dict):
    """A dict whose trackable values are dependencies named by their (string) keys.

    Wraps the caller's dict (see the module docstring). Any change made through the
    wrapper is fine (names are keys); a change made to the wrapped dict directly
    makes it unsaveable.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, wrapped: Any = None, **kwargs: Any) -> None:
        if type(wrapped) in (dict, collections.OrderedDict) and not kwargs:
            storage = wrapped
        else:
            storage = dict(wrapped or (), **kwargs)
        for k, v in list(storage.items()):
            w = self._checked(k, v)
            if w is not v:
                storage[k] = w
        self._hpckpt_storage: dict = storage
        self._hpckpt_external = False
        dict.__init__(self, storage)

    @staticmethod
    def _checked(key: Any, value: Any) -> Any:
        value = wrap(value)
        if is_trackable(value) and not isinstance(key, str):
            raise ValueError(
                f"a tracked dict needs string keys for trackable values, got key {key!r}"
            )
        return value

    # -- bookkeeping --

    def _sync(self) -> None:
        dict.clear(self)
        dict.update(self, self._hpckpt_storage)

    def _check_external(self) -> None:
        st = self._hpckpt_storage
        if dict.__len__(self) != len(st) or not _same_items(self, st, dict.__eq__):
            self._hpckpt_external = True
            self._sync()

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        self._check_external()
        if self._hpckpt_external:
            raise ValueError(
                f"Unable to save the object {self!r:.200} (a dict wrapper constructed to "
                "track trackable objects): the wrapped dict was modified outside the "
                "wrapper. If this dict need not be checkpointed, keep it in an object "
                "that is not tracked."
            )
        return [(k, v) for k, v in self._hpckpt_storage.items() if is_trackable(v)]

    def _restorable(self) -> bool:
        self._check_external()
        return not self._hpckpt_external

    # -- reading --

    def __getitem__(self, key: Any) -> Any:
        return self._hpckpt_storage[key]

    def __len__(self) -> int:
        return len(self._hpckpt_storage)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._hpckpt_storage)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._hpckpt_storage)

    def __contains__(self, key: object) -> bool:
        return key in self._hpckpt_storage

    def get(self, key: Any, default: Any = None) -> Any:
        return self._hpckpt_storage.get(key, default)

    def keys(self) -> Any:
        return self._hpckpt_storage.keys()

    def values(self) -> Any:
        return self._hpckpt_storage.values()

    def items(self) -> Any:
        return self._hpckpt_storage.items()

    def copy(self) -> TrackedDict:  # type: ignore[override]
        return self.__copy__()

    @staticmethod
    def _other(other: Any) -> Any:
        return other._hpckpt_storage if isinstance(other, TrackedDict) else other

    def __eq__(self, other: object) -> bool:
        return self._hpckpt_storage == self._other(other)

    def __ne__(self, other: object) -> bool:
        return self._hpckpt_storage != self._other(other)

    def __or__(self, other: Any) -> dict:  # type: ignore[override]
        return dict(self._hpckpt_storage) | self._other(other)

    def __ror__(self, other: Any) -> dict:  # type: ignore[override]
        return self._other(other) | dict(self._hpckpt_storage)

    def __sizeof__(self) -> int:
        return dict.__sizeof__(self) + sys.getsizeof(self._hpckpt_storage)

    def __repr__(self) -> str:
        return f"TrackedDict({self._hpckpt_storage!r})"

    # -- changes --

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_external()
        value = self._checked(key, value)
        self._hpckpt_storage[key] = value
        dict.__setitem__(self, key, value)
        if isinstance(key, str) and is_trackable(value) and not self._hpckpt_external:
            self._run_deferred(key, value)

    def __delitem__(self, key: Any) -> None:
        self._check_external()
        del self._hpckpt_storage[key]
        dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override, misc]
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self._hpckpt_storage:
            self[key] = default
        return self._hpckpt_storage[key]

    _MISSING = object()

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        self._check_external()
        if default is TrackedDict._MISSING:
            out = self._hpckpt_storage.pop(key)
        else:
            out = self._hpckpt_storage.pop(key, default)
        self._sync()
        return out

    def popitem(self) -> tuple[Any, Any]:
        self._check_external()
        out = self._hpckpt_storage.popitem()
        self._sync()
        return out

    def clear(self) -> None:
        self._check_external()
        self._hpckpt_storage.clear()
        dict.clear(self)

    # -- copies and pickling --

    def __copy__(self) -> TrackedDict:
        self._check_external()
        new = TrackedDict(dict(self._hpckpt_storage))
        new._hpckpt_external = self._hpckpt_external
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedDict:
        self._check_external()
        new = TrackedDict.__new__(TrackedDict)
        memo[id(self)] = new
        TrackedDict.__init__(new, copy.deepcopy(self._hpckpt_storage, memo))
        new._hpckpt_external = self._hpckpt_external
        return new

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (TrackedDict, (self._hpckpt_storage,))


def children_of(obj: Any, *, check: bool = True) -> list[tuple[str, Any]]:
    """The named dependencies of a graph node, in a deterministic order.

    Args:
        obj: The node.
        check: Raise ``ValueError`` for a container that cannot be saved (a list
            changed in a way that renames its items, a namedtuple that could not be
            rebuilt around tracked containers). ``False`` lists what is there now.

    A namedtuple's items are named by field and by index (as in TensorFlow), so a
    checkpoint of a namedtuple and of a plain tuple match each other.
    """
    if isinstance(obj, Trackable):
        if not check and isinstance(obj, TrackedList):
            return [(str(i), v) for i, v in enumerate(obj._hpckpt_storage) if is_trackable(v)]
        if not check and isinstance(obj, TrackedDict):
            return [(k, v) for k, v in obj._hpckpt_storage.items() if is_trackable(v)]
        return obj._checkpoint_children()
    if isinstance(obj, tuple):
        if check and any(_needs_wrap(v) for v in obj):
            raise ValueError(
                f"Unable to save the tuple {obj!r:.200}: it holds a list or dict that could "
                f"not be tracked because {type(obj).__name__} cannot be rebuilt from its "
                "items (its __new__ takes other arguments than its fields). Keep tracked "
                "state in an object that is not a tuple."
            )
        pairs = [(str(i), v) for i, v in enumerate(obj) if is_trackable(v)]
        fields = getattr(obj, "_fields", None)
        if fields is not None:
            named = [(n, v) for n, v in zip(fields, obj, strict=False) if is_trackable(v)]
            pairs = named + pairs
        return pairs
    return []
