"""A Hugging Face checkpoint directory: config.json plus safetensors weights.

Weights are memory-mapped and handed out one tensor at a time as float32, so a
conversion holds at most one tensor's f32 copy besides the map. The
`safetensors` library validates each file and lists its tensors; the bytes are
then viewed straight from our own map at the offsets its header declares,
because numpy has no bfloat16 and bf16 -> f32 is only a 16-bit shift.

Configs are read as transformers writes them today (v5: `rope_parameters`,
`dtype`) and as older ones did (`rope_theta`, `rope_scaling`, `torch_dtype`);
multimodal configs have their `text_config` lifted to the top, as llama.cpp's
converter does.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamina.convert.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
_SLAB_BYTES = 1 << 26

# safetensors dtype -> (numpy dtype of the stored bits, bytes per element)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
# integer tensors (GPTQ qweight/qzeros/g_idx, MXFP4 blocks/scales), indexed only when asked for
_INT_DTYPES: dict[str, np.dtype] = {
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}


@dataclass(frozen=True)
class StoredTensor:
    name: str
    path: Path
    dtype: str  # safetensors spelling: F32, F16, BF16 (I32, U8 with int_tensors=True)
    shape: tuple[int, ...]  # torch order: shape[-1] is contiguous
    start: int  # absolute byte offset in the file
    nbytes: int


class HFCheckpoint:
    def __init__(self, directory: str | Path, int_tensors: bool = False) -> None:
        """int_tensors: also index I32 and U8 tensors (GPTQ and MXFP4 checkpoints), read with load_array."""
        self.dir = Path(directory)
        self._dtypes = {**_DTYPES, **_INT_DTYPES} if int_tensors else _DTYPES
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir}: not a directory (expected a Hugging Face checkpoint)")
        self.raw_config = read_json(self.dir / "config.json")
        self.config = _flatten_config(self.raw_config)
        if is_mxfp4(self.config):  # its packed expert blocks and exponents are U8
            self._dtypes = {**_DTYPES, **_INT_DTYPES}
        self.tensors: dict[str, StoredTensor] = {}
        self._maps: dict[Path, mmap.mmap] = {}
        for part in self._part_files():
            self._index_part(part)
        self._check_index()

    # -- files -------------------------------------------------------------

    def _part_files(self) -> list[Path]:
        index = self.dir / INDEX_NAME
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: no 'weight_map' object")
            parts = [self.dir / p for p in sorted(set(weight_map.values()))]
            missing = [p.name for p in parts if not p.is_file()]
            if missing:
                raise CheckpointError(f"{index}: weight files listed but missing: {', '.join(missing)}")
            return parts
        parts = sorted(p for p in self.dir.glob("model*.safetensors") if p.is_file())
        if not parts:
            bins = sorted(p.name for p in self.dir.glob("pytorch_model*.bin"))
            hint = f" (found {', '.join(bins)}: PyTorch pickles are not read, save as safetensors)" if bins else ""
            raise CheckpointError(f"{self.dir}: no model.safetensors or {INDEX_NAME}{hint}")
        return parts

    def _index_part(self, path: Path) -> None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                names = list(f.keys())
            header, data_start = _read_header(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable safetensors file: {_one_line(e)}") from None
        size = path.stat().st_size
        for name in names:
            entry = header[name]
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
            if dtype not in self._dtypes:
                raise CheckpointError(
                    f"{path}: tensor {name!r} has dtype {dtype}; expected "
                    f"{', '.join(list(self._dtypes)[:-1])} or {list(self._dtypes)[-1]}"
                )
            if end - begin != math.prod(shape) * self._dtypes[dtype].itemsize or data_start + end > size:
                raise CheckpointError(f"{path}: tensor {name!r} data does not fit its shape {shape}")
            if name in self.tensors:
                raise CheckpointError(f"{path}: tensor {name!r} is also in {self.tensors[name].path.name}")
            self.tensors[name] = StoredTensor(name, path, dtype, shape, data_start + begin, end - begin)

    def _check_index(self) -> None:
        index = self.dir / INDEX_NAME
        if not index.is_file():
            return
        listed = set(read_json(index)["weight_map"])
        missing = sorted(listed - set(self.tensors))
        if missing:
            raise CheckpointError(f"{index}: tensors listed but absent from the weight files: {', '.join(missing[:5])}")

    # -- data --------------------------------------------------------------

    def _map(self, t: StoredTensor) -> mmap.mmap:
        mm = self._maps.get(t.path)
        if mm is None:
            with open(t.path, "rb") as f:
                mm = self._maps[t.path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return mm

    def load_array(self, name: str, rows: slice | None = None) -> np.ndarray:
        """The tensor as a new array of its stored dtype (I32 -> int32, U8 -> uint8, F16 -> float16,
        F32 -> float32), in torch order, bits untouched. BF16 has no numpy dtype: use load_f32.
        rows: only these indices of axis 1 are copied (gpt-oss's gate and up rows alternate in one tensor)."""
        t = self.tensors[name]
        if t.dtype == "BF16":
            raise CheckpointError(f"{t.path}: tensor {name!r} is BF16; expected I32, U8, F16 or F32 here")
        raw = np.frombuffer(self._map(t), dtype=self._dtypes[t.dtype], count=math.prod(t.shape), offset=t.start)
        whole = raw.reshape(t.shape)
        return (whole if rows is None else whole[:, rows]).copy()

    def load_f32(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array in torch order (bf16/f16 widened exactly)."""
        t = self.tensors[name]
        if t.dtype in _INT_DTYPES:
            raise CheckpointError(
                f"{t.path}: tensor {name!r} is an integer ({t.dtype}) tensor; "
                f"expected a float weight (F32, F16 or BF16)"
            )
        mm = self._map(t)
        raw = np.frombuffer(mm, dtype=_DTYPES[t.dtype], count=math.prod(t.shape), offset=t.start)
        out = np.empty(raw.size, dtype=np.float32)
        # Widen in slabs and drop each slab's mapped pages once copied, so the
        # map never holds more than a slab resident next to the f32 copy.
        step = _SLAB_BYTES // raw.itemsize
        for a in range(0, raw.size, step):
            src = raw[a : a + step]
            out[a : a + step] = (src.astype(np.uint32) << 16).view(np.float32) if t.dtype == "BF16" else src
            begin = t.start + a * raw.itemsize
            page = begin - begin % mmap.PAGESIZE
            mm.madvise(mmap.MADV_DONTNEED, page, begin + src.nbytes - page)
        return out.reshape(t.shape)


def is_mxfp4(cfg: dict[str, Any]) -> bool:
    """The checkpoint's experts are MXFP4-packed (`*_blocks` / `*_scales`), as
    OpenAI released gpt-oss."""
    quant = cfg.get("quantization_config")
    return isinstance(quant, dict) and quant.get("quant_method") == "mxfp4"


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable: {_one_line(e)}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return value


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


def _flatten_config(raw: dict[str, Any]) -> dict[str, Any]:
    config = dict(raw)
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    if "dtype" not in config and "torch_dtype" in config:
        config["dtype"] = config["torch_dtype"]
    return config


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
