"""The trackable base: named dependencies, deferred restores, slots, Python state.

Pure logic: no MPI, no files. The IO of deferred restores is done by a callback
(:class:`PendingRestore`) that the restore layer supplies.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..variable import Variable

__all__ = ["PendingRestore", "PythonState", "Trackable"]


@dataclass
class PendingRestore:
    """A saved node waiting for its live object: ``restorer(node, obj)`` restores it."""

    node: int
    restorer: Callable[[int, Any], None]


@dataclass
class _TrackState:
    children: dict[str, Any] = field(default_factory=dict)
    deferred: dict[str, list[PendingRestore]] = field(default_factory=dict)
    slots: dict[int, tuple[Variable, dict[str, Variable]]] = field(default_factory=dict)
    deferred_slots: dict[tuple[int, str], list[PendingRestore]] = field(default_factory=dict)
    restore_uid: int = 0  # the restore() call that last assigned this object's value

    def copy(self) -> _TrackState:
        """A state for a shallow copy: the same dependencies and slots, its own dicts."""
        new = _TrackState(dict(self.children))
        new.slots = {k: (v, dict(slots)) for k, (v, slots) in self.slots.items()}
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> _TrackState:
        """A copy for a deep-copied trackable: its dependencies and slots, copied.

        Pending restores belong to the original object and are not copied; slots are
        re-keyed by the copied variables.
        """
        new = _TrackState()
        memo[id(self)] = new
        new.children = copy.deepcopy(self.children, memo)
        for var, slots in self.slots.values():
            v = copy.deepcopy(var, memo)
            new.slots[id(v)] = (v, copy.deepcopy(slots, memo))
        return new


class Trackable:
    """Base of every object with checkpointable dependencies.

    Subclasses name their dependencies with :meth:`_track_child`; :class:`Module`
    does it on attribute assignment. A trackable can own slot variables
    (:meth:`_add_slot`), as optimizers do.

    The underscore methods are the trackable protocol (as in TensorFlow): the
    graph walk and the restore layer call them on any trackable; they are not
    meant for application code.
    """

    def __copy__(self) -> Trackable:
        """A shallow copy: the same dependencies, tracked apart from the original's."""
        cls = type(self)
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        st = self.__dict__.get("_hpckpt_state")
        if st is not None:
            new.__dict__["_hpckpt_state"] = st.copy()
        return new

    def _hpckpt(self) -> _TrackState:
        st = self.__dict__.get("_hpckpt_state")
        if st is None:
            st = _TrackState()
            object.__setattr__(self, "_hpckpt_state", st)
        return st

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        """The named dependencies, in a deterministic order."""
        return list(self._hpckpt().children.items())

    def _track_child(self, name: str, value: Any) -> None:
        """Add (or replace) dependency ``name``; run a pending restore for it."""
        st = self._hpckpt()
        st.children[name] = value
        self._run_deferred(name, value)

    def _restorable(self) -> bool:
        """Whether a restore may match this object's children (``False``: a container
        changed in a way that renamed its items)."""
        return True

    def _untrack_child(self, name: str) -> None:
        self._hpckpt().children.pop(name, None)

    def _run_deferred(self, name: str, value: Any) -> None:
        pending = self._hpckpt().deferred.pop(name, None)
        for p in pending or ():
            p.restorer(p.node, value)

    def _defer_target(self, name: str) -> Trackable:
        """The object that will track a future child ``name`` (this one, by default).

        A ``Checkpoint`` with a ``root`` passes its root's future children on to it.
        """
        return self

    def _defer(self, name: str, pending: PendingRestore) -> None:
        self._hpckpt().deferred.setdefault(name, []).append(pending)

    # -- slots --

    def _add_slot(self, variable: Variable, slot_name: str, slot: Variable) -> Variable:
        """Register ``slot`` as this object's slot ``slot_name`` for ``variable``.

        A checkpointed value waiting for this slot is restored into it at once
        (collective in that case, like every restore).
        """
        if not isinstance(variable, Variable) or not isinstance(slot, Variable):
            raise TypeError("slots map an hpckpt.Variable to an hpckpt.Variable")
        st = self._hpckpt()
        st.slots.setdefault(id(variable), (variable, {}))[1][slot_name] = slot
        for p in st.deferred_slots.pop((id(variable), slot_name), None) or ():
            p.restorer(p.node, slot)
        return slot

    def _create_slot_for_restore(self, variable: Variable, slot_name: str) -> Variable | None:
        """The slot factory: create slot ``slot_name`` of ``variable`` for a restore.

        A restore that finds a checkpointed slot value for ``variable``, while both
        ``variable`` and this object exist but the slot does not, calls this to create
        the slot (and then fills it), as TensorFlow's optimizers do. Override it in a
        trackable that owns slots; return the new slot (registered with
        :meth:`_add_slot`), or ``None`` when this object does not create such a slot
        (the value then waits until the slot is added).
        """
        return None

    def _get_slot(self, variable: Variable, slot_name: str) -> Variable | None:
        entry = self._hpckpt().slots.get(id(variable))
        return None if entry is None else entry[1].get(slot_name)

    def _slot_items(self) -> list[tuple[Variable, str, Variable]]:
        """``(variable, slot_name, slot)`` for every slot this object owns."""
        return [
            (var, name, slot)
            for var, slots in self._hpckpt().slots.values()
            for name, slot in slots.items()
        ]

    def _defer_slot(self, variable: Variable, slot_name: str, pending: PendingRestore) -> None:
        self._hpckpt().deferred_slots.setdefault((id(variable), slot_name), []).append(pending)


class PythonState(Trackable):
    """Python state saved as a string or bytes (data-iterator position, RNG state).

    Subclasses implement :meth:`serialize` and :meth:`deserialize`. The value of
    rank 0 is saved; on restore every rank deserializes it. ``deserialize`` gets
    what ``serialize`` returned: a ``str`` or ``bytes``, as saved.
    """

    def serialize(self) -> str | bytes:
        """Return the state as a string (or bytes)."""
        raise NotImplementedError

    def deserialize(self, string_value: str | bytes) -> None:
        """Restore the state from what :meth:`serialize` returned (a ``str`` or ``bytes``)."""
        raise NotImplementedError
