"""GGUFFile agrees with gguf-py's GGUFReader on valid files, small and real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf import GGUFValueType as V

from lamina import model_cache
from lamina.errors import GGUFError, GGUFMissingKeyError, GGUFMissingTensorError
from lamina.gguf.reader import GGUFFile, MetaType
from support.gguf_builders import (
    SAMPLE_STRING,
    gguf_bytes,
    good_raw_parts,
    kv_string,
    tensor_info,
    write_bytes,
    write_sample_gguf,
)


def assert_matches_gguf_py(path: Path, *, check_data: bool = True) -> None:
    ref = GGUFReader(path)
    with GGUFFile(path) as f:
        assert f.data_offset == ref.data_offset
        assert f.alignment == ref.alignment
        ref_fields = {k: v for k, v in ref.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(ref_fields)
        for key, field in ref_fields.items():
            mine = f.metadata[key]
            expected = field.contents()
            if isinstance(mine, np.ndarray):
                mine = mine.tolist()
            assert mine == expected, key
            t = f.metadata_types[key]
            assert [t.type] + ([t.element] if t.element is not None else []) == field.types, key
        assert len(f.tensors) == len(ref.tensors)
        for mine, theirs in zip(f.tensors, ref.tensors):
            assert mine.name == theirs.name
            assert mine.ne == tuple(int(d) for d in theirs.shape)
            assert mine.np_shape == tuple(reversed(mine.ne))
            assert mine.ggml_type == theirs.tensor_type
            assert mine.offset == theirs.data_offset
            assert mine.nbytes == theirs.n_bytes
            assert mine.n_elements == theirs.n_elements
            if check_data:
                assert f.tensor_bytes(mine.name).tobytes() == theirs.data.tobytes(), mine.name


@pytest.mark.parametrize("alignment", [None, 64, 1])
def test_sample_matches_gguf_py(tmp_path: Path, alignment: int | None) -> None:
    path = write_sample_gguf(tmp_path / "sample.gguf", alignment=alignment)
    assert_matches_gguf_py(path)
    with GGUFFile(path) as f:
        assert f.alignment == (alignment or 32)
        assert f.data_offset % f.alignment == 0


def test_values_and_types(tmp_path: Path) -> None:
    with GGUFFile(write_sample_gguf(tmp_path / "s.gguf")) as f:
        assert f.version == 3
        assert f.architecture == "llama"
        assert f.get("test.u64") == 2**63 + 5
        assert f.get("test.bool") is True
        assert f.get("test.string") == SAMPLE_STRING
        assert f.get("missing", "dflt") == "dflt"
        assert f.require("test.i8") == -5
        assert f.metadata_types["test.u32"] == MetaType(V.UINT32)
        assert f.metadata_types["test.strings"] == MetaType(V.ARRAY, V.STRING)
        bools = f.metadata["test.bools"]
        assert bools.dtype == np.bool_ and bools.tolist() == [True, False, True]
        assert f.metadata["test.u16s"].dtype == np.uint16
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 100


def test_tensor_info_and_views(tmp_path: Path) -> None:
    f = GGUFFile(write_sample_gguf(tmp_path / "s.gguf"))
    q4k = f.tensor("q4_k.2d")
    assert q4k.ggml_type == T.Q4_K and q4k.ne == (256, 2) and q4k.np_shape == (2, 256)
    assert (q4k.n_rows, q4k.row_bytes, q4k.nbytes) == (2, 144, 288)
    view = f.tensor_bytes("q4_k.2d")
    assert view.dtype == np.uint8 and view.shape == (2, 144)
    assert not view.flags.writeable and not view.flags.owndata
    with pytest.raises(ValueError):
        view[0, 0] = 1
    f32 = f.tensor("f32.3d")
    assert f32.ne == (4, 3, 2) and f.tensor_bytes("f32.3d").shape == (6, 16)
    before = view.tobytes()
    f.close()
    assert view.tobytes() == before  # a live view keeps the mapping alive
    with pytest.raises(GGUFError, match="closed"):
        f.tensor_bytes("q4_k.2d")


def test_missing_tensor_and_key_are_typed(tmp_path: Path) -> None:
    path = write_sample_gguf(tmp_path / "s.gguf")
    with GGUFFile(path) as f:
        with pytest.raises(GGUFMissingTensorError) as e:
            f.tensor("nope.weight")
        assert isinstance(e.value, KeyError)
        assert "nope.weight" in str(e.value) and str(path) in str(e.value)
        assert e.value.tensor == "nope.weight"
        with pytest.raises(GGUFMissingKeyError, match="llama.block_count") as k:
            f.require("llama.block_count")
        assert str(path) in str(k.value) and k.value.key == "llama.block_count"


def test_missing_architecture(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "noarch.gguf", gguf_bytes([kv_string("general.name", "x")]))
    with GGUFFile(path) as f:
        assert f.tensors == [] and f.metadata == {"general.name": "x"}
        with pytest.raises(GGUFMissingKeyError, match="general.architecture"):
            _ = f.architecture


def test_version_2_loads(tmp_path: Path) -> None:
    kvs, infos, data = good_raw_parts()
    path = write_bytes(tmp_path / "v2.gguf", gguf_bytes(kvs, infos, data, version=2))
    with GGUFFile(path) as f:
        assert f.version == 2 and [t.name for t in f.tensors] == ["a", "b"]
    assert_matches_gguf_py(path)


def test_invalid_utf8_value_is_kept_losslessly(tmp_path: Path) -> None:
    raw = b"ok\xff\xfe"
    path = write_bytes(tmp_path / "u.gguf", gguf_bytes([kv_string("test.bytes", raw)]))
    with GGUFFile(path) as f:
        assert f.metadata["test.bytes"].encode("utf-8", "surrogateescape") == raw


def test_gaps_and_any_order_are_allowed(tmp_path: Path) -> None:
    # ggml packs tightly in info order; the reader only needs aligned,
    # in-file, non-overlapping tensors.
    infos = [tensor_info("late", [8], T.F32, 64), tensor_info("early", [8], T.F32, 0)]
    path = write_bytes(tmp_path / "g.gguf", gguf_bytes([], infos, bytes(96)))
    with GGUFFile(path) as f:
        assert f.tensor("late").offset - f.tensor("early").offset == 64


# -- real models --------------------------------------------------------------


REAL_ARCHS = {"smollm2-135m-instruct": "llama", "gemma-3-270m": "gemma3", "qwen2.5-coder-0.5b": "qwen2"}


@pytest.mark.parametrize("name", REAL_ARCHS)
def test_real_model_matches_gguf_py(name: str) -> None:
    # The default model is always fetched; the bigger ones only if CI did.
    path = model_cache.fetch_model(name) if name == model_cache.DEFAULT_MODEL else model_cache.cached_model(name)
    if path is None:
        pytest.skip(f"{name} not fetched (python -m lamina.model_cache fetch {name})")
    # Data equality follows from equal offsets and sizes; skip comparing 500 MB.
    assert_matches_gguf_py(path, check_data=False)
    with GGUFFile(path) as f:
        assert f.architecture == REAL_ARCHS[name]
