"""Learner: drives training. ``step()`` reads as three verbs: gather, apply, broadcast.

The update work (PyTorchRL's separate UWorker) is folded in here (DESIGN: Coordination). The
Learner owns the master copy of the algorithm (optimizer included) and the counters that a
checkpoint restores: policy version, env steps, updates, episodes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from colonyrl.agents.base import EndsRounds
from colonyrl.envs.normalization import Statistics
from colonyrl.scheme.changes import Change, RuntimeChanges
from colonyrl.scheme.components import Components
from colonyrl.scheme.devices import to_cpu
from colonyrl.scheme.metrics import COUNT_KEYS, FIGURE_PREFIXES, TIME_KEYS, Metrics
from colonyrl.scheme.packets import GradientPacket, Weights
from colonyrl.scheme.strategies import GradientStrategy, UpdateStrategy
from colonyrl.scheme.worker_set import GWorkerSet

__all__ = ["Learner", "Metrics", "Change", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """Too many non-finite updates in a row: training stops (the weights are the last good ones)."""


class Learner(RuntimeChanges):
    """Gathers gradients from the GWorkerSet, applies them, broadcasts versioned weights."""

    def __init__(self, algo: Any, gworkers: GWorkerSet, gradients: GradientStrategy, update: UpdateStrategy,
                 remote_weights: bool, components: Components, worker_names: Sequence[str],
                 max_nonfinite_in_a_row: int = 10) -> None:
        self.algo, self.gworkers = algo, gworkers
        self.components = components
        self.worker_names = tuple(worker_names)
        self.changes: list[Change] = []  # the newest MAX_KEPT_CHANGES of them
        self.num_changes = 0  # every change since this Learner was built
        self.max_nonfinite_in_a_row = max_nonfinite_in_a_row
        self._nonfinite_streak = 0
        self.gradients, self.update = gradients, update
        self.remote_weights = remote_weights
        self.version = 0
        self.env_steps = 0
        self.num_updates = 0
        #: Gradients computed by the GWorkers (packets with samples) since this Learner was built: with
        #: sync gradients an update may hold an idle GWorker's empty packet, so updates x GWorkers
        #: overcounts them (the update-to-data cap is per gradient step).
        self.gradient_steps = 0
        self.num_episodes = 0
        self.totals = dict.fromkeys(COUNT_KEYS, 0)
        self.metrics = Metrics()
        self._round_env_steps: dict[str, int] = {}  # per GWorker: env steps of its round in progress
        self._weights: Weights | None = None
        #: Shared normalization statistics (envs/normalization.py): every rollout's delta merged
        #: exactly; they go down with the weights and are in checkpoints. None: off, or no data yet.
        self.normalizer: Statistics | None = None
        # The algorithm's round-end hook (agents/base.py ``EndsRounds``), if it has one, and what
        # the round in progress measured so far: its minibatches' info, the GWorkers done with it.
        self._round_hook = algo.end_round if isinstance(algo, EndsRounds) else None
        self._round_metrics = Metrics()
        self._rounds_done: set[str] = set()
        self.broadcast()
        self._window_start = time.perf_counter()
        self._window_steps = 0
        #: Per-worker figures since this Learner was built, never popped (launch/topology.py reads
        #: them): the packets' ``FIGURE_PREFIXES`` keys, and per GWorker its env steps, gradient bytes, lag.
        self.worker_figures = Metrics()
        self.created_at = self._window_start

    # -- the three verbs ---------------------------------------------------------------------------
    def step(self, collect: bool = True) -> dict[str, float]:
        """One update (then, if a round ended, the algorithm's round-end changes). ``collect=False``
        starts no new collection round (see :meth:`finish_round`)."""
        packets = self.gather(collect)
        info = self.apply(packets)
        self.broadcast()
        self.end_round(packets)
        return info

    def finish_round(self) -> int:
        """Step until every GWorker has used up its round, without collecting a new one, so the
        last round gets all its epochs x minibatches and worker state is exact (checkpoints, the
        end of training). Returns the number of steps taken."""
        steps = 0
        while not self.at_round_boundary():
            self.step(collect=False)
            steps += 1
        return steps

    def gather(self, collect: bool = True) -> list[GradientPacket]:
        start = time.perf_counter()
        packets = self.gradients.gather(self.gworkers, self.version, self._weights, collect)
        self.metrics.add({"gather_time_s": time.perf_counter() - start})
        for key, count in self.gworkers.stats().items():  # GWorkers re-created after a node loss
            self.totals[key] += int(count)
        # A lost GWorker's round in progress was collected but not (fully) trained on: lost.
        for name in self.gworkers.pop_replaced():
            self.totals["lost_env_steps"] += self._round_env_steps.pop(name, 0)
            # its CWorkers died with it (GWorkerSet.heal counts them as restarts too)
            self.worker_figures.add({f"restarts/{n}": 1.0 for n in self.worker_names if n.split(".")[0] == name})
        for p in packets:
            self._round_env_steps[p.worker] = 0 if p.round_done else self._round_env_steps.get(p.worker, 0) + p.env_steps
            self.env_steps += p.env_steps
            self._window_steps += p.env_steps
            self.num_episodes += len(p.episodes.returns)
            if p.normalizer is not None:
                self.normalizer = Statistics.combine(self.normalizer, p.normalizer)
            self.metrics.add_episodes(p.episodes)
            for key in COUNT_KEYS:
                self.totals[key] += int(p.info.get(key, 0))
            self.metrics.add({k: v for k, v in p.info.items() if k not in self.totals and not k.startswith("restarts/")})
            grad_bytes = sum(g.nbytes for g in p.grads or () if isinstance(g, np.ndarray))  # numpy: on the wire
            self.worker_figures.add({**{k: v for k, v in p.info.items() if k.startswith(FIGURE_PREFIXES)},
                                     f"env_steps/{p.worker}": p.env_steps, f"gradient_bytes/{p.worker}": grad_bytes})
            if p.num_samples:  # an idle GWorker (waiting for the others to end a round) has no lag
                self.gradient_steps += 1
                staleness = self.version - p.weights_version
                self.metrics.add({"policy_lag": self.version - p.data_version, "gradient_staleness": staleness,
                                  f"gradient_staleness/{p.worker}": staleness})
                self.worker_figures.add({f"gradient_staleness/{p.worker}": staleness})
        return packets

    def apply(self, packets: Sequence[GradientPacket]) -> dict[str, float]:
        start = time.perf_counter()
        result = self.update.apply(self.algo, packets)
        info = dict(result.metrics)
        if result.nonfinite:  # skipped: weights untouched, counted, bounded in a row
            self.totals["nonfinite_updates"] += 1
            self._nonfinite_streak += 1
            if self._nonfinite_streak >= self.max_nonfinite_in_a_row:
                raise NonFiniteError(
                    f"{self._nonfinite_streak} non-finite updates in a row at env step {self.env_steps} "
                    f"(policy version {self.version}); the weights are those of the last good update. "
                    "Lower algo.lr or check the env's rewards and observations for NaN/inf.")
        elif result.applied:  # the weights changed: a new policy version
            self._nonfinite_streak = 0
            self.version += 1
            self.num_updates += 1
        info["update_time_s"] = time.perf_counter() - start
        self.metrics.add(info)
        return info

    def end_round(self, packets: Sequence[GradientPacket]) -> None:
        """Once every GWorker has used up a round since the last time, hand the algorithm the mean
        of each info key over those rounds' minibatches (its ``end_round`` hook) and apply the
        parameter changes it returns as runtime changes: the path of ``update_algorithm_parameter``,
        so every worker that uses one gets it, acknowledges it, and checkpoints keep it."""
        if self._round_hook is None:
            return
        for p in packets:
            if p.num_samples:  # a minibatch of the round (an idle GWorker's packet has none)
                self._round_metrics.add(p.info)
            if p.round_done:
                self._rounds_done.add(p.worker)
        if not self._rounds_done.issuperset(self.gworkers.names):
            return
        self._rounds_done.clear()
        for name, value in self._round_hook(self._round_metrics.pop()[0]).items():
            self._update_parameter("algo", name, value)

    def broadcast(self) -> None:
        """Publish the weights of the current version to the GWorkers.

        In-process the single GWorker shares this algorithm object, so only the version moves.
        Remote GWorkers get one ``Weights`` object, put once and referenced by all of them
        (``GWorkerSet.step``), sent with their next step.
        """
        if self.remote_weights and (self._weights is None or self._weights.version != self.version):
            self._weights = Weights(self.version, self.algo.get_weights())
        self._weights = Weights.attach(self._weights, self.version, self.normalizer)

    def sync_weights(self) -> None:
        """Make ``self.algo`` hold the current weights (decentralized: pulled from a GWorker)."""
        self.update.pull_weights(self.algo, self.gworkers)

    # -- checkpoints ------------------------------------------------------------------------------------
    def at_round_boundary(self) -> bool:
        """True when every GWorker has used up its round (as its last packet said) and no step is
        in flight: worker state is small and exact then."""
        return self.gradients.at_round_boundary(self.gworkers)

    def state_dict(self, workers: bool = True) -> dict[str, Any]:
        """Weights, optimizer, counters and (at a round boundary) every worker's env and RNG state.

        The optimizer is the one in use: decentralized, the GWorkers' (pulled from one of them;
        all replicas are equal), never the Learner's idle copy."""
        self.update.pull_state(self.algo, self.gworkers)
        return {"algo": to_cpu(self.algo.state_dict()), "counters": self.counters(), "totals": dict(self.totals),
                "workers": self.gworkers.get_states() if workers else None,
                "worker_names": list(self.worker_names),
                "normalizer": None if self.normalizer is None else self.normalizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore; worker state only onto the same topology. Returns whether workers were restored
        (a resume onto other worker counts starts their envs afresh: a valid continuation, not
        bit-exact)."""
        self.algo.load_state_dict(state["algo"])
        c = state["counters"]
        self.version, self.env_steps, self.num_updates, self.num_episodes = (
            c["version"], c["env_steps"], c["updates"], c["episodes"])
        self.totals.update(state["totals"])
        self.normalizer = Statistics.from_state(state.get("normalizer"))
        self._round_metrics, self._rounds_done = Metrics(), set()  # a checkpoint is taken between rounds
        self._weights = None
        self.broadcast()
        self.update.push_state(self.algo, self.gworkers, self.version)
        if state["workers"] is None or list(state["worker_names"]) != list(self.worker_names):
            self._redistribute_memories(state["workers"] or [])
            return False
        self.gworkers.set_states(state["workers"])
        return True

    def _redistribute_memories(self, saved: list[dict[str, Any]]) -> None:
        """Resumed onto other worker counts: the saved replay memories' stored transitions are dealt
        over the new GWorkers (storage decides how: ``redistribute``; n-step memories too), so no
        stored experience is lost."""
        states = [w["storage"] for w in saved if w.get("storage") is not None]
        if not states:
            return  # on-policy storage holds nothing between rounds
        spaces = self.components.spaces()
        memories = []
        for st in states:
            memory = self.components.storage.build(spaces.observation, spaces.action, self.components.env.num_envs)
            memory.load_state_dict(st)
            memories.append(memory)
        self.gworkers.seed_storage(type(memories[0]).redistribute(memories, len(self.gworkers.names)))

    # -- reporting ---------------------------------------------------------------------------------
    def pop_metrics(self) -> dict[str, float]:
        """Everything since the previous call, named as it is logged to MLflow."""
        wall = max(time.perf_counter() - self._window_start, 1e-9)
        means, sums, returns, lengths = self.metrics.pop()
        out = {k: v for k, v in means.items() if not k.endswith("_time_s") and not k.startswith("rollout_bytes")}
        out.update(
            env_steps=float(self.env_steps),
            policy_version=float(self.version),
            updates=float(self.num_updates),
            episodes=float(self.num_episodes),
            fps=self._window_steps / wall,
            **{k: float(v) for k, v in self.totals.items()},
        )
        if returns.size:
            out.update(episode_return=float(returns.mean()), episode_return_max=float(returns.max()),
                       episode_length=float(lengths.mean()))
        for key, name in TIME_KEYS.items():
            if key in sums:
                out[f"time_share_{name}"] = sums[key] / wall
        out["time_share_update"] = sums.get("update_time_s", 0.0) / wall
        raw, wire = sums.get("rollout_bytes_raw", 0.0), sums.get("rollout_bytes_wire", 0.0)
        if wire:
            out.update(bytes_sent=wire, bytes_raw=raw, compression_ratio=raw / wire)
        self._window_start, self._window_steps = time.perf_counter(), 0
        return out

    # -- queries (tests, checkpoints) -----------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {"version": self.version, "env_steps": self.env_steps, "updates": self.num_updates,
                "episodes": self.num_episodes}

    def close(self) -> None:
        self.gworkers.close()
