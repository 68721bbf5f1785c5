"""Where each worker kind computes: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda if this process
sees a GPU, else cpu), and the moves at the edges of a device.

The rule (model: SB3's ``device="auto"`` and ``get_device``): networks, optimizers and target nets
live on the worker's device; storage stays numpy on the CPU and a batch is moved to the device
only for the gradient computation (uint8 images as uint8: the network scales them there);
everything that leaves a worker (gradients, weights, algorithm and worker state for checkpoints)
is moved to the CPU first, so packets, the lz4 wire and checkpoint files never hold a device
tensor and load on a CPU-only machine.

A device is resolved where the worker runs: the Learner (and an in-process GWorker) in the
driver's process, a Ray GWorker in its actor, where Ray shows only the GPUs the actor asked for
(``num_gpus``; none at all, ``CUDA_VISIBLE_DEVICES=""``, for an actor that asked for none, Ray
docs "Accelerator Support"), so ``cuda:N`` there counts the actor's own GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from colonyrl.config import ConfigError

__all__ = ["DEVICE_VALUES", "check_device", "is_cuda", "resolve_device", "to_device", "to_cpu"]

#: What a ``*_device`` field accepts, for error messages.
DEVICE_VALUES = "'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'auto' (cuda if available, else cpu)"
_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")


def check_device(field: str, value: str) -> None:
    """ConfigError naming ``field`` unless ``value`` is a device string this project accepts."""
    if not _PATTERN.fullmatch(value):
        raise ConfigError(field, value, DEVICE_VALUES)


def is_cuda(value: str) -> bool:
    """Whether ``value`` asks for a GPU explicitly (``auto`` takes one only where there is one)."""
    return value.startswith("cuda")


def resolve_device(value: str, field: str) -> torch.device:
    """The torch device for ``value`` in this process; a ConfigError naming ``field`` when it asks
    for a GPU this process does not see (checked before anything is built on it)."""
    check_device(field, value)
    available = torch.cuda.is_available()
    device = torch.device(("cuda" if available else "cpu") if value == "auto" else value)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if available else 0
    if count == 0 or (device.index is not None and device.index >= count):
        raise ConfigError(field, value, f"'cpu' or 'auto' here: this process sees {count} CUDA device(s) "
                                        f"(torch.cuda.is_available() is {available}); on Ray, a GPU worker "
                                        "needs num_gpus in its resources")
    # with its index: "cuda" and "cuda:0" are the same place (torch.device compares them unequal)
    return torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)


def to_device(x: Any, device: torch.device) -> Any:
    """``x`` with every tensor moved to ``device`` (dtype kept): a tensor, a NamedTuple batch, a
    (nested) dict or tuple of them; anything else (ints, floats, numpy, None) as it is. A batch
    already there is returned as it is (no copy on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {key: to_device(value, device) for key, value in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a NamedTuple (storage's batches)
        return type(x)(*(to_device(v, device) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    return x


def to_cpu(x: Any) -> Any:
    """``x`` (a state dict, a list of gradients, ...) with every tensor on the CPU. What holds no
    device tensor is returned as it is, the very object (no copy): a CPU-only run sends and saves
    exactly what it did before devices existed."""
    if isinstance(x, torch.Tensor):
        return x if x.device.type == "cpu" else x.cpu()
    if isinstance(x, Mapping):
        moved = {key: to_cpu(value) for key, value in x.items()}
        return x if all(moved[k] is x[k] for k in x) else moved
    if isinstance(x, (tuple, list)):
        items = [to_cpu(v) for v in x]
        if all(a is b for a, b in zip(items, x, strict=True)):
            return x
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    return x
