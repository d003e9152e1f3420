"""LoRA adapters: a random PEFT adapter on a random tiny llama / qwen2, as
GGUF (lamina convert-lora, checked byte for byte against llama.cpp's
convert_lora_to_gguf.py), applied at run time by lamina against
transformers + peft and against llama.cpp with the same adapter file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from lamina.convert.encode import Encoder
from lamina.convert.hf.convert import plan_hf
from lamina.convert.lora.peft import plan_lora
from lamina.convert.pipeline import run_job
from lamina.convert.recipes import get_mix
from lamina.engine.context import Context, Model
from lamina.engine.lora import LoraError, LoraScaleError, load_loras
from lamina.errors import GGUFError
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_cpp_tool
from support.tiny_hf import tiny_hf_checkpoint
from support.tiny_lora import llama_cpp_lora_gguf, peft_logits, tiny_peft_adapter

ARCHS = ["llama", "qwen2"]
N_TOKENS = 24


def nmse(got: np.ndarray, want: np.ndarray) -> float:
    return float(((got - want) ** 2).mean() / (want**2).mean())


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    """arch -> (hf dir, peft dir, base f32 GGUF, f32 adapter GGUF by lamina convert-lora)"""
    made: dict[str, tuple[Path, Path, Path, Path]] = {}
    enc = Encoder(2)

    def get(arch: str) -> tuple[Path, Path, Path, Path]:
        if arch not in made:
            d = tmp_path_factory.mktemp(f"lora-{arch}")
            hf = tiny_hf_checkpoint(arch, d / "hf")
            peft_dir = tiny_peft_adapter(hf, d / "peft")
            base = d / "base-f32.gguf"
            run_job(plan_hf(hf, get_mix("f32"), enc, base))
            adapter = d / "adapter-f32.gguf"
            run_job(plan_lora(peft_dir, hf, adapter, "f32", enc))
            made[arch] = (hf, peft_dir, base, adapter)
        return made[arch]

    yield get
    enc.close()


def ids_for(model: Model) -> list[int]:
    return np.random.default_rng(7).integers(3, model.n_vocab, N_TOKENS).tolist()


def rewrite_adapter(src: Path, dst: Path, edit) -> Path:
    """src's llama adapter (alpha 16) written again with each tensor's data through edit(name, data)"""
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    for t in r.tensors:
        w.add_tensor(t.name, edit(t.name, np.asarray(t.data)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def lamina_logits(model: Model, loras: list[tuple[Path, float]], ids: list[int]) -> np.ndarray:
    ctx = Context(model, n_ctx=64)
    if loras:
        load_loras(ctx, loras)
    prefill = ctx.eval(ids[:16], all_logits=True)  # a batch, then decode steps (the sliced matmuls)
    return np.vstack([prefill, *[ctx.eval(ids[i : i + 1]) for i in range(16, len(ids))]])


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_matches_transformers_peft(arch: str, case) -> None:
    hf, peft_dir, base, adapter = case(arch)
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)
    plain = lamina_logits(model, [], ids)
    for scale in (1.0, 0.5):
        want = peft_logits(hf, peft_dir, ids, scale)
        got = lamina_logits(model, [(adapter, scale)], ids)
        assert nmse(want, plain) > 0.1, "the adapter should move the logits far beyond rounding"
        assert nmse(got, want) < 1e-4, (scale, nmse(got, want))
    # scale 0: the adapter is skipped, the base model's bits
    assert np.array_equal(lamina_logits(model, [(adapter, 0.0)], ids), plain)


@pytest.mark.parametrize(("arch", "outtype"), [("llama", "f32"), ("llama", "q8_0"), ("qwen2", "f16")])
def test_convert_lora_matches_llama_cpp(arch: str, outtype: str, case, tmp_path: Path) -> None:
    hf, peft_dir, _, _ = case(arch)
    ours = tmp_path / "ours.gguf"
    cmd = [sys.executable, "-m", "lamina", "convert-lora", str(peft_dir), "--base", str(hf), "-o", str(ours)]
    subprocess.run([*cmd, "--outtype", outtype, "--quiet"], check=True, timeout=300)
    theirs = llama_cpp_lora_gguf(peft_dir, hf, tmp_path / "theirs.gguf", outtype)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_quantized_adapters_stay_close(outtype: str, case, tmp_path: Path) -> None:
    hf, peft_dir, base, _ = case("llama")
    adapter = tmp_path / f"adapter-{outtype}.gguf"
    run_job(plan_lora(peft_dir, hf, adapter, outtype, Encoder(1)))
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)
    got = lamina_logits(model, [(adapter, 1.0)], ids)
    assert nmse(got, peft_logits(hf, peft_dir, ids)) < 5e-3  # the adapter's own rounding (q8_0: ~1e-3)
    if have_llama_cpp():  # the same rounded adapter in llama.cpp
        _, theirs = llama_cpp_logits(base, tokens=ids, n_ctx=64, lora=adapter)
        # each target alone agrees to ~1e-5; all 29 together on a random model the adapter moves
        # by nmse ~1 amplify last-bit differences through Q8_0 activation rounding (~4e-4)
        assert nmse(got, theirs) < (1e-4 if outtype == "f16" else 2e-3)


def test_llama_cpp_logits_with_the_same_adapter(case) -> None:
    if not have_llama_cpp():
        pytest.skip("llama-cpp-python is not installed")
    _, _, base, adapter = case("llama")
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)
    _, theirs = llama_cpp_logits(base, tokens=ids, n_ctx=64, lora=adapter, lora_scale=0.75)
    got = lamina_logits(model, [(adapter, 0.75)], ids)
    print(f"\nlamina vs llama.cpp with the adapter: nmse {nmse(got, theirs):.2e}")
    assert nmse(got, theirs) < 1e-4


def test_two_adapters_add(case) -> None:
    """two adapters at once: each one's product is added (the same file at 0.25 and 0.5 = once at 0.75)"""
    _, _, base, adapter = case("llama")
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)
    both = lamina_logits(model, [(adapter, 0.25), (adapter, 0.5)], ids)
    assert nmse(both, lamina_logits(model, [(adapter, 0.75)], ids)) < 1e-7  # the same sum, rounded twice


def test_per_sequence_scales_in_one_batch(case) -> None:
    """one batch, two sequences, two scales: each row takes its own sequence's"""
    _, _, base, adapter = case("llama")
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)[:8]
    ctx = Context(model, n_ctx=64, n_seq_max=2)
    loras = load_loras(ctx, [(adapter, 1.0)])
    loras._native(1, 0, 0.0)
    mask = np.ones(16, np.int8)
    out = ctx.decode(ids + ids, list(range(8)) * 2, [0] * 8 + [1] * 8, mask)
    assert nmse(out[:8], lamina_logits(model, [(adapter, 1.0)], ids)[:8]) < 1e-10
    assert nmse(out[8:], lamina_logits(model, [], ids)[:8]) < 1e-10


def test_llama_api_and_run_command(case) -> None:
    from lamina import Llama

    hf, _, base, adapter = case("llama")
    plain = Llama(str(base), n_ctx=64, verbose=False)
    tuned = Llama(str(base), n_ctx=64, verbose=False, lora_path=str(adapter), lora_scale=1.0)
    off = Llama(str(base), n_ctx=64, verbose=False, lora_path=str(adapter), lora_scale=0.0)
    kw = {"max_tokens": 8, "temperature": 0.0}
    text = tuned.create_completion("Hello there", **kw)["choices"][0]["text"]
    assert (
        off.create_completion("Hello there", **kw)["choices"][0]["text"]
        == (plain.create_completion("Hello there", **kw)["choices"][0]["text"])
    )
    assert text != plain.create_completion("Hello there", **kw)["choices"][0]["text"]
    run = [sys.executable, "-m", "lamina", "run", str(base), "-c", "64", "--temp", "0", "-n", "8", "-p", "Hello there"]
    shown = subprocess.run(
        [*run, "--lora-scaled", f"{adapter}:1.0"], check=True, capture_output=True, text=True, timeout=120
    )
    assert text in shown.stdout
    for llm in (plain, tuned, off):
        llm.close()


def greedy(llm, n: int) -> list[int]:
    """n tokens of argmax after what eval() holds, each evaluated in turn"""
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[0])))
        llm.eval(out[-1:])
    return out


def test_saved_state_records_the_adapters(case, tmp_path: Path) -> None:
    """Llama.save_state under an adapter: loaded under the same adapter content (another
    path) and scale it continues as never having stopped; under another adapter, another
    scale or none it is a StateMismatchError naming the adapter or the scale, changing nothing"""
    from lamina import Llama
    from lamina.engine.state import StateMismatchError

    _, _, base, adapter = case("llama")
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(adapter.read_bytes())
    other = rewrite_adapter(adapter, tmp_path / "other.gguf", lambda name, d: d * 2 if name.endswith("lora_b") else d)

    def llama(path: Path | None = None, scale: float = 1.0) -> Llama:
        extra = {} if path is None else {"lora_path": str(path), "lora_scale": scale}
        return Llama(str(base), n_ctx=64, verbose=False, **extra)

    with llama(adapter) as tuned, llama() as plain:
        ids = tuned.tokenize(b"Once upon a time there was a small robot who")
        tuned.eval(ids)
        whole = greedy(tuned, 10)  # never stopped
        tuned.reset()
        tuned.eval(ids)
        saved = tuned.save_state()
        plain.eval(ids)
        assert greedy(plain, 10) != whole, "the adapter should change the greedy tokens"
        plain_state = plain.save_state()
        assert greedy(tuned, 10) == whole  # saving changes nothing
    with llama(copy) as again:
        again.load_state(saved)
        assert again.n_tokens == len(ids)
        assert greedy(again, 10) == whole
        with pytest.raises(StateMismatchError, match="other LoRA adapters") as e:
            again.load_state(plain_state)
        assert e.value.field == "LoRA adapters" and e.value.found == "none" and "copy.gguf" in e.value.expected
        assert again.n_tokens == len(ids) + 10  # unchanged by the refusal
    with llama(adapter, 0.5) as half:
        with pytest.raises(StateMismatchError, match="scale") as e:
            half.load_state(saved)
        assert (e.value.field, e.value.expected, e.value.found) == ("LoRA adapter 0 scale", 0.5, 1.0)
        assert half.n_tokens == 0
    with llama(other) as changed:
        with pytest.raises(StateMismatchError, match="another LoRA adapter 0") as e:
            changed.load_state(saved)
        assert e.value.field == "LoRA adapter 0"
        assert "other.gguf" in e.value.expected and str(adapter) in e.value.found
    with llama() as none:
        with pytest.raises(StateMismatchError, match="other LoRA adapters") as e:
            none.load_state(saved)
        assert e.value.expected == "none" and str(adapter) in e.value.found


def test_whole_context_state_keeps_each_sequence_scale(case) -> None:
    """Context.save_state with two sequences at two scales: each loads only where its own
    id runs at its scale, and both then continue as the saving context does"""
    from lamina.engine.state import StateMismatchError

    _, _, base, adapter = case("llama")
    model = Model.load(base, n_threads=2)
    ids, more = ids_for(model)[:12], ids_for(model)[12:16]

    def context() -> tuple[Context, object]:
        ctx = Context(model, n_ctx=64, n_seq_max=2)
        loras = load_loras(ctx, [(adapter, 1.0)])
        return ctx, loras

    def at_zero(loras) -> None:  # sequence 1 as a request at scale 0 holds it
        loras._seq_scales[1] = (0.0,)
        loras._native(1, 0, 0.0)

    def extend(ctx: Context, seq: int, toks: list[int]) -> np.ndarray:
        n = ctx.seq_len(seq)
        return ctx.decode(toks, list(range(n, n + len(toks))), [seq] * len(toks), np.ones(len(toks), np.int8))

    a, a_loras = context()
    at_zero(a_loras)
    for seq in (0, 1):
        extend(a, seq, ids)
    data = a.save_state()
    b, b_loras = context()
    with pytest.raises(StateMismatchError, match="sequence 1") as e:
        b.load_state(data)
    assert (e.value.field, e.value.expected, e.value.found) == ("LoRA adapter 0 scale", 1.0, 0.0)
    assert b.seq_len(0) == 0
    at_zero(b_loras)
    b.load_state(data)
    for seq in (0, 1):
        assert np.array_equal(extend(b, seq, more), extend(a, seq, more)), seq
    assert not np.array_equal(extend(b, 0, more), extend(b, 1, more))  # the two scales differ


def test_prompt_cache_with_an_adapter(case, tmp_path: Path) -> None:
    """lamina run --prompt-cache under --lora-scaled: the second run reuses the saved prompt
    and answers the same; a run at another scale refuses the file by name"""
    _, _, base, adapter = case("llama")
    cache = tmp_path / "prompt.state"
    prompt = "Once upon a time there was a small robot who lived in a house by the sea"

    def run(scale: float) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "lamina", "run", str(base), "-c", "64", "--temp", "0", "-n", "6", "-t", "2"]
        cmd += ["-p", prompt, "--prompt-cache", str(cache), "--lora-scaled", f"{adapter}:{scale}"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    first = run(1.0)
    assert first.returncode == 0, first.stderr
    n = int(re.search(r"0 of (\d+) prompt tokens cached", first.stderr).group(1))
    second = run(1.0)
    assert second.returncode == 0, second.stderr
    assert f"{n} of {n} prompt tokens cached" in second.stderr and second.stdout == first.stdout
    assert re.search(r"prompt 1 tok\b", second.stderr), second.stderr  # only the last prompt token evaluated again
    other = run(0.5)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert "scale" in other.stderr and "prompt.state" in other.stderr


def test_mismatched_adapters_are_typed_errors(case, tmp_path: Path) -> None:
    _, _, llama_base, llama_adapter = case("llama")
    _, _, qwen_base, qwen_adapter = case("qwen2")
    qwen = Model.load(qwen_base, n_threads=1)
    with pytest.raises(LoraError, match="general.architecture"):
        load_loras(Context(qwen, n_ctx=32), [(llama_adapter, 1.0)])

    # the same architecture, other sizes: the first pair that does not fit is named
    def widen(name: str, data: np.ndarray) -> np.ndarray:
        if name == "blk.1.attn_q.weight.lora_a":
            return np.zeros((data.shape[0], data.shape[1] * 2), np.float32)  # n_in 128 for a 64-wide model
        return data

    rewrite_adapter(llama_adapter, tmp_path / "wide.gguf", widen)
    llama = Model.load(llama_base, n_threads=1)
    with pytest.raises(LoraError, match=r"blk\.1\.attn_q\.weight\.lora_a.*expected \(64, rank\)"):
        load_loras(Context(llama, n_ctx=32), [(tmp_path / "wide.gguf", 1.0)])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(llama_adapter.read_bytes()[:-1000])
    with pytest.raises(GGUFError, match="cut.gguf"):
        load_loras(Context(llama, n_ctx=32), [(cut, 1.0)])
    with pytest.raises(LoraError, match="general.type"):
        load_loras(Context(llama, n_ctx=32), [(llama_base, 1.0)])
    with pytest.raises(LoraScaleError, match="finite"):
        load_loras(Context(llama, n_ctx=32), [(llama_adapter, float("nan"))])
    with pytest.raises(LoraScaleError, match="offloaded layers"):
        load_loras(Context(llama, n_ctx=32, gpu_layers=2, device="cpu-standin"), [(llama_adapter, 1.0)])
    del qwen_adapter


def test_server_lora_adapters_and_per_request_scales(case, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    import httpx

    from lamina import Llama
    from support.serve_process import serving

    _, _, base, adapter = case("llama")
    kw = {"max_tokens": 8, "temperature": 0.0}
    with Llama(str(base), n_ctx=64, verbose=False) as plain:
        want_plain = plain.create_completion("Hello there", **kw)["choices"][0]["text"]
    with Llama(str(base), n_ctx=64, verbose=False, lora_path=str(adapter), lora_scale=0.5) as tuned:
        want_half = tuned.create_completion("Hello there", **kw)["choices"][0]["text"]
    assert want_half != want_plain
    flags = ("-c", "128", "-np", "1", "-t", "2", "--lora-scaled", str(adapter), "0.5")
    with serving(str(base), *flags, "--slot-save-path", str(tmp_path)) as url:

        def complete(**extra) -> httpx.Response:
            return httpx.post(f"{url}/v1/completions", json={"prompt": "Hello there", **kw, **extra}, timeout=120)

        def slot(action: str) -> httpx.Response:
            return httpx.post(f"{url}/slots/0?action={action}", json={"filename": "s.bin"}, timeout=60)

        listed = httpx.get(f"{url}/lora-adapters", timeout=30).json()
        assert [(e["id"], e["path"], e["scale"]) for e in listed] == [(0, str(adapter), 0.5)]
        assert complete().json()["choices"][0]["text"] == want_half
        # the slot's state records the adapter at 0.5: restored where the slot runs at 0.5, and reused
        assert slot("save").json()["n_saved"] > 0
        assert slot("erase").status_code == 200 and slot("restore").status_code == 200
        reused = complete().json()
        assert reused["choices"][0]["text"] == want_half
        assert reused["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        # a request at scale 0 leaves the slot at 0: the 0.5 state is refused there, by scale
        assert complete(lora=[{"id": 0, "scale": 0.0}]).json()["choices"][0]["text"] == want_plain
        refused = slot("restore")
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "filename", refused.text
        message = refused.json()["error"]["message"]
        assert "LoRA adapter 0 scale" in message and "0.5" in message and "0.0" in message, message
        assert complete().json()["choices"][0]["text"] == want_half  # back at 0.5: restores again
        assert slot("restore").status_code == 200
        assert complete(lora=[]).json()["choices"][0]["text"] == want_half  # an empty list is no list
        # this request alone without the adapter (an adapter not listed gets 0 too)
        assert complete(lora=[{"id": 0, "scale": 0.0}]).json()["choices"][0]["text"] == want_plain
        assert complete().json()["choices"][0]["text"] == want_half  # the slot's cache is not reused across scales
        # the default for later requests
        assert httpx.post(f"{url}/lora-adapters", json=[{"id": 0, "scale": 0}], timeout=30).json() == {"success": True}
        assert httpx.get(f"{url}/lora-adapters", timeout=30).json()[0]["scale"] == 0.0
        assert complete().json()["choices"][0]["text"] == want_plain
        assert complete(lora=[{"id": 0, "scale": 0.5}]).json()["choices"][0]["text"] == want_half
        for bad in ([{"id": 3, "scale": 1}], [{"id": 0, "scale": "x"}], {"id": 0}):
            r = complete(lora=bad)
            assert r.status_code == 400 and r.json()["error"]["param"] == "lora", r.text
        r = httpx.post(f"{url}/lora-adapters", json={"id": 0}, timeout=30)
        assert r.status_code == 400, r.text


def test_merge_bakes_the_adapter_in(case, tmp_path: Path) -> None:
    """lamina convert-lora --merge: the merged f32 file's logits are the run-time adapter's;
    at q8_0 the merged file is the f32 merge quantized as `lamina quantize` does"""
    _, _, base, adapter = case("llama")
    merged = tmp_path / "merged.gguf"
    cmd = [sys.executable, "-m", "lamina", "convert-lora", "--merge", "-m", str(base), "-o", str(merged)]
    subprocess.run([*cmd, "--lora-scaled", f"{adapter}:0.5", "--outtype", "f32", "--quiet"], check=True, timeout=300)
    model = Model.load(base, n_threads=2)
    ids = ids_for(model)
    want = lamina_logits(model, [(adapter, 0.5)], ids)
    assert nmse(lamina_logits(Model.load(merged, n_threads=2), [], ids), want) < 1e-8
    q8 = tmp_path / "merged-q8_0.gguf"
    subprocess.run([*cmd[:-1], str(q8), "--lora-scaled", f"{adapter}:0.5", "--outtype", "q8_0", "--quiet"], check=True)
    again = tmp_path / "requantized.gguf"
    subprocess.run([sys.executable, "-m", "lamina", "quantize", str(merged), str(again), "q8_0", "--quiet"], check=True)
    assert q8.read_bytes() == again.read_bytes()
    export = llama_cpp_tool("llama-export-lora")  # tools/test.sh builds it
    if export is not None:
        theirs = tmp_path / "export-lora.gguf"
        run = [str(export), "-m", str(base), "--lora-scaled", f"{adapter}:0.5", "-o", str(theirs), "-t", "2"]
        subprocess.run(run, check=True, capture_output=True, timeout=300)
        ours_r, theirs_r = gguf.GGUFReader(merged), gguf.GGUFReader(theirs)
        theirs_t = {t.name: t for t in theirs_r.tensors}
        assert sorted(theirs_t) == sorted(t.name for t in ours_r.tensors)
        for t in ours_r.tensors:
            assert t.tensor_type == theirs_t[t.name].tensor_type, t.name
            np.testing.assert_allclose(t.data, theirs_t[t.name].data, rtol=0, atol=1e-6, err_msg=t.name)
    bad = subprocess.run([*cmd, "--outtype", "f32"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "at least one adapter" in bad.stdout + bad.stderr
