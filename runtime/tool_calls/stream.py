"""A streamed reply with tools: OpenAI's deltas, text content as soon as it
cannot be the start of a tool call, each tool call whole (id, name and
arguments in one delta) once the reply is complete. What a client
accumulates from the deltas (the openai client's stream helpers do) equals
the non-streamed message: both come from the same parse of the same text."""

from __future__ import annotations

import re
from typing import Any

from lamina.tool_calls.detect import GENERIC, HERMES, LLAMA3, MISTRAL
from lamina.tool_calls.parsers import LLAMA3_TAG, OPENINGS, Reply

# a fenced object (```json {), or what may still become one: held until it is parsed
_FENCED_CALL = re.compile(r"```(?:json)?\s*\{")
_FENCE_PREFIX = re.compile(r"`{1,3}(?:j(?:s(?:on?)?)?)?|```(?:json)?\s*")


class ToolStream:
    def __init__(self, fmt: str, parse) -> None:
        self._fmt, self._parse = fmt, parse
        self._opening = OPENINGS.get(fmt, "")  # "none": tool_choice "none", plain text
        self.text = ""  # the whole reply so far
        self._sent = 0  # characters of text sent as content
        self._frozen = False  # a tool call may have begun: nothing more is sent until the end
        self.reply: Reply | None = None

    def feed(self, piece: str) -> list[dict[str, Any]]:
        """The deltas this piece of text releases."""
        self.text += piece
        if self._frozen:
            return []
        return self._content_delta(self._safe_end())

    def finish(self) -> list[dict[str, Any]]:
        """The rest of the content and the tool calls, once the reply is complete."""
        reply = self.reply = self._parse(self.text)
        deltas = []
        content = reply.content or ""
        if len(content) > self._sent:
            deltas.append({"content": content[self._sent :]})
        if reply.tool_calls:
            deltas.append({"tool_calls": [{"index": i, **c.openai()} for i, c in enumerate(reply.tool_calls)]})
        return deltas

    def _safe_end(self) -> int:
        """How much of the text is content for sure, ending on a non-space
        (trailing spaces are held: a reply of only tool calls has no content)."""
        text = self.text
        if not self._opening:
            return len(text)
        if self._fmt == GENERIC:  # the reply is one JSON object: nothing is text until it is parsed
            self._frozen = True
            return self._sent
        if self._fmt in (LLAMA3, HERMES):  # a reply that opens with '{' may be bare calls (llama3's are)
            head = text.lstrip()
            llama3 = self._fmt == LLAMA3
            if head[:1] == "{" or _FENCED_CALL.match(head) or (llama3 and head.startswith(LLAMA3_TAG)):
                self._frozen = True
                return self._sent
            if _FENCE_PREFIX.fullmatch(head) or (llama3 and head and LLAMA3_TAG.startswith(head)):
                return self._sent  # not yet known: held
            if not head:
                return 0
            if self._fmt == LLAMA3:
                return len(text.rstrip())
        if self._fmt == MISTRAL and text.lstrip().startswith("["):  # a call list, with its tag or without
            self._frozen = True
            return self._sent
        at = text.find(self._opening)
        if at >= 0:
            self._frozen = True
            return len(text[:at].rstrip())
        # hold back an ending that may be the start of the opening tag
        keep = next(
            (n for n in range(min(len(self._opening) - 1, len(text)), 0, -1) if self._opening.startswith(text[-n:])),
            0,
        )
        return len(text[: len(text) - keep].rstrip())

    def _content_delta(self, end: int) -> list[dict[str, Any]]:
        if end <= self._sent:
            return []
        delta = {"content": self.text[self._sent : end]}
        self._sent = end
        return [delta]
