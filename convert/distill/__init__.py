"""Knowledge distillation that heals a pruned student from its teacher (PyTorch,
the optional `lamina[train]` extra; the runtime never imports this package)."""
