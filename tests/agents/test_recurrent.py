"""Recurrent actor-critics (agents/recurrent.py) and recurrent PPO on sequences (agents/recurrent_ppo.py):
resets at episode starts, the fused unroll against step-by-step, the export with its state, sequence
minibatches from real CWorker rollouts (time order, episode boundaries, each chunk's first state),
burn-in, and the config errors."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.base import SequencePlan
from colonyrl.agents.networks import ActorCriticConfig, export_module
from colonyrl.agents.ppo import PPOConfig
from colonyrl.agents.recurrent import RecurrentActorCritic, core_step, core_unroll
from colonyrl.agents.recurrent_ppo import RecurrentPPOConfig, recurrent_ppo_loss
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import TrainConfig
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights
from colonyrl.storage.rollout import RolloutConfig

CARTPOLE = (gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2))
PENDULUM = (gym.spaces.Box(-8.0, 8.0, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
KINDS = pytest.mark.parametrize("kind", ["gru", "lstm"])


def _actor(kind: str, shared: bool = False, spaces=CARTPOLE) -> RecurrentActorCritic:
    torch.manual_seed(0)
    cfg = ActorCriticConfig(hidden_sizes=(16,), recurrent=kind, hidden_state_size=8, shared_trunk=shared)
    return RecurrentActorCritic(cfg, *spaces)


@KINDS
@pytest.mark.parametrize("shared", [False, True])
def test_unroll_equals_step_by_step_with_resets_inside_the_sequence(kind: str, shared: bool) -> None:
    actor = _actor(kind, shared)
    assert actor.state_shape == ((1 if kind == "gru" else 2) * (1 if shared else 2), 8)
    steps, columns = 12, 5
    obs, state = torch.randn(steps, columns, 4), torch.randn(columns, *actor.state_shape)
    starts = torch.rand(steps, columns) < 0.25
    starts[0, 0] = starts[5, 1] = True
    out = actor.unroll(obs, state, starts)
    assert out.params.shape == (steps, columns, 2) and out.values.shape == (steps, columns)
    s = state
    for t in range(steps):
        params, value, s = actor.step(obs[t], s, starts[t])
        torch.testing.assert_close(out.params[t], params)
        torch.testing.assert_close(out.values[t], value)
    torch.testing.assert_close(out.state, s)


@KINDS
def test_the_state_is_zero_where_an_episode_starts_and_kept_elsewhere(kind: str) -> None:
    actor = _actor(kind)
    obs, state = torch.randn(4, 4), torch.randn(4, *actor.state_shape)
    start = torch.tensor([True, False, True, False])
    with torch.no_grad():
        params, value, after = actor.step(obs, state, start)
        fresh = actor.step(obs, actor.initial_state(4))
        kept = actor.step(obs, state)
    for i in range(4):
        ref = fresh if start[i] else kept
        torch.testing.assert_close(params[i], ref[0][i])
        torch.testing.assert_close(value[i], ref[1][i])
        torch.testing.assert_close(after[i], ref[2][i])
    assert not torch.allclose(fresh[1], kept[1])  # the state matters: memory, not a no-op
    # the pure functions alone: x [B, D], state [B, slots, H]
    core = actor.cores[0]
    x, s = torch.randn(3, 16), torch.randn(3, actor.state_shape[0] // 2, 8)
    h, _ = core_step(core, x, s, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(h, core_step(core, x, torch.zeros_like(s))[0])
    seq, _ = core_unroll(core, x.unsqueeze(0), s, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(seq[0], h)


@KINDS
@pytest.mark.parametrize("spaces", [CARTPOLE, PENDULUM], ids=["discrete", "box"])
def test_export_takes_and_returns_the_state(tmp_path, kind: str, spaces) -> None:
    network = ActorCriticConfig(hidden_sizes=(16,), recurrent=kind, hidden_state_size=8)
    policy = RecurrentPPOConfig().build_policy(*spaces, network)
    path = str(tmp_path / "policy.pt2")
    export_module(policy.export_module(), spaces[0], path)
    loaded = torch.export.load(path).module()  # plain torch: (obs, state) -> (action, state)
    spaces[0].seed(1)
    for n in (1, 3):
        state, start = policy.initial_state(n), np.ones(n, dtype=bool)
        exported_state = torch.zeros(n, *policy.actor.state_shape)  # zeros at an episode start
        for _ in range(4):
            obs = np.stack([spaces[0].sample() for _ in range(n)])
            out = policy.act(obs, True, state=state, episode_start=start)
            action, exported_state = loaded(torch.as_tensor(obs), exported_state)
            assert exported_state.shape == (n, *policy.actor.state_shape)
            torch.testing.assert_close(action, torch.as_tensor(out.env_action))
            torch.testing.assert_close(exported_state, torch.as_tensor(out.state))
            state, start = out.state, np.zeros(n, dtype=bool)


def _round(sequence_length: int, burn_in: int = 0):
    """Two rollouts of a recurrent-PPO CWorker (CartPole episodes of at most 9 steps: episode
    starts inside sequences, which start mid-episode too), in a prepared rollout storage."""
    comp = Components(env=EnvConfig(id="CartPole-v1", num_envs=3, max_episode_steps=9),
                      actor=ActorCriticConfig(hidden_sizes=(16,), recurrent="lstm", hidden_state_size=8),
                      algo=RecurrentPPOConfig(num_epochs=2, minibatch_size=14, sequence_length=sequence_length,
                                              burn_in=burn_in),
                      storage=RolloutConfig(num_steps=20), seed=3)
    spaces = comp.spaces()
    torch.manual_seed(0)
    algo = comp.build_algorithm(spaces)
    worker = CWorker(comp, 0, "c0")
    rollouts = [worker.collect(Weights(0, algo.acting_weights())).data for _ in range(2)]
    storage = comp.storage.build(spaces.observation, spaces.action, 3, algo.policy.extras)
    for data in rollouts:
        storage.add_data(data)
    storage.before_gradients()
    return algo, storage, rollouts


def test_sequence_minibatches_keep_time_order_episode_boundaries_and_chunk_start_states() -> None:
    algo, storage, rollouts = _round(sequence_length=7)
    plan = algo.update_plan()
    assert plan == SequencePlan(2, 14, 7)
    # every episode start inside a rollout follows an autoreset (invalid) step: next-step autoreset
    for data in rollouts:
        np.testing.assert_array_equal(data["episode_start"][1:], ~data["valid"][:-1])
        assert data["episode_start"].any() and not data["valid"].all()
    seen: Counter = Counter()
    for batch in storage.batches(plan, torch.Generator().manual_seed(0)):
        steps, columns = batch.rewards.shape
        assert steps == 7 and batch.extras["state"].shape == (7, columns, 4, 8)
        for c in range(columns):
            # where this column comes from: the (rollout, env, first step) whose first observation it has
            (origin,) = [(i, j, s) for i, data in enumerate(rollouts) for s in range(20) for j in range(3)
                         if torch.equal(batch.obs[0, c], torch.from_numpy(data["obs"][s, j]))]
            i, j, s = origin
            data, n = rollouts[i], min(7, 20 - s)
            assert s % 7 == 0  # chunks of consecutive steps, never shuffled across time
            np.testing.assert_array_equal(batch.obs[:n + 1, c].numpy(), data["obs"][s:s + n + 1, j])
            for key, field in (("actions", "actions"), ("valid", "valid"), ("logp", "logp_old")):
                np.testing.assert_array_equal(getattr(batch, field)[:n, c].numpy(), data[key][s:s + n, j])
            for key in ("state", "episode_start"):
                np.testing.assert_array_equal(batch.extras[key][:n, c].numpy(), data[key][s:s + n, j])
            assert not batch.valid[n:, c].any()  # padding at the end only
            seen[origin] += 1
    assert len(seen) == 2 * 3 * 3 and set(seen.values()) == {2}  # every chunk once per epoch
    # Each chunk starts from its CWorker's state there and resets where episodes start: with the
    # collecting weights the unroll gives back the collected log-probs (ratio 1, no KL)...
    batch = next(iter(storage.batches(plan._replace(minibatch_size=10**6))))
    with torch.no_grad():
        out = algo.actor.unroll(batch.obs[:-1], batch.extras["state"][0], batch.extras["episode_start"])
        logp = algo.actor.make_distribution(out.params[batch.valid]).log_prob(batch.actions[batch.valid])
        torch.testing.assert_close(logp, batch.logp_old[batch.valid], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.values[batch.valid], batch.values_old[:-1][batch.valid], atol=1e-5, rtol=1e-5)
        loss = recurrent_ppo_loss(algo.actor, batch, algo.config)
        assert float(loss.approx_kl) < 1e-6 and float(loss.clipfrac) == 0.0
        # ... which they would not from a zero state, or without the resets
        zero = algo.actor.unroll(batch.obs[:-1], torch.zeros_like(batch.extras["state"][0]), batch.extras["episode_start"])
        no_reset = algo.actor.unroll(batch.obs[:-1], batch.extras["state"][0], torch.zeros_like(batch.valid))
    for other in (zero, no_reset):
        assert not torch.allclose(other.values[batch.valid], batch.values_old[:-1][batch.valid], atol=1e-4)


def test_burn_in_steps_only_refresh_the_state() -> None:
    algo, storage, _ = _round(sequence_length=10, burn_in=3)
    batch = next(iter(storage.batches(algo.update_plan()._replace(minibatch_size=10**6))))
    loss = recurrent_ppo_loss(algo.actor, batch, algo.config)
    # the burn-in's actions, advantages and returns are not in the loss...
    noise = batch._replace(actions=torch.cat([1 - batch.actions[:3], batch.actions[3:]]),
                           advantages=torch.cat([batch.advantages[:3] + 5.0, batch.advantages[3:]]),
                           returns=torch.cat([batch.returns[:3] - 7.0, batch.returns[3:]]))
    assert torch.equal(recurrent_ppo_loss(algo.actor, noise, algo.config).total, loss.total)
    # ... its observations are (they set the state), and without burn-in every step is
    moved = batch._replace(obs=torch.cat([batch.obs[:3] + 0.5, batch.obs[3:]]))
    assert not torch.equal(recurrent_ppo_loss(algo.actor, moved, algo.config).total, loss.total)
    assert not torch.equal(recurrent_ppo_loss(algo.actor, noise, algo.config.replace(burn_in=0)).total,
                           recurrent_ppo_loss(algo.actor, batch, algo.config.replace(burn_in=0)).total)
    result = algo.compute_gradients(batch)
    assert result.grads is not None and all(torch.isfinite(g).all() for g in result.grads)


def test_recurrent_choices_give_clear_errors() -> None:
    with pytest.raises(ConfigError, match="ActorCriticConfig.recurrent"):
        RecurrentPPOConfig().build(*CARTPOLE, ActorCriticConfig())
    with pytest.raises(ConfigError, match="ActorCriticConfig.recurrent"):
        PPOConfig().build(*CARTPOLE, ActorCriticConfig(recurrent="gru"))
    with pytest.raises(ConfigError, match="TrainConfig.actor.recurrent.*recurrent-ppo"):
        TrainConfig(actor=ActorCriticConfig(recurrent="lstm"))
    with pytest.raises(ConfigError, match="TrainConfig.actor.recurrent"):
        TrainConfig(algo=RecurrentPPOConfig(), actor=ActorCriticConfig())
    with pytest.raises(ConfigError, match="RecurrentPPOConfig.burn_in"):
        RecurrentPPOConfig(sequence_length=4, burn_in=4)
    with pytest.raises(ConfigError, match="ActorCriticConfig.recurrent"):
        ActorCriticConfig(recurrent="rnn")  # type: ignore[arg-type]
