"""Soft Actor-Critic (Haarnoja et al. 2018, https://arxiv.org/abs/1801.01290 and, with automatic
entropy tuning, https://arxiv.org/abs/1812.05905).

Box actions: a tanh-squashed Gaussian actor, twin critics with target networks (clipped double Q)
and a learned entropy coefficient alpha with target entropy -|A|. The update is that of CleanRL's
cleanrl/sac_continuous_action.py and SB3's stable_baselines3/sac/sac.py. Discrete actions
(Christodoulou 2019) live in ``sac_discrete.py``; ``SACConfig.build`` picks the variant.

Split as the distributed engine needs it: ``compute_gradients`` (a GWorker) returns the critic,
actor and alpha gradients, all on *one* set of weights; ``apply_gradients`` (the Learner, or every
replica) steps the three optimizers and Polyak-averages the target critic. CleanRL and SB3 step
the critic before computing the actor loss; computing every loss on the same weights is the
standard synchronous data-parallel form (the actor sees the critic of one update earlier).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
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
    step_adams,
    td_target,
    uniform_box_actions,
)
from colonyrl.agents.q_networks import (
    ActionScaler,
    BoxActionExport,
    ContinuousCritic,
    SquashedGaussianActor,
    box_action_space,
)
from colonyrl.config import Config, ConfigError, param

__all__ = ["SACConfig", "SAC", "SACPolicy", "SACLoss", "RL_ZOO", "soft_q_target", "twin_q_loss",
           "actor_loss", "ent_coef_loss", "EntropyCoefficient"]

#: RL Zoo's tuned values (DLR-RM/rl-baselines3-zoo, hyperparams/sac.yml at 22e3ff2): everything
#: not named is SB3's default. ``gamma`` belongs to the storage, ``n_timesteps`` to the run.
RL_ZOO: dict[str, dict[str, Any]] = {"Pendulum-v1": {"n_timesteps": 20_000, "lr": 1e-3}}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SACConfig(ReplayConfigMixin, Config):
    """Defaults are SB3's (stable_baselines3/sac/sac.py); one ``lr`` for all three optimizers as
    SB3's ``learning_rate``."""

    lr: float = param(3e-4, ge=0, runtime=True)
    batch_size: int = param(256, ge=1, runtime=True)
    learning_starts: int = param(100, ge=0, runtime=True)  # transitions stored before the first update
    updates_per_step: float = param(1.0, gt=0, runtime=True)  # SB3 gradient_steps / train_freq = 1 / 1
    tau: float = param(0.005, gt=0, le=1, runtime=True)  # Polyak coefficient of the target critics
    ent_coef: float | None = param(None, gt=0)  # None: learned ("auto"); a number: fixed alpha
    ent_coef_init: float = param(1.0, gt=0)  # initial alpha when learned (SB3 "auto" = "auto_1.0")
    #: None: -|A| for Box actions (paper, SB3), target_entropy_scale * log|A| for Discrete ones.
    target_entropy: float | None = param(None, runtime=True)
    #: Discrete actions: fraction of the maximum entropy log|A| aimed at (Christodoulou 2019: 0.98;
    #: CleanRL's sac_atari.py uses 0.89). With few actions 0.98 is nearly unreachable and alpha keeps
    #: growing (seen on CartPole, |A| = 2: alpha > 100 by 20k steps; 0.3 kept it near 0.2).
    target_entropy_scale: float = param(0.98, gt=0, le=1, runtime=True)
    #: Threads for one update's gradients: 2 computes the critic's and the actor's objectives at
    #: once on two cores (``ConcurrentLosses``; the same numbers as 1). Each GWorker then uses two
    #: cores while it computes: for in-process runs with a core to spare, not for one GWorker per core.
    loss_threads: int = param(1, ge=1, le=2)
    #: Box actions: the two objectives and acting as TorchScript (agents/sac_scripted.py: the same
    #: numbers, less Python per op); flat observations and MLP networks only, else a ConfigError.
    scripted: bool = param(False)
    name: ClassVar[str] = "sac"
    acting_parameters: ClassVar[frozenset[str]] = frozenset()  # SAC explores by sampling

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> SAC:
        if self.scripted:  # it checks the spaces and the networks
            from colonyrl.agents.sac_scripted import ScriptedSAC

            return ScriptedSAC(self, observation_space, action_space, network)
        if isinstance(action_space, gym.spaces.Discrete):
            from colonyrl.agents.sac_discrete import DiscreteSAC

            return DiscreteSAC(self, observation_space, action_space, network)
        return SAC(self, observation_space, action_space, network)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> OffPolicyPolicy:
        if self.scripted:
            from colonyrl.agents.sac_scripted import ScriptedSACPolicy

            return ScriptedSACPolicy.build(self, observation_space, action_space, network)
        if isinstance(action_space, gym.spaces.Discrete):
            from colonyrl.agents.sac_discrete import DiscreteActor, DiscreteSACPolicy

            return DiscreteSACPolicy(self, DiscreteActor(observation_space, int(action_space.n), network),
                                     int(action_space.start))
        if not isinstance(action_space, gym.spaces.Box):
            raise ConfigError("SACConfig.action_space", action_space, "a Box or a Discrete action space")
        space = box_action_space(action_space, "SACConfig.action_space")
        return SACPolicy(self, SquashedGaussianActor(observation_space, space, network), ActionScaler(space))


class SACLoss(NamedTuple):
    """The three objectives (each on its own parameters) and what is reported or prioritized."""

    critic_loss: torch.Tensor
    actor_loss: torch.Tensor
    ent_coef_loss: torch.Tensor | None  # None when alpha is fixed
    td_abs: torch.Tensor  # [B], max over the critics of |Q_i - y| (the new priorities)
    q_mean: torch.Tensor
    entropy: torch.Tensor  # -E[log pi], the batch estimate
    alpha: torch.Tensor


def soft_q_target(rewards: torch.Tensor, discounts: torch.Tensor, terminated: torch.Tensor,
                  next_q_min: torch.Tensor, next_logp: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """y = r + gamma^n (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s') (paper eq. 3)."""
    return td_target(rewards, discounts, terminated, next_q_min - alpha * next_logp)


def twin_q_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale * sum_i mean(w * (Q_i - y)^2)`` over the critics ``q`` [n, B] (SB3 SAC: scale 0.5,
    SB3 TD3: 1.0), and max_i |Q_i - y| [B] as priorities (the max, as LAP, Fujimoto et al. 2020)."""
    td = q - target
    loss = scale * (weights * td.pow(2)).mean(-1).sum()
    return loss, td.detach().abs().amax(0)


def actor_loss(logp: torch.Tensor, q_pi_min: torch.Tensor, alpha: torch.Tensor | float,
               weights: torch.Tensor) -> torch.Tensor:
    """E[alpha log pi(a|s) - min_i Q_i(s, a)], a ~ pi reparameterized (paper eq. 12)."""
    return (weights * (alpha * logp - q_pi_min)).mean()


def ent_coef_loss(log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float,
                  weights: torch.Tensor) -> torch.Tensor:
    """-E[log alpha * (log pi + target_entropy)] with log pi detached (Haarnoja et al. 2018b, eq. 18,
    in log alpha as SB3 does); alpha rises while the entropy -log pi is below the target."""
    return -(weights * log_alpha * (logp.detach() + target_entropy)).mean()


class EntropyCoefficient(torch.nn.Module):
    """alpha = exp(log_alpha), learned in log space (SB3 ``log_ent_coef``)."""

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_alpha = torch.nn.Parameter(torch.tensor([float(np.log(init))]))


class SACPolicy(OffPolicyPolicy):
    """Samples the squashed Gaussian (the mean's tanh when deterministic), scaled to the bounds; the
    stored action is the env action."""

    def __init__(self, config: SACConfig, actor: SquashedGaussianActor, scaler: ActionScaler) -> None:
        super().__init__(config, {"actor": actor})
        self.actor, self.scaler = actor, scaler

    @torch.inference_mode()
    def policy_act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        x = as_tensor(obs)
        unit = self.actor.mode(x) if deterministic else self.actor.sample(x)[0]
        action = self.scaler.to_env(unit).numpy()
        return ActOut(action, action, {})

    def random_act(self, n: int) -> ActOut:
        return uniform_box_actions(self.scaler, n)

    def export_module(self) -> torch.nn.Module:
        return BoxActionExport(self.actor, self.scaler)


class SAC(OffPolicyAlgorithm):
    """SAC for Box actions; ``parameters()`` = actor, critics, then log_alpha (when learned)."""

    def __init__(self, config: SACConfig, observation_space: gym.Space, action_space: gym.Space,
                 network: Any) -> None:
        self.config = config
        self._build(observation_space, action_space, network)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.ent_coef = EntropyCoefficient(config.ent_coef_init) if config.ent_coef is None else None
        self.nets = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}
        self.acting = ("actor",)
        self._groups = {"actor": list(self.actor.parameters()), "critic": list(self.critic.parameters())}
        if self.ent_coef is not None:
            self.nets["ent_coef"] = self.ent_coef
            self._groups["ent_coef"] = [self.ent_coef.log_alpha]
        self._params = [p for group in self._groups.values() for p in group]
        self._target_params = list(self.critic_target.parameters())
        self.optimizers = {name: torch.optim.Adam(group, lr=config.lr, fused=True)  # fused: fastest on CPU (agents/ppo.py)
                           for name, group in self._groups.items()}
        self.n_updates = 0
        self.concurrent = ConcurrentLosses(config.loss_threads)

    def _build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise ConfigError("SACConfig.action_space", action_space, "a Box or a Discrete action space")
        space = box_action_space(action_space, "SACConfig.action_space")
        self.actor = SquashedGaussianActor(observation_space, space, network)
        self.critic = ContinuousCritic(observation_space, space, network, n_critics=2)
        self.scaler = ActionScaler(space)
        self.policy = SACPolicy(self.config, self.actor, self.scaler)

    def target_entropy(self) -> float:
        t = self.config.target_entropy
        return -float(self.actor.mu.out_features) if t is None else t  # -|A| (SB3 "auto")

    def alpha(self) -> torch.Tensor:
        """The current alpha, detached (the critic and actor losses treat it as a constant)."""
        if self.ent_coef is None:
            return torch.tensor(float(self.config.ent_coef), device=next(self.actor.parameters()).device)
        return self.ent_coef.log_alpha.detach().exp().squeeze(0)

    def critic_objective(self, batch: Any, alpha: torch.Tensor,
                         next_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(twin soft-Q loss, priorities, mean Q) against the target of eq. 3, a' drawn with ``next_noise``."""
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(batch.next_obs, next_noise)
            next_q = self.critic_target(batch.next_obs, next_a).amin(0)
            y = soft_q_target(batch.rewards, batch.discounts, batch.terminated, next_q, next_logp, alpha)
        q = self.critic(batch.obs, self.scaler.to_unit(batch.actions))
        c_loss, td_abs = twin_q_loss(q, y, batch.weights)
        return c_loss, td_abs, q.detach().mean()

    def actor_objective(self, batch: Any, alpha: torch.Tensor,
                        noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(actor loss, alpha's loss or None, entropy estimate), a ~ pi(.|s) drawn with ``noise``."""
        w = batch.weights
        a, logp = self.actor.sample(batch.obs, noise)
        a_loss = actor_loss(logp, self.critic(batch.obs, a).amin(0), alpha, w)
        e_loss = None if self.ent_coef is None else ent_coef_loss(
            self.ent_coef.log_alpha, logp, self.target_entropy(), w)
        return a_loss, e_loss, -logp.detach().mean()

    def _noise(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The reparameterization noise of a' ~ pi(.|s') and then of a ~ pi(.|s), drawn here in
        that order so that the objectives can run on two threads on the same random numbers."""
        return (self.actor.noise(batch.next_obs.shape[0], batch.next_obs.device),
                self.actor.noise(batch.obs.shape[0], batch.obs.device))

    def loss(self, batch: Any) -> SACLoss:
        alpha, (next_noise, noise) = self.alpha(), self._noise(batch)
        c_loss, td_abs, q_mean = self.critic_objective(batch, alpha, next_noise)
        a_loss, e_loss, entropy = self.actor_objective(batch, alpha, noise)
        return SACLoss(c_loss, a_loss, e_loss, td_abs, q_mean, entropy, alpha)

    def tasks(self, batch: Any, alpha: torch.Tensor, next_noise: torch.Tensor,
              noise: torch.Tensor) -> tuple[Callable[[], tuple], Callable[[], tuple]]:
        """The actor's and the critic's computations of one update, each returning (its objective's
        terms, its gradients); with ``loss_threads`` = 2 they run at once."""

        def critic() -> tuple[tuple, list[torch.Tensor]]:
            terms = self.critic_objective(batch, alpha, next_noise)
            return terms, grads_of(terms[0], self._groups["critic"])

        def actor() -> tuple[tuple, list[torch.Tensor]]:
            terms = self.actor_objective(batch, alpha, noise)
            grads = grads_of(terms[0], self._groups["actor"])
            return terms, grads + ([] if terms[1] is None else grads_of(terms[1], self._groups["ent_coef"]))

        return actor, critic

    def losses_and_grads(self, batch: Any) -> tuple[SACLoss, list[torch.Tensor]]:
        """``loss(batch)`` and the gradients of each loss w.r.t. its own parameters only (the actor
        loss's graph runs through the critic, whose gradients it must not touch), in
        ``parameters()`` order; the two objectives share no graph (``tasks``)."""
        alpha, (next_noise, noise) = self.alpha(), self._noise(batch)
        (a_terms, a_grads), (c_terms, c_grads) = self.concurrent.run(*self.tasks(batch, alpha, next_noise, noise))
        (a_loss, e_loss, entropy), (c_loss, td_abs, q_mean) = a_terms, c_terms
        n_actor = len(self._groups["actor"])
        return (SACLoss(c_loss, a_loss, e_loss, td_abs, q_mean, entropy, alpha),
                a_grads[:n_actor] + c_grads + a_grads[n_actor:])

    def compute_gradients(self, batch: Any) -> GradientResult:
        out, grads = self.losses_and_grads(batch)
        terms = {"critic_loss": out.critic_loss, "actor_loss": out.actor_loss, "q_mean": out.q_mean,
                 "entropy": out.entropy, "alpha": out.alpha}
        if out.ent_coef_loss is not None:
            terms["ent_coef_loss"] = out.ent_coef_loss
        info = dict(zip(terms, torch.stack([t.detach() for t in terms.values()]).tolist(), strict=True))
        return GradientResult(grads, info, priorities=out.td_abs.cpu().numpy())

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Step the actor, critic and alpha optimizers, then Polyak-average the target critics."""
        self._load_grads(grads, alias=True)  # Adam only reads .grad
        metrics = grad_norms(self._groups)
        step_adams(list(self.optimizers.values()))  # = opt.step() for each, in one fused call
        polyak_update(self._groups["critic"], self._target_params, self.config.tau)
        self.n_updates += 1
        return metrics
