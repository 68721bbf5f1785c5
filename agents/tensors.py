"""numpy <-> torch at the edge of the algorithms (weights and batches arrive as numpy, often
read-only views out of Ray's object store)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["as_tensor", "copy_into", "load_grads"]


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Zero-copy numpy -> torch; a read-only array (Ray's object store) is copied first."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(x if x.flags.writeable else np.array(x))


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


def load_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | np.ndarray]) -> None:
    """Put ``grads`` (aligned with ``params``) into each ``.grad``, unless one already is it (an
    in-process GWorker's own backward): what every ``apply_gradients`` starts with."""
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    for p, g in zip(params, grads, strict=True):
        if g is not p.grad:
            if p.grad is None:
                p.grad = torch.empty_like(p)
            copy_into(p.grad, g)
