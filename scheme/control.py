"""The workers' control plane: what a CWorker and a GWorker answer besides their data path (the
hops of scheme/__init__.py): runtime changes, checkpoint state, introspection for tests and health
checks. Mixins of :class:`~colonyrl.scheme.c_worker.CWorker` and
:class:`~colonyrl.scheme.g_worker.GWorker`, which own the attributes used here; the Ray wrapper
(scheme/remote.py) exposes these methods as it does the data path's.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from colonyrl.envs.snapshot import restore, snapshot
from colonyrl.scheme.devices import to_cpu
from colonyrl.scheme.packets import Weights
from colonyrl.storage.layout import tree_map
from colonyrl.storage.replay import MemoryPart

__all__ = ["CWorkerControl", "GWorkerControl", "node_id"]


def node_id() -> str:
    """The Ray node this process runs on (only called when running as an actor)."""
    from colonyrl.scheme import remote

    return remote.node_id()


class _Introspection:
    """Health checks and placement: the same for both kinds of worker."""

    name: str

    def ping(self) -> str:
        return self.name

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on (as an actor)."""
        return node_id()


class CWorkerControl(_Introspection):
    """Runtime changes (between rollouts), checkpoint state and inspection of a CWorker."""

    # -- runtime changes (issue 3): applied between rollouts, acknowledged by name -------------
    def update_parameter(self, kind: str, name: str, value: object) -> str:
        self.components = self.components.with_parameter(kind, name, value)
        {"algo": self.policy, "storage": self.storage}[kind].update_parameter(name, value)
        return self.name

    def replace_component(self, kind: str, config: object) -> str:
        self.components = self.components.with_component(kind, config)
        if kind == "env":  # a curriculum step: the same spaces, a new env (same seeds per sub-env)
            self.env.close()
            self.env, self.obs = self.components.env.make(seed=self.components.seed, worker_index=self.index)
            self.num_envs = self.env.num_envs
            self.prev_done = np.zeros(self.num_envs, dtype=bool)
            self._reset_policy_state()  # new episodes everywhere
            self.storage = self._build_storage()
            if self.normalizer is not None:  # the shared statistics go on; the returns start again
                old, self.normalizer = self.normalizer, self._build_normalizer()
                assert self.normalizer is not None
                self.normalizer.statistics, self.normalizer.delta = old.statistics, old.delta
        elif kind == "storage":
            self.storage = self._build_storage()
        return self.name

    # -- checkpoints: taken between rollouts (the storage is empty then) ----------------------
    def get_state(self) -> dict[str, Any]:
        return {"name": self.name, "obs": tree_map(lambda a: torch.from_numpy(np.array(a)), self.obs),  # Dict: per key
                "prev_done": torch.from_numpy(self.prev_done.copy()), "env": snapshot(self.env),
                "torch_rng": torch.get_rng_state(),
                "policy": self.policy.state_dict(),
                # a stateful policy's state (e.g. an LSTM's h and c), carried across rollouts
                "policy_state": None if self.policy_state is None else torch.from_numpy(np.array(self.policy_state)),
                "episode_start": torch.from_numpy(self.episode_start.copy()),
                "storage": None if self.storage.on_policy else self.storage.state_dict(),
                # the statistics it normalizes with, its unreported delta, each sub-env's return
                "normalizer": None if self.normalizer is None else self.normalizer.state_dict()}

    def set_state(self, state: dict[str, Any]) -> str:
        report = restore(self.env, state["env"])
        if not report.exact:  # e.g. MuJoCo: its simulator state is not in Python attributes
            missed = {layer.type: layer.missed for layer in report.layers if layer.missed}
            warnings.warn(f"{self.name}: the env resumes approximately, not saved: {missed}", stacklevel=2)
        self.obs = tree_map(lambda t: t.numpy().copy(), state["obs"])
        self.prev_done = state["prev_done"].numpy().copy()
        torch.set_rng_state(state["torch_rng"])  # the action sampling stream
        self.policy.load_state_dict(state.get("policy", {}))  # exploration state (noise, ...)
        self._reset_policy_state()
        if state.get("policy_state") is not None and self.policy_state is not None:
            self.policy_state = state["policy_state"].numpy().copy()
        if state.get("episode_start") is not None:
            self.episode_start = state["episode_start"].numpy().copy()
        if state.get("storage") is not None:  # a replay memory's CWorker side: its step counter
            self.storage.load_state_dict(state["storage"])
        if state.get("normalizer") is not None and self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        return self.name

    def inspect(self) -> dict[str, object]:
        """What this worker runs with now (tests query every worker with it)."""
        return {"name": self.name, "components": self.components, "env_id": self.components.env.id,
                "num_envs": self.num_envs, "algo": self.components.algo, "storage": self.storage.config,
                "has_optimizer": hasattr(self.policy, "optimizer"),
                "normalizer": None if self.normalizer is None else self.normalizer.statistics}


class GWorkerControl(_Introspection):
    """Runtime changes, checkpoint state, the decentralized all-reduce group's membership and
    inspection of a GWorker."""

    # -- decentralized update ------------------------------------------------------------------------
    def free_address(self) -> str:
        from colonyrl.scheme.collective import free_address

        return free_address()

    def init_allreduce(self, address: str, rank: int, world_size: int, timeout_s: float) -> str:
        from colonyrl.scheme.collective import AllReduce

        # the parameters' device picks the backend (gloo for CPU, nccl for CUDA) and the buffer's place
        self.allreduce = AllReduce(address, rank, world_size, timeout_s, self.algo.parameters()[0].device)
        return self.name

    def leave_allreduce(self) -> str:
        """Leave the group (before a new one is formed without a lost GWorker)."""
        if self.allreduce is not None:
            self.allreduce.close()
            self.allreduce = None
        return self.name

    def algo_state(self) -> dict[str, Any]:
        """Weights and optimizer state, for a re-created GWorker to copy (decentralized)."""
        return {"version": self.version, "algo": to_cpu(self.algo.state_dict())}

    def set_algo_state(self, state: dict[str, Any]) -> str:
        self.algo.load_state_dict(state["algo"])
        self.version = state["version"]
        return self.name

    # -- runtime changes (issue 3): take effect at the next minibatch / collection round ------------
    def update_parameter(self, kind: str, name: str, value: object) -> list[str]:
        """Apply here, and in every CWorker if collection uses it; return the names of the workers
        that applied it. CWorkers re-created later are built with it either way."""
        self.components = self.cworkers.components = self.components.with_parameter(kind, name, value)
        if kind == "storage":
            self.storage.update_parameter(name, value)
        elif self.owns_algo:
            self.algo.update_parameter(name, value)
        if not self.components.used_in_collection(kind, name):
            return [self.name]
        return [self.name, *self.cworkers.update_parameter(kind, name, value)]

    def replace_component(self, kind: str, config: object) -> list[str]:
        self.components = self.cworkers.components = self.components.with_component(kind, config)
        if kind == "storage":  # the batch in use keeps its data; the next round uses the new storage
            # (a new replay memory starts empty: replacing the memory drops its contents, by design)
            self.storage = self._build_storage()
        return [self.name, *self.cworkers.replace_component(kind, config)]

    # -- checkpoints: taken between collection rounds (no minibatch iterator in flight) ----------------
    def get_state(self) -> dict[str, Any]:
        """Everything this GWorker and its CWorkers need to continue exactly (not the weights and
        optimizer: the Learner holds those, or, decentralized, ``algo`` below)."""
        if not self.at_round_boundary():
            raise RuntimeError(f"{self.name}: state is taken between collection rounds only")
        return {"name": self.name, "version": self.version, "generator": self.generator.get_state(),
                "algo": to_cpu(self.algo.state_dict()) if self.owns_algo else None,
                # on-policy storage is empty between rounds; off-policy storage (replay) is saved
                "storage": None if self.storage.on_policy else self.storage.state_dict(),
                "cworkers": self.cworkers.get_states()}

    def set_state(self, state: dict[str, Any]) -> str:
        self.version = state["version"]
        self.generator.set_state(state["generator"])
        if self.owns_algo and state["algo"] is not None:
            self.algo.load_state_dict(state["algo"])
        if state.get("storage") is not None:
            self.storage.load_state_dict(state["storage"])
        saved = {s["name"]: s for s in state["cworkers"]}
        self.cworkers.set_states([saved[n] for n in self.cworkers.names])
        return self.name

    def seed_storage(self, part: MemoryPart) -> str:
        """Start the replay memory with ``part`` of the saved memories (a resume onto other worker
        counts: ``ReplayMemory.redistribute``)."""
        self.storage.seed(part)
        return self.name

    def inspect(self) -> dict[str, Any]:
        return {"name": self.name, "components": self.components, "algo": self.algo.config,
                "storage": self.storage.config,
                "optimizer_lrs": [g["lr"] for opt in _optimizers(self.algo) for g in opt.param_groups],
                "device": str(self.device), "allreduce_backend": None if self.allreduce is None else self.allreduce.backend,
                "cworkers": self.cworkers.inspect()}

    def cworker_nodes(self) -> list[str]:
        return self.cworkers.nodes()

    def get_weights(self) -> Weights:
        return Weights(self.version, self.algo.get_weights())


def _optimizers(algo: Any) -> list[torch.optim.Optimizer]:
    """Every optimizer an algorithm has (attributes that are optimizers, or dicts of them), for inspection."""
    found = []
    for value in vars(algo).values():
        found.extend(v for v in (value.values() if isinstance(value, dict) else [value])
                     if isinstance(v, torch.optim.Optimizer))
    return found
