"""Idle slots keep their sequences' cells for reuse, but a unified KV pool full
of finished requests must give cells back to a new one (least recently used
first), not end it with "context" after 0 tokens. Found by tools/soak.py:
after three SmolLM2 chats in n_ctx=256 every reply was empty."""

from __future__ import annotations

from pathlib import Path

from lamina import Llama

TINY = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "gguf" / "tiny-llama-q8_0"


def test_a_pool_full_of_idle_caches_still_serves_new_prompts() -> None:
    # 64 cells shared by 4 sequences; each prompt + reply takes ~30 of them and stays cached
    with Llama(str(TINY), n_ctx=64, n_seq_max=4, kv_unified=True, n_threads=1, verbose=False) as llm:
        eos = llm.token_eos()
        for i, letters in enumerate(
            ["abcdefghij", "klmnopqrst", "uvwxyzabcd", "efghijklmn", "opqrstuvwx", "yzabcdefgh"]
        ):
            out = llm.create_completion(
                " ".join(letters), max_tokens=10, temperature=0.0, logit_bias={str(eos): float("-inf")}
            )
            assert out["usage"]["completion_tokens"] == 10, (i, out)
            assert out["choices"][0]["finish_reason"] == "length"
