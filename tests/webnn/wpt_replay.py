"""Replays the vendored web-platform-tests WebNN conformance cases (tests/webnn/wpt/*.json).

A case names its operators with the spec's camelCase (``reduceSum``) and passes arguments
positionally, options as one ``options`` object with camelCase keys; here they become the
Python API's snake_case methods and keyword arguments. Results are compared with the WPT
tolerance rules (resources/utils.js, summarised in wpt/README.md): ULP distance for floats
(sign-magnitude integer view of the bits), an absolute tolerance for the ops WPT measures
that way, exact equality for integers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ipfs_accelerate import webnn

WPT_DIR = Path(__file__).parent / "wpt"

#: WPT checks an output expected to be filled with one value on its first 1000 elements
FILL_CHECKED = 1000

_SPECIAL_NAMES = {"gatherND": "gather_nd", "scatterND": "scatter_nd", "isNaN": "is_nan"}


def snake(name: str) -> str:
    """camelCase spec name -> the Python API's snake_case name."""
    if name in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[name]
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


# ----------------------------------------------------------------------------- data


def _number(value: Any) -> Any:
    if isinstance(value, str):
        if value.endswith("n"):
            return int(value[:-1])
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return value


# int4/uint4 (an extension, see docs/webnn.md) travel one value per int8/uint8 element
_HELD_AS = {"int4": "int8", "uint4": "uint8"}


def to_array(data: Any, descriptor: dict[str, Any]) -> np.ndarray[Any, Any]:
    """Case data as an array of the descriptor's type and shape (a scalar fills the shape)."""
    dtype = np.dtype(_HELD_AS.get(descriptor["dataType"], descriptor["dataType"]))
    shape = tuple(descriptor["shape"])
    if not isinstance(data, list):
        return np.full(shape, _number(data), dtype=dtype)
    values = [_number(v) for v in data]
    if dtype.kind in "iu":
        return np.array(values, dtype=object).astype(dtype).reshape(shape)
    with np.errstate(over="ignore"):  # out-of-range values round to infinity, as in JS
        return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)


# The JSON conversion wrote JavaScript's non-finite numbers as null (JSON.stringify does that),
# which loses them. These clamp cases are restored from their WPT source: the input is
# [-Infinity, Infinity, ...finite values], and the named bound is the non-finite value.
_INF = math.inf
_RESTORED: dict[str, dict[str, Any]] = {
    "minValue as -Infinity": {
        "input": [-_INF, _INF],
        "options": {"minValue": -_INF},
        "output": [-_INF, _INF],
    },
    "minValue as Infinity": {
        "input": [-_INF, _INF],
        "options": {"minValue": _INF},
        "output": [_INF] * 7,
    },
    "maxValue as -Infinity": {
        "input": [-_INF, _INF],
        "options": {"maxValue": -_INF},
        "output": [-_INF] * 7,
    },
    "maxValue as Infinity": {
        "input": [-_INF, _INF],
        "options": {"maxValue": _INF},
        "output": [-_INF, _INF],
    },
    "minValue == maxValue": {"input": [-_INF, _INF], "options": {}, "output": []},
    "minValue as NaN": {
        "input": [-_INF, _INF],
        "options": {"minValue": math.nan},
        "output": [-_INF, _INF],
    },
    "maxValue as NaN": {
        "input": [-_INF, _INF],
        "options": {"maxValue": math.nan},
        "output": [-_INF, _INF],
    },
}


def _fill_nulls(values: list[Any], replacements: list[float]) -> list[Any]:
    queue = list(replacements)
    out = []
    for value in values:
        if value is None:
            if not queue:
                raise ValueError("more nulls than restored values")
            out.append(queue.pop(0))
        else:
            out.append(value)
    return out


def restore_case(case: dict[str, Any]) -> dict[str, Any]:
    """The case with null (lost non-finite) values restored; unchanged when it has none."""
    if "null" not in json.dumps(case):
        return case
    fix = _RESTORED.get(case["name"])
    if fix is None:
        raise ValueError(f"case {case['name']!r} holds null values with no known restoration")
    restored = json.loads(json.dumps(case))
    graph = restored["graph"]
    for spec in graph["inputs"].values():
        if isinstance(spec["data"], list):
            spec["data"] = _fill_nulls(spec["data"], fix["input"])
    for operator in graph["operators"]:
        for argument in operator["arguments"]:
            if "options" in argument:
                for key, value in list(argument["options"].items()):
                    if value is None:
                        argument["options"][key] = fix["options"][key]
    for spec in graph["expectedOutputs"].values():
        if isinstance(spec["data"], list):
            spec["data"] = _fill_nulls(spec["data"], fix["output"])
    return restored


# ----------------------------------------------------------------------------- tolerances

# an op with no rule here raises KeyError: a new vendored op needs its WPT tolerance added
_ULP = {  # WPT resources/utils.js operatorToleranceDict
    "argMax": 0, "argMin": 0, "batchNormalization": 6, "clamp": 0, "add": 1, "mul": 1,
    "max": 0, "min": 0, "elu": 18, "gelu": 18, "hardSigmoid": 2, "hardSwish": 4,
    "linear": 2, "prelu": 1, "relu": 0, "softplus": 18, "softsign": 3, "tanh": 16,
    # the per-file tolerances of the conformance tests (wpt/README.md)
    "div": 2, "reciprocal": 2, "sqrt": 1, "exp": 32, "pow": 32, "abs": 0, "neg": 0,
    "ceil": 0, "floor": 0, "cast": 0, "instanceNormalization": 840, "layerNormalization": 840,
    "dequantizeLinear": 1, "lstmCell": 1, "gruCell": 3,
}  # fmt: skip
_ZERO = {
    "concat", "expand", "gather", "gatherElements", "gatherND", "identity", "pad", "reshape",
    "reverse", "scatterElements", "scatterND", "slice", "split", "tile", "transpose", "equal",
    "notEqual", "greater", "greaterOrEqual", "lesser", "lesserOrEqual", "logicalNot",
    "logicalAnd", "logicalOr", "logicalXor", "isNaN", "isInfinite", "sign", "where",
}  # fmt: skip
_ATOL = {"log": 1 / 1024, "cos": 1 / 1024, "sin": 1 / 1024, "tan": 1 / 1024, "erf": 1 / 1024}
# the float16 bounds of the files that state one (cos/sin: WGSL accuracy; erf/tan: 1/512)
_ATOL_F16 = {"cos": 2**-7, "sin": 2**-7, "tan": 1 / 512, "erf": 1 / 512}


@dataclass
class Tolerance:
    metric: str  # "ULP" or "ATOL"
    value: float


def _shape_of(
    graph: dict[str, Any], shapes: dict[str, tuple[int, ...]], argument: dict[str, Any]
) -> tuple[int, ...]:
    name = next(iter(argument.values()))
    return shapes[name]


def _options(operator: dict[str, Any]) -> dict[str, Any]:
    for argument in operator["arguments"]:
        if "options" in argument:
            return dict(argument["options"])
    return {}


def tolerance(
    graph: dict[str, Any], shapes: dict[str, tuple[int, ...]], out_type: str
) -> Tolerance:
    """WPT's getPrecisionTolerance: the sum of each operator's tolerance."""
    total = 0.0
    for operator in graph["operators"]:
        name = operator["name"]
        args = operator["arguments"]
        options = _options(operator)
        if name in _ATOL and len(graph["operators"]) == 1:
            bound = _ATOL_F16.get(name, _ATOL[name]) if out_type == "float16" else _ATOL[name]
            return Tolerance("ATOL", bound)
        if name in _ZERO:
            continue
        if name == "sub":
            total += 1 if out_type in ("float32", "float16") else 0
        elif name == "leakyRelu":
            total += 1 if out_type == "float32" else 2
        elif name == "sigmoid":
            total += 34 if out_type == "float32" else 10
        elif name == "matmul":
            total += _shape_of(graph, shapes, args[0])[-1] * 2
        elif name == "gemm":
            a = _shape_of(graph, shapes, args[0])
            width = a[0] if options.get("aTranspose") else a[1]
            extra = 0
            if options.get("alpha", 1.0) != 1.0:
                extra += 1
            if options.get("c") is not None and options.get("beta", 1.0) != 0.0:
                extra += 1 + (1 if options.get("beta", 1.0) != 1.0 else 0)
            total += width * 2 + extra
        elif name in ("conv2d", "convTranspose2d"):
            input_shape = _shape_of(graph, shapes, args[0])
            filter_shape = _shape_of(graph, shapes, args[1])
            layout = options.get("inputLayout", "nchw")
            channels = input_shape[1] if layout == "nchw" else input_shape[3]
            f_layout = options.get("filterLayout", "oihw" if name == "conv2d" else "iohw")
            if f_layout in ("oihw", "iohw"):
                height, width = filter_shape[2], filter_shape[3]
            elif f_layout in ("hwio", "hwoi"):
                height, width = filter_shape[0], filter_shape[1]
            else:
                height, width = filter_shape[1], filter_shape[2]
            total += width * height * (channels / options.get("groups", 1)) * 2
        elif name == "softmax":
            axis = next(iter(args[1].values())) if len(args) > 1 else 1
            total += _shape_of(graph, shapes, args[0])[axis] * 3 + 3
        elif name in ("averagePool2d", "l2Pool2d", "maxPool2d"):
            shape = _shape_of(graph, shapes, args[0])
            if "windowDimensions" in options:
                height, width = options["windowDimensions"]
            elif options.get("layout") == "nhwc":
                height, width = shape[1], shape[2]
            else:
                height, width = shape[2], shape[3]
            total += 0 if name == "maxPool2d" else height * width + 2
        elif name.startswith("reduce"):
            shape = _shape_of(graph, shapes, args[0])
            axes = options.get("axes")
            count = math.prod(shape[a] for a in axes) if axes is not None else math.prod(shape)
            if name in ("reduceMax", "reduceMin"):
                count = 0
            total += {
                "reduceL1": count, "reduceL2": count * 2 + 2, "reduceLogSum": count + 18,
                "reduceLogSumExp": count * 2 + 18, "reduceMax": count, "reduceMean": count + 2,
                "reduceMin": count, "reduceProduct": count, "reduceSum": count,
                "reduceSumSquare": count * 2,
            }[name]  # fmt: skip
        elif name == "cumulativeSum":
            axis = next(iter(args[1].values()))
            is_float = out_type in ("float32", "float16")
            total += _shape_of(graph, shapes, args[0])[axis] - 1 if is_float else 0
        elif name == "quantizeLinear":
            # keyed on the graph's output type: 1 for an integer output, none for a float one
            # (a quantize -> dequantize chain takes dequantizeLinear's bound)
            total += 0 if out_type in ("float32", "float16") else 1
        elif name == "resample2d":
            linear = options.get("mode") == "linear"
            total += (84 if out_type == "float32" else 10) if linear else 0
        elif name in _ULP:
            total += _ULP[name]
        else:
            raise KeyError(f"no tolerance rule for {name!r}")
    return Tolerance("ULP", total)


def ulp_distance(
    actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """|ordered(actual) - ordered(expected)| where ordered() maps the float bits to a
    sign-magnitude integer line (so -0 and +0 coincide and adjacent floats differ by 1)."""
    bits_type = {np.dtype(np.float32): np.int32, np.dtype(np.float16): np.int16}[actual.dtype]

    def ordered(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        bits = values.view(bits_type).astype(np.int64)
        magnitude = bits & (np.iinfo(bits_type).max)
        return np.where(bits < 0, -magnitude, magnitude)

    return np.abs(ordered(actual) - ordered(expected.astype(actual.dtype)))


def compare(
    actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any], rule: Tolerance
) -> str | None:
    """None when ``actual`` matches ``expected`` under ``rule``, else a description."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return f"got {actual.dtype} {actual.shape}, expected {expected.dtype} {expected.shape}"
    if actual.dtype.kind in "iu":
        bad = np.flatnonzero(actual.reshape(-1) != expected.reshape(-1))
        if bad.size:
            i = bad[0]
            return (
                f"{bad.size} integers differ, first at {i}: "
                f"{actual.reshape(-1)[i]} != {expected.reshape(-1)[i]}"
            )
        return None
    a = actual.reshape(-1)
    e = expected.reshape(-1)
    nan_expected = np.isnan(e)
    if np.any(np.isnan(a) != nan_expected):
        i = np.flatnonzero(np.isnan(a) != nan_expected)[0]
        return f"NaN mismatch at {i}: {a[i]} vs {e[i]}"
    finite = ~nan_expected
    if rule.metric == "ATOL":
        with np.errstate(invalid="ignore"):
            error = np.abs(a[finite].astype(np.float64) - e[finite].astype(np.float64))
        same = a[finite] == e[finite]  # equal infinities
        bad = np.flatnonzero(~same & ~(error <= rule.value))
        if bad.size:
            i = bad[0]
            return (
                f"{bad.size} values beyond ATOL {rule.value}; "
                f"first {a[finite][i]} vs {e[finite][i]}"
            )
        return None
    distance = ulp_distance(a[finite], e[finite])
    bad = np.flatnonzero(distance > rule.value)
    if bad.size:
        i = bad[0]
        return (
            f"{bad.size} values beyond {rule.value:g} ULP; worst {int(distance.max())} ULP, "
            f"first {a[finite][i]!r} vs {e[finite][i]!r}"
        )
    return None


def worst_error(
    actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any], rule: Tolerance
) -> float:
    """The largest distance under ``rule``'s metric (ULP or absolute) over the finite
    expectations; 0 for integers (compared exactly)."""
    if actual.dtype.kind in "iu" or actual.size == 0:
        return 0.0
    a, e = actual.reshape(-1), expected.reshape(-1)
    finite = np.isfinite(e) & np.isfinite(a)
    if not finite.any():
        return 0.0
    if rule.metric == "ATOL":
        return float(np.abs(a[finite].astype(np.float64) - e[finite].astype(np.float64)).max())
    return float(ulp_distance(a[finite], e[finite]).max())


# ----------------------------------------------------------------------------- replay


@dataclass
class Suite:
    op: str
    cases: list[dict[str, Any]] = field(default_factory=list)


@cache
def suites() -> dict[str, Suite]:
    result: dict[str, Suite] = {}
    for path in sorted(WPT_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        result[path.stem] = Suite(data["operation"], data["tests"])
    return result


def _resolve(value: Any, operands: dict[str, Any]) -> Any:
    if isinstance(value, str) and value in operands:
        return operands[value]
    if isinstance(value, str) and re.fullmatch(r"-?\d+n", value):
        return int(value[:-1])  # a BigInt option value
    if value in ("NaN", "Infinity", "-Infinity"):
        return _number(value)  # a non-finite option value (pad's ``value``)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v in operands for v in value)
    ):
        return [operands[v] for v in value]
    return value


def run_case(
    context: webnn.MLContext, case: dict[str, Any], stats: dict[str, float] | None = None
) -> str | None:
    """Build, dispatch and check one case; None when it passes, else why it failed.
    ``stats`` collects the worst observed error per metric ("ULP", "ATOL")."""
    case = restore_case(case)
    graph = case["graph"]
    builder = webnn.MLGraphBuilder(context)
    operands: dict[str, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for name, spec in graph["inputs"].items():
        descriptor = spec["descriptor"]
        array = to_array(spec["data"], descriptor)
        shapes[name] = tuple(descriptor["shape"])
        if spec.get("constant"):
            operands[name] = builder.constant(descriptor, array)
        else:
            operands[name] = builder.input(name, descriptor)
            feeds[name] = array
    for operator in graph["operators"]:
        method = getattr(builder, snake(operator["name"]))
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for argument in operator["arguments"]:
            ((key, value),) = argument.items()
            if key == "options":
                keywords = {snake(k): _resolve(v, operands) for k, v in value.items()}
            else:
                positional.append(_resolve(value, operands))
        result = method(*positional, **keywords)
        names = operator["outputs"]
        if isinstance(names, str):
            operands[names] = result
            shapes[names] = result.shape
        else:
            for out_name, operand in zip(names, result, strict=True):
                operands[out_name] = operand
                shapes[out_name] = operand.shape
    expected = graph["expectedOutputs"]
    outputs = {name: operands[name] for name in expected}
    for name, spec in expected.items():
        if (
            outputs[name].data_type != spec["descriptor"]["dataType"]
            or list(outputs[name].shape) != spec["descriptor"]["shape"]
        ):
            found = f"{outputs[name].data_type} {list(outputs[name].shape)}"
            return f"output {name!r} is {found}, expected {spec['descriptor']}"
    built = builder.build(outputs)
    input_tensors = {}
    for name in list(feeds):
        array = feeds.pop(name)  # dropped once written: some cases hold 36M elements
        tensor = context.create_tensor(
            {"dataType": str(array.dtype), "shape": list(array.shape)}, writable=True
        )
        context.write_tensor(tensor, array)
        input_tensors[name] = tensor
        del array
    output_tensors = {
        name: context.create_tensor(spec["descriptor"], readable=True)
        for name, spec in expected.items()
    }
    context.dispatch(built, input_tensors, output_tensors)
    first_type = next(iter(expected.values()))["descriptor"]["dataType"]
    rule = tolerance(graph, shapes, first_type)
    for name, spec in expected.items():
        actual = context.read_tensor(output_tensors[name])
        wanted = to_array(spec["data"], spec["descriptor"])
        if not isinstance(spec["data"], list):
            # like WPT, check a scalar-filled expectation on its first elements only
            actual, wanted = actual.reshape(-1)[:FILL_CHECKED], wanted.reshape(-1)[:FILL_CHECKED]
        problem = compare(actual, wanted, rule)
        if problem:
            return f"output {name!r}: {problem}"
        if stats is not None:
            error = worst_error(actual, wanted, rule)
            stats[rule.metric] = max(stats.get(rule.metric, 0.0), error)
    built.destroy()
    return None


def skip_reason(context: webnn.MLContext, case: dict[str, Any]) -> str | None:
    """Why a case cannot run here (a data type or rank outside op_support_limits), if so."""
    limits = context.op_support_limits()
    graph = case["graph"]
    for operator in graph["operators"]:
        op = snake(operator["name"])
        if op not in limits:
            return f"{operator['name']} is not implemented"
    for spec in graph["inputs"].values():
        data_type = spec["descriptor"]["dataType"]
        if data_type not in limits["input"]["data_types"]:
            return f"data type {data_type} is not supported"
    return None
