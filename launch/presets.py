"""Presets per (algorithm, env): the schemes defined by the launch scripts, by name.

Each launch script in ``launch/scripts/`` defines its scheme in code as ``SCHEME``; the CLI offers
the same objects as presets, so there is one definition of each.
"""

from __future__ import annotations

import importlib

from colonyrl.config import ConfigError
from colonyrl.launch.config import TrainConfig

__all__ = ["PRESETS", "DEFAULT_PRESET", "preset", "describe"]

#: preset name -> launch script module that defines it
PRESETS: dict[str, str] = {
    "ppo-cartpole": "colonyrl.launch.scripts.cartpole_inprocess",
    "ppo-cartpole-ray": "colonyrl.launch.scripts.cartpole_ray",
    "ppo-pendulum": "colonyrl.launch.scripts.pendulum",
    "sac-pendulum": "colonyrl.launch.scripts.sac_pendulum",
    "sac-pendulum-ray": "colonyrl.launch.scripts.sac_pendulum_ray",
    "td3-pendulum": "colonyrl.launch.scripts.td3_pendulum",
    "ddpg-pendulum": "colonyrl.launch.scripts.ddpg_pendulum",
    "dqn-cartpole": "colonyrl.launch.scripts.dqn_cartpole",
    "pg-cartpole": "colonyrl.launch.scripts.pg_cartpole",
    "a2c-cartpole": "colonyrl.launch.scripts.a2c_cartpole",
    "ppo-kl-cartpole": "colonyrl.launch.scripts.ppo_kl_cartpole",
    "impala-cartpole-ray": "colonyrl.launch.scripts.impala_cartpole_ray",
    "appo-cartpole-ray": "colonyrl.launch.scripts.appo_cartpole_ray",
    "a3c-cartpole-ray": "colonyrl.launch.scripts.a3c_cartpole_ray",
    "ddppo-cartpole-ray": "colonyrl.launch.scripts.ddppo_cartpole_ray",
    "apex-dqn-cartpole-ray": "colonyrl.launch.scripts.apex_dqn_cartpole_ray",
    "ppo-lstm-cartpole-novel": "colonyrl.launch.scripts.ppo_lstm_cartpole_novel",
    "dqn-her-bitflip": "colonyrl.launch.scripts.dqn_her_bitflip",
    # optional extras: atari (ale-py), mujoco
    "ppo-atari-pong": "colonyrl.launch.scripts.ppo_atari_pong",
    "dqn-atari-pong": "colonyrl.launch.scripts.dqn_atari_pong",
    "ppo-halfcheetah": "colonyrl.launch.scripts.ppo_halfcheetah",
    "ppo-halfcheetah-fast": "colonyrl.launch.scripts.ppo_halfcheetah_fast",
    "sac-halfcheetah": "colonyrl.launch.scripts.sac_halfcheetah",
}
DEFAULT_PRESET = "ppo-cartpole"


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError("preset", name, "one of " + ", ".join(repr(p) for p in PRESETS))
    return importlib.import_module(PRESETS[name]).SCHEME


def describe(name: str) -> str:
    """``<algorithm> <env id>: <first line of the launch script's docstring>``."""
    try:
        module = importlib.import_module(PRESETS[name])
    except ConfigError as e:  # e.g. an Atari preset without the atari extra installed
        return f"unavailable: {e.allowed}"
    doc = (module.__doc__ or "").strip()
    scheme = module.SCHEME
    return f"{scheme.algo.name:5s} {scheme.env.id:14s} {doc.splitlines()[0] if doc else ''}"
