"""The config base: every field checked against its annotation and bounds, errors name the field."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Literal

import pytest

from colonyrl.config import Config, ConfigError, from_dict, param, to_flat_dict
from colonyrl.launch.config import TrainConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner(Config):
    rate: float = param(0.5, gt=0.0, le=1.0, runtime=True)
    size: int = param(4, ge=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer(Config):
    mode: Literal["a", "b"] = "a"
    limit: int | None = param(None, ge=0)
    sizes: tuple[int, ...] = (1, 2)
    flag: bool = False
    inner: Inner = dataclasses.field(default_factory=Inner)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "c"}, "Outer.mode='c' is invalid: allowed one of 'a', 'b'"),
        ({"limit": -1}, "Outer.limit=-1 is invalid: allowed a number >= 0"),
        ({"limit": 1.5}, "Outer.limit=1.5 is invalid: allowed an integer or None"),
        ({"sizes": (1, "x")}, "Outer.sizes=(1, 'x') is invalid: allowed a tuple of an integer"),
        ({"flag": 1}, "Outer.flag=1 is invalid: allowed true/false"),
        ({"inner": "x"}, "Outer.inner='x' is invalid: allowed a Inner"),
    ],
)
def test_bad_field_values_name_the_field_and_what_is_allowed(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Outer(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("value", [0.0, 1.5, float("nan"), float("inf"), True, "0.1"])
def test_bounds_and_types_of_a_float_field(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^Inner\.rate="):
        Inner(rate=value)  # type: ignore[arg-type]


def test_int_is_accepted_for_a_float_field_and_bool_is_not_an_int() -> None:
    assert Inner(rate=1).rate == 1
    with pytest.raises(ConfigError, match="Inner.size=True"):
        Inner(size=True)


def test_runtime_parameter_check_accepts_marked_fields_only() -> None:
    inner = Inner()
    assert inner.check_parameter("rate", 0.25).rate == 0.25
    assert inner.rate == 0.5  # the original is unchanged
    with pytest.raises(ConfigError, match="one of 'rate'"):
        inner.check_parameter("size", 8)  # a fixed field
    with pytest.raises(ConfigError, match="Inner.rate=2.0"):
        inner.check_parameter("rate", 2.0)


def test_flat_dict_and_from_dict_round_trip_the_whole_train_config() -> None:
    cfg = TrainConfig()
    flat = to_flat_dict(cfg)
    assert flat["algo.lr"] == cfg.algo.lr and flat["scheme.grad_worker_resources.num_cpus"] == 1.0
    assert from_dict(TrainConfig, dataclasses.asdict(cfg)) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(ConfigError, match="TrainConfig.bogus"):
        from_dict(TrainConfig, {"bogus": 1})


def test_every_algorithm_config_round_trips_as_its_own_class() -> None:
    """``from_dict`` picks an algorithm config by its exact field names (config.py ``_coerce``): two
    algorithms with the same fields would load each other's checkpoints as the wrong one."""
    from colonyrl.agents.networks import ActorCriticConfig
    from colonyrl.launch.config import ALGORITHM_CONFIGS, STORAGE_CONFIGS

    fields = [frozenset(f.name for f in dataclasses.fields(c)) for c in ALGORITHM_CONFIGS]
    assert len(set(fields)) == len(fields)
    for algo in ALGORITHM_CONFIGS:
        storage = next(s for s in STORAGE_CONFIGS if s.kind == algo.storage_kind)
        actor = ActorCriticConfig(recurrent="gru") if getattr(algo, "recurrent", False) else ActorCriticConfig()
        cfg = TrainConfig(actor=actor, algo=algo(), storage=storage())
        back = from_dict(TrainConfig, dataclasses.asdict(cfg))
        assert type(back.algo) is algo and back == cfg
