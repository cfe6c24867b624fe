"""Random multi-op programs on the webnn backend against the CPU backend.

The op suite checks one op per graph; these check what only shows across ops: structural
keys that must tell different computations apart (shared operands, scalar values, which
values are read), compiled graphs reused on new data, extra outputs for values read later,
and integer checks raising exactly when the CPU backend raises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import TensorOverflowError
from ipfs_accelerate.tensor import Tensor

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

SHAPE = (3, 4)
_UNARY = ("tanh", "sigmoid", "neg", "abs", "sin")
_BINARY = ("add", "sub", "mul", "maximum", "minimum")

Step = tuple[Any, ...]


@st.composite
def float_programs(draw: st.DrawFn) -> tuple[int, list[Step], list[int]]:
    """(number of inputs, steps, values to read in order). Every value has shape SHAPE."""
    inputs = draw(st.integers(1, 3))
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 10))):
        count = inputs + len(steps)
        value = st.integers(0, count - 1)
        kind = draw(
            st.sampled_from(
                ["unary", "binary", "scalar", "where", "softmax", "norm", "roundtrip", "reduce"]
            )
        )
        if kind == "unary":
            steps.append((kind, draw(st.sampled_from(_UNARY)), draw(value)))
        elif kind == "binary":
            steps.append((kind, draw(st.sampled_from(_BINARY)), draw(value), draw(value)))
        elif kind == "scalar":
            scalar = draw(st.sampled_from([0.0, -0.0, 0.5, 2.0, -1.5]))
            steps.append(
                (kind, draw(st.sampled_from(_BINARY)), draw(value), scalar, draw(st.booleans()))
            )
        elif kind == "where":
            steps.append((kind, draw(value), draw(value)))
        elif kind == "softmax":
            steps.append((kind, draw(value), draw(st.sampled_from([0, 1]))))
        elif kind == "norm":
            steps.append((kind, draw(value)))
        elif kind == "roundtrip":
            steps.append(
                (kind, draw(st.sampled_from(["transpose", "reshape", "slices"])), draw(value))
            )
        else:
            steps.append(
                (
                    kind,
                    draw(st.sampled_from(["sum", "max", "mean"])),
                    draw(value),
                    draw(st.sampled_from([0, 1])),
                )
            )
    total = inputs + len(steps)
    reads = draw(st.lists(st.integers(0, total - 1), min_size=1, max_size=3, unique=True))
    return inputs, steps, reads


def run_program(inputs: list[Tensor], steps: list[Step]) -> list[Tensor]:
    values = list(inputs)
    for step in steps:
        kind = step[0]
        if kind == "unary":
            out = getattr(ops, step[1])(values[step[2]])
        elif kind == "binary":
            out = getattr(ops, step[1])(values[step[2]], values[step[3]])
        elif kind == "scalar":
            _, name, i, scalar, reverse = step
            out = (
                getattr(ops, name)(scalar, values[i])
                if reverse
                else getattr(ops, name)(values[i], scalar)
            )
        elif kind == "where":
            a, b = values[step[1]], values[step[2]]
            out = ops.where(a > b, a, b * 0.5)
        elif kind == "softmax":
            out = ops.softmax(values[step[1]], step[2])
        elif kind == "norm":
            out = ops.layer_norm(values[step[1]], SHAPE[-1])
        elif kind == "roundtrip":
            x = values[step[2]]
            if step[1] == "transpose":
                out = x.T.T + 0.0
            elif step[1] == "reshape":
                out = x.reshape(4, 3).reshape(*SHAPE) * 1.0
            else:
                out = ops.concat([x[:, 1:], x[:, :1]], 1)
        else:
            _, name, i, axis = step
            out = values[i] - getattr(ops, name)(values[i], axis, keepdims=True)
        values.append(out)
    return values


@given(program=float_programs(), seed=st.integers(0, 2**16))
def test_float_programs_match_the_cpu_backend_and_reuse_compiled_graphs(
    program: tuple[int, list[Step], list[int]], seed: int
) -> None:
    count, steps, reads = program
    backend = hal.get_backend("webnn")
    rng = np.random.default_rng(seed)
    for round_index in range(2):  # the second round runs the compiled graphs on new data
        data = [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(count)]
        compilations = backend.stats.compilations
        webnn_values = run_program([ia.tensor(d, device="webnn") for d in data], steps)
        cpu_values = run_program([ia.tensor(d) for d in data], steps)
        for index in reads:
            np.testing.assert_allclose(
                webnn_values[index].numpy(),
                cpu_values[index].numpy(),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"value {index} of {steps}",
            )
        if round_index == 1:
            assert backend.stats.compilations == compilations, (
                "the same program on new data compiled again"
            )


@st.composite
def int_programs(draw: st.DrawFn) -> list[Step]:
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 6))):
        count = 2 + len(steps)
        name = draw(st.sampled_from(["add", "sub", "mul", "neg", "abs"]))
        if name in ("neg", "abs"):
            steps.append(("unary", name, draw(st.integers(0, count - 1))))
        elif draw(st.booleans()):
            steps.append(
                ("binary", name, draw(st.integers(0, count - 1)), draw(st.integers(0, count - 1)))
            )
        else:
            steps.append(
                (
                    "scalar",
                    name,
                    draw(st.integers(0, count - 1)),
                    draw(st.sampled_from([2, -3, 70000])),
                    draw(st.booleans()),
                )
            )
    return steps


@given(
    steps=int_programs(),
    dtype=st.sampled_from(["int32", "int64"]),
    seed=st.integers(0, 2**16),
    big=st.booleans(),
)
def test_integer_programs_raise_exactly_when_the_cpu_backend_raises(
    steps: list[Step], dtype: str, seed: int, big: bool
) -> None:
    rng = np.random.default_rng(seed)
    limit = np.iinfo(dtype).max // (2 if big else 2**20)
    data = [rng.integers(-limit, limit, SHAPE, dtype=dtype) for _ in range(2)]
    try:
        values = run_program([ia.tensor(d) for d in data], steps)
        expected: Any = np.concatenate([v.numpy().ravel() for v in values])
    except TensorOverflowError:
        expected = TensorOverflowError
    lazy = run_program([ia.tensor(d, device="webnn") for d in data], steps)
    # every value feeds the result read back, so every check runs
    combined = ops.concat([v.reshape(-1) for v in lazy])
    if expected is TensorOverflowError:
        with pytest.raises(TensorOverflowError):
            combined.numpy()
    else:
        np.testing.assert_array_equal(combined.numpy(), expected)
