"""The top-level training config: one field per component, plus the run's own settings.

The CLI is generated from these dataclasses by tyro (``launch/cli.py``): every field is a flag
(``--algo.lr``, ``--scheme.num-grad-workers``; the run's settings without prefix, e.g.
``--total-env-steps``, ``--tracking-uri``), with the defaults of the chosen preset.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import numpy as np
import tyro

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.config import Config, ConfigError, param
from colonyrl.scheme.scheme import SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

__all__ = ["RunConfig", "Schedule", "TrainConfig"]


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

    def _check(self) -> None:
        if not self.experiment:
            raise ConfigError("RunConfig.experiment", self.experiment, "a non-empty string")
        if self.stop_at_return is not None and self.eval_every is None:
            raise ConfigError("RunConfig.stop_at_return", self.stop_at_return,
                              "None unless eval_every is set (early stopping needs periodic evaluation)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Everything one training run needs; ``colonyrl train`` parses exactly this."""

    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    actor: ActorCriticConfig = dataclasses.field(default_factory=ActorCriticConfig)
    algo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    storage: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    scheme: SchemeConfig = dataclasses.field(default_factory=SchemeConfig)
    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(default_factory=RunConfig)
    #: Parameters that follow the env-step counter (defined in launch scripts; not a CLI flag).
    schedules: Annotated[tuple[Schedule, ...], tyro.conf.Suppress] = ()
    #: The env evaluations run on (None: the train env). Set in launch scripts or replaced at
    #: runtime (``Learner.replace_component("test_env", ...)``); kept in checkpoints.
    test_env: Annotated[EnvConfig | None, tyro.conf.Suppress] = None

    def _check(self) -> None:
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
