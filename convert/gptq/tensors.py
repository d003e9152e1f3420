"""Writing GPTQ INT4 linears into a GGUF Job: the writer half of
runtime/gptq/format.py (which documents the layout and the keys).

A GPTQ linear becomes three or four planned tensors (qweight, scales, qzeros,
and g_idx when it is not i // group_size) whose producers share one load, so a
Job holds one linear's packed arrays at a time, as it holds one dense tensor:

    tensors += gptq_job_tensors("blk.0.attn_q.weight", packed, group_size=128)
    ...
    def metadata(w):
        ...                                  # the usual keys (write_hparams...)
        gptq_metadata(w, group_size=128, sym=True, desc_act=False, source="lamina")

Zeros are always written in v2 form (GPTQPacked.to_format("v2")). The same
module repacks a GPTQ linear losslessly into Q4_0 blocks when its layout
allows it (`q4_0_problem` says why not).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from lamina.convert.gptq.algorithm import GPTQError, check_bits
from lamina.convert.writer import OutTensor
from lamina.gptq.format import FORMAT_VERSION, GPTQ_KEYS, gptq_tensor_names
from lamina.gptq.pack import PER_WORD, GPTQPacked

FILE_TYPE_KEY = gguf.Keys.General.FILE_TYPE
Q4_0_BLOCK = 32
Q4_0_ZERO = 8  # Q4_0 dequantizes d * (q - 8)

Producer = Callable[[], np.ndarray]


class GPTQLayoutError(GPTQError):
    """A GPTQ linear cannot be stored as asked (shapes, groups, or a Q4_0 repack)."""


# ----------------------------------------------------------------------------
# metadata

FILE_LABEL = "GPTQ-INT4"  # the default file name's label of a GPTQ INT4 file (imported or quantized)


def gptq_metadata(
    w: gguf.GGUFWriter,
    *,
    group_size: int,
    sym: bool,
    desc_act: bool,
    source: str,
    bits: int = 4,
    damp: float | None = None,
    calibration: str | None = None,
) -> None:
    """The lamina.gptq.* keys, and general.file_type removed (see runtime/gptq/format.py).

    group_size: inputs per group as in quantize_config.json (-1: one group per row)."""
    check_bits(bits)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size == -1 or group_size >= 1):
        raise GPTQLayoutError(f"group_size must be -1 or a positive integer, got {group_size!r}")
    if not source:
        raise GPTQLayoutError('the GPTQ source must be a non-empty string ("lamina" or "checkpoint:<format>")')
    w.add_uint32(GPTQ_KEYS.VERSION, FORMAT_VERSION)
    w.add_uint32(GPTQ_KEYS.BITS, bits)
    w.add_uint32(GPTQ_KEYS.GROUP_SIZE, 0 if group_size == -1 else group_size)
    w.add_bool(GPTQ_KEYS.SYM, bool(sym))
    w.add_bool(GPTQ_KEYS.DESC_ACT, bool(desc_act))
    w.add_string(GPTQ_KEYS.SOURCE, source)
    if damp is not None:
        w.add_float32(GPTQ_KEYS.DAMP, float(damp))
    if calibration is not None:
        w.add_string(GPTQ_KEYS.CALIBRATION, calibration)
    w.kv_data[0].pop(FILE_TYPE_KEY, None)


# ----------------------------------------------------------------------------
# tensors


def effective_group_size(group_size: int, n_in: int) -> int:
    return n_in if group_size == -1 else group_size


def trivial_g_idx(g_idx: np.ndarray, group_size: int) -> bool:
    """True when g_idx is i // group_size (what a file without g_idx means)."""
    g_idx = np.asarray(g_idx)
    return bool(np.array_equal(g_idx, np.arange(g_idx.shape[0]) // effective_group_size(group_size, g_idx.shape[0])))


def gptq_out_tensors(weight_name: str, n_in: int, n_out: int, n_groups: int, with_g_idx: bool) -> list[OutTensor]:
    """The planned GGUF tensors of one GPTQ linear, in file order."""
    if n_in % PER_WORD or n_out % PER_WORD:
        raise GPTQLayoutError(
            f"{weight_name}: GPTQ INT4 needs n_in and n_out to be multiples of 8, got n_in={n_in}, n_out={n_out}"
        )
    names = gptq_tensor_names(weight_name)
    out = [
        OutTensor(names["qweight"], (n_in // PER_WORD, n_out), Q.I32, ggml_dims=False),
        OutTensor(names["scales"], (n_groups, n_out), Q.F16, ggml_dims=False),
        OutTensor(names["qzeros"], (n_groups, n_out // PER_WORD), Q.I32, ggml_dims=False),
    ]
    if with_g_idx:
        out.append(OutTensor(names["g_idx"], (n_in,), Q.I32))
    return out


def check_packed(weight_name: str, packed: GPTQPacked, group_size: int) -> None:
    """Shapes, bits and groups of a packed linear against the file's group size."""
    packed.validate(weight_name)
    n_in = packed.in_features
    want = -(-n_in // effective_group_size(group_size, n_in))
    if packed.n_groups != want:
        raise GPTQLayoutError(
            f"{weight_name}: scales hold {packed.n_groups} groups; group_size={group_size} and n_in={n_in} imply {want}"
        )


def gptq_job_tensors(
    weight_name: str,
    packed: GPTQPacked | Callable[[], GPTQPacked],
    group_size: int,
    *,
    n_in: int | None = None,
    n_out: int | None = None,
    n_groups: int | None = None,
    with_g_idx: bool | None = None,
) -> list[tuple[OutTensor, Producer]]:
    """(OutTensor, producer) pairs for one GPTQ linear, ready for Job.tensors.

    `packed` is the linear (any zero format; written as v2), or a function that
    loads it when the Job reaches it: then n_in, n_out, n_groups and with_g_idx
    (whether g_idx is non-trivial) must be given, since the table is written
    first. The loaded linear is checked against them."""
    if isinstance(packed, GPTQPacked):
        check_packed(weight_name, packed, group_size)
        n_in, n_out, n_groups = packed.in_features, packed.out_features, packed.n_groups
        with_g_idx = not trivial_g_idx(packed.g_idx, group_size)
        value = packed
        load: Callable[[], GPTQPacked] = lambda: value
    else:
        if n_in is None or n_out is None or n_groups is None or with_g_idx is None:
            raise TypeError("gptq_job_tensors with a loader needs n_in, n_out, n_groups and with_g_idx")
        load = packed
    table = gptq_out_tensors(weight_name, n_in, n_out, n_groups, bool(with_g_idx))
    cache: dict[str, GPTQPacked] = {}
    remaining = [len(table)]

    def part(name: str) -> np.ndarray:
        if "v2" not in cache:
            p = load()
            check_packed(weight_name, p, group_size)
            if (p.in_features, p.out_features, p.n_groups) != (n_in, n_out, n_groups) or (
                not trivial_g_idx(p.g_idx, group_size)
            ) != with_g_idx:
                raise GPTQLayoutError(
                    f"{weight_name}: loaded linear (n_in={p.in_features}, n_out={p.out_features}, "
                    f"groups={p.n_groups}) differs from the planned one "
                    f"(n_in={n_in}, n_out={n_out}, groups={n_groups})"
                )
            cache["v2"] = p.to_format("v2")
        p = cache["v2"]
        arrays = {"qweight": p.qweight, "scales": p.scales, "qzeros": p.qzeros, "g_idx": p.g_idx}
        data = np.ascontiguousarray(arrays[name], dtype=_DTYPES[name])
        remaining[0] -= 1
        if remaining[0] == 0:
            cache.clear()  # the last part: drop the linear
        return data

    kinds = ["qweight", "scales", "qzeros", "g_idx"][: len(table)]
    return [(t, partial(part, k)) for t, k in zip(table, kinds)]


_DTYPES = {"qweight": np.int32, "scales": np.float16, "qzeros": np.int32, "g_idx": np.int32}


# ----------------------------------------------------------------------------
# lossless repack into Q4_0


def q4_0_problem(
    sym: bool, group_size: int, n_in: int, g_idx: np.ndarray | None = None, zeros: np.ndarray | None = None
) -> str | None:
    """Why a GPTQ linear cannot become Q4_0 blocks without loss, or None if it can.

    Q4_0 stores 32 consecutive inputs of a row as d (f16) and levels q with
    w = d * (q - 8): exact for GPTQ when every zero is 8 (symmetric INT4), each
    32-input block lies inside one group (group size a multiple of 32, inputs in
    order: g_idx trivial) and n_in is a multiple of 32."""
    if not sym:
        return "the checkpoint is asymmetric (sym=false): Q4_0 has no per-group zero point (it is fixed at 8)"
    gs = effective_group_size(group_size, n_in)
    if n_in % Q4_0_BLOCK:
        return f"n_in={n_in} is not a multiple of the Q4_0 block size {Q4_0_BLOCK}"
    if gs % Q4_0_BLOCK:
        return f"group_size={group_size} is not a multiple of the Q4_0 block size {Q4_0_BLOCK}"
    if g_idx is not None and not trivial_g_idx(g_idx, group_size):
        return (
            "g_idx is permuted (act-order with groups out of input order): a 32-input Q4_0 block "
            "would span several groups"
        )
    if zeros is not None:
        bad = np.argwhere(np.asarray(zeros) != Q4_0_ZERO)
        if bad.size:
            g, o = (int(v) for v in bad[0])
            return (
                f"zero point {int(np.asarray(zeros)[g, o])} at group {g}, output {o} is not "
                f"{Q4_0_ZERO}, the zero Q4_0 dequantizes with"
            )
    return None


def repack_q4_0(weight_name: str, packed: GPTQPacked, group_size: int) -> np.ndarray:
    """A symmetric GPTQ linear as Q4_0 rows, u8 [n_out, n_in/32 * 18]; bit-exact:
    each block's d is its group's f16 scale, its quants the GPTQ levels.
    Raises GPTQLayoutError (naming the reason) when that is not lossless."""
    check_packed(weight_name, packed, group_size)
    levels, _, zeros, g_idx = packed.unpack()
    n_out, n_in = levels.shape
    problem = q4_0_problem(True, group_size, n_in, g_idx, zeros)
    if problem is not None:
        raise GPTQLayoutError(f"{weight_name}: cannot repack GPTQ to Q4_0 losslessly: {problem}")
    gs = effective_group_size(group_size, n_in)
    nb = n_in // Q4_0_BLOCK
    block_group = np.arange(nb) * Q4_0_BLOCK // gs  # [nb]
    d = np.ascontiguousarray(np.asarray(packed.scales, dtype=np.float16)[block_group].T)  # [n_out, nb]
    lv = levels.reshape(n_out, nb, Q4_0_BLOCK)
    out = np.empty((n_out, nb, 18), dtype=np.uint8)
    out[:, :, :2] = d.view(np.uint8).reshape(n_out, nb, 2)
    out[:, :, 2:] = lv[:, :, :16] | (lv[:, :, 16:] << 4)  # ggml: qs[j] = q[j] | q[j+16] << 4
    return out.reshape(n_out, nb * 18)
