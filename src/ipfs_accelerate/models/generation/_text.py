"""Tokens to text while generating: incremental detokenization and stop strings.

:class:`IncrementalDetokenizer` decodes a window that starts a few tokens back (so that
SentencePiece's leading-space rule and byte-level merges see their context) and emits only
the text past the previous window; text ending in U+FFFD (an incomplete UTF-8 sequence) waits
for the next token. :meth:`IncrementalDetokenizer.finish` reconciles with the full decode,
so the concatenated deltas equal ``tokenizer.decode(all tokens)``.

:class:`StopStrings` holds back the last ``len(longest stop) - 1`` characters while a stop
string could still be completing, and cuts the text before the first one found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["IncrementalDetokenizer", "StopStrings", "TokenDecoder"]


class TokenDecoder(Protocol):
    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Text deltas of a growing token sequence."""

    def __init__(self, tokenizer: TokenDecoder, *, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # window start
        self._read = 0  # tokens whose text was emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        """Add one token; the text it completes (possibly "")."""
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd") or not after.startswith(before):
            return ""
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta

    def finish(self) -> str:
        """The text not emitted yet, so that all deltas together equal the full decode."""
        full = self._decode(self.ids)
        if not full.startswith(self.text):
            # a decode that rewrote earlier text (never seen with byte-level or SentencePiece
            # decoders): what was emitted stands, the rest follows it
            common = 0
            for a, b in zip(full, self.text, strict=False):
                if a != b:
                    break
                common += 1
            delta = full[max(common, len(self.text)) :]
        else:
            delta = full[len(self.text) :]
        self.text += delta
        self._prefix = self._read = len(self.ids)
        return delta


class StopStrings:
    """Cuts generated text at the first stop string; says how much is safe to emit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._hold = max((len(s) for s in self.stops), default=1) - 1

    def find(self, text: str, start: int = 0) -> int:
        """Index of the earliest stop string in ``text`` at or after ``start - hold``, or -1."""
        begin = max(0, start - self._hold)
        found = [i for i in (text.find(s, begin) for s in self.stops) if i >= 0]
        return min(found) if found else -1

    def safe_length(self, text: str) -> int:
        """Characters of ``text`` no stop string can still claim: all but the longest tail
        that begins some stop string."""
        for size in range(min(self._hold, len(text)), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return len(text) - size
        return len(text)
