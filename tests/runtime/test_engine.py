"""The batched engine under concurrent callers: what each gets is what it
gets alone (greedy, and sampled with its own seed), streams are independent,
a cancelled stream frees its slot, a full queue is a typed error, prompts
reuse cached prefixes (their own slot's, and another slot's by a shared copy)."""

from __future__ import annotations

import threading
import time

import pytest

from lamina import Llama
from lamina.engine.engine import Engine, QueueFullError
from lamina.generation import open_session
from lamina.model_cache import fetch_model
from lamina.sampling import Sampler, SamplingParams

GREEDY = SamplingParams(temperature=0)
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):",
    "The three primary colors are",
    "To make a cup of tea, first",
    "The largest planet in the solar system",
    "In 1492, Columbus",
    "Water boils at",
]
BOUND = 300  # seconds any waiting loop here may take


@pytest.fixture(scope="module")
def llm():
    with Llama("smollm2-135m-instruct", n_ctx=2048, n_threads=2, n_seq_max=4, verbose=False) as llm:
        yield llm


def _text(llm, prompt, **kw):
    return llm.create_completion(prompt, max_tokens=16, temperature=0, **kw)["choices"][0]["text"]


@pytest.mark.parametrize("n_threads", [1, 2, 4, 8])
def test_n_threads_on_one_llama_get_what_they_get_alone(llm, n_threads):
    alone = [_text(llm, p) for p in PROMPTS[:n_threads]]
    got: list[str | None] = [None] * n_threads
    errors = []

    def worker(i):
        try:
            got[i] = _text(llm, PROMPTS[i])
        except Exception as e:  # collected: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert not errors and got == alone


def test_sampled_streams_with_seeds_replay_in_company(llm):
    kw = dict(max_tokens=20, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0)
    alone = [llm.create_completion(p, seed=i, **kw)["choices"][0]["text"] for i, p in enumerate(PROMPTS[:4])]
    results = {}

    def worker(i):
        results[i] = llm.create_completion(PROMPTS[i], seed=i, **kw)["choices"][0]["text"]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert [results[i] for i in range(4)] == alone


def test_an_open_stream_does_not_block_other_callers(llm):
    stream = llm.create_completion(PROMPTS[1], max_tokens=64, temperature=0, stream=True)
    next(stream)  # held open, unread, in this thread
    # same thread, and another thread, both complete while it stays open
    assert _text(llm, PROMPTS[0]) == _text(llm, PROMPTS[0])
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("text", _text(llm, PROMPTS[2])))
    t.start()
    t.join(BOUND)
    assert box["text"]
    stream.close()


def test_streams_of_one_thread_interleave(llm):
    """two open streams read in turns from one thread, each as it would be alone"""
    alone = [_text(llm, PROMPTS[0]), _text(llm, PROMPTS[3])]
    a = llm.create_completion(PROMPTS[0], max_tokens=16, temperature=0, stream=True)
    b = llm.create_completion(PROMPTS[3], max_tokens=16, temperature=0, stream=True)
    texts = ["", ""]
    for ca, cb in zip(a, b):
        texts[0] += ca["choices"][0]["text"]
        texts[1] += cb["choices"][0]["text"]
    texts[0] += "".join(c["choices"][0]["text"] for c in a)
    texts[1] += "".join(c["choices"][0]["text"] for c in b)
    assert texts == alone


@pytest.fixture()
def session():
    s = open_session(fetch_model("smollm2-135m-instruct"), n_ctx=1024, n_threads=2, n_slots=2, max_queue=1)
    yield s
    s.close()


def _wait(cond, what):
    deadline = time.monotonic() + BOUND
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_cancelled_stream_frees_its_slot_at_once(session):
    engine: Engine = session.engine
    tokens = session.tokenizer.encode(PROMPTS[1])
    request = session.generate(tokens, Sampler(GREEDY), max_tokens=500)
    pieces = request.pieces()
    next(pieces)
    assert engine.n_busy == 1
    pieces.close()  # the consumer went away
    _wait(lambda: engine.n_busy == 0, "the slot was not freed")
    assert request.finish_reason == "cancelled"


def test_the_queue_limit_is_a_typed_error_not_a_hang(session):
    tokens = session.tokenizer.encode(PROMPTS[0])
    running = [session.generate(tokens, Sampler(GREEDY), max_tokens=400) for _ in range(2)]
    _wait(lambda: session.engine.n_busy == 2, "two slots never filled")
    queued = session.generate(tokens, Sampler(GREEDY), max_tokens=4)  # max_queue=1: one may wait
    with pytest.raises(QueueFullError, match="max_queue=1"):
        session.generate(tokens, Sampler(GREEDY), max_tokens=4)
    for r in running:
        r.cancel()
    assert [p for p in queued.pieces()][-1].finish_reason in ("length", "stop")


def test_the_next_turn_reuses_its_slots_cache(session):
    first = session.tokenizer.encode("A long shared system prompt. " * 20 + "Question one?")
    r1 = session.generate(first, Sampler(GREEDY), max_tokens=8)
    reply = list(r1.pieces())
    second = first + r1.output + session.tokenizer.encode(" Question two?", add_bos=False)
    r2 = session.generate(second, Sampler(GREEDY), max_tokens=4)
    list(r2.pieces())
    assert r1.timings.prompt_tokens == len(first)
    assert r2.timings.prompt_tokens == len(second) - len(first) - len(r1.output) + 1  # the last reply token
    assert reply


def test_a_shared_prefix_is_copied_from_another_slot(session):
    system = session.tokenizer.encode("You are a helpful assistant who answers briefly. " * 8)
    a = session.generate(system + session.tokenizer.encode(" Hi!", add_bos=False), Sampler(GREEDY), max_tokens=400)
    _wait(lambda: a.output, "the first request never started")
    # the other slot is empty: the prefix comes from the busy one, shared, not recomputed
    b = session.generate(system + session.tokenizer.encode(" Hello!", add_bos=False), Sampler(GREEDY), max_tokens=4)
    list(b.pieces())
    a.cancel()
    assert b.timings.prompt_tokens < len(system) // 2
    # and it equals a run from scratch
    session.reset()
    c = session.generate(b.prompt, Sampler(GREEDY), max_tokens=4)
    list(c.pieces())
    assert c.output == b.output and c.timings.prompt_tokens == len(b.prompt)


def test_a_thousand_short_requests_leave_no_growth(session):
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    tokens = session.tokenizer.encode("Hi")
    for i in range(50):  # warm up allocators and caches
        list(session.generate(tokens + [100 + i], Sampler(GREEDY), max_tokens=1).pieces())
    before = rss()
    for i in range(1000):
        list(session.generate(tokens + [100 + i % 50], Sampler(GREEDY), max_tokens=1).pieces())
    # the slots keep their last sequences for reuse: at most one block each
    usage = session.context.kv_usage()
    assert usage["cells_used"] <= 2 * usage["block_size"], usage
    assert rss() - before < 32 << 20, (before, rss())
