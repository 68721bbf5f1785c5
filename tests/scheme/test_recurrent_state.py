"""A CWorker carries a stateful (recurrent) policy's state: reset where an episode starts, kept
across rollouts, in its checkpoints; stateless policies carry none. CWorkers called directly."""

from __future__ import annotations

import numpy as np
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.agents.recurrent import reset_state
from colonyrl.agents.recurrent_ppo import RecurrentPPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights
from colonyrl.storage.rollout import RolloutConfig

#: CartPole episodes of at most 9 steps: every 16-step rollout holds episode ends and starts, and
#: none of the rollouts starts with an episode everywhere.
COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=4, max_episode_steps=9),
                        actor=ActorCriticConfig(hidden_sizes=(16,), recurrent="gru", hidden_state_size=8),
                        algo=RecurrentPPOConfig(), storage=RolloutConfig(num_steps=16), seed=2)


def _weights(components: Components = COMPONENTS) -> Weights:
    torch.manual_seed(1)
    return Weights(0, components.build_algorithm(components.spaces()).acting_weights())


def test_the_state_resets_where_episodes_start_and_goes_on_across_rollouts() -> None:
    worker = CWorker(COMPONENTS, 0, "c0")
    weights = _weights()
    actor = worker.policy.actor
    assert worker.policy_state.shape == (4, 2, 8) and not worker.policy_state.any()
    rollouts, carried = [], []
    for _ in range(3):
        carried.append((worker.policy_state.copy(), worker.episode_start.copy()))
        rollouts.append(worker.collect(weights).data)
    assert rollouts[0]["episode_start"][0].all()  # the first observations start episodes
    for k, data in enumerate(rollouts):
        state, start, valid = data["state"], data["episode_start"], data["valid"]
        # the rollout's initial state is the one the last rollout ended with, not a fresh one
        np.testing.assert_array_equal(state[0], carried[k][0])
        np.testing.assert_array_equal(start[0], carried[k][1])
        if k:
            assert state[0].any() and not start[0].all()
            # a new episode starts right after the previous rollout's autoreset steps only
            np.testing.assert_array_equal(start[0], ~rollouts[k - 1]["valid"][-1])
        # gymnasium's next-step autoreset: after the step that ends an episode comes the autoreset
        # step (invalid: it only resets), and the step after it acts on the new episode's first
        # observation, from a zero state
        np.testing.assert_array_equal(start[1:], ~valid[:-1])
        ended = data["terminated"] | data["truncated"]
        for t, j in zip(*np.nonzero(ended[:-2]), strict=True):
            assert not valid[t + 1, j] and start[t + 2, j]
        assert start[1:].any()
        # the chain: each step's stored state is what the step before returned, reset where
        # an episode starts (replayed with the same weights)
        with torch.no_grad():
            for t in range(len(valid) - 1):
                _, value, after = actor.step(torch.from_numpy(data["obs"][t]), torch.from_numpy(state[t]),
                                             torch.from_numpy(start[t]))
                np.testing.assert_allclose(after.numpy(), state[t + 1], atol=1e-6)
                np.testing.assert_allclose(value.numpy(), data["values"][t], atol=1e-6)
                fresh = reset_state(torch.from_numpy(state[t]), torch.from_numpy(start[t]))
                assert not fresh[torch.from_numpy(start[t])].any()


def test_a_checkpoint_restores_the_hidden_state_exactly() -> None:
    weights = _weights()
    worker = CWorker(COMPONENTS, 0, "c0")
    worker.collect(weights)
    saved = worker.get_state()
    assert torch.equal(saved["policy_state"], torch.from_numpy(worker.policy_state))
    assert saved["policy_state"].any()
    expected = worker.collect(weights).data
    other = CWorker(COMPONENTS, 0, "c0")
    other.set_state(saved)
    got = other.collect(weights).data
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)  # bit-identical


def test_a_stateless_policy_carries_no_state() -> None:
    components = Components(env=COMPONENTS.env, actor=ActorCriticConfig(hidden_sizes=(16,)), algo=PPOConfig(),
                            storage=COMPONENTS.storage, seed=2)
    worker = CWorker(components, 0, "c0")
    data = worker.collect(_weights(components)).data
    assert worker.policy_state is None and worker.get_state()["policy_state"] is None
    assert "state" not in data and "episode_start" not in data
