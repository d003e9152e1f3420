"""`lamina convert` and `lamina quantize` (common.py: what both do around a job)."""
