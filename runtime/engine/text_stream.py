"""Sampled tokens to streamed text: whole UTF-8 characters only, stop strings
cut out, and text that might still turn into a stop string held back until
it is known not to (so a stream never shows the start of a stop string)."""

from __future__ import annotations

from collections.abc import Sequence

from lamina.tokenizer import Tokenizer


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of text that could still grow into a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()) -> None:
        self._detok = tokenizer.detokenizer()
        self.stops = [s for s in stops if s]
        self.text = ""  # everything decoded so far (cut at a stop string once one is seen)
        self._sent = 0  # how much of it has been released

    def feed(self, token: int) -> tuple[str, bool]:
        """The text this token releases, and whether a stop string ended the text."""
        self.text += self._detok.feed(token)
        start = max(0, self._sent - max((len(s) for s in self.stops), default=0))
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            piece = self.text[self._sent : cut]
            self._sent = cut
            self.text = self.text[:cut]
            return piece, True
        release = len(self.text) - held_back(self.text, self.stops)
        piece = self.text[self._sent : release]
        self._sent = max(self._sent, release)
        return piece, False

    def finish(self, stopped: bool) -> str:
        """What is still held back when the generation ends; after a stop
        string nothing the detokenizer still buffers belongs to the text."""
        if not (stopped and self.stops):
            self.text += self._detok.flush()
        piece = self.text[self._sent :]
        self._sent = len(self.text)
        return piece
