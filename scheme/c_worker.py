"""CWorker: steps a gymnasium vector env with the current policy and returns rollouts.

A plain class: in-process it is called directly by its GWorker; on Ray it is wrapped as an actor
(``scheme/remote.py``). It never imports Ray itself except to learn which node it runs on when
its receiver is remote (the ``compress="auto"`` decision).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from colonyrl.agents.base import initial_state
from colonyrl.envs.factory import episode_stats
from colonyrl.envs.normalization import Normalizer, obs_shapes
from colonyrl.envs.split import SplitVectorEnv, concat, take
from colonyrl.scheme.components import Components
from colonyrl.scheme.control import CWorkerControl, node_id
from colonyrl.scheme.packets import EpisodeStats, Rollout, Weights
from colonyrl.scheme.runtime import init_process
from colonyrl.scheme.wire import Compressor
from colonyrl.storage.layout import flatten_tree

__all__ = ["CWorker", "action_sampling_seed"]


class CWorker(CWorkerControl):
    """One collection worker.

    Args:
        components: what to build (env, actor, algorithm, storage) and the base seed.
        index: global collection-worker index; seeds its envs (distinct per worker and sub-env).
        name: e.g. ``"g0.c1"``, used in metrics and error messages.
        compress: ``"auto"`` (only across nodes, only keys worth it), True or False.
        receiver_node: node id of the GWorker this worker sends to; None = same process.
    """

    def __init__(
        self,
        components: Components,
        index: int,
        name: str,
        compress: Literal["auto"] | bool = "auto",
        receiver_node: str | None = None,
        torch_threads: int | None = 1,
    ) -> None:
        init_process(torch_threads)
        # Its own action-sampling stream in every layout (in-process, an actor of its own, inside a
        # remote GWorker, re-created): N workers explore as N, reproducibly from (seed, index).
        torch.manual_seed(action_sampling_seed(components.seed, index))
        self.name, self.index = name, index
        self.components = components
        self.spaces = components.spaces()
        # Acting weights only: no optimizer, critic or target nets unless acting needs them.
        self.policy = components.build_policy(self.spaces)
        self.env, self.obs = components.env.make(seed=components.seed, worker_index=index)
        self.num_envs = self.env.num_envs
        self.storage = self._build_storage()
        self.normalizer = self._build_normalizer()
        # With next-step autoreset, the step after an episode end only resets that sub-env: its
        # transition is not real and is marked invalid (gymnasium 1.x autoreset docs; platform.md §7).
        self.prev_done = np.zeros(self.num_envs, dtype=bool)
        self._reset_policy_state()
        self.version = -1
        # Preemption (DESIGN: Coordination): request_stop(r) arrives on Ray's "control" concurrency
        # group while collect(round r) runs in the default group, and is read once per env step.
        self._stop_round = -1
        # In one process, or on one node (Ray's shared memory, zero-copy for numpy), the arrays go
        # as they are: packing would only add copies (measured: 52 ms to pack 58 MB raw vs 0.02 ms
        # to hand numpy over out-of-band). Only a remote receiver gets the lz4 envelope.
        compressor = None if receiver_node is None else Compressor(compress, same_node=receiver_node == node_id())
        self.compressor = compressor if compressor is not None and compressor.active else None

    # -- weights -----------------------------------------------------------------------------
    def _reset_policy_state(self) -> None:
        """A stateful policy's state (agents/base.py ``StatefulPolicy``; None: stateless) and where
        the next observation starts an episode: every sub-env at first."""
        self.policy_state = initial_state(self.policy, self.num_envs)
        self.episode_start = np.ones(self.num_envs, dtype=bool)

    def _build_storage(self) -> Any:
        return self.components.storage.build(self.spaces.observation, self.spaces.action, self.num_envs,
                                             self.policy.extras)

    def _build_normalizer(self) -> Normalizer | None:
        """Shared normalization (``EnvConfig.normalize``): normalizes with the statistics the weights
        bring, and reports what it saw with each rollout. None when off."""
        config = self.components.env.normalize
        if not config.enabled:
            return None
        return Normalizer(config, obs_shapes(self.spaces.observation, config) or (), self.num_envs)

    def set_weights(self, weights: Weights) -> int:
        if self.normalizer is not None:
            self.normalizer.set_statistics(weights.normalizer)
        if weights.arrays is not None and weights.version != self.version:
            self.policy.set_weights(weights.arrays)
            self.version = weights.version
        return self.version

    # -- collection --------------------------------------------------------------------------
    def collect(self, weights: Weights | None = None, round_id: int = -1, min_fraction: float = 1.0) -> Rollout:
        """Step the envs for ``storage.num_steps`` steps with the current weights.

        If told to stop this round (``request_stop(round_id)``), it stops as soon as it has
        ``min_fraction`` of its steps and returns the partial rollout, which is used, not dropped.
        """
        if weights is not None:
            self.set_weights(weights)
        start = time.perf_counter()
        finished: list[EpisodeStats] = []
        min_steps = max(1, int(np.ceil(min_fraction * self.storage.config.num_steps)))
        if isinstance(self.env, SplitVectorEnv):  # EnvConfig.double_buffered
            preempted = self._collect_halves(round_id, min_steps, finished)
        else:
            preempted = self._collect_steps(round_id, min_steps, finished)
        # The observation after the last step (the last transition's next observation) and the
        # extras the policy bootstraps from it (PPO: V(obs), also when truncated); counted in the
        # statistics as the next rollout's first.
        norm, state = self.normalizer, self.policy_state
        last = self.obs if norm is None else norm.frozen_observation(self.obs)
        bootstrap = self.policy.bootstrap(last) if state is None else self.policy.bootstrap(
            last, state=state, episode_start=self.episode_start)
        self.storage.finish(last, bootstrap)
        rollout = self._rollout(self.storage.get_data(), EpisodeStats.concat(finished), time.perf_counter() - start)
        rollout.info["preempted"] = float(preempted)
        return rollout

    def _collect_steps(self, round_id: int, min_steps: int, finished: list[EpisodeStats]) -> bool:
        """:meth:`collect`'s loop: act, step, store, ``storage.num_steps`` times; True if preempted."""
        policy, env, storage, norm = self.policy, self.env, self.storage, self.normalizer
        obs, prev_done = self.obs, self.prev_done
        # A stateful policy's state goes on across rollouts; it is reset where an episode starts:
        # on the step after an autoreset step, whose observation is the new episode's first.
        state, episode_start = self.policy_state, self.episode_start
        preempted = False
        for t in range(storage.config.num_steps):
            if t >= min_steps and self._stop_round >= round_id >= 0:
                preempted = True
                break
            # Normalized (EnvConfig.normalize), the policy acts on and the storage keeps what it saw
            # (SB3's VecNormalize); the raw observation joins the statistics unless this is an
            # autoreset step (its observation is the last of an episode, SB3 counts none of those).
            seen = obs if norm is None else norm.observation(obs, count=~prev_done)
            if state is None:
                out = policy.act(seen)
            else:
                out = policy.act(seen, state=state, episode_start=episode_start)
                state, episode_start = out.state, prev_done  # an autoreset step now: a reset observation next
            next_obs, reward, terminated, truncated, info = env.step(out.env_action)
            done = terminated | truncated
            if norm is not None:
                reward = norm.reward(reward, done, ~prev_done)
            storage.insert(seen, out.action, reward, terminated, truncated, ~prev_done, out.extras)
            prev_done = done
            if prev_done.any():
                finished.append(EpisodeStats(*episode_stats(info)))
            obs = next_obs
        self.obs, self.prev_done = obs, prev_done
        self.policy_state, self.episode_start = state, episode_start
        return preempted

    def _collect_halves(self, round_id: int, min_steps: int, finished: list[EpisodeStats]) -> bool:
        """:meth:`collect`'s loop over a double-buffered env (envs/split.py): each half's step runs
        in its thread while the policy acts for the other half; True if preempted. Each stored step
        is what the plain loop stores; the policy acts on the halves one after the other (normalized,
        on what the plain loop's policy sees: the statistics stay fixed for a rollout)."""
        env, policy, storage, norm = self.env, self.policy, self.storage, self.normalizer
        assert isinstance(env, SplitVectorEnv)
        self.prev_done = self.prev_done.copy()  # updated half by half below
        acted: list[Any] = [None, None]
        seen: list[Any] = [None, None]  # what the policy acted on, per half: what the storage keeps

        def act(half: int, obs: Any) -> None:
            rows = env.rows[half]
            if norm is not None:  # counted as in the plain loop: not on the step after an episode end
                obs = norm.observation(obs, count=~self.prev_done[rows])
            seen[half] = obs
            if self.policy_state is None:
                out = policy.act(obs)
            else:  # as the plain loop: the state goes on; an autoreset step now means a reset observation next
                # copies: the policy may keep its input state as the stored extra, and the rows are views
                out = policy.act(obs, state=self.policy_state[rows].copy(), episode_start=self.episode_start[rows].copy())
                self.policy_state[rows], self.episode_start[rows] = out.state, self.prev_done[rows]
            acted[half] = out
            env.step_async(half, out.env_action)

        for half in (0, 1):
            act(half, take(self.obs, env.rows[half]))
        num_steps = storage.config.num_steps
        for t in range(num_steps):
            more = t + 1 < num_steps and not (t + 1 >= min_steps and self._stop_round >= round_id >= 0)
            obs = self.obs if norm is None else concat(*seen)  # (the plain loop's seen)
            outs, valid, steps = list(acted), ~self.prev_done, []
            for half in (0, 1):
                step = env.step_wait(half)
                if norm is not None:
                    rows = env.rows[half]
                    step = (step[0], norm.reward(step[1], step[2] | step[3], valid[rows], rows), *step[2:])
                steps.append(step)
                self.prev_done[env.rows[half]] = step[2] | step[3]
                if more:  # this half's next step starts now, while the other half's still runs
                    act(half, step[0])
            (o0, r0, te0, tr0, info0), (o1, r1, te1, tr1, info1) = steps
            extras = {key: concat(outs[0].extras[key], outs[1].extras[key]) for key in outs[0].extras}
            storage.insert(obs, concat(outs[0].action, outs[1].action), concat(r0, r1), concat(te0, te1),
                           concat(tr0, tr1), valid, extras)
            for info, done in ((info0, te0 | tr0), (info1, te1 | tr1)):
                if done.any():
                    finished.append(EpisodeStats(*episode_stats(info)))
            self.obs = concat(o0, o1)
            if not more:
                return t + 1 < num_steps
        return False

    def request_stop(self, round_id: int) -> str:
        """Tell a collect of round ``round_id`` (running or not yet started) to stop early."""
        self._stop_round = max(self._stop_round, round_id)
        return self.name

    def _rollout(self, data: dict[str, np.ndarray], episodes: EpisodeStats, elapsed: float) -> Rollout:
        steps = int(data["rewards"].size)
        info = {"collect_time_s": elapsed, "collect_fps": steps / max(elapsed, 1e-9)}
        payload: object = data
        if self.compressor is not None:
            packed = self.compressor.pack(data)
            info.update(raw_bytes=float(packed.raw_bytes), wire_bytes=float(packed.wire_bytes))
            payload = packed
        else:
            raw = float(sum(a.nbytes for a in flatten_tree(data).values()))  # a Dict obs: each array
            info.update(raw_bytes=raw, wire_bytes=raw)
        delta = None if self.normalizer is None else self.normalizer.pop_delta()
        return Rollout(self.version, self.name, payload, steps, episodes, info, delta)

    def close(self) -> None:
        self.env.close()


def action_sampling_seed(seed: int, index: int) -> int:
    """The torch seed of CWorker ``index``'s action sampling: ``SeedSequence([index, seed, tag])``
    (NumPy's recipe for independent parallel streams, as ``envs.factory.env_seeds``; the tag keeps
    it apart from the env seeds), 63 bits."""
    word = np.random.SeedSequence([index, seed, 0x5EED]).generate_state(1, np.uint64)[0]
    return int(word >> np.uint64(1))
