"""Kernel variants and numerics the op suite does not reach: every matmul kernel on awkward
shapes, the per-adapter tuning and its cache, float64 math over wide ranges, dispatch grids
beyond one dimension, and the reduction shapes."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import TensorOverflowError

VARIANTS = [
    ("naive", (1, 1), (8, 8)),
    ("tiled", (4, 4), (16, 16)),
    ("rb", (4, 4), (8, 8)),
    ("rb", (8, 8), (8, 8)),
    ("rb", (8, 16), (8, 4)),
    ("rb", (16, 16), (8, 8)),
]


@pytest.fixture
def forced(gpu: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Force the matmul kernel the backend picks for float32 products."""

    def force(variant: str, block: tuple[int, int], workgroup: tuple[int, int]) -> None:
        def choose(
            wtype: Any, m: int, n: int, k: int, trans_b: bool
        ) -> tuple[str, tuple[int, int], tuple[int, int]]:
            if variant == "rb" and (k % 4 or (not trans_b and n % 4)):
                return "naive", (1, 1), (8, 8)
            return variant, block, workgroup

        monkeypatch.setattr(gpu, "_choose_variant", choose)

    return force


@pytest.mark.parametrize(
    "variant,block,workgroup", VARIANTS, ids=[f"{v}{b[0]}x{b[1]}" for v, b, _ in VARIANTS]
)
def test_every_matmul_kernel_matches_numpy(
    forced: Any, variant: str, block: tuple[int, int], workgroup: tuple[int, int]
) -> None:
    forced(variant, block, workgroup)
    rng = np.random.default_rng(0)
    # batch broadcasting, M and N that are not multiples of any block, K a multiple of 4
    a = rng.standard_normal((2, 1, 37, 20)).astype(np.float32)
    b = rng.standard_normal((3, 20, 44)).astype(np.float32)
    got = ops.matmul(ia.tensor(a, device="webgpu"), ia.tensor(b, device="webgpu")).numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4)
    # B transposed (linear) with bias, and a fused activation in the epilogue
    x = rng.standard_normal((5, 7, 24)).astype(np.float32)
    w = rng.standard_normal((19, 24)).astype(np.float32)
    bias = rng.standard_normal(19).astype(np.float32)
    pre = ops.linear(
        ia.tensor(x, device="webgpu"),
        ia.tensor(w, device="webgpu"),
        ia.tensor(bias, device="webgpu"),
    )
    post = ops.silu(pre)
    expected = x @ w.T + bias
    np.testing.assert_allclose(pre.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        post.numpy(), expected / (1 + np.exp(-expected)), rtol=1e-4, atol=1e-4
    )


def test_matmul_of_other_dtypes_and_empty_inner_dimension(gpu: Any) -> None:
    rng = np.random.default_rng(1)
    for dtype in ("float64", "int32", "int64", "float16"):
        if dtype not in {d.name for d in gpu.supported_dtypes}:
            continue
        a = rng.integers(-4, 4, (3, 17, 9)).astype(dtype)
        b = rng.integers(-4, 4, (9, 6)).astype(dtype)
        got = (ia.tensor(a, device="webgpu") @ ia.tensor(b, device="webgpu")).numpy()
        np.testing.assert_allclose(
            got.astype(np.float64), (a.astype(np.float64) @ b.astype(np.float64)), rtol=1e-3
        )
        assert got.dtype == np.dtype(dtype)
    empty = ia.zeros(4, 0, device="webgpu") @ ia.zeros(0, 3, device="webgpu")
    np.testing.assert_array_equal(empty.numpy(), np.zeros((4, 3), np.float32))


def test_tuning_measures_caches_and_can_be_forced(
    gpu: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate.hal.webgpu import _tuning
    from ipfs_accelerate.hal.webgpu._tuning import TUNE_THRESHOLD, Tuner

    monkeypatch.delenv("IPFS_ACCELERATE_WEBGPU_MATMUL", raising=False)
    # three candidates keep the test short (big register blocks take seconds to compile)
    monkeypatch.setattr(
        _tuning,
        "CANDIDATES",
        (("rb", (4, 4), (8, 8)), ("tiled", (4, 4), (16, 16)), ("naive", (1, 1), (8, 8))),
    )
    path = tmp_path / "tuning.json"
    tuner = Tuner(gpu.dispatcher, path)
    measured = tuner.measure(size=64)
    assert measured.source == "measured" and len(measured.gflops) == 3
    rates = dict(measured.gflops)
    assert rates[measured.name] >= 0.85 * max(rates.values())
    monkeypatch.setattr(tuner, "measure", lambda size=None: measured)
    assert tuner.choice(TUNE_THRESHOLD - 1).source == "default"  # small problems do not measure
    assert tuner.choice(TUNE_THRESHOLD) is measured
    stored = json.loads(path.read_text())[tuner.key]
    assert stored["variant"] == measured.variant and tuple(stored["block"]) == measured.block
    again = Tuner(gpu.dispatcher, path).choice(TUNE_THRESHOLD)
    assert again.source == "cached" and again.name == measured.name
    monkeypatch.setenv("IPFS_ACCELERATE_WEBGPU_MATMUL", "rb8x16:8x4")
    forced = Tuner(gpu.dispatcher, path).choice(TUNE_THRESHOLD)
    assert (forced.source, forced.variant, forced.block, forced.workgroup) == (
        "forced",
        "rb",
        (8, 16),
        (8, 4),
    )


def test_float64_math_is_accurate_over_wide_ranges(gpu: Any) -> None:
    if "float64" not in {d.name for d in gpu.supported_dtypes}:
        pytest.skip("no float64 on this adapter")
    from scipy import special

    rng = np.random.default_rng(2)

    def check(op: str, x: np.ndarray, reference: np.ndarray, rtol: float = 1e-13) -> None:
        got = getattr(ops, op)(ia.tensor(x, device="webgpu")).numpy()
        np.testing.assert_allclose(got, reference, rtol=rtol, atol=1e-300, err_msg=op)

    wide = rng.uniform(-700, 700, 2000)
    check("exp", wide, np.exp(wide))
    positive = np.exp(rng.uniform(-690, 690, 2000))
    check("log", positive, np.log(positive))
    check(
        "log",
        np.array([1.0, 1 + 1e-15, 0.9999999999, 5e-324, 1.7e308]),
        np.log([1.0, 1 + 1e-15, 0.9999999999, 5e-324, 1.7e308]),
    )
    angles = rng.uniform(-1e4, 1e4, 2000)
    check("sin", angles, np.sin(angles), rtol=1e-11)
    check("cos", angles, np.cos(angles), rtol=1e-11)
    small = rng.uniform(-30, 30, 2000)
    check("tanh", small, np.tanh(small))
    check("erf", small / 5, special.erf(small / 5))
    check("sigmoid", small, special.expit(small))
    with np.errstate(all="ignore"):
        check(
            "exp",
            np.array([800.0, -800.0, np.inf, -np.inf, np.nan]),
            np.exp([800.0, -800.0, np.inf, -np.inf, np.nan]),
        )
        check("log", np.array([0.0, -1.0, np.inf, np.nan]), np.log([0.0, -1.0, np.inf, np.nan]))
    base = rng.uniform(0.1, 10, 500)
    power = rng.uniform(-20, 20, 500)
    got = (ia.tensor(base, device="webgpu") ** ia.tensor(power, device="webgpu")).numpy()
    np.testing.assert_allclose(got, base**power, rtol=1e-12)
    negative = (
        ia.tensor(np.array([-2.0, -2.0, -0.5]), device="webgpu")
        ** ia.tensor(np.array([3.0, 0.5, -2.0]), device="webgpu")
    ).numpy()
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(negative, np.power([-2.0, -2.0, -0.5], [3.0, 0.5, -2.0]))


def test_float32_trig_stays_accurate_away_from_zero(gpu: Any) -> None:
    x = np.random.default_rng(3).uniform(-2000, 2000, 4000).astype(np.float32)
    for op, ref in (("sin", np.sin), ("cos", np.cos)):
        got = getattr(ops, op)(ia.tensor(x, device="webgpu")).numpy()
        np.testing.assert_allclose(got, ref(x.astype(np.float64)), atol=5e-5, err_msg=op)


def test_float_narrowing_rounds_like_numpy_at_the_edge(gpu: Any) -> None:
    if "float16" not in {d.name for d in gpu.supported_dtypes}:
        pytest.skip("no float16 on this adapter")
    edge = np.array([65504.0, 65519.0, -65519.0, np.inf, -np.inf], dtype=np.float32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(
            ia.tensor(edge, device="webgpu").astype("float16").numpy(), edge.astype(np.float16)
        )
    with pytest.raises(TensorOverflowError, match=r"65520.0.*overflows float16"):
        ia.tensor(np.array([1.0, 65520.0], np.float32), device="webgpu").astype("float16").numpy()


def test_grids_beyond_the_per_dimension_limit(gpu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # play an adapter with 3 workgroups per dimension
    monkeypatch.setattr(gpu.dispatcher, "max_groups", 3)
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal(5000).astype(np.float32)  # 20 workgroups of 256 -> a 3 x 7 grid
    x = ia.tensor(x_np, device="webgpu")
    np.testing.assert_allclose((x * 2 + 1).numpy(), x_np * 2 + 1, rtol=1e-6)
    rows = rng.standard_normal((40, 300)).astype(np.float32)
    np.testing.assert_allclose(
        ops.sum(ia.tensor(rows, device="webgpu"), 1).numpy(), rows.sum(1), rtol=1e-4, atol=1e-4
    )
    # 7 matrices: z split over 3 dispatches
    batched = rng.standard_normal((7, 4, 4)).astype(np.float32)
    got = (ia.tensor(batched, device="webgpu") @ ia.tensor(batched, device="webgpu")).numpy()
    np.testing.assert_allclose(got, batched @ batched, rtol=1e-5, atol=1e-5)
    # unfused flat map kernels: the first call compiles, the later ones take the cached paths
    i_np = rng.integers(-1000, 1000, 5000).astype(np.int32)
    i = ia.tensor(i_np, device="webgpu")
    for _ in range(2):
        # checked for overflow: not fused
        np.testing.assert_array_equal((i + i).numpy(), i_np + i_np)
        np.testing.assert_array_equal(i.astype("float32").numpy(), i_np.astype(np.float32))


@pytest.mark.parametrize(
    "shape,axis", [((3, 1000), 1), ((2000, 3), 0), ((5, 700, 2), 1), ((4, 3, 5), (0, 2))]
)
def test_reductions_over_long_and_short_rows(gpu: Any, shape: tuple[int, ...], axis: Any) -> None:
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    t = ia.tensor(x, device="webgpu")
    n = x.size
    for op in ("sum", "mean", "max", "min", "var"):
        np.testing.assert_allclose(
            getattr(ops, op)(t, axis).numpy(),
            getattr(np, op)(x, axis=axis),
            rtol=1e-4,
            atol=1e-4 * math.sqrt(n),
            err_msg=op,
        )
    if isinstance(axis, int):
        np.testing.assert_array_equal(ops.argmax(t, axis).numpy(), np.argmax(x, axis))
        np.testing.assert_allclose(
            ops.softmax(t, axis).numpy(),
            np.exp(x) / np.exp(x).sum(axis, keepdims=True),
            rtol=1e-5,
            atol=1e-6,
        )


def test_int64_sums_detect_overflow_exactly(gpu: Any) -> None:
    if "int64" not in {d.name for d in gpu.supported_dtypes}:
        pytest.skip("no int64 on this adapter")
    big = 2**62
    fits = ia.tensor(np.array([big, big, -big, 2**63 - 1 - big], dtype=np.int64), device="webgpu")
    assert int(ops.sum(fits).item()) == 2**63 - 1  # wraps on the way, not at the end
    with pytest.raises(TensorOverflowError, match="sum: integer result overflows int64"):
        ops.sum(ia.tensor(np.array([big, big, 1], dtype=np.int64), device="webgpu")).numpy()
    zero_saves = ia.tensor(np.array([2**40, 2**40, 0], dtype=np.int64), device="webgpu")
    assert int(ops.prod(zero_saves).item()) == 0
    with pytest.raises(TensorOverflowError, match="prod"):
        ops.prod(ia.tensor(np.array([2**40, 2**40], dtype=np.int64), device="webgpu")).numpy()


def test_float16_means_divide_by_the_exact_count(gpu: Any) -> None:
    if "float16" not in {d.name for d in gpu.supported_dtypes}:
        pytest.skip("no float16 on this adapter")
    x = np.full(70001, 0.5, dtype=np.float16)  # the count is not a float16 value (max 65504)
    t = ia.tensor(x, device="webgpu")
    assert float(ops.mean(t).item()) == 0.5
    assert float(ops.var(t).item()) == 0.0
    # 3001 rounds to 3000 in float16
    ones = ia.tensor(np.ones(3001, np.float16), device="webgpu")
    assert float(ops.mean(ones).item()) == 1.0


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_activation_fused_into_a_product_of_a_strided_slice(gpu: Any, activation: str) -> None:
    """BERT's pooler, tanh(linear(h[:, 0])): the slice's contiguous copy goes back to the pool
    before the activation is folded into the product's epilogue; the epilogue's output must
    not be that buffer (wgpu refuses a buffer bound read-only and read-write in one dispatch)."""
    h = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal(6).astype(np.float32)
    for _ in range(3):  # the pool hands the freed copy out again on later rounds too
        x = ia.tensor(h, device="webgpu")
        out = getattr(ops, activation)(
            ops.linear(x[:, 0], ia.tensor(w, device="webgpu"), ia.tensor(b, device="webgpu"))
        )
        expected = getattr(ops, activation)(
            ops.linear(ia.tensor(h)[:, 0], ia.tensor(w), ia.tensor(b))
        ).numpy()
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_matmul_fallbacks_take_the_fixed_shape_of_their_variant(
    gpu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate.hal.webgpu._kernels._matmul import FIXED_SHAPES, tile_of
    from ipfs_accelerate.hal.webgpu._kernels._wgsl import F32
    from ipfs_accelerate.hal.webgpu._tuning import CANDIDATES, MatmulChoice, _parse_forced

    tuner = gpu._matmul_tuner()
    small = gpu._choose_variant(F32, 4, 4, 4, False)
    assert small == ("naive", *FIXED_SHAPES["naive"])
    for variant, (block, workgroup) in FIXED_SHAPES.items():
        assert (variant, block, workgroup) in CANDIDATES
        forced = _parse_forced(variant)
        assert forced is not None and (forced.variant, forced.block, forced.workgroup) == (
            variant,
            block,
            workgroup,
        )
        monkeypatch.setattr(tuner, "_choice", MatmulChoice("rb", (8, 8), (8, 8), variant, "forced"))
        # K = 30 is no multiple of 4: the register-blocked kernel cannot take it
        assert gpu._choose_variant(F32, 32, 32, 30, False) == (variant, block, workgroup)
        assert tile_of(variant, workgroup, block) == (
            workgroup[0] * block[1],
            workgroup[1] * block[0],
        )


# ----------------------------------------------------------------------------- WGSL helpers


def _functions(source: str) -> set[str]:
    return set(re.findall(r"^fn (\w+)\(", source, re.MULTILINE))


def test_map_kernels_carry_only_the_helpers_their_body_calls() -> None:
    from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
    from ipfs_accelerate.hal.webgpu._kernels._wgsl import WTYPES

    f32, f64, i32 = WTYPES["float32"], WTYPES["float64"], WTYPES["int32"]

    def unary(op: str, wtype: Any) -> set[str]:
        return _functions(ew.map_source(op, [(wtype, "c")], ew.unary_body(op, wtype))[0])

    def binary(op: str, wtype: Any) -> set[str]:
        return _functions(
            ew.map_source(op, [(wtype, "c"), (wtype, "k")], ew.binary_body(op, wtype))[0]
        )

    library = set(ew.MAP_HELPERS.functions)
    assert not binary("add", f32) & library
    assert not binary("add", f64) & library
    assert unary("gelu", f32) & library == {"gelu_f", "erf_f"}
    assert unary("gelu_tanh", f32) & library == {"gelu_tanh_f", "sigmoid_f"}
    assert unary("sin", f32) & library == {"sin_f", "trig_f"}
    assert binary("remainder", f32) & library == {"divmod_f", "fmod_f", "two_product_err_f"}
    assert binary("pow", f64) & library == {"pow_d", "powi_d", "exp_d", "log_d"}
    assert unary("gelu", f64) & library == {
        "gelu_d",
        "erfc_d",
        "erf_d",
        "erf_series_d",
        "erfc_cf_d",
        "exp_d",
    }
    assert binary("mul", i32) & library == {"mul_ovf_i32", "min_i32"}
    assert "pd" in binary("add", f64)  # the float64 base (scalar operands, error words) stays


def test_helper_library_follows_calls_and_ignores_comments() -> None:
    from ipfs_accelerate.hal.webgpu._kernels._wgsl import HelperLibrary

    library = HelperLibrary(
        "\nfn a(x: f32) -> f32 { return b(x) + 1.0; }\n"
        "fn b(x: f32) -> f32 {\n  // c(x) would be slower\n  return x;\n}\n"
        "fn c(x: f32) -> f32 { return x; }\n"
    )
    assert library.needed("r = a(a0);") == ["a", "b"]
    assert library.needed("r = a0; // a(a0)") == []
    assert library.select("r = c(a0) + b (a1);") == library.functions["b"] + library.functions["c"]
    with pytest.raises(ValueError, match="defined twice"):
        library.extended("fn c() {}\n")
    with pytest.raises(ValueError, match="functions only"):
        HelperLibrary("const K = 1;\nfn d() {}\n")


def test_every_element_wise_kernel_compiles(gpu: Any) -> None:
    """Each generated map kernel, with only the helpers it was given, passes the WGSL compiler."""
    from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
    from ipfs_accelerate.hal.webgpu._kernels._wgsl import WTYPES
    from ipfs_accelerate.hal.webgpu._pipelines import PipelineCache

    unary = ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "relu", "floor", "ceil", "round",
             "sign", "reciprocal", "square", "sin", "cos", "tanh", "sigmoid", "silu", "gelu",
             "gelu_tanh", "erf", "logical_not", "isnan", "isinf", "isfinite"]  # fmt: skip
    binary = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "floor_divide",
              "remainder", "equal", "not_equal", "less", "logical_and"]  # fmt: skip
    cache = PipelineCache(gpu.device.device, gpu.device.wgpu)
    for dtype in sorted(d.name for d in gpu.supported_dtypes):
        wtype = WTYPES[dtype]
        kernels = []
        for op in unary:
            try:
                kernels.append((op, [(wtype, "c")], ew.unary_body(op, wtype)))
            except KeyError:  # not defined on this dtype
                continue
        for op in binary:
            if wtype.kind == "b" and op not in ("equal", "not_equal", "less", "logical_and"):
                continue  # the op layer turns bool arithmetic into logical ops
            try:
                kernels.append((op, [(wtype, "c"), (wtype, "k")], ew.binary_body(op, wtype)))
            except KeyError:  # not on this dtype (int div: the op layer sends floats)
                continue
        for other in WTYPES.values():
            if other.name in {d.name for d in gpu.supported_dtypes}:
                kernels.append(("cast", [(wtype, "c")], ew.cast_body(wtype, other)))
        for op, inputs, body in kernels:
            source, layout = ew.map_source(op, inputs, body)
            cache.get(f"{op}.{dtype}", source, layout)
