"""lamina run -p / -f: one completion to stdout, nothing else there; timings to stderr."""

from __future__ import annotations

import argparse
import sys

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
    out = sys.stdout
    grammar = getattr(args, "constraint", None)  # --grammar / --json-schema
    request = gen.generate(tokens, Sampler(params, args.seed), args.n_predict, args.stop, grammar)
    for piece in request.pieces():
        if piece.finish_reason == "error":
            raise RuntimeError(f"the generation failed: {piece.error}")
        out.write(piece.text)
        out.flush()
    out.write("\n")
    out.flush()
    t = request.timings
    print(
        f"prompt {t.prompt_tokens} tok, {t.prompt_tps:.1f} tok/s | generation {t.sampled} tok, {t.gen_tps:.1f} tok/s",
        file=sys.stderr,
    )
    return 0
