"""SAC as TorchScript (``SACConfig.scripted``): the same gradients, weights and actions as the eager
code bit for bit, on one or two loss threads, for every network it accepts; a clear error for the
ones it does not; copies that compute with their own weights."""

from __future__ import annotations

import copy
import pickle
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch

from colonyrl.agents import distributions, q_networks
from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.sac import SACConfig
from colonyrl.agents.sac_scripted import CONSTANTS, ScriptedSAC, ScriptedSACPolicy
from colonyrl.config import ConfigError

NET = ActorCriticConfig(hidden_sizes=(16, 16), activation="relu", ortho_init=False)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def _updates(random_memory, updates, config: SACConfig, obs_space: gym.spaces.Box, net: ActorCriticConfig,
             batches: int = 4):
    """(algorithm, [GradientResult]) after ``batches`` updates on a memory of random transitions,
    the weights, the memory, the sampling and the noise all seeded alike."""
    torch.manual_seed(0)
    algo = config.build(obs_space, BOX, net)
    return algo, updates(algo, random_memory(obs_space, BOX, algo.policy.extras), batches)


def _batch(random_memory, obs_space: gym.spaces.Box, seed: int):
    """A batch of 8 random non-terminal transitions."""
    memory = random_memory(obs_space, BOX, {}, n=8, seed=seed, terminated=0.0, memory_size=8)
    return memory.sample(8, torch.Generator().manual_seed(0))


def _assert_same(run_a, run_b) -> None:
    (a, ra), (b, rb) = run_a, run_b
    for x, y in zip(ra, rb, strict=True):
        assert len(x.grads) == len(y.grads) == len(a.parameters())
        assert all(torch.equal(torch.as_tensor(g), torch.as_tensor(h)) for g, h in zip(x.grads, y.grads, strict=True))
        assert x.info == y.info and np.array_equal(x.priorities, y.priorities)
    for name in a.nets:
        assert all(torch.equal(p, q) for p, q in zip(a.nets[name].state_dict().values(),
                                                     b.nets[name].state_dict().values(), strict=True)), name
    for name in a.optimizers:  # Adam's moments too
        sa, sb = a.optimizers[name].state_dict()["state"], b.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa), name
    assert any(not torch.equal(g, h) for g, h in zip(ra[0].grads, ra[1].grads, strict=True))  # real updates


@pytest.mark.parametrize("loss_threads", [1, 2])
@pytest.mark.parametrize(("activation", "hidden", "obs_shape", "ent_coef"), [
    ("relu", (16, 16), (3,), None),
    ("tanh", (8, 12, 16), (2, 3), None),  # three layers, a 2-D observation flattened
    ("relu", (16,), (3,), 0.2),  # a fixed alpha: no alpha loss, no log-alpha gradient
], ids=["relu-learned-alpha", "tanh-3-layers-2d-obs", "fixed-alpha"])
def test_scripted_losses_update_bit_for_bit_as_the_eager_ones(loss_threads, activation, hidden, obs_shape, ent_coef, random_memory, updates):
    net = ActorCriticConfig(hidden_sizes=hidden, activation=activation, ortho_init=False)
    obs_space = gym.spaces.Box(-1.0, 1.0, obs_shape, np.float32)
    config = SACConfig(loss_threads=loss_threads, ent_coef=ent_coef, lr=1e-2)
    eager = _updates(random_memory, updates, config, obs_space, net)
    scripted = _updates(random_memory, updates, config.replace(scripted=True), obs_space, net)
    assert type(scripted[0]) is ScriptedSAC and type(eager[0]) is not ScriptedSAC
    assert type(scripted[0].policy) is ScriptedSACPolicy
    _assert_same(eager, scripted)
    assert ("ent_coef_loss" in scripted[1][0].info) == (ent_coef is None)


def test_written_out_constants_are_the_eager_ones():
    assert (CONSTANTS["log_std_min"], CONSTANTS["log_std_max"]) == (q_networks.LOG_STD_MIN, q_networks.LOG_STD_MAX)
    assert CONSTANTS["log_2"] == distributions._LOG_2
    assert CONSTANTS["log_sqrt_2pi"] == q_networks._LOG_SQRT_2PI == distributions._LOG_SQRT_2PI


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_computes_with_its_own_weights(how, random_memory, updates):
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    algo, _ = _updates(random_memory, updates, SACConfig(scripted=True), obs_space, NET, batches=1)
    clone = copy.deepcopy(algo) if how == "deepcopy" else pickle.loads(pickle.dumps(algo))
    sample = _batch(random_memory, obs_space, seed=1)
    torch.manual_seed(3)
    before = clone.compute_gradients(sample).grads
    with torch.no_grad():  # the original moves on; the copy must not see it
        for p in algo.parameters():
            p.add_(1.0)
    torch.manual_seed(3)
    after = clone.compute_gradients(sample).grads
    assert all(torch.equal(g, h) for g, h in zip(before, after, strict=True))
    torch.manual_seed(3)
    assert any(not torch.equal(g, h) for g, h in zip(before, algo.compute_gradients(sample).grads, strict=True))


def test_networks_it_cannot_run_are_refused_naming_the_field():
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(ConfigError, match=r"SACConfig\.scripted.*Box actions only"):
        SACConfig(scripted=True).build(obs_space, gym.spaces.Discrete(3), NET)
    image = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"SACConfig\.scripted.*flat Box observations only"):
        SACConfig(scripted=True).build(image, BOX, NET)
    with pytest.raises(ConfigError, match=r"SACConfig\.scripted.*Box actions only"):
        SACConfig(scripted=True).build_policy(obs_space, gym.spaces.Discrete(3), NET)


@pytest.mark.parametrize("how", ["direct", "pickle"])
def test_scripted_policy_acts_as_the_eager_one(how):
    """Same weights, same RNG state: the same actions, stochastic and deterministic, for a batch;
    a pickled policy (a CWorker's) acts with the weights it is given afterwards."""
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    config = SACConfig(learning_starts=0)
    torch.manual_seed(0)
    eager = config.build_policy(obs_space, BOX, NET)
    torch.manual_seed(0)
    scripted = config.replace(scripted=True).build_policy(obs_space, BOX, NET)
    assert type(scripted) is ScriptedSACPolicy
    if how == "pickle":
        scripted.act(np.zeros((1, 3), np.float32))  # its parameter list is gathered before it travels
        scripted = pickle.loads(pickle.dumps(scripted))
    with torch.no_grad():  # new weights after the copy: set_weights copies in place
        for p in eager.actor.parameters():
            p.mul_(3.0)
    scripted.set_weights({f"actor.{k}": v.numpy() for k, v in eager.nets["actor"].state_dict().items()})
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    for deterministic in (False, True):
        torch.manual_seed(11)
        a = eager.act(obs, deterministic).env_action
        torch.manual_seed(11)
        b = scripted.act(obs, deterministic).env_action
        assert a.shape == b.shape == (5, 2) and np.array_equal(a, b)
        assert np.all(a >= BOX.low) and np.all(a <= BOX.high)
    torch.manual_seed(11)
    assert not np.array_equal(scripted.act(obs).env_action, scripted.act(obs).env_action)  # it samples


@pytest.mark.parametrize("loss_threads", [1, 2])
def test_a_failing_actor_task_raises_and_does_not_leave_the_critic_waiting(loss_threads, random_memory, updates):
    """The actor's task hands the target action to the critic's; if it fails first (here: next
    observations of the wrong width), the update raises instead of hanging."""
    obs_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    algo, _ = _updates(random_memory, updates, SACConfig(scripted=True, loss_threads=loss_threads), obs_space, NET, batches=1)
    batch = _batch(random_memory, obs_space, seed=2)
    bad = batch._replace(next_obs=torch.zeros(8, 5))
    errors: list[BaseException] = []

    def update() -> None:
        try:
            algo.compute_gradients(bad)
        except BaseException as error:  # the test inspects it
            errors.append(error)

    worker = threading.Thread(target=update, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the update hung"
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert algo.compute_gradients(batch).grads  # the next update works
