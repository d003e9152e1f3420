"""lamina run -p / -f: one completion to stdout, nothing else there; timings to stderr."""

from __future__ import annotations

import argparse
import sys

from lamina.cli.spec_flags import describe
from lamina.generation import Session
from lamina.sampling import Sampler, SamplingParams


def complete(gen: Session, args: argparse.Namespace, params: SamplingParams, prompt: str) -> int:
    if args.chat:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        tokens = gen.chat_tokens(messages + [{"role": "user", "content": prompt}])
    else:
        tokens = gen.tokenizer.encode(prompt)
    if len(tokens) >= gen.n_ctx:
        raise ValueError(f"the prompt is {len(tokens)} tokens, the context holds {gen.n_ctx} (raise -c)")
    cache = getattr(args, "prompt_cache", None)
    if cache is not None:
        from lamina.cli import prompt_cache

        reused = prompt_cache.restore(gen, cache, tokens)
        print(f"lamina run: prompt cache {cache}: {reused} of {len(tokens)} prompt tokens cached", file=sys.stderr)
    out = sys.stdout
    grammar = getattr(args, "constraint", None)  # --grammar / --json-schema
    spec = getattr(args, "speculative", None)  # --lookup / --model-draft
    request = gen.generate(tokens, Sampler(params, args.seed), args.n_predict, args.stop, grammar, spec)
    for piece in request.pieces():
        if piece.finish_reason == "error":
            raise RuntimeError(f"the generation failed: {piece.error}")
        out.write(piece.text)
        out.flush()
    out.write("\n")
    out.flush()
    t = request.timings
    save_all = bool(getattr(args, "prompt_cache_all", False))
    if cache is not None and (t.prompt_tokens > 1 or save_all):  # else the file holds this prompt already
        n = prompt_cache.save(gen, cache, len(tokens), save_all)
        print(f"lamina run: prompt cache {cache}: saved {n} tokens", file=sys.stderr)
    print(
        f"prompt {t.prompt_tokens} tok, {t.prompt_tps:.1f} tok/s | generation {t.sampled} tok, {t.gen_tps:.1f} tok/s"
        + describe(request),
        file=sys.stderr,
    )
    return 0
