"""Fuzz: random malformed configs are all rejected at construction, naming the bad field.

Construction is where validation happens (``Config.__post_init__``), before ``Scheme`` can start a
worker, so a rejected config never reaches one.
"""

from __future__ import annotations

import dataclasses
import math
import random
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from colonyrl.config import Config, ConfigError, from_dict
from colonyrl.launch.config import TrainConfig


def _leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type, Any, dict]]:
    """(path, owning config class, annotation, metadata) of every non-config field."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in (get_args(tp) or (tp,)) if isinstance(a, type) and issubclass(a, Config)]
        if inner and get_origin(tp) is not tuple:
            out += _leaves(inner[0], (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), cls, tp, dict(f.metadata)))
    return out


def _bad_values(tp: Any, meta: dict) -> list[Any]:
    """Values that violate the annotation or the bounds of a field."""
    options = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    origins = {get_origin(o) for o in options}
    bad: list[Any] = [object()]
    bad.append(("a", "b") if tuple in origins else [1, 2])  # lists count as tuples
    bad.append({1: [1]} if dict in origins else {"x": 1})
    if type(None) not in options:
        bad.append(None)
    if get_origin(tp) is Literal or any(get_origin(o) is Literal for o in options):
        bad += ["definitely-not-allowed", 3.5]
    if int in options or float in options:
        bad += ["1e-3", True, float("nan"), math.inf]
        if meta.get("ge") is not None:
            bad.append(meta["ge"] - 1)
        if meta.get("gt") is not None:
            bad.append(meta["gt"] - 0.5)
        if meta.get("le") is not None:
            bad.append(meta["le"] + 1)
        if meta.get("lt") is not None:
            bad.append(meta["lt"] + 1)
        if int in options and float not in options:
            bad.append(2.5)
    if str in options:
        bad += [7, b"bytes"]
    if bool in options:
        bad += [1, "yes"]
    return bad


def _set(data: dict, path: tuple[str, ...], value: Any) -> dict:
    data = dict(data)
    if len(path) == 1:
        data[path[0]] = value
    else:
        data[path[0]] = _set(data.get(path[0]) or {}, path[1:], value)  # an optional config (test_env) set
    return data


CASES = [(path, owner, value) for path, owner, tp, meta in _leaves(TrainConfig)
         if path[-1] != "schedules" for value in _bad_values(tp, meta)]


def test_the_fuzz_covers_enough_cases_and_every_component() -> None:
    assert len(CASES) >= 200
    assert {p[0] for p, _, _ in CASES} >= {"env", "actor", "algo", "storage", "scheme", "run"}


@pytest.mark.parametrize("seed", range(2))
def test_random_malformed_configs_are_rejected_naming_the_field(seed: int) -> None:
    base = dataclasses.asdict(TrainConfig())
    for path, owner, value in random.Random(seed).sample(CASES, k=len(CASES)):  # every case, shuffled
        with pytest.raises(ConfigError) as e:
            from_dict(TrainConfig, _set(base, path, value))
        assert e.value.field.startswith(f"{owner.__name__}.{path[-1]}"), (path, value, str(e.value))
        assert "allowed" in str(e.value)
