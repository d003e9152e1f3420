"""The chat REPL: streams replies as they are generated, keeps the KV cache
across turns (the engine reuses the slot's cached prefix, so each turn
evaluates only the new tokens), Ctrl-C stops a reply or a long prompt and
keeps the session."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

from lamina.cli.run import HELP
from lamina.engine.request import RequestTimings
from lamina.generation import Session
from lamina.sampling import Sampler, SamplingParams

REPL_PREFILL_CHUNK = 128  # prompt tokens per step: ~0.5 s on 2 cores for a 135M model
CANCEL_WAIT = 30.0  # seconds: one step at most, normally


class Repl:
    def __init__(self, gen: Session, args: argparse.Namespace, params: SamplingParams):
        self.gen = gen
        self.console = Console(highlight=False)
        self.sampler = Sampler(params, args.seed)
        self.system: str | None = args.system
        self.stops: list[str] = args.stop
        self.context_shift: bool = args.context_shift
        self.max_tokens: int | None = args.n_predict  # -n: tokens per reply
        self.grammar = getattr(args, "constraint", None)  # --grammar / --json-schema: every reply matches it
        self.speculative = getattr(args, "speculative", None)  # --lookup / --model-draft
        self.messages: list[dict[str, str]] = []
        self.total = RequestTimings()
        self.gen_seconds = 0.0
        self.cached = 0  # positions the conversation holds in the cache

    # ------------------------------------------------------------- the loop
    def loop(self) -> int:
        m = self.gen.model
        ctx = self.gen.context
        self.console.print(
            f"[bold]lamina[/] · {os.path.basename(m.path)} · {m.hparams.arch} · "
            f"context {ctx.n_ctx} (KV cache {ctx.kv_bytes / 2**20:.0f} MiB {ctx.kv_type}) · "
            f"/help for commands",
            style="dim",
            soft_wrap=True,
        )
        while True:
            try:
                line = self.console.input("[bold green]> [/]")
            except EOFError:
                self.console.print()
                return 0
            except KeyboardInterrupt:
                self.console.print("\n(/exit or Ctrl-D to quit)", style="dim")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
                continue
            try:
                self.turn(line)
            except KeyboardInterrupt:  # before the reply started (template, tokenizer, prefill)
                self.console.print("\n(stopped)", style="dim")

    def command(self, line: str) -> bool:
        """Runs a /command; False means exit."""
        name, _, rest = line.partition(" ")
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.console.print(HELP, style="dim")
        elif name == "/reset":
            self.reset()
            self.console.print("(conversation reset)", style="dim")
        elif name == "/system":
            self.system = rest.strip() or None
            self.reset()
            self.console.print(
                f"(system prompt {'set' if self.system else 'cleared'}; conversation reset)", style="dim"
            )
        elif name == "/stats":
            self.stats()
        else:
            self.console.print(f"unknown command {name}; /help lists them", style="yellow")
        return True

    def reset(self) -> None:
        self.messages = []
        self.cached = 0
        self.gen.reset()

    # ------------------------------------------------------------- a turn
    def _prompt(self) -> list[int]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return self.gen.chat_tokens(system + self.messages)

    def _fit(self) -> list[int] | None:
        """Prompt tokens for the conversation, dropping the oldest turns if
        --context-shift allows it; None when it cannot fit."""
        tokens = self._prompt()
        while len(tokens) >= self.gen.n_ctx:
            if not self.context_shift or len(self.messages) < 3:
                return None
            del self.messages[:2]  # the oldest user/assistant exchange
            tokens = self._prompt()
        return tokens

    def turn(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        tokens = self._fit()
        if tokens is None:
            self.messages.pop()
            self.console.print(
                f"context full ({self.gen.n_ctx} tokens): /reset to start over"
                f"{'' if self.context_shift else ', or restart with --context-shift'}",
                style="yellow",
            )
            return
        reply, finish = "", None
        out = self.console.file
        request = self.gen.generate(tokens, self.sampler, self.max_tokens, self.stops, self.grammar, self.speculative)
        try:
            for piece in request.pieces():
                out.write(piece.text)
                out.flush()
                reply += piece.text
                finish = piece.finish_reason
        except KeyboardInterrupt:
            # the engine stops at its next step: within one prompt chunk or one token
            request.cancel()
            request.wait(CANCEL_WAIT)  # the slot then holds exactly what was evaluated
            finish = "interrupted"
        if finish == "error":
            self.console.print("\n(the generation failed)", style="yellow")
        self.messages.append({"role": "assistant", "content": reply})
        self.cached = self.gen.cached_tokens(request)
        self.console.print()
        self.summary(request.timings, finish)

    def summary(self, t: RequestTimings, finish: str | None) -> None:
        self.total.prompt_tokens += t.prompt_tokens
        self.total.prompt_seconds += t.prompt_seconds
        self.total.sampled += t.sampled
        self.gen_seconds += t.gen_seconds
        note = {"interrupted": " · stopped", "context": " · context full: /reset to start over"}.get(finish or "", "")
        self.console.print(
            f"prompt {t.prompt_tokens} tok {t.prompt_tps:.1f} tok/s · generation {t.sampled} tok "
            f"{t.gen_tps:.1f} tok/s · context {self.cached}/{self.gen.n_ctx}{note}",
            style="dim",
            soft_wrap=True,
        )

    def stats(self) -> None:
        m, t = self.gen.model, self.total
        hp = m.hparams
        gen_tps = (t.sampled / self.gen_seconds) if self.gen_seconds > 0 else 0.0
        self.console.print(
            f"model {os.path.basename(m.path)} ({hp.arch}, {hp.n_layer} layers, n_embd {hp.n_embd}, "
            f"vocab {hp.n_vocab})\n"
            f"context {self.cached}/{self.gen.n_ctx} tokens, KV cache "
            f"{self.gen.context.kv_bytes / 2**20:.1f} MiB ({self.gen.context.kv_type}), "
            f"{self.gen.context.n_threads} threads\n"
            f"session: prompt {t.prompt_tokens} tok at {t.prompt_tps:.1f} tok/s, "
            f"generation {t.sampled} tok at {gen_tps:.1f} tok/s",
            style="dim",
        )
