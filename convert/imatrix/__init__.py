"""Importance matrices: computed as llama-imatrix computes them (collect.py),
stored in llama.cpp's GGUF and legacy formats (format.py), and handed to the
quantizers as llama-quantize hands them (Imatrix.importance)."""
