"""Non-finite guard: NaN/inf gradients are skipped and counted, weights stay finite, K in a row stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colonyrl.agents.networks import ActorCriticConfig
from colonyrl.agents.ppo import PPOConfig
from colonyrl.envs.factory import EnvConfig
from colonyrl.scheme.components import Components
from colonyrl.scheme.learner import NonFiniteError
from colonyrl.scheme.scheme import Scheme, SchemeConfig
from colonyrl.storage.rollout import RolloutConfig

COMPONENTS = Components(env=EnvConfig(num_envs=4), actor=ActorCriticConfig(),
                        algo=PPOConfig(num_epochs=4, minibatch_size=64), storage=RolloutConfig(num_steps=16), seed=0)


def _poison(algo, bad_calls: set[int]) -> list[int]:
    """Make the algorithm's gradients NaN/inf on the given calls (a fault injected at the source)."""
    compute, calls = algo.compute_gradients, [0]

    def compute_gradients(batch):
        result = compute(batch)
        calls[0] += 1
        if calls[0] in bad_calls:
            result.grads[0].fill_(float("nan"))
            result.grads[-1].fill_(float("inf"))
        return result

    algo.compute_gradients = compute_gradients
    return calls


def test_nonfinite_gradients_are_skipped_counted_and_leave_the_weights_untouched() -> None:
    with Scheme(SchemeConfig(max_nonfinite_in_a_row=3), COMPONENTS) as scheme:
        learner = scheme.learner
        _poison(learner.algo, bad_calls={3, 4, 9})
        before = None
        for step in range(1, 13):
            if step == 3:
                before = [p.detach().clone() for p in learner.algo.parameters()]
            learner.step()
            if step == 4:  # two skipped updates: nothing moved
                assert all(torch.equal(a, b) for a, b in zip(before, learner.algo.parameters(), strict=True))
        assert learner.totals["nonfinite_updates"] == 3
        assert learner.num_updates == learner.version == 12 - 3
        assert all(torch.isfinite(p).all() for p in learner.algo.parameters())
        assert learner.pop_metrics()["nonfinite_updates"] == 3


def test_too_many_nonfinite_updates_in_a_row_stop_training_clearly() -> None:
    with Scheme(SchemeConfig(max_nonfinite_in_a_row=3), COMPONENTS) as scheme:
        learner = scheme.learner
        learner.step()
        _poison(learner.algo, bad_calls=set(range(1, 100)))
        with pytest.raises(NonFiniteError, match="3 non-finite updates in a row at env step"):
            for _ in range(10):
                learner.step()
        assert learner.totals["nonfinite_updates"] == 3 and learner.num_updates == 1
        assert all(np.isfinite(w).all() for w in learner.algo.get_weights().values())
