"""Hugging Face checkpoints: reading them (checkpoint.py), their architectures
and name maps (arch.py), tokenizers (vocab.py), and the conversion plan
(convert.py)."""
