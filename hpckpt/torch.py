"""PyTorch glue: a trackable whose Variables alias a module's and an optimizer's tensors.

``TorchState(module, optimizer=None, scheduler=None)`` puts a PyTorch training state
into an hpckpt checkpoint without copies: every parameter (``requires_grad``
included) and persistent buffer, and every optimizer state tensor, is a Variable
whose :attr:`~hpckpt.Variable.local` is a numpy view of the tensor's own memory, so a
save reads the tensors directly and a restore writes straight into them. The
optimizer's state is created up front (Adam/AdamW: ``step``, ``exp_avg``,
``exp_avg_sq``; SGD with momentum: ``momentum_buffer``) so that a restore before the
first step has somewhere to go. The param groups (the current learning rate, ...)
and the scheduler's state are Python state (JSON).

Keys follow ``state_dict`` names: ``model/<name>``, ``optimizer/state/<i>/<name>``
(``i`` the parameter's index in ``optimizer.state_dict()``),
``optimizer/param_groups``, ``scheduler``.

Needs torch (``pip install hpckpt[torch]``); the core of hpckpt never imports it.
Tensors must live in CPU memory. bfloat16 and float8 tensors become ``ml_dtypes``
arrays (a view of the same bytes).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from .graph import PythonState, Trackable
from .layout import Layout
from .mesh import Mesh, default_mesh
from .variable import Variable

__all__ = ["TorchState", "tensor_as_numpy"]

_VIEWS = {  # torch dtypes numpy lacks: (same-width integer, ml_dtypes name)
    torch.bfloat16: (torch.int16, "bfloat16"),
    torch.float8_e4m3fn: (torch.uint8, "float8_e4m3fn"),
    torch.float8_e5m2: (torch.uint8, "float8_e5m2"),
    torch.float8_e4m3fnuz: (torch.uint8, "float8_e4m3fnuz"),
    torch.float8_e5m2fnuz: (torch.uint8, "float8_e5m2fnuz"),
}


def tensor_as_numpy(t: torch.Tensor) -> np.ndarray:
    """A writable numpy view of a CPU tensor's memory (no copy; any dtype hpckpt stores).

    Raises:
        TypeError: The tensor is not in CPU memory, or its dtype has no numpy view.
    """
    if t.device.type != "cpu":
        raise TypeError(
            f"TorchState aliases CPU tensors; this one is on {t.device} (move the model to "
            "the CPU, or copy its state to the host before saving)"
        )
    t = t.detach()
    view = _VIEWS.get(t.dtype)
    if view is None:
        try:
            return t.numpy()
        except TypeError as e:
            raise TypeError(f"tensors of dtype {t.dtype} cannot be checkpointed: {e}") from None
    import ml_dtypes

    return t.view(view[0]).numpy().view(getattr(ml_dtypes, view[1]))


def _scalar_dtype() -> torch.dtype:
    """The dtype of Adam's ``step`` counter (as ``torch.optim``'s own rule)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _eager_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's per-parameter state now (as its first ``step`` would)."""
    if isinstance(optimizer, torch.optim.Adam):  # AdamW included
        for group in optimizer.param_groups:
            if group.get("capturable") or group.get("fused"):
                raise TypeError(
                    "TorchState supports Adam/AdamW without capturable= or fused= (their "
                    "step counters live on the device)"
                )
            for p in group["params"]:
                state = optimizer.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
    elif isinstance(optimizer, torch.optim.SGD):
        for group in optimizer.param_groups:
            if not group["momentum"]:
                continue
            if group["dampening"]:
                raise TypeError(
                    "TorchState cannot create SGD's momentum buffers up front when dampening "
                    "is not 0 (its first step treats a missing buffer specially): run one step "
                    "before creating the TorchState"
                )
            for p in group["params"]:
                state = optimizer.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
    elif not optimizer.state:
        raise TypeError(
            f"TorchState knows how to create the state of Adam, AdamW and SGD; for "
            f"{type(optimizer).__name__} run one optimizer step before creating the TorchState "
            "(so that its state exists to be aliased)"
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item() if x.ndim == 0 else x.tolist()
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise TypeError(f"cannot save {type(x).__name__} {x!r:.60} as JSON")


class _ParamGroups(PythonState):
    """The optimizer's param groups (hyperparameters, the current learning rate) as JSON."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def serialize(self) -> str:
        groups = [
            {k: _jsonable(v) for k, v in g.items() if k != "params"}
            for g in self.optimizer.param_groups
        ]
        return json.dumps(groups, sort_keys=True)

    def deserialize(self, string_value: str | bytes) -> None:
        saved = json.loads(string_value)
        groups = self.optimizer.param_groups
        if not isinstance(saved, list) or len(saved) != len(groups):
            raise ValueError(
                f"the checkpoint has {len(saved)} param groups, the optimizer {len(groups)}"
            )
        for g, s in zip(groups, saved, strict=True):
            for k, v in s.items():
                cur = g.get(k)
                if isinstance(cur, torch.Tensor):
                    cur.fill_(v)
                elif isinstance(cur, tuple) and isinstance(v, list):
                    g[k] = tuple(v)
                else:
                    g[k] = v


class _Scheduler(PythonState):
    """A learning-rate scheduler's ``state_dict()`` as JSON."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def serialize(self) -> str:
        return json.dumps(_jsonable(self.scheduler.state_dict()), sort_keys=True)

    def deserialize(self, string_value: str | bytes) -> None:
        self.scheduler.load_state_dict(json.loads(string_value))


class _Named(Trackable):
    """Named children computed on demand (a state_dict-shaped node of the graph)."""

    def __init__(self, children: Any) -> None:
        self._children = children

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        return list(self._children())


class TorchState(Trackable):
    """A PyTorch module, optimizer and scheduler as one trackable object, without copies.

    Put it in a checkpoint (``hpckpt.Checkpoint(torch=TorchState(model, opt, sched))``);
    every rank holds the whole (replicated, as with DDP) state and a restore on any
    number of ranks gives every rank the same values.

    Args:
        module: The ``torch.nn.Module`` (CPU tensors).
        optimizer: Its optimizer (Adam, AdamW, SGD; others once their state exists).
        scheduler: A learning-rate scheduler (its ``state_dict()`` must be JSON-able).
        mesh: The mesh the Variables are replicated on (default: the 1-D mesh over
            ``MPI.COMM_WORLD``); pass a ``DTensorCheckpoint``'s mesh.

    The aliases follow the tensors: a parameter replaced by another tensor (or state
    created later) is picked up at the next save or restore.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        mesh: Mesh | None = None,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self._mesh = mesh if mesh is not None else default_mesh()
        self._vars: dict[str, Variable] = {}
        if optimizer is not None:
            _eager_state(optimizer)
        children: list[tuple[str, Any]] = [("model", _Named(self._model_children))]
        if optimizer is not None:
            self._groups = _ParamGroups(optimizer)
            opt = _Named(
                lambda: [
                    ("state", _Named(self._optimizer_children)),
                    ("param_groups", self._groups),
                ]
            )
            children.append(("optimizer", opt))
        if scheduler is not None:
            children.append(("scheduler", _Scheduler(scheduler)))
        for name, c in children:
            self._track_child(name, c)
        self._model_children()  # check every tensor now (a clear error at construction)
        if optimizer is not None:
            self._optimizer_children()

    def _alias(self, key: str, t: torch.Tensor) -> Variable:
        """The Variable aliasing tensor ``t`` (re-pointed if ``t`` moved)."""
        arr = tensor_as_numpy(t)
        v = self._vars.get(key)
        if v is not None and v.local.shape == arr.shape and v.dtype == arr.dtype:
            if not np.shares_memory(v.local, arr) or v.local.strides != arr.strides:
                v.local = arr
            return v
        v = Variable.from_local(
            arr, Layout.replicated(self._mesh, arr.ndim), arr.shape, name=key, copy=False
        )
        self._vars[key] = v
        return v

    def _model_children(self) -> list[tuple[str, Any]]:
        seen: dict[tuple, Variable] = {}
        out = []
        for name, t in self.module.state_dict(keep_vars=True).items():
            ident = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
            v = seen.get(ident) if t.numel() else None
            if v is None:
                v = seen[ident] = self._alias(f"model/{name}", t)
            out.append((name, v))  # tied weights: one Variable under both names
        return out

    def _optimizer_children(self) -> list[tuple[str, Any]]:
        opt = self.optimizer
        assert opt is not None
        out = []
        i = 0
        for group in opt.param_groups:
            for p in group["params"]:
                state = opt.state.get(p, {})
                tensors = [(k, t) for k, t in state.items() if isinstance(t, torch.Tensor)]
                if tensors:
                    node = _Named(lambda ts=tensors, n=i: self._state_children(n, ts))
                    out.append((str(i), node))
                i += 1
        return out

    def _state_children(self, i: int, tensors: list) -> list[tuple[str, Any]]:
        return [(k, self._alias(f"optimizer/state/{i}/{k}", t)) for k, t in tensors]
