"""gpt-oss checkpoints as OpenAI released them: expert weights packed in MXFP4
(`*_blocks` u8 [X, out, in/32, 16], two 4-bit codes per byte, even element in
the low nibble; `*_scales` u8 [X, out, in/32], E8M0 exponents biased by 127),
made from a tiny float checkpoint (tests/support/tiny_hf.py). transformers
loads the result with Mxfp4Config(dequantize=True): the logits oracle for a
converted MXFP4 file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

# the E2M1 magnitudes a code's low three bits select; bit 3 is the sign
FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
_EXPERTS = re.compile(r"^model\.layers\.\d+\.mlp\.experts\.(gate_up_proj|down_proj)$")


def quantize_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w f32 [..., n] (n % 32 == 0) -> (blocks u8 [..., n/32, 16], scales u8 [..., n/32]):
    per block the smallest power-of-two scale that puts |w| within 6, each value
    rounded to the nearest E2M1 magnitude (any valid encoding serves the tests)."""
    blocks32 = w.reshape(*w.shape[:-1], w.shape[-1] // 32, 32)  # [..., nb, 32]
    amax = np.abs(blocks32).max(axis=-1)
    exp = np.where(amax > 0, np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), 0).astype(np.int32)
    exp = np.clip(exp, -127, 127)
    scaled = blocks32 / np.ldexp(np.float32(1), exp)[..., None]
    idx = np.abs(np.abs(scaled)[..., None] - FP4).argmin(axis=-1).astype(np.uint8)  # [..., nb, 32]
    codes = idx | (np.signbit(scaled) & (idx > 0)).astype(np.uint8) << 3
    packed = codes[..., 0::2] | codes[..., 1::2] << 4  # [..., nb, 16]
    return packed.astype(np.uint8), (exp + 127).astype(np.uint8)


def mxfp4_checkpoint(float_dir: Path, out_dir: Path) -> Path:
    """float_dir: a gpt-oss checkpoint with float experts ([X, in, out]) -> out_dir,
    the same model with its experts MXFP4-packed and config.json's
    quantization_config as released."""
    from safetensors.numpy import load_file, save_file

    packed: dict[str, np.ndarray] = {}
    for name, w in load_file(str(float_dir / "model.safetensors")).items():
        if _EXPERTS.match(name):
            rows = np.ascontiguousarray(w.transpose(0, 2, 1))  # [X, out, in]
            packed[name + "_blocks"], packed[name + "_scales"] = quantize_mxfp4(rows)
        else:
            packed[name] = w
    shutil.copytree(float_dir, out_dir)
    save_file(packed, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out_dir / "config.json").read_text())
    cfg["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": [
            "model.layers.*.self_attn",
            "model.layers.*.mlp.router",
            "model.embed_tokens",
            "lm_head",
        ],
    }
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir


def check_mxfp4_logits(got: np.ndarray, want: np.ndarray, unpacked: np.ndarray, what: str) -> None:
    """got vs want, logits f32 [T, V] of the same MXFP4 experts: MXFP4 moves
    logits ~4e-2 (median per-token nmse) from the float experts' (unpacked);
    two engines on the same blocks stay ~1e-4..1e-3 apart (activations go to
    Q8_0 in each one's float order) except where that noise flips a router
    near-tie, so the median and top-1 are held, not every token."""

    def per_token(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a - b) ** 2).mean(axis=1) / (b**2).mean()

    bound = 2e-3
    assert np.median(per_token(unpacked, want)) > 10 * bound  # the bound tells MXFP4 from float experts
    per = per_token(got, want)
    print(f"\n{what}: median nmse {np.median(per):.1e}, {(per < bound).mean():.2f} under {bound}")
    assert np.median(per) < bound, per
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.8
