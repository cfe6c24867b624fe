"""The conformance harness itself: ULP distances, tolerance rules and the case restoration."""

from __future__ import annotations

import numpy as np
import pytest

from . import wpt_replay as wpt


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [  # the float32 pairs of WPT's helper-validation test
        (0.0, 0.0, 0),
        (0.0, 1e-46, 0),
        (0.0, 1e-36, 61482021),
        (1.0, 1.0, 0),
        (1.0, -1.0, 2130706432),
        (1.0, 2.0, 8388608),
        (1.000001, 1.000002, 9),
        (1.0000001, 1.0000002, 1),
        (-1.000001, 1.000002, 2130706457),
        (-1.0000001, 1.0000002, 2130706435),
        (0.0, 1.401298464324817e-45, 1),
        (99.28312683105469, 39.03501892089844, 11169050),
        (2**24 - 1, 2**24, 1),
    ],
)
def test_float32_ulp_distance(a: float, b: float, distance: int) -> None:
    for x, y in ((a, b), (b, a), (-a, -b)):
        got = wpt.ulp_distance(np.array([x], np.float32), np.array([y], np.float32))
        assert int(got[0]) == distance


def test_float16_ulp_distance() -> None:
    one = np.float16(1.0)
    after = np.nextafter(one, np.float16(2))
    assert wpt.ulp_distance(np.array([after]), np.array([one]))[0] == 1
    assert wpt.ulp_distance(np.array([-0.0], np.float16), np.array([0.0], np.float16))[0] == 0
    smallest = np.array([np.float16(2**-24)])
    assert wpt.ulp_distance(smallest, -smallest)[0] == 2  # across zero: sign-magnitude line
    assert wpt.ulp_distance(np.array([np.float16(2.0)]), np.array([one]))[0] == 1024


def test_compare_rules() -> None:
    rule = wpt.Tolerance("ULP", 1)
    base = np.array([1.0, np.inf, np.nan], np.float32)
    assert wpt.compare(base.copy(), base, rule) is None
    bumped = base.copy()
    bumped[0] = np.nextafter(np.float32(1), np.float32(2))
    assert wpt.compare(bumped, base, rule) is None
    bumped[0] = np.nextafter(bumped[0], np.float32(2))
    assert "beyond 1 ULP" in (wpt.compare(bumped, base, rule) or "")
    assert "NaN mismatch" in (wpt.compare(np.array([1, 2, 3], np.float32), base, rule) or "")
    assert (
        wpt.compare(
            np.array([1.0005], np.float32),
            np.array([1.0], np.float32),
            wpt.Tolerance("ATOL", 1 / 1024),
        )
        is None
    )
    assert wpt.compare(
        np.array([1.002], np.float32), np.array([1.0], np.float32), wpt.Tolerance("ATOL", 1 / 1024)
    )
    ints = np.array([2**62 + 1], np.int64)
    assert "differ" in (wpt.compare(ints, np.array([2**62], np.int64), rule) or "")
    assert "got float16" in (wpt.compare(base.astype(np.float16), base, rule) or "")


def test_tolerance_follows_utils_js() -> None:
    graph = {
        "inputs": {"a": {"descriptor": {"shape": [3, 7]}}},
        "operators": [{"name": "matmul", "arguments": [{"a": "a"}, {"b": "a"}], "outputs": "o"}],
    }
    assert wpt.tolerance(graph, {"a": (3, 7)}, "float32").value == 14
    graph["operators"] = [
        {"name": "reduceSum", "arguments": [{"input": "a"}, {"options": {"axes": [1]}}]}
    ]
    assert wpt.tolerance(graph, {"a": (3, 7)}, "float32").value == 7
    graph["operators"] = [{"name": "softmax", "arguments": [{"input": "a"}, {"axis": 0}]}]
    assert wpt.tolerance(graph, {"a": (3, 7)}, "float16").value == 12
    graph["operators"] = [{"name": "log", "arguments": [{"input": "a"}]}]
    assert wpt.tolerance(graph, {"a": (3, 7)}, "float32").metric == "ATOL"
    graph["operators"] = [{"name": "sigmoid", "arguments": [{"input": "a"}]}]
    assert wpt.tolerance(graph, {"a": (3, 7)}, "float16").value == 10


def test_null_restoration_only_for_known_cases() -> None:
    case = {
        "name": "minValue as NaN",
        "graph": {
            "inputs": {
                "x": {
                    "data": [None, None, 1.0],
                    "descriptor": {"shape": [3], "dataType": "float32"},
                }
            },
            "operators": [
                {"name": "clamp", "arguments": [{"input": "x"}, {"options": {"minValue": None}}]}
            ],
            "expectedOutputs": {
                "y": {
                    "data": [None, None, 1.0],
                    "descriptor": {"shape": [3], "dataType": "float32"},
                }
            },
        },
    }
    restored = wpt.restore_case(case)
    assert restored["graph"]["inputs"]["x"]["data"][:2] == [-np.inf, np.inf]
    assert np.isnan(restored["graph"]["operators"][0]["arguments"][1]["options"]["minValue"])
    case["name"] = "something else"
    with pytest.raises(ValueError, match="no known restoration"):
        wpt.restore_case(case)


def test_names_map_to_the_python_api() -> None:
    assert wpt.snake("reduceSumSquare") == "reduce_sum_square"
    assert wpt.snake("l2Pool2d") == "l2_pool2d"
    assert wpt.snake("gatherND") == "gather_nd"
    assert wpt.snake("isNaN") == "is_nan"
    assert wpt.snake("convTranspose2d") == "conv_transpose2d"
    assert wpt.snake("keepDimensions") == "keep_dimensions"
    assert wpt.snake("aTranspose") == "a_transpose"


def test_tolerances_of_the_files_added_later() -> None:
    shapes = {"a": (2, 5)}

    def rule(operators: list[dict[str, object]], out_type: str) -> wpt.Tolerance:
        return wpt.tolerance({"operators": operators}, shapes, out_type)

    cumulative = [{"name": "cumulativeSum", "arguments": [{"input": "a"}, {"axis": 1}]}]
    assert rule(cumulative, "float32").value == 4
    assert rule(cumulative, "int32").value == 0
    quantize = {"name": "quantizeLinear", "arguments": [{"input": "a"}]}
    dequantize = {"name": "dequantizeLinear", "arguments": [{"input": "a"}]}
    assert rule([quantize], "int8").value == 1
    assert rule([quantize, dequantize], "float32").value == 1  # the chain: dequantize's bound
    cos = [{"name": "cos", "arguments": [{"input": "a"}]}]
    assert (rule(cos, "float32").metric, rule(cos, "float32").value) == ("ATOL", 1 / 1024)
    assert rule(cos, "float16").value == 2**-7
    assert rule([{"name": "erf", "arguments": [{"input": "a"}]}], "float16").value == 1 / 512
    assert rule([{"name": "gruCell", "arguments": [{"input": "a"}]}], "float32").value == 3
    assert rule([{"name": "where", "arguments": [{"input": "a"}]}], "float32").value == 0


def test_case_values_of_the_files_added_later() -> None:
    assert np.isnan(wpt._resolve("NaN", {}))
    assert wpt._resolve("-Infinity", {}) == -np.inf
    assert wpt._resolve("NaN", {"NaN": "operand"}) == "operand"  # an operand name wins
    four = wpt.to_array([-8, 7, 0], {"dataType": "int4", "shape": [3]})
    assert four.dtype == np.int8 and four.tolist() == [-8, 7, 0]
    huge = wpt.to_array([1e6], {"dataType": "float16", "shape": [1]})
    assert np.isinf(huge[0])
