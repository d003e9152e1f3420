"""Speculative-decoding flags of `lamina run` (and `lamina bench --spec`):
llama.cpp's names, with its newer --spec-* spellings accepted too.

    --lookup                     prompt lookup: drafts from the conversation's own tokens
    -md / --model-draft FILE     a small draft model sharing the tokenizer
    --draft-max N / --draft-min N / --draft-p-min P"""

from __future__ import annotations

import argparse

from lamina import options
from lamina.cli.errors import checked


def add_spec_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("speculative decoding")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--lookup", action="store_true", help="prompt-lookup decoding (n-gram drafts from the context)")
    how.add_argument(
        "-md", "--model-draft", "--spec-draft-model", default=None, help="draft model (GGUF, same tokenizer)"
    )
    g.add_argument(
        "--lookup-ngram", type=int, default=4, help="longest n-gram --lookup matches (default 4, llama.cpp's)"
    )
    g.add_argument("--draft-max", "--spec-draft-n-max", type=int, default=None, help="most tokens one draft verifies")
    g.add_argument("--draft-min", "--spec-draft-n-min", type=int, default=None, help="shorter drafts are not verified")
    g.add_argument(
        "--draft-p-min",
        "--spec-draft-p-min",
        type=checked(options.probability, "draft-p-min"),
        default=None,
        help="the draft model stops where its best token is less likely (default 0.75)",
    )


def speculative(args: argparse.Namespace, n_threads: int | None = None):
    """The Speculative the flags ask for (the draft model loaded), or None;
    a flag that needs --lookup or --model-draft without one is an error."""
    from lamina.speculative import LlamaDraftFile, LlamaPromptLookupDecoding, Speculative, SpeculativeError
    from lamina.speculative.draft import DEFAULT_DRAFT_MAX, DEFAULT_DRAFT_P_MIN, check_draft_range
    from lamina.speculative.step import DEFAULT_LOOKUP_MAX

    if not args.lookup and args.model_draft is None:
        given = [f for f, v in (("--draft-max", args.draft_max), ("--draft-min", args.draft_min)) if v is not None]
        if args.draft_p_min is not None:
            given.append("--draft-p-min")
        if given:
            raise SpeculativeError(f"{', '.join(given)} needs --lookup or --model-draft")
        return None
    if getattr(args, "constraint", None) is not None:
        raise SpeculativeError("speculative decoding cannot be combined with --grammar / --json-schema")
    n_min = 0 if args.draft_min is None else args.draft_min
    if args.lookup:
        if args.draft_p_min is not None:
            raise SpeculativeError("--draft-p-min applies to a draft model (--model-draft), not to --lookup")
        n_max = DEFAULT_LOOKUP_MAX if args.draft_max is None else args.draft_max
        check_draft_range(n_max, n_min)
        if not 1 <= args.lookup_ngram <= 64:
            raise SpeculativeError(f"--lookup-ngram must be in [1, 64], got {args.lookup_ngram}")
        return Speculative(LlamaPromptLookupDecoding(args.lookup_ngram, max(n_max, 1)), n_max, n_min)
    n_max = DEFAULT_DRAFT_MAX if args.draft_max is None else args.draft_max
    p_min = DEFAULT_DRAFT_P_MIN if args.draft_p_min is None else args.draft_p_min
    path = options.model_file(args.model_draft)
    return Speculative(LlamaDraftFile(path, n_max, n_min, p_min, n_threads=n_threads))


def describe(request) -> str:
    """The acceptance line printed after a speculative reply."""
    s = request.spec
    if s is None:
        return ""
    return f" | draft {s.drafted} tok, accepted {s.accepted} ({100 * s.acceptance:.0f}%) in {s.steps} steps"
