"""Tracked containers: lists, dicts, tuples and namedtuples in the object graph."""

from __future__ import annotations

import collections
import collections.abc as abc
from collections.abc import Iterable
from typing import Any

from ..variable import Variable
from .base import Trackable

__all__ = ["TrackedDict", "TrackedList", "children_of", "is_trackable", "wrap"]

_REJECTED = (abc.Set, collections.deque)


def wrap(value: Any) -> Any:
    """Wrap lists and dicts for tracking; rebuild tuples with wrapped contents.

    Plain ``list`` becomes :class:`TrackedList`; ``dict`` and ``OrderedDict`` become
    :class:`TrackedDict` (insertion-ordered). Subclasses of list or dict are left as
    they are when they hold no trackables, and rejected when they do.

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
        if any(is_trackable(v) for v in items):
            raise ValueError(
                f"cannot track a {type(value).__name__}: use a plain list or dict for "
                "Variables and trackables"
            )
        return value
    if isinstance(value, tuple):
        items = [wrap(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        cls: Any = type(value)
        return cls._make(items) if hasattr(value, "_fields") else cls(items)
    if isinstance(value, _REJECTED) or (
        isinstance(value, (abc.Mapping, abc.MutableSequence))
        and not isinstance(value, (str, bytes))
    ):
        raise ValueError(
            f"cannot track a {type(value).__name__} ({value!r:.60}): checkpoints track "
            "Variables, trackables, lists, dicts, tuples and namedtuples"
        )
    return value


def is_trackable(value: Any) -> bool:
    """Whether ``value`` is a node of the object graph."""
    if isinstance(value, (Trackable, Variable)):
        return True
    if isinstance(value, tuple):
        return any(is_trackable(v) for v in value)
    return False


class TrackedList(Trackable, list):
    """A list whose trackable items are dependencies named by their index."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        list.__init__(self, (wrap(v) for v in items))

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        return [(str(i), v) for i, v in enumerate(self) if is_trackable(v)]

    def _after_change(self) -> None:
        st = self._hpckpt()
        for name in list(st.deferred):
            i = int(name) if name.isdigit() else -1
            if 0 <= i < len(self) and is_trackable(self[i]):
                self._run_deferred(name, self[i])

    def append(self, value: Any) -> None:
        list.append(self, wrap(value))
        self._after_change()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, [wrap(v) for v in values])
        self._after_change()

    def insert(self, index: Any, value: Any) -> None:
        list.insert(self, index, wrap(value))
        self._after_change()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            list.__setitem__(self, index, [wrap(v) for v in value])
        else:
            list.__setitem__(self, index, wrap(value))
        self._after_change()

    def __iadd__(self, values: Iterable[Any]) -> TrackedList:  # type: ignore[override, misc]
        self.extend(values)
        return self

    def __repr__(self) -> str:
        return f"TrackedList({list.__repr__(self)})"


class TrackedDict(Trackable, dict):
    """A dict whose trackable values are dependencies named by their (string) keys."""

    def __init__(self, items: Any = (), **kwargs: Any) -> None:
        dict.__init__(self)
        for k, v in dict(items, **kwargs).items():
            self[k] = v

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.items() if is_trackable(v)]

    def __setitem__(self, key: Any, value: Any) -> None:
        value = wrap(value)
        if is_trackable(value) and not isinstance(key, str):
            raise ValueError(
                f"a tracked dict needs string keys for trackable values, got key {key!r}"
            )
        dict.__setitem__(self, key, value)
        if isinstance(key, str) and is_trackable(value):
            self._run_deferred(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __repr__(self) -> str:
        return f"TrackedDict({dict.__repr__(self)})"


def children_of(obj: Any) -> list[tuple[str, Any]]:
    """The named dependencies of a graph node, in a deterministic order."""
    if isinstance(obj, Trackable):
        return obj._checkpoint_children()
    if isinstance(obj, tuple):
        names = obj._fields if hasattr(obj, "_fields") else [str(i) for i in range(len(obj))]
        return [(n, v) for n, v in zip(names, obj, strict=True) if is_trackable(v)]
    return []
