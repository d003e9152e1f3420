"""GPTQ INT4, the one home of its storage for the runtime and the converter:
format.py (the GGUF tensors and lamina.gptq.* keys, validated), pack.py (the
ecosystem's qweight/qzeros/scales/g_idx packing, both ways), kernels.py (the
native INT4 matmul). The algorithm itself is lamina.convert.gptq."""
