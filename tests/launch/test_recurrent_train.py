"""Recurrent PPO through ``train()``: exact resume with the CWorkers' hidden states, evaluation that
carries and resets the state, the exported policy with its state, the preset and its flags, and the
other recurrent algorithms (recurrent PG, A2C, IMPALA, APPO) as command-line subcommands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.checkpoint import load_checkpoint
from colonyrl.launch.config import RunConfig, parse_args
from colonyrl.launch.evaluate import EVAL_WORKER_INDEX, evaluate, load_model
from colonyrl.launch.presets import preset
from colonyrl.launch.train import train

PRESET = preset("ppo-lstm-cartpole-novel")


def _run(tmp_path: Path, name: str, **run) -> RunConfig:
    return RunConfig(**{"eval_episodes": 3, "track": False, "progress": False, "eval_every": None,
                        "stop_at_return": None, "output_dir": str(tmp_path / name / "runs"),
                        "checkpoint_dir": str(tmp_path / name / "ckpt"), **run})


def _newest(folder: Path) -> dict:
    return load_checkpoint(max(folder.glob("*/ckpt-*.pt"), key=lambda p: p.name))


def test_train_then_resume_is_bit_identical_with_the_hidden_states(tmp_path: Path) -> None:
    """512 env steps (a round of 16 envs x 32 steps), then resumed to 1024: the same weights, Adam
    moments, CWorker hidden states and final evaluation as 1024 straight."""
    straight = train(PRESET.replace(run=_run(tmp_path, "straight", total_env_steps=1024)))
    first = train(PRESET.replace(run=_run(tmp_path, "split", total_env_steps=512)))
    saved = _newest(tmp_path / "split" / "ckpt")["learner"]["workers"][0]["cworkers"][0]
    assert saved["policy_state"].shape == (16, 4, 64) and saved["policy_state"].any()  # 2 LSTMs: h, c each
    resumed = train(PRESET.replace(run=_run(tmp_path, "split", total_env_steps=1024,
                                            resume=str(next((tmp_path / "split" / "ckpt").iterdir())))))
    assert first.counters["env_steps"] == 512 and resumed.counters == straight.counters
    a, b = _newest(tmp_path / "straight" / "ckpt")["learner"], _newest(tmp_path / "split" / "ckpt")["learner"]
    for key, value in a["algo"]["actor"].items():
        assert torch.equal(value, b["algo"]["actor"][key]), key
    for x, y in zip(a["algo"]["optimizer"]["state"].values(), b["algo"]["optimizer"]["state"].values(), strict=True):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    wa, wb = a["workers"][0]["cworkers"][0], b["workers"][0]["cworkers"][0]
    assert torch.equal(wa["policy_state"], wb["policy_state"]) and torch.equal(wa["episode_start"], wb["episode_start"])
    np.testing.assert_array_equal(resumed.evaluation.returns, straight.evaluation.returns)

    # the saved model: the policy rebuilt from model.pt and the exported program agree, step by step
    policy, _, _ = load_model(resumed.model_dir)
    program = torch.export.load(resumed.model_dir / "policy.pt2").module()
    env, obs = PRESET.env.make(num_envs=2, seed=4)
    state, start, done = policy.initial_state(2), np.ones(2, dtype=bool), np.zeros(2, dtype=bool)
    exported_state = torch.zeros(2, 4, 64)
    for _ in range(40):
        out = policy.act(obs, True, state=state, episode_start=start)
        # the caller of the exported program zeroes the state where an episode starts
        exported_state = exported_state * torch.as_tensor(~start, dtype=torch.float32)[:, None, None]
        action, exported_state = program(torch.as_tensor(obs), exported_state)
        np.testing.assert_array_equal(action.numpy(), out.env_action)
        torch.testing.assert_close(exported_state, torch.as_tensor(out.state))
        obs, _, terminated, truncated, _ = env.step(out.env_action)
        state, start, done = out.state, done, terminated | truncated  # next-step autoreset
    env.close()


class _Spy:
    """A stateful policy's calls, recorded (state and episode starts it was given)."""

    def __init__(self, policy) -> None:
        self.policy, self.calls = policy, []
        self.extras = policy.extras

    def initial_state(self, num_envs: int) -> np.ndarray:
        return self.policy.initial_state(num_envs)

    def act(self, obs, deterministic=False, *, state, episode_start):
        out = self.policy.act(obs, deterministic, state=state, episode_start=episode_start)
        self.calls.append((state.copy(), episode_start.copy(), out.state.copy(), out.env_action.copy()))
        return out


def test_evaluation_carries_the_state_and_resets_it_where_an_episode_starts() -> None:
    components = PRESET.replace(env=EnvConfig(id="CartPole-v1")).components()
    torch.manual_seed(0)
    spy = _Spy(components.build_policy(components.spaces()))
    evaluate(spy, components.env, episodes=6, seed=1, deterministic=False)  # random episode lengths
    first_state, first_start, _, _ = spy.calls[0]
    assert not first_state.any() and first_start.all()
    # the same env, seeds and actions again: where episodes ended
    env, _ = components.env.make(num_envs=6, seed=1, worker_index=EVAL_WORKER_INDEX)
    done = []
    for _, _, _, action in spy.calls:
        _, _, terminated, truncated, _ = env.step(action)
        done.append(terminated | truncated)
    env.close()
    for t in range(1, len(spy.calls)):
        state, start, _, _ = spy.calls[t]
        np.testing.assert_array_equal(state, spy.calls[t - 1][2])  # carried step by step
        # reset on the observation after the autoreset step that follows an episode end
        np.testing.assert_array_equal(start, done[t - 2] if t >= 2 else np.zeros(6, dtype=bool))
    assert any(call[1].any() for call in spy.calls[1:])  # some episodes ended before the last one


def test_the_preset_and_its_recurrent_flags() -> None:
    assert PRESET.algo.name == "recurrent-ppo" and PRESET.env.id == "colonyrl/CartPoleNoVel-v1"
    assert PRESET.components().spaces().observation.shape == (2,)  # cart position and pole angle
    cfg = parse_args(PRESET, ["--actor.recurrent", "gru", "--actor.hidden-state-size", "32",
                              "--algo.sequence-length", "8", "--algo.burn-in", "2"])
    assert (cfg.actor.recurrent, cfg.actor.hidden_state_size) == ("gru", 32)
    assert (cfg.algo.sequence_length, cfg.algo.burn_in) == (8, 2)


def test_the_other_recurrent_algorithms_are_subcommands_with_the_recurrent_flags() -> None:
    for name in ("recurrent-impala", "recurrent-a2c"):  # (recurrent-pg and -appo: the same mixin and flags)
        cfg = parse_args(PRESET, [f"algo:{name}", "--algo.sequence-length", "8", "--algo.burn-in", "2"])
        assert cfg.algo.name == name and (cfg.algo.sequence_length, cfg.algo.burn_in) == (8, 2)
        components = cfg.components()  # the preset's LSTM actor goes with the chosen algorithm
        assert components.build_policy(components.spaces()).initial_state(2).shape == (2, 4, 64)
