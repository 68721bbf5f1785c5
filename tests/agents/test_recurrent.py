"""Recurrent actor-critics (agents/recurrent.py), recurrent PPO on sequences (agents/recurrent_ppo.py)
and recurrent PG, A2C, IMPALA and APPO (agents/recurrent_{pg,a2c,impala,appo}.py): resets at episode
starts, the fused unroll against step-by-step, the export with its state, sequence minibatches from
real CWorker rollouts (time order, episode boundaries, each chunk's first state), burn-in, each
variant's loss against its feed-forward loss on a network reset every step, and the config errors."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.appo import appo_loss
from colonyrl.agents.base import SequencePlan
from colonyrl.agents.impala import impala_loss
from colonyrl.agents.networks import ActorCriticConfig, export_module
from colonyrl.agents.pg import pg_loss
from colonyrl.agents.ppo import PPOConfig
from colonyrl.agents.recurrent import (
    RecurrentActorCritic,
    RecurrentActorCriticPolicy,
    RecurrentPolicyExport,
    core_step,
    core_unroll,
    unroll_columns,
    valid_steps,
)
from colonyrl.agents.recurrent_a2c import RecurrentA2CConfig
from colonyrl.agents.recurrent_appo import RecurrentAPPOConfig
from colonyrl.agents.recurrent_impala import RecurrentIMPALAConfig
from colonyrl.agents.recurrent_pg import RecurrentPGConfig
from colonyrl.agents.recurrent_ppo import RecurrentPPOConfig, recurrent_ppo_loss
from colonyrl.config import ConfigError
from colonyrl.envs.factory import EnvConfig
from colonyrl.launch.config import TrainConfig
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights
from colonyrl.storage.rollout import Minibatch, RolloutConfig, SequenceBatch

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


def _round(sequence_length: int, burn_in: int = 0, algo_config=None):
    """Two rollouts of a recurrent CWorker (recurrent PPO unless ``algo_config``; CartPole episodes
    of at most 9 steps: episode starts inside sequences, which start mid-episode too), in a
    prepared rollout storage."""
    algo_config = algo_config or RecurrentPPOConfig(num_epochs=2, minibatch_size=14, sequence_length=sequence_length,
                                                    burn_in=burn_in)
    comp = Components(env=EnvConfig(id="CartPole-v1", num_envs=3, max_episode_steps=9),
                      actor=ActorCriticConfig(hidden_sizes=(16,), recurrent="lstm", hidden_state_size=8),
                      algo=algo_config, storage=RolloutConfig(num_steps=20), seed=3)
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


# -- recurrent PG, A2C, IMPALA, APPO ------------------------------------------------------------------------------

#: name -> (config, its feed-forward loss). The entropy bonus is on so that every term is in the total.
VARIANTS = {
    "recurrent-pg": (RecurrentPGConfig(ent_coef=0.01), pg_loss),
    "recurrent-a2c": (RecurrentA2CConfig(ent_coef=0.01, normalize_advantage=True), pg_loss),
    "recurrent-impala": (RecurrentIMPALAConfig(), impala_loss),
    "recurrent-appo": (RecurrentAPPOConfig(ent_coef=0.01), appo_loss),
}
NAMES = pytest.mark.parametrize("name", list(VARIANTS))


def _algo(name: str, kind: str = "lstm", spaces=CARTPOLE, **changes):
    torch.manual_seed(0)
    network = ActorCriticConfig(hidden_sizes=(16,), recurrent=kind, hidden_state_size=8)
    return VARIANTS[name][0].replace(**changes).build(*spaces, network)


def _batch(actor: RecurrentActorCritic, steps: int = 6, columns: int = 4, all_starts: bool = False) -> SequenceBatch:
    """A time-major batch with gymnasium's next-step autoreset (an episode end, its invalid
    autoreset step, then an episode start): column 0 terminates at step 1, column 2 is truncated
    at 3, column 3 terminates at 4 so its bootstrap observation starts an episode; column 1 starts
    one at its first step. ``all_starts``: every observation starts an episode (the state is reset
    at every step) and the last step is invalid everywhere (so is the bootstrap row's)."""
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(steps + 1, columns, actor.obs_dim, generator=g)
    actions = (torch.randint(0, 2, (steps, columns), generator=g) if actor.is_discrete
               else torch.randn(steps, columns, *actor.action_shape, generator=g))
    terminated, truncated = (torch.zeros(steps, columns, dtype=torch.bool) for _ in range(2))
    valid = torch.ones(steps, columns, dtype=torch.bool)
    terminated[1, 0], truncated[3, 2], terminated[4, 3] = True, True, True
    valid[2, 0], valid[4, 2], valid[5, 3] = False, False, False
    starts = torch.zeros(steps, columns, dtype=torch.bool)
    starts[0, 1], starts[3, 0], starts[5, 2] = True, True, True  # start[t + 1] = ~valid[t]
    if all_starts:
        starts[:], valid[-1] = True, False
    advantages = torch.randn(steps, columns, generator=g) * valid
    values_old = 0.1 * torch.randn(steps + 1, columns, generator=g)
    return SequenceBatch(
        obs, actions, torch.rand(steps, columns, generator=g) * valid, terminated, truncated, valid,
        float(np.log(0.5)) + 0.1 * torch.randn(steps, columns, generator=g), values_old, advantages,
        advantages + values_old[:-1], num_samples=int(valid.sum()), gamma=0.9,
        advantage_stats=(float(advantages[valid].mean()), float(advantages[valid].std())),
        extras={"state": torch.randn(steps, columns, *actor.state_shape, generator=g), "episode_start": starts})


class _Stepwise(torch.nn.Module):
    """The recurrent actor applied to each observation on its own, its state reset first: a
    feed-forward actor-critic (the interface the feed-forward losses read)."""

    def __init__(self, actor: RecurrentActorCritic) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = torch.randn(len(obs), *self.actor.state_shape)  # any state: it is reset
        params, value, _ = self.actor.step(obs, state, torch.ones(len(obs), dtype=torch.bool))
        return params, value

    def distribution(self, obs: torch.Tensor):
        params, value = self(obs)
        return self.actor.make_distribution(params), value

    def make_distribution(self, params: torch.Tensor):
        return self.actor.make_distribution(params)


def _feed_forward_loss(name: str, actor: RecurrentActorCritic, batch: SequenceBatch, cfg):
    """The feed-forward algorithm's loss on the same steps: PG and A2C on the flat valid steps
    (a ``Minibatch``), IMPALA and APPO on the time-major batch."""
    loss = VARIANTS[name][1]
    if loss is not pg_loss:
        return loss(_Stepwise(actor), batch, cfg)
    v = batch.valid
    flat = Minibatch(batch.obs[:-1][v], batch.actions[v], batch.logp_old[v], batch.advantages[v], batch.returns[v],
                     batch.values_old[:-1][v], advantage_stats=batch.advantage_stats)
    return loss(_Stepwise(actor), flat, cfg)


@pytest.mark.parametrize(("name", "kind", "spaces"), [
    ("recurrent-pg", "gru", CARTPOLE), ("recurrent-a2c", "lstm", CARTPOLE), ("recurrent-impala", "lstm", CARTPOLE),
    ("recurrent-impala", "gru", PENDULUM), ("recurrent-appo", "gru", CARTPOLE), ("recurrent-appo", "lstm", PENDULUM)])
def test_gradients_are_finite_for_every_parameter_and_loss_term(name: str, kind: str, spaces) -> None:
    algo = _algo(name, kind, spaces)
    assert algo.config.name == name and isinstance(algo.policy, RecurrentActorCriticPolicy)
    result = algo.compute_gradients(_batch(algo.actor))
    params = algo.parameters()
    assert result.grads is not None and len(result.grads) == len(params)
    for (pname, p), g in zip(algo.actor.named_parameters(), result.grads, strict=True):
        assert g.shape == p.shape and torch.isfinite(g).all() and g.abs().sum() > 0, pname
    loss_type = type(algo.loss(_batch(algo.actor)))
    assert set(result.info) == set(loss_type._fields[1:]) and all(np.isfinite(v) for v in result.info.values())
    before = [p.detach().clone() for p in params]
    algo.apply_gradients(result.grads)
    assert all(not torch.equal(a, p) for a, p in zip(before, params, strict=True))


@NAMES
@KINDS
def test_with_a_reset_at_every_step_the_loss_is_the_feed_forward_loss_of_the_same_network(name: str, kind: str) -> None:
    algo = _algo(name, kind)
    batch = _batch(algo.actor, all_starts=True)
    recurrent, feed_forward = algo.loss(batch), _feed_forward_loss(name, algo.actor, batch, algo.config)
    assert type(recurrent) is type(feed_forward)
    for term, a, b in zip(recurrent._fields, recurrent, feed_forward, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), msg=term)
    params = algo.parameters()
    for a, b in zip(torch.autograd.grad(recurrent.total, params), torch.autograd.grad(feed_forward.total, params),
                    strict=True):
        torch.testing.assert_close(a, b)
    # with the episodes of _batch (resets at some steps only), the state matters: not the same loss
    assert not torch.allclose(algo.loss(_batch(algo.actor)).total,
                              _feed_forward_loss(name, algo.actor, _batch(algo.actor), algo.config).total)


@KINDS
def test_sequence_unrolls_reset_where_episodes_start_and_bootstrap_as_the_cworker(kind: str) -> None:
    actor = _actor(kind)
    batch = _batch(actor)
    with torch.no_grad():
        out = unroll_columns(actor, batch)
        # step by step, as a CWorker acts from the stored first state; the bootstrap observation
        # starts an episode where the last step was an autoreset step (column 3)
        starts = torch.cat([batch.extras["episode_start"], ~batch.valid[-1:]])
        assert starts[-1].tolist() == [False, False, False, True]
        state = batch.extras["state"][0]
        for t in range(len(batch.obs)):
            params, value, state = actor.step(batch.obs[t], state, starts[t])
            torch.testing.assert_close(out.params[t], params)
            torch.testing.assert_close(out.values[t], value)
        # nothing before an episode start reaches past it (column 0 starts one at step 3)...
        obs = batch.obs.clone()
        obs[:3] += 1.0
        moved = unroll_columns(actor, batch._replace(obs=obs))
        torch.testing.assert_close(moved.values[3:, 0], out.values[3:, 0])
        assert not torch.allclose(moved.values[3:, 1], out.values[3:, 1])  # column 1 goes on remembering
        # the GAE-based losses' view: the valid steps of the L steps, flat in time-major order
        steps = valid_steps(actor, batch)
    torch.testing.assert_close(steps.values, out.values[:-1][batch.valid])
    torch.testing.assert_close(steps.params, out.params[:-1][batch.valid])
    assert torch.equal(steps.returns, batch.returns[batch.valid])


@NAMES
def test_the_stored_state_is_used_only_where_no_episode_starts(name: str) -> None:
    algo = _algo(name)
    batch = _batch(algo.actor)
    with torch.no_grad():
        loss = algo.loss(batch).total
        state = batch.extras["state"].clone()
        state[0, 1] += 1.0  # column 1 starts an episode at its first step: its stored state is reset
        same = algo.loss(batch._replace(extras={**batch.extras, "state": state})).total
        state[0, 0] += 1.0  # column 0 does not
        other = algo.loss(batch._replace(extras={**batch.extras, "state": state})).total
    torch.testing.assert_close(same, loss)
    assert not torch.allclose(other, loss)


@NAMES
def test_burn_in_steps_only_refresh_the_state_of_every_variant(name: str) -> None:
    algo = _algo(name, burn_in=2)
    batch = _batch(algo.actor)
    loss = algo.loss(batch)
    # the burn-in's actions, rewards, advantages and behaviour log-probs are not in the loss...
    noise = batch._replace(**{field: torch.cat([getattr(batch, field)[:2] + shift, getattr(batch, field)[2:]])
                              for field, shift in (("actions", 1), ("rewards", 3.0), ("advantages", 5.0),
                                                   ("logp_old", -0.5))})
    assert torch.equal(algo.loss(noise).total, loss.total)
    # ... its observations are (they set the state)
    assert not torch.equal(algo.loss(batch._replace(obs=torch.cat([batch.obs[:2] + 0.5, batch.obs[2:]]))).total,
                           loss.total)
    # a batch whose valid steps all lie in the burn-in gives a zero loss and zero gradients
    empty = batch._replace(valid=torch.cat([batch.valid[:2], torch.zeros_like(batch.valid[2:])]))
    result = algo.compute_gradients(empty)
    assert float(algo.loss(empty).total.detach()) == 0.0 and all(not g.any() for g in result.grads)


def test_recurrent_impala_on_its_own_rollouts_is_on_policy() -> None:
    """Real CWorker rollouts in chunks of 10 of 20 steps: the core unrolled from each chunk's stored
    state, with the resets and the bootstrap row's start, gives back every value the CWorker
    computed (the bootstrap V(x_L) too) and its log-probs: V-trace's rho is 1 everywhere."""
    cfg = RecurrentIMPALAConfig(minibatch_size=10**6, sequence_length=10)
    algo, storage, rollouts = _round(10, algo_config=cfg)
    assert algo.update_plan() == SequencePlan(1, 10**6, 10)
    (batch,) = storage.batches(algo.update_plan())
    assert batch.rewards.shape == (10, 2 * 2 * 3) and batch.valid.sum() < batch.valid.numel()
    with torch.no_grad():
        out = unroll_columns(algo.actor, batch)
        torch.testing.assert_close(out.values, batch.values_old, atol=1e-5, rtol=1e-5)
        loss = algo.loss(batch)
    assert abs(float(loss.rho_mean) - 1.0) < 1e-5 and abs(float(loss.approx_kl)) < 1e-6


def test_the_variants_export_a_policy_that_takes_and_returns_the_state(tmp_path) -> None:
    for name in VARIANTS:  # every variant acts and exports through the same recurrent policy...
        algo = _algo(name, "gru")
        assert set(algo.policy.extras) == {"logp", "values", "state", "episode_start"}
        assert isinstance(algo.policy.export_module(), RecurrentPolicyExport)
    # ... exported once here (a torch.export takes seconds): plain torch, (obs, state) -> (action, state)
    path = str(tmp_path / "policy.pt2")
    export_module(algo.policy.export_module(), CARTPOLE[0], path)
    loaded = torch.export.load(path).module()
    obs = torch.randn(3, 4)
    state, start = algo.policy.initial_state(3), np.ones(3, dtype=bool)
    exported_state = torch.zeros(3, *algo.actor.state_shape)
    for _ in range(3):
        out = algo.policy.act(obs.numpy(), True, state=state, episode_start=start)
        action, exported_state = loaded(obs, exported_state)
        torch.testing.assert_close(action, torch.as_tensor(out.env_action))
        torch.testing.assert_close(exported_state, torch.as_tensor(out.state))
        state, start, obs = out.state, np.zeros(3, dtype=bool), obs + 0.1


@NAMES
def test_variant_configs_declare_and_check_what_they_take(name: str) -> None:
    cfg = VARIANTS[name][0]
    plan = cfg.replace(sequence_length=8).update_plan()
    assert isinstance(plan, SequencePlan) and plan.sequence_length == 8 and cfg.recurrent
    where = type(cfg).__name__
    with pytest.raises(ConfigError, match=f"{where}.burn_in"):
        cfg.replace(sequence_length=4, burn_in=4)
    if hasattr(cfg, "minibatch_size"):  # A2C has none: one batch per round
        with pytest.raises(ConfigError, match=f"{where}.minibatch_size"):
            cfg.replace(sequence_length=16, minibatch_size=8)
    with pytest.raises(ConfigError, match=f"ActorCriticConfig.recurrent.*{name}"):
        cfg.build(*CARTPOLE, ActorCriticConfig())
    with pytest.raises(ConfigError, match="TrainConfig.actor.recurrent"):
        TrainConfig(algo=cfg, actor=ActorCriticConfig())
    with pytest.raises(ConfigError, match=f"TrainConfig.actor.recurrent.*{name}"):
        TrainConfig(actor=ActorCriticConfig(recurrent="gru"))  # feed-forward PPO: the message lists the variants
    assert TrainConfig(algo=cfg, actor=ActorCriticConfig(recurrent="gru")).algo.name == name
    algo = _algo(name)
    flat = Minibatch(*(torch.zeros(2) for _ in range(6)))
    with pytest.raises(TypeError, match=f"{name} learns from time-major sequences"):
        algo.loss(flat)
