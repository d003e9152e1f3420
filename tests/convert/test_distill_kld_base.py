"""Word-level KD from a llama-perplexity `--kl-divergence-base` file.

Oracle: llama.cpp's own llama-perplexity (built by tools/build_llama_cpp.sh;
tools/test.sh builds it) writes the base file of a tiny random llama (SmolLM2's
tokenizer, 49152 tokens); lamina reads it back and:
- its tokens are lamina's tokenization of the same text;
- its log-probabilities equal llama.cpp's own log-softmax of that model
  (llama-cpp-python in a child process) within the uint16 step (scale / 2),
  and lamina's engine's within that plus the engines' float difference;
- a few KD steps from it lower the KD loss of a student with a layer dropped,
  and `lamina compress --distill --teacher-kld-base` runs end to end;
- truncated / corrupt / mismatched files and conflicting flags give typed
  errors naming the file and field.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lamina.cli import compress as compress_cli  # noqa: E402
from lamina.convert.cli import convert as convert_cli  # noqa: E402
from lamina.convert.distill.kd import distill, load_model  # noqa: E402
from lamina.convert.distill.kld_base import KLDBaseError, KLDBaseTeacher  # noqa: E402
from lamina.convert.distill.loss import kd_loss  # noqa: E402
from lamina.convert.errors import ConvertError  # noqa: E402
from lamina.convert.prune.hf_state import ModelState  # noqa: E402
from lamina.convert.prune.pipeline import DistillSettings  # noqa: E402
from lamina.convert.prune.structured import drop_layers  # noqa: E402
from lamina.engine.context import Context, Model  # noqa: E402
from lamina.eval.logits_file import LogitsFile, LogitsFileError  # noqa: E402
from lamina.gguf.reader import GGUFFile  # noqa: E402
from lamina.tokenizer import Tokenizer  # noqa: E402
from support.llama_cpp_ref import have_llama_cpp, llama_cpp_logits, llama_cpp_tool  # noqa: E402
from support.paths import DATA  # noqa: E402

N_CTX, N_CHUNK = 64, 3
TEXT = DATA / "alice29.txt"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from support.tiny_hf import tiny_hf_checkpoint

    exe = llama_cpp_tool("llama-perplexity")
    if exe is None:
        pytest.skip("llama.cpp's llama-perplexity is not built (tools/build_llama_cpp.sh llama-perplexity)")
    d = tmp_path_factory.mktemp("kldbase")
    hf = tiny_hf_checkpoint("llama", d / "teacher")
    gguf = d / "teacher.gguf"
    assert convert_cli.main([str(hf), "--outtype", "f32", "-o", str(gguf), "--quiet"]) == 0
    kld = d / "base.kld"
    cmd = [exe, "-m", gguf, "-f", TEXT, "-c", N_CTX, "--chunks", N_CHUNK, "-t", "2", "--kl-divergence-base", kld]
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    state = ModelState.load(hf)
    drop_layers(state, [1])
    return {"hf": hf, "gguf": gguf, "kld": kld, "student": state.save(d / "student"), "dir": d}


def _tokenizer(gguf: Path) -> Tokenizer:
    with GGUFFile(gguf) as g:
        return Tokenizer.from_metadata(g.metadata)


def test_llama_perplexity_file_reads_back(base) -> None:
    f = LogitsFile(base["kld"])
    h = f.header
    assert (h.n_ctx, h.n_vocab, h.n_chunk) == (N_CTX, 49152, N_CHUNK)
    tok = _tokenizer(base["gguf"])
    ours = tok.encode(TEXT.read_text(encoding="utf-8"))
    assert h.tokens.tolist() == ours[: N_CHUNK * N_CTX]  # llama.cpp's tokens are lamina's
    assert not tok.add_bos  # SmolLM2's tokenizer: chunks are evaluated as they are

    model = Model.load(base["gguf"])
    ctx = Context(model, n_ctx=N_CTX, n_batch=N_CTX, kv_type="f32")
    first = N_CTX // 2
    try:
        for i in (0, N_CHUNK - 1):
            chunk = h.tokens[i * N_CTX : (i + 1) * N_CTX].astype(np.int32)
            lp = f.log_probs(i).astype(np.float64)  # [31, V]
            scale = f.chunk(i)[:, :4].copy().view(np.float32)[:, :1].astype(np.float64)  # [31, 1]
            floor = f.chunk(i)[:, :4].copy().view(np.float32)[:, 1:2].astype(np.float64)
            ctx.truncate(0)
            lamina = _log_softmax(ctx.eval(chunk, all_logits=True)[first : N_CTX - 1])  # [31, V]
            above = lamina > floor + 2e-3  # not clamped to the row's floor
            # the format: each row's top token has the top code, and the decoded distribution sums to 1
            assert (f.chunk(i)[:, 4:].max(axis=1) == 65535).all()
            assert np.abs(np.exp(lp).sum(axis=1) - 1).max() < 1e-4
            # llama.cpp's logits and lamina's differ by float rounding (~2e-3 in log-prob on this
            # random model, whose logits span ~10); the file may differ from lamina's by that plus
            # the uint16 rounding (scale / 2). Measured: file vs lamina 1.1e-3..1.65e-3 max, 1.1e-4
            # median; llama-cpp-python vs lamina 2.0e-3..2.25e-3 max.
            engines = 5e-3
            if have_llama_cpp():
                theirs = _log_softmax(llama_cpp_logits(base["gguf"], tokens=chunk.tolist(), n_ctx=N_CTX)[1])
                engines = float(np.abs(theirs[first : N_CTX - 1] - lamina)[above].max())
            d = np.abs(lp - lamina)[above]
            assert d.max() <= float(scale.max()) / 2 + engines + 1e-5, (d.max(), engines)
            assert float(np.median(d)) <= float(scale.max()) / 2 + 3e-4
            # a row of another position is far off (the comparison can fail)
            assert np.abs(lp[1:] - lamina[:-1])[above[:-1]].max() > 0.5
    finally:
        ctx.close()
        model.close()


def test_kd_loss_gives_clamped_tokens_no_mass() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 11, generator=g), torch.randn(2, 3, 11, generator=g)
    t[..., :4] = -torch.inf  # below the file's floor
    T = 2.0
    p = torch.softmax(t[..., 4:] / T, -1).double().numpy()
    q = torch.log_softmax(s / T, -1).double().numpy()[..., 4:]
    want = T * T * float((p * (np.log(p) - q)).sum(-1).mean())
    s.requires_grad_(True)
    got = kd_loss(s, t, T)
    got.backward()
    assert abs(float(got.detach()) - want) < 1e-5
    assert s.grad is not None and bool(torch.isfinite(s.grad).all())


def _file_loss(teacher: KLDBaseTeacher, student_dir: Path, T: float = 2.0) -> float:
    model = load_model(student_dir, torch.device("cpu"))
    x = torch.as_tensor(teacher.windows.astype(np.int64))
    with torch.no_grad():
        s = model(input_ids=x).logits[:, teacher.scored]
        return float(kd_loss(s, teacher.logits(x, np.arange(len(x))), T))


def test_kd_steps_from_the_file_lower_the_kd_loss(base, tmp_path: Path) -> None:
    tok = _tokenizer(base["gguf"])
    teacher = KLDBaseTeacher(base["kld"], tok, 49152)
    assert teacher.windows.shape == (N_CHUNK, N_CTX) and teacher.scored == slice(32, 63)
    before = _file_loss(teacher, base["student"])
    settings = DistillSettings(steps=4, lr=3e-3, temperature=2.0, batch=N_CHUNK, seqlen=N_CTX, checkpoint_every=4)
    log = distill(teacher, base["student"], tmp_path / "healed", teacher.windows, settings, tmp_path / "work")
    after = _file_loss(KLDBaseTeacher(base["kld"], tok, 49152), tmp_path / "healed")
    assert after < 0.9 * before, (before, after, log)


def test_bos_replaces_token_0_when_the_tokenizer_adds_one(base) -> None:
    class AddsBos:  # SmolLM2's tokenizer, as if it added BOS (llama-perplexity then evaluates BOS first)
        def __init__(self, tok: Tokenizer) -> None:
            self.tok, self.add_bos, self.bos_id = tok, True, 1

        def decode(self, ids, skip_special=True):
            return self.tok.decode(ids, skip_special)

        def encode(self, text, add_bos=None):
            return self.tok.encode(text, add_bos=False)

    tokens = LogitsFile(base["kld"]).header.tokens.reshape(N_CHUNK, N_CTX)
    t = KLDBaseTeacher(base["kld"], AddsBos(_tokenizer(base["gguf"])), 49152)  # type: ignore[arg-type]
    assert (t.windows[:, 0] == 1).all() and np.array_equal(t.windows[:, 1:], tokens[:, 1:])
    assert not np.array_equal(KLDBaseTeacher(base["kld"], _tokenizer(base["gguf"]), 49152).windows[:, 0], [1, 1, 1])


def test_compress_distills_from_the_file(base, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    flags = ["--drop-layers", "1", "--distill", "--teacher-kld-base", str(base["kld"]), "--distill-steps", "2"]
    assert compress_cli.main([str(base["hf"]), "-o", str(out), "--outtype", "f32", *flags]) == 0
    said = capsys.readouterr().out
    assert f"teacher log-probs and text from {base['kld']}: 3 chunks of 64 tokens" in said
    assert "word-level KD loss" in said
    assert (out / "hf" / "model.safetensors").is_file()
    assert ModelState.load(out / "hf").config["num_hidden_layers"] == 3


def _damaged(base, tmp_path: Path, name: str, edit) -> Path:
    p = tmp_path / name
    shutil.copy(base["kld"], p)
    data = bytearray(p.read_bytes())
    p.write_bytes(bytes(edit(data)))
    return p


def test_bad_files_give_typed_errors(base, tmp_path: Path) -> None:
    h = LogitsFile(base["kld"]).header
    tok = _tokenizer(base["gguf"])
    cases = {
        "size": lambda b: b[:-2],  # truncated
        "magic": lambda b: b"_logitz_" + b[8:],
        "n_chunk": lambda b: b[:16] + np.int32(0).tobytes() + b[20:],
        "tokens": lambda b: b[:24] + np.int32(49152).tobytes() + b[28:],
    }
    for field, edit in cases.items():
        with pytest.raises(LogitsFileError) as e:
            KLDBaseTeacher(_damaged(base, tmp_path, f"{field}.kld", edit), tok, 49152)
        assert e.value.field == field and f"{field}.kld" in str(e.value)

    # a corrupt row: the scale of chunk 1, row 3 is NaN
    def nan_scale(b: bytearray) -> bytearray:
        at = h.data_offset + h.chunk_bytes + 3 * h.row_u16 * 2
        b[at : at + 4] = np.float32(np.nan).tobytes()
        return b

    t = KLDBaseTeacher(_damaged(base, tmp_path, "row.kld", nan_scale), tok, 49152)
    x = torch.as_tensor(t.windows[1:2].astype(np.int64))
    with pytest.raises(LogitsFileError, match=r"row\.kld: chunk 1 row 3 scale: nan"):
        t.logits(x, np.array([1]))

    with pytest.raises(KLDBaseError, match=r"n_vocab: the file's teacher has 49152 tokens, the student 32000"):
        KLDBaseTeacher(base["kld"], tok, 32000)

    # the same vocabulary size, another tokenization: the text does not round-trip
    def shuffle(b: bytearray) -> bytearray:
        ids = np.frombuffer(bytes(b[20 : h.data_offset]), dtype=np.int32)
        b[20 : h.data_offset] = ((ids.astype(np.int64) * 7919 + 13) % 49152).astype(np.int32).tobytes()
        return b

    with pytest.raises(KLDBaseError, match=r"tokens: the file's text does not round-trip"):
        KLDBaseTeacher(_damaged(base, tmp_path, "other.kld", shuffle), tok, 49152)


def test_conflicting_flags_are_refused(base, tmp_path: Path) -> None:
    kld = str(base["kld"])
    common = [str(base["hf"]), "-o", str(tmp_path / "o"), "--drop-layers", "1"]
    kd = ["--distill", "--teacher-kld-base", kld]
    refused = {
        "give --distill too": ["--teacher-kld-base", kld],
        "--distill-seqlen 32: with --teacher-kld-base": [*kd, "--distill-seqlen", "32"],
        "--distill-seq is off": [*kd, "--teacher", str(base["gguf"])],
        "nothing reads it": [*kd, "--calibration", str(TEXT)],
    }
    for message, flags in refused.items():
        with pytest.raises(ConvertError, match=message):
            compress_cli.build_plan(compress_cli.parser().parse_args([*common, *flags]))
    bad = _damaged(base, tmp_path, "short.kld", lambda b: b[:100])
    with pytest.raises(LogitsFileError, match=r"short\.kld: size"):
        compress_cli.build_plan(compress_cli.parser().parse_args([*common, *kd[:2], str(bad)]))
    # with pruning that reads it, --calibration is the pruning's text and the file stays KD's
    ok = ["--prune-layers", "1", "--distill", "--teacher-kld-base", kld, "--calibration", str(TEXT)]
    plan = compress_cli.build_plan(compress_cli.parser().parse_args([str(base["hf"]), "-o", str(tmp_path / "o"), *ok]))
    assert plan.teacher_kld_base == Path(kld) and plan.needs_calibration()
