"""WebNN conformance: every vendored web-platform-tests case, replayed through the Python API.

One test per operation file; it replays every case of the file (build, write the inputs,
dispatch, read the outputs) and fails listing each failing case. A case is skipped only
with a reason (an op or data type this implementation does not support); the per-op pass
counts are printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import pytest

from . import wpt_replay

pytest.importorskip("onnxruntime")

from ipfs_accelerate import webnn

pytestmark = pytest.mark.webnn

SUITES = wpt_replay.suites()
# op file -> (passed, failed, skipped, worst error per metric among passing outputs)
RESULTS: dict[str, tuple[int, int, int, dict[str, float]]] = {}


@pytest.fixture(scope="module")
def context() -> webnn.MLContext:
    return webnn.create_context(accelerated=False)


def test_every_vendored_file_is_replayed() -> None:
    assert len(SUITES) >= 71
    assert sum(len(s.cases) for s in SUITES.values()) >= 1601


@pytest.mark.parametrize("stem", sorted(SUITES))
def test_conformance(stem: str, context: webnn.MLContext) -> None:
    suite = SUITES[stem]
    failures: list[str] = []
    skipped: list[str] = []
    worst: dict[str, float] = {}
    for case in suite.cases:
        reason = wpt_replay.skip_reason(context, case)
        if reason:
            skipped.append(f"{case['name']}: {reason}")
            continue
        try:
            problem = wpt_replay.run_case(context, case, worst)
        except Exception as error:  # a case must not take the others down with it
            problem = f"{type(error).__name__}: {error}"
        if problem:
            failures.append(f"{case['name']}: {problem}")
    passed = len(suite.cases) - len(failures) - len(skipped)
    RESULTS[stem] = (passed, len(failures), len(skipped), worst)
    assert not failures, (
        f"{len(failures)}/{len(suite.cases)} {suite.op} cases failed:\n" + "\n".join(failures)
    )
    if skipped:
        pytest.skip(f"{len(skipped)} {suite.op} cases skipped: " + "; ".join(skipped))
