"""V-trace (storage/vtrace.py): hand-computed examples, equality with n-step / GAE returns on-policy,
clipping, episode ends under gymnasium's next-step autoreset, shape errors.

Notation (Espeholt et al. 2018, eq. 1 and §4.2): rho_t = pi/mu, delta_t = min(rho_bar, rho_t) *
(r_t + gamma * (1 - term_t) * V[t+1] - V[t]), v_t = V[t] + delta_t + gamma * c_t * (v_{t+1} - V[t+1])
with c_t = min(c_bar, rho_t), A_t = min(pg_rho_bar, rho_t) * (r_t + gamma * v_{t+1} - V[t]).
Most cases use gamma = 0.5 and ratios 2, 0.5, 1, so every number is exact or nearly (exp(log 2)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colonyrl.storage.gae import generalized_advantage_estimate
from colonyrl.storage.vtrace import vtrace

F, T_ = False, True


def run(rewards, values, bootstrap, log_rhos=None, terminated=None, truncated=None, valid=None, gamma=0.5, **clips):
    """V-trace on one env (column vectors); behaviour log-probs 0, target log-probs ``log_rhos``."""
    r = torch.tensor(rewards, dtype=torch.float32)[:, None]
    shape = r.shape

    def mask(m, default):
        return torch.full(shape, default) if m is None else torch.tensor(m, dtype=torch.bool)[:, None]

    target = torch.zeros(shape) if log_rhos is None else torch.tensor(log_rhos, dtype=torch.float32)[:, None]
    return vtrace(torch.zeros(shape), target, r, torch.tensor(values, dtype=torch.float32)[:, None],
                  torch.tensor([bootstrap], dtype=torch.float32), mask(terminated, False), mask(truncated, False),
                  mask(valid, True), gamma, **clips)


RATIOS = [math.log(2.0), math.log(0.5), 0.0]  # rho = [2, 0.5, 1]


def close(actual: torch.Tensor, expected: list[float]) -> None:
    np.testing.assert_allclose(actual[:, 0].numpy(), expected, rtol=1e-6)


def test_vtrace_hand_computed_with_clipping():
    # rewards [1, 2, 3], V [1, 2, 3], V(x_3) = 4, gamma 0.5, rho = [2, 0.5, 1], rho_bar = c_bar = 1
    # clipped rho = c = [1, 0.5, 1]
    # delta0 = 1 * (1 + 0.5*2 - 1) = 1, delta1 = 0.5 * (2 + 0.5*3 - 2) = 0.75, delta2 = 1 * (3 + 0.5*4 - 3) = 2
    # v2 = 3 + 2 = 5
    # v1 = 2 + 0.75 + 0.5*0.5*(5 - 3) = 3.25
    # v0 = 1 + 1 + 0.5*1*(3.25 - 2) = 2.625   (eq. 1: 1 + 1 + 0.5*0.75 + 0.25*0.5*2 = 2.625)
    # A0 = 1 * (1 + 0.5*3.25 - 1) = 1.625, A1 = 0.5 * (2 + 0.5*5 - 2) = 1.25, A2 = 1 * (3 + 0.5*4 - 3) = 2
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS)
    close(out.vs, [2.625, 3.25, 5.0])
    close(out.pg_advantages, [1.625, 1.25, 2.0])
    close(out.rhos, [2.0, 0.5, 1.0])
    assert out.vs.dtype == out.pg_advantages.dtype == torch.float32 and out.vs.shape == (3, 1)


def test_vtrace_hand_computed_without_clipping():
    # as above with rho_bar = c_bar = pg_rho_bar = None: rho = c = [2, 0.5, 1]
    # delta0 = 2 * 1 = 2, delta1 = 0.75, delta2 = 2
    # v2 = 5, v1 = 3.25 (as above), v0 = 1 + 2 + 0.5*2*(3.25 - 2) = 4.25
    # A0 = 2 * (1 + 0.5*3.25 - 1) = 3.25, A1 = 1.25, A2 = 2
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS, rho_bar=None, c_bar=None, pg_rho_bar=None)
    close(out.vs, [4.25, 3.25, 5.0])
    close(out.pg_advantages, [3.25, 1.25, 2.0])


def test_each_clip_acts_on_its_own_term():
    # c_bar = 1 only (rho_bar None): delta0 = 2 (unclipped), c0 = 1: v0 = 1 + 2 + 0.5*1*1.25 = 3.625
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS, rho_bar=None, c_bar=1.0)
    close(out.vs, [3.625, 3.25, 5.0])
    # rho_bar = 1 only (c_bar None): delta0 = 1, c0 = 2: v0 = 1 + 1 + 0.5*2*1.25 = 3.25
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS, rho_bar=1.0, c_bar=None)
    close(out.vs, [3.25, 3.25, 5.0])
    # pg_rho_bar None with rho_bar = c_bar = 1: v as in the clipped example, A0 = 2 * 1.625 = 3.25
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS, pg_rho_bar=None)
    close(out.vs, [2.625, 3.25, 5.0])
    close(out.pg_advantages, [3.25, 1.25, 2.0])
    # clips above every ratio are inactive: the unclipped numbers
    out = run([1, 2, 3], [1, 2, 3], 4.0, RATIOS, rho_bar=3.0, c_bar=3.0, pg_rho_bar=3.0)
    close(out.vs, [4.25, 3.25, 5.0])


def test_termination_cuts_the_trace_and_never_bootstraps():
    # t=0 terminates, t=1 is the autoreset step (valid False, reward 0), then a new episode.
    # rewards [1, 0, 2, 3], V [1, 5, 2, 3] (V[1] = 5 = V(final obs), unused since terminated), V(x_4) = 4
    # delta0 = 1 + 0 - 1 = 0: v0 = 1, A0 = 0; t=1 invalid: v1 = V[1] = 5, A1 = 0
    # delta3 = 3 + 0.5*4 - 3 = 2: v3 = 5; delta2 = 2 + 0.5*3 - 2 = 1.5: v2 = 2 + 1.5 + 0.5*(5 - 3) = 4.5
    # A2 = 2 + 0.5*5 - 2 = 2.5, A3 = 3 + 0.5*4 - 3 = 2
    out = run([1, 0, 2, 3], [1, 5, 2, 3], 4.0, terminated=[T_, F, F, F], valid=[T_, F, T_, T_])
    close(out.vs, [1.0, 5.0, 4.5, 5.0])
    close(out.pg_advantages, [0.0, 0.0, 2.5, 2.0])


def test_truncation_bootstraps_from_the_real_final_observation():
    # as above, truncated at t=0: V[1] = 5 is V(real final obs): delta0 = 1 + 0.5*5 - 1 = 2.5,
    # the trace is cut (nothing of the next episode): v0 = 3.5, A0 = 1 + 0.5*5 - 1 = 2.5
    out = run([1, 0, 2, 3], [1, 5, 2, 3], 4.0, truncated=[T_, F, F, F], valid=[T_, F, T_, T_])
    close(out.vs, [3.5, 5.0, 4.5, 5.0])
    close(out.pg_advantages, [2.5, 0.0, 2.5, 2.0])
    # off-policy at the truncated step, rho0 = 0.5: delta0 = 0.5*2.5 = 1.25: v0 = 2.25, A0 = 1.25
    out = run([1, 0, 2, 3], [1, 5, 2, 3], 4.0, [math.log(0.5), 0, 0, 0], truncated=[T_, F, F, F],
              valid=[T_, F, T_, T_])
    close(out.vs, [2.25, 5.0, 4.5, 5.0])
    close(out.pg_advantages, [1.25, 0.0, 2.5, 2.0])
    # the last step truncated: it bootstraps from V(x_T) = 4 and from nothing else
    # delta2 = 3 + 0.5*4 - 3 = 2: v2 = 5, A2 = 2 (as when it did not end)
    out = run([1, 2, 3], [1, 2, 3], 4.0, truncated=[F, F, T_])
    close(out.vs[2:], [5.0])
    close(out.pg_advantages[2:], [2.0])


def test_invalid_steps_read_no_log_probs_or_rewards():
    # the autoreset step holds garbage: a huge target log-prob (rho = e^80 = inf in float32) and a
    # NaN reward. Nothing of it may reach the other steps; it gets v = V, A = 0, rho = 1.
    clean = run([1, 0, 2, 3], [1, 5, 2, 3], 4.0, terminated=[T_, F, F, F], valid=[T_, F, T_, T_])
    dirty = run([1, float("nan"), 2, 3], [1, 5, 2, 3], 4.0, [0, 80.0, 0, 0], terminated=[T_, F, F, F],
                valid=[T_, F, T_, T_], rho_bar=None, c_bar=None, pg_rho_bar=None)
    for a, b in zip(clean, dirty, strict=True):
        torch.testing.assert_close(a, b)


def random_rollout(steps: int, envs: int, seed: int):
    """Random rewards/values with terminations and truncations, each followed by an autoreset step
    (valid False), as a CWorker records them."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(steps, envs)).astype(np.float32)
    values = rng.normal(size=(steps + 1, envs)).astype(np.float32)
    terminated = np.zeros((steps, envs), bool)
    truncated = np.zeros((steps, envs), bool)
    valid = np.ones((steps, envs), bool)
    for n in range(envs):
        for t in range(steps):
            if not valid[t, n]:
                continue
            end = rng.random()
            if end < 0.15:
                terminated[t, n] = True
            elif end < 0.25:
                truncated[t, n] = True
            if (terminated[t, n] or truncated[t, n]) and t + 1 < steps:
                valid[t + 1, n] = False
                rewards[t + 1, n] = 0.0
    assert terminated.any() and truncated.any() and not valid.all()
    return rewards, values, terminated, truncated, valid


@pytest.mark.parametrize("lam", [1.0, 0.9])
@pytest.mark.parametrize("clip", [1.0, 2.0, None])
def test_on_policy_vtrace_equals_gae_returns(lam, clip):
    """pi == mu (rho = 1) and clipping inactive: v_s is the lambda-return, for lambda = 1 the n-step
    return bootstrapped at the rollout's end (= GAE(lambda) returns), and for lambda = 1 the pg
    advantage is the GAE(1) advantage."""
    rewards, values, terminated, truncated, valid = random_rollout(12, 6, seed=3)
    adv, returns = generalized_advantage_estimate(rewards, values, terminated, truncated, valid, 0.9, lam)
    logp = torch.randn(12, 6)  # the same log-probs for both policies
    out = vtrace(logp, logp.clone(), torch.from_numpy(rewards), torch.from_numpy(values[:-1]),
                 torch.from_numpy(values[-1]), torch.from_numpy(terminated), torch.from_numpy(truncated),
                 torch.from_numpy(valid), 0.9, rho_bar=clip, c_bar=clip, pg_rho_bar=clip, lam=lam)
    np.testing.assert_allclose(out.vs.numpy(), returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.rhos.numpy(), 1.0)
    if lam == 1.0:
        np.testing.assert_allclose(out.pg_advantages.numpy(), adv, rtol=1e-5, atol=1e-5)


def test_on_policy_vtrace_equals_n_step_returns_written_out():
    # One env, no episode end, gamma 0.5: v_t = sum_k 0.5^k r_{t+k} + 0.5^(T-t) V(x_T)
    # rewards [1, 2, 3], V(x_3) = 8: v2 = 3 + 4 = 7, v1 = 2 + 0.5*7 = 5.5, v0 = 1 + 0.5*5.5 = 3.75
    out = run([1, 2, 3], [0.3, -1, 2], 8.0)
    close(out.vs, [3.75, 5.5, 7.0])
    close(out.pg_advantages, [3.75 - 0.3, 5.5 + 1, 7.0 - 2])  # A_t = v_t - V_t for lambda = 1


def test_gradients_do_not_flow_through_the_targets():
    values = torch.tensor([[1.0], [2.0]], requires_grad=True)
    logp = torch.zeros(2, 1, requires_grad=True)
    out = vtrace(torch.zeros(2, 1), logp, torch.ones(2, 1), values, torch.ones(1), torch.zeros(2, 1, dtype=torch.bool),
                 torch.zeros(2, 1, dtype=torch.bool), torch.ones(2, 1, dtype=torch.bool), 0.9)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad


@pytest.mark.parametrize("name, bad, match", [
    ("values", torch.zeros(4, 2), "values must be"),  # [T+1, N] is GAE's layout: here [T, N] + bootstrap
    ("bootstrap_value", torch.zeros(2, 1), "bootstrap_value must be"),
    ("target_logp", torch.zeros(3), "target_logp must be"),
    ("valid", torch.ones(3, 2), "valid must be a bool"),
    ("rewards", torch.zeros(3), "rewards must be"),
])
def test_shape_errors_name_the_tensor(name, bad, match):
    args = {"behaviour_logp": torch.zeros(3, 2), "target_logp": torch.zeros(3, 2), "rewards": torch.zeros(3, 2),
            "values": torch.zeros(3, 2), "bootstrap_value": torch.zeros(2),
            "terminated": torch.zeros(3, 2, dtype=torch.bool), "truncated": torch.zeros(3, 2, dtype=torch.bool),
            "valid": torch.ones(3, 2, dtype=torch.bool)}
    args[name] = bad
    with pytest.raises(ValueError, match=match):
        vtrace(**args, gamma=0.9)
