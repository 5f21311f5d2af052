"""Small reference optimizers whose state is slot variables: SGD (momentum) and Adam.

Gradients are local shards (``(local_grad, variable)`` pairs); every update is
elementwise, so results do not depend on how variables are sharded.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .graph import Module
from .layout import Layout
from .mesh import Mesh, default_mesh
from .variable import Variable

__all__ = ["SGD", "Adam", "Optimizer"]


class Optimizer(Module):
    """Base of the reference optimizers: an ``iterations`` counter and slot variables.

    ``iterations`` is replicated on ``mesh`` (default: the 1-D mesh over
    ``MPI.COMM_WORLD``); pass the mesh of a :class:`~hpckpt.DTensorCheckpoint`
    that lives on a sub-communicator.

    Collective: ``apply_gradients`` may create slots (and restore pending values
    for them), so call it on all ranks with the variables in the same order.
    """

    _slot_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float, *, mesh: Mesh | None = None) -> None:
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)
        mesh = default_mesh() if mesh is None else mesh
        self.iterations = Variable(
            np.int64(0), layout=Layout.replicated(mesh, 0), name="iterations"
        )

    def add_slot(self, var: Variable, slot_name: str) -> Variable:
        """The slot ``slot_name`` of ``var``, created as zeros (or restored) if missing.

        A restore creates (and fills) the slots this optimizer uses as soon as both
        the optimizer and ``var`` exist, as TensorFlow's optimizers do.
        """
        slot = self._get_slot(var, slot_name)
        if slot is None:
            slot = Variable.from_local(
                np.zeros_like(var.local), var.layout, var.shape, name=f"{var.name}/{slot_name}"
            )
            self._add_slot(var, slot_name, slot)
        return slot

    def _create_slot_for_restore(self, variable: Variable, slot_name: str) -> Variable | None:
        """Create a slot this optimizer uses when a restore holds a value for it."""
        if slot_name not in self._slot_names:
            return None
        return self.add_slot(variable, slot_name)

    def get_slot(self, var: Variable, slot_name: str) -> Variable:
        """The slot ``slot_name`` of ``var``.

        Raises:
            KeyError: No such slot (yet).
        """
        slot = self._get_slot(var, slot_name)
        if slot is None:
            raise KeyError(f"no slot {slot_name!r} for variable {var.name!r}")
        return slot

    def get_slot_names(self) -> list[str]:
        """The names of the slots this optimizer creates."""
        return list(self._slot_names)

    def apply_gradients(self, grads_and_vars: Iterable[tuple[np.ndarray, Variable]]) -> None:
        """Apply one step of local-shard gradients, then increment ``iterations``."""
        pairs = list(grads_and_vars)
        for g, v in pairs:
            g = np.asarray(g)
            if g.shape != v.local.shape:
                raise ValueError(
                    f"gradient of shape {g.shape} does not match the local shard "
                    f"{v.local.shape} of {v.name!r}"
                )
            for name in self._slot_names:
                self.add_slot(v, name)
        step = int(self.iterations.local) + 1
        for g, v in pairs:
            self._update(np.asarray(g, dtype=v.dtype), v, step)
        self.iterations.local[...] = step

    def _update(self, grad: np.ndarray, var: Variable, step: int) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Gradient descent with optional momentum (slot ``momentum``)."""

    def __init__(
        self, learning_rate: float = 0.01, momentum: float = 0.0, *, mesh: Mesh | None = None
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self._slot_names = ("momentum",) if momentum else ()
        super().__init__(learning_rate, mesh=mesh)
        self.momentum = float(momentum)

    def _update(self, grad: np.ndarray, var: Variable, step: int) -> None:
        lr = var.dtype.type(self.learning_rate)
        if self.momentum:
            m = self.get_slot(var, "momentum").local
            m *= var.dtype.type(self.momentum)
            m -= lr * grad
            var.local[...] += m
        else:
            var.local[...] -= lr * grad


class Adam(Optimizer):
    """Adam (slots ``m`` and ``v``), with Keras's update rule."""

    _slot_names = ("m", "v")

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        *,
        mesh: Mesh | None = None,
    ) -> None:
        for name, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        super().__init__(learning_rate, mesh=mesh)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def _update(self, grad: np.ndarray, var: Variable, step: int) -> None:
        t = var.dtype.type
        m = self.get_slot(var, "m").local
        v = self.get_slot(var, "v").local
        lr = self.learning_rate * np.sqrt(1 - self.beta_2**step) / (1 - self.beta_1**step)
        m += (grad - m) * t(1 - self.beta_1)
        v += (grad * grad - v) * t(1 - self.beta_2)
        var.local[...] -= t(lr) * m / (np.sqrt(v) + t(self.epsilon))
