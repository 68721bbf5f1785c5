"""GWorker: turns its CWorkers' rollouts into gradients, one batch per call.

The loop is the same for every algorithm: fill the storage with a round of rollouts -> take the
batches the algorithm's update plan gives (on-policy: epochs x minibatches over the round;
off-policy: batches sampled from the replay memory, as many as the update-to-data ratio allows,
none before ``learning_starts``) -> ``algo.compute_gradients`` on each. A round is collected and
prepared either by ``start_round``, when the Learner starts it on every GWorker together and
merges their advantage statistics, or inside ``step`` when the batches are used up (async
gradients). The Learner applies the gradients; the GWorker never steps an optimizer in central
mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from colonyrl.agents.base import move_to
from colonyrl.agents.base import num_samples as batch_num_samples
from colonyrl.envs.normalization import Statistics
from colonyrl.scheme.components import Components
from colonyrl.scheme.control import GWorkerControl
from colonyrl.scheme.devices import resolve_device, to_device
from colonyrl.scheme.packets import EpisodeStats, GradientPacket, UpdateResult, Weights
from colonyrl.scheme.runtime import init_process
from colonyrl.scheme.strategies import CollectionStrategy, SyncCollection, all_finite
from colonyrl.scheme.wire import Packed, unpack
from colonyrl.scheme.worker_set import CWorkerSet, CWorkerSpec
from colonyrl.storage.rollout import Moments

__all__ = ["GWorker"]


class GWorker(GWorkerControl):
    """One gradient worker.

    Args:
        components: what to build (shared with its CWorkers).
        index: GWorker index; ``name`` is ``f"g{index}"``.
        cworkers: how to build its CWorkerSet.
        algo: the Learner's algorithm object when this GWorker runs in the Learner's process
            (then weights never need copying); None builds a replica (remote GWorkers).
        numpy_grads: return gradients as numpy (for the wire) instead of torch tensors.
        device: where a replica's networks live ("cpu", "cuda", "cuda:N", "auto"), resolved here,
            in the worker's own process (a ConfigError if it has no such GPU); a shared ``algo``
            stays where the Learner put it. Batches go there for the gradients; what leaves this
            worker (gradients, weights, state) goes to the CPU first.
    """

    def __init__(
        self,
        components: Components,
        index: int,
        cworkers: CWorkerSpec,
        algo: Any = None,
        numpy_grads: bool = False,
        collection: CollectionStrategy | None = None,
        torch_threads: int = 1,
        device: str = "auto",
    ) -> None:
        init_process(torch_threads)
        self.name, self.index = f"g{index}", index
        own_device = resolve_device(device, "SchemeConfig.grad_worker_device") if algo is None else None
        self.components = components
        spaces = components.spaces()
        # In the Learner's process the GWorker shares the Learner's algorithm: the Learner changes it.
        self.owns_algo = algo is None
        if algo is None:
            torch.manual_seed(components.seed)  # same initial weights as the Learner's (built on the CPU)
            algo = move_to(components.build_algorithm(spaces), own_device)
        self.algo = algo
        self.device = algo.parameters()[0].device
        self.spaces = spaces
        self.storage = self._build_storage()
        self.cworkers = CWorkerSet(cworkers, components)
        self.collection = collection or SyncCollection()
        self.numpy_grads = numpy_grads
        self.version = -1
        self.generator = torch.Generator().manual_seed(components.seed * 1000 + index)
        self._batches: Iterator[Any] = iter(())
        self._next_batch: Any = None  # the next minibatch; None at a round boundary
        self._prepared = False  # a round collected by start_round, minibatches not yet drawn
        # What the round(s) collected since the last packet report with the next packet.
        self._round_env_steps, self._round_episodes, self._round_info = 0, [], {}
        self._data_version = 0.0
        # Shared normalization (envs/normalization.py): the Learner's statistics, handed to the
        # CWorkers with the weights, and the merged deltas of the rollouts since the last packet.
        self.normalizer: Statistics | None = None
        self._round_normalizer: Statistics | None = None
        self.allreduce: Any = None  # set by init_allreduce in decentralized mode

    def _build_storage(self) -> Any:
        return self.components.storage.build(self.spaces.observation, self.spaces.action,
                                             self.components.env.num_envs, self.algo.policy.extras)

    def set_weights(self, weights: Weights) -> None:
        if weights.normalizer is not None:
            self.normalizer = weights.normalizer
        if weights.arrays is not None and weights.version != self.version:
            self.algo.set_weights(weights.arrays)
            self.version = weights.version

    def start_round(self, version: int, weights: Weights | None = None) -> Moments:
        """Collect a round with the weights of ``version`` and prepare it (GAE); return the moments
        of its advantages, which the Learner merges over every GWorker that started the round and
        hands back with the next :meth:`step`. Minibatches are drawn only from then on."""
        if weights is not None:
            self.set_weights(weights)
        self.version = version
        self._collect()
        return self.storage.advantage_moments

    def step(self, version: int, weights: Weights | None = None, collect: bool = True,
             round_moments: Moments | None = None) -> GradientPacket:
        """Gradients of the next minibatch, computed with the weights of ``version``.

        At a round boundary a new round is collected first (its own advantage statistics) unless
        ``collect`` is False: then the GWorker idles (no gradients; decentralized, it still joins
        the all-reduce with zero samples) so the Learner can end a round everywhere.
        """
        if weights is not None:
            self.set_weights(weights)
        self.version = version
        if self._prepared:  # a round from start_round: its minibatches use the union's statistics
            self._start_batches(round_moments)
        if collect and self._next_batch is None:  # the round is over: collect the next one
            # Once per step: a replay memory short of learning_starts gives no batch yet, and the
            # packet then reports the env steps without gradients (the Learner's budget counts them).
            self._collect()
            self._start_batches(None)
        env_steps, episodes, info = self._round_env_steps, EpisodeStats.concat(self._round_episodes), self._round_info
        self._round_env_steps, self._round_episodes, self._round_info = 0, [], {}
        normalizer, self._round_normalizer = self._round_normalizer, None
        batch = self._next_batch
        grads, num_samples = None, 0
        if batch is not None:
            start = time.perf_counter()
            # storage's batch stays on the CPU (its indices, for priorities); the algorithm gets a copy
            # on its device (uint8 images as uint8: the network scales them there)
            on_device = batch if self.device.type == "cpu" else to_device(batch, self.device)
            result = self.algo.compute_gradients(on_device)
            self.storage.after_gradients(batch, result)  # e.g. new priorities (prioritized replay)
            # Prefetch (after the priority update: the next sample sees it), so the end of a round
            # is known as soon as its last batch is taken.
            self._next_batch = None if result.stop_round else next(self._batches, None)  # type: ignore[arg-type]
            grads = result.grads
            info.update(result.info)
            info["grad_time_s"] = time.perf_counter() - start
            num_samples = batch_num_samples(batch)  # time-major batches: their valid steps
        update = None
        if self.allreduce is not None:  # decentralized: average with the others, apply here
            update, grads = self._apply_allreduced(grads, num_samples, info), None
        elif grads is not None and self.numpy_grads:
            grads = [g.detach().cpu().numpy() for g in grads]  # a CPU tensor's .cpu() is itself: no copy
        return GradientPacket(self.version, self._data_version, self.name, grads, num_samples,
                              env_steps, episodes, info, round_done=self.at_round_boundary(), update=update,
                              normalizer=normalizer)

    def _apply_allreduced(self, grads: list[Any] | None, num_samples: int, info: dict[str, float]) -> UpdateResult:
        """Average with every other GWorker and apply the average here (nothing for the Learner)."""
        start = time.perf_counter()
        averaged = self.allreduce.average(grads, num_samples if grads is not None else 0, self.algo.parameters())
        info["allreduce_time_s"] = time.perf_counter() - start
        if averaged is None:
            return UpdateResult.nothing()
        if not all_finite(averaged):  # every rank has the same average: all skip it alike
            return UpdateResult(False, nonfinite=True)
        return UpdateResult(True, metrics=self.algo.apply_gradients(averaged))

    def _collect(self) -> None:
        """One collection round into the storage, GAE included; what it reports (env steps,
        episodes, timings) goes out with the next packet."""
        start = time.perf_counter()
        weights = Weights(self.version, self.algo.acting_weights(), self.normalizer)
        rollouts = self.collection.collect(self.cworkers, weights)
        collect_wall = time.perf_counter() - start
        self.storage.start_round()  # on-policy: the last round is dropped; a replay memory keeps it
        raw = wire = 0.0
        for r in rollouts:
            self.storage.add_data(unpack(r.data) if isinstance(r.data, Packed) else r.data, r.worker)
            raw += r.info.get("raw_bytes", 0.0)
            wire += r.info.get("wire_bytes", 0.0)
        info = self.storage.before_gradients()
        self._prepared = True
        self._data_version = float(np.mean([r.version for r in rollouts]))
        collection = self.collection.stats()
        info.update(
            collect_time_s=collect_wall,
            prepare_time_s=time.perf_counter() - start - collect_wall,
            rollout_bytes_raw=raw,
            rollout_bytes_wire=wire,
            worker_collect_fps=float(np.mean([r.info["collect_fps"] for r in rollouts])),
            # per worker, so a slow CWorker shows up by name in MLflow
            **{f"collect_fps/{r.worker}": r.info["collect_fps"] for r in rollouts},
            **{f"policy_lag/{r.worker}": self.version - r.version for r in rollouts},
            **_per_worker_bytes(rollouts),
            **collection,
            **self.cworkers.stats(),
        )
        # Rollouts dropped as too old were still stepped in the env: they count as env steps.
        self._round_env_steps += sum(r.env_steps for r in rollouts) + int(collection.get("dropped_env_steps", 0))
        self._round_episodes.extend(r.episodes for r in rollouts)
        self._round_normalizer = Statistics.combine(self._round_normalizer, *(r.normalizer for r in rollouts))
        self._round_info.update(info)

    def _start_batches(self, moments: Moments | None) -> None:
        self._batches = self.storage.batches(self.algo.update_plan(), self.generator, moments)
        self._next_batch = next(self._batches, None)
        self._prepared = False

    def at_round_boundary(self) -> bool:
        """No minibatch iterator in flight: a new round is next (checkpoints are taken only then).
        Runtime changes, checkpoint state and inspection: scheme/control.py."""
        return self._next_batch is None and not self._prepared

    def close(self) -> None:
        self.collection.close(self.cworkers)
        self.cworkers.close()
        if self.allreduce is not None:
            self.allreduce.close()


def _per_worker_bytes(rollouts: list[Any]) -> dict[str, float]:
    """Rollout bytes by CWorker, raw and on the wire (for the topology table, launch/topology.py)."""
    out: dict[str, float] = {}
    for r in rollouts:
        for kind in ("raw", "wire"):
            key = f"rollout_bytes_{kind}/{r.worker}"
            out[key] = out.get(key, 0.0) + r.info.get(f"{kind}_bytes", 0.0)
    return out
