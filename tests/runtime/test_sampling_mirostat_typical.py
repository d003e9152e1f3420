"""typical_p and Mirostat 1/2 against plain-loop references written from
llama.cpp's src/llama-sampler.cpp (llama_sampler_typical_apply,
llama_sampler_mirostat{,_v2}_apply), and statistically: draws follow the kept
distribution, and Mirostat holds the mean surprise at tau."""

import math

import numpy as np
import pytest

from lamina.options import OptionError
from lamina.sampling import Sampler, SamplingParams, candidates
from lamina.sampling_mirostat import mirostat_k, mirostat_v1, mirostat_v2, zipf_exponent

OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


def _logits(seed=0, n=200):
    return (np.random.default_rng(seed).standard_normal(n) * 2.5).astype(np.float32)


def _softmax(x):
    e = [math.exp(v - max(x)) for v in x]
    s = sum(e)
    return [v / s for v in e]


# ---------------------------------------------------------------- references
def ref_typical(logits, mass):
    """llama.cpp's loop: the ids kept, in order of |surprise - entropy|."""
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    p = _softmax([logits[i] for i in order])
    entropy = -sum(q * math.log(q) for q in p if q > 0)
    shifted = [abs(-math.log(q) - entropy) for q in p]
    idx = sorted(range(len(p)), key=lambda i: shifted[i])
    cum, last = 0.0, len(idx)
    for j, i in enumerate(idx):
        cum += p[i]
        if cum > mass:
            last = j + 1
            break
    return [order[i] for i in idx[:last]]


def ref_zipf(logits, m=100):
    """llama.cpp's s_hat from the m most probable tokens."""
    p = sorted(_softmax([float(v) for v in logits]), reverse=True)
    num = den = 0.0
    for i in range(min(m - 1, len(p) - 1)):
        t = math.log((i + 2) / (i + 1))
        b = math.log(p[i] / p[i + 1])
        num += t * b
        den += t * t
    return num / den


def ref_k(s_hat, mu, n_vocab):
    eps = s_hat - 1
    k = (eps * 2**mu / (1 - n_vocab ** (-eps))) ** (1 / s_hat)
    return max(int(k), 1)


def ref_mirostat_v1_k(logits, mu, n_vocab):
    return ref_k(ref_zipf(logits), mu, n_vocab)


def ref_mirostat_v2_kept(logits, mu):
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    p = _softmax([logits[i] for i in order])
    keep = next((j for j, q in enumerate(p) if -math.log2(q) > mu), len(p))
    return order[: max(keep, 1)]


# ---------------------------------------------------------------- typical
@pytest.mark.parametrize("mass", [0.2, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typical_keeps_what_llama_cpp_keeps(mass, seed):
    x = _logits(seed)
    ids, vals = candidates(x, SamplingParams(typical_p=mass, **OFF))
    want = ref_typical(x.astype(np.float64).tolist(), mass)
    assert sorted(ids.tolist()) == sorted(want)
    assert np.all(np.diff(vals) <= 0)  # back in descending logit for top-p / min-p
    # what is drawn from: the kept tokens renormalized
    p = np.exp(vals - vals.max())
    q = np.exp(x[want].astype(np.float64) - x[want].max())
    assert np.allclose(np.sort(p / p.sum()), np.sort(q / q.sum()))


def test_typical_can_drop_the_most_likely_token():
    """what sets it apart from top-p: a token far more likely than the entropy says is not typical"""
    x = np.log(np.array([0.4] + [0.1] * 6, np.float64)).astype(np.float32)
    ids, _ = candidates(x, SamplingParams(typical_p=0.35, **OFF))
    assert ids.size == 4 and 0 not in ids.tolist()
    assert set(ids.tolist()) == set(ref_typical(x.astype(np.float64).tolist(), 0.35))


def test_typical_draws_follow_the_kept_distribution():
    x = np.log(np.array([0.35, 0.25, 0.2, 0.1, 0.06, 0.04], np.float64)).astype(np.float32)
    params = SamplingParams(temperature=1.0, typical_p=0.7, **OFF)
    kept = ref_typical(x.astype(np.float64).tolist(), 0.7)
    s = Sampler(params, seed=11)
    n = 20000
    counts = np.bincount([s(x) for _ in range(n)], minlength=x.size)
    assert set(np.flatnonzero(counts).tolist()) == set(kept)
    p = np.exp(x[kept].astype(np.float64))
    expected = p / p.sum() * n
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, (counts, expected)  # <= 3 dof, p = 0.001


# ---------------------------------------------------------------- mirostat
@pytest.mark.parametrize("mu", [2.0, 6.0, 10.0])
def test_mirostat_v1_top_k_equals_the_reference(mu):
    x = _logits(3, 1000)
    probs = np.sort(np.exp(x - x.max()).astype(np.float64))[::-1]
    k = mirostat_k(zipf_exponent(probs / probs.sum()), mu, x.size)
    assert k == ref_mirostat_v1_k(x.astype(np.float64).tolist(), mu, x.size)


@pytest.mark.parametrize("mu", [1.0, 3.0, 8.0])
def test_mirostat_v2_truncation_and_mu_update_equal_the_reference(mu):
    x = _logits(4, 500).astype(np.float64)
    kept = ref_mirostat_v2_kept(x.tolist(), mu)
    tau, eta = 3.0, 0.1
    for u in (0.0, 0.3, 0.999):
        token, new_mu = mirostat_v2(x, mu, tau, eta, u)
        assert token in kept
        p = np.exp(x[kept] - x[kept].max())
        p /= p.sum()
        q = p[kept.index(token)]
        assert new_mu == pytest.approx(mu - eta * (-math.log2(q) - tau), rel=1e-9)
    # u = 0 draws the most likely token, u ~ 1 the least likely kept one
    assert mirostat_v2(x, mu, tau, eta, 0.0)[0] == kept[0]
    assert mirostat_v2(x, mu, tau, eta, 1 - 1e-12)[0] == kept[-1]


def test_mirostat_v1_mu_update_uses_the_truncated_distribution():
    x = _logits(5, 1000).astype(np.float64)
    mu, tau, eta = 6.0, 4.0, 0.2
    k = ref_mirostat_v1_k(x.tolist(), mu, x.size)
    order = np.argsort(-x, kind="stable")[:k]
    token, new_mu = mirostat_v1(x, mu, tau, eta, x.size, 0.5)
    assert token in order.tolist()
    p = np.exp(x[order] - x[order].max())
    p /= p.sum()
    q = p[order.tolist().index(token)]
    assert new_mu == pytest.approx(mu - eta * (-math.log2(q) - tau), rel=1e-9)


@pytest.mark.parametrize("version", [1, 2])
def test_mirostat_holds_the_mean_surprise_at_tau(version):
    """The controller's purpose: on a fixed Zipf-like distribution, the drawn
    tokens' surprise within the distribution truncated at each step's mu (as
    the references truncate it) averages tau; the model's raw surprise follows
    tau up and down."""
    n = 1000
    x = (-1.1 * np.log(np.arange(1, n + 1))).astype(np.float32)  # sorted: kept ids are a prefix
    p = np.asarray(_softmax(x.astype(np.float64).tolist()))
    raw_bits = -np.log2(p)
    means = {}
    s_hat = ref_zipf(x)  # the distribution is fixed: so is its Zipf fit
    for tau in (3.0, 5.0):
        s = Sampler(SamplingParams(temperature=1.0, mirostat=version, mirostat_tau=tau, mirostat_eta=0.1), seed=3)
        truncated, drawn = [], []
        for _ in range(1200):
            if version == 1:
                keep = ref_k(s_hat, s.mu, n)
            else:  # ref_mirostat_v2_kept on a sorted distribution
                over = np.flatnonzero(raw_bits > s.mu)
                keep = max(1, int(over[0]) if over.size else n)
            t = s(x)
            assert t < keep
            truncated.append(-math.log2(p[t] / p[:keep].sum()))
            drawn.append(raw_bits[t])
        assert abs(np.mean(truncated[200:]) - tau) < 0.3, (tau, np.mean(truncated[200:]))
        means[tau] = np.mean(drawn[200:])
    assert means[3.0] < means[5.0] - 1


def test_mirostat_state_starts_at_two_tau_and_is_per_sampler():
    s = Sampler(SamplingParams(mirostat=2, mirostat_tau=3.0), seed=1)
    assert s.mu == 6.0
    s(_logits(6))
    assert s.mu != 6.0
    s.reseed(1)
    assert s.mu == 6.0


def test_mirostat_at_temperature_zero_is_greedy():
    x = _logits(7)
    s = Sampler(SamplingParams(temperature=0, mirostat=1), seed=1)
    assert {s(x) for _ in range(5)} == {int(np.argmax(x))}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"typical_p": 0.0}, r"typical_p must be in \(0, 1\]"),
        ({"typical_p": 1.5}, r"typical_p must be in \(0, 1\]"),
        ({"mirostat": 3}, "mirostat must be 0 .off., 1 .Mirostat. or 2"),
        ({"mirostat_tau": -1.0}, "mirostat_tau must be >= 0"),
        ({"mirostat_eta": 2.0}, r"mirostat_eta must be in \[0, 1\]"),
        ({"mirostat_eta": float("nan")}, "mirostat_eta must be a finite number"),
    ],
)
def test_bad_values_name_the_parameter(kwargs, match):
    with pytest.raises(OptionError, match=match):
        SamplingParams(**kwargs)
