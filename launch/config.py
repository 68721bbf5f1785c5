"""The top-level training config: one field per component, plus the run's own settings.

The CLI is generated from these dataclasses by tyro (``launch/cli.py``): every field is a flag
(``--algo.lr``, ``--scheme.num-grad-workers``; the run's settings without prefix, e.g.
``--total-env-steps``, ``--tracking-uri``), with the defaults of the chosen preset.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from colonyrl.agents.a2c import A2CConfig
from colonyrl.agents.appo import APPOConfig
from colonyrl.agents.ddpg import DDPGConfig
from colonyrl.agents.dqn import DQNConfig
from colonyrl.agents.impala import IMPALAConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.pg import PGConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.agents.recurrent_a2c import RecurrentA2CConfig
from colonyrl.agents.recurrent_appo import RecurrentAPPOConfig
from colonyrl.agents.recurrent_impala import RecurrentIMPALAConfig
from colonyrl.agents.recurrent_pg import RecurrentPGConfig
from colonyrl.agents.recurrent_ppo import RecurrentPPOConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.agents.td3 import TD3Config
from colonyrl.config import Config, ConfigError, param
from colonyrl.envs.factory import EnvConfig, WrapperConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.replay import ReplayConfig
from colonyrl.storage.rollout import RolloutConfig

__all__ = ["RunConfig", "Schedule", "TrainConfig", "ALGORITHM_CONFIGS", "STORAGE_CONFIGS", "parse_args"]

#: Every algorithm the command line offers, by ``name`` (a tyro subcommand each: ``algo:sac``).
ALGORITHM_CONFIGS: tuple[type, ...] = (PPOConfig, SACConfig, TD3Config, DDPGConfig, DQNConfig, IMPALAConfig,
                                       APPOConfig, PGConfig, A2CConfig, RecurrentPPOConfig, RecurrentPGConfig,
                                       RecurrentA2CConfig, RecurrentIMPALAConfig, RecurrentAPPOConfig)
#: Every storage kind, by ``kind`` (``storage:replay``); an algorithm names the kind it learns from.
STORAGE_CONFIGS: tuple[type, ...] = (RolloutConfig, ReplayConfig)


def _subcommands(configs: tuple[type, ...], attr: str) -> Any:
    """``Annotated[A, subcommand(a)] | Annotated[B, subcommand(b)] | ...`` for tyro."""
    members = tuple(Annotated[c, tyro.conf.subcommand(getattr(c, attr))] for c in configs)
    return members[0] if len(members) == 1 else typing.Union[members]  # noqa: UP007 (built at runtime)


AlgoConfig = _subcommands(ALGORITHM_CONFIGS, "name")
StorageConfig = _subcommands(STORAGE_CONFIGS, "kind")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule(Config):
    """A runtime parameter that follows the env-step counter (e.g. a learning rate annealed to 0).

    ``points`` are ``(env_steps, value)`` pairs with increasing steps; before the first point the
    first value holds, after the last the last. ``linear`` interpolates between points (SB3's
    ``linear_schedule``), ``piecewise`` keeps each value until the next point.
    """

    kind: Literal["algo", "storage"] = "algo"
    name: str
    points: tuple[tuple[int, float], ...]
    interpolation: Literal["linear", "piecewise"] = "linear"

    def _check(self) -> None:
        steps = [s for s, _ in self.points]
        if not steps or any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or steps[0] < 0:
            raise ConfigError("Schedule.points", self.points,
                              "at least one (env_steps, value) pair, env_steps >= 0 and increasing")

    def value(self, env_steps: int) -> float:
        steps = [s for s, _ in self.points]
        values = [v for _, v in self.points]
        if self.interpolation == "linear":
            return float(np.interp(env_steps, steps, values))
        return float(values[max(0, int(np.searchsorted(steps, env_steps, side="right")) - 1)])


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(Config):
    """Budget, evaluation, tracking and output of one training run."""

    total_env_steps: int = param(100_000, ge=1)
    seed: int = param(0, ge=0, lt=2**31)
    #: Deterministic episodes in the final evaluation (and in each periodic one).
    eval_episodes: int = param(10, ge=1, le=10_000)
    #: Evaluate every this many env steps during training (None: only at the end).
    eval_every: int | None = param(None, ge=1)
    #: Stop early once a periodic evaluation reaches this mean return (None: train the full budget).
    stop_at_return: float | None = None
    #: Seconds between metric rows (console table and MLflow batch).
    log_every_s: float = param(2.0, gt=0.0)
    #: MLflow tracking URI; None: MLFLOW_TRACKING_URI, else MLflow's default (sqlite mlflow.db here).
    tracking_uri: str | None = None
    experiment: str = "colonyrl"
    run_name: str | None = None
    track: bool = True
    #: MLflow system metrics of the driver (``system/cpu_utilization_percentage``, memory, disk,
    #: network, GPU where pynvml is installed) while tracking.
    system_metrics: bool = True
    #: Progress bar and metric table on the console.
    progress: bool = True
    #: Where the final model is written (a subfolder per run).
    output_dir: str = "runs"
    #: Checkpoints go to <checkpoint_dir>/<run id>/ckpt-<env steps>.pt.
    checkpoint_dir: str = "checkpoints"
    #: Checkpoint every this many env steps (None: only by time and at the end).
    checkpoint_every: int | None = param(None, ge=1)
    #: Checkpoint every this many minutes (None: only by env steps and at the end).
    checkpoint_every_min: float | None = param(10.0, gt=0.0)
    keep_checkpoints: int = param(3, ge=1)
    #: Continue from a checkpoint file or folder, or from the MLflow run id whose checkpoints are in
    #: checkpoint_dir. The env, actor, algorithm and storage come from the checkpoint; the scheme
    #: (worker counts, resources) and these run settings from this command.
    resume: str | None = None
    #: Register the run's MLflow model (``runs:/<run id>/model``) as a new version of this
    #: registered model in the MLflow Model Registry (None: do not register); with save_best_model,
    #: the best model too, as the version the alias ``best`` points at (``models:/<name>@best``).
    register_model: str | None = None
    #: Keep the model of the best periodic evaluation (strictly greater mean return) in
    #: <output_dir>/<run id>/best/, and log it as the run's ``best_model`` MLflow model beside ``model``.
    save_best_model: bool = False

    def _check(self) -> None:
        if not self.experiment:
            raise ConfigError("RunConfig.experiment", self.experiment, "a non-empty string")
        if self.register_model is not None:
            # MLflow's own rule for registered model names (mlflow/utils/validation.py _validate_model_name)
            name = self.register_model
            if not name.strip() or "/" in name or ":" in name or name in (".", ".."):
                raise ConfigError("RunConfig.register_model", name,
                                  "None or a non-blank name without '/' or ':' (MLflow registered model names)")
            if not self.track:
                raise ConfigError("RunConfig.register_model", name, "None when track is False (it registers the "
                                  "tracked run's model)")
        if self.stop_at_return is not None and self.eval_every is None:
            raise ConfigError("RunConfig.stop_at_return", self.stop_at_return,
                              "None unless eval_every is set (early stopping needs periodic evaluation)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Everything one training run needs; ``colonyrl train`` parses exactly this."""

    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    actor: ActorCriticConfig = dataclasses.field(default_factory=ActorCriticConfig)
    #: The algorithm (``algo:ppo``, ``algo:sac``, ...), with its own hyperparameters.
    algo: AlgoConfig = dataclasses.field(default_factory=PPOConfig)
    #: The storage of the kind the algorithm learns from (``storage:rollout`` / ``storage:replay``).
    storage: StorageConfig = dataclasses.field(default_factory=RolloutConfig)
    scheme: SchemeConfig = dataclasses.field(default_factory=SchemeConfig)
    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=RunConfig)
    #: Parameters that follow the env-step counter (defined in launch scripts; not a CLI flag).
    schedules: Annotated[tuple[Schedule, ...], tyro.conf.Suppress] = ()
    #: The env evaluations run on (None: the train env). Set in launch scripts or replaced at
    #: runtime (``Learner.replace_component("test_env", ...)``); kept in checkpoints.
    test_env: Annotated[EnvConfig | None, tyro.conf.Suppress] = None

    def _check(self) -> None:
        if self.algo.storage_kind != self.storage.kind:
            allowed = [c.__name__ for c in STORAGE_CONFIGS if c.kind == self.algo.storage_kind]
            raise ConfigError("TrainConfig.storage", type(self.storage).__name__,
                              f"{' or '.join(allowed)}: {self.algo.name} learns from {self.algo.storage_kind} storage")
        recurrent_algos = [c.name for c in ALGORITHM_CONFIGS if getattr(c, "recurrent", False)]
        if (self.actor.recurrent is not None) != bool(getattr(self.algo, "recurrent", False)):
            raise ConfigError("TrainConfig.actor.recurrent", self.actor.recurrent,
                              f"'gru' or 'lstm' for {self.algo.name}" if self.actor.recurrent is None else
                              f"None for {self.algo.name} (recurrent policies: {', '.join(recurrent_algos)})")
        components = self.components()
        for i, schedule in enumerate(self.schedules):
            for _, value in schedule.points:  # every value must be valid for the parameter it sets
                try:
                    components.with_parameter(schedule.kind, schedule.name, value)
                except ConfigError as e:
                    raise ConfigError(f"TrainConfig.schedules[{i}] ({e.field})", e.value, e.allowed) from e

    def components(self) -> Components:
        return Components(env=self.env, actor=self.actor, algo=self.algo, storage=self.storage,
                          test_env=self.test_env, seed=self.run.seed)

    @property
    def env_steps_per_round(self) -> int:
        """Env steps one collection round of every CWorker adds."""
        return (self.scheme.num_grad_workers * self.scheme.num_col_workers * self.env.num_envs
                * self.storage.num_steps)


def _json_flags() -> tyro.constructors.ConstructorRegistry:
    """JSON on the command line for the fields whose values are any JSON, which tyro cannot parse
    key by key: ``--env.kwargs '{"g": 9.81}'`` and ``--env.wrappers '["TimeAwareObservation",
    {"name": "FrameStackObservation", "kwargs": {"stack_size": 4}}]'`` (a primitive rule of
    tyro's ``ConstructorRegistry``, which takes precedence over its own parsing of dicts and tuples)."""
    registry = tyro.constructors.ConstructorRegistry()

    @registry.primitive_rule
    def json_rule(info: tyro.constructors.PrimitiveTypeInfo) -> tyro.constructors.PrimitiveConstructorSpec | None:
        origin, params = typing.get_origin(info.type), typing.get_args(info.type)
        if origin is dict and params == (str, Any):
            return tyro.constructors.PrimitiveConstructorSpec(
                nargs=1, metavar="JSON", instance_from_str=lambda args: json.loads(args[0]),
                is_instance=lambda v: isinstance(v, dict), str_from_instance=lambda v: [json.dumps(v)])
        if origin is tuple and params == (WrapperConfig, Ellipsis):
            return tyro.constructors.PrimitiveConstructorSpec(
                nargs=1, metavar="JSON", instance_from_str=lambda args: WrapperConfig.parse_list(args[0]),
                is_instance=lambda v: isinstance(v, tuple), str_from_instance=lambda v: [WrapperConfig.list_json(v)])
        return None

    return registry


def parse_args(default: TrainConfig, args: list[str] | None = None, prog: str | None = None,
               description: str | None = None) -> TrainConfig:
    """``TrainConfig`` from command-line flags, with ``default``'s values as the defaults.

    The algorithm and the storage are tyro subcommands (``algo:sac``, ``storage:replay``); flags of
    the default's own algorithm work without naming it (``--algo.lr 1e-3``: tyro's
    ``CascadeSubcommandArgs``). Choosing an algorithm that learns from another kind of storage
    than the default's, without naming a storage, picks that kind's default storage.
    """
    import sys

    args = list(sys.argv[1:] if args is None else args)
    chosen = [a.split(":", 1)[1] for a in args if a.startswith("algo:")]
    if chosen and not any(a.startswith("storage:") for a in args):
        algo = next((c for c in ALGORITHM_CONFIGS if c.name == chosen[-1]), None)
        if algo is not None and algo.storage_kind != default.storage.kind:
            at = args.index(f"algo:{chosen[-1]}")
            args.insert(at, f"storage:{algo.storage_kind}")
    return tyro.cli(TrainConfig, default=default, args=args, prog=prog, description=description,
                    config=(tyro.conf.CascadeSubcommandArgs,), registry=_json_flags())
