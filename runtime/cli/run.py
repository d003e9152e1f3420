"""lamina run: chat with a GGUF model in the terminal, or complete one prompt.

    lamina run [MODEL] [-t N] [-c N] [--temp T] [-n N] ...      chat REPL (default model if none)
    lamina run MODEL -p PROMPT | -f FILE [-n N] [--temp 0]     one-shot raw completion to stdout

Every value goes through lamina.options, as the Llama API's do.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from lamina import options
from lamina.cli.errors import checked, one_line_errors
from lamina.cli.model_flags import add_lora_flags, add_model_flags, lora_files
from lamina.cli.spec_flags import add_spec_flags, speculative
from lamina.sampling import SamplingParams

HELP = """commands:
  /help          this text
  /reset         forget the conversation (keeps the system prompt)
  /system TEXT   set the system prompt and reset
  /stats         model, context and speed so far
  /exit          quit (also Ctrl-D); Ctrl-C stops a reply"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lamina run", description="Chat with a GGUF model, or complete a prompt.")
    add_model_flags(ap, "context size (default: the model's, capped by a 1 GiB KV-cache budget)")
    add_lora_flags(ap)
    ap.add_argument("--temp", type=checked(options.temperature), default=0.8, help="0: greedy")
    ap.add_argument("--top-k", type=checked(options.top_k), default=40, help="0: off")
    ap.add_argument("--top-p", type=checked(options.top_p), default=0.95, help="1: off")
    ap.add_argument("--min-p", type=checked(options.probability, "min_p"), default=0.05, help="0: off")
    ap.add_argument("--repeat-penalty", type=checked(options.repeat_penalty), default=1.0, help="1: off")
    ap.add_argument("--repeat-last-n", type=checked(options.repeat_last_n), default=64, help="-1: the whole context")
    ap.add_argument("--seed", type=checked(options.seed), default=None, help="same seed, same output; -1: random")
    ap.add_argument(
        "-l",
        "--logit-bias",
        type=checked(options.logit_bias_flag),
        action="append",
        default=[],
        metavar="TOKEN_ID(+/-)BIAS",
        help="add BIAS to a token's logit, e.g. 15043+1, 15043-1, 15043-inf bans it (repeatable)",
    )
    ap.add_argument("--typical", type=checked(options.typical_p), default=1.0, help="locally typical sampling; 1: off")
    ap.add_argument(
        "--mirostat", type=checked(options.mirostat), default=0, help="0: off, 1: Mirostat, 2: Mirostat 2.0"
    )
    ap.add_argument("--mirostat-lr", type=checked(options.mirostat_eta), default=0.1, help="Mirostat's eta")
    ap.add_argument("--mirostat-ent", type=checked(options.mirostat_tau), default=5.0, help="Mirostat's tau")
    ap.add_argument("--system", default=None, help="system prompt")
    ap.add_argument("--chat-template-file", type=Path, default=None, help="Jinja chat template overriding the file's")
    ap.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    ap.add_argument(
        "--context-shift", action="store_true", help="when the context fills, drop the oldest turns instead of stopping"
    )
    ap.add_argument("--require-gpu", action="store_true", help="fail instead of running on the CPU without a GPU")
    prompt = ap.add_mutually_exclusive_group()
    prompt.add_argument("-p", "--prompt", default=None, help="one-shot: complete this prompt and exit")
    prompt.add_argument("-f", "--file", type=Path, default=None, help="one-shot: complete the text of this file")
    ap.add_argument(
        "-n",
        "--n-predict",
        type=checked(options.n_predict),
        default=None,
        help="tokens per reply (-1: until the model stops)",
    )
    ap.add_argument("--chat", action="store_true", help="one-shot: send the prompt through the chat template")
    ap.add_argument(
        "--prompt-cache",
        type=Path,
        default=None,
        metavar="FILE",
        help="one-shot: save the evaluated prompt's state in FILE and reuse it when a later prompt starts the same",
    )
    ap.add_argument("--prompt-cache-all", action="store_true", help="with --prompt-cache: save the reply's tokens too")
    # llama.cpp's flags for constrained output
    constraint = ap.add_mutually_exclusive_group()
    constraint.add_argument("--grammar", default=None, help="GBNF grammar every reply must match")
    constraint.add_argument("--grammar-file", type=Path, default=None, help="file of a GBNF grammar")
    constraint.add_argument("-j", "--json-schema", default=None, help="JSON schema every reply must validate against")
    constraint.add_argument("-jf", "--json-schema-file", type=Path, default=None, help="file of a JSON schema")
    add_spec_flags(ap)
    return ap


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        logit_bias=tuple(dict(args.logit_bias).items()),  # a token given twice: the last bias, as llama.cpp's map
        typical_p=args.typical,
        mirostat=args.mirostat,
        mirostat_tau=args.mirostat_ent,
        mirostat_eta=args.mirostat_lr,
    )


def constraint(args: argparse.Namespace):
    """The Grammar of --grammar / --grammar-file / --json-schema / --json-schema-file, or None."""
    from lamina.grammar import Grammar, load_grammar_file

    if args.grammar is not None:
        return Grammar.from_gbnf(args.grammar)
    if args.grammar_file is not None:
        return Grammar.from_gbnf(load_grammar_file(args.grammar_file))
    if args.json_schema is not None:
        return Grammar.from_json_schema(args.json_schema)
    if args.json_schema_file is not None:
        return Grammar.from_json_schema(load_grammar_file(args.json_schema_file))
    return None


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


@one_line_errors("lamina run")
def _run(args: argparse.Namespace) -> int:
    from lamina.cli.repl import REPL_PREFILL_CHUNK
    from lamina.engine.offload import OffloadWarning
    from lamina.generation import open_session

    params = sampling_params(args)  # everything is checked before the (slow) model load
    args.constraint = constraint(args)
    args.speculative = speculative(args, args.threads)  # --lookup / --model-draft: refused with a grammar
    template = args.chat_template_file.read_text() if args.chat_template_file else None
    prompt = args.file.read_text(encoding="utf-8") if args.file is not None else args.prompt
    if (args.prompt_cache is not None or args.prompt_cache_all) and prompt is None:
        raise ValueError("--prompt-cache and --prompt-cache-all need a one-shot prompt (-p or -f)")
    if args.prompt_cache_all and args.prompt_cache is None:
        raise ValueError("--prompt-cache-all needs --prompt-cache FILE")
    path = options.model_file(args.model_opt or args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = open_session(
            path,
            n_ctx=args.ctx_size,
            n_threads=args.threads,
            n_batch=args.batch_size,
            kv_type=args.cache_type,
            chat_template=template,
            gpu_layers=args.gpu_layers,
            require_gpu=args.require_gpu,
            # Ctrl-C in the REPL acts between two prompt chunks: keep each short
            prefill_chunk=REPL_PREFILL_CHUNK if prompt is None else args.batch_size,
            loras=lora_files(args),
        )
    for w in caught:
        if issubclass(w.category, (OffloadWarning, UserWarning)):
            print(f"lamina run: warning: {w.message}", file=sys.stderr)
    bad = next((t for t, _ in params.logit_bias if t >= gen.model.n_vocab), None)
    if bad is not None:
        gen.close()
        raise options.OptionError(f"--logit-bias token id {bad} is outside the vocabulary [0, {gen.model.n_vocab})")
    if gen.context.offload.gpu_layers:
        print(f"lamina run: {gen.context.offload_description}", file=sys.stderr)
    chatting = prompt is None or args.chat
    if chatting and gen.template.built_in:
        print(
            f"lamina run: warning: {path.name} has no chat template of its own (a base model?); chatting through "
            f"the {gen.template.origin}, its replies may not end: bound them with -n, or complete plain text "
            "with -p",
            file=sys.stderr,
        )
    if prompt is not None:
        from lamina.cli.oneshot import complete

        return complete(gen, args, params, prompt)
    from lamina.cli.repl import Repl

    return Repl(gen, args, params).loop()


if __name__ == "__main__":
    sys.exit(main())
