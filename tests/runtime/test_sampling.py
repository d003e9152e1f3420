import numpy as np
import pytest

from lamina.sampling import Sampler, SamplingParams, apply_logit_bias, apply_penalties, candidates


def _logits(seed=0, n=1000):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 3


def test_greedy_is_argmax_and_ignores_seed():
    x = _logits()
    for seed in (1, 2, 3):
        assert Sampler(SamplingParams(temperature=0), seed).__call__(x) == int(np.argmax(x))


def test_top_k_1_is_argmax_at_any_temperature():
    x = _logits(1)
    s = Sampler(SamplingParams(temperature=5.0, top_k=1, top_p=1.0, min_p=0.0), seed=0)
    assert {s(x) for _ in range(50)} == {int(np.argmax(x))}


def test_same_seed_same_tokens_different_seed_differs():
    x = _logits(2)
    p = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    a = _draws(Sampler(p, 42), x, 200)
    b = _draws(Sampler(p, 42), x, 200)
    c = _draws(Sampler(p, 43), x, 200)
    assert a == b
    assert a != c


def _draws(s, x, n):
    return [s(x) for _ in range(n)]


def test_draws_follow_the_softmax_distribution():
    x = np.array([2.0, 1.0, 0.0, -1.0], np.float32)
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    n = 20000
    counts = np.bincount(_draws(Sampler(p, 7), x, n), minlength=4)
    expected = np.exp(x) / np.exp(x).sum() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, (counts, expected)  # 3 dof, p = 0.001


def test_temperature_sharpens():
    x = np.array([1.0, 0.0], np.float32)
    cold = np.mean(_draws(Sampler(SamplingParams(temperature=0.25, top_k=0, top_p=1, min_p=0), 1), x, 4000))
    hot = np.mean(_draws(Sampler(SamplingParams(temperature=4.0, top_k=0, top_p=1, min_p=0), 1), x, 4000))
    assert cold < 0.05 < 0.3 < hot  # share of the second token


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    x = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    ids, _ = candidates(x, SamplingParams(top_k=0, top_p=0.8, min_p=0.0))
    assert list(ids) == [0, 1]
    ids, _ = candidates(x, SamplingParams(top_k=0, top_p=0.81, min_p=0.0))
    assert list(ids) == [0, 1, 2]


def test_min_p_is_relative_to_the_top_token():
    x = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    ids, _ = candidates(x, SamplingParams(top_k=0, top_p=1.0, min_p=0.29))  # keep p >= 0.145
    assert list(ids) == [0, 1, 2]
    ids, _ = candidates(x, SamplingParams(top_k=0, top_p=1.0, min_p=0.31))  # keep p >= 0.155
    assert list(ids) == [0, 1]


def test_top_k_then_sorted_descending():
    x = _logits(3)
    ids, vals = candidates(x, SamplingParams(top_k=10, top_p=1.0, min_p=0.0))
    assert set(ids) == set(np.argsort(-x)[:10])
    assert np.all(np.diff(vals) <= 0)


def test_repeat_penalty_like_llama_cpp():
    x = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    out = apply_penalties(x, [0, 1, 1], SamplingParams(repeat_penalty=2.0))
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]  # positive divided, negative multiplied, once per token
    # only the last repeat_last_n tokens count
    out = apply_penalties(x, [0, 1, 2], SamplingParams(repeat_penalty=2.0, repeat_last_n=1))
    assert out.tolist() == [2.0, -2.0, 0.5, 0.5]


def test_frequency_and_presence_penalties():
    x = np.zeros(3, np.float32)
    out = apply_penalties(x, [0, 0, 1], SamplingParams(frequency_penalty=0.5, presence_penalty=0.25))
    assert out.tolist() == [-1.25, -0.75, 0.0]


def test_penalty_flips_greedy_choice():
    x = np.array([1.0, 0.9], np.float32)
    s = Sampler(SamplingParams(temperature=0, repeat_penalty=1.5))
    assert s(x, history=[]) == 0
    assert s(x, history=[0]) == 1


@pytest.mark.parametrize("bad", [dict(repeat_penalty=0), dict(min_p=1.5), dict(top_p=0), dict(repeat_last_n=-2)])
def test_bad_parameters(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_logit_bias_comes_first_and_adds():
    x = _logits(3)
    top = int(np.argmax(x))
    up, ban = (top + 1) % x.size, (top + 2) % x.size
    p = SamplingParams(temperature=0, logit_bias={top: -1e4, up: 0.5, str(ban): -float("inf")})
    biased = apply_logit_bias(x, p)
    assert biased[top] == np.float32(x[top] - 1e4) and biased[up] == np.float32(x[up] + 0.5)
    assert biased[ban] == -np.inf
    assert np.array_equal(np.delete(biased, [top, up, ban]), np.delete(x, [top, up, ban]))
    assert Sampler(p)(x) == int(np.argmax(biased)) != top
    # a banned token is never drawn, whatever the temperature
    hot = SamplingParams(temperature=5.0, top_k=0, top_p=1.0, min_p=0.0, logit_bias={top: -np.inf})
    draws = {Sampler(hot, seed=s)(x) for s in range(200)}
    assert top not in draws and len(draws) > 10


@pytest.mark.parametrize("bad", [{-1: 1.0}, {"x": 1.0}, {1: np.nan}, {1: np.inf}, [(1, 2.0)], "1:2"])
def test_bad_logit_bias_is_refused(bad):
    with pytest.raises(ValueError, match="logit_bias"):
        SamplingParams(logit_bias=bad)
