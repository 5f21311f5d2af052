"""The status of a restore: assertions on how much of the checkpoint was matched."""

from __future__ import annotations

from typing import Any

from ..graph import build_save_graph
from .restore import RestoreContext

__all__ = ["CheckpointLoadStatus", "InitializationOnlyStatus"]


class CheckpointLoadStatus:
    """The status of a restore; its assertions check how much was matched."""

    def __init__(self, ctx: RestoreContext, root: Any) -> None:
        self._ctx = ctx
        self._root = root

    def _live_unmatched(self) -> list[str]:
        """Paths of live objects holding values (variables, Python state) not matched.

        As in TF, containers and modules without values of their own are not counted.
        """
        g = build_save_graph(self._root, check=False)
        return [
            node.path
            for node in g.nodes
            if node.key is not None and not self._ctx.is_matched(node.obj)
        ]

    def assert_consumed(self) -> CheckpointLoadStatus:
        """Assert that every checkpointed value was restored and every live object matched.

        Raises:
            AssertionError: Something is unmatched, in either direction.
        """
        missing = self._ctx.unmatched_keys()
        if missing:
            raise AssertionError(
                f"unresolved values in checkpoint {self._ctx.prefix!r}: {len(missing)} not "
                f"restored: {missing[:10]}"
            )
        live = self._live_unmatched()
        if live:
            raise AssertionError(
                f"objects with no value in checkpoint {self._ctx.prefix!r}: {live[:10]}"
            )
        return self

    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Assert that every existing object in the graph was matched to the checkpoint.

        Raises:
            AssertionError: An existing object has no value in the checkpoint.
        """
        live = self._live_unmatched()
        if live:
            raise AssertionError(
                f"objects with no value in checkpoint {self._ctx.prefix!r}: {live[:10]}"
            )
        return self

    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Assert that something aside from the root object was matched.

        A very weak assertion (as in TensorFlow, ``save_counter`` counts): useful as
        a sanity check where parts of the checkpoint and of the live objects may
        legitimately have no counterpart.

        Raises:
            AssertionError: Nothing but the root was matched.
        """
        for n, ref in self._ctx.matched.items():
            if n != 0 and ref() is not None:
                return self
        raise AssertionError(
            f"nothing except the root object was matched in checkpoint {self._ctx.prefix!r}"
        )

    def expect_partial(self) -> CheckpointLoadStatus:
        """Silence the warning about values that were never restored."""
        self._ctx.expect_partial = True
        return self

    def run_restore_ops(self, session: Any = None) -> None:
        """No-op (values are restored eagerly); kept for compatibility."""

    def initialize_or_restore(self, session: Any = None) -> None:
        """No-op (values are restored eagerly); kept for compatibility."""


class InitializationOnlyStatus:
    """The status of ``restore(None)``: nothing was restored; assertions fail."""

    def _fail(self) -> None:
        raise AssertionError("no checkpoint was given (save_path=None): nothing was restored")

    def assert_consumed(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def assert_existing_objects_matched(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def assert_nontrivial_match(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def expect_partial(self) -> InitializationOnlyStatus:
        return self

    def run_restore_ops(self, session: Any = None) -> None:
        """No-op."""

    def initialize_or_restore(self, session: Any = None) -> None:
        """No-op: variables already hold their initial values."""
