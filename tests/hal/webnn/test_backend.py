"""The webnn backend's own behaviour: compile once per signature, parameters as constants, one
graph per forward pass, reuse of computed values, checks that raise at readback, the cache
bound, exact integer and floor-division arithmetic, and the CPU fallback."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import (
    BackendFallbackWarning,
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    TensorOverflowError,
    UnsupportedDtypeError,
    UnsupportedOpError,
)
from ipfs_accelerate.tensor import Tensor

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

DEVICE = "webnn"


@pytest.fixture(scope="module")
def backend() -> Any:
    return hal.get_backend(DEVICE, fallback=False)


class Counter:
    """Stats of the backend since the counter was made."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.start = dict(vars(backend.stats))

    def __getattr__(self, name: str) -> int:
        return int(getattr(self.backend.stats, name) - self.start[name])


def on(array: np.ndarray[Any, Any]) -> Tensor:
    return ia.tensor(array, device=DEVICE)


def parameter(array: np.ndarray[Any, Any]) -> Tensor:
    t = on(array)
    hal.mark_parameter(t)
    return t


def exported(backend: Any, tensor_fn: Callable[[], Tensor]) -> Any:
    """The ONNX model of the (single) graph compiled while computing ``tensor_fn()``."""
    import onnx

    before = set(backend._cache)
    tensor_fn().numpy()
    new = [backend._cache[key] for key in backend._cache if key not in before]
    assert len(new) == 1, f"expected one new compiled graph, got {len(new)}"
    return onnx.load_from_string(new[0].graph.export_onnx())


# ----------------------------------------------------------------------------- compilation


def _mlp(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    return ops.softmax(ops.linear(ops.gelu(ops.linear(x, w1, b1)), w2), -1)


def test_a_forward_pass_compiles_once_per_signature(backend: Any) -> None:
    rng = np.random.default_rng(0)
    w1, b1, w2 = (
        parameter(rng.standard_normal(s).astype(np.float32)) for s in ((16, 8), (16,), (4, 16))
    )
    counter = Counter(backend)
    results = []
    for _ in range(3):
        x = rng.standard_normal((5, 8)).astype(np.float32)
        results.append((x, _mlp(on(x), w1, b1, w2).numpy()))
    assert counter.compilations == 1 and counter.dispatches == 3 and counter.cache_hits == 2
    cpu = [ia.tensor(t.numpy()) for t in (w1, b1, w2)]
    for x, got in results:  # new inputs really were used, not a cached result
        np.testing.assert_allclose(got, _mlp(ia.tensor(x), *cpu).numpy(), rtol=1e-5, atol=1e-6)
    _mlp(on(rng.standard_normal((7, 8)).astype(np.float32)), w1, b1, w2).numpy()
    assert counter.compilations == 2, "a new batch size compiles once more"
    _mlp(on(rng.standard_normal((7, 8)).astype(np.float32)), w1, b1, w2).numpy()
    assert counter.compilations == 2 and counter.dispatches == 5


def test_dtype_is_part_of_the_signature(backend: Any) -> None:
    counter = Counter(backend)
    for dtype in ("float32", "float16", "float32"):
        x = on(np.arange(6, dtype=dtype).reshape(2, 3))
        np.testing.assert_allclose((x * 2 + 1).numpy(), np.arange(6).reshape(2, 3) * 2 + 1)
    assert counter.compilations == 2


def test_scalar_values_are_part_of_the_key(backend: Any) -> None:
    x = on(np.array([1.0, -2.0], dtype=np.float32))
    assert (x * 0.0).numpy().tolist() == [0.0, -0.0]
    # -0.0 == 0.0 in Python: the key must still tell them apart (the sign of zero shows in 1/x)
    assert np.signbit((x * -0.0).numpy()).tolist() == [True, False]
    assert (x * 2).numpy().tolist() == [2.0, -4.0] and (x * 3).numpy().tolist() == [3.0, -6.0]


# ----------------------------------------------------------------------------- parameters


def test_marked_weights_become_constants_and_inputs_stay_inputs(backend: Any) -> None:
    rng = np.random.default_rng(1)
    weight = parameter(rng.standard_normal((64, 32)).astype(np.float32))
    unmarked = on(rng.standard_normal((64,)).astype(np.float32))
    x = on(rng.standard_normal((3, 32)).astype(np.float32))
    model = exported(backend, lambda: ops.linear(x, weight, unmarked))
    initializers = {tuple(t.dims) for t in model.graph.initializer}
    inputs = {tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    assert (64, 32) in initializers and (64, 32) not in inputs
    assert inputs == {(3, 32), (64,)}, "per-call data and unmarked tensors are graph inputs"


def test_immutable_host_arrays_are_parameters_without_a_copy(backend: Any, tmp_path: Any) -> None:
    path = tmp_path / "weights.bin"
    np.arange(256, dtype=np.float32).tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r").reshape(16, 16)
    weight = ia.from_numpy(mapped, device=DEVICE)
    assert weight._data.param and np.shares_memory(weight._data.value, mapped)
    writable = np.arange(256, dtype=np.float32).reshape(16, 16)
    copied = ia.from_numpy(writable, device=DEVICE)
    assert not copied._data.param and not np.shares_memory(copied._data.value, writable)
    readonly_view = writable.view()
    readonly_view.flags.writeable = False  # its owner can still write: not immutable
    assert not ia.from_numpy(readonly_view, device=DEVICE)._data.param
    transposed = ia.from_numpy(
        mapped.T, device=DEVICE
    )  # immutable but strided: a copy, still a parameter
    assert transposed._data.param and not np.shares_memory(transposed._data.value, mapped)
    np.testing.assert_array_equal(transposed.numpy(), np.asarray(mapped).T)
    x = on(np.ones((2, 16), dtype=np.float32))
    model = exported(backend, lambda: x @ weight)
    assert [tuple(t.dims) for t in model.graph.initializer if tuple(t.dims) == (16, 16)]


def test_a_constant_never_goes_stale(backend: Any) -> None:
    source = np.ones((4, 4), dtype=np.float32)
    weight = ia.from_numpy(source, device=DEVICE)
    hal.mark_parameter(weight)
    x = on(np.ones((1, 4), dtype=np.float32))
    assert (x @ weight).numpy().tolist() == [[4.0] * 4]
    source[:] = 100.0  # the tensor holds its own copy
    assert (x @ weight).numpy().tolist() == [[4.0] * 4]
    assert weight.numpy().tolist() == [[1.0] * 4] * 4
    out = weight.numpy()
    out[:] = 7.0  # to_numpy hands out a fresh array
    assert (x @ weight).numpy().tolist() == [[4.0] * 4]
    with pytest.raises(UnsupportedOpError, match="to\\('cpu'\\)"):
        weight[0, 0] = 5.0


def test_results_of_parameters_are_parameters(backend: Any) -> None:
    weight = parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    derived = weight.T * 2
    derived.numpy()
    assert derived._data.param, "computed from parameters only: a constant for later graphs"
    x = on(np.ones((1, 3), dtype=np.float32))
    y = x @ weight.T
    y.numpy()
    assert not y._data.param


# ----------------------------------------------------------------------------- one graph per pass


def _bert_layer(x: Tensor, p: dict[str, Tensor], mask: Tensor, heads: int) -> Tensor:
    batch, length, hidden = x.shape

    def split(t: Tensor) -> Tensor:
        return t.reshape(batch, length, heads, hidden // heads).permute(0, 2, 1, 3)

    q, k, v = (split(ops.linear(x, p[f"{n}.w"], p[f"{n}.b"])) for n in ("q", "k", "v"))
    attended = (
        ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        .permute(0, 2, 1, 3)
        .reshape(batch, length, hidden)
    )
    x = ops.layer_norm(
        ops.linear(attended, p["o.w"], p["o.b"]) + x, hidden, p["ln1.w"], p["ln1.b"], 1e-12
    )
    mlp = ops.linear(ops.gelu(ops.linear(x, p["up.w"], p["up.b"])), p["down.w"], p["down.b"])
    return ops.layer_norm(mlp + x, hidden, p["ln2.w"], p["ln2.b"], 1e-12)


def _bert(ids: Tensor, mask_ids: Tensor, params: dict[str, Any], layers: int, heads: int) -> Tensor:
    x = ops.embedding(ids, params["tok"]) + params["pos"][: ids.shape[1]]
    x = ops.layer_norm(x, x.shape[-1], params["ln.w"], params["ln.b"], 1e-12)
    mask = (mask_ids != 0).reshape(ids.shape[0], 1, 1, ids.shape[1])
    for layer in range(layers):
        x = _bert_layer(x, params[layer], mask, heads)
    return x


def _bert_params(
    device: str, hidden: int, layers: int, vocab: int, seed: int = 0
) -> dict[Any, Any]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> Tensor:
        t = ia.tensor((rng.standard_normal(shape) * 0.2).astype(np.float32), device=device)
        hal.mark_parameter(t)
        return t

    params: dict[Any, Any] = {
        "tok": w(vocab, hidden),
        "pos": w(64, hidden),
        "ln.w": w(hidden),
        "ln.b": w(hidden),
    }
    for layer in range(layers):
        p = {f"{n}.w": w(hidden, hidden) for n in ("q", "k", "v", "o")}
        p.update({f"{n}.b": w(hidden) for n in ("q", "k", "v", "o", "ln1", "ln2", "down")})
        p.update(
            {
                "ln1.w": w(hidden),
                "ln2.w": w(hidden),
                "up.w": w(4 * hidden, hidden),
                "up.b": w(4 * hidden),
                "down.w": w(hidden, 4 * hidden),
            }
        )
        params[layer] = p
    return params


def test_a_bert_forward_pass_is_one_graph_and_one_dispatch(backend: Any) -> None:
    hidden, layers, heads, vocab = 32, 2, 4, 50
    rng = np.random.default_rng(2)
    ids = rng.integers(0, vocab, (2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, 6:] = 0
    webnn_params = _bert_params(DEVICE, hidden, layers, vocab)
    counter = Counter(backend)
    out = _bert(on(ids), on(mask), webnn_params, layers, heads).numpy()
    assert (counter.compilations, counter.dispatches) == (1, 1)
    cpu_params = _bert_params("cpu", hidden, layers, vocab)
    expected = _bert(ia.tensor(ids), ia.tensor(mask), cpu_params, layers, heads).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    ids2 = rng.integers(0, vocab, (2, 9))
    again = _bert(on(ids2), on(mask), webnn_params, layers, heads).numpy()
    assert (counter.compilations, counter.dispatches) == (1, 2)
    np.testing.assert_allclose(
        again,
        _bert(ia.tensor(ids2), ia.tensor(mask), cpu_params, layers, heads).numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    model = exported(
        backend,
        lambda: _bert(on(ids[:, :8].copy()), on(mask[:, :8].copy()), webnn_params, layers, heads),
    )
    assert len(model.graph.input) == 2, (
        "ids and mask are the only graph inputs; every weight is a constant"
    )


# ----------------------------------------------------------------------------- reuse


def test_a_computed_tensor_is_read_back_not_recomputed(backend: Any) -> None:
    x = on(np.arange(12, dtype=np.float32).reshape(3, 4))
    h = ops.exp(x * 0.1)
    h.numpy()
    counter = Counter(backend)
    model = exported(backend, lambda: ops.sum(h, 1))
    assert counter.dispatches == 1
    assert {n.op_type for n in model.graph.node} <= {"ReduceSum", "Identity", "Cast", "Reshape"}, (
        "exp ran again"
    )
    assert h.numpy().shape == (3, 4) and counter.dispatches == 1


def test_a_live_intermediate_is_computed_with_the_result(backend: Any) -> None:
    x = on(np.arange(12, dtype=np.float32).reshape(3, 4))
    hidden = ops.exp(x * 0.1)  # still referenced here while y is read
    y = ops.sum(hidden * 2.0, 1)
    counter = Counter(backend)
    y.numpy()
    np.testing.assert_allclose(hidden.numpy(), np.exp(np.arange(12).reshape(3, 4) * 0.1), rtol=1e-6)
    assert counter.dispatches == 1, "hidden came back with y"


def test_dropped_intermediates_are_not_outputs(backend: Any) -> None:
    x = on(np.ones((2, 3), dtype=np.float32))
    model = exported(backend, lambda: ops.tanh(ops.exp(x * 3.0) + 1.0))
    assert len(model.graph.output) == 1


# ----------------------------------------------------------------------------- checks at readback


def test_integer_overflow_raises_at_readback(backend: Any) -> None:
    big = on(np.array([2**62, 3], dtype=np.int64))
    product = big * 4  # recorded, not run
    with pytest.raises(TensorOverflowError, match="mul.*int64"):
        product.numpy()
    with pytest.raises(TensorOverflowError):  # still pending: raises again, never a wrapped value
        product.numpy()
    with pytest.raises(TensorOverflowError, match="add.*int32"):
        (on(np.array([2**31 - 1], dtype=np.int32)) + on(np.array([1], dtype=np.int32))).numpy()
    with pytest.raises(TensorOverflowError, match="sub.*uint8"):
        (on(np.array([1], dtype=np.uint8)) - 2).numpy()
    with pytest.raises(TensorOverflowError, match="abs"):
        ops.abs(on(np.array([-(2**63)], dtype=np.int64))).numpy()
    with pytest.raises(TensorOverflowError, match="neg"):
        ops.neg(on(np.array([0, 3], dtype=np.uint8))).numpy()
    assert ops.neg(on(np.array([0, 0], dtype=np.uint8))).numpy().tolist() == [0, 0]
    # an overflow inside a larger computation raises too
    with pytest.raises(TensorOverflowError):
        ops.sum((big * 4) * 0).numpy()


def test_exact_int64_multiplication_and_powers(backend: Any) -> None:
    a = np.array([3037000499, -(2**62), 2**31, -1, 7], dtype=np.int64)
    b = np.array([3037000499, 2, -(2**32), -(2**63) + 1, -3], dtype=np.int64)
    np.testing.assert_array_equal((on(a) * on(b)).numpy(), a * b)
    base = np.array([3, -2, 2, -1, 0, 1, 7], dtype=np.int64)
    exponent = np.array([39, 63, 62, 1001, 0, 10**9, 22], dtype=np.int64)
    np.testing.assert_array_equal(
        (on(base) ** on(exponent)).numpy(), base**exponent
    )  # 3**39 > 2**53
    with pytest.raises(TensorOverflowError, match="pow"):
        (on(np.array([3], dtype=np.int64)) ** 40).numpy()
    with pytest.raises(TensorOverflowError, match="pow"):
        (on(np.array([2], dtype=np.int32)) ** 31).numpy()
    assert (on(np.array([-2], dtype=np.int32)) ** 31).numpy().tolist() == [-(2**31)]
    with pytest.raises(InvalidArgumentError, match="negative integer powers"):
        (on(np.array([1, 2], dtype=np.int64)) ** on(np.array([1, -1], dtype=np.int64))).numpy()


def test_exact_integer_reductions(backend: Any) -> None:
    values = np.array([2**62, 2**62, -(2**62), -(2**62), 5], dtype=np.int64)
    assert ops.sum(on(values)).item() == 5, "partial sums may wrap; the total fits"
    with pytest.raises(TensorOverflowError, match="sum"):
        ops.sum(on(np.array([2**62, 2**62], dtype=np.int64))).numpy()
    with pytest.raises(TensorOverflowError, match="prod"):
        ops.prod(on(np.full(64, 2, dtype=np.int32))).numpy()
    assert ops.prod(on(np.array([2**40, 2**40, 0], dtype=np.int64))).item() == 0, (
        "a zero factor: no overflow"
    )
    assert ops.max(on(np.array([0, -(2**63)], dtype=np.int64))).item() == 0
    rows = np.array([[3, -2, 5], [7, 1, -1]], dtype=np.int32)
    np.testing.assert_array_equal(ops.prod(on(rows), 1).numpy(), np.prod(rows, 1, dtype=np.int64))


def test_gather_index_out_of_range_raises_instead_of_clamping(backend: Any) -> None:
    table = on(np.arange(12, dtype=np.float32).reshape(4, 3))
    with pytest.raises(IndexOutOfRangeError, match="index 4 is out of range for axis 0 of size 4"):
        ops.gather(table, on(np.array([0, 4])), 0).numpy()
    with pytest.raises(IndexOutOfRangeError, match="-5"):
        ops.gather(table, on(np.array([-5], dtype=np.int32)), 0).numpy()
    np.testing.assert_array_equal(
        ops.gather(table, on(np.array([-4, 3])), 0).numpy(), np.arange(12).reshape(4, 3)[[-4, 3]]
    )


def test_gathers_through_one_index_tensor_check_its_range_once(backend: Any) -> None:
    """An encoder gathers through the same indices in every layer: their min and max are
    computed once (one ReduceMin, one ReduceMax, one pair of check outputs), and each gather
    still checks them against its own table."""
    small = on(np.arange(12, dtype=np.float32).reshape(4, 3))
    large = on(np.arange(18, dtype=np.float32).reshape(6, 3))
    fine = on(np.array([0, 3, 1]))
    model = exported(
        backend,
        lambda: sum(
            (ops.gather(t, fine, 0) for t in (small, large, small, large)),
            on(np.zeros((3, 3), np.float32)),
        ),
    )
    ops_used = [node.op_type for node in model.graph.node]
    assert ops_used.count("ReduceMin") == 1 and ops_used.count("ReduceMax") == 1, ops_used
    assert len(model.graph.output) == 3  # the sum and the shared (min, max)
    beyond = on(np.array([0, 5]))  # in range for the large table only
    np.testing.assert_array_equal(ops.gather(large, beyond, 0).numpy()[1], [15, 16, 17])
    with pytest.raises(IndexOutOfRangeError, match="index 5 is out of range for axis 0 of size 4"):
        (ops.gather(large, beyond, 0) + ops.gather(small, beyond, 0)).numpy()


@pytest.mark.parametrize(
    ("values", "dtype", "target", "error", "match"),
    [
        ([1.0, np.nan], "float32", "int32", TensorOverflowError, "nan"),
        ([np.inf], "float32", "int64", TensorOverflowError, "infinite"),
        ([2.5], "float16", "uint8", DtypeError, "truncate"),
        ([2.0**31], "float32", "int32", TensorOverflowError, "out of range for int32"),
        ([-1.0], "float32", "uint8", TensorOverflowError, "uint8"),
        ([2.0], "float32", "bool", TensorOverflowError, "only 0 and 1"),
        ([70000.0], "float32", "float16", TensorOverflowError, "float16"),
        ([300], "int64", "uint8", TensorOverflowError, "300"),
        ([-(2**31) - 1], "int64", "int32", TensorOverflowError, "int32"),
    ],
)
def test_value_changing_casts_raise(
    backend: Any, values: list[float], dtype: str, target: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        on(np.array(values, dtype=dtype)).astype(target).numpy()


def test_casts_that_fit_convert_exactly(backend: Any) -> None:
    edges = np.array([-(2.0**31), 2.0**31 - 128, 0.0, -0.0], dtype=np.float32)
    np.testing.assert_array_equal(on(edges).astype("int32").numpy(), edges.astype(np.int32))
    np.testing.assert_array_equal(
        on(np.array([0.0, 1.0], np.float32)).astype("bool").numpy(), [False, True]
    )
    np.testing.assert_array_equal(
        on(np.array([255, 0], np.int64)).astype("uint8").numpy(), [255, 0]
    )
    assert np.isinf(on(np.array([np.inf], np.float32)).astype("float16").numpy()).all(), (
        "inf stays inf"
    )


def test_unsupported_dtypes_are_errors(backend: Any) -> None:
    with pytest.raises(UnsupportedDtypeError, match="float64"):
        ia.tensor(np.zeros(2), device=DEVICE)
    with pytest.raises(UnsupportedDtypeError, match="float64"):
        on(np.zeros(2, dtype=np.float32)).astype("float64")
    assert {d.name for d in backend.supported_dtypes} == {
        "float16",
        "float32",
        "int32",
        "int64",
        "int8",
        "uint8",
        "bool",
    }


# ----------------------------------------------------------------------------- numerics


def test_float_floor_division_follows_numpy_exactly(backend: Any) -> None:
    a = np.array(
        [1.0, -1.0, 0.7, 3.0, -7.5, 5.0, 1.0, -1.0, 0.0, np.inf, 2.0, 4.0e6], dtype=np.float32
    )
    b = np.array(
        [0.1, 0.1, 0.1, 0.0, 2.0, -3.0, np.inf, np.inf, 0.0, 2.0, np.nan, 0.3], dtype=np.float32
    )
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ops.floor_divide(on(a), on(b)).numpy(), np.floor_divide(a, b))
        np.testing.assert_allclose(
            ops.remainder(on(a), on(b)).numpy(), np.remainder(a, b), rtol=1e-6
        )
        half = np.array([7.0, -7.0, 0.3], dtype=np.float16)
        np.testing.assert_array_equal(
            (on(half) // on(np.array([2.0, 2.0, 0.1], np.float16))).numpy(),
            half // np.array([2.0, 2.0, 0.1], np.float16),
        )


def test_integer_floor_division_and_remainder(backend: Any) -> None:
    a = np.array([7, -7, 7, -7, -(2**31)], dtype=np.int32)
    b = np.array([2, 2, -2, -2, -1], dtype=np.int32)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal((on(a) // on(b)).numpy(), a // b)
        np.testing.assert_array_equal((on(a) % on(b)).numpy(), a % b)
    with pytest.raises(InvalidArgumentError, match="division by zero"):
        (on(a) % 0).numpy()


def test_nan_propagates_like_numpy(backend: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 300)).astype(np.float32)
    x[2, 7] = x[5, 100] = np.nan
    np.testing.assert_array_equal(ops.max(on(x), 1).numpy(), np.max(x, 1))
    np.testing.assert_array_equal(ops.min(on(x), 0).numpy(), np.min(x, 0))
    np.testing.assert_array_equal(ops.argmax(on(x), 1).numpy(), np.argmax(x, 1))
    np.testing.assert_array_equal(ops.argmin(on(x), 1).numpy(), np.argmin(x, 1))
    np.testing.assert_array_equal(
        ops.sign(on(x.astype(np.float16))).numpy(), np.sign(x.astype(np.float16))
    )


def test_mixed_float_int_comparisons_are_exact(backend: Any) -> None:
    f = np.array([16777216.0, 2.5, -0.5, np.nan, 3e10, -np.inf], dtype=np.float32)
    i = np.array([16777217, 2, 0, 0, 2**31 - 1, -5], dtype=np.int32)
    for op in ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal"):
        expected = getattr(np, op)(f.astype(np.float64), i.astype(np.float64))
        np.testing.assert_array_equal(getattr(ops, op)(on(f), on(i)).numpy(), expected, err_msg=op)
        np.testing.assert_array_equal(
            getattr(ops, op)(on(i), on(f)).numpy(),
            getattr(np, op)(i.astype(np.float64), f.astype(np.float64)),
        )
    np.testing.assert_array_equal((on(i) < 2.5).numpy(), i < 2.5)
    np.testing.assert_array_equal(ops.logical_and(on(f), on(i)).numpy(), np.logical_and(f, i))


def test_layer_norm_of_rows_with_a_large_mean(backend: Any) -> None:
    x = (np.float32(1000.0) + np.array([[0.0, 1e-3, 2e-3, 3e-3]], dtype=np.float32)).astype(
        np.float32
    )
    got = ops.layer_norm(on(x), 4, eps=1e-12).numpy()
    exact = x.astype(np.float64)
    exact = (exact - exact.mean()) / np.sqrt(exact.var() + 1e-12)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)


def test_empty_tensors_are_computed_on_the_host(backend: Any) -> None:
    empty = on(np.zeros((0, 3), dtype=np.float32))
    counter = Counter(backend)
    assert ops.sum(empty, 0).numpy().tolist() == [0.0, 0.0, 0.0]
    assert (empty * 2).shape == (0, 3) and ops.concat(
        [empty, on(np.ones((1, 3), np.float32))]
    ).numpy().tolist() == [[1.0] * 3]
    assert (
        ops.matmul(on(np.ones((2, 0), np.float32)), on(np.ones((0, 3), np.float32)))
        .numpy()
        .tolist()
        == [[0.0] * 3] * 2
    )
    assert counter.compilations == 0 and counter.host_ops >= 3


# ------------------------------------------------------------------------ cache, fallback, info


@pytest.fixture
def small_cache(backend: Any) -> Iterator[Any]:
    size = backend.cache_size
    backend.cache_size = 3
    try:
        yield backend
    finally:
        backend.cache_size = size


def test_the_compiled_graph_cache_is_bounded(small_cache: Any) -> None:
    backend = small_cache

    def run(n: int) -> None:
        np.testing.assert_array_equal(
            ops.sqrt(on(np.full(n, 4.0, np.float32))).numpy(), np.full(n, 2.0)
        )

    counter = Counter(backend)
    for n in range(101, 106):
        run(n)
    assert counter.compilations == 5 and len(backend._cache) <= 3
    run(105)
    assert counter.compilations == 5, "the most recent graph is still cached"
    run(101)
    assert counter.compilations == 6, "the least recently used graph was dropped"


def test_the_cache_is_bounded_by_memory_too(backend: Any) -> None:
    limit = backend.cache_bytes
    backend.cache_bytes = 1  # every graph costs more: only the newest stays
    try:
        for n in (201, 202):
            ops.exp(on(np.zeros(n, np.float32))).numpy()
        assert backend.cached_graphs == 1
    finally:
        backend.cache_bytes = limit
    backend.clear_cache()
    assert backend.cached_graphs == 0


def test_a_graph_is_charged_for_the_prepacked_copy_of_its_matrix_weights(backend: Any) -> None:
    """Sessions use the parameters in place (shared initializers) but prepack matrix weights
    (measured: a MiniLM graph adds ~45 MB of RSS, its 43 MB of matrices), so the memory bound
    counts a matrix weight once, a parameter read otherwise (an embedding table) and an
    input not at all."""
    weight = on(np.ones((256, 512), np.float32))
    table = on(np.ones((4096, 64), np.float32))
    hal.mark_parameter(weight, table)
    backend.clear_cache()
    ops.linear(on(np.ones((3, 512), np.float32)), weight).numpy()
    (entry,) = backend._cache.values()
    assert weight.size * 4 <= entry.cost < 2 * weight.size * 4
    backend.clear_cache()
    ops.gather(table, on(np.arange(3)), axis=0).numpy()
    (entry,) = backend._cache.values()
    assert entry.cost < table.size * 4 * 0.1
    backend.clear_cache()
    ops.add(on(np.ones((256, 512), np.float32)), 1.0).numpy()  # two per-call inputs, no constants
    (entry,) = backend._cache.values()
    assert entry.cost < weight.size * 4 * 0.5 + 4 * 256 * 512 * 4


def test_ops_webnn_cannot_express_fall_back_to_cpu_with_a_warning(backend: Any) -> None:
    x = on(np.arange(2**9, dtype=np.float32))
    with pytest.warns(BackendFallbackWarning, match="at most 8 dimensions"):
        y = x.reshape((2,) * 9) * 2.0
    assert y.device == DEVICE
    np.testing.assert_array_equal(y.numpy(), (np.arange(2**9) * 2.0).reshape((2,) * 9))
    a = np.ones((512, 512), dtype=np.int32)
    with pytest.warns(BackendFallbackWarning, match="integer matmul"):
        product = on(a) @ on(a)
    np.testing.assert_array_equal(product.numpy(), a @ a)


def test_info_describes_the_backend(backend: Any) -> None:
    info = backend.info()
    assert info.available and info.api == "onnxruntime" and info.name == DEVICE
    assert "CPUExecutionProvider" in info.details["execution_providers"]
    assert "float64" not in info.dtypes and "bool" in info.dtypes
    assert backend.fused == {
        "softmax", "layer_norm", "linear", "attention", "clamp", "quantized_linear",
        "dynamic_quantized_linear", "row_quantized_linear", "block_quantized_linear",
        "index_add",
    }  # fmt: skip
    assert math.isfinite(float(ops.sum(on(np.ones(3, np.float32))).item()))
