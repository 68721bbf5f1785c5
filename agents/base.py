"""The contracts every algorithm meets; the engine (``scheme/``) reads only these.

Two sides (DESIGN: Contracts; model: RLlib's ``Learner.compute_gradients`` / ``apply_gradients``,
tmrl's ``ActorModule`` for the acting side):

* A :class:`Policy` acts: CWorkers hold one, built by ``AlgorithmConfig.build_policy`` with the
  acting weights only (no optimizer, no critic or target nets unless acting needs them). It
  returns the env action, the action to store and the per-step *extras* it declares in
  ``extras`` (PPO: log-prob and value; SAC/TD3/DDPG/DQN: none), from which storage derives its
  layout.
* An :class:`Algorithm` learns: GWorkers call ``compute_gradients`` on a batch; the Learner (or,
  decentralized, every replica) calls ``apply_gradients`` with the combined gradients, which
  steps *every* optimizer the algorithm has and updates its target networks, so N GWorkers equal
  one. Gradients travel as one array per tensor of ``parameters()``, in that fixed order.
  ``update_plan()`` says what the GWorker's loop (fill -> batch -> gradients) means for it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
import torch

from colonyrl.agents.tensors import leading_dim

__all__ = ["ExtraSpec", "ActOut", "EpochPlan", "SequencePlan", "ReplayPlan", "UpdatePlan", "GradientResult", "Batch",
           "num_samples", "Policy", "StatefulPolicy", "initial_state", "Algorithm", "EndsRounds", "AlgorithmConfig",
           "move_to", "cpu_policy"]


class ExtraSpec(NamedTuple):
    """One per-step extra a policy returns with each action (stored beside the transition)."""

    shape: tuple[int, ...]  # trailing shape per env, () for a scalar
    dtype: str  # numpy dtype name, e.g. "float32"
    #: True: one more row, for the observation after the last step (PPO's V(s_T) bootstrap),
    #: which ``Policy.bootstrap`` returns.
    bootstrap: bool = False


class ActOut(NamedTuple):
    """What ``Policy.act`` returns for a batch of N observations (all numpy)."""

    action: np.ndarray  # stored: int64 [N] (Discrete), float32 [N, *shape] (Box; raw sample for PPO)
    env_action: np.ndarray  # sent to env.step (clipped, squashed or offset as the policy needs)
    extras: dict[str, np.ndarray]  # name -> [N, *ExtraSpec.shape], one entry per declared extra
    #: A :class:`StatefulPolicy`'s state after this step, [N, *state_shape]; None for a stateless policy.
    state: np.ndarray | None = None


class EpochPlan(NamedTuple):
    """On-policy: every round is used up in ``num_epochs`` passes of minibatches, then dropped."""

    num_epochs: int
    minibatch_size: int


class SequencePlan(NamedTuple):
    """On-policy in time order: every round is used up in ``num_epochs`` passes of time-major
    batches ``[L, columns, ...]`` (obs ``[L+1, ...]``), each column one env's consecutive steps,
    never shuffled across time (only the columns are). For what needs the time axis: V-trace
    (IMPALA, APPO), recurrent policies. Model: RLlib's time-major IMPALA batches
    (``rollout_fragment_length``), Sample Factory's ``recurrence`` chunks."""

    num_epochs: int
    #: Env steps per batch (columns x L, padding included): the storage takes
    #: ``max(1, round(columns x L / minibatch_size))`` batches of whole columns per epoch.
    minibatch_size: int
    #: L: each rollout's columns cut into chunks of this many steps (the last one padded with
    #: invalid steps); None: L is the round's longest rollout, one column per env.
    sequence_length: int | None = None


class ReplayPlan(NamedTuple):
    """Off-policy: sample ``batch_size`` transitions from the memory once it holds
    ``learning_starts``; ``updates_per_step`` gradient steps per transition stored (the
    update-to-data ratio, a cap as tmrl's ``max_training_steps_per_env_step``: SB3's
    ``gradient_steps / train_freq``)."""

    batch_size: int
    learning_starts: int
    updates_per_step: float


UpdatePlan = EpochPlan | SequencePlan | ReplayPlan


class GradientResult(NamedTuple):
    """What ``compute_gradients`` returns (typed: no control signals inside ``info``)."""

    grads: list[torch.Tensor] | None  # aligned with parameters(); None = no update from this batch
    info: dict[str, float]  # loss terms and statistics, for metrics only
    #: New sampling priorities of the batch's transitions (prioritized replay: |TD error|), set by
    #: algorithms that compute them; the storage that sampled the batch uses them.
    priorities: np.ndarray | None = None
    #: The algorithm asks to end the round here (PPO's target_kl early stop).
    stop_round: bool = False


@runtime_checkable
class Batch(Protocol):
    """Any batch of B samples: its first field is the observations [B, ...]. A time-major batch
    (:class:`SequencePlan`) has obs ``[L+1, C, ...]`` and says how many samples it holds in an
    int field ``num_samples`` (its valid steps)."""

    obs: torch.Tensor


def num_samples(batch: Any) -> int:
    """The transitions a batch trains on, by which the gradients of several GWorkers are weighted:
    its ``num_samples`` field if it has one (time-major batches), else the length of ``obs``."""
    count = getattr(batch, "num_samples", None)
    return leading_dim(batch.obs) if count is None else int(count)


@runtime_checkable
class Policy(Protocol):
    """The acting side (a CWorker's, or the algorithm's own for evaluation and export)."""

    extras: Mapping[str, ExtraSpec]

    def act(self, obs: np.ndarray, deterministic: bool = False) -> ActOut: ...

    def bootstrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """The ``bootstrap=True`` extras for the observation after the last step ({} if none)."""
        ...

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy acting weights (``Algorithm.acting_weights()``) in place."""
        ...

    def update_parameter(self, name: str, value: Any) -> None:
        """Change an acting parameter (``AlgorithmConfig.acting_parameters``, e.g. DQN's epsilon)."""
        ...

    def export_module(self) -> torch.nn.Module:
        """obs [B, ...] -> deterministic env action [B, ...], for ``torch.export`` (a
        :class:`StatefulPolicy`'s: ``(obs, state) -> (env action, next state)``, with ``state_shape``)."""
        ...

    def state_dict(self) -> dict:
        """Acting state beyond the weights (e.g. exploration noise), for checkpoints."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class StatefulPolicy(Protocol):
    """Optional, beside :class:`Policy`: a policy with memory (recurrent). Its state is one float32
    array ``[N, *state_shape]`` for a batch of N envs, held by whoever acts (a CWorker across its
    rollouts and in its checkpoints, an evaluation), never by the policy: ``act`` and ``bootstrap``
    take it with ``episode_start`` ``[N]`` bool, True where ``obs`` is the first observation of an
    episode (the policy resets the state there first), and ``act`` returns the next state in
    ``ActOut.state``. Model: SB3-contrib's ``RecurrentPPO.predict(obs, state, episode_start)``."""

    def initial_state(self, num_envs: int) -> np.ndarray:
        """The state before the first step, ``[num_envs, *state_shape]``."""
        ...

    def act(self, obs: np.ndarray, deterministic: bool = False, *, state: np.ndarray,
            episode_start: np.ndarray) -> ActOut: ...

    def bootstrap(self, obs: np.ndarray, *, state: np.ndarray, episode_start: np.ndarray) -> dict[str, np.ndarray]: ...


def initial_state(policy: Any, num_envs: int) -> np.ndarray | None:
    """A :class:`StatefulPolicy`'s initial state for ``num_envs`` envs; None for a stateless policy
    (then ``act(obs, deterministic)`` is called as always)."""
    make = getattr(policy, "initial_state", None)
    return None if make is None else make(num_envs)


@runtime_checkable
class Algorithm(Protocol):
    """The learning side, on GWorkers and the Learner."""

    config: Any
    #: The acting view of this algorithm's own networks (shared, not a copy).
    policy: Policy

    def update_plan(self) -> UpdatePlan: ...

    def compute_gradients(self, batch: Any) -> GradientResult: ...

    def apply_gradients(self, grads: Sequence[torch.Tensor | np.ndarray]) -> dict[str, float]:
        """Step every optimizer with ``grads`` and update target networks; returns metrics."""
        ...

    def parameters(self) -> list[torch.Tensor]: ...

    def get_weights(self) -> dict[str, np.ndarray]:
        """Everything a replica needs to compute gradients (networks and target networks)."""
        ...

    def set_weights(self, arrays: Mapping[str, np.ndarray]) -> None: ...

    def acting_weights(self) -> dict[str, np.ndarray]:
        """What ``Policy.set_weights`` takes (a subset of ``get_weights``)."""
        ...

    def state_dict(self) -> dict:
        """Weights, optimizers, counters and config, deep-copied (tensors and primitives only)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def update_parameter(self, name: str, value: Any) -> None: ...


@runtime_checkable
class EndsRounds(Protocol):
    """Optional, beside :class:`Algorithm`: an algorithm that adapts its runtime parameters to
    what a round measured (PPO's adaptive KL coefficient). Once every GWorker has used up a round
    since the last call, the Learner calls ``end_round`` with the mean of each info key over the
    minibatches of those rounds (all GWorkers), and applies what it returns, parameter name ->
    new value, as ``Learner.update_algorithm_parameter`` does: validated, sent to every worker
    that uses it, acknowledged, recorded, and saved with the config in checkpoints."""

    def end_round(self, round_metrics: Mapping[str, float]) -> dict[str, Any]: ...


class AlgorithmConfig(Protocol):
    """An algorithm's config dataclass (one per algorithm; tyro subcommand ``name``)."""

    name: ClassVar[str]
    #: Runtime parameters acting uses: CWorkers get only these.
    acting_parameters: ClassVar[frozenset[str]]
    #: The storage config type this algorithm learns from (RolloutConfig, ReplayConfig).
    storage_kind: ClassVar[str]

    def build(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> Algorithm: ...

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space, network: Any) -> Policy: ...


def _modules_and_tensors(obj: Any) -> tuple[list[torch.nn.Module], list[tuple[Any, str]]]:
    """The modules an algorithm or policy holds (attributes, or values of dict/list attributes; its
    ``policy`` too) and its bare tensor attributes (``(owner, name)``, outside every module)."""
    modules: list[torch.nn.Module] = []
    tensors: list[tuple[Any, str]] = []
    owners = [obj] + ([obj.policy] if getattr(obj, "policy", None) is not None else [])
    for owner in owners:
        for name, value in vars(owner).items():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            modules.extend(v for v in items if isinstance(v, torch.nn.Module))
            if isinstance(value, torch.Tensor):
                tensors.append((owner, name))
    return modules, tensors


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Move an algorithm's (or a policy's) networks, target networks and bare tensors to ``device``
    in place, before its optimizers first step (their state is created lazily on the parameters'
    device). ``Module.to`` keeps every ``Parameter`` object (it swaps ``.data``), so the optimizers,
    built over them, and ``parameters()`` still hold them (PyTorch docs, ``nn.Module.to``). On the
    device the parameters already have this is a no-op. Returns ``obj``."""
    device = torch.device(device)
    modules, tensors = _modules_and_tensors(obj)
    for module in modules:
        module.to(device)
    for owner, name in tensors:
        value = getattr(owner, name)
        if isinstance(value, torch.nn.Parameter):
            value.data = value.data.to(device)
        else:
            setattr(owner, name, value.to(device))
    return obj


def cpu_policy(policy: Policy) -> Policy:
    """``policy`` if it acts on the CPU, else a CPU copy of it (evaluation and export: CWorkers'
    numpy in, numpy out, and ``policy.pt2`` a CPU program, whatever the Learner's device)."""
    modules, tensors = _modules_and_tensors(policy)
    on_device = [t for m in modules for t in (*m.parameters(), *m.buffers())] + [getattr(o, n) for o, n in tensors]
    if all(t.device.type == "cpu" for t in on_device):
        return policy
    return move_to(copy.deepcopy(policy), "cpu")
