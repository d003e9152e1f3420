"""Word-level KD's teacher read from a llama-perplexity `--kl-divergence-base`
file: the teacher ran once, anywhere (llama-perplexity or `lamina perplexity`,
any model llama.cpp runs), and its next-token log-probabilities are the
targets. The file's format and reader: lamina.eval.logits_file.

    base = KLDBaseTeacher(path, tokenizer, student_vocab)  # checks the file against the student
    base.windows          # int32 [n_chunk, n_ctx]: the file's tokens, BOS first when the tokenizer adds it
    base.scored           # slice of positions the file holds: n_ctx/2 .. n_ctx-2
    lp = base.logits(x, index)  # x [B, n_ctx], windows[index] -> f32 [B, n_scored, V]

The calibration text is the file's: it holds n_chunk chunks of n_ctx tokens
and, for the second half of each chunk (positions n_ctx/2 .. n_ctx-2, as
llama-perplexity scores them), the teacher's log-probabilities in 16 bits.
The student sees the same chunks with token 0 replaced by BOS when its
tokenizer adds one (what llama-perplexity evaluates), and the KD loss covers
the positions the file holds.

Each row stores log p within 16 of its maximum; lower logits were clamped to
the row's floor (q = 0), so their probabilities are unknown (below e^-16 of
the top token). They are given probability 0 here (log p = -inf), and the
tempered teacher distribution is renormalized over the rest: at a KD
temperature T > 1 the clamped floor, if kept, would hold e^(-16/T) of the top
token's mass for each of tens of thousands of tokens, a tail the real teacher
does not have. llama-perplexity's KLD likewise skips log p <= -16.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lamina.convert.errors import ConvertError
from lamina.eval.logits_file import LogitsFile
from lamina.eval.scoring import n_scored

if TYPE_CHECKING:
    from lamina.tokenizer import Tokenizer

# the file's text (up to 1024 tokens) decoded and encoded again by the student's
# tokenizer keeps at least this share of its tokens. Measured on SmolLM2's
# tokenizer: the same tokenizer gives back llama-perplexity's ids exactly (1.0;
# a token merged across the cut at the end can cost one); ids that are another
# tokenizer's, i.e. token soup to this one (ids permuted, or drawn at random),
# 0.87-0.91: a soup's pieces mostly re-encode to themselves, so the bar is high.
SAME_TOKENIZER_RATIO = 0.97


class KLDBaseError(ConvertError, ValueError):
    """A --kl-divergence-base file that does not fit the student."""


class KLDBaseTeacher:
    def __init__(self, path: Path, tokenizer: Tokenizer | None, student_vocab: int) -> None:
        self.path = Path(path)
        self.file = LogitsFile(self.path)  # LogitsFileError (file, field) when unreadable or corrupt
        h = self.file.header
        if h.n_vocab != student_vocab:
            raise KLDBaseError(
                f"{self.path}: n_vocab: the file's teacher has {h.n_vocab} tokens, the student {student_vocab}: "
                "KD needs the same vocabulary"
            )
        self.n_vocab = h.n_vocab
        self.n_ctx, self.n_chunk = h.n_ctx, h.n_chunk
        first = self.n_ctx // 2
        self.scored = slice(first, first + n_scored(self.n_ctx))
        windows = np.array(h.tokens, dtype=np.int32).reshape(self.n_chunk, self.n_ctx)
        if tokenizer is not None:
            _check_tokenizer(self.path, windows, tokenizer)
            if tokenizer.add_bos and tokenizer.bos_id is not None:
                windows[:, 0] = tokenizer.bos_id  # as llama-perplexity evaluates each chunk
        self.windows = windows

    def logits(self, x: torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor:
        """The teacher's log-probabilities f32 [B, n_scored, V] of windows[index]
        (x: those windows, checked); -inf where the file clamped."""
        if index is None:
            raise KLDBaseError(f"{self.path}: the teacher's rows are looked up by window index")
        ids = x.detach().cpu().numpy()
        rows = []
        for b, i in enumerate(np.asarray(index)):
            if not np.array_equal(ids[b], self.windows[i]):
                raise KLDBaseError(f"{self.path}: window {b} of the batch is not the file's chunk {int(i)}")
            lp = self.file.log_probs(int(i))  # [n_scored, V]
            head = self.file.chunk(int(i))[:, :4].copy().view(np.float32)  # [n_scored, 2]: scale, min_log_prob
            clamped = head[:, :1] * np.float32(65535) > np.float32(15.99)  # [n_scored, 1]: the row hit the floor
            q0 = self.file.chunk(int(i))[:, 4 : 4 + self.n_vocab] == 0
            lp[clamped & q0] = -np.inf
            rows.append(lp)
        return torch.from_numpy(np.stack(rows))  # [B, n_scored, V]

    def close(self) -> None:
        pass


def _check_tokenizer(path: Path, windows: np.ndarray, tokenizer: Tokenizer) -> None:
    """The file's tokens must be the student tokenizer's: its text (the chunks
    are consecutive), decoded and encoded again, gives back (nearly) the same ids."""
    ids = [int(t) for t in windows.reshape(-1)[1:1025]]  # token 0 may be a BOS, which encode() would not give
    text = tokenizer.decode(ids, skip_special=False).decode("utf-8", errors="replace")
    again = tokenizer.encode(text, add_bos=False)
    ratio = SequenceMatcher(None, ids, again, autojunk=False).ratio()
    if ratio < SAME_TOKENIZER_RATIO:
        raise KLDBaseError(
            f"{path}: tokens: the file's text does not round-trip through the student's tokenizer "
            f"({ratio:.0%} of tokens agree): it was tokenized by another model's vocabulary"
        )
