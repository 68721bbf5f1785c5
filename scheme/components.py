"""The components every worker rebuilds from (picklable configs, so Ray can ship them).

``Components`` is what travels down the hierarchy when a worker is created (and, in issue 3, when a
component is replaced at runtime): the env factory, the actor, the algorithm and the storage
configs, plus the run's base seed. Each worker calls the ``build`` methods itself, in its own
process.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import gymnasium as gym

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.storage.rollout import RolloutConfig

if TYPE_CHECKING:
    from colonyrl.agents.base import Algorithm

__all__ = ["Components", "Spaces"]


@dataclasses.dataclass(frozen=True)
class Spaces:
    observation: gym.Space
    action: gym.Space


@dataclasses.dataclass(frozen=True, kw_only=True)
class Components:
    env: EnvConfig
    actor: ActorCriticConfig
    algo: PPOConfig
    storage: RolloutConfig
    #: The test (evaluation) env; None means the train env's id with one sub-env.
    test_env: EnvConfig | None = None
    seed: int = 0

    def spaces(self) -> Spaces:
        """Observation and action space of one sub-env (builds and closes a throwaway env)."""
        env = gym.make(self.env.id, **self.env.kwargs)
        try:
            return Spaces(env.observation_space, env.action_space)
        finally:
            env.close()

    def build_algorithm(self, spaces: Spaces) -> Algorithm:
        return self.algo.build(self.actor.build(spaces.observation, spaces.action))

    def evaluation_env(self) -> EnvConfig:
        return self.test_env if self.test_env is not None else self.env
