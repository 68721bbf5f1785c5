"""V-trace off-policy targets for gymnasium 1.x next-step autoreset rollouts.

Paper: Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
Actor-Learner Architectures", https://arxiv.org/abs/1802.01561: eq. 1 (the n-step target v_s),
§4.1 Remark 1 (its recursion) and §4.2 (the policy-gradient advantage). Reference implementation:
deepmind/scalable_agent ``vtrace.py::from_importance_weights`` (its ``clip_rho_threshold`` is
rho_bar, ``clip_pg_rho_threshold`` the pg one; c_bar is 1 there). Style: TorchRL's
``torchrl/objectives/value/functional.py::vtrace_advantage_estimate`` (a pure function with a
shape contract, time-major here).

Episode ends are handled as in ``storage/gae.py`` (layout: ``storage/layout.py``):

* ``values[t + 1]`` (``bootstrap_value`` for the last row) is V of step t's real next observation,
  also after an episode end (gymnasium autoresets on the NEXT step). On truncation it is
  bootstrapped from; on termination it is not.
* The trace is cut at every episode end (terminated or truncated) and at an invalid step (the
  autoreset step after an episode end: not a transition). An invalid step has v_s = V(x_s) and
  advantage 0, and nothing of it leaks backwards.

With behaviour == target policy (rho = 1) and rho_bar, c_bar >= 1, ``vs`` are the lambda-returns
(n-step returns for lambda = 1) and, for lambda = 1, ``pg_advantages`` are GAE(lambda=1) advantages.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["VTraceReturns", "vtrace"]


class VTraceReturns(NamedTuple):
    """V-trace targets, all ``[T, N]`` float, without gradient."""

    vs: torch.Tensor  # v_s: the value target (eq. 1)
    pg_advantages: torch.Tensor  # rho_s * (r_s + gamma * v_{s+1} - V(x_s)), rho clipped at pg_rho_bar (§4.2)
    rhos: torch.Tensor  # the unclipped importance ratios pi(a_s|x_s) / mu(a_s|x_s)


@torch.no_grad()
def vtrace(
    behaviour_logp: torch.Tensor,
    target_logp: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    valid: torch.Tensor,
    gamma: float,
    rho_bar: float | None = 1.0,
    c_bar: float | None = 1.0,
    pg_rho_bar: float | None = 1.0,
    lam: float = 1.0,
) -> VTraceReturns:
    """V-trace targets and policy-gradient advantages, vectorised over envs, backwards over time.

    Args:
        behaviour_logp: ``[T, N]`` log mu(a_t | x_t), the policy that collected the step.
        target_logp: ``[T, N]`` log pi(a_t | x_t), the policy being learned (the current one).
        rewards: ``[T, N]`` reward of transition t.
        values: ``[T, N]`` V(x_t) under the current value function.
        bootstrap_value: ``[N]`` V(x_T), of the observation after the last step.
        terminated: ``[T, N]`` bool, transition t ended its episode in a true terminal state.
        truncated: ``[T, N]`` bool, transition t ended its episode by a time limit.
        valid: ``[T, N]`` bool, False for the autoreset step that follows an episode end.
        gamma: discount factor.
        rho_bar: clip of the importance weights rho_t in the temporal differences (None: no clip).
        c_bar: clip of the trace coefficients c_t (None: no clip).
        pg_rho_bar: clip of rho_t in the policy-gradient advantage (None: no clip).
        lam: lambda of the traces, c_t = lam * min(c_bar, rho_t) (paper §4.1, as in Retrace(lambda)).

    Returns:
        :class:`VTraceReturns` (``vs``, ``pg_advantages``, ``rhos``), each ``[T, N]`` in the dtype
        of ``values``. Invalid steps have ``vs = values``, ``pg_advantages = 0`` and ``rhos = 1``
        (their log-probs are not read).

    Raises:
        ValueError: a tensor has the wrong shape.
    """
    _check_shapes(behaviour_logp, target_logp, rewards, values, bootstrap_value, terminated, truncated, valid)
    dtype = values.dtype
    gamma, lam = float(gamma), float(lam)
    zero = values.new_zeros(())
    # rho = 1 at invalid steps: whatever log-probs they hold (padding, garbage) never make inf/NaN below.
    rhos = torch.exp(torch.where(valid, target_logp.to(dtype) - behaviour_logp.to(dtype), zero))
    clipped_rhos = rhos if rho_bar is None else torch.clamp(rhos, max=rho_bar)
    cs = lam * (rhos if c_bar is None else torch.clamp(rhos, max=c_bar))
    clipped_pg_rhos = rhos if pg_rho_bar is None else torch.clamp(rhos, max=pg_rho_bar)

    not_terminal = (~terminated).to(dtype)
    done = terminated | truncated
    not_done = (~done).to(dtype)
    values_tp1 = torch.cat([values[1:], bootstrap_value[None]], dim=0)  # V of step t's real next obs
    # delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)); truncation bootstraps, termination not.
    # torch.where, not *: an invalid row may hold inf/NaN.
    deltas = torch.where(valid, clipped_rhos * (rewards.to(dtype) + gamma * not_terminal * values_tp1 - values), zero)
    # The trace is cut at episode ends and invalid steps (as GAE's chain in storage/gae.py).
    discounts = gamma * cs * not_done * valid.to(dtype)

    # Remark 1: v_s - V(x_s) = delta_s V + gamma c_s (v_{s+1} - V(x_{s+1})), from the end backwards.
    vs_minus_v = torch.empty_like(values)
    acc = values.new_zeros(values.shape[1:])
    for t in reversed(range(values.shape[0])):
        acc = vs_minus_v[t] = deltas[t] + discounts[t] * acc
    vs = vs_minus_v + values

    # §4.2: A_s = rho_s (r_s + gamma v_{s+1} - V(x_s)); after an episode end there is no v_{s+1} of
    # the same episode: truncation bootstraps from V(real final obs), termination from nothing.
    vs_tp1 = torch.cat([vs[1:], bootstrap_value[None]], dim=0)
    next_target = torch.where(done, values_tp1, vs_tp1)
    pg_advantages = torch.where(
        valid, clipped_pg_rhos * (rewards.to(dtype) + gamma * not_terminal * next_target - values), zero)
    return VTraceReturns(vs, pg_advantages, rhos)


def _check_shapes(behaviour_logp: torch.Tensor, target_logp: torch.Tensor, rewards: torch.Tensor,
                  values: torch.Tensor, bootstrap_value: torch.Tensor, *masks: torch.Tensor) -> None:
    """Raise ``ValueError`` unless every ``[T, N]`` input is ``[T, N]``, ``bootstrap_value`` ``[N]``
    and the masks bool."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [T, N], got shape {tuple(rewards.shape)}")
    shape = tuple(rewards.shape)
    named = {"behaviour_logp": behaviour_logp, "target_logp": target_logp, "values": values,
             **dict(zip(("terminated", "truncated", "valid"), masks, strict=True))}
    for name, tensor in named.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be [T, N] = {shape}, got {tuple(tensor.shape)}")
    if tuple(bootstrap_value.shape) != shape[1:]:
        raise ValueError(f"bootstrap_value must be [N] = {shape[1:]}, got {tuple(bootstrap_value.shape)}")
    for name, mask in zip(("terminated", "truncated", "valid"), masks, strict=True):
        if mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {mask.dtype}")
