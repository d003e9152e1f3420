"""Speculative decoding: prompt-lookup drafts, the accept/reject rule (a
chi-square test on a fixed distribution), and end to end on SmolLM2: the
same tokens as without speculation at temperature 0 (prompt lookup, a draft
model, several requests drafting in one batch), the target's distribution
over the first tokens when sampling (against numpy's softmax of the
model's logits), and clear refusals of what cannot combine with it."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter

import numpy as np
import pytest

from lamina import Llama, LlamaPromptLookupDecoding
from lamina.engine.context import Context, Model
from lamina.generation import open_session
from lamina.model_cache import fetch_model
from lamina.sampling import Sampler, SamplingParams
from lamina.speculative import LlamaDraftFile, LlamaDraftModel, Speculative, SpeculativeError
from lamina.speculative.lookup import lookup_draft
from lamina.speculative.policy import PROBE_EVERY, DraftLength
from lamina.speculative.verify import accept_or_resample, check_sampler

GREEDY = SamplingParams(temperature=0)
CODE = """def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
"""
COPY_PROMPT = "Here is a Python file:\n```python\n" + CODE + "```\n\nThe same file again:\n```python\n"
BOUND = 120  # seconds a thread here may take


def chi2_critical(df: int, z: float = 3.719) -> float:
    """The chi-square quantile at the normal quantile z (3.719: p = 1e-4), Wilson-Hilferty."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: Counter, probs: dict, n: int) -> tuple[float, int]:
    """Pearson's statistic of counts against probs, bins with expectation < 5 pooled; (stat, df)."""
    big = [k for k, p in probs.items() if p * n >= 5]
    rest_p = 1.0 - sum(probs[k] for k in big)
    rest_c = n - sum(counts[k] for k in big)
    stat = sum((counts[k] - n * probs[k]) ** 2 / (n * probs[k]) for k in big)
    bins = len(big)
    if rest_p * n >= 5:
        stat += (rest_c - n * rest_p) ** 2 / (n * rest_p)
        bins += 1
    elif rest_c > 5 + 10 * rest_p * n:  # mass where the target has (almost) none
        stat = math.inf
    return stat, bins - 1


# ---------------------------------------------------------------- lookup


def test_lookup_takes_what_followed_the_latest_occurrence():
    #        0  1  2  3  4  5  6  7  8  9
    toks = [5, 6, 7, 8, 5, 6, 9, 1, 5, 6]
    assert lookup_draft(toks, 2, 3).tolist() == [9, 1, 5]  # the latest "5 6" (index 4), not the first
    assert lookup_draft(toks, 2, 10).tolist() == [9, 1, 5, 6]  # up to the end
    assert lookup_draft([1, 2, 3, 4], 3, 5).tolist() == []  # 4 never occurred before
    assert lookup_draft([3, 1, 2, 9, 2], 2, 2).tolist() == [9, 2]  # no earlier "9 2": the 1-gram "2" at index 2
    assert lookup_draft([7], 2, 4).tolist() == []


def _drafting_steps(policy: DraftLength, sure: float, right: float, model: bool, steps: int = 400) -> int:
    """Steps out of `steps` on which the policy drafts (fixed seed). Each
    guess is confident with probability `sure` (a draft model stops at its
    first unsure pass, which it still paid for; prompt lookup always is
    sure of what it found) and, if so, right with probability `right`."""
    rng = np.random.default_rng(7)
    drafting = 0
    for _ in range(steps):
        k = policy.next()
        if k == 0:
            continue
        drafting += 1
        drafted = passes = 0
        while drafted < k:
            passes += 1
            if rng.random() >= sure:
                break
            drafted += 1
        accepted = 0
        while accepted < drafted and rng.random() < right:
            accepted += 1
        policy.update(drafted, accepted, passes if model else None)
    return drafting


def test_the_draft_policy_counts_what_a_draft_model_costs():
    # prompt lookup (free drafts) keeps drafting at an 80% hit rate, and mostly probes at 50%
    assert _drafting_steps(DraftLength(8), 1.0, 0.8, model=False) > 250
    assert _drafting_steps(DraftLength(8), 1.0, 0.5, model=False) < 100
    # a draft model at 0.31 of the target (SmolLM2 Q4_0 for its f16): on code it is sure and right, and drafts;
    # on free text it is unsure after a token or two (each unsure pass paid for), and only probes
    assert _drafting_steps(DraftLength(8, draft_cost=0.31), 0.97, 0.98, model=True) > 350
    assert _drafting_steps(DraftLength(8, draft_cost=0.31), 0.5, 0.9, model=True) < 100
    # sure but often wrong does not pay either
    assert _drafting_steps(DraftLength(8, draft_cost=0.31), 1.0, 0.6, model=True) < 100
    # as costly as the target: never worth it, however good
    assert _drafting_steps(DraftLength(8, draft_cost=1.0), 1.0, 1.0, model=True) < 100
    # not adaptive: always n_max, whatever happens
    fixed = DraftLength(5, adaptive=False, draft_cost=0.31)
    assert _drafting_steps(fixed, 0.0, 0.0, model=True) == 400 and fixed.next() == 5
    # the first draft is tried on the priors where they promise a gain; a draft costlier than the target waits
    assert DraftLength(4, draft_cost=0.31).next() > 0
    assert DraftLength(4, draft_cost=2.0).next() == 0


def test_lookup_decoding_is_llama_cpp_pythons_callable():
    d = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=2)
    assert isinstance(d, LlamaDraftModel)
    out = d(np.array([1, 2, 3, 4, 1, 2, 3], dtype=np.intc))
    assert out.dtype == np.intc and out.tolist() == [4, 1]
    for bad in ({"num_pred_tokens": 0}, {"max_ngram_size": -1}, {"num_pred_tokens": 2.5}):
        with pytest.raises(SpeculativeError, match=next(iter(bad))):
            LlamaPromptLookupDecoding(**bad)


# ---------------------------------------------------------------- the rule


def _rule_samples(p, q, n, seed):
    """n outputs of: draw d from q (None: always token 0, a point mass), then the rule."""
    rng = np.random.default_rng(seed)
    out = Counter()
    for _ in range(n):
        d = 0 if q is None else int(rng.choice(q.size, p=q))
        out[accept_or_resample(p, q, d, rng)[1]] += 1
    return out


@pytest.mark.parametrize("point_mass", [False, True])
def test_accept_reject_rule_leaves_the_target_distribution(point_mass):
    p = np.array([0.05, 0.4, 0.1, 0.25, 0.2, 0.0])
    q = None if point_mass else np.array([0.3, 0.1, 0.3, 0.05, 0.15, 0.1])
    n = 20000
    counts = _rule_samples(p, q, n, seed=7)
    assert counts[5] == 0  # never a token the target gives no mass
    stat, df = chi2(counts, dict(enumerate(p)), n)
    assert stat < chi2_critical(df), (stat, counts)
    # the test can fail: the draft's own samples (every draft accepted) are far from p
    drafts = Counter({0: n}) if q is None else Counter(np.random.default_rng(7).choice(6, size=n, p=q).tolist())
    assert chi2(drafts, dict(enumerate(p)), n)[0] > 10 * chi2_critical(df)


def test_rule_accepts_a_draft_the_target_prefers():
    p, q = np.array([0.2, 0.8]), np.array([0.5, 0.5])
    rng = np.random.default_rng(0)
    assert all(accept_or_resample(p, q, 1, rng) == (True, 1) for _ in range(200))  # p/q > 1: always


def test_samplers_verification_cannot_reproduce_are_refused():
    class Mirostat(Sampler):
        pass

    with pytest.raises(SpeculativeError, match="Mirostat"):
        check_sampler(Mirostat(SamplingParams()))
    check_sampler(Sampler(SamplingParams(temperature=0.7, top_k=5, repeat_penalty=1.1)))


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def smollm():
    return str(fetch_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def session(smollm):
    s = open_session(smollm, n_ctx=2048, n_threads=2, n_slots=8)
    yield s
    s.close()


@pytest.fixture(scope="module")
def draft_file(smollm):
    d = LlamaDraftFile(smollm, n_max=6, p_min=0.0)
    yield d
    d.close()


def _run(session, prompt, sampler, n, spec=None):
    toks = session.tokenizer.encode(prompt, special=True)
    r = session.generate(toks, sampler, max_tokens=n, speculative=spec)
    pieces = list(r.pieces())
    assert pieces[-1].finish_reason in ("stop", "length"), pieces[-1]
    return [p.token for p in pieces if p.token is not None], r


@pytest.mark.parametrize("drafter", ["lookup", "draft-model"])
def test_greedy_speculation_gives_the_same_tokens(session, draft_file, drafter):
    d = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=8) if drafter == "lookup" else draft_file
    spec = Speculative(d, adaptive=drafter == "lookup")  # the target drafting for itself never pays: forced on
    prompts = (COPY_PROMPT, "List the days of the week: Monday, Tuesday,")
    for prompt in prompts if drafter == "lookup" else prompts[:1]:
        plain, _ = _run(session, prompt, Sampler(GREEDY), 32)
        fast, r = _run(session, prompt, Sampler(GREEDY), 32, spec)
        assert fast == plain
        assert r.spec.drafted > 0 and r.spec.accepted > 0
        if drafter == "draft-model":  # the same model drafting: every greedy guess is the target's
            assert r.spec.accepted == r.spec.drafted


def test_a_draft_model_that_costs_what_the_target_does_stops_drafting(session, draft_file):
    """The target drafting for itself: every guess is right, yet each costs
    a full forward pass more than it saves, so the default policy tries
    one draft and then decodes plainly, probing now and then."""
    plain, _ = _run(session, COPY_PROMPT, Sampler(GREEDY), 32)
    fast, r = _run(session, COPY_PROMPT, Sampler(GREEDY), 32, Speculative(draft_file))
    assert fast == plain
    assert draft_file.cost == pytest.approx(1.0)
    assert r.spec.accepted == r.spec.drafted > 0
    assert r.spec.steps <= 1 + 32 // PROBE_EVERY  # the first draft, then probes only


def test_requests_drafting_together_get_what_they_get_alone(session, draft_file):
    prompts = [COPY_PROMPT, "Count: one, two, three, four,"]
    alone = [_run(session, p, Sampler(GREEDY), 24)[0] for p in prompts]
    got: list = [None, None]

    def worker(i):
        got[i] = _run(session, prompts[i], Sampler(GREEDY), 24, Speculative(draft_file, adaptive=False))[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert got == alone


def test_sampled_drafts_from_the_same_model_are_all_accepted(session, draft_file):
    """The draft samples from its own distribution q; with the target's own
    weights q == p, so every guess passes min(1, p/q) = 1: a q that does not
    belong to its token would show as rejections."""
    params = SamplingParams(temperature=0.9, top_k=20)
    spec = Speculative(draft_file, adaptive=False)
    tokens, r = _run(session, "The sea is blue and the sky is", Sampler(params, 3), 24, spec)
    assert len(tokens) > 2 and r.spec.drafted > 0
    assert r.spec.accepted == r.spec.drafted


def _first_tokens_distribution(smollm, prompt_tokens, params, depth):
    """Exact probabilities of every sequence of `depth` sampled tokens under
    top-k + temperature, from the model's logits and numpy's softmax."""
    model = Model.load(smollm, n_threads=2)
    ctx = Context(model, n_ctx=512)
    out = {}

    def walk(prefix, prob):
        ctx.truncate(0)
        logits = ctx.eval(prompt_tokens + list(prefix)).astype(np.float64)
        top = np.argsort(-logits)[: params.top_k]
        z = logits[top] / params.temperature
        ps = np.exp(z - z.max())
        ps /= ps.sum()
        for t, pt in zip(top.tolist(), ps):
            if len(prefix) + 1 == depth:
                out[prefix + (t,)] = prob * pt
            else:
                walk(prefix + (t,), prob * pt)

    walk((), 1.0)
    ctx.close()
    model.close()
    return out


def test_sampling_with_prompt_lookup_keeps_the_targets_distribution(smollm, session):
    params = SamplingParams(temperature=1.5, top_k=3, top_p=1.0, min_p=0.0)
    prompt = "red green blue red green blue red"
    toks = session.tokenizer.encode(prompt, special=True)
    exact = _first_tokens_distribution(smollm, toks, params, 3)
    spec = Speculative(LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=4), adaptive=False)
    n, wave = 240, 24  # a wave of requests at a time: the engine decodes (and drafts) them together
    counts: Counter = Counter()
    drafted = accepted = 0
    for first in range(0, n, wave):
        requests = [
            session.generate(toks, Sampler(params, seed), max_tokens=3, speculative=spec)
            for seed in range(first, first + wave)
        ]
        for r in requests:
            out = tuple(p.token for p in r.pieces() if p.token is not None)
            assert len(out) == 3
            counts[out] += 1
            drafted, accepted = drafted + r.spec.drafted, accepted + r.spec.accepted
    assert drafted >= n and 0 < accepted < drafted  # every request verified a draft; some kept, some not
    stat, df = chi2(counts, exact, n)
    assert stat < chi2_critical(max(df, 1)), (stat, df, counts.most_common(8))


# ---------------------------------------------------------------- refusals


def test_what_cannot_combine_is_refused(smollm, session):
    from lamina.grammar import Grammar

    spec = Speculative(LlamaPromptLookupDecoding())
    toks = session.tokenizer.encode("Hi", special=True)
    with pytest.raises(SpeculativeError, match="grammar"):
        session.engine.submit(toks, Sampler(GREEDY), speculative=spec, grammar=Grammar.from_gbnf('root ::= "a"'))
    with pytest.raises(SpeculativeError, match="draft_model"):
        Speculative(object())  # type: ignore[arg-type]
    with pytest.raises(SpeculativeError, match="draft min"):
        Speculative(LlamaPromptLookupDecoding(), n_max=2, n_min=3)
    gemma = LlamaDraftFile(fetch_model("gemma-3-270m"), n_max=4)
    try:
        with pytest.raises(SpeculativeError, match="vocabulary"):
            session.engine.submit(toks, Sampler(GREEDY), speculative=Speculative(gemma))
    finally:
        gemma.close()


def test_llama_draft_model_parameter(smollm):
    prompt = COPY_PROMPT
    with Llama(smollm, n_ctx=1024, n_threads=2, verbose=False) as plain:
        want = plain(prompt, max_tokens=16, temperature=0)["choices"][0]["text"]
    with Llama(smollm, n_ctx=1024, n_threads=2, verbose=False, draft_model=LlamaPromptLookupDecoding()) as fast:
        assert fast(prompt, max_tokens=16, temperature=0)["choices"][0]["text"] == want
        with pytest.raises(SpeculativeError, match="grammar"):
            fast(prompt, max_tokens=4, grammar='root ::= "x"')
    with pytest.raises(SpeculativeError, match="draft_model"):
        Llama(smollm, verbose=False, draft_model="small.gguf")


# ---------------------------------------------------------------- lamina run


def test_lamina_run_lookup_and_model_draft(smollm, capsys):
    from lamina.cli import run

    base = [smollm, "-p", COPY_PROMPT, "-n", "16", "--temp", "0", "-t", "2", "-c", "1024"]
    outs = []
    for extra in ([], ["--lookup"], ["-md", smollm, "--draft-max", "3", "--draft-p-min", "0"]):
        assert run.main(base + extra) == 0
        got = capsys.readouterr()
        outs.append(got.out)
        if extra:
            assert re.search(r"draft \d+ tok, accepted \d+", got.err), got.err
    assert outs[1] == outs[0] and outs[2] == outs[0] and outs[0].strip()
    for extra, message in (
        (["--lookup", "--grammar", 'root ::= "a"'], "cannot be combined with --grammar"),
        (["--draft-max", "3"], "--draft-max needs --lookup or --model-draft"),
        (["--lookup", "--draft-p-min", "0.5"], "--draft-p-min applies to a draft model"),
        (["--lookup", "--draft-max", "2", "--draft-min", "3"], "draft min"),
    ):
        assert run.main(base + extra) != 0
        assert message in capsys.readouterr().err


def test_a_failing_draft_model_ends_its_request_only(session):
    class Broken(LlamaDraftModel):
        def __call__(self, input_ids, /, **kwargs):
            raise RuntimeError("no guesses today")

    class OutOfVocab(LlamaDraftModel):
        def __call__(self, input_ids, /, **kwargs):
            return np.array([10**9], dtype=np.int64)

    toks = session.tokenizer.encode("Count: one, two, three,", special=True)
    for drafter, message in ((Broken(), "no guesses today"), (OutOfVocab(), "outside the vocabulary")):
        bad = session.generate(toks, Sampler(GREEDY), max_tokens=8, speculative=Speculative(drafter))
        good = session.generate(toks, Sampler(GREEDY), max_tokens=8)
        last = list(bad.pieces())[-1]
        assert last.finish_reason == "error" and message in str(last.error)
        assert list(good.pieces())[-1].finish_reason == "length"
