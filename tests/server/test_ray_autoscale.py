"""`lamina serve --min-replicas 1 --max-replicas 2` on a local Ray cluster
(127.0.0.1, started by the server process), with the settings that make
Ray's autoscaler react in seconds: concurrent streaming chats from the
openai client make Ray start a second replica (Ray's own count, from
serve.status(), in the aggregated /metrics), the new replica joins the
prefix router's hash ring (a conversation's next turn lands on the replica
rendezvous hashing now picks, and still gives the single server's text),
every request gives the single server's text at temperature 0, and when the
load stops Ray scales back down to one replica."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("ray.serve")

from lamina.model_cache import fetch_model  # noqa: E402
from lamina.server.ray_router import rendezvous  # noqa: E402
from lamina.server.route_key import route_key  # noqa: E402
from support.serve_process import start_server, stop_server  # noqa: E402

KEY = "scale-key"
FLAGS = ["-np", "8", "-c", "4096", "-t", "1", "--api-key", KEY, "--alias", "smollm2"]
# Ray reacts within seconds: load reports every 0.5 s averaged over 2 s, 1 s to add a replica, 3 s to remove one.
# Three streams in flight against a target of one per replica ask for three replicas, capped at two; with 8 slots
# a replica never fills (even counting a finished stream the router has not yet heard the end of), so the router
# always sends a request to the replica its hash picks
SCALING = ["--min-replicas", "1", "--max-replicas", "2", "--target-ongoing-requests", "1",
           "--upscale-delay-s", "1", "--downscale-delay-s", "3", "--metrics-interval-s", "0.5",
           "--look-back-period-s", "2"]  # fmt: skip
LOAD_CLIENTS = 3
LOAD_PROMPTS = ["Write a poem about rain.", "List some fruits.", "Explain what a river is.", "Describe a mountain."]
HEADER = "x-lamina-replica"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def servers():
    model = str(fetch_model("smollm2-135m-instruct"))
    single, single_base = start_server(model, *FLAGS)
    try:
        scaled, base = start_server(model, *FLAGS, *SCALING)
    except BaseException:
        stop_server(single)
        raise
    try:
        yield single_base, base
    finally:
        stop_server(scaled)
        stop_server(single)


def _client(base: str):
    return openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=60)


def _replicas(base: str) -> tuple[int, set[str]]:
    """(Ray's RUNNING replicas, the replicas reporting metrics) from the aggregated /metrics"""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    running = re.search(r'^lamina_ray_replicas\{state="RUNNING"\} (\S+)$', text, re.M)
    reporting = set(re.findall(r'^lamina_slots\{replica="([^"]+)"', text, re.M))
    return (int(float(running.group(1))) if running else -1), reporting


def _wait_for(base: str, count: int, deadline_s: float) -> set[str]:
    deadline = time.monotonic() + deadline_s
    while True:
        running, reporting = _replicas(base)
        if running == count and len(reporting) == count:
            return reporting
        assert time.monotonic() < deadline, f"still {running} running / {sorted(reporting)} reporting, want {count}"
        time.sleep(0.25)


def _ask(client, messages: list[dict], max_tokens: int = 8, stream: bool = False) -> tuple[str, str]:
    """(the reply's text, the replica that answered)"""
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=messages, temperature=0, max_tokens=max_tokens, stream=stream
    )
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices), raw.headers[HEADER]
    return raw.parse().choices[0].message.content, raw.headers[HEADER]


def _key(messages: list[dict]) -> str:
    key = route_key(CHAT, json.dumps({"messages": messages}).encode())
    assert key
    return key


def test_load_adds_a_replica_that_joins_the_ring_and_its_end_removes_it(servers):
    single_base, base = servers
    single, client = _client(single_base), _client(base)
    (first,) = _wait_for(base, 1, 30)

    # one replica: every chat starts on it
    chats = []
    for opener in ["Tell me about cats.", "What is a prime number?", "Describe a forest.", "Name a planet."]:
        messages = [{"role": "user", "content": opener}]
        text, replica = _ask(client, messages)
        assert replica == first
        chats.append([*messages, {"role": "assistant", "content": text}, {"role": "user", "content": "More."}])

    # load: streaming chats back to back, until the new replica is up and has shown it is in the ring
    stop = threading.Event()
    served: list[tuple[str, str, str]] = []  # (prompt, text, replica)
    failures: list[BaseException] = []

    def load(i: int) -> None:
        n = i
        while not stop.is_set():
            prompt = LOAD_PROMPTS[n % len(LOAD_PROMPTS)]
            n += LOAD_CLIENTS
            try:
                served.append((prompt, *_ask(client, [{"role": "user", "content": prompt}], 16, stream=True)))
            except BaseException as e:  # the test fails on it below
                failures.append(e)
                return

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(LOAD_CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        both = _wait_for(base, 2, 45)
        up = time.monotonic() - t0
        (second,) = both - {first}
        # a chat whose key the new replica wins starts there, streaming, once the ingress's router has heard of
        # it (Ray tells the routers after its own count changes)
        opener = next(
            m
            for m in ([{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(64))
            if rendezvous(_key(m), sorted(both)) == second
        )
        deadline = time.monotonic() + 10
        while (reply := _ask(client, opener, stream=True))[1] != second and time.monotonic() < deadline:
            time.sleep(0.2)
        joined = time.monotonic() - t0
        assert reply[1] == second
        # the others' next turns go where rendezvous hashing over both replicas sends their keys (moved or not)
        for messages in chats:
            text, replica = _ask(client, messages)
            assert replica == rendezvous(_key(messages), sorted(both)), messages[0]["content"]
            messages.append({"role": "assistant", "content": text})
        chats.append([*opener, {"role": "assistant", "content": reply[0]}])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    stopped = time.monotonic() - t0
    assert not failures, failures[0]
    assert served and {r for *_, r in served} <= both  # (each prompt stays on the replica its hash picks)

    # the load is over: back to one replica, Ray's count and the replicas reporting alike
    (last,) = _wait_for(base, 1, 30)
    down = time.monotonic() - t0
    text, replica = _ask(client, [*chats[0], {"role": "user", "content": "Thanks."}])
    assert replica == last

    # every answer, before, during and after the scaling, is the single server's
    want = {p: single.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": p}], temperature=0, max_tokens=16
    ).choices[0].message.content for p in {p for p, *_ in served}}  # fmt: skip
    assert all(got == want[p] for p, got, _ in served)
    for messages in chats:
        for end in range(2, len(messages) + 1, 2):  # each assistant turn against the single server's
            assert (
                single.chat.completions.create(
                    model="smollm2", messages=messages[: end - 1], temperature=0, max_tokens=8
                )
                .choices[0]
                .message.content
                == messages[end - 1]["content"]
            )
    assert (
        text
        == single.chat.completions.create(
            model="smollm2", messages=[*chats[0], {"role": "user", "content": "Thanks."}], temperature=0, max_tokens=8
        )
        .choices[0]
        .message.content
    )
    print(
        f"\n{len(served)} load streams, {sum(r == second for *_, r in served)} on the new replica; "
        f"load start t=0 ({LOAD_CLIENTS} streams); 2 replicas running and reporting at t={up:.1f}s; "
        f"the new one routed to by t={joined:.1f}s; "
        f"load stopped at t={stopped:.1f}s; 1 replica at t={down:.1f}s "
        f"({down - stopped:.1f}s after the load)"
    )
