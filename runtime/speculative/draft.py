"""Draft-model decoding (llama.cpp's --model-draft): a small model sharing
the target's tokenizer guesses the next tokens, one cheap forward pass each,
and the target checks them all in one pass.

The draft keeps its own KV cache, one sequence per engine slot, mirroring
the tokens it has evaluated; before each draft it catches up with the
target's sequence from their common prefix (so rejected guesses are rolled
back with one seq_rm) and then drafts every speculating request together,
one batched draft forward pass per drafted position."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina.engine.context import Context, Model
from lamina.engine.decode_bytes import weight_bytes_per_token
from lamina.engine.slots import common_prefix
from lamina.sampling import Sampler
from lamina.speculative.verify import SpeculativeError, target_distribution

DEFAULT_DRAFT_MAX = 8  # --draft-max (llama.cpp: 3 now, 16 before)
DEFAULT_DRAFT_MIN = 0  # --draft-min, as llama.cpp
DEFAULT_DRAFT_P_MIN = 0.75  # --draft-p-min (llama.cpp: 0 now, 0.75 before)


@dataclass
class DraftJob:
    """One sequence to draft for: its tokens so far (prompt and output, the
    last one not yet evaluated by the target), the most tokens to guess, and
    the request's sampler (its temperature decides greedy or sampled drafts)."""

    seq: int
    history: list[int]
    n_max: int
    sampler: Sampler
    rng: np.random.Generator  # the draft's own random stream: drafting never shifts the sampler's draws


@dataclass
class Draft:
    tokens: list[int]
    q: list[np.ndarray] | None  # the distribution each token was drawn from; None: point masses (greedy)
    error: BaseException | None = None  # the drafter failed: the request ends with it
    passes: int = 0  # the draft model's forward passes spent on it (0: no model ran)


def vocab_fingerprint(meta: dict) -> str:
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return hashlib.sha256("\x00".join(map(str, tokens)).encode()).hexdigest()


class LlamaDraftFile:
    """A draft model from a GGUF file: Llama(target, draft_model=LlamaDraftFile("small.gguf")).
    n_max / n_min / p_min: llama.cpp's --draft-max / --draft-min / --draft-p-min
    (stop drafting where the draft's best token has less than p_min; a draft
    shorter than n_min is not verified)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_max: int = DEFAULT_DRAFT_MAX,
        n_min: int = DEFAULT_DRAFT_MIN,
        p_min: float = DEFAULT_DRAFT_P_MIN,
        n_threads: int | None = None,
    ) -> None:
        check_draft_range(n_max, n_min)
        if isinstance(p_min, bool) or not isinstance(p_min, (int, float)) or not 0.0 <= p_min <= 1.0:
            raise SpeculativeError(f"draft p_min must be a probability in [0, 1], got {p_min!r}")
        self.model_path = str(model_path)
        self.n_max, self.n_min, self.p_min = n_max, n_min, float(p_min)
        self.model = Model.load(model_path, n_threads=n_threads)
        self.ctx: Context | None = None
        self.cost = 1.0  # one draft forward pass in target passes, once bound
        self._held: dict[int, list[int]] = {}  # sequence -> tokens its draft cache holds
        self._lock = threading.Lock()

    def bind(self, target: Model, n_seq: int, n_ctx: int, n_ctx_seq: int, n_batch: int) -> None:
        """Check the draft speaks the target's tokens and open its cache: one
        sequence per engine slot, sized as the target's (n_ctx cells shared,
        n_ctx_seq at most each)."""
        mine, theirs = self.model.native.gguf.metadata, target.native.gguf.metadata
        if self.model.n_vocab != target.n_vocab or vocab_fingerprint(mine) != vocab_fingerprint(theirs):
            raise SpeculativeError(
                f"draft model {self.model_path}: its vocabulary ({self.model.n_vocab} tokens) is not the target's "
                f"({target.path}, {target.n_vocab} tokens); a draft must share the tokenizer"
            )
        with self._lock:  # the first requests of several threads may bind at once
            if self.ctx is not None:
                if self.ctx.n_seq_max < n_seq or self.ctx.n_ctx < n_ctx or self.ctx.n_ctx_seq < n_ctx_seq:
                    raise SpeculativeError(
                        f"draft model {self.model_path} already serves a smaller engine; "
                        "use one LlamaDraftFile per Llama"
                    )
                return
            # once per target, not per request: decode reads every weight once, so weight bytes price a pass
            draft_bytes = weight_bytes_per_token(self.model.native.gguf, self.model.hparams)
            self.cost = draft_bytes / max(1, weight_bytes_per_token(target.native.gguf, target.hparams))
            self.ctx = Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_seq_max=n_seq, n_ctx_seq=n_ctx_seq)

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        self.model.close()

    # ------------------------------------------------------------ drafting
    def _catch_up(self, job: DraftJob) -> None:
        """The draft sequence holds history[:-1] afterwards (the last token is
        evaluated with the first draft step, which needs its logits)."""
        ctx = self.ctx
        assert ctx is not None
        held = self._held.setdefault(job.seq, [])
        want = job.history[:-1]
        keep = common_prefix(held, want)
        if keep < len(held):
            ctx.seq_rm(job.seq, keep)  # rejected guesses and anything else not in the target's sequence
            del held[keep:]
        for start in range(keep, len(want), ctx.n_batch):
            chunk = want[start : start + ctx.n_batch]
            ctx.decode(chunk, np.arange(start, start + len(chunk)), np.full(len(chunk), job.seq), None)
            held.extend(chunk)

    def draft(self, jobs: Sequence[DraftJob]) -> list[Draft]:
        """Guesses for every job, n_max at most each; greedy for a greedy
        sampler (a point mass), else drawn from the draft's own distribution
        under the request's sampling settings (q, for the verification)."""
        ctx = self.ctx
        if ctx is None:
            raise SpeculativeError("draft model used before bind()")
        out = [Draft([], None if j.sampler.params.temperature <= 0 else []) for j in jobs]
        for j in jobs:
            self._catch_up(j)
        live = [i for i, j in enumerate(jobs) if j.n_max > 0 and len(j.history) < ctx.n_ctx_seq]
        feed = {i: jobs[i].history[-1] for i in live}
        while live:
            seqs = [jobs[i].seq for i in live]
            pos = [len(self._held[s]) for s in seqs]
            rows = ctx.decode([feed[i] for i in live], pos, seqs, np.ones(len(live), np.bool_))
            for i, s in zip(live, seqs):
                self._held[s].append(feed[i])
            nxt = []
            for i, row in zip(live, rows):
                j, d = jobs[i], out[i]
                d.passes += 1
                token = self._pick(j, d, row)
                if token is None:
                    continue
                d.tokens.append(token)
                feed[i] = token
                if len(d.tokens) < j.n_max and len(self._held[j.seq]) + 1 < ctx.n_ctx_seq:
                    nxt.append(i)
            live = nxt
        for d in out:
            if len(d.tokens) < self.n_min:
                d.tokens, d.q = [], None if d.q is None else []
        return out

    def _pick(self, job: DraftJob, d: Draft, row: np.ndarray) -> int | None:
        """The next guess from the draft's logits row, or None where the draft
        is less sure than p_min (llama.cpp stops the draft there)."""
        hist = job.history + d.tokens
        if d.q is None:
            token = int(job.sampler(row, hist))  # the request's own greedy chain (bias, penalties)
            # its softmax probability, in float32 (a threshold test; float64 over the vocabulary cost ~0.3 ms)
            z = np.asarray(row, dtype=np.float32)
            top = z.max()
            p_top = float(np.exp(z[token] - top) / np.exp(z - top, dtype=np.float32).sum(dtype=np.float32))
        else:
            q = target_distribution(job.sampler.params, row, hist)
            token = int(job.rng.choice(q.size, p=q))
            p_top = float(q.max())
            d.q.append(q)
        if p_top < self.p_min:
            if d.q:
                d.q.pop()
            return None
        return token

    def __repr__(self) -> str:
        return f"LlamaDraftFile({self.model_path!r}, n_max={self.n_max}, n_min={self.n_min}, p_min={self.p_min})"


def check_draft_range(n_max: object, n_min: object) -> None:
    for name, v in (("draft max", n_max), ("draft min", n_min)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 256:
            raise SpeculativeError(f"{name} must be an integer in [0, 256], got {v!r}")
    assert isinstance(n_max, int) and isinstance(n_min, int)
    if n_min > n_max:
        raise SpeculativeError(f"draft min ({n_min}) must not exceed draft max ({n_max})")
