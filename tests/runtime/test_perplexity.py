"""Perplexity and KL-divergence (runtime/eval/perplexity.py, bin/perplexity), on
fake logits with known probabilities and on SmolLM2, against the same
computation over llama.cpp's logits when llama-cpp-python is installed."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lamina.eval.kld import compute_kl_divergence
from lamina.eval.logits_file import LogitsFile, LogitsFileWriter, decode_log_probs, encode_log_probs
from lamina.eval.perplexity import compute_perplexity
from lamina.eval.scoring import PerplexityError, n_scored, plan_chunks, token_nll
from support.paths import REPO

ROOT = REPO
TEXT = ROOT / "tests" / "data" / "alice29.txt"


class TableProvider:
    """Logits that give each target a chosen probability: p(next = t) depends
    only on t, through a fixed table; records the chunks it was asked for."""

    def __init__(self, probs: np.ndarray, noise: float = 0.0, seed: int = 0) -> None:
        self.n_vocab = len(probs)
        self.logits = np.log(probs).astype(np.float32)
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple[np.ndarray, int]] = []

    def __call__(self, tokens: np.ndarray, first: int) -> np.ndarray:
        self.calls.append((tokens.copy(), first))
        rows = np.tile(self.logits, (len(tokens) - first, 1))
        if self.noise:
            rows = rows + self.rng.normal(0, self.noise, rows.shape).astype(np.float32)
        return rows


def test_uniform_is_vocab_size():
    prov = TableProvider(np.full(4, 0.25))
    tokens = np.arange(64) % 4
    res = compute_perplexity(prov, tokens, n_ctx=16)
    assert res.n_chunks == 4 and res.count == 4 * 7
    assert res.ppl == pytest.approx(4.0, rel=1e-6)
    assert res.ppl_err < 1e-6  # zero variance, up to rounding
    assert res.final_line == "Final estimate: PPL = 4.0000 +/- 0.00000"


def test_two_probabilities_by_hand():
    # p(0) = 1/2, p(1) = 1/8, the rest share 3/8: targets alternate 0, 1
    probs = np.array([0.5, 0.125, 0.125, 0.125, 0.125])
    prov = TableProvider(probs)
    n_ctx = 16
    tokens = np.tile([0, 1], 3 * n_ctx // 2 + 3)  # 3 chunks + a dropped tail
    res = compute_perplexity(prov, tokens, n_ctx=n_ctx)
    # scored per chunk: targets at positions 9..15 -> 1,0,1,0,1,0,1 (4 x 1/8, 3 x 1/2)
    ln2 = math.log(2)
    per_chunk = [3 * ln2, ln2] * 3 + [3 * ln2]
    nll = per_chunk * 3
    N = len(nll)
    m = sum(nll) / N
    m2 = sum(v * v for v in nll) / N
    ppl = math.exp(m)
    err = ppl * math.sqrt((m2 - m * m) / (N - 1))
    assert res.count == N == 21
    assert res.ppl == pytest.approx(ppl, rel=1e-6)
    assert res.ppl_err == pytest.approx(err, rel=1e-5)
    assert res.running_ppl == pytest.approx([ppl] * 3, rel=1e-6)
    assert res.chunk_ppl == pytest.approx([ppl] * 3, rel=1e-6)
    np.testing.assert_allclose(res.nll, nll, rtol=1e-6)
    assert res.final_line == f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}"


def test_chunking_bos_and_second_half():
    prov = TableProvider(np.full(50, 0.02))
    n_ctx = 10
    tokens = np.arange(1, 36)  # 35 tokens -> 3 chunks, 5 dropped
    res = compute_perplexity(prov, tokens, n_ctx=n_ctx, bos_id=0)
    assert res.n_chunks == 3
    for i, (chunk, first) in enumerate(prov.calls):
        assert first == n_ctx // 2
        expected = tokens[i * n_ctx : (i + 1) * n_ctx].copy()
        expected[0] = 0  # BOS replaces the chunk's first token
        np.testing.assert_array_equal(chunk, expected)
    assert res.count == 3 * n_scored(n_ctx) == 3 * 4
    prov.calls.clear()
    compute_perplexity(prov, tokens, n_ctx=n_ctx, bos_id=None, n_chunks=2)
    assert len(prov.calls) == 2 and prov.calls[0][0][0] == 1


def test_scored_targets_are_the_second_half():
    """Position j's logits predict token j+1; only j in [n_ctx/2, n_ctx-2] count."""
    n_ctx, V = 8, 16

    class Peaked:
        n_vocab = V

        def __call__(self, tokens, first):
            rows = np.zeros((len(tokens) - first, V), dtype=np.float32)
            for r, j in enumerate(range(first, len(tokens))):
                nxt = (tokens[j] + 1) % V  # predicts token+1 with high confidence
                rows[r, nxt] = 10.0
            return rows

    tokens = np.arange(2 * n_ctx) % V  # every next token is token+1: all "right"
    res = compute_perplexity(Peaked(), tokens, n_ctx=n_ctx)
    p = math.exp(10) / (math.exp(10) + V - 1)
    assert res.ppl == pytest.approx(1 / p, rel=1e-6)


def test_too_short_text():
    with pytest.raises(
        PerplexityError,
        match=r"at least 1024 tokens .* context of 512; the text tokenizes "
        r"to only 1000 tokens",
    ):
        plan_chunks(1000, 512)
    with pytest.raises(PerplexityError, match="at least 32 tokens"):
        compute_perplexity(TableProvider(np.full(4, 0.25)), np.zeros(31, dtype=int), n_ctx=16)
    assert plan_chunks(1024, 512) == 2 and plan_chunks(1535, 512, 5) == 2 and plan_chunks(5000, 512, 3) == 3


def test_token_nll_matches_log_softmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (70, 1000)).astype(np.float32)
    tgt = rng.integers(0, 1000, 70)
    x = logits.astype(np.float64)
    ref = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1) - x[np.arange(70), tgt]
    np.testing.assert_allclose(token_nll(logits, tgt), ref, rtol=1e-6)


@pytest.mark.parametrize("n_vocab", [1000, 1001])
def test_log_prob_encoding(n_vocab):
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 4, (5, n_vocab)).astype(np.float32)
    logits[1] = 0.0  # flat row: scale 0
    rows = encode_log_probs(logits, n_vocab)
    assert rows.dtype == np.uint16 and rows.shape == (5, 2 * ((n_vocab + 1) // 2) + 4)
    dec = decode_log_probs(rows, n_vocab)
    x = logits.astype(np.float64)
    lsm = x - x.max(1, keepdims=True) - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True))
    near = x >= x.max(1, keepdims=True) - 16
    step = 16 / 65535
    assert np.all(np.abs(dec - lsm)[near] <= step)
    assert np.all(dec[~near] <= lsm.max(1, keepdims=True).repeat(n_vocab, 1)[~near] - 16 + step)
    np.testing.assert_allclose(dec[1], -math.log(n_vocab), atol=1e-6)


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    p = p_logits.astype(np.float64)
    q = q_logits.astype(np.float64)
    lp = p - p.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    lq = q - q.max(1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(1)


def test_kl_divergence_fake(tmp_path):
    rng = np.random.default_rng(3)
    V, n_ctx = 300, 64  # 4 chunks x 31 scored >= the 100 needed for statistics
    rng.dirichlet(np.ones(V))  # draws as the test always did, so the tokens below stay the same
    tokens = rng.integers(0, V, 4 * n_ctx + 5)

    class Fixed:
        n_vocab = V

        def __init__(self, table):
            self.table = table

        def __call__(self, toks, first):
            return self.table[first : len(toks)]

    base_logits = [rng.normal(0, 2, (n_ctx, V)).astype(np.float32) for _ in range(4)]
    q_logits = [b + rng.normal(0, 0.3, b.shape).astype(np.float32) for b in base_logits]

    class Seq:
        def __init__(self, tables):
            self.n_vocab, self.tables, self.i = V, tables, 0

        def __call__(self, toks, first):
            t = self.tables[self.i % len(self.tables)]
            self.i += 1
            return t[first : len(toks)]

    path = tmp_path / "base.kld"
    base_res = compute_perplexity(Seq(base_logits), tokens, n_ctx, kl_base_path=path)
    assert path.exists() and not (tmp_path / "base.kld.tmp").exists()
    f = LogitsFile(path)
    assert (f.header.n_ctx, f.header.n_vocab, f.header.n_chunk) == (n_ctx, V, 4)
    np.testing.assert_array_equal(f.header.tokens, tokens[: 4 * n_ctx])

    # the same model against itself: KLD ~ 0, same top token everywhere
    same = compute_kl_divergence(Seq(base_logits), f)
    s = same.stats.summary()
    assert abs(s["kld"]) < 1e-4 and s["same_top"] == 1.0 and s["p_diff_rms"] < 1e-4
    assert s["ppl"] == pytest.approx(base_res.ppl, rel=1e-5)
    assert s["ppl_base"] == pytest.approx(base_res.ppl, rel=1e-3)

    # a perturbed model: mean KLD equals the exact KL(base || Q) up to the 16-bit storage
    other = compute_kl_divergence(Seq(q_logits), f)
    first = n_ctx // 2
    exact = np.concatenate([_kl(b[first : n_ctx - 1], q[first : n_ctx - 1]) for b, q in zip(base_logits, q_logits)])
    o = other.stats.summary()
    assert o["kld"] == pytest.approx(exact.mean(), rel=2e-3, abs=1e-5)
    assert o["count"] == 4 * n_scored(n_ctx)
    top_b = np.concatenate([b[first : n_ctx - 1].argmax(1) for b in base_logits])
    top_q = np.concatenate([q[first : n_ctx - 1].argmax(1) for q in q_logits])
    assert o["same_top"] == pytest.approx(np.mean(top_b == top_q))
    lines = other.stats.report_lines()
    assert lines[0] == "====== Perplexity statistics ======"
    assert any(line.startswith("Mean    KLD:") for line in lines)
    assert lines[-1].startswith("Same top p:")
    assert len(other.chunk_rows) == 4 and other.chunk_rows[0].startswith("   1    ")


def test_bad_base_files(tmp_path):
    p = tmp_path / "x.kld"
    p.write_bytes(b"not a logits file at all")
    with pytest.raises(PerplexityError, match="does not look like a file of log-probabilities"):
        LogitsFile(p)
    w = LogitsFileWriter(tmp_path / "b.kld", 8, 10, 1, np.arange(8))
    w.write_chunk(np.zeros((n_scored(8), 10), dtype=np.float32))
    w.close()
    data = (tmp_path / "b.kld").read_bytes()
    (tmp_path / "t.kld").write_bytes(data[:-2])
    with pytest.raises(PerplexityError, match="truncated"):
        LogitsFile(tmp_path / "t.kld")
    with pytest.raises(PerplexityError, match="inconsistent vocabulary"):
        compute_kl_divergence(TableProvider(np.full(12, 1 / 12)), LogitsFile(tmp_path / "b.kld"))
    with pytest.raises(PerplexityError, match="cannot read"):
        LogitsFile(tmp_path / "missing.kld")
    # an interrupted run leaves nothing under the real name
    w = LogitsFileWriter(tmp_path / "c.kld", 8, 10, 2, np.arange(16))
    w.write_chunk(np.zeros((n_scored(8), 10), dtype=np.float32))
    w.close()
    assert not (tmp_path / "c.kld").exists() and not (tmp_path / "c.kld.tmp").exists()


# ----------------------------------------------------------------------------
# SmolLM2: lamina's engine, and llama.cpp's logits through the same code

N_CTX, CHUNKS = 128, 4  # 252 scored tokens: enough for a 1% comparison


@pytest.fixture(scope="module")
def smol():
    from lamina.model_cache import fetch_model

    return str(fetch_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def lamina_run(smol, tmp_path_factory):
    from lamina.engine.context import Model
    from lamina.eval.providers import EngineLogits
    from lamina.tokenizer import Tokenizer

    model = Model.load(smol, n_threads=2)
    tok = Tokenizer.from_metadata(model.native.gguf.metadata)
    tokens = tok.encode(TEXT.read_bytes(), add_bos=None, special=False)
    provider = EngineLogits(model, N_CTX, n_batch=64)  # 2 native calls per chunk
    base = tmp_path_factory.mktemp("kld") / "smol.kld"
    bos = tok.bos_id if tok.add_bos else None
    res = compute_perplexity(provider, tokens, N_CTX, CHUNKS, bos, kl_base_path=base)
    return res, provider, base, tokens, bos


def test_smollm2_perplexity_is_sane(lamina_run):
    res = lamina_run[0]
    assert res.n_chunks == CHUNKS and res.count == CHUNKS * n_scored(N_CTX)
    assert 5 < res.ppl < 60, res.ppl  # a 135M model on Alice in Wonderland
    assert 0 < res.ppl_err < res.ppl


def test_smollm2_kld_against_itself(lamina_run):
    res, provider, base, _, bos = lamina_run
    kld = compute_kl_divergence(provider, LogitsFile(base), bos)
    s = kld.stats.summary()
    assert abs(s["kld"]) < 1e-4, s
    assert s["same_top"] == 1.0
    assert s["p_diff_rms"] < 1e-3
    assert s["ppl"] == pytest.approx(res.ppl, rel=1e-6)
    assert abs(s["ln_ppl_ratio"]) < 1e-4


def _final_estimate(stdout: str) -> tuple[float, float]:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("Final estimate: PPL = ") and " +/- " in last, last
    ppl, err = (float(v) for v in last[len("Final estimate: PPL = ") :].split(" +/- "))
    return ppl, err


def test_smollm2_within_1_percent_of_llama_cpp(smol, lamina_run):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python not installed: no llama.cpp logits to compare")
    # llama.cpp runs in its own process: its libggml-base.so.0 and the ggml
    # oracle's (libggml-python) share a soname, and one process gets only one
    res = lamina_run[0]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "perplexity",
            "-m",
            smol,
            "-f",
            str(TEXT),
            "-c",
            str(N_CTX),
            "--chunks",
            str(CHUNKS),
            "-t",
            "2",
            "--llama-cpp",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    ref_ppl, _ = _final_estimate(out.stdout)
    assert res.ppl == pytest.approx(ref_ppl, rel=0.01), (res.ppl, ref_ppl)


def test_cli_final_estimate_line(smol):
    env = dict(os.environ)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "perplexity",
            "-m",
            smol,
            "-f",
            str(TEXT),
            "-c",
            "64",
            "--chunks",
            "2",
            "-t",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    ppl, err = _final_estimate(out.stdout)
    assert ppl > 1 and err > 0
    assert "[1]" in out.stdout and "[2]" in out.stdout


def test_cli_too_short_text(smol, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Alice was beginning to get very tired of sitting by her sister on the bank.")
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "perplexity", "-m", smol, "-f", str(short)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert "you need at least 1024 tokens" in out.stderr and "Traceback" not in out.stderr


def test_cli_kl_divergence_needs_base(smol):
    out = subprocess.run(
        [sys.executable, "-m", "lamina", "perplexity", "-m", smol, "--kl-divergence"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "--kl-divergence-base" in out.stderr


def test_cli_kl_divergence_round_trip(smol, tmp_path):
    base = tmp_path / "smol.kld"
    cmd = [sys.executable, "-m", "lamina", "perplexity", "-m", smol, "-t", "2"]
    out = subprocess.run(
        cmd + ["-f", str(TEXT), "-c", "64", "--chunks", "4", "--kl-divergence-base", str(base)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert base.stat().st_size == LogitsFile(base).header.data_offset + 4 * LogitsFile(base).header.chunk_bytes
    out = subprocess.run(
        cmd + ["--kl-divergence-base", str(base), "--kl-divergence"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("chunk             PPL") and lines[4].startswith("   4    ")
    assert "====== KL divergence statistics ======" in lines
    assert "Same top p: 100.000 ± 0.000 %" in lines
    kld_line = next(line for line in lines if line.startswith("Mean    KLD:"))
    assert abs(float(kld_line.split()[2])) < 1e-4
