"""GPTQ as the converter runs it: the algorithm (algorithm.py), calibration on
lamina's engine (calibrate.py), ggml's Q4_0/Q4_K/Q5_0 grids (grids.py), the
GGUF tensors written (tensors.py), `lamina convert --gptq` (convert.py) and
imports of AutoGPTQ/GPTQModel checkpoints (importer.py). Storage lives in
lamina.gptq."""
