"""Quantization mixes against llama.cpp's own choices.

The PyPI models were written by llama-quantize, so their tensor types are
llama.cpp's answers: the recipe must give every tensor the same type. The
Qwen file predates llama-quantize sorting tensors by layer, and its layer
counters (use_more_bits for attn_v) ran in the file's order, so each file's
types are reproduced by walking its tensors in its own order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType

from lamina.convert.errors import ImatrixRequiredError
from lamina.convert.recipes import (
    MIXES,
    ModelShape,
    TensorSpec,
    check_imatrix,
    choose_types,
    get_mix,
    imatrix_required,
    tensor_order,
)
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model


def _mix_for(file_type: int):
    return next(m for m in MIXES.values() if int(m.ftype) == file_type)


def _model_shape(g: GGUFFile) -> ModelShape:
    arch = g.architecture
    return ModelShape(
        g.get(f"{arch}.block_count"),
        g.get(f"{arch}.attention.head_count"),
        g.get(f"{arch}.attention.head_count_kv"),
        is_70b=False,
        n_expert=g.get(f"{arch}.expert_count", 0),
    )


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b"])
def test_types_of_the_published_files(model: str) -> None:
    g = GGUFFile(fetch_model(model))
    shape = _model_shape(g)
    # the converter wrote every tensor as f32 before llama-quantize saw it
    specs = [TensorSpec(t.name, t.ne, Q.F32) for t in g.tensors]
    types = choose_types(specs, _mix_for(g.get("general.file_type")), shape)
    assert types == {t.name: t.ggml_type for t in g.tensors}


def test_tensor_order_is_llama_quantize_order() -> None:
    names = [
        "blk.10.ffn_up.weight",
        "token_embd.weight",
        "blk.2.attn_v.weight",
        "output_norm.weight",
        "blk.2.attn_k.weight",
    ]
    assert tensor_order(names) == [
        "output_norm.weight",
        "token_embd.weight",
        "blk.2.attn_k.weight",
        "blk.2.attn_v.weight",
        "blk.10.ffn_up.weight",
    ]


def _layered(n_layer: int, n_embd: int, n_ff: int) -> list[TensorSpec]:
    specs = [TensorSpec("token_embd.weight", (n_embd, 1000), Q.F32), TensorSpec("output_norm.weight", (n_embd,), Q.F32)]
    for i in range(n_layer):
        specs += [
            TensorSpec(f"blk.{i}.attn_norm.weight", (n_embd,), Q.F32),
            TensorSpec(f"blk.{i}.attn_v.weight", (n_embd, n_embd), Q.F32),
            TensorSpec(f"blk.{i}.ffn_down.weight", (n_ff, n_embd), Q.F32),
        ]
    return [s for n in tensor_order([s.name for s in specs]) for s in specs if s.name == n]


def test_use_more_bits_layers() -> None:
    # 32 layers: the first/last eighth and every third layer between get Q6_K in Q4_K_M
    types = choose_types(_layered(32, 256, 512), get_mix("q4_k_m"), ModelShape(32, 8, 8, False))
    more = [i for i in range(32) if types[f"blk.{i}.ffn_down.weight"] == Q.Q6_K]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [i for i in range(32) if types[f"blk.{i}.attn_v.weight"] == Q.Q6_K] == more
    assert types["token_embd.weight"] == Q.Q6_K  # tied: the embedding is the output head
    assert types["output_norm.weight"] == Q.F32


@pytest.mark.parametrize(
    "mix,n_embd,want",
    [
        ("q4_k_m", 576, Q.Q5_0),
        ("q5_k_m", 576, Q.Q5_1),
        ("q6_k", 576, Q.Q8_0),
        ("q2_k", 576, Q.Q4_0),
        ("q3_k_s", 48, Q.F16),
        ("q4_0", 48, Q.F16),
        ("q8_0", 576, Q.Q8_0),
    ],
)
def test_fallback_when_rows_do_not_fit_the_block(mix: str, n_embd: int, want: Q) -> None:
    specs = [TensorSpec("blk.0.attn_q.weight", (n_embd, n_embd), Q.F32)]
    assert choose_types(specs, get_mix(mix), ModelShape(1, 1, 1, False))["blk.0.attn_q.weight"] == want


def test_pure_and_float_mixes() -> None:
    specs = _layered(8, 256, 512)
    pure = choose_types(specs, get_mix("q4_k_m"), ModelShape(8, 8, 8, False), pure=True)
    assert {pure[s.name] for s in specs if len(s.ne) == 2} == {Q.Q4_K}
    f16 = choose_types(specs, get_mix("f16"), ModelShape(8, 8, 8, False))
    assert {f16[s.name] for s in specs if len(s.ne) == 2} == {Q.F16}
    assert {f16[s.name] for s in specs if len(s.ne) == 1} == {Q.F32}


def test_aliases_and_file_types() -> None:
    assert get_mix("q4_k").name == "q4_k_m" and get_mix("Q4_K_M").ftype == LlamaFileType.MOSTLY_Q4_K_M


def _untied(n_layer: int, n_embd: int, n_ff: int) -> list[TensorSpec]:
    specs = _layered(n_layer, n_embd, n_ff) + [TensorSpec("output.weight", (n_embd, 1000), Q.F32)]
    return [s for n in tensor_order([s.name for s in specs]) for s in specs if s.name == n]


@pytest.mark.parametrize("mix,want", [("tq1_0", Q.TQ1_0), ("tq2_0", Q.TQ2_0)])
def test_ternary_mixes(mix: str, want: Q) -> None:
    # llama_tensor_get_type: output head Q6_K, an untied embedding Q4_K, the
    # rest ternary (no attn_v / ffn_down rule names these ftypes)
    shape = ModelShape(8, 8, 2, False)
    types = choose_types(_untied(8, 256, 512), get_mix(mix), shape)
    assert types["output.weight"] == Q.Q6_K
    assert types["token_embd.weight"] == Q.Q4_K
    assert {types[f"blk.{i}.{w}.weight"] for i in range(8) for w in ("attn_v", "ffn_down")} == {want}
    tied = choose_types(_layered(8, 256, 512), get_mix(mix), shape)
    assert tied["token_embd.weight"] == Q.Q6_K  # tied: the embedding is the output head
    # rows that are not a multiple of 256: Q4_0 (llama.cpp's TODO: a symmetric type), then F16
    for n_embd, fallback in ((576, Q.Q4_0), (48, Q.F16)):
        specs = [TensorSpec("blk.0.attn_q.weight", (n_embd, n_embd), Q.F32)]
        assert choose_types(specs, get_mix(mix), shape)["blk.0.attn_q.weight"] == fallback


def test_mxfp4_moe_mix() -> None:
    # MXFP4 only for stacked experts (ne[2] > 1); everything else, the output
    # head and the embedding included, Q8_0
    specs = _untied(2, 256, 512) + [
        TensorSpec(f"blk.{i}.ffn_{w}_exps.weight", (256, 512, 8), Q.F32) for i in range(2) for w in ("gate", "up")
    ]
    specs = [s for n in tensor_order([s.name for s in specs]) for s in specs if s.name == n]
    types = choose_types(specs, get_mix("MXFP4_MOE"), ModelShape(2, 8, 2, False))
    for s in specs:
        if len(s.ne) == 1:
            assert types[s.name] == Q.F32
        else:
            assert types[s.name] == (Q.MXFP4 if s.name.endswith("_exps.weight") else Q.Q8_0), s.name
    pure = choose_types(specs, get_mix("mxfp4_moe"), ModelShape(2, 8, 2, False), pure=True)
    assert {pure[s.name] for s in specs if len(s.ne) > 1} == {Q.MXFP4}


def test_llama_quantize_spellings() -> None:
    from lamina.convert.cli.quantize import parser

    for name, ftype in (
        ("TQ1_0", LlamaFileType.MOSTLY_TQ1_0),
        ("TQ2_0", LlamaFileType.MOSTLY_TQ2_0),
        ("MXFP4_MOE", LlamaFileType.MOSTLY_MXFP4_MOE),
    ):
        assert get_mix(name).ftype == ftype
        assert get_mix(parser().parse_args(["in.gguf", "out.gguf", name]).type).ftype == ftype


# ------------------------------------------------------------ i-quant mixes

IQ_MIXES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ1_S", "IQ1_M"]
_DRY_RUN_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*\], type =\s+(\w+),.*?(?:\((\w+)\))?\s*$")


def _llama_quantize() -> Path | None:
    cache = Path(os.environ.get("LAMINA_CACHE", Path.home() / ".cache" / "lamina"))
    exe = cache / "llama.cpp" / "build" / "bin" / "llama-quantize"
    found = exe if exe.is_file() else shutil.which("llama-quantize")
    return Path(found) if found else None


def _dry_run_types(exe: Path, model: Path, mix: str, tmp: Path) -> dict[str, Q]:
    """llama-quantize --dry-run's target type of every tensor (no importance
    matrix: it warns that the real run would need one)"""
    r = subprocess.run(
        [str(exe), "--dry-run", "--allow-requantize", str(model), str(tmp / "out.gguf"), mix, "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    types = {}
    for line in (r.stdout + r.stderr).splitlines():
        m = _DRY_RUN_LINE.match(line)
        if m:
            types[m.group(1)] = Q[(m.group(3) or m.group(2)).upper()]
    return types


@pytest.mark.parametrize("mix", IQ_MIXES)
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b"])
def test_iq_mixes_are_llama_quantize_s(model: str, mix: str, tmp_path: Path) -> None:
    """every tensor's type as llama-quantize --dry-run picks it (GQA 3, 4 and
    7; rows of 576/640/896 that fall back to IQ4_NL, ffn_down rows that fit)"""
    exe = _llama_quantize()
    if exe is None:
        pytest.skip("llama.cpp's llama-quantize is not built (tools/build_llama_cpp.sh)")
    path = fetch_model(model)
    g = GGUFFile(path)
    shape = _model_shape(g)
    infos = {t.name: t for t in g.tensors}
    specs = [TensorSpec(n, infos[n].ne, infos[n].ggml_type) for n in tensor_order(list(infos))]
    assert choose_types(specs, get_mix(mix), shape) == _dry_run_types(exe, path, mix, tmp_path)


@pytest.mark.parametrize("mix", ["IQ4_NL", "IQ4_XS", "Q2_K_S"])
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b"])
def test_iq4_and_q2_k_s_mixes_are_llama_quantize_s(model: str, mix: str, tmp_path: Path) -> None:
    """IQ4_NL/IQ4_XS (more bits for attn_v at GQA >= 4 and the first eighth of
    ffn_down) and Q2_K_S, on GQA 3 and 7"""
    exe = _llama_quantize()
    if exe is None:
        pytest.skip("llama.cpp's llama-quantize is not built (tools/build_llama_cpp.sh)")
    path = fetch_model(model)
    _assert_dry_run_types(exe, path, mix, tmp_path)


# every mix whose rules differ for mixture-of-experts models, and a few that do not
MOE_MIXES = ["Q2_K", "Q2_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "IQ4_XS", "IQ3_XS", "IQ3_M", "IQ2_XXS", "IQ1_M"]


@pytest.fixture(scope="module")
def moe_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """tiny qwen3moe GGUFs whose rows fit 256-weight blocks, 8 layers (so the
    eighths of llama-quantize's layer rules are layers), with 8 experts
    (Mixtral's count, which has rules of its own) and 4"""
    from dataclasses import replace

    from support.tiny_models import QWEN3MOE, for_block, write_tiny_model

    d = tmp_path_factory.mktemp("moe-mix")
    return {
        n: write_tiny_model(d / f"moe{n}.gguf", replace(for_block(QWEN3MOE, 256), n_layer=8, n_expert=n))
        for n in (8, 4)
    }


@pytest.mark.parametrize("n_expert", [8, 4])
@pytest.mark.parametrize("mix", MOE_MIXES)
def test_moe_mixes_are_llama_quantize_s(moe_files, n_expert: int, mix: str, tmp_path: Path) -> None:
    exe = _llama_quantize()
    if exe is None:
        pytest.skip("llama.cpp's llama-quantize is not built (tools/build_llama_cpp.sh)")
    types = _assert_dry_run_types(exe, moe_files[n_expert], mix, tmp_path)
    assert any(n.endswith("ffn_down_exps.weight") for n in types)


def _assert_dry_run_types(exe: Path, path: Path, mix: str, tmp_path: Path) -> dict[str, Q]:
    g = GGUFFile(path)
    infos = {t.name: t for t in g.tensors}
    specs = [TensorSpec(n, infos[n].ne, infos[n].ggml_type) for n in tensor_order(list(infos))]
    ours, theirs = choose_types(specs, get_mix(mix), _model_shape(g)), _dry_run_types(exe, path, mix, tmp_path)
    assert ours == theirs, {n: (ours[n], theirs.get(n)) for n in ours if ours[n] != theirs.get(n)}
    return ours


def _square(n_layer: int, n_embd: int, n_ff: int) -> list[TensorSpec]:
    """an untied dense model whose rows all fit 256-weight blocks"""
    specs = [TensorSpec("token_embd.weight", (n_embd, 1000), Q.F32), TensorSpec("output.weight", (n_embd, 1000), Q.F32)]
    for i in range(n_layer):
        for w, ne in (
            ("attn_q", (n_embd, n_embd)),
            ("attn_k", (n_embd, n_embd // 4)),
            ("attn_v", (n_embd, n_embd // 4)),
            ("attn_output", (n_embd, n_embd)),
            ("ffn_gate", (n_embd, n_ff)),
            ("ffn_up", (n_embd, n_ff)),
            ("ffn_down", (n_ff, n_embd)),
        ):
            specs.append(TensorSpec(f"blk.{i}.{w}.weight", ne, Q.F32))
    return [s for n in tensor_order([s.name for s in specs]) for s in specs if s.name == n]


def test_iq_mix_roles() -> None:
    """llama_tensor_get_type's i-quant rules on rows that fit (16 layers, GQA 2)"""
    specs, shape = _square(16, 512, 1024), ModelShape(16, 8, 4, False)

    def types(mix: str, **kw) -> dict[str, Q]:
        return choose_types(specs, get_mix(mix), shape, **kw)

    t = types("iq2_xxs")
    assert (t["output.weight"], t["token_embd.weight"]) == (Q.Q5_K, Q.Q2_K)
    assert t["blk.0.attn_v.weight"] == t["blk.1.ffn_down.weight"] == Q.Q2_K  # ffn_down: the first eighth
    assert t["blk.2.ffn_down.weight"] == t["blk.5.attn_q.weight"] == Q.IQ2_XXS
    t = types("iq1_m")
    assert t["blk.3.attn_output.weight"] == Q.IQ2_XXS and t["blk.3.ffn_up.weight"] == Q.IQ1_M
    t = types("iq2_s")  # the mix named IQ2_S writes mostly IQ2_XS
    assert t["blk.0.attn_q.weight"] == Q.IQ2_XS and t["blk.0.attn_v.weight"] == Q.IQ3_S
    assert t["token_embd.weight"] == Q.IQ3_S and t["blk.9.attn_output.weight"] == Q.IQ3_S
    assert types("iq2_m")["blk.9.ffn_gate.weight"] == Q.IQ2_S
    t = types("iq3_xs")  # IQ3_XXS for the middle ffn_gate/ffn_up and all attn_q/attn_k
    assert [t[f"blk.{i}.ffn_up.weight"] for i in (1, 2, 13, 14)] == [Q.IQ3_S, Q.IQ3_XXS, Q.IQ3_XXS, Q.IQ3_S]
    assert t["blk.0.attn_k.weight"] == Q.IQ3_XXS and t["output.weight"] == Q.Q6_K
    t, ti = types("iq3_xxs"), types("iq3_xxs", has_imatrix=True)
    assert t["blk.0.attn_v.weight"] == Q.IQ3_S and ti["blk.0.attn_v.weight"] == Q.IQ3_XXS
    assert [t[f"blk.{i}.ffn_down.weight"] for i in (1, 2)] == [Q.Q4_K, Q.Q3_K]
    assert ti["blk.1.ffn_down.weight"] == Q.IQ3_XXS and t["blk.0.attn_q.weight"] == Q.IQ2_S
    t = types("iq3_m")
    assert t["blk.0.attn_v.weight"] == t["blk.0.attn_output.weight"] == t["blk.1.ffn_down.weight"] == Q.Q4_K
    assert t["blk.2.ffn_down.weight"] == t["blk.0.attn_q.weight"] == Q.IQ3_S
    assert types("iq3_s")["blk.0.attn_v.weight"] == Q.IQ3_S
    assert choose_types(specs, get_mix("iq3_s"), ModelShape(16, 8, 2, False))["blk.0.attn_v.weight"] == Q.Q4_K


@pytest.mark.parametrize("mix", [m.lower() for m in IQ_MIXES])
def test_iq_mixes_refuse_without_an_imatrix(mix: str) -> None:
    """llama-quantize: "this quantization requires an imatrix!" wherever a
    tensor but the embedding / output head gets IQ1_*, IQ2_* or IQ3_XXS"""
    specs, shape = _square(8, 512, 1024), ModelShape(8, 8, 4, False)
    types = choose_types(specs, get_mix(mix), shape)
    need = imatrix_required(types, get_mix(mix).ftype)
    if mix in ("iq3_s", "iq3_m"):
        assert need == []
        check_imatrix(types, get_mix(mix), has_imatrix=False)
        return
    assert need and "output.weight" not in need and "token_embd.weight" not in need
    with pytest.raises(ImatrixRequiredError, match=rf"{mix} mix requires an importance matrix: tensor '{need[0]}'"):
        check_imatrix(types, get_mix(mix), has_imatrix=False)
    check_imatrix(types, get_mix(mix), has_imatrix=True)


def test_iq_mix_fallback_and_spellings() -> None:
    shape = ModelShape(8, 8, 4, False)
    for n_embd, want in ((576, Q.IQ4_NL), (48, Q.F16)):
        specs = [TensorSpec("blk.0.attn_q.weight", (n_embd, n_embd), Q.F32)]
        assert choose_types(specs, get_mix("iq2_xxs"), shape)["blk.0.attn_q.weight"] == want
    for name in IQ_MIXES:
        assert get_mix(name).ftype == getattr(LlamaFileType, f"MOSTLY_{name}")
