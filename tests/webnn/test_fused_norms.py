"""WebNN graphs built by hand with a decoder's RMSNorm and rotary-embedding patterns run ONNX
Runtime's SimplifiedLayerNormalization and RotaryEmbedding (checked with its profiler) and give
numpy's results; near-miss patterns stay on the plain lowering, with their own results."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.webnn.quantized_kernels import kernels, profiled

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

B, N, S, D = 2, 3, 4, 8
F32 = "float32"
EPS = 1e-5


@pytest.fixture
def ctx() -> Any:
    from ipfs_accelerate import webnn

    return webnn.create_context()


def _run(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp: Path, inputs: dict[str, np.ndarray],
    body: Callable[[Any, dict[str, Any]], dict[str, Any]],
) -> tuple[dict[str, np.ndarray], set[str]]:  # fmt: skip
    from ipfs_accelerate import webnn

    b = webnn.MLGraphBuilder(ctx)
    operands = {
        name: b.input(name, {"dataType": F32, "shape": list(value.shape)})
        for name, value in inputs.items()
    }
    with profiled(monkeypatch, tmp):
        graph = b.build(body(b, operands))
    used = {name: value for name, value in inputs.items() if name in graph._input_descriptors}
    return ctx.compute(graph, used), kernels(graph)


# ---------------------------------------------------------------------- RMSNorm


def _rms_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((B, S, D)).astype(np.float32),
        "y": rng.standard_normal((B, S, D)).astype(np.float32),
        "w": rng.standard_normal(D).astype(np.float32),
    }


def _rms_reference(x: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=axis, keepdims=True) + np.float32(EPS)) * w


def _rms(
    b: Any, x: Any, w: Any, *, square: Any = None, axis: int = 2, eps: Any = None,
    outputs: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    """``x * rsqrt(mean(x * x) + eps) * w`` as the ``webnn`` backend emits it."""
    squared = b.mul(x, x if square is None else square)
    mean = b.reduce_mean(squared, axes=[axis], keep_dimensions=True)
    if outputs is not None:
        outputs["mean"] = mean
    inverse = b.reciprocal(b.sqrt(b.add(mean, b.constant(F32, EPS) if eps is None else eps)))
    return b.mul(b.mul(x, inverse), w)


def test_rms_norm_pattern_runs_simplified_layer_normalization(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _rms_inputs()
    results, ran = _run(
        ctx, monkeypatch, tmp_path, x, lambda b, o: {"out": _rms(b, o["x"], o["w"])}
    )
    assert "SimplifiedLayerNormalization" in ran
    assert not {"ReduceMean", "Sqrt", "Reciprocal"} & ran
    np.testing.assert_allclose(results["out"], _rms_reference(x["x"], x["w"]), rtol=1e-5, atol=1e-6)


def test_rms_norm_with_a_constant_weight_in_either_order_is_fused(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _rms_inputs(1)
    weight = x.pop("w")

    def body(b: Any, o: dict[str, Any]) -> dict[str, Any]:
        w = b.constant({"dataType": F32, "shape": [D]}, weight)
        inverse = b.reciprocal(
            b.sqrt(
                b.add(
                    b.constant(F32, EPS),
                    b.reduce_mean(b.mul(o["x"], o["x"]), axes=[2], keep_dimensions=True),
                )
            )
        )
        return {"out": b.mul(w, b.mul(inverse, o["x"]))}

    results, ran = _run(ctx, monkeypatch, tmp_path, x, body)
    assert "SimplifiedLayerNormalization" in ran
    np.testing.assert_allclose(results["out"], _rms_reference(x["x"], weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "variant", ["other_axis", "square_of_another", "mean_also_an_output", "full_weight", "no_eps"]
)
def test_rms_norm_near_misses_stay_plain(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variant: str
) -> None:
    x = _rms_inputs(2)
    if variant == "full_weight":  # a weight per element is not the kernel's scale
        x["w"] = np.random.default_rng(3).standard_normal((B, S, D)).astype(np.float32)

    def body(b: Any, o: dict[str, Any]) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        if variant == "other_axis":
            outputs["out"] = _rms(b, o["x"], o["w"], axis=1)
        elif variant == "square_of_another":
            outputs["out"] = _rms(b, o["x"], o["w"], square=o["y"])
        elif variant == "mean_also_an_output":
            outputs["out"] = _rms(b, o["x"], o["w"], outputs=outputs)
        elif variant == "no_eps":  # the added value is not a constant
            outputs["out"] = _rms(b, o["x"], o["w"], eps=b.abs(o["y"]))
        else:
            outputs["out"] = _rms(b, o["x"], o["w"])
        return outputs

    results, ran = _run(ctx, monkeypatch, tmp_path, x, body)
    assert "SimplifiedLayerNormalization" not in ran
    xs, w, y = x["x"], x["w"], x["y"]
    with np.errstate(invalid="ignore"):  # a negative mean of x * y: NaN on both sides
        if variant == "other_axis":
            expected = xs / np.sqrt(np.mean(xs * xs, axis=1, keepdims=True) + np.float32(EPS)) * w
        elif variant == "square_of_another":
            expected = xs / np.sqrt(np.mean(xs * y, axis=-1, keepdims=True) + np.float32(EPS)) * w
        elif variant == "no_eps":
            expected = xs / np.sqrt(np.mean(xs * xs, axis=-1, keepdims=True) + np.abs(y)) * w
        else:
            expected = _rms_reference(xs, w)
    np.testing.assert_allclose(results["out"], expected, rtol=1e-5, atol=1e-6)
    if variant == "mean_also_an_output":
        np.testing.assert_allclose(
            results["mean"], np.mean(xs * xs, axis=-1, keepdims=True), rtol=1e-6
        )


# ---------------------------------------------------------------------- rotary


def _rotary_inputs(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    angles = rng.standard_normal((rows, 1, S, D // 2)).astype(np.float32) * 3
    return {
        "x": rng.standard_normal((B, N, S, D)).astype(np.float32),
        "c": np.cos(angles),
        "s": np.sin(angles),
    }


def _rotary_reference(x: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    half = D // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.concatenate([c, c], -1) + rotated * np.concatenate([s, s], -1)


def _rotary(b: Any, x: Any, c: Any, s: Any, *, swap: bool = False, same_tables: bool = False):
    """``rotate`` of models/llama.py as the ``webnn`` backend emits it; ``swap``: the halves
    of the rotation the wrong way round; ``same_tables``: sin taken from [c, s]."""
    half = D // 2
    high = b.slice(x, [0, 0, 0, half], [B, N, S, half])
    low = b.slice(x, [0, 0, 0, 0], [B, N, S, half])
    parts = [low, b.neg(high)] if swap else [b.neg(high), low]
    rotated = b.concat(parts, 3)
    cos = b.concat([c, c], 3)
    sin = b.concat([c, s] if same_tables else [s, s], 3)
    return b.add(b.mul(x, cos), b.mul(rotated, sin))


@pytest.mark.parametrize("rows", [B, 1], ids=["per_row_tables", "shared_tables"])
def test_rotate_half_pattern_runs_rotary_embedding(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rows: int
) -> None:
    x = _rotary_inputs(rows)
    # two rotations over the same tables (q and k): each fused, the tables shared
    results, ran = _run(
        ctx, monkeypatch, tmp_path, x,
        lambda b, o: {
            "q": _rotary(b, o["x"], o["c"], o["s"]),
            "k": _rotary(b, b.neg(o["x"]), o["c"], o["s"]),
        },
    )  # fmt: skip
    assert "RotaryEmbedding" in ran
    assert not {"Concat", "Slice", "Split"} & ran
    np.testing.assert_allclose(
        results["q"], _rotary_reference(x["x"], x["c"], x["s"]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        results["k"], _rotary_reference(-x["x"], x["c"], x["s"]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("variant", ["swapped_halves", "different_halves", "rotation_shared"])
def test_rotary_near_misses_stay_plain(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variant: str
) -> None:
    x = _rotary_inputs(B, 1)
    half = D // 2

    def body(b: Any, o: dict[str, Any]) -> dict[str, Any]:
        if variant == "rotation_shared":  # an intermediate read elsewhere too
            out = _rotary(b, o["x"], o["c"], o["s"])
            assert out._node is not None
            rotated_mul = out._node.inputs[1]
            return {"out": out, "rotated": rotated_mul}
        return {
            "out": _rotary(
                b, o["x"], o["c"], o["s"],
                swap=variant == "swapped_halves", same_tables=variant == "different_halves",
            )
        }  # fmt: skip

    results, ran = _run(ctx, monkeypatch, tmp_path, x, body)
    assert "RotaryEmbedding" not in ran
    xs, c, s = x["x"], x["c"], x["s"]
    if variant == "swapped_halves":
        rotated = np.concatenate([xs[..., :half], -xs[..., half:]], axis=-1)
        expected = xs * np.concatenate([c, c], -1) + rotated * np.concatenate([s, s], -1)
    elif variant == "different_halves":
        rotated = np.concatenate([-xs[..., half:], xs[..., :half]], axis=-1)
        expected = xs * np.concatenate([c, c], -1) + rotated * np.concatenate([c, s], -1)
    else:
        expected = _rotary_reference(xs, c, s)
    np.testing.assert_allclose(results["out"], expected, rtol=1e-5, atol=1e-6)


def test_a_norm_of_a_residual_sum_runs_skip_simplified_layer_normalization(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``h = x + y`` read by the norm and by a later op: one kernel returns both the norm and
    the sum (no separate Add), as a decoder's residual stream has it."""
    x = _rms_inputs(4)
    weight = x.pop("w")

    def body(b: Any, o: dict[str, Any]) -> dict[str, Any]:
        w = b.constant({"dataType": F32, "shape": [D]}, weight)
        h = b.add(o["x"], o["y"])
        normed = _rms(b, h, w)
        return {"out": b.add(h, b.mul(normed, normed)), "normed": normed}

    results, ran = _run(ctx, monkeypatch, tmp_path, x, body)
    assert "SkipSimplifiedLayerNormalization" in ran
    assert "SimplifiedLayerNormalization" not in ran
    h = x["x"] + x["y"]
    normed = _rms_reference(h, weight)
    np.testing.assert_allclose(results["normed"], normed, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["out"], h + normed * normed, rtol=1e-5, atol=1e-5)


def test_a_residual_sum_that_broadcasts_keeps_a_plain_add(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _rms_inputs(5)
    weight = x.pop("w")
    x["y"] = x["y"][:1]  # (1, S, D): broadcast over the batch, not the kernel's skip

    def body(b: Any, o: dict[str, Any]) -> dict[str, Any]:
        w = b.constant({"dataType": F32, "shape": [D]}, weight)
        return {"out": _rms(b, b.add(o["x"], o["y"]), w)}

    results, ran = _run(ctx, monkeypatch, tmp_path, x, body)
    assert "SkipSimplifiedLayerNormalization" not in ran
    assert {"SimplifiedLayerNormalization", "Add"} <= ran
    expected = _rms_reference(x["x"] + x["y"], weight)
    np.testing.assert_allclose(results["out"], expected, rtol=1e-5, atol=1e-6)
