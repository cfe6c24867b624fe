"""The small module system the models are written in: parameters named like checkpoint keys.

A :class:`Module` declares its parameters with their shapes when it is built from a config;
child modules become part of the dotted name, so ``BertModel().encoder.layer[0].attention
.self.query.weight`` is the checkpoint key ``encoder.layer.0.attention.self.query.weight``.
Loading is then a mapping from keys to tensors (see :mod:`ipfs_accelerate.models.loading`),
never a translation table. Modules hold tensors of one backend and call only
:mod:`ipfs_accelerate.ops` and Tensor methods: they never name a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from ipfs_accelerate import ops
from ipfs_accelerate.errors import ModelError
from ipfs_accelerate.tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "Embedding", "LayerNorm", "Linear", "Module", "ModuleList"]

Shape = tuple[int, ...]


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
    """

    base_model_prefix: ClassVar[str] = ""
    is_head_model: ClassVar[bool] = False
    tied_weights: ClassVar[dict[str, str]] = {}
    optional_prefixes: ClassVar[tuple[str, ...]] = ()
    ignored_keys: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[Any] = None

    def __init__(self) -> None:
        object.__setattr__(self, "_shapes", {})
        object.__setattr__(self, "_children", {})

    def __setattr__(self, name: str, value: Any) -> None:
        children: dict[str, Module] = self.__dict__["_children"]
        if isinstance(value, Module):
            children[name] = value
        elif value is None and name in children:
            del children[name]
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

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """The loaded parameters as ``(dotted.name, tensor)``."""
        for path, module in self.named_modules():
            for name in module._shapes:
                value = module.__dict__.get(name)
                if isinstance(value, Tensor):
                    yield (f"{path}.{name}" if path else name), value

    def remove_child(self, dotted: str) -> None:
        """Drop the sub-module at ``dotted`` (used for optional parts absent from a checkpoint)."""
        *parents, last = dotted.split(".")
        module: Module = self
        for part in parents:
            module = module._children[part]
        setattr(module, last, None)

    def assign(self, dotted: str, value: Tensor) -> None:
        """Set the parameter at ``dotted`` (its shape was checked by the loader)."""
        *parents, last = dotted.split(".")
        module: Module = self
        for part in parents:
            module = module._children[part]
        if last not in module._shapes:
            raise ModelError(f"{type(self).__name__}: no parameter named {dotted!r}")
        object.__setattr__(module, last, value)

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


class Linear(Module):
    """``x @ weight.T + bias`` with ``weight`` (out_features, in_features)."""

    weight: Tensor
    bias: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.has_bias = in_features, out_features, bias
        self.declare("weight", (out_features, in_features))
        if bias:
            self.declare("bias", (out_features,))

    def __call__(self, x: Tensor) -> Tensor:
        return ops.linear(x, self.weight, self.bias if self.has_bias else None)


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
    """A lookup table: rows of ``weight`` (num_embeddings, dim) by integer id."""

    weight: Tensor

    def __init__(self, num_embeddings: int, dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.declare("weight", (num_embeddings, dim))

    def __call__(self, ids: Tensor) -> Tensor:
        return ops.embedding(ids, self.weight)


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
