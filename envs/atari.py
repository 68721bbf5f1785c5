"""Atari through ale-py's native vector env (``EnvConfig(vectorization="ale")``), an optional extra
(``pip install 'colonyrl[atari]'``; the ROMs ship inside ale-py).

ale-py's ``AtariVectorEnv`` (what ``gymnasium.make_vec("ALE/Pong-v5")`` builds) steps all sub-envs
in C++ threads and does the standard preprocessing itself (Machado et al. 2018, "Revisiting the
Arcade Learning Environment", JAIR 61; Mnih et al. 2015, Methods): frame skip with max-pooling of
the last two frames, 84x84 grayscale, a stack of 4, up to 30 no-ops and FIRE at reset, reward
clipping. Observations are uint8 ``[N, 4, 84, 84]``: the Nature CNN (agents/encoders.py) divides
by 255 inside the network, so frames stay uint8 on the wire, in rollouts and in replay.

How it meets the CWorkers' contract (gymnasium 1.x next-step autoreset, envs/factory.py):

* ``AtariVectorEnv`` autoresets in ``NextStep`` mode by default (its ``autoreset_mode`` argument;
  the factory asserts it), so a finished sub-env is reset on the following step, whose reward is 0
  and flags False: the storage masks it, as for gymnasium's own vector envs.
* Episodic life for **training only** (:attr:`AtariConfig.episodic_life`): a lost life ends the
  episode for the learner but the game goes on (DeepMind's ``EpisodicLifeEnv``, "make end-of-life
  == end-of-episode, but only reset on true game over"; SB3's ``terminal_on_life_loss``). ale-py
  calls this ``life_loss_info=True``; its own ``episodic_life=True`` instead *resets the game* at a
  lost life (ALE pull request #611), so the agent would never see its later lives. The step after
  a lost life is then a real step, not a reset: the CWorker masks it like an autoreset step, which
  drops one transition per lost life (the game's next frames are still seen and learned from).
  As no reset follows a lost life, FIRE is pressed only at game start: in games that wait for it
  after a lost life (Breakout) the policy learns to press it, whereas SB3's wrappers press it.
  Evaluation envs (:meth:`AtariConfig.evaluation`) use neither episodic life nor reward clipping,
  so they report game scores.
* Episode statistics while training are per life and of clipped rewards (as SB3's ``AtariWrapper``
  without a ``Monitor`` under it); for Pong, which has no lives and rewards of +-1, they are the
  game score.
* Seeds: colonyrl gives one 32-bit seed per sub-env (``env_seeds``); ale-py takes a numpy array of
  C ints, so :class:`AleSeeding` folds them into ``[0, 2**31)``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

from colonyrl.config import Config, ConfigError, param

__all__ = ["AtariConfig", "AleSeeding", "is_ale_id", "import_ale", "make_ale_vector", "ale_kwargs", "ale_spaces",
           "INSTALL_HINT"]

INSTALL_HINT = "pip install 'colonyrl[atari]' (ale-py, which ships the ROMs)"
#: AtariVectorEnv arguments that :class:`AtariConfig` or the factory set (not ``EnvConfig.kwargs``).
_OWNED = {"game", "num_envs", "frameskip", "img_height", "img_width", "grayscale", "stack_num", "noop_max",
          "use_fire_reset", "episodic_life", "life_loss_info", "reward_clipping", "num_threads",
          "autoreset_mode", "batch_size"}


def is_ale_id(env_id: str) -> bool:
    """Whether ``env_id`` names one of ale-py's gymnasium envs (``ALE/Pong-v5``)."""
    return env_id.startswith("ALE/")


def import_ale(env_id: str = "ALE/...") -> Any:
    """Import ale-py, which registers the ``ALE/`` ids with gymnasium; a ConfigError if absent."""
    try:
        ale_py = importlib.import_module("ale_py")
    except ImportError as e:
        raise ConfigError("EnvConfig.id", env_id, f"an env whose package is installed; for Atari: {INSTALL_HINT}") from e
    gymnasium.register_envs(ale_py)
    return ale_py


@dataclass(frozen=True, kw_only=True)
class AtariConfig(Config):
    """ale-py's preprocessing (``AtariVectorEnv`` arguments); read when ``EnvConfig.vectorization``
    is ``"ale"``. Defaults are CleanRL's ``ppo_atari_envpool.py`` / SB3's ``AtariWrapper``."""

    #: Emulator frames per agent step (the last two max-pooled).
    frameskip: int = param(4, ge=1)
    #: Side of the square frame after resizing.
    img_size: int = param(84, ge=8)
    grayscale: bool = True
    #: Frames stacked along the first (channel) axis.
    stack_num: int = param(4, ge=1)
    #: Up to this many random no-ops at reset.
    noop_max: int = param(30, ge=0)
    #: Press FIRE at reset in games that wait for it (Pong, Breakout).
    fire_reset: bool = True
    #: Training only: a lost life ends the learner's episode, the game goes on (module docstring).
    episodic_life: bool = True
    #: Training only: rewards clipped to their sign (Mnih et al. 2015).
    reward_clipping: bool = True
    #: ale-py's worker threads per vector env; 0 lets ale-py choose (one per core). One by default:
    #: one thread per worker (no oversubscription), parallelism from more CWorkers.
    num_threads: int = param(1, ge=0)

    def evaluation(self) -> AtariConfig:
        """The same preprocessing without the training-only signals: game over ends an episode and
        rewards are the game's."""
        return self.replace(episodic_life=False, reward_clipping=False)

    def vector_kwargs(self) -> dict[str, Any]:
        return {"frameskip": self.frameskip, "img_height": self.img_size, "img_width": self.img_size,
                "grayscale": self.grayscale, "stack_num": self.stack_num, "noop_max": self.noop_max,
                "use_fire_reset": self.fire_reset, "episodic_life": False, "life_loss_info": self.episodic_life,
                "reward_clipping": self.reward_clipping, "num_threads": self.num_threads}


def check_ale_kwargs(kwargs: dict[str, Any]) -> None:
    """ConfigError for an ``EnvConfig.kwargs`` key ``AtariVectorEnv`` does not take, or one that
    :class:`AtariConfig` sets."""
    from ale_py.vector_env import AtariVectorEnv

    accepted = [p for p in inspect.signature(AtariVectorEnv.__init__).parameters if p not in ("self", *_OWNED)]
    for key in kwargs:
        if key in _OWNED:
            raise ConfigError(f"EnvConfig.kwargs.{key}", kwargs[key],
                              "a key AtariConfig does not set (use --env.atari.* for the preprocessing)")
        if key not in accepted:
            raise ConfigError(f"EnvConfig.kwargs.{key}", kwargs[key],
                              f"a keyword of ale-py's AtariVectorEnv ({', '.join(accepted)})")


def ale_kwargs(env_id: str, kwargs: dict[str, Any], max_episode_steps: int | None,
               atari: AtariConfig) -> dict[str, Any]:
    """``AtariVectorEnv`` arguments: the registered spec's (``ALE/Pong-v5``: sticky actions 0.25,
    108k frames), then ``kwargs``, then the preprocessing; ``max_episode_steps`` in agent steps
    becomes ``max_num_frames_per_episode`` (frames = steps x frame skip)."""
    import_ale()
    spec_kwargs = dict(gymnasium.spec(env_id).kwargs)
    spec_kwargs.pop("frameskip", None)
    out = {**spec_kwargs, **kwargs, **atari.vector_kwargs()}
    if max_episode_steps is not None:
        out["max_num_frames_per_episode"] = max_episode_steps * atari.frameskip
    return out


class AleSeeding(VectorWrapper):
    """``AtariVectorEnv`` as the factory's other vector envs: a list of per-sub-env seeds is
    accepted (folded into ale-py's C-int range), and rewards are float64 like ``SyncVectorEnv``'s
    (ale-py returns int32)."""

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> Any:
        if isinstance(seed, (list, tuple, np.ndarray)):
            seed = np.asarray(seed, dtype=np.int64) & 0x7FFFFFFF
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(actions))
        return obs, reward.astype(np.float64), terminated, truncated, info


@functools.lru_cache(maxsize=32)
def _spaces(env_id: str, kwargs_json: str, atari: AtariConfig) -> tuple[gymnasium.Space, gymnasium.Space]:
    vec = make_ale_vector(env_id, 1, json.loads(kwargs_json), None, atari)
    try:
        return vec.single_observation_space, vec.single_action_space
    finally:
        vec.close()


def ale_spaces(env_id: str, kwargs: dict[str, Any], atari: AtariConfig) -> tuple[gymnasium.Space, gymnasium.Space]:
    """(observation, action) space of one sub-env. Building ale-py's env loads the ROM (~0.4 s) and
    the Learner, every GWorker and CWorker and each saved model ask for the spaces: kept per
    process (copies returned: spaces hold a sampling RNG)."""
    return copy.deepcopy(_spaces(env_id, json.dumps(kwargs, sort_keys=True), atari))


def make_ale_vector(env_id: str, num_envs: int, kwargs: dict[str, Any], max_episode_steps: int | None,
                    atari: AtariConfig) -> VectorEnv:
    """ale-py's vector env for ``env_id`` (``ALE/Pong-v5``), next-step autoreset, seeded by lists."""
    from ale_py.vector_env import AtariVectorEnv

    return AleSeeding(AtariVectorEnv(num_envs=num_envs, **ale_kwargs(env_id, kwargs, max_episode_steps, atari)))
