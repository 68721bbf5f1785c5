"""The hand-written distributions against torch.distributions, and the Box action helpers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as D

from colonyrl.agents.distributions import (
    Categorical,
    DiagGaussian,
    SquashedDiagGaussian,
    clip_action,
    squash_action,
    tanh_log_det_jacobian,
)


def test_categorical_matches_torch() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g, dtype=torch.float64) * 3
    actions = torch.randint(0, 5, (16,), generator=g)
    mine, ref = Categorical(logits), D.Categorical(logits=logits)
    torch.testing.assert_close(mine.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(mine.entropy(), ref.entropy())
    assert torch.equal(mine.mode(), logits.argmax(-1))


def test_categorical_sample_frequencies() -> None:
    torch.manual_seed(0)
    probs = torch.tensor([0.2, 0.5, 0.3])
    samples = Categorical(probs.log().expand(40_000, 3)).sample()
    assert samples.dtype == torch.int64 and samples.shape == (40_000,)
    freq = torch.bincount(samples, minlength=3).float() / samples.numel()
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)


def test_categorical_entropy_of_uniform_is_log_n() -> None:
    assert Categorical(torch.zeros(3, 4)).entropy().tolist() == pytest.approx([math.log(4)] * 3)


@pytest.mark.parametrize("shape", [(3,), (2, 2)])
def test_diag_gaussian_matches_torch(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(7, *shape, generator=g, dtype=torch.float64)
    log_std = torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5
    actions = torch.randn(7, *shape, generator=g, dtype=torch.float64)
    ref = D.Independent(D.Normal(mean, log_std.exp()), len(shape))
    mine = DiagGaussian(mean, log_std)
    torch.testing.assert_close(mine.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(mine.entropy(), ref.entropy())
    assert torch.equal(mine.mode(), mean)


def test_diag_gaussian_sample_moments() -> None:
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0]).expand(50_000, 2)
    log_std = torch.tensor([0.0, math.log(0.5)])
    s = DiagGaussian(mean, log_std).sample()
    torch.testing.assert_close(s.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(s.std(0), torch.tensor([1.0, 0.5]), atol=0.02, rtol=0)


def test_squashed_log_prob_is_density_of_env_action() -> None:
    """log_prob(u) equals the density of a = low + (tanh(u)+1)(high-low)/2 (change of variables)."""
    g = torch.Generator().manual_seed(2)
    low, high = torch.tensor([-2.0, 0.0], dtype=torch.float64), torch.tensor([2.0, 1.0], dtype=torch.float64)
    mean = torch.randn(9, 2, generator=g, dtype=torch.float64)
    log_std = torch.tensor([0.3, -0.4], dtype=torch.float64)
    raw = torch.randn(9, 2, generator=g, dtype=torch.float64)
    scale = 0.5 * (high - low)
    ref = D.TransformedDistribution(
        D.Independent(D.Normal(mean, log_std.exp()), 1),
        [D.transforms.TanhTransform(), D.transforms.AffineTransform(low + scale, scale, event_dim=1)],
    )
    mine = SquashedDiagGaussian(mean, log_std, float(scale.log().sum()))
    torch.testing.assert_close(mine.log_prob(raw), ref.log_prob(squash_action(raw, low, high)))
    # The correction itself against the naive formula.
    torch.testing.assert_close(tanh_log_det_jacobian(raw), torch.log(1 - torch.tanh(raw) ** 2).sum(-1))


def test_clip_and_squash_stay_in_bounds() -> None:
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    raw = torch.tensor([[-100.0, 100.0], [0.5, 0.5], [100.0, -100.0], [3.0, -3.0]])
    for f in (clip_action, squash_action):
        a = f(raw, low, high)
        assert bool(((a >= low) & (a <= high)).all()), f.__name__
    assert clip_action(raw, low, high)[1].tolist() == [0.5, 0.5]
    torch.testing.assert_close(squash_action(torch.zeros(1, 2), low, high), torch.tensor([[0.0, 0.5]]))
