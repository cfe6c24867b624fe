"""MLContext, MLTensor and MLGraph: the runtime half of the WebNN API, on ONNX Runtime.

A context owns its execution providers (chosen from its options and what onnxruntime
offers). A graph owns one InferenceSession, created when the builder builds it. Tensors
own one OrtValue each for their whole life: on the CPU it shares memory with a numpy array,
so writing, dispatching and reading copy nothing but the caller's data; on a CUDA/ROCm
context the OrtValue lives in device memory and stays there between dispatches.

Dispatch is synchronous: when ``dispatch()`` returns, the outputs hold the results.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import WebNNInvalidStateError, WebNNOperationError, WebNNValidationError
from ipfs_accelerate.webnn._limits import op_support_limits
from ipfs_accelerate.webnn._onnx import LoweredModel
from ipfs_accelerate.webnn._operand import INPUT, OUTPUT, MLOperand, Node
from ipfs_accelerate.webnn._types import (
    FOUR_BIT_TYPES,
    MLOperandDescriptor,
    coerce_array,
    numpy_dtype,
    parse_descriptor,
)

__all__ = ["MLContext", "MLGraph", "MLTensor", "create_context"]

POWER_PREFERENCES: Final = ("default", "high-performance", "low-power")
_BINDING_CACHE_SIZE: Final = 8
#: compiled sessions a context keeps for identical rebuilds (least recently used goes first)
_SESSION_CACHE_SIZE: Final = 32


def create_context(
    *,
    power_preference: str = "default",
    accelerated: bool = True,
    execution_providers: Sequence[str] | None = None,
) -> MLContext:
    """Create an MLContext (the spec's ``navigator.ml.createContext(options)``).

    ``power_preference``: "default", "high-performance" (GPU providers first) or "low-power"
    (NPU-style providers first). ``accelerated=False`` keeps everything on the CPU provider.
    ``execution_providers`` (an extension) names onnxruntime providers explicitly.
    onnxruntime is imported here, on first use.
    """
    if power_preference not in POWER_PREFERENCES:
        raise WebNNValidationError(
            f"create_context: power_preference must be one of {', '.join(POWER_PREFERENCES)}, "
            f"got {power_preference!r}"
        )
    if not isinstance(accelerated, bool):
        raise WebNNValidationError(
            f"create_context: accelerated must be a bool, got {accelerated!r}"
        )
    from ipfs_accelerate.webnn._runtime import choose_providers

    providers = choose_providers(power_preference, accelerated, execution_providers)
    return MLContext(power_preference, providers)


class MLContext:
    """A WebNN context: where graphs compile and tensors live. Create it with create_context()."""

    def __init__(self, power_preference: str, providers: list[str]) -> None:
        from ipfs_accelerate.webnn._runtime import DEVICE_OF_PROVIDER

        self._power_preference = power_preference
        self._providers = providers
        self._device = DEVICE_OF_PROVIDER.get(providers[0], "cpu")
        self._destroyed = False
        # bumped whenever a tensor or the context is destroyed: dispatch's cached validations
        # (keyed by tensor identity) hold only for the epoch they were made in
        self._epoch = 0
        self._graphs: weakref.WeakSet[MLGraph] = weakref.WeakSet()
        self._sessions: OrderedDict[
            tuple[bytes, tuple[Any, ...]], tuple[Any, list[Any], list[Any]]
        ] = OrderedDict()
        self._tensors: weakref.WeakSet[MLTensor] = weakref.WeakSet()

    # ------------------------------------------------------------------ attributes

    @property
    def power_preference(self) -> str:
        return self._power_preference

    @property
    def accelerated(self) -> bool:
        """True when an execution provider other than the CPU provider serves this context."""
        return self._providers[0] != "CPUExecutionProvider"

    @property
    def execution_providers(self) -> list[str]:
        """The onnxruntime execution providers of this context, best first."""
        return list(self._providers)

    @property
    def device(self) -> str:
        """Where this context's tensors live: "cpu" or "cuda"."""
        return self._device

    def __repr__(self) -> str:
        state = ", destroyed" if self._destroyed else ""
        return f"MLContext({self._power_preference!r}, providers={self._providers}{state})"

    def _check_alive(self, what: str) -> None:
        if self._destroyed:
            raise WebNNInvalidStateError(f"{what}: the MLContext was destroyed")

    def op_support_limits(self) -> dict[str, Any]:
        """The spec's ``MLOpSupportLimits`` (snake_case keys): for every supported op, the data
        types and rank range of each operand. Ops absent from it are not implemented."""
        return op_support_limits()

    def destroy(self) -> None:
        """Release every graph and tensor of this context; later use raises
        WebNNInvalidStateError."""
        self._destroyed = True
        self._epoch += 1
        self._sessions.clear()
        for graph in list(self._graphs):
            graph.destroy()
        for tensor in list(self._tensors):
            tensor.destroy()

    # ------------------------------------------------------------------ tensors

    def create_tensor(
        self,
        descriptor: Mapping[str, Any] | MLOperandDescriptor,
        *,
        readable: bool | None = None,
        writable: bool | None = None,
    ) -> MLTensor:
        """A zero-filled tensor. ``readable``/``writable`` (also accepted as descriptor keys, as
        in the spec's MLTensorDescriptor) allow ``read_tensor``/``write_tensor`` on it."""
        self._check_alive("create_tensor")
        parsed = parse_descriptor(descriptor, "create_tensor")
        if isinstance(descriptor, Mapping):
            readable = bool(descriptor.get("readable", False)) if readable is None else readable
            writable = bool(descriptor.get("writable", False)) if writable is None else writable
        return MLTensor(
            self, parsed, readable=bool(readable), writable=bool(writable), constant=False
        )

    def create_constant_tensor(
        self, descriptor: Mapping[str, Any] | MLOperandDescriptor, data: object
    ) -> MLTensor:
        """An immutable tensor holding ``data``, usable as a graph constant
        (``builder.constant(t)``)."""
        self._check_alive("create_constant_tensor")
        parsed = parse_descriptor(descriptor, "create_constant_tensor")
        array = coerce_array(data, parsed, "create_constant_tensor")
        tensor = MLTensor(self, parsed, readable=False, writable=False, constant=True)
        tensor._store(array)
        return tensor

    def write_tensor(self, tensor: MLTensor, data: object) -> None:
        """Copy ``data`` (same dtype and element count, or bytes of the tensor's byte length)
        into the tensor."""
        self._own(tensor, "write_tensor")
        if not tensor._writable:
            raise WebNNValidationError("write_tensor: the tensor was created without writable=True")
        tensor._store(coerce_array(data, tensor._descriptor, "write_tensor"))

    def read_tensor(
        self, tensor: MLTensor, out: np.ndarray[Any, Any] | None = None
    ) -> np.ndarray[Any, Any]:
        """The tensor's content as a new numpy array, or copied into ``out`` (same dtype and
        element count) which is then returned."""
        self._own(tensor, "read_tensor")
        if not tensor._readable:
            raise WebNNValidationError("read_tensor: the tensor was created without readable=True")
        data = tensor._load()
        if out is None:
            return data.copy() if tensor._host is not None else data
        if not isinstance(out, np.ndarray) or out.dtype != data.dtype or out.size != data.size:
            raise WebNNValidationError(
                f"read_tensor: out must be a {data.dtype} array of {data.size} elements"
            )
        np.copyto(out.reshape(data.shape), data)
        return out

    def _own(self, tensor: object, what: str) -> MLTensor:
        self._check_alive(what)
        if not isinstance(tensor, MLTensor):
            raise WebNNValidationError(f"{what}: expected an MLTensor, got {type(tensor).__name__}")
        if tensor._context is not self:
            raise WebNNValidationError(f"{what}: the tensor belongs to another MLContext")
        tensor._check_alive(what)
        return tensor

    # ------------------------------------------------------------------ execution

    def dispatch(
        self, graph: MLGraph, inputs: Mapping[str, MLTensor], outputs: Mapping[str, MLTensor]
    ) -> None:
        """Run ``graph`` reading ``inputs`` and writing ``outputs`` (tensors named as the graph's
        inputs and outputs, with their exact data types and shapes). Synchronous.

        The first dispatch with a set of tensors validates them and binds them to the session;
        later dispatches with the same tensors reuse that binding."""
        try:
            key = tuple(map(inputs.__getitem__, graph._input_order)) + tuple(
                map(outputs.__getitem__, graph._output_order)
            )
            entry = graph._bindings.get(key)
        except Exception:  # missing names, non-mappings, destroyed graph: the checked path says why
            entry = None
        if (
            entry is not None
            and entry[2] == self._epoch
            and len(inputs) == len(graph._input_order)
            and len(outputs) == len(graph._output_order)
        ):
            try:
                entry[0](entry[1], None)
            except Exception as error:
                raise graph._run_error(error) from error
            return
        self._check_alive("dispatch")
        graph._check_usable(self, "dispatch")
        ordered_inputs = graph._match(
            inputs, graph._input_order, graph._input_descriptors, "input", self
        )
        ordered_outputs = graph._match(
            outputs, graph._output_order, graph._output_descriptors, "output", self
        )
        seen: set[int] = set()
        for name, tensor in zip(graph._output_order, ordered_outputs, strict=True):
            if id(tensor) in seen:
                raise WebNNValidationError(
                    f"dispatch: output {name!r} reuses a tensor of another output"
                )
            seen.add(id(tensor))
        for name, tensor in zip(graph._input_order, ordered_inputs, strict=True):
            if id(tensor) in seen:
                raise WebNNValidationError(f"dispatch: input {name!r} is also an output tensor")
        graph._run_bound(ordered_inputs, ordered_outputs, self._epoch)

    def compute(
        self, graph: MLGraph, inputs: Mapping[str, object]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Convenience: run ``graph`` on numpy inputs and return its outputs as numpy arrays.

        Each input must have the graph input's exact dtype (nothing is converted silently)
        and its element count; nested Python numbers are accepted when representable.
        """
        self._check_alive("compute")
        graph._check_usable(self, "compute")
        descriptors = graph._input_descriptors
        if inputs.keys() != descriptors.keys():
            graph._name_mismatch(inputs, descriptors, "input", "compute")
        feeds = {}
        for name, value in inputs.items():
            expected = descriptors[name]
            if not (
                type(value) is np.ndarray
                and value.dtype == expected.numpy_dtype
                and value.shape == expected.shape
                and value.flags.c_contiguous
                and expected.data_type not in FOUR_BIT_TYPES  # their range needs checking
            ):
                value = coerce_array(value, expected, f"compute: input {name!r}")
            feeds[graph._onnx_inputs[name]] = value
        try:
            results = graph._run(graph._onnx_output_list, feeds, None)
        except Exception as error:
            raise graph._run_error(error) from error
        return dict(zip(graph._output_order, results, strict=True))


class MLTensor:
    """A tensor of an MLContext (create it with ``context.create_tensor``)."""

    __slots__ = (
        "__weakref__",
        "_constant",
        "_context",
        "_descriptor",
        "_destroyed",
        "_host",
        "_readable",
        "_value",
        "_writable",
    )

    def __init__(
        self,
        context: MLContext,
        descriptor: MLOperandDescriptor,
        *,
        readable: bool,
        writable: bool,
        constant: bool,
    ) -> None:
        from ipfs_accelerate.webnn._runtime import ort

        self._context = context
        self._descriptor = descriptor
        self._readable = readable
        self._writable = writable
        self._constant = constant
        self._destroyed = False
        dtype = numpy_dtype(descriptor.data_type)
        self._host: np.ndarray[Any, Any] | None
        runtime = ort()
        if context.device == "cpu":
            self._host = np.zeros(descriptor.shape, dtype=dtype)
            self._value = runtime.OrtValue.ortvalue_from_numpy(self._host)
        else:
            self._host = None
            self._value = runtime.OrtValue.ortvalue_from_shape_and_type(
                list(descriptor.shape), dtype.type, context.device, 0
            )
            self._value.update_inplace(np.zeros(descriptor.shape, dtype=dtype))
        context._tensors.add(self)

    @property
    def data_type(self) -> str:
        return self._descriptor.data_type

    @property
    def shape(self) -> tuple[int, ...]:
        return self._descriptor.shape

    @property
    def readable(self) -> bool:
        return self._readable

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def constant(self) -> bool:
        return self._constant

    def __repr__(self) -> str:
        flags = [
            f
            for f, on in (
                ("readable", self._readable),
                ("writable", self._writable),
                ("constant", self._constant),
            )
            if on
        ]
        shown = "".join(f", {flag}" for flag in flags)
        return f"MLTensor({self.data_type} {list(self.shape)}{shown})"

    def destroy(self) -> None:
        """Release the tensor's memory; later use raises WebNNInvalidStateError."""
        self._destroyed = True
        self._context._epoch += 1
        self._host = None
        self._value = None

    def _check_alive(self, what: str) -> None:
        if self._destroyed:
            raise WebNNInvalidStateError(f"{what}: the MLTensor was destroyed")

    def _store(self, array: np.ndarray[Any, Any]) -> None:
        if self._host is not None:
            np.copyto(self._host, array.reshape(self._host.shape))
        else:
            self._value.update_inplace(array if array.flags.c_contiguous else array.copy(order="C"))

    def _load(self) -> np.ndarray[Any, Any]:
        if self._host is not None:
            return self._host
        return np.asarray(self._value.numpy()).reshape(self._descriptor.shape)

    def _host_view(self) -> np.ndarray[Any, Any]:
        """The content as a read-only array (for constant tensors used as graph constants)."""
        data = self._load()
        view = data.view()
        view.flags.writeable = False
        return view


class MLGraph:
    """A compiled graph: one ONNX model and its InferenceSession. Made by
    ``MLGraphBuilder.build``."""

    def __init__(self) -> None:  # pragma: no cover - use MLGraphBuilder.build
        raise TypeError("MLGraph is created by MLGraphBuilder.build()")

    @classmethod
    def _compile(
        cls,
        context: MLContext,
        outputs: dict[str, MLOperand],
        nodes: Sequence[Node],
        threads: int | None = None,
    ) -> MLGraph:
        from ipfs_accelerate.webnn._onnx import lower
        from ipfs_accelerate.webnn._runtime import (
            CPU,
            FLUSHING_KERNELS,
            SINGLE_THREAD_WORK,
            can_flush_denormals,
            create_session,
            flushing_call,
        )

        graph = cls.__new__(cls)
        needed_nodes, graph_inputs = _reachable(outputs.values())
        ordered = [node for node in nodes if id(node) in needed_nodes]
        lowered = lower(ordered, graph_inputs, outputs)
        model_bytes = lowered.model.SerializeToString()
        work = _work(ordered)
        # identical builds of a small graph (same ops, shapes, small constants and the very same
        # large constant arrays) share one session: a tracer rebuilding a graph compiles once.
        # The cache holds those arrays, so their ids stay unique. Large graphs are not cached:
        # their sessions hold large memory arenas.
        key = (model_bytes, tuple(_memory_of(array) for array in lowered.external.values()))
        cacheable = work < SINGLE_THREAD_WORK
        # a large graph on the CPU that runs the attention kernel flushes denormals to zero
        # (docs/webnn.md, "Attention"), on threads of its own so that the caller's keep them
        flush = (
            not cacheable
            and context._providers == [CPU]
            and any(node.op_type in FLUSHING_KERNELS for node in lowered.model.graph.node)
            and can_flush_denormals()
        )
        cached = context._sessions.get(key) if cacheable else None
        if cached is None:
            session, keep_alive = create_session(
                model_bytes, lowered.external, context._providers, "build", work, flush, threads
            )
            if cacheable:
                context._sessions[key] = (session, keep_alive, list(lowered.external.values()))
                if len(context._sessions) > _SESSION_CACHE_SIZE:
                    context._sessions.popitem(last=False)
        else:
            context._sessions.move_to_end(key)
            session, keep_alive = cached[0], cached[1]
        graph._context = context
        graph._lowered = lowered
        graph._session = session
        graph._keep_alive = keep_alive
        graph._input_descriptors = {
            op._name: op.descriptor for op in graph_inputs if op._name is not None
        }
        graph._output_descriptors = {name: op.descriptor for name, op in outputs.items()}
        graph._input_order = list(graph._input_descriptors)
        graph._output_order = list(graph._output_descriptors)
        graph._onnx_inputs = dict(lowered.input_names)
        graph._onnx_output_list = [lowered.output_names[name] for name in graph._output_order]
        graph._bindings = OrderedDict()
        graph._lock = threading.Lock()
        native = getattr(session, "_sess", None)
        run = native.run if native is not None else session.run
        graph._flushing = flush
        if flush:
            graph._run = lambda names, feeds, options: flushing_call(run, names, feeds, options)
        else:
            graph._run = run
        graph._destroyed = False
        context._graphs.add(graph)
        return graph

    _context: MLContext
    _lowered: LoweredModel
    _session: Any
    _keep_alive: list[Any]
    _input_descriptors: dict[str, MLOperandDescriptor]
    _output_descriptors: dict[str, MLOperandDescriptor]
    _input_order: list[str]
    _output_order: list[str]
    _onnx_inputs: dict[str, str]
    _onnx_output_list: list[str]
    # tensors -> (run function, bound IO, context epoch, IOBinding kept alive)
    _bindings: OrderedDict[tuple[MLTensor, ...], tuple[Any, Any, int, Any]]
    _run: Any  # session.run, or the C++ session's run where available
    #: whether the session flushes denormals (created on, and run through, flushing_call)
    _flushing: bool
    _lock: threading.Lock
    _destroyed: bool

    @property
    def input_descriptors(self) -> dict[str, MLOperandDescriptor]:
        """The graph's inputs: name -> descriptor (the inputs its outputs depend on)."""
        return dict(self._input_descriptors)

    @property
    def output_descriptors(self) -> dict[str, MLOperandDescriptor]:
        return dict(self._output_descriptors)

    @property
    def execution_providers(self) -> list[str]:
        """The providers the session was created with (the context's)."""
        return list(self._session.get_providers()) if not self._destroyed else []

    def __repr__(self) -> str:
        return f"MLGraph(inputs={self._input_order}, outputs={self._output_order})"

    def export_onnx(self) -> bytes:
        """The graph as a self-contained ONNX model (opset 21), e.g. to run with onnxruntime
        directly or to inspect with netron. Inputs and outputs keep their WebNN names, except
        an output named like an input (ONNX values need unique names), which gets a fresh one."""
        from ipfs_accelerate.webnn._onnx import embed_constants

        self._check_usable(self._context, "export_onnx")
        return bytes(embed_constants(self._lowered).SerializeToString())

    def destroy(self) -> None:
        """Release the session; later dispatches raise WebNNInvalidStateError."""
        self._destroyed = True
        self._session = None
        self._run = None
        self._bindings.clear()
        self._keep_alive = []

    # ------------------------------------------------------------------ running

    def _check_usable(self, context: MLContext, what: str) -> None:
        if not isinstance(self, MLGraph):
            raise WebNNValidationError(f"{what}: expected an MLGraph, got {type(self).__name__}")
        if self._context is not context:
            raise WebNNValidationError(f"{what}: the graph was built for another MLContext")
        if self._destroyed:
            raise WebNNInvalidStateError(f"{what}: the MLGraph was destroyed")

    def _name_mismatch(
        self,
        given: Mapping[str, object],
        expected: Mapping[str, MLOperandDescriptor],
        kind: str,
        what: str,
    ) -> None:
        missing = [name for name in expected if name not in given]
        extra = [name for name in given if name not in expected]
        if missing:
            name = missing[0]
            desc = expected[name]
            raise WebNNValidationError(
                f"{what}: graph {kind} {name!r} ({desc.data_type} {list(desc.shape)}) is missing"
            )
        raise WebNNValidationError(
            f"{what}: {extra[0]!r} is not a graph {kind} "
            f"(graph {kind}s: {', '.join(map(repr, expected))})"
        )

    def _match(
        self,
        given: Mapping[str, MLTensor],
        order: list[str],
        expected: dict[str, MLOperandDescriptor],
        kind: str,
        context: MLContext,
    ) -> list[MLTensor]:
        if not isinstance(given, Mapping):
            raise WebNNValidationError(f"dispatch: {kind}s must be a mapping of names to MLTensors")
        if given.keys() != expected.keys():
            self._name_mismatch(given, expected, kind, "dispatch")
        tensors = []
        for name in order:
            tensor = given[name]
            if not isinstance(tensor, MLTensor):
                raise WebNNValidationError(
                    f"dispatch: {kind} {name!r} must be an MLTensor, got {type(tensor).__name__}"
                )
            if tensor._context is not context:
                raise WebNNValidationError(
                    f"dispatch: {kind} {name!r} belongs to another MLContext"
                )
            tensor._check_alive(f"dispatch: {kind} {name!r}")
            if tensor._constant:
                raise WebNNValidationError(f"dispatch: {kind} {name!r} is a constant tensor")
            if tensor._descriptor != expected[name]:
                want = expected[name]
                raise WebNNValidationError(
                    f"dispatch: {kind} {name!r} is {tensor.data_type} {list(tensor.shape)}, "
                    f"the graph expects {want.data_type} {list(want.shape)}"
                )
            tensors.append(tensor)
        return tensors

    def _run_bound(self, inputs: list[MLTensor], outputs: list[MLTensor], epoch: int) -> None:
        key = (*inputs, *outputs)
        with self._lock:
            binding = self._session.io_binding()
            for name, tensor in zip(self._input_order, inputs, strict=True):
                binding.bind_ortvalue_input(self._onnx_inputs[name], tensor._value)
            for name, tensor in zip(self._onnx_output_list, outputs, strict=True):
                binding.bind_ortvalue_output(name, tensor._value)
            # call the C++ session directly where available: the Python wrapper re-validates
            from ipfs_accelerate.webnn._runtime import flushing_call

            native = getattr(self._session, "_sess", None)
            if native is not None and hasattr(binding, "_iobinding"):
                bound = native.run_with_iobinding
                if self._flushing:
                    run = bound
                    bound = lambda b, options: flushing_call(run, b, options)  # noqa: E731
                entry = (bound, binding._iobinding, epoch, binding)
            else:  # pragma: no cover - other onnxruntime layouts
                session = self._session
                entry = (
                    (lambda b, _options: flushing_call(session.run_with_iobinding, b))
                    if self._flushing
                    else (lambda b, _options: session.run_with_iobinding(b)),
                    binding,
                    epoch,
                    binding,
                )
            self._bindings[key] = entry
            if len(self._bindings) > _BINDING_CACHE_SIZE:
                self._bindings.popitem(last=False)
        try:
            entry[0](entry[1], None)
        except Exception as error:
            raise self._run_error(error) from error

    def _run_error(self, error: BaseException) -> WebNNOperationError:
        text = str(error).strip()
        return WebNNOperationError(
            f"dispatch: onnxruntime failed running the graph (inputs {self._input_order}, outputs "
            f"{self._output_order}) on {', '.join(self._context._providers)}: {text[:2000]}"
        )


def _memory_of(array: np.ndarray[Any, Any]) -> tuple[int, tuple[int, ...], str]:
    """Where an array's data lives (its address, shape, dtype): views of one read-only weight
    made by separate builds are the same constant."""
    return (array.__array_interface__["data"][0], array.shape, array.dtype.str)


def _work(nodes: Sequence[Node]) -> int:
    """A rough count of multiply-adds per run: output elements, times the reduction length
    for the contracting ops."""
    total = 0
    for node in nodes:
        elements = sum(math.prod(out.shape) for out in node.outputs)
        first = node.inputs[0] if node.inputs else None
        if node.op in ("matmul", "gemm") and first is not None:
            elements *= max(first.shape)
        elif node.op in ("conv2d", "conv_transpose2d") and node.inputs[1] is not None:
            elements *= math.prod(node.inputs[1].shape[1:])
        elif node.op in ("gru", "lstm", "gru_cell", "lstm_cell") and node.inputs[1] is not None:
            elements *= math.prod(node.inputs[1].shape)
        elif first is not None:
            elements = max(elements, math.prod(first.shape))
        total += elements
    return total


def _reachable(outputs: Any) -> tuple[set[int], list[MLOperand]]:
    """The nodes the outputs depend on (by id) and the input operands they reach (by creation)."""
    needed: set[int] = set()
    inputs: dict[int, MLOperand] = {}
    stack: list[MLOperand] = list(outputs)
    seen: set[int] = set()
    while stack:
        operand = stack.pop()
        if operand._id in seen:
            continue
        seen.add(operand._id)
        if operand._kind == INPUT:
            inputs[operand._id] = operand
        elif operand._kind == OUTPUT and operand._node is not None:
            node = operand._node
            if id(node) not in needed:
                needed.add(id(node))
                stack.extend(x for x in node.inputs if x is not None)
    return needed, [inputs[key] for key in sorted(inputs)]
