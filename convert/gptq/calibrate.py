"""GPTQ calibration on lamina's own engine: layer by layer, true-sequential.

    tokens = read_calibration_tokens(path, tokenizer)
    windows = calibration_windows(tokens, nsamples, seqlen, bos_id, path)   # [nsamples, seqlen]
    stats = calibrate(f32_gguf, windows, plan, n_threads)

The model is an f32 GGUF (the converter's own output), run by the native
engine with every weight of the layer being quantized replaced by what has
been committed so far (Model.load(overrides=...)). For each layer il, in order:

    1. capture attn_in (the normed input of q/k/v) over every window
       -> Hessian -> quantize attn_q, attn_k, attn_v (each its own GPTQ, one H)
    2. with q/k/v quantized, capture wo_in           -> attn_output
    3. with attention quantized, capture ffn_in      -> ffn_gate, ffn_up
    4. with gate/up quantized, capture down_in       -> ffn_down
    5. run the fully quantized layer on every window: the residual stream
       entering layer il + 1

so every layer is calibrated on the outputs of the already-quantized layers
before it (GPTQ's "true sequential" order, as AutoGPTQ runs it). Each step is
one eval_layers call per window over that single layer. The Hessian is kept as
the plain sum of X^T X (float64; GPTQ is invariant to its scale), which also
gives each linear's output error on the calibration inputs exactly:
||W X^T - Q X^T||^2 = sum((W - Q) H (W - Q)^T).

Calibration text: tokenized with the model's own tokenizer (no BOS/EOS added,
special tokens not parsed), cut into nsamples windows of seqlen tokens with
evenly spaced starts over the whole text: disjoint when the text is long
enough, overlapping when it is not; a text shorter than one window is an
error. Like llama.cpp's imatrix and perplexity, a window's first token is
replaced by BOS when the model's tokenizer adds one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from lamina.convert.errors import ConvertError

# the capture points of a layer, in true-sequential order, and the linears each feeds
CAPTURE_POINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("attn_q", "attn_k", "attn_v")),
    ("wo_in", ("attn_output",)),
    ("ffn_in", ("ffn_gate", "ffn_up")),
    ("down_in", ("ffn_down",)),
)
LINEARS = tuple(n for _, names in CAPTURE_POINTS for n in names)

# The default calibration text: As You Like It (public domain, see
# tests/data/README.md), shipped with the package. Evaluation uses
# alice29.txt, so calibrating here keeps calibration and evaluation text apart.
DEFAULT_CALIBRATION = Path(__file__).resolve().parent / "data" / "asyoulik.txt"


class CalibrationError(ConvertError, ValueError):
    """The calibration text or its settings cannot give the windows GPTQ needs."""


def weight_name(il: int, linear: str) -> str:
    return f"blk.{il}.{linear}.weight"


# ----------------------------------------------------------------------------
# calibration text -> windows


def default_calibration() -> Path:
    if not DEFAULT_CALIBRATION.is_file():
        raise CalibrationError(
            f"the default calibration text {DEFAULT_CALIBRATION} is missing (a damaged install?): "
            "pass --calibration FILE (plain UTF-8 text)"
        )
    return DEFAULT_CALIBRATION


def read_calibration_text(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read the calibration text: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{path}: the calibration text is not UTF-8 (byte {e.start})") from None
    if not text.strip():
        raise CalibrationError(f"{path}: the calibration text is empty")
    return text


def read_calibration_tokens(path: Path, tokenizer) -> np.ndarray:
    """The whole text as token ids (int32), no BOS/EOS, special tokens as text."""
    text = read_calibration_text(path)
    return np.asarray(tokenizer.encode(text, add_bos=False, special=False), dtype=np.int32)


def check_window_settings(nsamples: object, seqlen: object) -> tuple[int, int]:
    return _positive_int("nsamples", nsamples), _positive_int("seqlen", seqlen)


def _positive_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise CalibrationError(f"--{name} must be a positive integer, got {v!r}")
    return int(v)


def window_starts(n_tokens: int, nsamples: int, seqlen: int) -> np.ndarray:
    """nsamples start offsets, evenly spaced from 0 to n_tokens - seqlen:
    disjoint windows when the text holds nsamples of them, overlapping ones
    (as evenly spread) when it does not."""
    last = n_tokens - seqlen
    if last < 0:
        raise CalibrationError(f"{n_tokens} tokens cannot hold one window of {seqlen}")
    if nsamples == 1:
        return np.zeros(1, dtype=np.int64)
    return np.floor(np.linspace(0, last, nsamples)).astype(np.int64)


def calibration_windows(
    tokens: np.ndarray, nsamples: int, seqlen: int, bos_id: int | None, source: object = "calibration text"
) -> np.ndarray:
    """int32 [nsamples, seqlen] windows of tokens (see window_starts); the
    first token of each is BOS when bos_id is given."""
    nsamples, seqlen = check_window_settings(nsamples, seqlen)
    tokens = np.asarray(tokens, dtype=np.int32)
    n = int(tokens.shape[0])
    if n < seqlen:
        raise CalibrationError(
            f"{source}: tokenizes to {n} tokens, fewer than one calibration window of "
            f"--seqlen {seqlen} (and {nsamples} windows want {nsamples * seqlen} for no "
            f"overlap); use a longer text or a smaller --seqlen"
        )
    starts = window_starts(n, nsamples, seqlen)
    out = np.stack([tokens[s : s + seqlen] for s in starts]).astype(np.int32)
    if bos_id is not None:
        out[:, 0] = bos_id
    return out


# ----------------------------------------------------------------------------
# what happens to each linear


@dataclass
class LinearOutcome:
    """What a linear became: the float32 weight it now computes (the engine
    runs it for later layers) and, for reporting, the baseline it is
    measured against (plain round-to-nearest of the same type; None: none)."""

    committed: np.ndarray
    baseline: np.ndarray | None = None
    method: str = "gptq"


class LinearPlan(Protocol):
    def needs_hessian(self, name: str) -> bool:
        """Whether quantizing `name` uses its calibration inputs."""

    def quantize(self, name: str, W: np.ndarray, H: np.ndarray | None) -> LinearOutcome:
        """W: f32 [out, in] from the f32 GGUF; H: sum of X^T X (f64 [in, in]) or None."""


@dataclass
class LinearStats:
    name: str
    method: str
    err: float = float("nan")  # ||(W - Q) X^T||^2 over the calibration inputs
    err_baseline: float = float("nan")  # the same for the baseline
    signal: float = float("nan")  # ||W X^T||^2
    seconds: float = 0.0

    @property
    def rel_err(self) -> float:
        return self.err / self.signal if self.signal > 0 else float("nan")

    @property
    def ratio(self) -> float:
        """err / err_baseline: < 1 where GPTQ beats round-to-nearest."""
        return self.err / self.err_baseline if self.err_baseline > 0 else float("nan")


@dataclass
class LayerStats:
    il: int
    linears: list[LinearStats] = field(default_factory=list)
    seconds: float = 0.0


def output_error(W: np.ndarray, Q: np.ndarray, H: np.ndarray) -> float:
    """||W X^T - Q X^T||_F^2 from H = sum X^T X."""
    D = np.asarray(W, dtype=np.float64) - np.asarray(Q, dtype=np.float64)
    return float(np.einsum("oi,oi->", D @ H, D))


# ----------------------------------------------------------------------------
# the layer-by-layer driver


class Progress(Protocol):
    def start(self, n_layer: int, n_windows: int) -> None: ...
    def step(self, il: int, what: str) -> None: ...
    def layer_done(self, stats: LayerStats) -> None: ...


def calibrate(
    f32_gguf: str | os.PathLike[str],
    windows: np.ndarray,
    plan: LinearPlan,
    n_threads: int | None = None,
    progress: Progress | None = None,
    on_hessian: Callable[[int, str, np.ndarray], None] | None = None,
) -> list[LayerStats]:
    """Quantize every linear of the model, layer by layer (see the module doc).

    on_hessian(il, capture point, H) sees each Hessian sum (tests)."""
    from lamina.engine.context import Context, Model
    from lamina.engine.loader import read_hparams
    from lamina.gguf.reader import GGUFFile

    windows = np.asarray(windows, dtype=np.int32)
    if windows.ndim != 2 or windows.shape[0] < 1 or windows.shape[1] < 1:
        raise CalibrationError(f"calibration windows must be [nsamples, seqlen], got shape {windows.shape}")
    gguf = GGUFFile(f32_gguf)
    hp = read_hparams(gguf)
    ns, T = windows.shape

    def weight(name: str) -> np.ndarray:
        info = gguf.tensor(name)
        if info.ggml_type.name != "F32":
            raise CalibrationError(f"{gguf.path}: calibration needs f32 weights, {name} is {info.ggml_type.name}")
        return gguf.tensor_bytes(name).reshape(-1).view(np.float32).reshape(info.np_shape)

    def run(
        il: int, overrides: dict[str, np.ndarray], point: str | None, x: np.ndarray | None, keep_output: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """One pass of layer il over every window: (Hessian sum at `point`, outputs)."""
        model = Model.load(f32_gguf, n_threads=n_threads, overrides=overrides)
        ctx = Context(model, n_ctx=T, n_batch=T, kv_type="f32")
        if point is not None:
            ctx.capture(il, **{point: True})
        H = None
        out = np.empty((ns, T, hp.n_embd), dtype=np.float32) if keep_output else None
        for s in range(ns):
            ctx.truncate(0)
            y = ctx.eval_layers(windows[s], il, il + 1, None if x is None else x[s])
            if out is not None:
                out[s] = y
            if point is not None:
                X = ctx.captured[point]  # f32 [T, n_in]
                XtX = (X.T @ X).astype(np.float64)
                H = XtX if H is None else H + XtX
        return H, out

    if progress is not None:
        progress.start(hp.n_layer, ns)
    x: np.ndarray | None = None  # residual stream entering layer il (None: embeddings)
    all_stats: list[LayerStats] = []
    for il in range(hp.n_layer):
        t0 = time.perf_counter()
        stats = LayerStats(il)
        overrides: dict[str, np.ndarray] = {}
        for point, linears in CAPTURE_POINTS:
            names = [weight_name(il, n) for n in linears]
            H: np.ndarray | None = None  # Hessian sum at this capture point, when a linear needs it
            if any(plan.needs_hessian(n) for n in names):
                if progress is not None:
                    progress.step(il, f"capture {point}")
                H, _ = run(il, overrides, point, x, keep_output=False)
                assert H is not None, "a capture pass over >= 1 window always sums a Hessian"
                if on_hessian is not None:
                    on_hessian(il, point, H)
            for n in names:
                if progress is not None:
                    progress.step(il, n.split(".")[2])
                t1 = time.perf_counter()
                W = weight(n)
                outcome = plan.quantize(n, W, H if plan.needs_hessian(n) else None)
                committed = np.ascontiguousarray(outcome.committed, dtype=np.float32)
                if committed.shape != W.shape:
                    raise CalibrationError(f"{n}: quantized weight has shape {committed.shape}, expected {W.shape}")
                overrides[n] = committed
                st = LinearStats(n, outcome.method)
                if H is not None:
                    st.signal = float(np.einsum("oi,oi->", W.astype(np.float64) @ H, W))
                    st.err = output_error(W, committed, H)
                    if outcome.baseline is not None:
                        st.err_baseline = output_error(W, outcome.baseline, H)
                st.seconds = time.perf_counter() - t1
                stats.linears.append(st)
        if il + 1 < hp.n_layer:
            if progress is not None:
                progress.step(il, "forward")
            _, x = run(il, overrides, None, x, keep_output=True)
        stats.seconds = time.perf_counter() - t0
        all_stats.append(stats)
        if progress is not None:
            progress.layer_done(stats)
    return all_stats
