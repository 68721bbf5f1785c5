"""Advantage standardization over the union of every GWorker's round: with normalization on (the
default), N GWorkers on N minibatches equal one GWorker on their union."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.c_worker import CWorker
from colonyrl.scheme.components import Components
from colonyrl.scheme.packets import EpisodeStats, GradientPacket
from colonyrl.scheme.scheme import Resources, Scheme, SchemeConfig
from colonyrl.scheme.strategies import average_gradients
from colonyrl.storage.rollout import Moments, RolloutConfig

COMPONENTS = Components(env=EnvConfig(id="CartPole-v1", num_envs=4), actor=ActorCriticConfig(),
                        algo=PPOConfig(), storage=RolloutConfig(num_steps=32), seed=1)


def test_merged_moments_equal_those_of_the_union() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(m, s, n) for m, s, n in ((0.0, 1.0, 7), (5.0, 0.1, 100), (-2.0, 3.0, 1), (1.0, 2.0, 0))]
    merged = Moments.merge([Moments.of(p) for p in parts])
    union = np.concatenate(parts)
    assert merged.count == union.size
    assert merged.mean == pytest.approx(union.mean(), rel=1e-12)
    assert merged.std == pytest.approx(union.std(ddof=1), rel=1e-12)  # torch.std's unbiased estimate
    assert Moments.merge([]) == Moments(0, 0.0, 0.0) and Moments.of(np.zeros(1)).std == 0.0


def test_two_gworkers_with_normalization_on_equal_one_gworker_on_the_union() -> None:
    assert COMPONENTS.algo.normalize_advantage  # the default, not switched off for the test
    spaces = COMPONENTS.spaces()
    rollouts = []
    for index in (0, 1):  # two CWorkers' real CartPole rollouts (different seeds, different data)
        worker = CWorker(COMPONENTS, index, f"c{index}")
        rollouts.append(worker.collect().data)
        worker.close()

    def storage(*data):
        s = COMPONENTS.storage.build(spaces.observation, spaces.action, COMPONENTS.env.num_envs)
        for d in data:
            s.add_data(d)
        s.before_gradients()
        return s

    parts, union = [storage(r) for r in rollouts], storage(*rollouts)
    merged = Moments.merge([p.advantage_moments for p in parts])
    assert merged.mean == pytest.approx(union.advantage_moments.mean, rel=1e-9)
    assert merged.mean != pytest.approx(parts[0].advantage_moments.mean, rel=1e-3)  # the parts differ
    torch.manual_seed(0)
    algo = COMPONENTS.build_algorithm(spaces)

    def grads(s, moments=None):
        (batch,) = s.generate_batches(1, 10**6, advantage_moments=moments)  # the whole round at once
        g, _ = algo.compute_gradients(batch)[:2]
        return [x.detach().clone() for x in g], len(batch.obs)

    expected, _ = grads(union)
    packets = [GradientPacket(0, 0.0, f"g{i}", *grads(p, merged), 0, EpisodeStats.empty(), {})
               for i, p in enumerate(parts)]
    for got, want in zip(average_gradients(packets), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # Each part standardized with its own statistics (per GWorker, as before) is not the union's.
    own = [GradientPacket(0, 0.0, f"g{i}", *grads(p), 0, EpisodeStats.empty(), {}) for i, p in enumerate(parts)]
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-5)
               for a, b in zip(average_gradients(own), expected, strict=True))


@pytest.mark.ray
@pytest.mark.parametrize("update", ["central", "decentralized"])
def test_remote_gworkers_standardize_with_the_union_of_their_rounds(ray_local, update: str) -> None:
    import ray

    cfg = SchemeConfig(num_grad_workers=2, num_col_workers=1, update=update,
                       grad_worker_resources=Resources(num_cpus=0.25), worker_timeout_s=60.0)
    with Scheme(cfg, COMPONENTS) as scheme:
        scheme.learner.step()
        actors = scheme.learner.gworkers.workers
        seen = ray.get([a.__ray_call__.remote(lambda g: (g.storage.advantage_moments, g._next_batch.advantage_stats))
                        for a in actors])
    (own0, stats0), (own1, stats1) = seen
    union = Moments.merge([Moments(*own0), Moments(*own1)])
    assert own0 != own1  # each GWorker collected its own data
    assert stats0 == stats1 == pytest.approx((union.mean, union.std))
