"""Pruning: structured cuts (layers, FFN neurons) that make a model smaller and
faster, and unstructured / N:M sparsity (magnitude, Wanda, SparseGPT)."""
