"""llama-server's slot save / restore / erase (POST /slots/{id}?action=...)
against a real `lamina serve` on 127.0.0.1 (a free port), with httpx: a
slot saved, erased, restored into another slot, and the same prompt there
reuses the restored tokens (usage.prompt_tokens_details.cached_tokens) and
answers as before; names leading outside --slot-save-path, foreign or
damaged files and unknown slots or actions are 4xx errors, and a server
without --slot-save-path answers 501."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from lamina.model_cache import fetch_model
from support.serve_process import serving

pytest.importorskip("fastapi")

KEY = "slot-key"
# longer than the engine's MIN_COPY_GAIN: a prompt may run in an empty slot and copy a restored one's prefix
PROMPT = (
    "You are a careful assistant who counts slowly and writes every number as a word. "
    "Write the numbers one to ten in words, separated by commas: one, two,"
)


@contextlib.contextmanager
def _serving(*flags: str) -> Iterator[httpx.Client]:
    model, headers = str(fetch_model("smollm2-135m-instruct")), {"Authorization": f"Bearer {KEY}"}
    with (
        serving(model, "-np", "2", "-c", "1024", "-t", "2", "--api-key", KEY, *flags) as base,
        httpx.Client(base_url=base, headers=headers, timeout=120) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def http(save_dir):
    with _serving("--slot-save-path", str(save_dir)) as client:
        yield client


def complete(http):
    r = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_save_erase_restore_into_another_slot_reuses_the_cache(http, save_dir):
    first = complete(http)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    saves = [http.post(f"/slots/{i}?action=save", json={"filename": f"s{i}.bin"}).json() for i in (0, 1)]
    used = next(i for i, s in enumerate(saves) if s["n_saved"] > 0)  # the slot the prompt ran in
    s = saves[used]
    assert s["id_slot"] == used and s["filename"] == f"s{used}.bin"
    assert s["n_saved"] >= first["usage"]["prompt_tokens"]
    assert s["n_written"] == (save_dir / f"s{used}.bin").stat().st_size
    assert "save_ms" in s["timings"]
    for i in (0, 1):
        e = http.post(f"/slots/{i}?action=erase").json()
        assert e == {"id_slot": i, "n_erased": saves[i]["n_saved"]}
    other = 1 - used
    r = http.post(f"/slots/{other}?action=restore", json={"filename": f"s{used}.bin"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id_slot"] == other and got["n_restored"] == s["n_saved"] and got["n_read"] == s["n_written"]
    again = complete(http)
    n = again["usage"]["prompt_tokens"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == n - 1  # all but the last prompt token
    assert again["choices"][0]["text"] == first["choices"][0]["text"]


def test_slot_actions_refuse_bad_input(http, save_dir):
    complete(http)
    assert http.post("/slots/0?action=save", json={"filename": "good.bin"}).status_code == 200
    for name in ["../escape.bin", "/etc/passwd", "a/b.bin", ".hidden", "", None, "x\\y"]:
        r = http.post("/slots/0?action=save", json={"filename": name})
        assert r.status_code == 400 and "filename" in r.json()["error"]["message"].lower(), (name, r.text)
    (save_dir / "link.bin").symlink_to(save_dir.parent / "outside.bin")
    r = http.post("/slots/0?action=save", json={"filename": "link.bin"})
    assert r.status_code == 400 and "outside" in r.json()["error"]["message"]
    assert not (save_dir.parent / "outside.bin").exists()
    assert http.post("/slots/7?action=save", json={"filename": "x.bin"}).status_code == 400
    assert http.post("/slots/zero?action=erase").status_code == 400
    assert http.post("/slots/0?action=load", json={"filename": "good.bin"}).status_code == 400
    assert http.post("/slots/0?action=restore", json={"filename": "missing.bin"}).status_code == 400
    bad = bytearray((save_dir / "good.bin").read_bytes())
    bad[len(bad) // 2] ^= 1
    (save_dir / "bad.bin").write_bytes(bytes(bad))
    r = http.post("/slots/1?action=restore", json={"filename": "bad.bin"})
    assert r.status_code == 400 and "checksum" in r.json()["error"]["message"]
    (save_dir / "junk.bin").write_bytes(b"junk")
    r = http.post("/slots/1?action=restore", json={"filename": "junk.bin"})
    assert r.status_code == 400 and "state" in r.json()["error"]["message"]
    assert httpx.post(f"{http.base_url}/slots/0?action=erase").status_code == 401  # the API key guards it
    assert complete(http)["choices"][0]["text"]  # still serving


def test_without_slot_save_path_the_actions_are_501():
    with _serving() as client:
        r = client.post("/slots/0?action=save", json={"filename": "x.bin"})
        assert r.status_code == 501 and "--slot-save-path" in r.json()["error"]["message"]
