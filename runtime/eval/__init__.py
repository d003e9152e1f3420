"""Quality measurements as llama-perplexity makes them: scoring.py (chunks,
token NLL), perplexity.py, kld.py with its `_logits_` base files
(logits_file.py), and the logits sources (providers.py: lamina or llama.cpp)."""
