"""CWorker.collect over a double-buffered env (EnvConfig.double_buffered, envs/split.py): the same
rollouts as the plain loop, with the policy acting for one half while the other half steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from colonyrl.launch.presets import preset
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Weights

EXACT = ("obs", "actions", "rewards", "terminated", "truncated", "valid", "next_obs")


def _components(name: str, num_envs: int = 5, num_steps: int = 48) -> Components:
    components = preset(name).components()
    storage = components.storage
    if hasattr(storage, "num_steps"):
        storage = storage.replace(num_steps=num_steps)
    return dataclasses.replace(components, env=components.env.replace(num_envs=num_envs), storage=storage)


def _run(components: Components, double_buffered: bool, rounds: list[tuple[int, float]]):
    """Rollouts of a fresh CWorker, one per ``(round_id, min_fraction)``; a stop is requested for
    round 0. Each worker runs alone: CWorkers in one process share torch's global sampling stream,
    which each reseeds when built."""
    worker = CWorker(dataclasses.replace(components, env=components.env.replace(double_buffered=double_buffered)),
                     0, "g0.c0")
    try:
        worker.request_stop(0)
        return [worker.collect(round_id=r, min_fraction=f) for r, f in rounds], worker.policy_state
    finally:
        worker.close()


def _assert_same(a, b) -> None:
    assert a.env_steps == b.env_steps and a.data.keys() == b.data.keys()
    for key, value in a.data.items():
        if key in EXACT:
            np.testing.assert_array_equal(value, b.data[key], err_msg=key)
        else:  # float extras (log-probs, values): the forward pass on half a batch rounds differently
            np.testing.assert_allclose(value, b.data[key], rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(a.episodes.returns, b.episodes.returns)
    np.testing.assert_array_equal(a.episodes.lengths, b.episodes.lengths)


@pytest.mark.parametrize("name", ["ppo-cartpole", "ppo-lstm-cartpole-novel", "dqn-cartpole"])
def test_double_buffered_collection_gives_the_plain_loops_rollouts(name: str) -> None:
    """Feed-forward, recurrent (its state split by halves) and off-policy (replay transitions)."""
    rounds = [(1, 1.0), (2, 1.0), (3, 1.0)]
    (plain, plain_state), (split, split_state) = (_run(_components(name), db, rounds) for db in (False, True))
    for a, b in zip(plain, split, strict=True):
        _assert_same(a, b)
    assert sum(len(a.episodes.returns) for a in plain) > 0  # through episode ends and autoresets
    if plain_state is not None:
        np.testing.assert_allclose(plain_state, split_state, rtol=1e-5, atol=1e-5)


def test_a_preempted_double_buffered_rollout_stops_where_the_plain_one_does() -> None:
    rounds = [(0, 0.25), (1, 1.0)]  # round 0 told to stop: 25 % of 40 steps; round 1 in full
    (plain, _), (split, _) = (_run(_components("ppo-cartpole", num_steps=40), db, rounds) for db in (False, True))
    assert plain[0].info["preempted"] == split[0].info["preempted"] == 1.0 and split[0].data["rewards"].shape[0] == 10
    assert split[1].info["preempted"] == 0.0 and split[1].data["rewards"].shape[0] == 40
    for a, b in zip(plain, split, strict=True):
        _assert_same(a, b)


def test_a_double_buffered_cworker_resumes_from_its_state_exactly() -> None:
    base = _components("ppo-cartpole")
    components = dataclasses.replace(base, env=base.env.replace(double_buffered=True))
    weights = Weights(0, components.build_algorithm(components.spaces()).get_weights())
    first = CWorker(components, 0, "g0.c0")
    try:
        first.collect(weights)
        state = first.get_state()
        straight = first.collect()
    finally:
        first.close()
    # other seeds (initial weights, env seeds, sampling stream): all comes from the weights and the state
    resumed = CWorker(dataclasses.replace(components, seed=7), 0, "g0.c0")
    try:
        resumed.set_weights(weights)
        resumed.set_state(state)
        _assert_same(straight, resumed.collect())
    finally:
        resumed.close()
