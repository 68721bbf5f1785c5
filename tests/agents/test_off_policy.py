"""agents/off_policy.py's ConcurrentLosses (results in order, errors raised, no task left running),
and the algorithms that use it: two loss threads update bit for bit as one; ``step_adams`` steps
bit for bit as each optimizer's own ``step``; the weight export and import of the acting nets."""

from __future__ import annotations

import copy
import pickle
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents.ddpg import DDPGConfig
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.off_policy import ConcurrentLosses, step_adams
from colonyrl.agents.sac import SACConfig
from colonyrl.agents.td3 import TD3Config

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_results_come_back_in_the_order_of_the_tasks(threads):
    ran_on = {}

    def task(name):
        def run():
            ran_on[name] = threading.current_thread().name
            return name
        return run

    assert ConcurrentLosses(threads).run(task("a"), task("b")) == ["a", "b"]
    assert ran_on["a"] == threading.main_thread().name
    assert ran_on["b"].startswith("colonyrl-loss") == (threads == 2)


def test_a_task_error_is_raised_and_the_callers_error_waits_for_the_other_task():
    runner = ConcurrentLosses(2)

    def boom():
        raise ValueError("from the pool")

    with pytest.raises(ValueError, match="from the pool"):
        runner.run(lambda: 1, boom)
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)

    def caller_fails():
        raise RuntimeError("from the caller")

    with pytest.raises(RuntimeError, match="from the caller"):
        runner.run(caller_fails, slow)
    assert finished == [True]  # run() did not return while the pool's task was still running


def test_copies_and_pickles_carry_the_thread_count_not_the_pool():
    runner = ConcurrentLosses(2)
    runner.run(lambda: 0, lambda: 1)
    assert runner._pool is not None
    for clone in (copy.deepcopy(runner), pickle.loads(pickle.dumps(runner))):
        assert clone.threads == 2 and clone._pool is None
        assert clone.run(lambda: "x", lambda: "y") == ["x", "y"]


def _updates(config, random_memory, updates, batches: int = 4):
    """(algorithm, [GradientResult]) after ``batches`` updates on a memory of random transitions,
    the weights, the memory, the sampling and the noise all seeded alike."""
    torch.manual_seed(0)
    algo = config.build(OBS, BOX, NET)
    return algo, updates(algo, random_memory(OBS, BOX, algo.policy.extras), batches)


@pytest.mark.parametrize("config", [SACConfig, TD3Config, DDPGConfig], ids=["sac", "td3", "ddpg"])
def test_two_loss_threads_update_bit_for_bit_as_one(config, random_memory, updates):
    """loss_threads=2 computes the critic's and the actor's objectives at once (the noise drawn
    first); every gradient, metric, priority and weight (targets too) equals one thread's."""
    (one, r1), (two, r2) = _updates(config(loss_threads=1), random_memory, updates), _updates(config(loss_threads=2), random_memory, updates)
    assert two.concurrent.threads == 2 and two.concurrent._pool is not None  # it did run on the pool
    for a, b in zip(r1, r2, strict=True):
        assert all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a.grads, b.grads, strict=True))
        assert a.info == b.info and np.array_equal(a.priorities, b.priorities)
    for name in one.nets:
        assert all(torch.equal(p, q) for p, q in zip(one.nets[name].state_dict().values(),
                                                     two.nets[name].state_dict().values(), strict=True)), name
    assert any(not torch.equal(a, b) for a, b in zip(r1[0].grads, r1[1].grads, strict=True))  # real updates


def _optimizers(kinds):
    """Three (params, optimizer) pairs of the given kinds over seeded weights."""
    torch.manual_seed(0)
    out = []
    for make in kinds:
        params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
        out.append((params, make(params)))
    return out


@pytest.mark.parametrize("kinds", [
    [lambda p: torch.optim.Adam(p, lr=1e-2, fused=True)] * 3,  # one fused call
    [lambda p: torch.optim.Adam(p, lr=1e-2, fused=True), lambda p: torch.optim.Adam(p, lr=3e-3, fused=True),
     lambda p: torch.optim.Adam(p, lr=1e-2, fused=True, weight_decay=0.1)],  # a call per setting
    [lambda p: torch.optim.Adam(p, lr=1e-2, fused=True), lambda p: torch.optim.Adam(p, lr=1e-2)],  # not fused: each
    [lambda p: torch.optim.Adam(p, lr=1e-2, fused=True), lambda p: torch.optim.SGD(p, lr=1e-2)],  # not Adam: each
], ids=["same-settings", "mixed-settings", "unfused", "sgd"])
def test_step_adams_steps_bit_for_bit_as_each_optimizer(kinds):
    ours, theirs = _optimizers(kinds), _optimizers(kinds)
    rng = torch.Generator().manual_seed(1)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=rng) for params, _ in ours for p in params]
        for pairs in (ours, theirs):
            for p, g in zip((p for params, _ in pairs for p in params), grads, strict=True):
                p.grad = g.clone()
        step_adams([opt for _, opt in ours])  # the first step initializes the state (ordinary path)
        for _, opt in theirs:
            opt.step()
        for (pa, oa), (pb, ob) in zip(ours, theirs, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(pa, pb, strict=True)), step
            for a, b in zip(pa, pb, strict=True):
                assert all(torch.equal(x, y) for x, y in zip(oa.state[a].values(), ob.state[b].values(), strict=True))
    assert not torch.equal(ours[0][0][0], _optimizers(kinds)[0][0][0])  # the weights did move


def test_acting_weights_round_trip_into_a_policy_and_follow_the_live_weights():
    torch.manual_seed(0)
    algo = SACConfig(learning_starts=0).build(OBS, BOX, NET)
    policy = SACConfig(learning_starts=0).build_policy(OBS, BOX, NET)
    first = algo.acting_weights()
    policy.set_weights(first)
    assert all(np.array_equal(first[f"actor.{k}"], v.numpy()) for k, v in policy.actor.state_dict().items())
    with torch.no_grad():  # an update in place: the next export has it, the earlier one is a copy
        for p in algo.actor.parameters():
            p.add_(1.0)
    second = algo.acting_weights()
    assert all(np.array_equal(second[k], first[k] + 1.0) for k in first)
    policy.set_weights(second)
    assert all(np.array_equal(second[f"actor.{k}"], v.numpy()) for k, v in policy.actor.state_dict().items())
    clone = pickle.loads(pickle.dumps(policy))  # a CWorker's copy loads into its own modules
    clone.set_weights(first)
    assert np.array_equal(policy.actor.mu.weight.detach().numpy(), second["actor.mu.weight"])
    assert np.array_equal(clone.actor.mu.weight.detach().numpy(), first["actor.mu.weight"])
    with pytest.raises(KeyError, match="weight names differ"):
        policy.set_weights({k: v for k, v in first.items() if k != "actor.mu.bias"})
