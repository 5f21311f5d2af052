"""``Module``: a container of state that tracks its attributes, like ``tf.Module``."""

from __future__ import annotations

from typing import Any

from .base import Trackable
from .containers import is_trackable, wrap

__all__ = ["Module"]


class Module(Trackable):
    """A container of state that tracks its attributes, like ``tf.Module``.

    Assigning a Variable, a trackable, a list, a dict, a tuple or a namedtuple to
    an attribute makes it a named dependency; lists and dicts are wrapped so that
    later ``append``/``[k] = v`` are tracked too (and restore values waiting for
    them). Sets and other containers raise ``ValueError``; other values (numbers,
    strings, arrays, callables) are ignored by checkpoints.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_hpckpt"):
            object.__setattr__(self, name, value)
            return
        value = wrap(value)
        object.__setattr__(self, name, value)
        if is_trackable(value):
            self._track_child(name, value)
        else:
            self._untrack_child(name)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._untrack_child(name)
