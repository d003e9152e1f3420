"""Tokenizers from GGUF metadata: llama.cpp's BPE and SentencePiece vocab types
(bpe.py, spm.py over vocab.py's table), one `Tokenizer` in front of both, and
the streaming detokenizer that emits whole UTF-8 characters."""

from lamina.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
