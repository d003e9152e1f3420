"""`lamina serve --replicas 2` on a local Ray cluster (127.0.0.1, started by
the server process): the openai client against its one endpoint gets, at
temperature 0, what the single server gives; a chat's next turn lands on the
replica that holds its KV cache (its response header names the replica,
OpenAI's cached_tokens shows the reuse, per-replica /metrics count it); a
replica killed with SIGKILL fails its in-flight stream with a 503-style
error, the live replica serves what comes next, and Ray starts a new one."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("ray.serve")

from lamina.model_cache import fetch_model  # noqa: E402
from lamina.server.ray_router import rendezvous  # noqa: E402
from lamina.server.route_key import route_key  # noqa: E402
from support.serve_process import start_server, stop_server  # noqa: E402

KEY = "ray-key"
FLAGS = ["-np", "2", "-c", "1024", "-t", "1", "--api-key", KEY, "--alias", "smollm2"]
HEADER = "x-lamina-replica"


@pytest.fixture(scope="module")
def servers():
    model = str(fetch_model("smollm2-135m-instruct"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both start at once: Ray's start is the long one
        starts = [pool.submit(start_server, model, *FLAGS), pool.submit(start_server, model, *FLAGS, "--replicas", "2")]
        concurrent.futures.wait(starts)
    if any(f.exception() for f in starts):
        for f in starts:
            if f.exception() is None:
                stop_server(f.result()[0])
        raise next(e for e in (f.exception() for f in starts) if e is not None)
    (single, single_base), (replicas, base) = (f.result() for f in starts)
    try:
        yield single_base, base, replicas
    finally:
        stop_server(single)
        stop_server(replicas)


def _client(base: str):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)


def _metrics(base: str) -> str:
    return httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text


def _per_replica(text: str, name: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(rf'^{name}\{{replica="([^"]+)"[^}}]*\}} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def test_a_chats_later_turns_share_its_routing_key_and_a_dead_replica_moves_only_its_keys():
    chat = "/v1/chat/completions"
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me more."}]
    key = route_key(chat, json.dumps({"messages": turn1}).encode())
    assert key and key == route_key(chat, json.dumps({"messages": turn2, "temperature": 0}).encode())
    assert key != route_key(chat, json.dumps({"messages": [{"role": "user", "content": "Bye"}]}).encode())
    long = "Once upon a time " * 10
    assert route_key("/v1/completions", json.dumps({"prompt": long}).encode()) == route_key(
        "/v1/completions", json.dumps({"prompt": long + " there was"}).encode()
    )
    assert route_key(chat, b"{not json") is None and route_key("/v1/embeddings", b'{"input": "x"}') is None
    keys = [f"k{i}" for i in range(300)]
    three = {k: rendezvous(k, ["a", "b", "c"]) for k in keys}
    two = {k: rendezvous(k, ["a", "c"]) for k in keys}
    assert 60 < sum(v == "b" for v in three.values()) < 140  # about a third each
    assert all(two[k] == three[k] for k in keys if three[k] != "b")  # b's death moves b's keys only


def test_outputs_equal_the_single_server(servers):
    single, replicas = (_client(b) for b in servers[:2])
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    want = single.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=16)
    got = replicas.chat.completions.create(model="smollm2", messages=messages, temperature=0, max_tokens=16)
    assert got.choices[0].message.content == want.choices[0].message.content
    assert got.usage.prompt_tokens == want.usage.prompt_tokens
    assert got.usage.completion_tokens == want.usage.completion_tokens
    stream = replicas.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=16, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want.choices[0].message.content
    want = single.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=12)
    got = replicas.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=12)
    assert got.choices[0].text == want.choices[0].text
    # the same validation: a bad request is the same 400, naming the same field
    for c in (single, replicas):
        with pytest.raises(openai.BadRequestError, match="temperature"):
            c.chat.completions.create(model="smollm2", messages=messages, temperature="hot")  # type: ignore[arg-type]
    r = httpx.post(f"{servers[1]}/v1/chat/completions", json={"messages": messages}, timeout=10)
    assert r.status_code == 401  # and the same API key


def test_chats_continue_on_the_replica_holding_their_prefix(servers):
    base = servers[1]
    client = _client(base)
    time.sleep(1.5)  # the earlier tests' tokens are pushed (every second) before the count starts
    before = _per_replica(_metrics(base), "lamina_completion_tokens_total")
    openers = ["Tell me about cats.", "Tell me about the sea.", "What is a prime number?", "Describe a forest."]
    landed: dict[str, float] = {}
    chat = client.chat.completions.with_raw_response.create
    for opener in openers:
        messages = [{"role": "user", "content": opener}]
        raw = chat(model="smollm2", messages=messages, temperature=0, max_tokens=8)
        first, replica = raw.parse(), raw.headers[HEADER]
        messages.append({"role": "assistant", "content": first.choices[0].message.content})
        messages.append({"role": "user", "content": "More."})
        raw = chat(model="smollm2", messages=messages, temperature=0, max_tokens=8)
        second = raw.parse()
        assert raw.headers[HEADER] == replica, opener
        # the second turn found the first one's KV in that replica's slot
        assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1, opener
        landed[replica] = landed.get(replica, 0) + first.usage.completion_tokens + second.usage.completion_tokens
    # /metrics counts each replica's tokens under its own label (pushed each second)
    deadline = time.monotonic() + 10
    while True:
        after = _per_replica(_metrics(base), "lamina_completion_tokens_total")
        grown = {r: after.get(r, 0) - before.get(r, 0) for r in after}
        if all(grown.get(r) == n for r, n in landed.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {r: grown.get(r) for r in landed} == landed
    assert len(after) == 2


def test_a_killed_replica_is_survived(servers):
    base = servers[1]
    client = _client(base)
    # each replica pushes its process line every second: run alone, the test may ask before both have
    deadline = time.monotonic() + 15
    while True:
        where = re.finditer(r'lamina_replica_process\{replica="([^"]+)",node="[^"]*",pid="(\d+)"\}', _metrics(base))
        pids = {m.group(1): int(m.group(2)) for m in where}
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(pids) == 2
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        temperature=0,
        max_tokens=400,
        stream=True,
    )
    victim = raw.headers[HEADER]
    stream = iter(raw.parse())
    next(stream)
    t0 = time.monotonic()
    os.kill(pids[victim], signal.SIGKILL)
    with pytest.raises(openai.APIError, match="replica serving this request died"):
        for _ in stream:
            pass
    failed_after = time.monotonic() - t0
    assert failed_after < 15

    def ask(i: int) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": f"Count to {i}."}], temperature=0, max_tokens=4
        )
        assert raw.parse().choices[0].message.content
        return raw.headers[HEADER]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        served = list(pool.map(ask, range(4)))
    assert victim not in served
    # Ray replaces the dead replica: two live replicas report metrics again, the victim not among them
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        live = _per_replica(_metrics(base), "lamina_slots")
        if len(live) == 2 and victim not in live:
            break
        time.sleep(1)
    assert len(live) == 2 and victim not in live
    print(
        f"\nkill -9 at t=0; in-flight stream failed at {failed_after:.1f}s; "
        f"4 requests served by {sorted(set(served))}; replaced by t={time.monotonic() - t0:.1f}s"
    )


def test_shutdown_drains(servers):
    """SIGTERM to `lamina serve --replicas`: a request in flight still gets its whole answer, then it exits 0."""
    base, proc = servers[1], servers[2]
    messages = [{"role": "user", "content": "Describe the sea."}]
    request: dict = dict(model="smollm2", messages=messages, temperature=0, max_tokens=48)
    want = _client(servers[0]).chat.completions.create(**request)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(_client(base).chat.completions.create, **request)
        time.sleep(1.0)
        t = time.monotonic()
        proc.terminate()
        done = reply.result(timeout=60)
    assert done.choices[0].message.content == want.choices[0].message.content
    assert proc.wait(timeout=60) == 0 and time.monotonic() - t < 60
