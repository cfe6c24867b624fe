"""MLGraphBuilder: records and validates WebNN operations; ``build()`` compiles them to an MLGraph.

Every method follows the spec's validation steps (data types, ranks, shapes, axes, layouts,
option ranges) and raises WebNNValidationError (a TypeError) naming the op, its label and the
offending operand or option. Building is pure Python over numpy: onnx and onnxruntime load
only when ``build()`` compiles the graph.

Python naming: methods and options are the spec's in snake_case (``reduce_sum``,
``keep_dimensions``, ``input_layout``); options are keyword arguments, so a spec-style options
dictionary can be passed as ``builder.conv2d(x, w, **options)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import WebNNInvalidStateError, WebNNValidationError
from ipfs_accelerate.webnn._limits import OPERAND_LIMITS
from ipfs_accelerate.webnn._operand import CONSTANT, INPUT, OUTPUT, MLOperand, Node
from ipfs_accelerate.webnn._runtime import MAX_THREADS
from ipfs_accelerate.webnn._types import (
    MAX_RANK,
    MAX_TENSOR_BYTE_LENGTH,
    MLOperandDescriptor,
    check_data_type,
    coerce_array,
    integer_bounds,
    numpy_dtype,
    parse_descriptor,
)
from ipfs_accelerate.webnn._validate import Where, broadcast_shapes, unidirectional

if TYPE_CHECKING:  # pragma: no cover
    from ipfs_accelerate.webnn._context import MLContext, MLGraph, MLTensor

__all__ = ["MLGraphBuilder"]

_RECURRENT_ACTIVATIONS = ("relu", "sigmoid", "tanh")
_DIRECTIONS = ("forward", "backward", "both")
_LAYOUTS = ("nchw", "nhwc")
#: the data types ONNX Runtime's ScatterND adds in (reduction "add"; it has no float16 there)
_SCATTER_ADD_TYPES = frozenset({"float32", "int32", "int64", "int8", "uint8"})


def _desc(data_type: str, shape: Sequence[int]) -> MLOperandDescriptor:
    return MLOperandDescriptor(data_type, tuple(shape))


def _cast_number(where: Where, value: int | float, data_type: str, name: str) -> Any:
    """An MLNumber cast to a data type: floats round to nearest (infinities and NaN kept),
    integers saturate to the type's range (NaN is rejected for integer types)."""
    dtype = numpy_dtype(data_type)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return dtype.type(value)
    low, high = integer_bounds(data_type)
    if isinstance(value, float):
        if math.isnan(value):
            raise where.error(f"{name} is NaN, which {data_type} cannot hold")
        if math.isinf(value):
            value = high if value > 0 else low
        value = math.trunc(value)
    return dtype.type(min(max(int(value), low), high))


class MLGraphBuilder:
    """Builds a WebNN graph for one MLContext; ``build()`` returns a compiled MLGraph.

    A builder builds once: after ``build()`` every method raises WebNNInvalidStateError.
    Operands belong to the builder that made them; passing one to another builder raises
    WebNNValidationError.
    """

    def __init__(self, context: MLContext) -> None:
        from ipfs_accelerate.webnn._context import MLContext

        if not isinstance(context, MLContext):
            raise WebNNValidationError(
                f"MLGraphBuilder: expected an MLContext, got {type(context).__name__}"
            )
        context._check_alive("MLGraphBuilder")
        self._context = context
        self._nodes: list[Node] = []
        self._ids = itertools.count()
        self._inputs: dict[str, MLOperand] = {}
        self._built = False

    # ================================================================== plumbing

    def _begin(self, op: str, label: str) -> Where:
        if self._built:
            raise WebNNInvalidStateError(
                f"{op}: this MLGraphBuilder has already built its graph; create a new builder"
            )
        if not isinstance(label, str):
            raise WebNNValidationError(f"{op}: label must be a string, got {label!r}")
        return Where(op, label)

    def _operand(
        self, where: Where, value: object, name: str, *, limits: str | None = None
    ) -> MLOperand:
        """Check that ``value`` is an operand of this builder within the op's limits."""
        if not isinstance(value, MLOperand):
            raise where.error(f"{name} must be an MLOperand, got {type(value).__name__}")
        if value._builder is not self:
            raise where.error(f"{name} was created by another MLGraphBuilder")
        key = limits or name
        table = OPERAND_LIMITS.get(where.op)
        if table is not None and key in table:
            types, lo, hi = table[key]
            if value.data_type not in types:
                raise where.error(
                    f"{name} has data type {value.data_type}; supported: {', '.join(types)}"
                )
            if not lo <= value.rank <= hi:
                expected = f"{lo}" if lo == hi else f"{lo}..{hi}"
                raise where.error(
                    f"{name} has rank {value.rank} (shape {list(value.shape)}); "
                    f"expected rank {expected}"
                )
        return value

    def _optional(self, where: Where, value: object, name: str) -> MLOperand | None:
        return None if value is None else self._operand(where, value, name)

    @staticmethod
    def _same_type(
        where: Where, reference: MLOperand, name: str, *others: MLOperand | None
    ) -> None:
        for index, other in enumerate(others):
            if other is not None and other.data_type != reference.data_type:
                label = name.split(",")[index].strip() if "," in name else name
                raise where.error(
                    f"{label} has data type {other.data_type}, but must match {reference.data_type}"
                )

    @staticmethod
    def _shape_is(where: Where, operand: MLOperand | None, name: str, shape: Sequence[int]) -> None:
        if operand is not None and operand.shape != tuple(shape):
            raise where.error(f"{name} has shape {list(operand.shape)}, expected {list(shape)}")

    def _add(
        self,
        where: Where,
        inputs: Sequence[MLOperand | None],
        attrs: dict[str, Any],
        outputs: Sequence[MLOperandDescriptor],
    ) -> tuple[MLOperand, ...]:
        for descriptor in outputs:
            if len(descriptor.shape) > MAX_RANK:
                raise where.error(
                    f"the output rank {len(descriptor.shape)} exceeds the maximum rank {MAX_RANK}"
                )
            if descriptor.byte_length > MAX_TENSOR_BYTE_LENGTH:
                raise where.error(
                    f"the output of {descriptor.byte_length} bytes exceeds the maximum tensor "
                    f"byte length {MAX_TENSOR_BYTE_LENGTH}"
                )
        node = Node(where.op, tuple(inputs), attrs, label=where.label)
        node.outputs = tuple(
            MLOperand(self, next(self._ids), descriptor, OUTPUT) for descriptor in outputs
        )
        for operand in node.outputs:
            operand._node = node
        self._nodes.append(node)
        return node.outputs

    def _one(
        self,
        where: Where,
        inputs: Sequence[MLOperand | None],
        attrs: dict[str, Any],
        data_type: str,
        shape: Sequence[int],
    ) -> MLOperand:
        return self._add(where, inputs, attrs, [_desc(data_type, shape)])[0]

    # ================================================================== inputs, constants, build

    def input(self, name: str, descriptor: Mapping[str, Any] | MLOperandDescriptor) -> MLOperand:
        """A named graph input. ``descriptor``: ``{"dataType": ..., "shape": [...]}``."""
        where = self._begin("input", "")
        if not isinstance(name, str) or not name:
            raise where.error(f"the input name must be a non-empty string, got {name!r}")
        if name in self._inputs:
            raise where.error(f"an input named {name!r} already exists in this builder")
        parsed = parse_descriptor(descriptor, f"input {name!r}")
        operand = MLOperand(self, next(self._ids), parsed, INPUT, name=name)
        self._inputs[name] = operand
        return operand

    def constant(
        self,
        descriptor: Mapping[str, Any] | MLOperandDescriptor | str | MLTensor,
        buffer: object = None,
        *,
        copy: bool | None = None,
    ) -> MLOperand:
        """A graph constant, in one of the spec's three forms.

        * ``constant(descriptor, buffer)``: ``buffer`` is a numpy array of the descriptor's
          dtype (same element count), a bytes-like object of the descriptor's byte length, or
          nested numbers representable in the data type.
        * ``constant(data_type, value)``: a scalar of that data type.
        * ``constant(tensor)``: a tensor made by ``MLContext.create_constant_tensor``.

        The spec gives constants the buffer's content at call time. A read-only numpy array is
        referenced without a copy (the caller promises not to change it); a writable one is
        copied, unless ``copy=False`` (then later writes to it are undefined behaviour).
        """
        from ipfs_accelerate.webnn._context import MLTensor

        where = self._begin("constant", "")
        if isinstance(descriptor, MLTensor):
            descriptor._check_alive("constant")
            if descriptor._context is not self._context:
                raise where.error("the tensor belongs to another MLContext")
            if not descriptor.constant:
                raise where.error(
                    "the tensor was not made by create_constant_tensor(); only constant tensors "
                    "can be graph constants"
                )
            value = descriptor._host_view()
            return MLOperand(self, next(self._ids), descriptor._descriptor, CONSTANT, value=value)
        if isinstance(descriptor, str):
            data_type = check_data_type(descriptor, "constant")
            number = where.number(buffer, "value")
            scalar = _cast_number(where, number, data_type, "value")
            if numpy_dtype(data_type).kind in "iu" and scalar != number:
                raise where.error(f"value {number!r} is not representable as {data_type}")
            array = np.array(scalar, dtype=numpy_dtype(data_type))
            array.flags.writeable = False
            return MLOperand(self, next(self._ids), _desc(data_type, ()), CONSTANT, value=array)
        parsed = parse_descriptor(descriptor, "constant")
        if buffer is None:
            raise where.error("a buffer is required with a descriptor")
        array = coerce_array(buffer, parsed, "constant")
        if isinstance(buffer, np.ndarray):
            shared = np.shares_memory(array, buffer)
            writable = bool(buffer.flags.writeable)
            must_copy = shared and (copy is True or (copy is None and writable))
        else:
            # a bytearray/memoryview stays mutable behind the array; bytes and numbers do not
            must_copy = isinstance(buffer, (bytearray, memoryview)) and copy is not False
        if must_copy:
            array = array.copy()
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        return MLOperand(self, next(self._ids), parsed, CONSTANT, value=array)

    def build(self, outputs: Mapping[str, MLOperand], *, threads: int | None = None) -> MLGraph:
        """Compile the graph up to ``outputs`` (``{name: operand}``) into an MLGraph.

        Only operations the outputs depend on are compiled; the graph's inputs are the
        input operands they reach. Raises WebNNValidationError for an empty or invalid
        outputs mapping, WebNNOperationError when ONNX Runtime cannot compile the graph, and
        WebNNInvalidStateError when this builder has already built.

        ``threads`` (an extension, not in the WebNN spec): the most threads a run of the graph
        uses, for a caller that runs several graphs side by side and shares the cores out
        (``TextEmbedder.embed``'s batches); ``1`` runs it on the calling thread alone. None
        (default) lets the runtime choose (small graphs one thread, larger ones a pool of
        the host's cores); a small graph runs on one thread either way.
        """
        where = self._begin("build", "")
        if threads is not None and (type(threads) is not int or not 1 <= threads <= MAX_THREADS):
            raise where.error(
                f"threads must be an int from 1 to {MAX_THREADS} or None, got {threads!r}"
            )
        if not isinstance(outputs, Mapping) or not outputs:
            raise where.error("outputs must be a non-empty mapping of names to operands")
        for name, operand in outputs.items():
            if not isinstance(name, str) or not name:
                raise where.error(f"output names must be non-empty strings, got {name!r}")
            self._operand(where, operand, f"output {name!r}")
            if operand._kind == INPUT:
                raise where.error(f"output {name!r} is the input operand {operand._name!r}")
            if operand._kind == CONSTANT:
                raise where.error(f"output {name!r} is a constant operand")
        from ipfs_accelerate.webnn._context import MLGraph

        self._built = True
        return MLGraph._compile(self._context, dict(outputs), self._nodes, threads)

    # ================================================================== element-wise binary

    def _binary(self, op: str, a: MLOperand, b: MLOperand, label: str) -> MLOperand:
        where = self._begin(op, label)
        self._operand(where, a, "a")
        self._operand(where, b, "b")
        if a.data_type != b.data_type:
            raise where.error(f"a is {a.data_type} but b is {b.data_type}; they must match")
        shape = broadcast_shapes(where, a.shape, b.shape, "a and b")
        out_type = OPERAND_LIMITS[op]["output"][0]
        data_type = "uint8" if out_type == ("uint8",) and op not in _LOGICAL else a.data_type
        return self._one(where, [a, b], {}, data_type, shape)

    def add(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """a + b, broadcasting numpy-style."""
        return self._binary("add", a, b, label)

    def sub(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """a - b (integers wrap around)."""
        return self._binary("sub", a, b, label)

    def mul(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """a * b."""
        return self._binary("mul", a, b, label)

    def div(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """a / b. Integer division truncates toward zero; an integer divided by 0 gives 0."""
        return self._binary("div", a, b, label)

    def max(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """Element-wise maximum."""
        return self._binary("max", a, b, label)

    def min(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """Element-wise minimum."""
        return self._binary("min", a, b, label)

    def pow(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """a ** b."""
        return self._binary("pow", a, b, label)

    # ================================================================== element-wise logical

    def equal(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a == b, else 0."""
        return self._binary("equal", a, b, label)

    def not_equal(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a != b, else 0."""
        return self._binary("not_equal", a, b, label)

    def greater(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a > b, else 0."""
        return self._binary("greater", a, b, label)

    def greater_or_equal(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a >= b, else 0."""
        return self._binary("greater_or_equal", a, b, label)

    def lesser(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a < b, else 0."""
        return self._binary("lesser", a, b, label)

    def lesser_or_equal(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where a <= b, else 0."""
        return self._binary("lesser_or_equal", a, b, label)

    def logical_and(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 where both uint8 operands are non-zero, else 0."""
        return self._binary("logical_and", a, b, label)

    def logical_or(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 where either uint8 operand is non-zero, else 0."""
        return self._binary("logical_or", a, b, label)

    def logical_xor(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """1 where exactly one uint8 operand is non-zero, else 0."""
        return self._binary("logical_xor", a, b, label)

    def logical_not(self, a: MLOperand, *, label: str = "") -> MLOperand:
        """1 where the uint8 operand is zero, else 0."""
        where = self._begin("logical_not", label)
        self._operand(where, a, "a")
        return self._one(where, [a], {}, "uint8", a.shape)

    def is_nan(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where the input is NaN, else 0."""
        return self._unary("is_nan", input, label, out_type="uint8")

    def is_infinite(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """1 (uint8) where the input is +-infinity, else 0."""
        return self._unary("is_infinite", input, label, out_type="uint8")

    # ================================================================== element-wise unary

    def _unary(
        self,
        op: str,
        input: MLOperand,
        label: str,
        attrs: dict[str, Any] | None = None,
        *,
        out_type: str | None = None,
    ) -> MLOperand:
        where = self._begin(op, label)
        self._operand(where, input, "input")
        return self._one(where, [input], attrs or {}, out_type or input.data_type, input.shape)

    def abs(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """|x|."""
        return self._unary("abs", input, label)

    def ceil(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Round up."""
        return self._unary("ceil", input, label)

    def cos(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Cosine."""
        return self._unary("cos", input, label)

    def erf(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Gauss error function."""
        return self._unary("erf", input, label)

    def exp(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """e ** x."""
        return self._unary("exp", input, label)

    def floor(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Round down."""
        return self._unary("floor", input, label)

    def identity(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """A copy of the input."""
        return self._unary("identity", input, label)

    def log(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Natural logarithm."""
        return self._unary("log", input, label)

    def neg(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """-x."""
        return self._unary("neg", input, label)

    def reciprocal(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """1 / x."""
        return self._unary("reciprocal", input, label)

    def round_even(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Round to the nearest integer, ties to even."""
        return self._unary("round_even", input, label)

    def sign(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """-1, 0 or 1 by the sign of x."""
        return self._unary("sign", input, label)

    def sin(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Sine."""
        return self._unary("sin", input, label)

    def sqrt(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Square root."""
        return self._unary("sqrt", input, label)

    def tan(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Tangent."""
        return self._unary("tan", input, label)

    def cast(self, input: MLOperand, data_type: str, *, label: str = "") -> MLOperand:
        """Convert to another data type (floats to integers truncate toward zero)."""
        where = self._begin("cast", label)
        self._operand(where, input, "input")
        target = check_data_type(data_type, "cast: data_type")
        targets = OPERAND_LIMITS["cast"]["output"][0]
        if target not in targets:  # the 4-bit extension types are no cast target
            raise where.error(f"data_type {target} is not supported: {', '.join(targets)}")
        return self._one(where, [input], {"to": target}, target, input.shape)

    # ================================================================== activations

    def elu(self, input: MLOperand, *, alpha: float = 1.0, label: str = "") -> MLOperand:
        """x if x >= 0 else alpha * (exp(x) - 1)."""
        where = self._begin("elu", label)
        return self._unary("elu", input, label, {"alpha": where.finite(alpha, "alpha")})

    def gelu(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """0.5 * x * (1 + erf(x / sqrt(2)))."""
        return self._unary("gelu", input, label)

    def hard_sigmoid(
        self,
        input: MLOperand,
        *,
        alpha: float = 0.2,
        beta: float = 0.5,
        label: str = "",
    ) -> MLOperand:
        """max(0, min(1, alpha * x + beta))."""
        where = self._begin("hard_sigmoid", label)
        attrs = {"alpha": where.finite(alpha, "alpha"), "beta": where.finite(beta, "beta")}
        return self._unary("hard_sigmoid", input, label, attrs)

    def hard_swish(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """x * max(0, min(6, x + 3)) / 6."""
        return self._unary("hard_swish", input, label)

    def leaky_relu(self, input: MLOperand, *, alpha: float = 0.01, label: str = "") -> MLOperand:
        """x if x >= 0 else alpha * x."""
        where = self._begin("leaky_relu", label)
        return self._unary("leaky_relu", input, label, {"alpha": where.finite(alpha, "alpha")})

    def linear(
        self,
        input: MLOperand,
        *,
        alpha: float = 1.0,
        beta: float = 0.0,
        label: str = "",
    ) -> MLOperand:
        """alpha * x + beta."""
        where = self._begin("linear", label)
        attrs = {"alpha": where.finite(alpha, "alpha"), "beta": where.finite(beta, "beta")}
        return self._unary("linear", input, label, attrs)

    def relu(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """max(0, x)."""
        return self._unary("relu", input, label)

    def sigmoid(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """1 / (1 + exp(-x))."""
        return self._unary("sigmoid", input, label)

    def softplus(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """ln(1 + exp(x))."""
        return self._unary("softplus", input, label)

    def softsign(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """x / (1 + |x|)."""
        return self._unary("softsign", input, label)

    def tanh(self, input: MLOperand, *, label: str = "") -> MLOperand:
        """Hyperbolic tangent."""
        return self._unary("tanh", input, label)

    def softmax(self, input: MLOperand, axis: int, *, label: str = "") -> MLOperand:
        """exp(x) / sum(exp(x)) along ``axis``."""
        where = self._begin("softmax", label)
        self._operand(where, input, "input")
        attrs = {"axis": where.axis(axis, input.rank)}
        return self._one(where, [input], attrs, input.data_type, input.shape)

    def prelu(self, input: MLOperand, slope: MLOperand, *, label: str = "") -> MLOperand:
        """x if x >= 0 else slope * x; ``slope`` broadcasts to the input's shape."""
        where = self._begin("prelu", label)
        self._operand(where, input, "input")
        self._operand(where, slope, "slope")
        self._same_type(where, input, "slope", slope)
        unidirectional(where, slope.shape, input.shape, "slope")
        return self._one(where, [input, slope], {}, input.data_type, input.shape)

    def clamp(
        self,
        input: MLOperand,
        *,
        min_value: int | float | None = None,
        max_value: int | float | None = None,
        label: str = "",
    ) -> MLOperand:
        """min(max(x, min_value), max_value). A NaN bound is ignored (no clamping on that side)."""
        where = self._begin("clamp", label)
        self._operand(where, input, "input")
        low = -math.inf if min_value is None else where.number(min_value, "min_value")
        high = math.inf if max_value is None else where.number(max_value, "max_value")
        if low > high:
            raise where.error(f"min_value {low} is greater than max_value {high}")
        if isinstance(low, float) and math.isnan(low):
            low = -math.inf
        if isinstance(high, float) and math.isnan(high):
            high = math.inf
        attrs = {
            "min": _cast_number(where, low, input.data_type, "min_value"),
            "max": _cast_number(where, high, input.data_type, "max_value"),
        }
        return self._one(where, [input], attrs, input.data_type, input.shape)

    # ================================================================== reductions

    def _reduce(
        self,
        op: str,
        input: MLOperand,
        axes: Sequence[int] | None,
        keep_dimensions: bool,
        label: str,
    ) -> MLOperand:
        where = self._begin(op, label)
        self._operand(where, input, "input")
        keep = where.boolean(keep_dimensions, "keep_dimensions")
        reduced = tuple(range(input.rank)) if axes is None else where.axes(axes, input.rank)
        if keep:
            shape = tuple(1 if i in reduced else d for i, d in enumerate(input.shape))
        else:
            shape = tuple(d for i, d in enumerate(input.shape) if i not in reduced)
        attrs = {"axes": tuple(sorted(reduced)), "keep_dimensions": keep}
        return self._one(where, [input], attrs, input.data_type, shape)

    def reduce_l1(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Sum of |x| over ``axes`` (all axes when None)."""
        return self._reduce("reduce_l1", input, axes, keep_dimensions, label)

    def reduce_l2(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """sqrt(sum(x ** 2)) over ``axes``."""
        return self._reduce("reduce_l2", input, axes, keep_dimensions, label)

    def reduce_log_sum(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """log(sum(x)) over ``axes``."""
        return self._reduce("reduce_log_sum", input, axes, keep_dimensions, label)

    def reduce_log_sum_exp(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """log(sum(exp(x))) over ``axes``."""
        return self._reduce("reduce_log_sum_exp", input, axes, keep_dimensions, label)

    def reduce_max(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Maximum over ``axes``."""
        return self._reduce("reduce_max", input, axes, keep_dimensions, label)

    def reduce_mean(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Mean over ``axes``."""
        return self._reduce("reduce_mean", input, axes, keep_dimensions, label)

    def reduce_min(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Minimum over ``axes``."""
        return self._reduce("reduce_min", input, axes, keep_dimensions, label)

    def reduce_product(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Product over ``axes``."""
        return self._reduce("reduce_product", input, axes, keep_dimensions, label)

    def reduce_sum(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Sum over ``axes``."""
        return self._reduce("reduce_sum", input, axes, keep_dimensions, label)

    def reduce_sum_square(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        keep_dimensions: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Sum of x ** 2 over ``axes``."""
        return self._reduce("reduce_sum_square", input, axes, keep_dimensions, label)

    def _arg(
        self,
        op: str,
        input: MLOperand,
        axis: int,
        keep_dimensions: bool,
        output_data_type: str,
        label: str,
    ) -> MLOperand:
        where = self._begin(op, label)
        self._operand(where, input, "input")
        axis = where.axis(axis, input.rank)
        keep = where.boolean(keep_dimensions, "keep_dimensions")
        out_type = where.choice(output_data_type, "output_data_type", ("int32", "int64"))
        if keep:
            shape = tuple(1 if i == axis else d for i, d in enumerate(input.shape))
        else:
            shape = tuple(d for i, d in enumerate(input.shape) if i != axis)
        attrs = {"axis": axis, "keep_dimensions": keep}
        return self._one(where, [input], attrs, out_type, shape)

    def arg_max(
        self,
        input: MLOperand,
        axis: int,
        *,
        keep_dimensions: bool = False,
        output_data_type: str = "int32",
        label: str = "",
    ) -> MLOperand:
        """Index of the first maximum along ``axis``."""
        return self._arg("arg_max", input, axis, keep_dimensions, output_data_type, label)

    def arg_min(
        self,
        input: MLOperand,
        axis: int,
        *,
        keep_dimensions: bool = False,
        output_data_type: str = "int32",
        label: str = "",
    ) -> MLOperand:
        """Index of the first minimum along ``axis``."""
        return self._arg("arg_min", input, axis, keep_dimensions, output_data_type, label)

    def cumulative_sum(
        self,
        input: MLOperand,
        axis: int,
        *,
        exclusive: bool = False,
        reversed: bool = False,
        label: str = "",
    ) -> MLOperand:
        """Running sum along ``axis``; ``exclusive`` starts from 0, ``reversed`` runs backwards."""
        where = self._begin("cumulative_sum", label)
        self._operand(where, input, "input")
        attrs = {
            "axis": where.axis(axis, input.rank),
            "exclusive": where.boolean(exclusive, "exclusive"),
            "reversed": where.boolean(reversed, "reversed"),
        }
        return self._one(where, [input], attrs, input.data_type, input.shape)

    # ================================================================== shape and data movement

    def concat(self, inputs: Sequence[MLOperand], axis: int, *, label: str = "") -> MLOperand:
        """Join operands along ``axis``; the other sizes must match."""
        where = self._begin("concat", label)
        if isinstance(inputs, MLOperand) or not isinstance(inputs, Sequence) or not inputs:
            raise where.error("inputs must be a non-empty sequence of operands")
        operands = [
            self._operand(where, x, f"inputs[{i}]", limits="inputs") for i, x in enumerate(inputs)
        ]
        first = operands[0]
        axis = where.axis(axis, first.rank)
        size = 0
        for index, operand in enumerate(operands):
            if operand.data_type != first.data_type:
                raise where.error(
                    f"inputs[{index}] is {operand.data_type} but inputs[0] is {first.data_type}"
                )
            if operand.rank != first.rank:
                raise where.error(
                    f"inputs[{index}] has rank {operand.rank} but inputs[0] has rank {first.rank}"
                )
            for dim in range(first.rank):
                if dim != axis and operand.shape[dim] != first.shape[dim]:
                    raise where.error(
                        f"inputs[{index}] has shape {list(operand.shape)}, which differs from "
                        f"inputs[0] {list(first.shape)} outside axis {axis}"
                    )
            size += operand.shape[axis]
        shape = list(first.shape)
        shape[axis] = where.uint(size, "the concatenated size")
        return self._one(where, operands, {"axis": axis}, first.data_type, shape)

    def reshape(self, input: MLOperand, new_shape: Sequence[int], *, label: str = "") -> MLOperand:
        """Same elements, new shape (equal element count)."""
        where = self._begin("reshape", label)
        self._operand(where, input, "input")
        shape = where.dims(new_shape, "new_shape")
        if math.prod(shape) != math.prod(input.shape):
            raise where.error(
                f"new_shape {list(shape)} holds {math.prod(shape)} elements but the input "
                f"{list(input.shape)} holds {math.prod(input.shape)}"
            )
        return self._one(where, [input], {"shape": shape}, input.data_type, shape)

    def expand(self, input: MLOperand, new_shape: Sequence[int], *, label: str = "") -> MLOperand:
        """Broadcast the input to ``new_shape``."""
        where = self._begin("expand", label)
        self._operand(where, input, "input")
        shape = where.dims(new_shape, "new_shape")
        unidirectional(where, input.shape, shape, "input")
        return self._one(where, [input], {"shape": shape}, input.data_type, shape)

    def transpose(
        self,
        input: MLOperand,
        *,
        permutation: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """Permute the axes (reverse them when ``permutation`` is None)."""
        where = self._begin("transpose", label)
        self._operand(where, input, "input")
        if permutation is None:
            perm = tuple(reversed(range(input.rank)))
        else:
            perm = where.axes(permutation, input.rank, "permutation")
            if len(perm) != input.rank:
                raise where.error(
                    f"permutation {list(perm)} must hold {input.rank} axes for rank {input.rank}"
                )
        shape = tuple(input.shape[p] for p in perm)
        return self._one(where, [input], {"permutation": perm}, input.data_type, shape)

    def slice(
        self,
        input: MLOperand,
        starts: Sequence[int],
        sizes: Sequence[int],
        *,
        strides: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """input[starts : starts + sizes : strides] along every axis."""
        where = self._begin("slice", label)
        self._operand(where, input, "input")
        rank = input.rank
        begin = where.uint_list(starts, "starts", length=rank)
        size = where.uint_list(sizes, "sizes", length=rank, minimum=1)
        step = (
            (1,) * rank
            if strides is None
            else where.uint_list(strides, "strides", length=rank, minimum=1)
        )
        for axis in range(rank):
            if begin[axis] >= input.shape[axis] or begin[axis] + size[axis] > input.shape[axis]:
                raise where.error(
                    f"starts {list(begin)} and sizes {list(size)} reach past axis {axis} "
                    f"of size {input.shape[axis]}"
                )
        shape = tuple(-(-s // t) for s, t in zip(size, step, strict=True))
        attrs = {"starts": begin, "sizes": size, "strides": step}
        return self._one(where, [input], attrs, input.data_type, shape)

    def split(
        self,
        input: MLOperand,
        splits: int | Sequence[int],
        *,
        axis: int = 0,
        label: str = "",
    ) -> list[MLOperand]:
        """Split along ``axis`` into ``splits`` equal parts, or into parts of the given sizes."""
        where = self._begin("split", label)
        self._operand(where, input, "input")
        axis = where.axis(axis, input.rank)
        size = input.shape[axis]
        if isinstance(splits, (int, np.integer)) and not isinstance(splits, bool):
            count = where.uint(splits, "splits", minimum=1)
            if size % count:
                raise where.error(f"axis {axis} of size {size} does not split into {count} parts")
            parts = (size // count,) * count
        else:
            parts = where.uint_list(splits, "splits", minimum=1)
            if not parts or sum(parts) != size:
                raise where.error(
                    f"splits {list(parts)} sum to {sum(parts)}, not the size {size} of axis {axis}"
                )
        shapes = []
        for part in parts:
            shape = list(input.shape)
            shape[axis] = part
            shapes.append(_desc(input.data_type, shape))
        return list(self._add(where, [input], {"axis": axis, "splits": parts}, shapes))

    def pad(
        self,
        input: MLOperand,
        beginning_padding: Sequence[int],
        ending_padding: Sequence[int],
        *,
        mode: str = "constant",
        value: int | float = 0,
        label: str = "",
    ) -> MLOperand:
        """Pad each axis; ``mode`` is "constant" (with ``value``), "edge" or "reflection"."""
        where = self._begin("pad", label)
        self._operand(where, input, "input")
        begin = where.uint_list(beginning_padding, "beginning_padding", length=input.rank)
        end = where.uint_list(ending_padding, "ending_padding", length=input.rank)
        mode = where.choice(mode, "mode", ("constant", "edge", "reflection"))
        if mode == "reflection":
            for axis, dim in enumerate(input.shape):
                if begin[axis] >= dim or end[axis] >= dim:
                    raise where.error(
                        f"reflection padding {begin[axis]}/{end[axis]} on axis {axis} must be "
                        f"smaller than its size {dim}"
                    )
        fill = _cast_number(where, where.number(value, "value"), input.data_type, "value")
        shape = [
            where.uint(d + b + e, f"the padded size of axis {i}")
            for i, (d, b, e) in enumerate(zip(input.shape, begin, end, strict=True))
        ]
        attrs = {"begin": begin, "end": end, "mode": mode, "value": fill}
        return self._one(where, [input], attrs, input.data_type, shape)

    def tile(self, input: MLOperand, repetitions: Sequence[int], *, label: str = "") -> MLOperand:
        """Repeat the input ``repetitions[i]`` times along axis i."""
        where = self._begin("tile", label)
        self._operand(where, input, "input")
        reps = where.uint_list(repetitions, "repetitions", length=input.rank, minimum=1)
        shape = [
            where.uint(d * r, f"the tiled size of axis {i}")
            for i, (d, r) in enumerate(zip(input.shape, reps, strict=True))
        ]
        return self._one(where, [input], {"repetitions": reps}, input.data_type, shape)

    def reverse(
        self,
        input: MLOperand,
        *,
        axes: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """Reverse the order of elements along ``axes`` (all axes when None)."""
        where = self._begin("reverse", label)
        self._operand(where, input, "input")
        chosen = tuple(range(input.rank)) if axes is None else where.axes(axes, input.rank)
        return self._one(where, [input], {"axes": chosen}, input.data_type, input.shape)

    def triangular(
        self,
        input: MLOperand,
        *,
        upper: bool = True,
        diagonal: int = 0,
        label: str = "",
    ) -> MLOperand:
        """Keep the upper (or lower) triangle of the last two axes, from ``diagonal`` on."""
        where = self._begin("triangular", label)
        self._operand(where, input, "input")
        attrs = {
            "upper": where.boolean(upper, "upper"),
            "diagonal": where.int32(diagonal, "diagonal"),
        }
        return self._one(where, [input], attrs, input.data_type, input.shape)

    def where(
        self,
        condition: MLOperand,
        true_value: MLOperand,
        false_value: MLOperand,
        *,
        label: str = "",
    ) -> MLOperand:
        """true_value where condition != 0 else false_value, all three broadcasting together."""
        where = self._begin("where", label)
        self._operand(where, condition, "condition")
        self._operand(where, true_value, "true_value")
        self._operand(where, false_value, "false_value")
        self._same_type(where, true_value, "false_value", false_value)
        shape = broadcast_shapes(
            where, true_value.shape, false_value.shape, "true_value and false_value"
        )
        shape = broadcast_shapes(where, condition.shape, shape, "condition and the values")
        return self._one(
            where, [condition, true_value, false_value], {}, true_value.data_type, shape
        )

    # ------------------------------------------------------------------ gather / scatter

    def gather(
        self,
        input: MLOperand,
        indices: MLOperand,
        *,
        axis: int = 0,
        label: str = "",
    ) -> MLOperand:
        """Take slices of ``input`` along ``axis`` at ``indices``.

        Indices in [-size, size - 1] count from the end when negative; indices outside that
        range are clamped into it (the spec leaves them implementation-defined, and reading
        out of bounds must never happen).
        """
        where = self._begin("gather", label)
        self._operand(where, input, "input")
        self._operand(where, indices, "indices")
        axis = where.axis(axis, input.rank)
        shape = input.shape[:axis] + indices.shape + input.shape[axis + 1 :]
        return self._one(where, [input, indices], {"axis": axis}, input.data_type, shape)

    def gather_elements(
        self,
        input: MLOperand,
        indices: MLOperand,
        *,
        axis: int = 0,
        label: str = "",
    ) -> MLOperand:
        """output[i][j][k] = input[indices[i][j][k]][j][k] (for axis 0); indices clamp as in
        gather."""
        where = self._begin("gather_elements", label)
        self._operand(where, input, "input")
        self._operand(where, indices, "indices")
        axis = where.axis(axis, input.rank)
        if indices.rank != input.rank:
            raise where.error(f"indices has rank {indices.rank}, the input rank {input.rank}")
        for dim in range(input.rank):
            if dim != axis and indices.shape[dim] != input.shape[dim]:
                raise where.error(
                    f"indices shape {list(indices.shape)} differs from the input shape "
                    f"{list(input.shape)} on axis {dim}"
                )
        return self._one(where, [input, indices], {"axis": axis}, input.data_type, indices.shape)

    def gather_nd(self, input: MLOperand, indices: MLOperand, *, label: str = "") -> MLOperand:
        """Gather slices addressed by the last axis of ``indices``; indices clamp as in gather."""
        where = self._begin("gather_nd", label)
        self._operand(where, input, "input")
        self._operand(where, indices, "indices")
        depth = indices.shape[-1]
        if depth > input.rank:
            raise where.error(f"indices address {depth} axes but the input has rank {input.rank}")
        shape = indices.shape[:-1] + input.shape[depth:]
        return self._one(where, [input, indices], {}, input.data_type, shape)

    def scatter_elements(
        self,
        input: MLOperand,
        indices: MLOperand,
        updates: MLOperand,
        *,
        axis: int = 0,
        label: str = "",
    ) -> MLOperand:
        """A copy of ``input`` with ``updates`` written at ``indices`` along ``axis``.

        Indices clamp as in gather; when two updates hit one element, which one wins is
        unspecified (as in the spec)."""
        where = self._begin("scatter_elements", label)
        self._operand(where, input, "input")
        self._operand(where, indices, "indices")
        self._operand(where, updates, "updates")
        self._same_type(where, input, "updates", updates)
        axis = where.axis(axis, input.rank)
        if indices.shape != updates.shape:
            raise where.error(
                f"indices shape {list(indices.shape)} differs from updates shape "
                f"{list(updates.shape)}"
            )
        if indices.rank != input.rank:
            raise where.error(f"indices has rank {indices.rank}, the input rank {input.rank}")
        for dim in range(input.rank):
            if dim != axis and indices.shape[dim] != input.shape[dim]:
                raise where.error(
                    f"indices shape {list(indices.shape)} differs from the input shape "
                    f"{list(input.shape)} on axis {dim}"
                )
        return self._one(
            where, [input, indices, updates], {"axis": axis}, input.data_type, input.shape
        )

    def scatter_nd(
        self,
        input: MLOperand,
        indices: MLOperand,
        updates: MLOperand,
        *,
        reduction: str = "none",
        label: str = "",
    ) -> MLOperand:
        """A copy of ``input`` with slices of ``updates`` written where ``indices`` address.

        ``reduction`` (an extension; the spec writes only) "add" adds every update to what is
        there instead, repeated indices adding up: the gradient of gather in one op, where
        the spec's scatter would need a one-hot matrix product over the whole table. It takes
        float32, int32, int64, int8 and uint8 (integers wrap)."""
        where = self._begin("scatter_nd", label)
        self._operand(where, input, "input")
        self._operand(where, indices, "indices")
        self._operand(where, updates, "updates")
        self._same_type(where, input, "updates", updates)
        if reduction not in ("none", "add"):
            raise where.error(f"reduction must be 'none' or 'add', got {reduction!r}")
        if reduction == "add" and input.data_type not in _SCATTER_ADD_TYPES:
            raise where.error(
                f"reduction 'add' takes {', '.join(sorted(_SCATTER_ADD_TYPES))}, not "
                f"{input.data_type}"
            )
        depth = indices.shape[-1]
        if depth > input.rank:
            raise where.error(f"indices address {depth} axes but the input has rank {input.rank}")
        expected = indices.shape[:-1] + input.shape[depth:]
        self._shape_is(where, updates, "updates", expected)
        attrs = {"reduction": reduction} if reduction != "none" else {}
        return self._one(where, [input, indices, updates], attrs, input.data_type, input.shape)

    # ================================================================== matrix

    def matmul(self, a: MLOperand, b: MLOperand, *, label: str = "") -> MLOperand:
        """Matrix product over the last two axes, broadcasting the leading (batch) axes."""
        where = self._begin("matmul", label)
        self._operand(where, a, "a")
        self._operand(where, b, "b")
        if a.data_type != b.data_type:
            raise where.error(f"a is {a.data_type} but b is {b.data_type}; they must match")
        if a.shape[-1] != b.shape[-2]:
            raise where.error(
                f"a {list(a.shape)} and b {list(b.shape)}: the inner sizes {a.shape[-1]} and "
                f"{b.shape[-2]} differ"
            )
        batch = broadcast_shapes(where, a.shape[:-2], b.shape[:-2], "the batch axes of a and b")
        shape = (*batch, a.shape[-2], b.shape[-1])
        return self._one(where, [a, b], {}, a.data_type, shape)

    def gemm(
        self,
        a: MLOperand,
        b: MLOperand,
        *,
        c: MLOperand | None = None,
        alpha: float = 1.0,
        beta: float = 1.0,
        a_transpose: bool = False,
        b_transpose: bool = False,
        label: str = "",
    ) -> MLOperand:
        """alpha * op(a) @ op(b) + beta * c, with op transposing when asked."""
        where = self._begin("gemm", label)
        self._operand(where, a, "a")
        self._operand(where, b, "b")
        c = self._optional(where, c, "c")
        self._same_type(where, a, "b", b)
        self._same_type(where, a, "c", c)
        a_t = where.boolean(a_transpose, "a_transpose")
        b_t = where.boolean(b_transpose, "b_transpose")
        m, k = (a.shape[1], a.shape[0]) if a_t else a.shape
        k2, n = (b.shape[1], b.shape[0]) if b_t else b.shape
        if k != k2:
            raise where.error(
                f"the inner sizes of a {list(a.shape)} and b {list(b.shape)} differ ({k} vs {k2})"
            )
        if c is not None:
            unidirectional(where, c.shape, (m, n), "c")
        attrs = {
            "alpha": where.finite(alpha, "alpha"),
            "beta": where.finite(beta, "beta"),
            "a_transpose": a_t,
            "b_transpose": b_t,
        }
        return self._one(where, [a, b, c], attrs, a.data_type, (m, n))

    # ================================================================== convolution and pooling

    def _spatial(
        self,
        where: Where,
        padding: Sequence[int] | None,
        strides: Sequence[int] | None,
        dilations: Sequence[int] | None,
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        pads = (0, 0, 0, 0) if padding is None else where.uint_list(padding, "padding", length=4)
        step = (
            (1, 1) if strides is None else where.uint_list(strides, "strides", length=2, minimum=1)
        )
        dil = (
            (1, 1)
            if dilations is None
            else where.uint_list(dilations, "dilations", length=2, minimum=1)
        )
        return pads, step, dil

    def conv2d(
        self,
        input: MLOperand,
        filter: MLOperand,
        *,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        groups: int = 1,
        input_layout: str = "nchw",
        filter_layout: str = "oihw",
        bias: MLOperand | None = None,
        label: str = "",
    ) -> MLOperand:
        """2-D convolution. ``padding`` is [top, bottom, left, right]; layouts per the spec."""
        where = self._begin("conv2d", label)
        self._operand(where, input, "input")
        self._operand(where, filter, "filter")
        bias = self._optional(where, bias, "bias")
        self._same_type(where, input, "filter", filter)
        self._same_type(where, input, "bias", bias)
        pads, step, dil = self._spatial(where, padding, strides, dilations)
        groups = where.uint(groups, "groups", minimum=1)
        in_layout = where.choice(input_layout, "input_layout", _LAYOUTS)
        f_layout = where.choice(filter_layout, "filter_layout", ("oihw", "hwio", "ohwi", "ihwo"))
        if in_layout == "nchw":
            n, c, h, w = input.shape
        else:
            n, h, w, c = input.shape
        f = filter.shape
        out_c, in_c, kh, kw = {
            "oihw": (f[0], f[1], f[2], f[3]),
            "hwio": (f[3], f[2], f[0], f[1]),
            "ohwi": (f[0], f[3], f[1], f[2]),
            "ihwo": (f[3], f[0], f[1], f[2]),
        }[f_layout]
        if c % groups or c // groups != in_c:
            raise where.error(
                f"the input has {c} channels, which with groups={groups} does not match the "
                f"filter's {in_c} input channels (filter {list(f)}, {f_layout})"
            )
        if out_c % groups:
            raise where.error(
                f"the filter's {out_c} output channels are not divisible by groups={groups}"
            )
        if bias is not None:
            self._shape_is(where, bias, "bias", (out_c,))
        oh = self._conv_size(where, h, kh, pads[0], pads[1], step[0], dil[0], "height")
        ow = self._conv_size(where, w, kw, pads[2], pads[3], step[1], dil[1], "width")
        shape = (n, out_c, oh, ow) if in_layout == "nchw" else (n, oh, ow, out_c)
        attrs = {
            "padding": pads,
            "strides": step,
            "dilations": dil,
            "groups": groups,
            "input_layout": in_layout,
            "filter_layout": f_layout,
        }
        return self._one(where, [input, filter, bias], attrs, input.data_type, shape)

    @staticmethod
    def _conv_size(
        where: Where,
        size: int,
        kernel: int,
        begin: int,
        end: int,
        stride: int,
        dilation: int,
        axis: str,
    ) -> int:
        span = (kernel - 1) * dilation + 1
        padded = size + begin + end
        if padded < span:
            raise where.error(
                f"the dilated window {span} is larger than the padded {axis} {padded}"
            )
        return (padded - span) // stride + 1

    def conv_transpose2d(
        self,
        input: MLOperand,
        filter: MLOperand,
        *,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        output_padding: Sequence[int] | None = None,
        output_sizes: Sequence[int] | None = None,
        groups: int = 1,
        input_layout: str = "nchw",
        filter_layout: str = "iohw",
        bias: MLOperand | None = None,
        label: str = "",
    ) -> MLOperand:
        """2-D transposed convolution; ``output_sizes`` (when given) overrides
        ``output_padding``."""
        where = self._begin("conv_transpose2d", label)
        self._operand(where, input, "input")
        self._operand(where, filter, "filter")
        bias = self._optional(where, bias, "bias")
        self._same_type(where, input, "filter", filter)
        self._same_type(where, input, "bias", bias)
        pads, step, dil = self._spatial(where, padding, strides, dilations)
        groups = where.uint(groups, "groups", minimum=1)
        in_layout = where.choice(input_layout, "input_layout", _LAYOUTS)
        f_layout = where.choice(filter_layout, "filter_layout", ("iohw", "hwoi", "ohwi"))
        out_pad = (
            (0, 0)
            if output_padding is None
            else where.uint_list(output_padding, "output_padding", length=2)
        )
        for i in range(2):
            if out_pad[i] >= step[i]:
                raise where.error(
                    f"output_padding {list(out_pad)} must be smaller than strides {list(step)}"
                )
        if in_layout == "nchw":
            n, c, h, w = input.shape
        else:
            n, h, w, c = input.shape
        f = filter.shape
        in_c, out_per_group, kh, kw = {
            "iohw": (f[0], f[1], f[2], f[3]),
            "hwoi": (f[3], f[2], f[0], f[1]),
            "ohwi": (f[3], f[0], f[1], f[2]),
        }[f_layout]
        if c != in_c:
            raise where.error(
                f"the input has {c} channels but the filter {list(f)} ({f_layout}) expects {in_c}"
            )
        if c % groups:
            raise where.error(f"the input's {c} channels are not divisible by groups={groups}")
        out_c = out_per_group * groups
        if bias is not None:
            self._shape_is(where, bias, "bias", (out_c,))
        base = []
        for axis, (size, kernel, b, e, s, d) in enumerate(
            [(h, kh, pads[0], pads[1], step[0], dil[0]), (w, kw, pads[2], pads[3], step[1], dil[1])]
        ):
            full = (size - 1) * s + (kernel - 1) * d + 1
            if full <= b + e:
                raise where.error(
                    f"padding {list(pads)} removes the whole output along spatial axis {axis}"
                )
            base.append(full - b - e)
        if output_sizes is not None:
            sizes = where.uint_list(output_sizes, "output_sizes", length=2, minimum=1)
            for i in range(2):
                if not base[i] <= sizes[i] < base[i] + step[i]:
                    raise where.error(
                        f"output_sizes {list(sizes)}: size {sizes[i]} must be in "
                        f"[{base[i]}, {base[i] + step[i] - 1}] for these strides and padding"
                    )
            out_pad = (sizes[0] - base[0], sizes[1] - base[1])
        oh, ow = base[0] + out_pad[0], base[1] + out_pad[1]
        shape = (n, out_c, oh, ow) if in_layout == "nchw" else (n, oh, ow, out_c)
        attrs = {
            "padding": pads,
            "strides": step,
            "dilations": dil,
            "output_padding": out_pad,
            "groups": groups,
            "input_layout": in_layout,
            "filter_layout": f_layout,
        }
        return self._one(where, [input, filter, bias], attrs, input.data_type, shape)

    def _pool(
        self,
        op: str,
        input: MLOperand,
        window_dimensions: Sequence[int] | None,
        padding: Sequence[int] | None,
        strides: Sequence[int] | None,
        dilations: Sequence[int] | None,
        layout: str,
        output_shape_rounding: str,
        output_sizes: Sequence[int] | None,
        label: str,
    ) -> MLOperand:
        where = self._begin(op, label)
        self._operand(where, input, "input")
        lay = where.choice(layout, "layout", _LAYOUTS)
        if lay == "nchw":
            n, c, h, w = input.shape
        else:
            n, h, w, c = input.shape
        window = (
            (h, w)
            if window_dimensions is None
            else where.uint_list(window_dimensions, "window_dimensions", length=2, minimum=1)
        )
        pads, step, dil = self._spatial(where, padding, strides, dilations)
        rounding = where.choice(output_shape_rounding, "output_shape_rounding", ("floor", "ceil"))
        exact = []
        for axis, (size, k, b, e, s, d) in enumerate(
            [
                (h, window[0], pads[0], pads[1], step[0], dil[0]),
                (w, window[1], pads[2], pads[3], step[1], dil[1]),
            ]
        ):
            span = (k - 1) * d + 1
            padded = size + b + e
            if padded < span:
                raise where.error(
                    f"the dilated window {span} is larger than the padded spatial axis "
                    f"{axis} ({padded})"
                )
            exact.append((padded - span) / s + 1)
        floors = tuple(math.floor(x) for x in exact)
        ceils = tuple(math.ceil(x) for x in exact)
        if output_sizes is not None:
            sizes = where.uint_list(output_sizes, "output_sizes", length=2, minimum=1)
            for i in range(2):
                if sizes[i] not in (floors[i], ceils[i]):
                    raise where.error(
                        f"output_sizes {list(sizes)}: size {sizes[i]} must be {floors[i]} or "
                        f"{ceils[i]} for this window, padding and strides"
                    )
            out = sizes
        else:
            out = floors if rounding == "floor" else ceils
        shape = (n, c, out[0], out[1]) if lay == "nchw" else (n, out[0], out[1], c)
        attrs = {
            "window": window,
            "padding": pads,
            "strides": step,
            "dilations": dil,
            "layout": lay,
            "output": tuple(out),
        }
        return self._one(where, [input], attrs, input.data_type, shape)

    def average_pool2d(
        self,
        input: MLOperand,
        *,
        window_dimensions: Sequence[int] | None = None,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        layout: str = "nchw",
        output_shape_rounding: str = "floor",
        output_sizes: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """Mean over each window (padding is not counted)."""
        return self._pool(
            "average_pool2d", input, window_dimensions, padding, strides, dilations,
            layout, output_shape_rounding, output_sizes, label,
        )  # fmt: skip

    def l2_pool2d(
        self,
        input: MLOperand,
        *,
        window_dimensions: Sequence[int] | None = None,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        layout: str = "nchw",
        output_shape_rounding: str = "floor",
        output_sizes: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """sqrt(sum(x ** 2)) over each window."""
        return self._pool(
            "l2_pool2d", input, window_dimensions, padding, strides, dilations,
            layout, output_shape_rounding, output_sizes, label,
        )  # fmt: skip

    def max_pool2d(
        self,
        input: MLOperand,
        *,
        window_dimensions: Sequence[int] | None = None,
        padding: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        dilations: Sequence[int] | None = None,
        layout: str = "nchw",
        output_shape_rounding: str = "floor",
        output_sizes: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """Maximum over each window."""
        return self._pool(
            "max_pool2d", input, window_dimensions, padding, strides, dilations,
            layout, output_shape_rounding, output_sizes, label,
        )  # fmt: skip

    def resample2d(
        self,
        input: MLOperand,
        *,
        mode: str = "nearest-neighbor",
        scales: Sequence[float] | None = None,
        sizes: Sequence[int] | None = None,
        axes: Sequence[int] | None = None,
        label: str = "",
    ) -> MLOperand:
        """Resize two axes (default [2, 3]) by ``scales`` or to ``sizes`` (``sizes`` wins)."""
        where = self._begin("resample2d", label)
        self._operand(where, input, "input")
        mode = where.choice(mode, "mode", ("nearest-neighbor", "linear"))
        chosen = (2, 3) if axes is None else where.axes(axes, input.rank)
        if len(chosen) != 2:
            raise where.error(f"axes must hold 2 axes, got {list(chosen)}")
        factors: tuple[float, ...] = (1.0, 1.0)
        if scales is not None:
            factors = tuple(where.finite(s, "scales") for s in scales)
            if len(factors) != 2 or any(s <= 0 for s in factors):
                raise where.error(f"scales must be 2 positive numbers, got {list(scales)}")
        shape = list(input.shape)
        if sizes is not None:
            target = where.uint_list(sizes, "sizes", length=2, minimum=1)
            for axis, size in zip(chosen, target, strict=True):
                shape[axis] = size
        else:
            for axis, factor in zip(chosen, factors, strict=True):
                size = math.floor(input.shape[axis] * factor)
                if size < 1:
                    raise where.error(
                        f"scale {factor} shrinks axis {axis} of size {input.shape[axis]} to nothing"
                    )
                shape[axis] = where.uint(size, f"the resampled size of axis {axis}")
        attrs = {"mode": mode, "axes": chosen, "scales": factors if sizes is None else None}
        return self._one(where, [input], attrs, input.data_type, shape)

    # ================================================================== normalization

    def batch_normalization(
        self,
        input: MLOperand,
        mean: MLOperand,
        variance: MLOperand,
        *,
        scale: MLOperand | None = None,
        bias: MLOperand | None = None,
        axis: int = 1,
        epsilon: float = 1e-5,
        label: str = "",
    ) -> MLOperand:
        """scale * (x - mean) / sqrt(variance + epsilon) + bias along ``axis`` (1-D operands)."""
        where = self._begin("batch_normalization", label)
        self._operand(where, input, "input")
        self._operand(where, mean, "mean")
        self._operand(where, variance, "variance")
        scale = self._optional(where, scale, "scale")
        bias = self._optional(where, bias, "bias")
        self._same_type(where, input, "mean, variance, scale, bias", mean, variance, scale, bias)
        axis = where.axis(axis, input.rank)
        size = (input.shape[axis],)
        for name, operand in (
            ("mean", mean),
            ("variance", variance),
            ("scale", scale),
            ("bias", bias),
        ):
            self._shape_is(where, operand, name, size)
        attrs = {"axis": axis, "epsilon": where.finite(epsilon, "epsilon")}
        return self._one(
            where, [input, mean, variance, scale, bias], attrs, input.data_type, input.shape
        )

    def instance_normalization(
        self,
        input: MLOperand,
        *,
        scale: MLOperand | None = None,
        bias: MLOperand | None = None,
        epsilon: float = 1e-5,
        layout: str = "nchw",
        label: str = "",
    ) -> MLOperand:
        """Normalize each (batch, channel) plane over its spatial axes."""
        where = self._begin("instance_normalization", label)
        self._operand(where, input, "input")
        scale = self._optional(where, scale, "scale")
        bias = self._optional(where, bias, "bias")
        self._same_type(where, input, "scale, bias", scale, bias)
        lay = where.choice(layout, "layout", _LAYOUTS)
        channels = input.shape[1] if lay == "nchw" else input.shape[3]
        self._shape_is(where, scale, "scale", (channels,))
        self._shape_is(where, bias, "bias", (channels,))
        attrs = {"epsilon": where.finite(epsilon, "epsilon"), "layout": lay}
        return self._one(where, [input, scale, bias], attrs, input.data_type, input.shape)

    def layer_normalization(
        self,
        input: MLOperand,
        *,
        scale: MLOperand | None = None,
        bias: MLOperand | None = None,
        axes: Sequence[int] | None = None,
        epsilon: float = 1e-5,
        label: str = "",
    ) -> MLOperand:
        """Normalize over ``axes`` (default: every axis but the first); scale/bias have the
        sizes of those axes, in the order given."""
        where = self._begin("layer_normalization", label)
        self._operand(where, input, "input")
        scale = self._optional(where, scale, "scale")
        bias = self._optional(where, bias, "bias")
        self._same_type(where, input, "scale, bias", scale, bias)
        chosen = tuple(range(1, input.rank)) if axes is None else where.axes(axes, input.rank)
        expected = tuple(input.shape[a] for a in chosen)
        self._shape_is(where, scale, "scale", expected)
        self._shape_is(where, bias, "bias", expected)
        attrs = {"axes": chosen, "epsilon": where.finite(epsilon, "epsilon")}
        return self._one(where, [input, scale, bias], attrs, input.data_type, input.shape)

    # ================================================================== quantization

    def _quantization_params(
        self, where: Where, input: MLOperand, scale: MLOperand, zero_point: MLOperand
    ) -> None:
        if scale.shape != zero_point.shape:
            raise where.error(
                f"scale {list(scale.shape)} and zero_point {list(zero_point.shape)} must have "
                "the same shape"
            )
        if scale.rank > input.rank:
            raise where.error(
                f"scale has rank {scale.rank}, higher than the input rank {input.rank}"
            )
        padded = (1,) * (input.rank - scale.rank) + scale.shape
        for axis, (size, block) in enumerate(zip(input.shape, padded, strict=True)):
            if size % block:
                raise where.error(
                    f"scale {list(scale.shape)} does not tile the input {list(input.shape)}: "
                    f"axis {axis} of size {size} is not a multiple of {block}"
                )

    def dequantize_linear(
        self,
        input: MLOperand,
        scale: MLOperand,
        zero_point: MLOperand,
        *,
        label: str = "",
    ) -> MLOperand:
        """(input - zero_point) * scale; scale/zero_point repeat over blocks of the input."""
        where = self._begin("dequantize_linear", label)
        self._operand(where, input, "input")
        self._operand(where, scale, "scale")
        self._operand(where, zero_point, "zero_point")
        self._same_type(where, input, "zero_point", zero_point)
        self._quantization_params(where, input, scale, zero_point)
        return self._one(where, [input, scale, zero_point], {}, scale.data_type, input.shape)

    def quantize_linear(
        self,
        input: MLOperand,
        scale: MLOperand,
        zero_point: MLOperand,
        *,
        label: str = "",
    ) -> MLOperand:
        """saturate(round_even(input / scale) + zero_point) in zero_point's data type."""
        where = self._begin("quantize_linear", label)
        self._operand(where, input, "input")
        self._operand(where, scale, "scale")
        self._operand(where, zero_point, "zero_point")
        self._same_type(where, input, "scale", scale)
        self._quantization_params(where, input, scale, zero_point)
        return self._one(where, [input, scale, zero_point], {}, zero_point.data_type, input.shape)

    # ================================================================== recurrent networks

    def _activations(
        self, where: Where, activations: Sequence[str] | None, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        if activations is None:
            return default
        if isinstance(activations, str) or not isinstance(activations, Sequence):
            raise where.error(f"activations must be a sequence of names, got {activations!r}")
        chosen = tuple(where.choice(a, "activations", _RECURRENT_ACTIVATIONS) for a in activations)
        if len(chosen) != len(default):
            raise where.error(f"activations must hold {len(default)} names, got {list(chosen)}")
        return chosen

    def _recurrent_common(
        self,
        where: Where,
        input: MLOperand,
        weight: MLOperand,
        recurrent_weight: MLOperand,
        steps: int,
        hidden_size: int,
        gates: int,
        direction: str,
    ) -> tuple[int, int, int, int, int]:
        steps = where.uint(steps, "steps", minimum=1)
        hidden = where.uint(hidden_size, "hidden_size", minimum=1)
        where.uint(gates * hidden, f"{gates} * hidden_size")
        direction = where.choice(direction, "direction", _DIRECTIONS)
        dirs = 2 if direction == "both" else 1
        if input.shape[0] != steps:
            raise where.error(f"input {list(input.shape)} does not hold {steps} steps")
        batch, input_size = input.shape[1], input.shape[2]
        self._shape_is(where, weight, "weight", (dirs, gates * hidden, input_size))
        self._shape_is(where, recurrent_weight, "recurrent_weight", (dirs, gates * hidden, hidden))
        return steps, hidden, dirs, batch, input_size

    def gru(
        self,
        input: MLOperand,
        weight: MLOperand,
        recurrent_weight: MLOperand,
        steps: int,
        hidden_size: int,
        *,
        bias: MLOperand | None = None,
        recurrent_bias: MLOperand | None = None,
        initial_hidden_state: MLOperand | None = None,
        reset_after: bool = True,
        return_sequence: bool = False,
        direction: str = "forward",
        layout: str = "zrn",
        activations: Sequence[str] | None = None,
        label: str = "",
    ) -> list[MLOperand]:
        """Gated recurrent unit over ``steps`` steps.

        Returns [final hidden state [directions, batch, hidden]] and, with ``return_sequence``,
        the hidden state of every step [steps, directions, batch, hidden].
        """
        where = self._begin("gru", label)
        for name, operand in (
            ("input", input),
            ("weight", weight),
            ("recurrent_weight", recurrent_weight),
        ):
            self._operand(where, operand, name)
        bias = self._optional(where, bias, "bias")
        recurrent_bias = self._optional(where, recurrent_bias, "recurrent_bias")
        initial = self._optional(where, initial_hidden_state, "initial_hidden_state")
        self._same_type(
            where, input, "weight, recurrent_weight, bias, recurrent_bias, initial_hidden_state",
            weight, recurrent_weight, bias, recurrent_bias, initial,
        )  # fmt: skip
        steps, hidden, dirs, batch, _ = self._recurrent_common(
            where, input, weight, recurrent_weight, steps, hidden_size, 3, direction
        )
        self._shape_is(where, bias, "bias", (dirs, 3 * hidden))
        self._shape_is(where, recurrent_bias, "recurrent_bias", (dirs, 3 * hidden))
        self._shape_is(where, initial, "initial_hidden_state", (dirs, batch, hidden))
        sequence = where.boolean(return_sequence, "return_sequence")
        attrs = {
            "hidden_size": hidden,
            "reset_after": where.boolean(reset_after, "reset_after"),
            "return_sequence": sequence,
            "direction": direction,
            "layout": where.choice(layout, "layout", ("zrn", "rzn")),
            "activations": self._activations(where, activations, ("sigmoid", "tanh")),
        }
        outputs = [_desc(input.data_type, (dirs, batch, hidden))]
        if sequence:
            outputs.append(_desc(input.data_type, (steps, dirs, batch, hidden)))
        inputs = [input, weight, recurrent_weight, bias, recurrent_bias, initial]
        return list(self._add(where, inputs, attrs, outputs))

    def gru_cell(
        self,
        input: MLOperand,
        weight: MLOperand,
        recurrent_weight: MLOperand,
        hidden_state: MLOperand,
        hidden_size: int,
        *,
        bias: MLOperand | None = None,
        recurrent_bias: MLOperand | None = None,
        reset_after: bool = True,
        layout: str = "zrn",
        activations: Sequence[str] | None = None,
        label: str = "",
    ) -> MLOperand:
        """One GRU step: the new hidden state [batch, hidden]."""
        where = self._begin("gru_cell", label)
        for name, operand in (
            ("input", input), ("weight", weight), ("recurrent_weight", recurrent_weight),
            ("hidden_state", hidden_state),
        ):  # fmt: skip
            self._operand(where, operand, name)
        bias = self._optional(where, bias, "bias")
        recurrent_bias = self._optional(where, recurrent_bias, "recurrent_bias")
        self._same_type(
            where, input, "weight, recurrent_weight, hidden_state, bias, recurrent_bias",
            weight, recurrent_weight, hidden_state, bias, recurrent_bias,
        )  # fmt: skip
        hidden = where.uint(hidden_size, "hidden_size", minimum=1)
        where.uint(3 * hidden, "3 * hidden_size")
        batch, input_size = input.shape
        self._shape_is(where, weight, "weight", (3 * hidden, input_size))
        self._shape_is(where, recurrent_weight, "recurrent_weight", (3 * hidden, hidden))
        self._shape_is(where, hidden_state, "hidden_state", (batch, hidden))
        self._shape_is(where, bias, "bias", (3 * hidden,))
        self._shape_is(where, recurrent_bias, "recurrent_bias", (3 * hidden,))
        attrs = {
            "hidden_size": hidden,
            "reset_after": where.boolean(reset_after, "reset_after"),
            "layout": where.choice(layout, "layout", ("zrn", "rzn")),
            "activations": self._activations(where, activations, ("sigmoid", "tanh")),
        }
        inputs = [input, weight, recurrent_weight, hidden_state, bias, recurrent_bias]
        return self._one(where, inputs, attrs, input.data_type, (batch, hidden))

    def lstm(
        self,
        input: MLOperand,
        weight: MLOperand,
        recurrent_weight: MLOperand,
        steps: int,
        hidden_size: int,
        *,
        bias: MLOperand | None = None,
        recurrent_bias: MLOperand | None = None,
        peephole_weight: MLOperand | None = None,
        initial_hidden_state: MLOperand | None = None,
        initial_cell_state: MLOperand | None = None,
        return_sequence: bool = False,
        direction: str = "forward",
        layout: str = "iofg",
        activations: Sequence[str] | None = None,
        label: str = "",
    ) -> list[MLOperand]:
        """Long short-term memory over ``steps`` steps.

        Returns [final hidden state, final cell state] (each [directions, batch, hidden]) and,
        with ``return_sequence``, every step's hidden state [steps, directions, batch, hidden].
        """
        where = self._begin("lstm", label)
        for name, operand in (
            ("input", input),
            ("weight", weight),
            ("recurrent_weight", recurrent_weight),
        ):
            self._operand(where, operand, name)
        bias = self._optional(where, bias, "bias")
        recurrent_bias = self._optional(where, recurrent_bias, "recurrent_bias")
        peephole = self._optional(where, peephole_weight, "peephole_weight")
        initial_h = self._optional(where, initial_hidden_state, "initial_hidden_state")
        initial_c = self._optional(where, initial_cell_state, "initial_cell_state")
        self._same_type(
            where, input,
            "weight, recurrent_weight, bias, recurrent_bias, peephole_weight, "
            "initial_hidden_state, initial_cell_state",
            weight, recurrent_weight, bias, recurrent_bias, peephole, initial_h, initial_c,
        )  # fmt: skip
        steps, hidden, dirs, batch, _ = self._recurrent_common(
            where, input, weight, recurrent_weight, steps, hidden_size, 4, direction
        )
        self._shape_is(where, bias, "bias", (dirs, 4 * hidden))
        self._shape_is(where, recurrent_bias, "recurrent_bias", (dirs, 4 * hidden))
        self._shape_is(where, peephole, "peephole_weight", (dirs, 3 * hidden))
        self._shape_is(where, initial_h, "initial_hidden_state", (dirs, batch, hidden))
        self._shape_is(where, initial_c, "initial_cell_state", (dirs, batch, hidden))
        sequence = where.boolean(return_sequence, "return_sequence")
        attrs = {
            "hidden_size": hidden,
            "return_sequence": sequence,
            "direction": direction,
            "layout": where.choice(layout, "layout", ("iofg", "ifgo")),
            "activations": self._activations(where, activations, ("sigmoid", "tanh", "tanh")),
        }
        outputs = [_desc(input.data_type, (dirs, batch, hidden))] * 2
        if sequence:
            outputs.append(_desc(input.data_type, (steps, dirs, batch, hidden)))
        inputs = [
            input,
            weight,
            recurrent_weight,
            bias,
            recurrent_bias,
            peephole,
            initial_h,
            initial_c,
        ]
        return list(self._add(where, inputs, attrs, outputs))

    def lstm_cell(
        self,
        input: MLOperand,
        weight: MLOperand,
        recurrent_weight: MLOperand,
        hidden_state: MLOperand,
        cell_state: MLOperand,
        hidden_size: int,
        *,
        bias: MLOperand | None = None,
        recurrent_bias: MLOperand | None = None,
        peephole_weight: MLOperand | None = None,
        layout: str = "iofg",
        activations: Sequence[str] | None = None,
        label: str = "",
    ) -> list[MLOperand]:
        """One LSTM step: [new hidden state, new cell state], each [batch, hidden]."""
        where = self._begin("lstm_cell", label)
        for name, operand in (
            ("input", input), ("weight", weight), ("recurrent_weight", recurrent_weight),
            ("hidden_state", hidden_state), ("cell_state", cell_state),
        ):  # fmt: skip
            self._operand(where, operand, name)
        bias = self._optional(where, bias, "bias")
        recurrent_bias = self._optional(where, recurrent_bias, "recurrent_bias")
        peephole = self._optional(where, peephole_weight, "peephole_weight")
        self._same_type(
            where, input,
            "weight, recurrent_weight, hidden_state, cell_state, "
            "bias, recurrent_bias, peephole_weight",
            weight, recurrent_weight, hidden_state, cell_state, bias, recurrent_bias, peephole,
        )  # fmt: skip
        hidden = where.uint(hidden_size, "hidden_size", minimum=1)
        where.uint(4 * hidden, "4 * hidden_size")
        batch, input_size = input.shape
        self._shape_is(where, weight, "weight", (4 * hidden, input_size))
        self._shape_is(where, recurrent_weight, "recurrent_weight", (4 * hidden, hidden))
        self._shape_is(where, hidden_state, "hidden_state", (batch, hidden))
        self._shape_is(where, cell_state, "cell_state", (batch, hidden))
        self._shape_is(where, bias, "bias", (4 * hidden,))
        self._shape_is(where, recurrent_bias, "recurrent_bias", (4 * hidden,))
        self._shape_is(where, peephole, "peephole_weight", (3 * hidden,))
        attrs = {
            "hidden_size": hidden,
            "layout": where.choice(layout, "layout", ("iofg", "ifgo")),
            "activations": self._activations(where, activations, ("sigmoid", "tanh", "tanh")),
        }
        inputs = [
            input,
            weight,
            recurrent_weight,
            hidden_state,
            cell_state,
            bias,
            recurrent_bias,
            peephole,
        ]
        outputs = [_desc(input.data_type, (batch, hidden))] * 2
        return list(self._add(where, inputs, attrs, outputs))


_LOGICAL = frozenset({"logical_and", "logical_or", "logical_xor"})
