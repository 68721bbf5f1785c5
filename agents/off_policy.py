"""What SAC, TD3, DDPG and DQN share: the replay batch they read, the TD target, Polyak averaging,
and the plumbing of the ``Algorithm`` / ``Policy`` contracts (weights, checkpoints, runtime
parameters) over a dict of named networks.

Each algorithm keeps its networks in ``self.nets`` (name -> module, target networks included) and
names the acting subset in ``acting``; weights travel as ``{"<net>.<tensor>": array}``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from colonyrl.agents.base import ActOut, ExtraSpec, ReplayPlan
from colonyrl.agents.tensors import as_tensor, copy_into, leading_dim, load_grads
from colonyrl.config import ConfigError, from_dict

__all__ = ["ReplayBatchLike", "td_target", "polyak_update", "as_tensor", "copy_into", "module_arrays",
           "load_module_arrays", "state_tensors", "grad_norms", "step_adams", "grads_of", "ConcurrentLosses", "ReplayConfigMixin", "OffPolicyAlgorithm", "OffPolicyPolicy"]


class ReplayBatchLike(Protocol):
    """The fields of ``storage.replay.ReplayBatch`` the algorithms read (torch tensors, B rows)."""

    obs: torch.Tensor  # [B, *obs]
    actions: torch.Tensor  # [B] int64 (Discrete) or [B, *act] float32 in env units (Box)
    rewards: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, *obs]
    terminated: torch.Tensor  # [B], 1.0 = terminal: no bootstrap (truncation is not termination)
    discounts: torch.Tensor  # [B], gamma**n for an n-step return
    weights: torch.Tensor  # [B], prioritized replay's importance weights (ones when uniform)
    indices: torch.Tensor  # [B] int64, where the samples live in the storage


def td_target(rewards: torch.Tensor, discounts: torch.Tensor, terminated: torch.Tensor,
              next_value: torch.Tensor) -> torch.Tensor:
    """y = r + gamma^n * (1 - terminated) * V(s') (Mnih et al. 2015, eq. 2; n-step as SB3's
    ``replay_data.discounts``)."""
    return rewards + discounts * (1.0 - terminated) * next_value


@torch.no_grad()
def polyak_update(params: Sequence[torch.Tensor], target_params: Sequence[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) * target + tau * online (Lillicrap et al. 2016); tau = 1 copies exactly
    (SB3's ``polyak_update`` does ``mul_(1 - tau)`` then ``add_(alpha=tau)``, also exact at 1)."""
    params, target_params = list(params), list(target_params)
    if tau == 1.0:
        torch._foreach_copy_(target_params, params)
    else:
        torch._foreach_mul_(target_params, 1.0 - tau)
        torch._foreach_add_(target_params, params, alpha=tau)


def state_tensors(nets: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``{"<net>.<tensor>": the live tensor}`` of every net's state dict (``keep_vars``: the
    parameters themselves). The modules' tensors are updated in place (``load_state_dict``,
    optimizer steps) and never replaced, so a caller may keep this for the weights it exports or
    loads every round; a pickle or deep copy of the owner carries it aliasing the copied modules."""
    return {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict(keep_vars=True).items()}


def module_arrays(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``{"<net>.<tensor>": numpy copy}`` of ``state_tensors(nets)``."""
    return {key: v.detach().cpu().numpy().copy() for key, v in state.items()}


def load_module_arrays(state: Mapping[str, torch.Tensor], arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` (as ``module_arrays`` names them) into the tensors of ``state_tensors(nets)``
    in place; the names must match."""
    if arrays.keys() != state.keys():
        raise KeyError(f"weight names differ: missing {sorted(set(state) - set(arrays))}, "
                       f"unexpected {sorted(set(arrays) - set(state))}")
    with torch.no_grad():
        for key, tensor in state.items():
            copy_into(tensor.detach(), arrays[key])


def step_adams(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """``opt.step()`` for every optimizer, fused Adams with the same settings in one kernel call.

    Why: ``Adam(fused=True).step`` is one ``torch._fused_adam_`` call over its parameters wrapped in
    ~0.1 ms of Python (hooks, state initialization, grouping by device); SAC steps three of them
    every env step. This issues the same kernel with the same arguments as
    ``torch/optim/adam.py`` ``_fused_adam`` does (steps incremented first), over all their
    parameters at once, so every weight and moment is bit for bit that of stepping each
    (tests/agents/test_off_policy.py). Anything else takes the ordinary path: an optimizer that is
    not a fused Adam, a parameter without state yet (the first step initializes it), amsgrad, a
    tensor learning rate, parameters on several devices or dtypes."""
    calls: dict[tuple, list[list[torch.Tensor]]] = {}
    for opt in optimizers:
        if type(opt) is not torch.optim.Adam:
            return _step_each(optimizers)
        for group in opt.param_groups:
            if not group["fused"] or group["amsgrad"] or torch.is_tensor(group["lr"]) or group["differentiable"]:
                return _step_each(optimizers)
            beta1, beta2 = group["betas"]
            key = (float(group["lr"]), float(beta1), float(beta2), float(group["weight_decay"]), float(group["eps"]),
                   bool(group["maximize"]), bool(group.get("decoupled_weight_decay", False)))
            lists = calls.setdefault(key, [[], [], [], [], []])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = opt.state.get(p)
                if not state:
                    return _step_each(optimizers)
                for out, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"]), strict=True):
                    out.append(t)
    tensors = [t for lists in calls.values() for t in lists[0]]
    if len({(t.device, t.dtype) for t in tensors}) > 1:
        return _step_each(optimizers)
    for (lr, beta1, beta2, weight_decay, eps, maximize, decoupled), (params, grads, m, v, steps) in calls.items():
        torch._foreach_add_(steps, 1)
        fused = torch._fused_adamw_ if decoupled else torch._fused_adam_
        fused(params, grads, m, v, [], steps, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
              weight_decay=weight_decay, eps=eps, maximize=maximize, grad_scale=None, found_inf=None)


def _step_each(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    for opt in optimizers:
        opt.step()


def grad_norms(groups: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, float]:
    """``{"<group>_grad_norm": the L2 norm of the group's gradients}`` for every group, in one
    multi-tensor norm and one device-to-host read (an update's metrics, at a tenth of the calls)."""
    norms = torch._foreach_norm([p.grad for params in groups.values() for p in params])
    totals, start = [], 0
    for params in groups.values():
        totals.append(torch.linalg.vector_norm(torch.stack(norms[start:start + len(params)])))
        start += len(params)
    return dict(zip((f"{name}_grad_norm" for name in groups), torch.stack(totals).tolist(), strict=True))


def grads_of(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params only: no ``.grad`` is touched, so e.g. the actor loss, whose graph runs
    through the critic, leaves the critic's gradients alone."""
    return list(torch.autograd.grad(loss, list(params), allow_unused=True, materialize_grads=True))


T = TypeVar("T")


class ConcurrentLosses:
    """Runs an update's independent loss-and-gradient computations on up to ``threads`` threads.

    Why: with one torch thread per process, SAC's critic objective (target, twin Q, backward) and
    its actor objective (reparameterized sample through the critic, backward) are two graphs that
    share only read-only weights; torch releases the GIL inside its kernels and autograd, so on a
    second core the two run at once. Each task must draw no random numbers (the caller draws them
    first, in a fixed order) and write no shared state: then the results are bit-identical to
    running them one after the other (``threads=1``), which is what happens in the same order.
    The pool is made on first use and is not part of a pickled or copied algorithm."""

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self._pool: ThreadPoolExecutor | None = None

    def run(self, first: Callable[[], T], *rest: Callable[[], T]) -> list[T]:
        """``[first(), *[task() for task in rest]]``; ``rest`` on the pool's threads while ``first``
        runs on the caller's, when ``threads`` > 1."""
        if self.threads == 1 or not rest:
            return [first(), *(task() for task in rest)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="colonyrl-loss")
        futures = [self._pool.submit(task) for task in rest]
        try:
            head = first()
        finally:  # never leave a task running on the weights after this returns or raises
            wait(futures)
        return [head, *(f.result() for f in futures)]  # a task's exception is raised here

    def __getstate__(self) -> dict[str, Any]:
        return {"threads": self.threads, "_pool": None}

    def __deepcopy__(self, memo: dict) -> ConcurrentLosses:
        return ConcurrentLosses(self.threads)


class ReplayConfigMixin:
    """For the algorithm configs: they learn from a replay memory (``ReplayConfig``)."""

    storage_kind: ClassVar[str] = "replay"
    batch_size: int
    learning_starts: int
    updates_per_step: float

    def update_plan(self) -> ReplayPlan:
        return ReplayPlan(self.batch_size, self.learning_starts, float(self.updates_per_step))


def uniform_box_actions(scaler: nn.Module, n: int) -> ActOut:
    """``n`` uniform actions in the Box bounds (stored action = env action), torch's global RNG."""
    action = scaler.to_env(torch.rand(n, scaler.low.numel()) * 2.0 - 1.0).numpy()
    return ActOut(action, action, {})


def uniform_discrete_actions(n_actions: int, start: int, n: int) -> ActOut:
    """``n`` uniform action indices (the env gets index + start), torch's global RNG."""
    action = torch.randint(n_actions, (n,))
    return ActOut(action.numpy(), (action + start).numpy(), {})


class OffPolicyPolicy:
    """The acting side over ``nets`` (e.g. ``{"actor": actor}``); subclasses define ``policy_act``,
    ``random_act`` and ``export_module``. Acting parameters (DQN's epsilon, TD3's action noise)
    live in ``config``.

    Warm-up: the first ``config.learning_starts`` env steps of each policy (each CWorker) take
    uniform random actions, as SB3's off-policy ``_sample_action`` does before ``learning_starts``
    (RL Zoo's TD3/DDPG presets rely on it: 10k random steps). The count is acting state: it is
    in ``state_dict`` so a resumed CWorker does not explore at random again. With M CWorkers per
    memory, M x learning_starts random transitions are collected (SB3 has one env per memory)."""

    extras: ClassVar[dict[str, ExtraSpec]] = {}  # nothing beyond the transition is stored

    def __init__(self, config: Any, nets: Mapping[str, nn.Module]) -> None:
        self.config, self.nets = config, dict(nets)
        self._state = state_tensors(self.nets)  # set_weights loads into these every round
        self.warmup_left = int(config.learning_starts)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        if not deterministic and self.warmup_left > 0:
            self.warmup_left -= leading_dim(obs)
            return self.random_act(leading_dim(obs))
        return self.policy_act(obs, deterministic)

    def policy_act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut:
        raise NotImplementedError

    def random_act(self, n: int) -> ActOut:
        """``n`` uniform random actions (torch's global RNG: CWorkers seed it per worker)."""
        raise NotImplementedError

    def bootstrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        load_module_arrays(self._state, arrays)

    def update_parameter(self, name: str, value: Any) -> None:
        acting = type(self.config).acting_parameters
        if name not in acting:
            raise ConfigError(f"{type(self.config).__name__}.<acting parameter>", name,
                              "one of " + ", ".join(repr(a) for a in sorted(acting)) if acting else "none")
        self.config = self.config.check_parameter(name, value)

    def state_dict(self) -> dict:
        """The acting parameters' current values (they change at runtime, e.g. epsilon schedules)
        and the warm-up steps left."""
        return {"parameters": {name: getattr(self.config, name) for name in sorted(type(self.config).acting_parameters)},
                "warmup_left": self.warmup_left}

    def load_state_dict(self, state: dict) -> None:
        self.config = self.config.replace(**state["parameters"])
        self.warmup_left = int(state["warmup_left"])


class OffPolicyAlgorithm:
    """Contract plumbing; subclasses set ``config``, ``nets``, ``acting``, ``optimizers``,
    ``_params`` and ``policy`` and define ``compute_gradients`` / ``apply_gradients``."""

    config: Any
    policy: OffPolicyPolicy
    nets: dict[str, nn.Module]  # every network a replica needs, target networks included
    acting: tuple[str, ...]  # the names of the nets the policy acts with
    optimizers: dict[str, torch.optim.Optimizer]
    _params: list[torch.Tensor]  # parameters() order: the order gradients travel in
    n_updates: int = 0  # apply_gradients calls so far (TD3's delay, DQN's target interval)

    def update_plan(self) -> ReplayPlan:
        return self.config.update_plan()

    def parameters(self) -> list[torch.Tensor]:
        return list(self._params)

    def _load_grads(self, grads: Sequence[torch.Tensor | np.ndarray], alias: bool = False) -> None:
        load_grads(self._params, grads, alias)

    # -- weights, checkpoints, runtime hyperparameters ----------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Every net (targets included) and the update counter, so a replica that joins late
        (decentralized) keeps TD3's delay and DQN's target interval in step with the others."""
        return {**module_arrays(state_tensors(self.nets)), "n_updates": np.array(self.n_updates, np.int64)}

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy ``arrays`` in place (read-only arrays are fine; optimizers untouched)."""
        arrays = dict(arrays)
        if "n_updates" not in arrays:
            raise KeyError("weight names differ: missing ['n_updates']")
        self.n_updates = int(arrays.pop("n_updates"))
        load_module_arrays(state_tensors(self.nets), arrays)

    def acting_weights(self) -> dict[str, np.ndarray]:
        """The acting nets' arrays, exported every round (their tensors gathered on the first)."""
        if getattr(self, "_acting_state", None) is None:  # subclasses set self.nets in their own __init__
            self._acting_state = state_tensors({name: self.nets[name] for name in self.acting})
        return module_arrays(self._acting_state)

    def state_dict(self) -> dict:
        """A deep copy (torch's state dicts alias the live tensors)."""
        return copy.deepcopy({"nets": {k: v.state_dict() for k, v in self.nets.items()},
                              "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                              "n_updates": self.n_updates, "config": dataclasses.asdict(self.config),
                              "policy": self.policy.state_dict()})

    def load_state_dict(self, state: dict) -> None:
        self.config = from_dict(type(self.config), state["config"])
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.n_updates = int(state["n_updates"])
        self.policy.load_state_dict(state["policy"])

    def update_parameter(self, name: str, value: Any) -> None:
        """Change a runtime hyperparameter; ConfigError (nothing changed) if the name or value is bad.
        ``lr`` applies to every optimizer; acting parameters go to ``self.policy`` too."""
        self.config = self.config.check_parameter(name, value)
        if name == "lr":
            for opt in self.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = float(value)
        if name in type(self.config).acting_parameters:
            self.policy.update_parameter(name, value)
