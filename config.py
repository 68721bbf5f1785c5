"""Typed, validated component configs (model: torchtitan's `Configurable.Config`).

Every component has one frozen dataclass that subclasses :class:`Config`. Construction validates
every field against its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
``X | None``, ``tuple[...]``, ``dict[str, ...]`` and nested configs) and against the bounds given
with :func:`param`, so a bad value fails *before any worker starts*, with a message that names the
field, the value and what is allowed. Cross-field rules go in ``_check(self)``.

This module imports nothing heavy: agents/, storage/ and envs/ use it without pulling in Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import operator
import types
import typing
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

__all__ = ["Config", "ConfigError", "param", "to_flat_dict", "from_dict", "import_callable"]


class ConfigError(ValueError):
    """A config value is invalid. ``field`` is the dotted field name, ``allowed`` says what fits."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is invalid: allowed {allowed}")


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def param(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    runtime: bool = False,
) -> Any:
    """A config field with numeric bounds.

    ``runtime=True`` marks a hyperparameter that ``update_parameter(name, value)`` may change while
    training runs (issue 3); the others are fixed at build time.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "runtime": runtime}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_describe(args[0])}"
        return "a tuple (" + ", ".join(_describe(a) for a in args) + ")"
    if origin is dict:
        k, v = get_args(tp)
        return f"a dict of {_describe(k)} -> {_describe(v)}"
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a number", "bool": "true/false", "str": "a string"}.get(
            tp.__name__, f"a {tp.__name__}"
        )
    return str(tp)


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (bool is not an int here, int is a float)."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            return False
        kt, vt = get_args(tp)
        return all(_matches(k, kt) and _matches(v, vt) for k, v in value.items())
    if origin is not None:  # e.g. Callable[...]: checked by the component itself
        return True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of all component configs. Subclasses are ``@dataclass(frozen=True, kw_only=True)``."""

    #: Shown in error messages instead of the class name when set (e.g. "algo").
    _prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        name = type(self).__name__
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            where = f"{name}.{f.name}"
            tp = hints[f.name]
            if not _matches(value, tp):
                raise ConfigError(where, value, _describe(tp))
            self._check_bounds(where, value, f.metadata)
        self._check()

    @staticmethod
    def _check_bounds(where: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not math.isfinite(value):  # NaN passes every comparison test below; inf is never meant
            raise ConfigError(where, value, "a finite number")
        bounds = [(op, meta[key]) for key, op in _BOUNDS if meta.get(key) is not None]
        if not all(_COMPARE[op](value, bound) for op, bound in bounds):
            raise ConfigError(where, value, "a number " + " and ".join(f"{op} {b}" for op, b in bounds))

    def _check(self) -> None:
        """Cross-field rules; raise :class:`ConfigError` naming the field."""

    def replace(self, **changes: Any) -> typing.Self:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def runtime_parameters(cls) -> tuple[str, ...]:
        """Names of the fields marked ``runtime=True``: the ones ``update_parameter`` accepts."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime"))

    def check_parameter(self, name: str, value: Any) -> typing.Self:
        """Validate a runtime change of ``name`` to ``value``; return the changed config.

        Raises :class:`ConfigError` for an unknown or fixed name or a bad value, changing nothing.
        """
        allowed = self.runtime_parameters()
        if name not in allowed:
            raise ConfigError(f"{type(self).__name__}.<name>", name,
                              "one of " + ", ".join(repr(a) for a in allowed))
        return self.replace(**{name: value})


def to_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested configs to ``{"algo.lr": 0.001, ...}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(to_flat_dict(value, key + "."))
        else:
            out[key] = value
    return out


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config from ``dataclasses.asdict`` output (or its JSON), validating every
    field; lists become tuples, nested dicts become their config classes."""
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{cls.__name__}.{unknown[0]}", data[unknown[0]], "one of the fields " + ", ".join(names))
    return cls(**{name: _coerce(data[name], hints[name]) for name in names if name in data})


def _coerce(value: Any, tp: Any) -> Any:
    options = [a for a in get_args(tp) if a is not type(None)] if get_origin(tp) in (typing.Union, types.UnionType) \
        else [tp]
    configs = [o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)]
    if configs and isinstance(value, dict):
        # A union of configs (e.g. ``algo: PPOConfig | SACConfig``): ``asdict`` output names every
        # field, so the class whose fields are exactly the keys is the one that was saved.
        exact = [o for o in configs if {f.name for f in dataclasses.fields(o)} == set(value)]
        return from_dict((exact or configs)[0], value)
    for option in options:
        if get_origin(option) is tuple and isinstance(value, (list, tuple)):
            args = get_args(option)
            items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            if len(items) == len(value):
                return tuple(_coerce(v, t) for v, t in zip(value, items, strict=True))
    return value


def import_callable(field: str, path: str, what: str) -> Any:
    """The callable a ``"package.module:attr.attr"`` field names (imported in the process that asks:
    a Ray worker too, as picklable as the string); a :class:`ConfigError` naming ``field`` if it does
    not import or is not callable (``what`` says what it should be)."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(field, path, f"an importable 'package.module:function' ({error})") from error
    if not callable(target):
        raise ConfigError(field, path, what)
    return target
