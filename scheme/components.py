"""The components every worker rebuilds from (picklable configs, so Ray can ship them).

``Components`` is what travels down the hierarchy when a worker is created (and, in issue 3, when a
component is replaced at runtime): the env factory, the actor, the algorithm and the storage
configs, plus the run's base seed. Each worker calls the ``build`` methods itself, in its own
process.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.envs.normalization import obs_shapes

if TYPE_CHECKING:
    from colonyrl.agents.base import Algorithm, AlgorithmConfig, Policy

__all__ = ["Components", "Spaces", "PARAMETER_KINDS", "COMPONENT_KINDS"]


def algo_kind(algo: Any) -> str:
    return str(getattr(algo, "storage_kind", "?"))

#: What ``update_parameter(kind, ...)`` may change: the component config holding the parameter.
PARAMETER_KINDS = ("algo", "storage")
#: What ``replace_component(kind, ...)`` may replace (storage: a config of the storage kind in use).
COMPONENT_KINDS = ("env", "test_env", "storage")


@dataclasses.dataclass(frozen=True)
class Spaces:
    observation: gym.Space
    action: gym.Space


@dataclasses.dataclass(frozen=True, kw_only=True)
class Components:
    env: EnvConfig
    #: The MLP spec every network of the algorithm is built from.
    actor: ActorCriticConfig
    #: Any algorithm config (agents/base.py ``AlgorithmConfig``); the engine reads its declarations.
    algo: AlgorithmConfig
    #: The storage config of the kind the algorithm names (``algo.storage_kind``).
    storage: Any
    #: The test (evaluation) env; None means the train env's id with one sub-env.
    test_env: EnvConfig | None = None
    seed: int = 0

    def spaces(self) -> Spaces:
        """Observation and action space of one sub-env, wrapped as every CWorker's
        (``EnvConfig.wrappers``; builds and closes a throwaway env). The Learner reads them before
        any worker starts, so a wrapper that does not fit the env, or observation normalization
        on observations it cannot normalize, is a ConfigError then."""
        observation, action = self.env.spaces()
        normalized = obs_shapes(observation, self.env.normalize)  # a Box of floats, or a Dict's keys
        her = getattr(self.storage, "her", None)
        goals = [] if her is None else [her.achieved_goal_key, her.desired_goal_key]
        if isinstance(normalized, dict) and set(goals) & set(normalized):
            # HER recomputes rewards from the goals it stores, which must be raw (SB3's HerReplayBuffer
            # stores raw observations and normalizes what it samples); storage here keeps normalized ones
            raise ConfigError("EnvConfig.normalize.obs_keys", self.env.normalize.obs_keys,
                              f"keys other than HER's goal keys {goals} (normalized now: {sorted(normalized)})")
        check_storage = getattr(self.storage, "check_spaces", None)  # e.g. HER needs a goal Dict
        if check_storage is not None:
            check_storage(observation, action)
        return Spaces(observation, action)

    def build_algorithm(self, spaces: Spaces) -> Algorithm:
        return self.algo.build(spaces.observation, spaces.action, self.actor)

    def build_policy(self, spaces: Spaces) -> Policy:
        """The acting side only (what a CWorker holds)."""
        return self.algo.build_policy(spaces.observation, spaces.action, self.actor)

    def evaluation_env(self) -> EnvConfig:
        """The test env (None: the train env) as evaluations run it (``EnvConfig.evaluation``: no
        training-only signals such as Atari's episodic life and reward clipping)."""
        return (self.test_env if self.test_env is not None else self.env).evaluation()

    def with_parameter(self, kind: str, name: str, value: object) -> Components:
        """A copy with ``kind.name = value``, validated; raises ConfigError and changes nothing."""
        if kind not in PARAMETER_KINDS:
            raise ConfigError("update_parameter.kind", kind, "one of " + ", ".join(map(repr, PARAMETER_KINDS)))
        return dataclasses.replace(self, **{kind: getattr(self, kind).check_parameter(name, value)})

    def used_in_collection(self, kind: str, name: str) -> bool:
        """Whether CWorkers use parameter ``kind.name`` (as the algorithm and storage declare):
        only those are sent to them, so a schedule never queues behind their rollouts in flight."""
        declared = self.algo.acting_parameters if kind == "algo" else self.storage.collection_parameters
        return name in declared

    def with_component(self, kind: str, config: object) -> Components:
        """A copy with the ``kind`` component replaced by ``config``, validated first.

        A new train env must have the spaces of the old one: the actor and storage are built for them.
        """
        if kind not in COMPONENT_KINDS:
            raise ConfigError("replace_component.kind", kind, "one of " + ", ".join(map(repr, COMPONENT_KINDS)))
        expected = type(self.env) if kind in ("env", "test_env") else type(self.storage)
        if not isinstance(config, expected):
            raise ConfigError(f"replace_component({kind!r}).config", config,
                              f"a {expected.__name__} (the {algo_kind(self.algo)} storage this algorithm learns from)"
                              if kind == "storage" else f"an {expected.__name__}")
        new = dataclasses.replace(self, **{kind: config})
        if kind == "env" and config.normalize != self.env.normalize:  # type: ignore[attr-defined]
            # the shared statistics were gathered under the old settings (and the storage holds
            # what they normalized): a new env may not change them
            raise ConfigError("replace_component('env').config.normalize", config.normalize,  # type: ignore[attr-defined]
                              f"the train env's own ({self.env.normalize})")
        if kind in ("env", "test_env"):
            old_spaces = self.spaces()
            probe = dataclasses.replace(self, env=config).spaces()
            if (probe.observation, probe.action) != (old_spaces.observation, old_spaces.action):
                raise ConfigError(f"replace_component({kind!r}).config.id", config.id,
                                  f"an env with observation space {old_spaces.observation} and action space "
                                  f"{old_spaces.action} (got {probe.observation}, {probe.action})")
        return new
