"""numpy <-> torch at the edge of the algorithms (weights and batches arrive as numpy, often
read-only views out of Ray's object store). Observations of a Dict space are dicts of arrays:
:func:`as_tensor`, :func:`leading_dim` and :func:`map_obs` take either."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["as_tensor", "copy_into", "load_grads", "leading_dim", "map_obs"]


def as_tensor(x: np.ndarray | torch.Tensor | Mapping[str, Any]) -> torch.Tensor | dict[str, Any]:
    """Zero-copy numpy -> torch; a read-only array (Ray's object store) is copied first. A dict
    (Dict observations) is converted value by value."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, Mapping):
        return {key: as_tensor(value) for key, value in x.items()}
    return torch.from_numpy(x if x.flags.writeable else np.array(x))


def leading_dim(x: Any) -> int:
    """The batch size of an array, a tensor or a (nested) dict of them: the first leaf's dim 0."""
    while isinstance(x, Mapping):
        x = next(iter(x.values()))
    return int(x.shape[0])


def map_obs(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn`` on a tensor (array), or on every leaf of a (nested) dict of them, keeping the keys."""
    if isinstance(x, Mapping):
        return {key: map_obs(fn, value) for key, value in x.items()}
    return fn(x)


def copy_into(dst: torch.Tensor, src: torch.Tensor | np.ndarray) -> None:
    """``dst[...] = src`` with a shape check; ``src`` may be a read-only numpy array (never written)."""
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"shape {tuple(src.shape)} does not match {tuple(dst.shape)}")
    if isinstance(src, torch.Tensor):
        dst.copy_(src)
    elif dst.device.type == "cpu":
        np.copyto(dst.numpy(), src, casting="same_kind")
    else:
        dst.copy_(torch.tensor(src))


def load_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | np.ndarray],
               alias: bool = False) -> None:
    """Put ``grads`` (aligned with ``params``) into each ``.grad``, unless one already is it (an
    in-process GWorker's own backward): what every ``apply_gradients`` starts with.

    ``alias``: a gradient that is a tensor of the parameter's shape, dtype and device becomes its
    ``.grad`` instead of being copied in (a copy of every weight's size per update saved), for an
    algorithm whose optimizers only read ``.grad``; one that clips in place must copy, since the
    same gradients may be applied by several replicas (decentralized updates)."""
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    for p, g in zip(params, grads, strict=True):
        if alias and isinstance(g, torch.Tensor) and g.shape == p.shape and g.dtype == p.dtype \
                and g.device == p.device and not g.requires_grad:
            p.grad = g
        elif g is not p.grad:
            if p.grad is None:
                p.grad = torch.empty_like(p)
            copy_into(p.grad, g)
