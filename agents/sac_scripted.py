"""SAC's two objectives, their gradients and acting as TorchScript functions (``SACConfig.scripted``).

Why: with Pendulum-v1's [256, 256] networks one SAC update is ~16 matrix products of 256^3 plus
~200 small ops, and each op called from Python costs microseconds of interpreter and dispatcher
time during which the thread holds the GIL. With ``loss_threads`` = 2 that Python time is what
the critic's and the actor's threads cannot overlap. A function compiled by ``torch.jit.script``
runs its ops in TorchScript's C++ interpreter: measured here (one torch thread per loss thread,
2 cores), the critic's part took 5.2 ms against 6.0 eager, the actor's 4.7 against 5.9, and both
at once 6.0 against 7.1. ``torch.compile`` was measured slower at this size (benchmarks/README.md:
the per-loss ``autograd.grad`` calls split its graphs).

These functions do the ops of ``SAC.critic_objective`` and ``SAC.actor_objective`` (and of
``MLP``, ``FlattenEncoder``, ``SquashedGaussianActor.sample``, ``ContinuousCritic``) in the same
order, so every gradient is bit for bit the eager one (tests/agents/test_sac_scripted.py). They run with
the graph executor's optimizations off (``torch.jit.optimized_execution(False)``, a per-thread
flag): its autodiff subgraphs reorder ops and differentiate w.r.t. every input that requires grad,
the critic's weights in the actor's loss included. TorchScript is deprecated in favour of
``torch.compile``; the eager path (``scripted=False``) stays the reference.

Supported networks: flat Box observations (``FlattenEncoder``) and ``MLP`` trunks of Linear layers
with one activation kind (ReLU or Tanh); ``check_networks`` says what else it met, naming the field.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colonyrl.agents.base import ActOut
from colonyrl.agents.encoders import FlattenEncoder
from colonyrl.agents.mlp import MLP
from colonyrl.agents.q_networks import ActionScaler, SquashedGaussianActor, box_action_space
from colonyrl.agents.sac import SAC, SACPolicy
from colonyrl.agents.tensors import as_tensor, leading_dim
from colonyrl.config import ConfigError

__all__ = ["ScriptedSAC", "ScriptedSACPolicy", "check_networks", "CONSTANTS"]

#: TorchScript functions cannot read Python globals, so the functions below write these constants
#: out; tests/agents/test_sac_scripted.py checks them against the eager code's.
CONSTANTS = {"log_std_min": -20.0, "log_std_max": 2.0, "log_2": 0.6931471805599453,
             "log_sqrt_2pi": 0.9189385332046727}


def _mlp(x: Tensor, params: list[Tensor], activated: int, tanh: bool) -> Tensor:
    """``MLP.forward``: Linear layers (``params`` = weight, bias, ...), the first ``activated`` of
    them followed by the activation."""
    for i in range(len(params) // 2):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < activated:
            x = torch.tanh(x) if tanh else torch.relu(x)
    return x


def _encode(obs: Tensor) -> Tensor:
    """``FlattenEncoder.forward``."""
    x = obs if obs.dim() == 2 else obs.reshape(obs.shape[0], -1)
    return x.float()


def _sample(obs: Tensor, latent: list[Tensor], heads: list[Tensor], eps: Tensor,
            tanh: bool) -> tuple[Tensor, Tensor]:
    """``SquashedGaussianActor.sample`` with the noise given: (tanh(u), log pi(tanh(u) | s))."""
    h = _mlp(_encode(obs), latent, len(latent) // 2, tanh)
    mean = F.linear(h, heads[0], heads[1])
    log_std = torch.clamp(F.linear(h, heads[2], heads[3]), -20.0, 2.0)  # LOG_STD_MIN, LOG_STD_MAX
    raw = mean + log_std.exp() * eps
    logp = ((-0.5 * eps.pow(2) - log_std - 0.9189385332046727).sum(-1)  # log sqrt(2 pi)
            - (2.0 * (0.6931471805599453 - raw - F.softplus(-2.0 * raw))).sum(-1))  # tanh_log_det_jacobian
    return torch.tanh(raw), logp


def _twin_q(obs: Tensor, unit_action: Tensor, qs: list[list[Tensor]], tanh: bool) -> Tensor:
    """``ContinuousCritic.forward``: Q values [n_critics, B]."""
    x = torch.cat([_encode(obs), unit_action], dim=-1)
    out: list[Tensor] = []
    for q in qs:
        out.append(_mlp(x, q, len(q) // 2 - 1, tanh).squeeze(-1))
    return torch.stack(out)


def _flat(grads: list[Tensor | None]) -> list[Tensor]:
    out: list[Tensor] = []
    for g in grads:
        assert g is not None  # every parameter is used (materialize_grads is not scriptable)
        out.append(g)
    return out


def _target_action(next_obs: Tensor, latent: list[Tensor], heads: list[Tensor], next_noise: Tensor,
                   tanh: bool) -> tuple[Tensor, Tensor]:
    """a' ~ pi(.|s') and log pi(a'|s') for the soft target, without a graph."""
    with torch.no_grad():
        return _sample(next_obs, latent, heads, next_noise, tanh)


def _critic_grads(q: Tensor, rewards: Tensor, next_obs: Tensor, terminated: Tensor, discounts: Tensor,
                  weights: Tensor, alpha: Tensor, next_a: Tensor, next_logp: Tensor, qs: list[list[Tensor]],
                  target_qs: list[list[Tensor]], tanh: bool) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """The rest of ``SAC.critic_objective`` given Q(s, a) [n, B] (``_twin_q``, with its graph) and
    a' (``_target_action``), and d loss / d critic: (loss, priorities, mean Q, gradients)."""
    with torch.no_grad():
        next_q = _twin_q(next_obs, next_a, target_qs, tanh).amin(0)
        y = rewards + discounts * (1.0 - terminated) * (next_q - alpha * next_logp)  # soft_q_target
    td = q - y  # twin_q_loss, scale 0.5
    loss = 0.5 * (weights * td.pow(2)).mean(-1).sum()
    params: list[Tensor] = []
    for p in qs:
        params.extend(p)
    grads = _flat(torch.autograd.grad([loss], params, allow_unused=True))
    return loss, td.detach().abs().amax(0), q.detach().mean(), grads


def _actor_grads(obs: Tensor, weights: Tensor, alpha: Tensor, noise: Tensor, latent: list[Tensor],
                 heads: list[Tensor], qs: list[list[Tensor]], log_alpha: list[Tensor], target_entropy: float,
                 tanh: bool) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """``SAC.actor_objective`` and the gradients of the actor's loss w.r.t. the actor, then of
    alpha's loss w.r.t. log alpha (``log_alpha`` empty: alpha is fixed, its loss is returned as 0)."""
    a, logp = _sample(obs, latent, heads, noise, tanh)
    a_loss = (weights * (alpha * logp - _twin_q(obs, a, qs, tanh).amin(0))).mean()  # actor_loss
    grads = _flat(torch.autograd.grad([a_loss], latent + heads, allow_unused=True))
    e_loss = torch.zeros_like(a_loss)
    if len(log_alpha) > 0:  # ent_coef_loss
        e_loss = -(weights * log_alpha[0] * (logp.detach() + target_entropy)).mean()
        grads.extend(_flat(torch.autograd.grad([e_loss], log_alpha)))
    return a_loss, e_loss, -logp.detach().mean(), grads


def _act(obs: Tensor, latent: list[Tensor], heads: list[Tensor], low: Tensor, high: Tensor,
         eps: Tensor | None, tanh: bool) -> Tensor:
    """``SACPolicy.policy_act``'s action in env units, [B, A]: the mean's tanh when ``eps`` is None
    (``mode``), else the first output of ``_sample``; then ``ActionScaler.to_env``."""
    h = _mlp(_encode(obs), latent, len(latent) // 2, tanh)
    mean = F.linear(h, heads[0], heads[1])
    if eps is None:
        unit = torch.tanh(mean)
    else:
        log_std = torch.clamp(F.linear(h, heads[2], heads[3]), -20.0, 2.0)
        unit = torch.tanh(mean + log_std.exp() * eps)
    return torch.clamp(low + (unit + 1.0) * (0.5 * (high - low)), low, high)


_FUNCTIONS = {"target_action": _target_action, "q": _twin_q, "critic": _critic_grads, "actor": _actor_grads,
              "act": _act}
_SCRIPTED: dict[str, Any] = {}


def _compiled(name: str) -> Any:
    """The scripted function, compiled on first use (~30 ms for all five here) and shared by the process."""
    if name not in _SCRIPTED:
        with warnings.catch_warnings():  # torch >= 2.10 says TorchScript is deprecated (module docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            _SCRIPTED[name] = torch.jit.script(_FUNCTIONS[name])
    return _SCRIPTED[name]


def check_networks(*nets: nn.Module) -> None:
    """ConfigError unless every network is a flat-observation MLP with one activation kind."""
    kinds: set[type] = set()
    for net in nets:
        trunks = [net.latent] if isinstance(net, SquashedGaussianActor) else list(net.qs)
        if type(net.encoder) is not FlattenEncoder:
            raise ConfigError("SACConfig.scripted", True, f"flat Box observations only (this {type(net).__name__} "
                              f"has a {type(net.encoder).__name__}); set it to False")
        for trunk in trunks:
            if type(trunk) is not MLP or any(type(m) not in (nn.Linear, nn.ReLU, nn.Tanh) for m in trunk):
                raise ConfigError("SACConfig.scripted", True, "MLP networks of Linear, ReLU or Tanh layers only; "
                                  "set it to False")
            kinds |= {type(m) for m in trunk if type(m) is not nn.Linear}
    if len(kinds) > 1:
        raise ConfigError("SACConfig.scripted", True, "one activation kind in every network; set it to False")


def _box(action_space: gym.Space) -> gym.spaces.Box:
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError("SACConfig.scripted", True, f"Box actions only (got {action_space}); set it to False")
    return box_action_space(action_space, "SACConfig.action_space")


def _actor_params(actor: SquashedGaussianActor) -> dict[str, Any]:
    """The actor's parameters as the scripted functions take them (aliases of the live tensors)."""
    return {"latent": list(actor.latent.parameters()),
            "heads": [actor.mu.weight, actor.mu.bias, actor.log_std.weight, actor.log_std.bias],
            "tanh": any(isinstance(m, nn.Tanh) for m in actor.latent)}


class ScriptedSACPolicy(SACPolicy):
    """``SACPolicy`` acting through ``_act``: the same actions for the same RNG state."""

    @classmethod
    def build(cls, config: Any, observation_space: gym.Space, action_space: gym.Space,
              network: Any) -> ScriptedSACPolicy:
        space = _box(action_space)
        actor = SquashedGaussianActor(observation_space, space, network)
        check_networks(actor)
        return cls(config, actor, ActionScaler(space))

    def __init__(self, config: Any, actor: SquashedGaussianActor, scaler: ActionScaler) -> None:
        super().__init__(config, actor, scaler)
        self._act_params = _actor_params(actor)  # aliases: a pickle or copy carries them with the actor

    @torch.inference_mode()
    def policy_act(self, obs: Any, deterministic: bool = False) -> ActOut:
        x, p = as_tensor(obs), self._act_params
        eps = None if deterministic else self.actor.noise(leading_dim(x), x.device)  # sample()'s randn_like
        with torch.jit.optimized_execution(False):
            action = _compiled("act")(x, p["latent"], p["heads"], self.scaler.low, self.scaler.high, eps, p["tanh"])
        action = action.reshape(-1, *self.scaler.shape).numpy()
        return ActOut(action, action, {})


class ScriptedSAC(SAC):
    """``SAC`` whose critic and actor tasks run the functions above; everything else
    (apply, weights, checkpoints) is SAC's. The parameter lists alias the live modules, so
    ``load_state_dict`` and optimizer steps are seen, and a pickle or deep copy carries them aliasing
    its own modules (tests/agents/test_sac_scripted.py)."""

    def __init__(self, config: Any, observation_space: gym.Space, action_space: gym.Space, network: Any) -> None:
        super().__init__(config, observation_space, action_space, network)
        self._script_params = {**_actor_params(self.actor),  # aliases, as ScriptedSACPolicy's
                               "qs": [list(q.parameters()) for q in self.critic.qs],
                               "target_qs": [list(q.parameters()) for q in self.critic_target.qs],
                               "log_alpha": [] if self.ent_coef is None else [self.ent_coef.log_alpha]}

    def _build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> None:
        space = _box(action_space)
        super()._build(observation_space, space, network)  # the same modules, made in the same order
        check_networks(self.actor, self.critic)
        self.policy = ScriptedSACPolicy(self.config, self.actor, self.scaler)

    def tasks(self, batch: Any, alpha: Tensor, next_noise: Tensor,
              noise: Tensor) -> tuple[Callable[[], tuple], Callable[[], tuple]]:
        """``SAC.tasks`` in TorchScript, with the work balanced between the two: of the critic's 9
        matrix products of 256^3 (Pendulum's nets), the target action's one moves to the actor's
        task (7 more), which computes it first and hands it over; the critic's task meanwhile
        computes Q(s, a), which needs nothing from it. With one loss thread the actor's task runs
        first. Every op is the eager one on the same inputs, so the numbers do not change."""
        p, handoff = self._script_params, _Handoff()

        def actor() -> tuple[tuple, list[Tensor]]:
            with torch.jit.optimized_execution(False):  # a per-thread flag: set on the thread that runs it
                with handoff.giving():
                    handoff.value = _compiled("target_action")(batch.next_obs, p["latent"], p["heads"], next_noise,
                                                               p["tanh"])
                a_loss, e_loss, entropy, grads = _compiled("actor")(
                    batch.obs, batch.weights, alpha, noise, p["latent"], p["heads"], p["qs"], p["log_alpha"],
                    float(self.target_entropy()), p["tanh"])
            return (a_loss, e_loss if p["log_alpha"] else None, entropy), grads

        def critic() -> tuple[tuple, list[Tensor]]:
            with torch.jit.optimized_execution(False):
                q = _compiled("q")(batch.obs, self.scaler.to_unit(batch.actions), p["qs"], p["tanh"])
                next_a, next_logp = handoff.take()
                loss, td_abs, q_mean, grads = _compiled("critic")(
                    q, batch.rewards, batch.next_obs, batch.terminated, batch.discounts, batch.weights, alpha,
                    next_a, next_logp, p["qs"], p["target_qs"], p["tanh"])
            return (loss, td_abs, q_mean), grads

        return actor, critic


class _Handoff:
    """One value from one task to the other (the target action), or the error that stopped it."""

    def __init__(self) -> None:
        self.value: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()

    @contextlib.contextmanager
    def giving(self) -> Iterator[None]:
        try:
            yield
        except BaseException as error:
            self._error = error
            raise
        finally:
            self._ready.set()  # never leave the other task waiting

    def take(self) -> Any:
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the actor's task failed before the target action") from self._error
        return self.value
