"""Twin Delayed DDPG (Fujimoto et al. 2018, https://arxiv.org/abs/1802.09477).

The three changes to DDPG (paper section 5 and Algorithm 1), as CleanRL's
cleanrl/td3_continuous_action.py and SB3's stable_baselines3/td3/td3.py implement them:

* clipped double Q: the target takes the min of two target critics;
* target policy smoothing: a' = clip(mu'(s') + clip(N(0, sigma), -c, c), -1, 1);
* delayed updates: the actor and every target network move once per ``policy_delay`` critic steps.

Actions live in [-1, 1]^A inside (tanh actor, SB3's scaled actions), so ``target_policy_noise``,
``target_noise_clip`` and the exploration noise ``action_noise`` are fractions of half the action
range, like RL Zoo's ``noise_std``. ``ddpg.py`` reuses this class with one critic and no tricks.

``compute_gradients`` returns the critic *and* the actor gradient on every call, both on one set
of weights (CleanRL and SB3 step the critic first; this is the synchronous data-parallel form);
``apply_gradients`` steps the actor only when its own update counter says so, so every replica
(sync or async) decides the same way.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.base import ActOut, GradientResult
from colonyrl.agents.off_policy import (
    ConcurrentLosses,
    OffPolicyAlgorithm,
    OffPolicyPolicy,
    ReplayConfigMixin,
    as_tensor,
    grad_norms,
    grads_of,
    polyak_update,
    td_target,
    uniform_box_actions,
)
from colonyrl.agents.q_networks import (
    ActionScaler,
    BoxActionExport,
    ContinuousCritic,
    DeterministicActor,
    box_action_space,
)
from colonyrl.agents.sac import twin_q_loss
from colonyrl.config import Config, param

__all__ = ["TD3Config", "TD3", "DeterministicPolicy", "TD3Loss", "RL_ZOO", "smoothed_target_action",
           "deterministic_actor_loss"]

#: RL Zoo's tuned values (DLR-RM/rl-baselines3-zoo, hyperparams/td3.yml at 22e3ff2; ddpg.yml has
#: the same for Pendulum-v1): ``noise_type: normal, noise_std: 0.1`` is ``action_noise``;
#: ``train_freq: 1, gradient_steps: 1`` is ``updates_per_step`` 1.0; ``net_arch: [400, 300]``.
RL_ZOO: dict[str, dict[str, Any]] = {
    "Pendulum-v1": {"n_timesteps": 20_000, "gamma": 0.98, "buffer_size": 200_000, "learning_starts": 10_000,
                    "action_noise": 0.1, "updates_per_step": 1.0, "lr": 1e-3, "hidden_sizes": (400, 300)},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TD3Config(ReplayConfigMixin, Config):
    """Defaults are SB3's (stable_baselines3/td3/td3.py), one ``lr`` for actor and critics."""

    lr: float = param(1e-3, ge=0, runtime=True)
    batch_size: int = param(256, ge=1, runtime=True)
    learning_starts: int = param(100, ge=0, runtime=True)
    updates_per_step: float = param(1.0, gt=0, runtime=True)  # SB3 gradient_steps / train_freq = 1 / 1
    tau: float = param(0.005, gt=0, le=1, runtime=True)
    policy_delay: int = param(2, ge=1, runtime=True)  # critic steps per actor (and target) step
    target_policy_noise: float = param(0.2, ge=0, runtime=True)  # sigma of the smoothing noise
    target_noise_clip: float = param(0.5, ge=0, runtime=True)  # c
    #: Std of the Gaussian exploration noise, a fraction of half the action range. SB3 adds none by
    #: default; 0.1 is the paper's and RL Zoo's.
    action_noise: float = param(0.1, ge=0, runtime=True)
    #: 2: the critics' and the actor's gradients at once on two cores (as ``SACConfig.loss_threads``).
    loss_threads: int = param(1, ge=1, le=2)
    name: ClassVar[str] = "td3"
    acting_parameters: ClassVar[frozenset[str]] = frozenset({"action_noise"})
    n_critics: ClassVar[int] = 2

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> TD3:
        return TD3(self, observation_space, action_space, network)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> DeterministicPolicy:
        space = box_action_space(action_space, f"{type(self).__name__}.action_space")
        return DeterministicPolicy(self, DeterministicActor(observation_space, space, network), ActionScaler(space))


class TD3Loss(NamedTuple):
    critic_loss: torch.Tensor
    actor_loss: torch.Tensor
    td_abs: torch.Tensor  # [B], max over the critics of |Q_i - y| (the new priorities)
    q_mean: torch.Tensor


def smoothed_target_action(next_action: torch.Tensor, noise_std: float, noise_clip: float,
                           eps: torch.Tensor | None = None) -> torch.Tensor:
    """clip(mu'(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, noise_std) (paper eq. 14); ``eps``: the
    standard normal draw [B, A] made by the caller (None: drawn here)."""
    if noise_std == 0.0:
        return next_action
    eps = torch.randn_like(next_action) if eps is None else eps
    noise = (eps * noise_std).clamp(-noise_clip, noise_clip)
    return (next_action + noise).clamp(-1.0, 1.0)


def deterministic_actor_loss(q1_pi: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-E[Q_1(s, mu(s))]: the deterministic policy gradient (Silver et al. 2014) through Q_1."""
    return -(weights * q1_pi).mean()


class DeterministicPolicy(OffPolicyPolicy):
    """mu(s) plus N(0, action_noise) in [-1, 1] units, clipped, scaled to the bounds (SB3's
    ``NormalActionNoise`` on the scaled action); deterministic: mu(s). Stored action = env action."""

    def __init__(self, config: Any, actor: DeterministicActor, scaler: ActionScaler) -> None:
        super().__init__(config, {"actor": actor})
        self.actor, self.scaler = actor, scaler

    @torch.inference_mode()
    def policy_act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        unit = self.actor(as_tensor(obs))
        sigma = self.config.action_noise
        if not deterministic and sigma > 0:
            unit = (unit + sigma * torch.randn_like(unit)).clamp(-1.0, 1.0)
        action = self.scaler.to_env(unit).numpy()
        return ActOut(action, action, {})

    def random_act(self, n: int) -> ActOut:
        return uniform_box_actions(self.scaler, n)

    def export_module(self) -> torch.nn.Module:
        return BoxActionExport(self.actor, self.scaler)


class TD3(OffPolicyAlgorithm):
    """TD3 (and DDPG, with ``n_critics=1``, ``policy_delay=1`` and no smoothing);
    ``parameters()`` = actor, then critics."""

    def __init__(self, config: Any, observation_space: gym.Space, action_space: gym.Space, network: Any) -> None:
        self.config = config
        space = box_action_space(action_space, f"{type(config).__name__}.action_space")
        self.actor = DeterministicActor(observation_space, space, network)
        self.critic = ContinuousCritic(observation_space, space, network, n_critics=config.n_critics)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.scaler = ActionScaler(space)
        self.policy = DeterministicPolicy(config, self.actor, self.scaler)
        self.nets = {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                     "critic_target": self.critic_target}
        self.acting = ("actor",)
        self._groups = {"actor": list(self.actor.parameters()), "critic": list(self.critic.parameters())}
        self._params = self._groups["actor"] + self._groups["critic"]
        self.optimizers = {name: torch.optim.Adam(group, lr=config.lr, fused=True)  # fused: fastest on CPU (agents/ppo.py)
                           for name, group in self._groups.items()}
        self.n_updates = 0
        self.concurrent = ConcurrentLosses(config.loss_threads)

    def critic_objective(self, batch: Any, eps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(critic loss, priorities, mean Q) against the clipped double-Q target, smoothed with ``eps``."""
        cfg = self.config
        with torch.no_grad():
            next_a = smoothed_target_action(self.actor_target(batch.next_obs), cfg.target_policy_noise,
                                            cfg.target_noise_clip, eps)
            next_q = self.critic_target(batch.next_obs, next_a).amin(0)
            y = td_target(batch.rewards, batch.discounts, batch.terminated, next_q)
        q = self.critic(batch.obs, self.scaler.to_unit(batch.actions))
        c_loss, td_abs = twin_q_loss(q, y, batch.weights, scale=1.0)  # SB3's TD3: sum of the critics' MSEs
        return c_loss, td_abs, q.detach().mean()

    def actor_objective(self, batch: Any) -> torch.Tensor:
        return deterministic_actor_loss(self.critic.q1(batch.obs, self.actor(batch.obs)), batch.weights)

    def _smoothing_noise(self, batch: Any) -> torch.Tensor | None:
        """The target smoothing's N(0, I) draw, made before the objectives run (on two threads)."""
        return torch.randn_like(batch.actions) if self.config.target_policy_noise > 0 else None

    def loss(self, batch: Any) -> TD3Loss:
        c_loss, td_abs, q_mean = self.critic_objective(batch, self._smoothing_noise(batch))
        return TD3Loss(c_loss, self.actor_objective(batch), td_abs, q_mean)

    def compute_gradients(self, batch: Any) -> GradientResult:
        """Actor and critic gradients, each w.r.t. its own parameters (the actor loss runs through
        Q_1 but leaves the critic's gradients alone); with ``loss_threads`` = 2 both at once."""
        eps = self._smoothing_noise(batch)

        def actor() -> tuple[torch.Tensor, list[torch.Tensor]]:
            a_loss = self.actor_objective(batch)
            return a_loss, grads_of(a_loss, self._groups["actor"])

        def critic() -> tuple[tuple, list[torch.Tensor]]:
            terms = self.critic_objective(batch, eps)
            return terms, grads_of(terms[0], self._groups["critic"])

        (a_loss, a_grads), ((c_loss, td_abs, q_mean), c_grads) = self.concurrent.run(actor, critic)
        terms = torch.stack([c_loss.detach(), a_loss.detach(), q_mean])
        info = dict(zip(("critic_loss", "actor_loss", "q_mean"), terms.tolist(), strict=True))
        return GradientResult(a_grads + c_grads, info, priorities=td_abs.cpu().numpy())

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Step the critics; every ``policy_delay``-th update also the actor, then Polyak-average both
        target networks (SB3 counts updates from 1 and steps the actor when count % delay == 0)."""
        self._load_grads(grads)
        self.n_updates += 1
        metrics = grad_norms({"critic": self._groups["critic"]})
        self.optimizers["critic"].step()
        if self.n_updates % self.config.policy_delay == 0:
            metrics |= grad_norms({"actor": self._groups["actor"]})
            self.optimizers["actor"].step()
            tau = self.config.tau
            polyak_update(self._groups["critic"], list(self.critic_target.parameters()), tau)
            polyak_update(self._groups["actor"], list(self.actor_target.parameters()), tau)
        metrics["actor_updated"] = float(self.n_updates % self.config.policy_delay == 0)
        return metrics
