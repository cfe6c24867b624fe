"""The small module system the models are written in: parameters named like checkpoint keys.

A :class:`Module` declares its parameters with their shapes when it is built from a config;
child modules become part of the dotted name, so ``BertModel().encoder.layer[0].attention
.self.query.weight`` is the checkpoint key ``encoder.layer.0.attention.self.query.weight``.
Loading is then a mapping from keys to tensors (see :mod:`ipfs_accelerate.models.loading`),
never a translation table. Modules hold tensors of one backend and call only
:mod:`ipfs_accelerate.ops` and Tensor methods: they never name a backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import DeviceMismatchError, InvalidArgumentError, ModelError
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.tensor import Tensor, zeros_like
from ipfs_accelerate.tensor._dtype import bool_, float32

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "Conv1d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
]

Shape = tuple[int, ...]


#: a token made anew (after the change) whenever any module gains, replaces or loses a
#: sub-module: a kept walk of a module tree is valid while the token is the one it was made
#: under (a fresh object rather than a count, so that two threads' changes cannot both leave
#: the value a walk was kept under)
_TREES: list[object] = [object()]


class Module:
    """A tree of named parameters. Subclasses call :meth:`declare` for each parameter.

    Class attributes a model may set:

    * ``base_model_prefix``: the key prefix under which task-head checkpoints keep the base
      model (``"bert"``, ``"vit"``, ``"model"``); see the loader for how it is used.
    * ``is_head_model``: True for a model whose own keys carry ``base_model_prefix`` (a task
      head around a base model), False for a base model.
    * ``tied_weights``: parameter -> parameter it equals when the checkpoint omits it
      (Whisper's output projection is the token embedding).
    * ``optional_prefixes``: sub-trees the checkpoint may leave out entirely (BERT's pooler);
      when every key under one is absent the child is removed, not filled with random values.
    * ``ignored_keys``: suffixes of checkpoint keys that are buffers, not parameters
      (``position_ids``), accepted and dropped.
    * ``config_class``: the config dataclass the loader builds from ``config.json``
      (``from_dict``) for a model class that a checkpoint can be loaded into.
    * ``quantizable_embeddings``: token-embedding tables that ``dtype="int8"``/``"int4"``
      store as int8 rows (only tables looked up through :class:`Embedding`, never sliced).
    * ``int8_float_layers``: prefixes of Linear layers that ``dtype="int8"`` keeps in float32
      (Whisper's decoder blocks: int8 there changes the transcript of real speech).
    * ``int8_block_weights``: weights that ``dtype="int8"`` stores in blocks of 32 along
      their second axis (in_features, or an embedding's dim) instead of one scale per row;
      a Linear among them takes block-rounded int8 inputs where the backend has that kernel
      (Whisper's token table, its embedding and tied vocabulary projection: a decode step's
      largest read, see :mod:`~ipfs_accelerate.models._precision`).
    """

    base_model_prefix: ClassVar[str] = ""
    is_head_model: ClassVar[bool] = False
    tied_weights: ClassVar[dict[str, str]] = {}
    optional_prefixes: ClassVar[tuple[str, ...]] = ()
    ignored_keys: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[Any] = None
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ()
    int8_float_layers: ClassVar[tuple[str, ...]] = ()
    int8_block_weights: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        object.__setattr__(self, "_shapes", {})
        object.__setattr__(self, "_children", {})
        # loading gives eval mode: dropout off, so inference is exactly as fast as before
        object.__setattr__(self, "training", False)

    def __setattr__(self, name: str, value: Any) -> None:
        children: dict[str, Module] = self.__dict__["_children"]
        if isinstance(value, Module):
            children[name] = value
            _TREES[0] = object()
        elif value is None and name in children:
            del children[name]
            _TREES[0] = object()
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a declared parameter that was never loaded
        shapes = self.__dict__.get("_shapes", {})
        if name in shapes:
            raise ModelError(
                f"{type(self).__name__}.{name}: parameter of shape {shapes[name]} was not loaded; "
                "build models with from_pretrained() or load weights first"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def declare(self, name: str, shape: Shape) -> None:
        """Declare the parameter ``name`` with its expected ``shape`` (loaded later)."""
        self._shapes[name] = tuple(int(d) for d in shape)

    def parameter_shapes(self, prefix: str = "") -> dict[str, Shape]:
        """Every declared parameter as ``dotted.name -> shape``, in declaration order."""
        out = {f"{prefix}{name}": shape for name, shape in self._shapes.items()}
        for child_name, child in self._children.items():
            out.update(child.parameter_shapes(f"{prefix}{child_name}."))
        return out

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix.rstrip("."), self
        for child_name, child in self._children.items():
            yield from child.named_modules(f"{prefix}{child_name}.")

    def all_modules(self) -> list[Module]:
        """This module and every sub-module, in :meth:`named_modules` order, without their
        paths: the list is kept and made again only after a module anywhere gained, replaced
        or lost a sub-module (a captured forward's state is read from it for every call)."""
        kept = self.__dict__.get("_all_modules")
        if kept is not None and kept[0] is _TREES[0]:
            return list(kept[1])
        version = _TREES[0]
        modules = [module for _, module in self.named_modules()]
        object.__setattr__(self, "_all_modules", (version, modules))
        return list(modules)

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """The loaded parameters as ``(dotted.name, tensor)``."""
        for path, module in self.named_modules():
            for name in module._shapes:
                value = module.__dict__.get(name)
                if isinstance(value, Tensor):
                    yield (f"{path}.{name}" if path else name), value

    def parameters(self) -> list[Tensor]:
        """The loaded float parameters, in :meth:`named_parameters` order (what an optimizer
        takes; quantized weights are frozen and not among them)."""
        return [tensor for _, tensor in self.named_parameters()]

    def train(self, mode: bool = True, *, seed: int | None = None) -> Self:
        """Training mode (``mode=True``: dropout on) or evaluation mode for this module and
        every sub-module; returns self. ``seed`` seeds the one generator the dropout masks of
        the whole tree are drawn from (the same seed gives the same masks on every backend);
        without it the masks are drawn from fresh OS entropy."""
        generator = np.random.default_rng(seed)
        for _, module in self.named_modules():
            object.__setattr__(module, "training", bool(mode))
            if isinstance(module, Dropout):
                module.generator = generator
        return self

    def eval(self) -> Self:
        """Evaluation mode (dropout off), as after loading; returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Self:
        """Make every parameter require grad (or not); returns self. A weight-quantized
        model cannot be trained: ModelError names its first quantized weight."""
        if requires_grad:
            for name, value in self.named_weights():
                if isinstance(value, QuantizedTensor):
                    raise ModelError(
                        f"{type(self).__name__}.requires_grad_: {name!r} is a {value.bits}-bit "
                        "quantized weight, which cannot be trained; load the model in float32"
                    )
        for tensor in self.parameters():
            tensor.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (``set_to_none=False``: fill it with zeros)."""
        for tensor in self.parameters():
            if set_to_none or tensor.grad is None:
                tensor.grad = None
            else:
                tensor.grad = zeros_like(tensor.grad)

    def remove_child(self, dotted: str) -> None:
        """Drop the sub-module at ``dotted`` (used for optional parts absent from a checkpoint)."""
        *parents, last = dotted.split(".")
        module: Module = self
        for part in parents:
            module = module._children[part]
        setattr(module, last, None)

    def named_weights(self) -> Iterator[tuple[str, Tensor | QuantizedTensor]]:
        """:meth:`named_parameters` with the quantized weights too, in declaration order."""
        for path, module in self.named_modules():
            for name in module._shapes:
                value = module.__dict__.get(name)
                if isinstance(value, Tensor | QuantizedTensor):
                    yield (f"{path}.{name}" if path else name), value

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike[str], device: str = "auto", **kwargs: Any
    ) -> Self:
        """This model class loaded from a checkpoint: ``dtype`` and the other keyword
        arguments are :func:`~ipfs_accelerate.models.loading.load_model`'s."""
        from ipfs_accelerate.models.loading import load_model

        model, _, _ = load_model(path_or_id, device, model_class=cls, **kwargs)
        return model  # type: ignore[return-value]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (quantized weights in the layout of
        :mod:`~ipfs_accelerate.models.saving`) for a model loaded by ``from_pretrained``."""
        from ipfs_accelerate.models.saving import save_model

        config = self.__dict__.get("checkpoint_config")
        if config is None:
            raise ModelError(
                f"{type(self).__name__}.save_pretrained: the model was not loaded from a "
                "checkpoint, so there is no config.json to write"
            )
        return save_model(self, config, directory)

    def assign(self, dotted: str, value: Tensor | QuantizedTensor) -> None:
        """Set the parameter at ``dotted`` (its shape was checked by the loader)."""
        *parents, last = dotted.split(".")
        module: Module = self
        for part in parents:
            module = module._children[part]
        if last not in module._shapes:
            raise ModelError(f"{type(self).__name__}: no parameter named {dotted!r}")
        object.__setattr__(module, last, value)

    def set_int8_activations(
        self, layers: str | Iterable[str] | Mapping[str, str] = "auto", mode: str = "int8"
    ) -> list[str]:
        """For an int8/int4 model: which quantized Linear layers also quantize their inputs
        to int8 at run time, one scale per tensor (``mode="int8"``) or per row
        (``"int8_row"``): "auto", "all", "none", layer kinds or a mapping kind -> mode; see
        :func:`ipfs_accelerate.models._precision.set_int8_activations`. Faster where the
        backend has an integer kernel (WebNN; cpu with MKL), less accurate; returns the
        chosen layers."""
        from ipfs_accelerate.models._precision import set_int8_activations

        return set_int8_activations(self, layers, mode)

    @property
    def device(self) -> str:
        """The backend holding the parameters ("cpu" before anything was loaded)."""
        for _, tensor in self.named_parameters():
            return tensor.device
        return "cpu"


class ModuleList(Module):
    """Modules numbered 0..n-1, as ``nn.ModuleList`` (keys ``layer.0.``, ``layer.1.``, ...)."""

    def __init__(self, modules: list[Module]) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._children.values()))

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, index: int) -> Any:
        return self._children[str(index)]


class Dropout(Module):
    """Inverted dropout with probability ``p`` while the tree is in training mode (see
    :meth:`Module.train`), the identity otherwise. Holds no parameters."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise ModelError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.generator = np.random.default_rng()

    @property
    def active(self) -> bool:
        return bool(self.training) and self.p > 0.0

    def __call__(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        # the generator itself, not a number drawn from it: a compiled training step draws
        # each later step's seed from it without running this module again
        return ops.dropout(x, self.p, training=True, seed=self.generator)


class Linear(Module):
    """``x @ weight.T + bias`` with ``weight`` (out_features, in_features), a Tensor or a
    QuantizedTensor; ``activations`` is ``ops.linear``'s (``"int8"`` is set by the loader's
    policy, see :mod:`~ipfs_accelerate.models._precision`)."""

    weight: Tensor | QuantizedTensor
    bias: Tensor
    activations: str = "float"
    #: per input feature, what the input is multiplied by before the product: set by
    #: :func:`~ipfs_accelerate.models._precision.smooth_int8_inputs`, whose weight holds the
    #: inverse factors (SmoothQuant's migration); None for every loaded model
    input_scale: Tensor | None = None
    #: called with every input while set (calibration: ``_smoothing.record_input_ranges``)
    input_observer: Callable[[Linear, Tensor], None] | None = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.has_bias = in_features, out_features, bias
        self.declare("weight", (out_features, in_features))
        if bias:
            self.declare("bias", (out_features,))

    def __call__(self, x: Tensor) -> Tensor:
        bias = self.bias if self.has_bias else None
        if self.input_observer is not None:
            self.input_observer(self, x)
        if self.input_scale is not None:
            x = x * self.input_scale
        if self.activations == "float":
            return ops.linear(x, self.weight, bias)
        return ops.linear(x, self.weight, bias, activations=self.activations)


class LayerNorm(Module):
    """Layer normalisation over the last axis with learned scale and shift."""

    weight: Tensor
    bias: Tensor

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.size, self.eps = size, float(eps)
        self.declare("weight", (size,))
        self.declare("bias", (size,))

    def __call__(self, x: Tensor) -> Tensor:
        return ops.layer_norm(x, self.size, self.weight, self.bias, self.eps)


class Embedding(Module):
    """A lookup table: rows of ``weight`` (num_embeddings, dim) by integer id; ``weight`` may
    be an int8 QuantizedTensor with one scale per row."""

    weight: Tensor | QuantizedTensor

    def __init__(self, num_embeddings: int, dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.padding_idx = padding_idx  # the row that gets no gradient, as nn.Embedding's
        self.declare("weight", (num_embeddings, dim))

    def __call__(self, ids: Tensor) -> Tensor:
        if isinstance(self.weight, QuantizedTensor):
            return _quantized_lookup(ids, self.weight)
        return ops.embedding(ids, self.weight, self.padding_idx)


def _quantized_lookup(ids: Tensor, table: QuantizedTensor) -> Tensor:
    """Rows of an int8 table with one scale per row, or per row and block along the row:
    the integers gathered, widened, times the rows' scales (the values of
    ``table.dequantize()`` at those rows, without expanding the table)."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.tensor import from_numpy

    device = ids.device
    if table.device != device:
        raise DeviceMismatchError(
            f"embedding: the quantized table is on {table.device!r} and the ids on {device!r}"
        )

    blocked = table.block_size is not None and table.axis == 1 and table.bits == 8
    if table.block_size is not None and not blocked:
        raise InvalidArgumentError(
            f"embedding: a quantized table needs int8 with one scale per row or per row and "
            f"block along it, got bits={table.bits}, axis={table.axis}, "
            f"block_size={table.block_size}"
        )

    def build(q: QuantizedTensor) -> tuple[Tensor, Tensor]:
        ints = from_numpy(np.ascontiguousarray(q.int_values()), device)
        # (rows, blocks): one scale per block of the row (1 block: per row)
        scales = from_numpy(q.scales.astype(np.float32).reshape(q.shape[0], -1), device)
        hal.mark_parameter(ints, scales)
        return ints, scales

    ints, scales = table.prepared(f"embedding:{device}", build)
    rows = ops.astype(ops.embedding(ids, ints), float32)
    gathered = ops.embedding(ids, scales)
    if not blocked:
        return rows * gathered
    dim, blocks = table.shape[1], scales.shape[1]
    lead = rows.shape[:-1]
    split = rows.reshape(*lead, blocks, dim // blocks) * gathered.reshape(*lead, blocks, 1)
    return split.reshape(*lead, dim)


class Conv1d(Module):
    """PyTorch's Conv1d (cross-correlation over the last axis)."""

    weight: Tensor
    bias: Tensor

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stride, self.padding, self.has_bias = stride, padding, bias
        self.declare("weight", (c_out, c_in, kernel))
        if bias:
            self.declare("bias", (c_out,))

    def __call__(self, x: Tensor) -> Tensor:
        return ops.conv1d(
            x,
            self.weight,
            self.bias if self.has_bias else None,
            stride=self.stride,
            padding=self.padding,
        )


class Conv2d(Module):
    """PyTorch's Conv2d with a square kernel."""

    weight: Tensor
    bias: Tensor

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        self.stride, self.has_bias = stride, bias
        self.declare("weight", (c_out, c_in, kernel, kernel))
        if bias:
            self.declare("bias", (c_out,))

    def __call__(self, x: Tensor) -> Tensor:
        return ops.conv2d(x, self.weight, self.bias if self.has_bias else None, stride=self.stride)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H) -> (B, heads, L, H / heads)."""
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads).permute(0, 2, 1, 3)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, L, d) -> (B, L, heads * d)."""
    batch, heads, length, dim = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, length, heads * dim)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    dropout: Dropout,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention with ``dropout`` on the attention probabilities, as the
    Hugging Face encoders apply it in training mode. In evaluation mode (or with p = 0) this is
    :func:`ops.scaled_dot_product_attention` itself, whose fused kernels have no dropout;
    ``mask`` is bool (True = may attend) or additive float, as there."""
    if not dropout.active:
        return ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.mT) * factor
    if mask is not None:
        if mask.dtype is bool_:
            scores = ops.where(mask, scores, float(np.finfo(np.float32).min))
        else:
            scores = scores + mask
    return dropout(ops.softmax(scores, axis=-1)) @ v


def activation(name: str, x: Tensor) -> Tensor:
    """The Hugging Face ``hidden_act`` names this package implements."""
    if name == "gelu":
        return ops.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return ops.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return x * ops.sigmoid(x * 1.702)
    if name == "relu":
        return ops.relu(x)
    if name in ("silu", "swish"):
        return ops.silu(x)
    raise ModelError(
        f"activation {name!r} is not implemented (gelu, gelu_new, quick_gelu, relu, silu are)"
    )


SUPPORTED_ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish"}
)
