"""CWorker.collect over a double-buffered env (EnvConfig.double_buffered, envs/split.py): the same
rollouts as the plain loop, with the policy acting for one half while the other half steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from colonyrl.envs.normalization import NormalizeConfig, RunningMeanStd, Statistics
from colonyrl.launch.presets import preset
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import Rollout, Weights

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


@pytest.mark.parametrize("normalize", [NormalizeConfig(), NormalizeConfig(obs=True, reward=True)],
                         ids=["plain", "normalized"])
def test_a_double_buffered_cworker_resumes_from_its_state_exactly(normalize: NormalizeConfig) -> None:
    base = _components("ppo-cartpole")
    components = dataclasses.replace(base, env=base.env.replace(double_buffered=True, normalize=normalize))
    weights = Weights(0, components.build_algorithm(components.spaces()).get_weights())
    first = CWorker(components, 0, "g0.c0")
    try:
        rollout = first.collect(weights)
        if rollout.normalizer is not None:  # normalizing with statistics of its own data from now on
            first.set_weights(Weights(0, None, rollout.normalizer))
        state = first.get_state()
        straight = first.collect()
    finally:
        first.close()
    # other seeds (initial weights, env seeds, sampling stream): all comes from the weights and the state
    resumed = CWorker(dataclasses.replace(components, seed=7), 0, "g0.c0")
    try:
        resumed.set_weights(weights)
        resumed.set_state(state)
        again = resumed.collect()
        _assert_same(straight, again)
        if normalize.enabled:  # the statistics, the unreported delta and each sub-env's return came back
            assert straight.normalizer is not None and again.normalizer is not None
            for x, y in ((straight.normalizer.obs, again.normalizer.obs), (straight.normalizer.ret, again.normalizer.ret)):
                assert x.count == y.count > 0
                np.testing.assert_array_equal(x.mean, y.mean)
                np.testing.assert_array_equal(x.var, y.var)
            np.testing.assert_array_equal(first.normalizer.returns, resumed.normalizer.returns)
    finally:
        resumed.close()


def _run_normalized(components: Components, double_buffered: bool, handed: list[Statistics] | None):
    """Rollouts of rounds 1-4 of a fresh CWorker that is handed, after each round, ``handed``'s
    statistics (None: its own running totals, as the Learner sends them down)."""
    worker = CWorker(dataclasses.replace(components, env=components.env.replace(double_buffered=double_buffered)),
                     0, "g0.c0")
    try:
        rollouts: list[Rollout] = []
        totals: list[Statistics] = []
        for round_id in range(1, 5):
            rollouts.append(worker.collect(round_id=round_id))
            total = Statistics.combine(totals[-1] if totals else None, rollouts[-1].normalizer)
            assert total is not None
            totals.append(total)
            worker.set_weights(Weights(round_id, None, total if handed is None else handed[round_id - 1]))
        return rollouts, totals, worker.normalizer.returns.copy()
    finally:
        worker.close()


def test_double_buffered_normalized_collection_gives_the_plain_loops_rollouts() -> None:
    """Observation and reward normalization by halves: each half counts its own rows and keeps
    its own sub-envs' returns. Handed the plain loop's statistics between rounds, the halves store
    what the plain loop stores, and the statistics they report are the plain loop's (up to the
    rounding of merging half by half)."""
    base = _components("ppo-cartpole", num_envs=5, num_steps=48)
    components = dataclasses.replace(base, env=base.env.replace(normalize=NormalizeConfig(obs=True, reward=True)))
    plain, plain_totals, plain_returns = _run_normalized(components, False, None)
    split, split_totals, split_returns = _run_normalized(components, True, plain_totals)
    for a, b in zip(plain, split, strict=True):
        _assert_same(a, b)
    for a, b in zip(plain_totals, split_totals, strict=True):
        assert isinstance(a.obs, RunningMeanStd) and isinstance(b.obs, RunningMeanStd)
        assert a.ret is not None and b.ret is not None
        assert a.obs.count == b.obs.count and a.ret.count == b.ret.count
        for x, y in ((a.obs.mean, b.obs.mean), (a.obs.var, b.obs.var), (a.ret.mean, b.ret.mean), (a.ret.var, b.ret.var)):
            np.testing.assert_allclose(x, y, rtol=1e-9)
    np.testing.assert_allclose(plain_returns, split_returns, rtol=1e-9)
    assert sum(len(r.episodes.returns) for r in plain) > 0  # through episode ends and autoresets
    assert plain_totals[-1].obs.count < 4 * 48 * 5  # the steps after an episode end were not counted
    std = plain[-1].data["obs"].reshape(-1, 4).std(axis=0)  # normalized: raw, the cart position's is ~0.1
    assert np.all((std > 0.3) & (std < 3.0)), std
