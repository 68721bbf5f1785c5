"""How many workers, where they run, and how they coordinate: :class:`SchemeConfig` (and the Ray
resources of a worker kind, :class:`Resources`). ``scheme/scheme.py :: connect`` builds what it says.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from colonyrl.config import Config, ConfigError, param
from colonyrl.scheme.devices import check_device, is_cuda

__all__ = ["Resources", "SchemeConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Resources(Config):
    """What one worker of a kind asks Ray for (placement on a cluster follows these)."""

    num_cpus: float = param(1.0, ge=0.0)
    num_gpus: float = param(0.0, ge=0.0)
    #: Custom Ray resources, e.g. {"collector_node": 1} to pin CWorkers to labelled nodes.
    custom: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchemeConfig(Config):
    """How many workers, where they run, and how they coordinate (DESIGN: Coordination)."""

    num_grad_workers: int = param(1, ge=1, le=1024)
    #: CWorkers per GWorker.
    num_col_workers: int = param(1, ge=1, le=1024)
    collection: Literal["sync", "async"] = "sync"
    gradients: Literal["sync", "async"] = "sync"
    update: Literal["central", "decentralized"] = "central"
    #: lz4 for rollouts: "auto" = only when the receiver is on another node and the sampled ratio pays.
    compress: Literal["auto"] | bool = "auto"
    #: Ray address of an existing cluster; None starts a local instance when workers are remote.
    address: str | None = None
    #: Run even a single GWorker / CWorker as Ray actors (default: one of a kind stays in-process).
    force_remote: bool = False
    #: Run the CWorkers as Ray actors even when each GWorker has only one, the GWorkers staying where
    #: ``force_remote`` and their count put them. With one GWorker it runs in the driver while its one
    #: CWorker collects in a process of its own: with async collection the two overlap on two cores.
    remote_cworkers: bool = False
    grad_worker_resources: Resources = dataclasses.field(default_factory=Resources)
    col_worker_resources: Resources = dataclasses.field(default_factory=Resources)
    #: Sync collection: a round ends once this fraction of a GWorker's CWorkers delivered; the
    #: others are told to stop (straggler preemption).
    fraction_workers: float = param(1.0, gt=0.0, le=1.0)
    #: A CWorker told to stop stops only once it has this fraction of its steps.
    fraction_samples: float = param(1.0, gt=0.0, le=1.0)
    #: Async collection drops (and counts, as ``dropped_rollouts`` and ``dropped_env_steps``)
    #: rollouts older than this many policy versions. One version = one applied update (the
    #: ``policy_lag`` metric is in the same unit); async PPO's lag is about one round's updates
    #: (epochs x minibatches, e.g. 24 for the CartPole preset), so K must be well above that.
    #: The default is Sample Factory's (``max_policy_lag=1000`` SGD steps); None: no limit.
    max_policy_lag: int | None = param(1000, ge=0)
    #: Non-finite updates are skipped; this many in a row stop training with an error.
    max_nonfinite_in_a_row: int = param(10, ge=1)
    #: Longest wait for any worker call before it is reported by name.
    worker_timeout_s: float = param(300.0, gt=0.0)
    object_store_mb: int | None = param(None, ge=80)
    #: Torch threads of the Learner's process, where the optimizers step and an in-process
    #: GWorker computes its gradients. One by default: Ray workers on the same cores each use
    #: one, and oversubscribing 2 cores made training 3-7x slower. A scheme that runs wholly
    #: in-process owns the machine and may use more (matmul-bound updates, e.g. SAC's 256-256
    #: nets, ran 1.3x faster on 2 threads here). Remote workers use ``max(floor(num_cpus), 1)``.
    learner_threads: int = param(1, ge=1, le=1024)
    #: Devices (scheme/devices.py): "cpu", "cuda", "cuda:N" or "auto" (cuda if the worker's process
    #: sees a GPU, else cpu). The Learner's, where every optimizer steps.
    learner_device: str = "auto"
    #: GWorkers' device. The one in-process GWorker shares the Learner's algorithm and so its device
    #: ("auto" = the Learner's; another one is a ConfigError). On Ray it is resolved in each actor,
    #: which sees only the GPUs it asked for: "cuda" makes ``grad_worker_resources.num_gpus`` 1 where
    #: it is 0 (set e.g. 0.5 to share a GPU); "auto" takes a GPU only with num_gpus > 0.
    grad_worker_device: str = "auto"
    #: CWorkers' device: "cpu" only (the policies act on numpy observations on the CPU).
    col_worker_device: str = "cpu"

    def _check(self) -> None:
        if self.update == "decentralized" and self.gradients == "async":
            raise ConfigError("SchemeConfig.gradients", self.gradients,
                              "'sync' when update='decentralized' (every GWorker joins every all-reduce)")
        for name in ("learner_device", "grad_worker_device", "col_worker_device"):
            check_device(f"SchemeConfig.{name}", getattr(self, name))
        if self.col_worker_device != "cpu":
            raise ConfigError("SchemeConfig.col_worker_device", self.col_worker_device,
                              "'cpu' (CWorkers act on the CPU: acting on a GPU is not supported)")

    @property
    def remote_grad_workers(self) -> bool:
        return self.force_remote or self.num_grad_workers > 1

    @property
    def remote_col_workers(self) -> bool:
        return self.force_remote or self.remote_cworkers or self.num_col_workers > 1

    @property
    def decentralized(self) -> bool:
        """All-reduce among GWorkers; with one GWorker in-process this is the central update."""
        return self.update == "decentralized" and self.remote_grad_workers

    @property
    def uses_ray(self) -> bool:
        return self.remote_grad_workers or self.remote_col_workers

    @property
    def grad_worker_gpus(self) -> float:
        """``num_gpus`` of each Ray GWorker: the resources' value, at least 1 for a "cuda" device."""
        gpus = self.grad_worker_resources.num_gpus
        return gpus if gpus > 0 or not is_cuda(self.grad_worker_device) else 1.0

    @property
    def num_gpus_needed(self) -> float:
        gpus = self.num_grad_workers * self.grad_worker_gpus if self.remote_grad_workers else 0.0
        if self.remote_col_workers:
            gpus += self.num_grad_workers * self.num_col_workers * self.col_worker_resources.num_gpus
        return gpus

    @property
    def num_cpus_needed(self) -> float:
        cpus = 0.0
        if self.remote_grad_workers:
            cpus += self.num_grad_workers * self.grad_worker_resources.num_cpus
        if self.remote_col_workers:
            cpus += self.num_grad_workers * self.num_col_workers * self.col_worker_resources.num_cpus
        return cpus
