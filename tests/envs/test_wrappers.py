"""Declarative wrappers (``EnvConfig.wrappers``): checked before any worker starts, applied in every
CWorker and in evaluation, and the wrapped env's spaces are what the networks are built for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.utils.env_checker import check_env

from colonyrl.config import ConfigError, from_dict
from colonyrl.envs import EnvConfig, WrapperConfig
from colonyrl.envs.snapshot import restore, snapshot
from colonyrl.envs.wrappers import PROJECT_WRAPPERS, wrapper_names
from colonyrl.launch.config import TrainConfig, parse_args
from colonyrl.launch.evaluate import evaluate
from colonyrl.launch.presets import preset
from colonyrl.scheme.c_worker import CWorker
from colonyrl.storage.rollout import RolloutConfig

TIME = WrapperConfig(name="TimeAwareObservation", kwargs={"normalize_time": True})
#: Arguments for each wrapper colonyrl ships, on CartPole (a new wrapper must be added here).
SHIPPED = {"RemoveVelocity": {"indices": [1, 3]}}


def test_every_shipped_wrapper_is_covered_here() -> None:
    assert set(SHIPPED) == set(PROJECT_WRAPPERS)
    assert set(PROJECT_WRAPPERS) <= set(wrapper_names())


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")  # checked wrapped, on purpose
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_wrapper_passes_gymnasium_env_checker(name: str) -> None:
    env = WrapperConfig(name=name, kwargs=SHIPPED[name]).wrap(CartPoleEnv())
    check_env(env, skip_render_check=True)
    # and built declaratively, as a CWorker builds it (under gymnasium.make's own wrappers)
    single = EnvConfig(wrappers=(WrapperConfig(name=name, kwargs=SHIPPED[name]),)).make_single()
    try:
        check_env(single, skip_render_check=True)
    finally:
        single.close()


def test_wrappers_apply_in_order_and_the_spaces_reach_the_network() -> None:
    cfg = TrainConfig(env=EnvConfig(num_envs=2, wrappers=(TIME,)), storage=RolloutConfig(num_steps=8))
    components = cfg.components()
    spaces = components.spaces()
    assert spaces.observation.shape == (5,)  # CartPole's 4 entries and the time
    algo = components.build_algorithm(spaces)
    assert algo.actor.obs_dim == 5
    worker = CWorker(components, 0, "c0")
    try:
        rollout = worker.collect()
    finally:
        worker.close()
    obs = rollout.data["obs"]
    assert obs.shape == (9, 2, 5)
    # the time entry counts the steps (normalized by CartPole's limit of 500)
    assert np.allclose(obs[:3, 0, 4], [0.0, 1 / 500, 2 / 500])
    two = EnvConfig(wrappers=(WrapperConfig(name="RemoveVelocity", kwargs={"indices": [1, 3]}), TIME))
    assert two.spaces()[0].shape == (3,)  # velocities removed first, then the time added


def test_wrappers_apply_in_evaluation() -> None:
    env = EnvConfig(wrappers=(TIME,), max_episode_steps=20)
    components = TrainConfig(env=env).components()
    policy = components.build_policy(components.spaces())  # built for 5 inputs: 4 would not fit it
    result = evaluate(policy, components.evaluation_env(), episodes=2)
    assert result.lengths.max() <= 20


def test_unknown_wrapper_names_the_field_and_the_close_matches() -> None:
    with pytest.raises(ConfigError) as e:
        EnvConfig(wrappers=(TIME, WrapperConfig(name="TimeAwareObservaton")))
    assert e.value.field == "EnvConfig.wrappers[1].name"
    assert "close matches: 'TimeAwareObservation'" in e.value.allowed and "RemoveVelocity" in e.value.allowed
    with pytest.raises(ConfigError, match="takes a Python function") as e:
        EnvConfig(wrappers=(WrapperConfig(name="TransformReward"),))
    assert e.value.field == "EnvConfig.wrappers[0].name"


def test_kwargs_the_wrapper_does_not_take_name_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        EnvConfig(wrappers=(WrapperConfig(name="FrameStackObservation", kwargs={"stack": 4}),))
    assert e.value.field == "EnvConfig.wrappers[0].kwargs.stack" and "stack_size" in e.value.allowed
    with pytest.raises(ConfigError) as e:
        EnvConfig(wrappers=(WrapperConfig(name="FrameStackObservation"),))
    assert e.value.field == "EnvConfig.wrappers[0].kwargs" and "'stack_size'" in e.value.allowed
    EnvConfig(wrappers=(WrapperConfig(name="FrameStackObservation", kwargs={"stack_size": 4}),))


def test_a_wrapper_that_does_not_fit_the_env_is_a_config_error_before_any_worker() -> None:
    cfg = EnvConfig(wrappers=(WrapperConfig(name="ResizeObservation", kwargs={"shape": [84, 84]}),))
    with pytest.raises(ConfigError) as e:  # what the Learner reads first (scheme.connect: spaces())
        TrainConfig(env=cfg).components().spaces()
    assert e.value.field == "EnvConfig.wrappers[0]" and "ResizeObservation" in e.value.allowed


def test_kwargs_are_any_json_and_anything_else_is_named() -> None:
    EnvConfig(id="Pendulum-v1", kwargs={"g": 9.81, "nested": {"a": [1, None, "x", {"b": True}]}})
    with pytest.raises(ConfigError) as e:
        EnvConfig(kwargs={"a": [1, {"b": object()}]})
    assert e.value.field == "EnvConfig.kwargs.a[1].b"
    with pytest.raises(ConfigError) as e:
        EnvConfig(kwargs={"g": float("nan")})
    assert e.value.field == "EnvConfig.kwargs.g"
    with pytest.raises(ConfigError) as e:
        WrapperConfig(name="ClipAction", kwargs={"x": {1: 2}})
    assert e.value.field == "WrapperConfig.kwargs.x[1]"


def test_wrappers_and_json_kwargs_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_args(preset("ppo-cartpole"), ["--env.wrappers", '["TimeAwareObservation", {"name": '
                     '"FrameStackObservation", "kwargs": {"stack_size": 2}}]', "--env.kwargs", '{"sutton_barto_reward": true}'])
    assert cfg.env.wrappers == (WrapperConfig(name="TimeAwareObservation"),
                                WrapperConfig(name="FrameStackObservation", kwargs={"stack_size": 2}))
    assert cfg.env.kwargs == {"sutton_barto_reward": True}
    assert cfg.components().spaces().observation.shape == (2, 5)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # tyro prints the ConfigError and exits 2: nothing started
        parse_args(preset("ppo-cartpole"), ["--env.wrappers", '["FrameStack"]'])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "EnvConfig.wrappers[0].name='FrameStack' is invalid" in err
    assert "close matches: 'FrameStackObservation'" in err
    with pytest.raises(SystemExit):
        parse_args(preset("ppo-cartpole"), ["--help"])
    out = capsys.readouterr().out
    assert "--env.wrappers" in out and "--env.kwargs" in out and "--env.normalize.obs" in out


def test_a_wrapped_env_snapshots_and_restores_exactly() -> None:
    cfg = EnvConfig(num_envs=2, wrappers=(TIME, WrapperConfig(name="FrameStackObservation", kwargs={"stack_size": 3})))
    env, _ = cfg.make(seed=1)
    other, _ = cfg.make(seed=2)
    try:
        for _ in range(5):
            env.step(env.action_space.sample())
        report = restore(other, snapshot(env))
        assert report.exact, [layer for layer in report.layers if layer.missed]
        actions = np.array([0, 1])
        a, b = env.step(actions)[0], other.step(actions)[0]
        np.testing.assert_array_equal(a, b)
    finally:
        env.close()
        other.close()


def test_the_config_round_trips_through_a_checkpoint_dict() -> None:
    cfg = TrainConfig(env=EnvConfig(wrappers=(TIME, WrapperConfig(name="RemoveVelocity", kwargs={"indices": [1, 3]}))))
    again = from_dict(TrainConfig, dataclasses.asdict(cfg))
    assert again.env == cfg.env and isinstance(again.env.wrappers[0], WrapperConfig)
