"""Text tokenization through the ``tokenizers`` library, from a checkpoint's ``tokenizer.json``.

One class serves BERT WordPiece, CLIP BPE and Whisper byte-level BPE: the algorithm, the
normalizer and the special tokens all come from ``tokenizer.json``. Padding and truncation
settings stored in that file are replaced by this class's (pad to the longest text of the
batch, truncate to ``max_length``), because a checkpoint's saved settings (e.g. MiniLM's fixed
padding to 128) are training choices, not what inference wants.

Truncation keeps the special tokens ([CLS] ... [SEP]) and drops text tokens from the end; it
emits a :class:`~ipfs_accelerate.errors.TruncationWarning` naming the texts and their lengths
(``truncation="error"`` raises PreprocessingError instead).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ipfs_accelerate.errors import CheckpointError, PreprocessingError, TruncationWarning

__all__ = ["BatchEncoding", "TextTokenizer"]

Array = np.ndarray[Any, Any]

#: tokenizer_config.json writes "no limit" as this huge number
_NO_LIMIT = 10**12
#: a truncation limit at or beyond this is no limit (no text has that many tokens)
_UNBOUNDED = 1 << 30


@dataclass
class BatchEncoding:
    """A padded batch: int64 arrays (batch, length) and each text's token count."""

    input_ids: Array
    attention_mask: Array
    token_type_ids: Array
    lengths: list[int]
    #: indices of the texts that were truncated
    truncated: list[int]


class TextTokenizer:
    """Batch tokenization with padding, truncation and attention masks.

    ``max_length`` bounds every sequence including special tokens (None: no bound).
    """

    def __init__(
        self, tokenizer: Any, *, max_length: int | None, pad_id: int, name: str = "tokenizer"
    ) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # the Rust tokenizer holds its truncation setting, so each limit gets its own copy set
        # once: encoding never changes shared state, and threads never wait on one another
        self._truncating: dict[int, Any] = {}
        self._lock = threading.Lock()  # guards making those copies only
        self.max_length = max_length
        self.pad_id = pad_id
        self.name = name

    @classmethod
    def from_file(
        cls, path: str | Path, *, max_length: int | None = None, pad_token: str | None = None
    ) -> TextTokenizer:
        """Load ``tokenizer.json``. The pad id comes from ``pad_token``, else from the file's
        padding settings, else 0."""
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - in the models extra
            raise CheckpointError(
                "the tokenizers package is needed to read tokenizer.json"
            ) from exc
        path = Path(path)
        if not path.exists():
            raise CheckpointError(
                f"{path}: missing; this pipeline needs the checkpoint's tokenizer.json"
            )
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception on bad files
            raise CheckpointError(f"{path}: not a valid tokenizers file ({exc})") from None
        pad_id = None
        if pad_token is not None:
            pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None and tokenizer.padding is not None:
            pad_id = tokenizer.padding.get("pad_id")
        return cls(tokenizer, max_length=max_length, pad_id=int(pad_id or 0), name=str(path))

    @classmethod
    def from_checkpoint(
        cls, directory: Path, *, max_length: int | None = None, positions: int | None = None
    ) -> TextTokenizer:
        """The tokenizer of a checkpoint directory; ``max_length`` defaults to the smallest
        limit the checkpoint states (sentence-transformers' max_seq_length, the tokenizer's
        model_max_length, the model's position count). ``positions`` (the loaded model's
        position count) bounds it, also a ``max_length`` given."""
        from ipfs_accelerate.models.loading import read_json

        settings = read_json(directory / "tokenizer_config.json")
        special = read_json(directory / "special_tokens_map.json")
        pad_token = _token_text(settings.get("pad_token")) or _token_text(special.get("pad_token"))
        if max_length is None:
            limits = []
            st = read_json(directory / "sentence_bert_config.json").get("max_seq_length")
            limits.append(st)
            limits.append(settings.get("model_max_length"))
            config = read_json(directory / "config.json")
            text_config = config.get("text_config") or {}
            limits.append(
                config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
            )
            limits.append(config.get("max_target_positions"))
            usable = [
                int(v)
                for v in limits
                if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < _NO_LIMIT
            ]
            max_length = min(usable) if usable else None
        if positions is not None and (max_length is None or max_length > positions):
            max_length = positions
        return cls.from_file(
            directory / "tokenizer.json", max_length=max_length, pad_token=pad_token
        )

    # ------------------------------------------------------------------ encoding

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        padding: Literal["longest", "max_length"] = "longest",
        truncation: Literal["warn", "error", "silent"] = "warn",
    ) -> BatchEncoding:
        """Tokenize ``texts`` (one string or a sequence of strings) into a padded batch. Texts
        longer than ``max_length`` are cut with a TruncationWarning ("warn"), raise
        PreprocessingError ("error"), or are cut quietly ("silent": the caller asked for it)."""
        return self._encode(_check_texts(texts), max_length, padding, truncation)

    def pairs(
        self,
        pairs: Sequence[tuple[str, str] | str],
        *,
        max_length: int | None = None,
        truncation: Literal["warn", "error", "silent"] = "warn",
    ) -> BatchEncoding:
        """Tokenize (first, second) text pairs as one sequence each ([CLS] a [SEP] b [SEP] for
        BERT; ``token_type_ids`` mark the second text), as cross-encoders read them; a plain
        string is one text alone. Pairs longer than ``max_length`` lose tokens from the longer
        text first ("longest first", as transformers' tokenizers do), with the
        ``truncation`` handling of ``__call__``."""
        batch: list[str | tuple[str, str]] = []
        for i, pair in enumerate(pairs):
            if isinstance(pair, str):
                batch.append(pair)
                continue
            if (
                not isinstance(pair, tuple | list)
                or len(pair) != 2
                or not all(isinstance(t, str) for t in pair)
            ):
                raise PreprocessingError(
                    f"pairs[{i}] must be a (str, str) pair or a str, got {type(pair).__name__}"
                )
            batch.append((pair[0], pair[1]))
        return self._encode(batch, max_length, "longest", truncation)

    def _encode(
        self,
        batch: Sequence[str | tuple[str, str]],
        max_length: int | None,
        padding: Literal["longest", "max_length"],
        truncation: Literal["warn", "error", "silent"],
    ) -> BatchEncoding:
        limit = max_length if max_length is not None else self.max_length
        try:
            encodings = self._with_limit(limit).encode_batch(list(batch)) if batch else []
        except (
            Exception
        ) as exc:  # the Rust side raises plain Exceptions (e.g. max_length too short)
            raise PreprocessingError(
                f"{self.name}: cannot tokenize with max_length={limit}: {exc}"
            ) from None
        truncated = [i for i, e in enumerate(encodings) if e.overflowing]
        if truncated and truncation != "silent":
            full = [len(self._encode_one(batch[i]).ids) for i in truncated[:5]]
            detail = ", ".join(
                f"text {i} ({n} tokens)" for i, n in zip(truncated, full, strict=False)
            )
            more = f" and {len(truncated) - 5} more" if len(truncated) > 5 else ""
            message = (
                f"{self.name}: {len(truncated)} text(s) longer than max_length={limit} tokens:"
                f" {detail}{more}"
            )
            if truncation == "error":
                raise PreprocessingError(message)
            warnings.warn(
                TruncationWarning(message + "; truncated to their first tokens"), stacklevel=2
            )
        lengths = [len(e.ids) for e in encodings]
        if limit is not None and any(n > limit for n in lengths):
            # tokenizers leaves a sequence longer than max_length when the special tokens alone
            # do not fit: never hand the model more positions than it was promised
            raise PreprocessingError(
                f"{self.name}: max_length={limit} is too short: the encoded texts need at least "
                f"{min(lengths)} tokens including special tokens"
            )
        width = max(lengths, default=0) if padding == "longest" or limit is None else int(limit)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = lengths[row]
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        _free_one_by_one(encodings)
        return BatchEncoding(ids, mask, types, lengths, truncated)

    def _encode_one(self, item: str | tuple[str, str]) -> Any:
        return (
            self._tokenizer.encode(*item)
            if isinstance(item, tuple)
            else (self._tokenizer.encode(item))
        )

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` including special tokens, without truncation."""
        return len(self._tokenizer.encode(text).ids)

    def _with_limit(self, limit: int | None) -> Any:
        """The tokenizer truncating at ``limit`` (the untruncated one for None or a limit no
        text reaches)."""
        if limit is None or limit >= _UNBOUNDED:
            return self._tokenizer
        limit = int(limit)
        found = self._truncating.get(limit)
        if found is None:
            with self._lock:
                found = self._truncating.get(limit)
                if found is None:
                    found = type(self._tokenizer).from_str(self._tokenizer.to_str())
                    found.no_padding()
                    found.enable_truncation(limit)
                    self._truncating[limit] = found
        return found

    # ------------------------------------------------------------------ vocabulary, decoding

    def token_to_id(self, token: str) -> int | None:
        value = self._tokenizer.token_to_id(token)
        return None if value is None else int(value)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(
            self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        )

    def tokens(
        self, text: str, *, add_special_tokens: bool = True
    ) -> list[tuple[int, str, int | None, int | None, bool]]:
        """Each token of ``text`` (no truncation): (id, text, start, stop, special). A
        special token's text is the token itself and has no offsets; another's is the slice
        of ``text`` it covers, ``start``/``stop`` in UTF-8 bytes (as TEI's ``/tokenize``)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: list[tuple[int, str, int | None, int | None, bool]] = []
        byte_end = _byte_offsets(text)
        for token_id, token, (start, stop), special in zip(
            encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask,
            strict=True,
        ):  # fmt: skip
            if special:
                out.append((int(token_id), str(token), None, None, True))
            else:
                piece = text[start:stop]
                out.append((int(token_id), piece, byte_end[start], byte_end[stop], False))
        return out

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is one of the tokenizer's special tokens ([CLS], </s>...)."""
        added = self._tokenizer.get_added_tokens_decoder().get(int(token_id))
        return bool(added is not None and added.special)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes):
        raise PreprocessingError("texts must be str, got bytes; decode them first")
    try:
        batch = list(texts)
    except TypeError:
        raise PreprocessingError(
            f"texts must be a string or a sequence of strings, got {type(texts).__name__}"
        ) from None
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise PreprocessingError(f"texts[{i}] is a {type(text).__name__}, not a string")
    return batch


def _byte_offsets(text: str) -> list[int]:
    """For each character index 0..len(text), the UTF-8 byte offset it starts at."""
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8", "surrogatepass")))
    return offsets


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _free_one_by_one(encodings: list[Any]) -> None:
    """Drop a batch's encodings one at a time. Freeing an encoding frees every token it holds
    while holding the GIL; a batch of long texts freed at once (150 texts of 40k tokens) held
    it for 0.2 s, stalling the threads around it (a server's event loop), while between two
    encodings other threads get their turn."""
    while encodings:
        encodings.pop()
