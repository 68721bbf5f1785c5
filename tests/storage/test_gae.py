"""Analytic GAE tests (model: SB3 ``tests/test_gae.py``): every expected number is worked out by hand.

Notation: delta_t = r_t + gamma * (1 - term_t) * V[t+1] - V[t];
A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}. Most cases use gamma = lam = 0.5, so
gamma * lam = 0.25 and every number is exact in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

from colonyrl.storage.gae import generalized_advantage_estimate

F, T_ = False, True


def gae(rewards, values, terminated=None, truncated=None, valid=None, gamma=0.5, lam=0.5):
    """Call GAE on column vectors (one env) or [T, N] lists; masks default to 'nothing happened'."""
    r = np.asarray(rewards, np.float32)
    r = r[:, None] if r.ndim == 1 else r
    v = np.asarray(values, np.float32).reshape(r.shape[0] + 1, r.shape[1])

    def mask(m, default):
        return np.full(r.shape, default) if m is None else np.asarray(m, bool).reshape(r.shape)

    return generalized_advantage_estimate(r, v, mask(terminated, False), mask(truncated, False),
                                          mask(valid, True), gamma, lam)


def test_gae_plain_rollout_without_episode_end():
    # rewards [1, 2, 3], V [1, 2, 3, 4] (V[3] = 4 bootstraps the unfinished episode)
    # delta2 = 3 + 0.5*4 - 3 = 2    A2 = 2
    # delta1 = 2 + 0.5*3 - 2 = 1.5  A1 = 1.5 + 0.25*2 = 2
    # delta0 = 1 + 0.5*2 - 1 = 1    A0 = 1 + 0.25*2 = 1.5
    # returns = A + V[:3] = [2.5, 4, 5]
    adv, ret = gae([1, 2, 3], [1, 2, 3, 4])
    np.testing.assert_array_equal(adv[:, 0], [1.5, 2.0, 2.0])
    np.testing.assert_array_equal(ret[:, 0], [2.5, 4.0, 5.0])
    assert adv.dtype == ret.dtype == np.float32 and adv.shape == ret.shape == (3, 1)


def test_gae_does_not_bootstrap_on_termination():
    # terminated at t=2: V[3] = 4 must be ignored.
    # delta2 = 3 + 0 - 3 = 0        A2 = 0
    # delta1 = 1.5                  A1 = 1.5 + 0.25*0 = 1.5
    # delta0 = 1                    A0 = 1 + 0.25*1.5 = 1.375
    # returns = [2.375, 3.5, 3]
    adv, ret = gae([1, 2, 3], [1, 2, 3, 4], terminated=[F, F, T_])
    np.testing.assert_array_equal(adv[:, 0], [1.375, 1.5, 0.0])
    np.testing.assert_array_equal(ret[:, 0], [2.375, 3.5, 3.0])


def test_gae_bootstraps_on_truncation():
    # truncated at t=0: V[1] = 2 is V(real final obs) -> bootstrap, but the lambda-chain is cut.
    # delta0 = 1 + 0.5*2 - 1 = 1    A0 = 1 (no 0.25*A1 term)
    # delta1 = 1.5, delta2 = 2      A2 = 2, A1 = 1.5 + 0.25*2 = 2 (a new episode)
    # returns = [2, 4, 5]
    adv, ret = gae([1, 2, 3], [1, 2, 3, 4], truncated=[T_, F, F])
    np.testing.assert_array_equal(adv[:, 0], [1.0, 2.0, 2.0])
    np.testing.assert_array_equal(ret[:, 0], [2.0, 4.0, 5.0])
    # The same step terminated instead: delta0 = 1 + 0 - 1 = 0, so A0 = 0 and the return is r0 = 1.
    adv, ret = gae([1, 2, 3], [1, 2, 3, 4], terminated=[T_, F, F])
    assert adv[0, 0] == 0.0 and ret[0, 0] == 1.0


def test_gae_masks_autoreset_step_after_episode_end():
    # t=1 terminates, t=2 is gymnasium's next-step autoreset (reward 0, action ignored): valid=False.
    # rewards [1, 4, 0, 3], V [1, 2, 5, 3, 4]  (V[2] = 5 = V(final obs), unused since terminated)
    # delta3 = 3 + 0.5*4 - 3 = 2    A3 = 2
    # t=2 invalid                   A2 = 0, return = V[2] = 5
    # delta1 = 4 + 0 - 2 = 2        A1 = 2 (chain cut by the episode end)
    # delta0 = 1 + 0.5*2 - 1 = 1    A0 = 1 + 0.25*2 = 1.5
    # returns = [2.5, 4, 5, 5]
    adv, ret = gae([1, 4, 0, 3], [1, 2, 5, 3, 4], terminated=[F, T_, F, F], valid=[T_, T_, F, T_])
    np.testing.assert_array_equal(adv[:, 0], [1.5, 2.0, 0.0, 2.0])
    np.testing.assert_array_equal(ret[:, 0], [2.5, 4.0, 5.0, 5.0])


def test_gae_invalid_step_does_not_leak_without_episode_end():
    # Robustness: an invalid step whose predecessor did NOT end an episode (breaks the contract).
    # rewards [1, 100, 3], V [1, 2, 3, 4], valid [T, F, T]
    # delta2 = 2                    A2 = 2
    # t=1 invalid (delta would be 100 + 1.5 - 2 = 99.5)  A1 = 0, return = V[1] = 2
    # delta0 = 1                    A0 = 1 (neither 99.5 nor A2 leaks through the invalid step)
    adv, ret = gae([1, 100, 3], [1, 2, 3, 4], valid=[T_, F, T_])
    np.testing.assert_array_equal(adv[:, 0], [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(ret[:, 0], [2.0, 2.0, 5.0])


def test_gae_gamma_one_lambda_one_is_monte_carlo_return_minus_value():
    # gamma = lam = 1: A_t = sum_{k>=t} r_k (+ V[T] if not terminated) - V[t].
    # rewards [1, 2, 3], V [0.5, 1, 1.5, 10]
    # terminated at t=2: MC returns [6, 5, 3], A = [6-0.5, 5-1, 3-1.5] = [5.5, 4, 1.5]
    adv, ret = gae([1, 2, 3], [0.5, 1, 1.5, 10], terminated=[F, F, T_], gamma=1.0, lam=1.0)
    np.testing.assert_array_equal(adv[:, 0], [5.5, 4.0, 1.5])
    np.testing.assert_array_equal(ret[:, 0], [6.0, 5.0, 3.0])
    # not terminated: bootstrapped by V[3] = 10 -> returns [16, 15, 13], A = [15.5, 14, 11.5]
    adv, ret = gae([1, 2, 3], [0.5, 1, 1.5, 10], gamma=1.0, lam=1.0)
    np.testing.assert_array_equal(adv[:, 0], [15.5, 14.0, 11.5])
    np.testing.assert_array_equal(ret[:, 0], [16.0, 15.0, 13.0])


def test_gae_lambda_zero_is_one_step_td_error():
    # lam = 0: A_t = delta_t. rewards [1, 2, 3], V [1, 2, 3, 4] -> deltas [1, 1.5, 2] (see first test)
    adv, _ = gae([1, 2, 3], [1, 2, 3, 4], lam=0.0)
    np.testing.assert_array_equal(adv[:, 0], [1.0, 1.5, 2.0])


def test_gae_envs_are_independent():
    # env 0: the plain rollout (A = [1.5, 2, 2]); env 1: terminated at t=2 (A = [1.375, 1.5, 0]);
    # env 2: truncated at t=0 (A = [1, 2, 2]). Same rewards/values in every column.
    rewards = [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    values = [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]
    terminated = [[F, F, F], [F, F, F], [F, T_, F]]
    truncated = [[F, F, T_], [F, F, F], [F, F, F]]
    adv, ret = gae(rewards, values, terminated=terminated, truncated=truncated)
    np.testing.assert_array_equal(adv, [[1.5, 1.375, 1.0], [2.0, 1.5, 2.0], [2.0, 0.0, 2.0]])
    np.testing.assert_array_equal(ret, [[2.5, 2.375, 2.0], [4.0, 3.5, 4.0], [5.0, 3.0, 5.0]])


def test_gae_accepts_read_only_inputs_and_leaves_them_unchanged():
    rewards = np.array([[1.0], [2.0], [3.0]], np.float32)
    values = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    masks = [np.zeros((3, 1), bool), np.zeros((3, 1), bool), np.ones((3, 1), bool)]
    for array in (rewards, values, *masks):
        array.setflags(write=False)
    adv, _ = generalized_advantage_estimate(rewards, values, *masks, gamma=0.5, lam=0.5)
    np.testing.assert_array_equal(adv[:, 0], [1.5, 2.0, 2.0])
    np.testing.assert_array_equal(values[:, 0], [1, 2, 3, 4])


def test_gae_empty_rollout():
    adv, ret = generalized_advantage_estimate(np.zeros((0, 2), np.float32), np.zeros((1, 2), np.float32),
                                              *(np.zeros((0, 2), bool),) * 3, gamma=0.99, lam=0.95)
    assert adv.shape == ret.shape == (0, 2)


@pytest.mark.parametrize("values_shape, mask_shape", [((3, 2), (3, 2)), ((4, 1), (3, 2)), ((4, 2), (2, 2))])
def test_gae_rejects_bad_shapes(values_shape, mask_shape):
    ok = np.zeros((3, 2), bool)
    with pytest.raises(ValueError, match="must be"):
        generalized_advantage_estimate(np.zeros((3, 2), np.float32), np.zeros(values_shape, np.float32),
                                       ok, np.zeros(mask_shape, bool), ok, gamma=0.99, lam=0.95)
