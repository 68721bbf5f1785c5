"""numpy <-> torch at the edge of the algorithms (weights and batches arrive as numpy, often
read-only views out of Ray's object store)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_tensor", "copy_into"]


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
