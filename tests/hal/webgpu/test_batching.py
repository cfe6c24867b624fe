"""The performance architecture, observed through the backend's counters: one submit per
computation, no intermediate readback, caches that stop compiling and allocating, and
kernel errors that surface at the next readback."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import IndexOutOfRangeError, TensorOverflowError

HIDDEN, HEADS, FFN, LAYERS, VOCAB = 384, 6, 1536, 2, 1000


def _params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    p = {"tok": w(VOCAB, HIDDEN), "pos": w(64, HIDDEN), "ln_w": 1 + w(HIDDEN), "ln_b": w(HIDDEN)}
    for i in range(LAYERS):
        square = (HIDDEN, HIDDEN)
        for name, shape in (("q", square), ("k", square), ("v", square), ("o", square),
                            ("f1", (FFN, HIDDEN)), ("f2", (HIDDEN, FFN))):  # fmt: skip
            p[f"{i}.{name}_w"], p[f"{i}.{name}_b"] = w(*shape), w(shape[0])
        for ln in ("ln1", "ln2"):
            p[f"{i}.{ln}_w"], p[f"{i}.{ln}_b"] = 1 + w(HIDDEN), w(HIDDEN)
    return p


def _bert(ids: Any, mask: Any, p: dict[str, Any]) -> Any:
    """A 2-layer BERT encoder (hidden 384) written with ipfs_accelerate.ops."""
    batch, seq = ids.shape
    dim = HIDDEN // HEADS
    x = ops.add(ops.embedding(ids, p["tok"]), ops.slice(p["pos"], [0], [seq]))
    x = ops.layer_norm(x, HIDDEN, p["ln_w"], p["ln_b"], 1e-12)
    for i in range(LAYERS):

        def heads(t: Any) -> Any:
            return ops.permute(ops.reshape(t, (batch, seq, HEADS, dim)), (0, 2, 1, 3))

        q, k, v = (heads(ops.linear(x, p[f"{i}.{n}_w"], p[f"{i}.{n}_b"])) for n in "qkv")
        ctx = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        ctx = ops.reshape(ops.permute(ctx, (0, 2, 1, 3)), (batch, seq, HIDDEN))
        x = ops.layer_norm(
            ops.add(x, ops.linear(ctx, p[f"{i}.o_w"], p[f"{i}.o_b"])),
            HIDDEN,
            p[f"{i}.ln1_w"],
            p[f"{i}.ln1_b"],
            1e-12,
        )
        f = ops.linear(
            ops.gelu(ops.linear(x, p[f"{i}.f1_w"], p[f"{i}.f1_b"])), p[f"{i}.f2_w"], p[f"{i}.f2_b"]
        )
        x = ops.layer_norm(ops.add(x, f), HIDDEN, p[f"{i}.ln2_w"], p[f"{i}.ln2_b"], 1e-12)
    return x


def test_bert_forward_submits_once_and_reads_back_only_the_output(gpu: Any) -> None:
    rng = np.random.default_rng(0)
    p_np = _params(rng)
    ids_np = rng.integers(0, VOCAB, (2, 32))
    mask_np = np.ones((2, 1, 1, 32), dtype=bool)
    mask_np[1, ..., 24:] = False  # the second sequence is padded
    params = {k: ia.tensor(v, device="webgpu") for k, v in p_np.items()}
    ids, mask = ia.tensor(ids_np, device="webgpu"), ia.tensor(mask_np, device="webgpu")
    _bert(ids, mask, params).numpy()  # compile, tune and warm the pools
    gpu.synchronize()
    before = gpu.stats()
    out = _bert(ids, mask, params)
    recorded = gpu.stats()
    assert recorded["submits"] == before["submits"], (
        "the forward pass submitted before its output was read"
    )
    assert recorded["readbacks"] == before["readbacks"]
    assert recorded["pending"] >= 9 * LAYERS
    result = out.numpy()
    after = gpu.stats()
    assert after["submits"] - before["submits"] == 1
    assert after["readbacks"] - before["readbacks"] == 1
    assert after["pipeline_compiles"] == before["pipeline_compiles"]

    with np.errstate(all="ignore"):
        expected = _bert(
            ia.tensor(ids_np), ia.tensor(mask_np), {k: ia.tensor(v) for k, v in p_np.items()}
        ).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-3, atol=1e-3)


def test_repeated_computation_compiles_and_binds_nothing_new(gpu: Any) -> None:
    rng = np.random.default_rng(1)
    x = ia.tensor(rng.standard_normal((16, 24)).astype(np.float32), device="webgpu")
    w = ia.tensor(rng.standard_normal((8, 24)).astype(np.float32), device="webgpu")

    def compute() -> np.ndarray:
        h = ops.softmax(ops.linear(x, w) * 0.5, -1)
        return ops.sum(ops.layer_norm(h, 8) + ops.exp(h), 0).numpy()

    first = compute()
    compiled = gpu.stats()["pipeline_compiles"]
    for _ in range(5):  # the pool settles into a fixed assignment of buffers to ops
        np.testing.assert_array_equal(compute(), first)
    assert gpu.stats()["pipeline_compiles"] == compiled
    before = gpu.stats()
    for _ in range(3):
        np.testing.assert_array_equal(compute(), first)
    after = gpu.stats()
    assert after["pipeline_compiles"] == before["pipeline_compiles"]
    assert after["bind_group_creations"] == before["bind_group_creations"]
    assert after["buffers_created"] == before["buffers_created"]
    assert after["dispatches"] - before["dispatches"] >= 3 * 6


def test_buffer_pool_does_not_grow_over_1000_iterations(gpu: Any) -> None:
    rng = np.random.default_rng(2)
    x = ia.tensor(rng.standard_normal((32, 32)).astype(np.float32), device="webgpu")

    def step() -> float:
        return float(ops.sum(ops.relu(x @ x + 1.0)).item())

    expected = step()
    for _ in range(5):
        step()
    before = gpu.stats()
    for _ in range(1000):
        assert step() == expected
    after = gpu.stats()
    assert after["buffers_created"] == before["buffers_created"]
    assert after["allocated_bytes"] == before["allocated_bytes"]
    assert after["in_use_bytes"] == before["in_use_bytes"]
    assert after["bind_group_creations"] == before["bind_group_creations"]


def test_memory_in_use_follows_live_tensors(gpu: Any) -> None:
    gpu.synchronize()
    start = gpu.memory_in_use()
    t = ia.zeros(1 << 16, device="webgpu")  # 256 KiB
    held = gpu.memory_in_use()
    assert held - start >= 1 << 18
    del t
    assert gpu.memory_in_use() == start


def test_to_numpy_returns_a_fresh_array(gpu: Any) -> None:
    t = ia.tensor([1.0, 2.0, 3.0], device="webgpu")
    host = t.numpy()
    host[0] = 100.0
    assert t.numpy()[0] == 1.0
    assert not gpu.shares_host_memory


def test_kernel_errors_surface_at_the_next_readback(gpu: Any) -> None:
    x = ia.tensor(np.array([2**31 - 1, 5], dtype=np.int32), device="webgpu")
    overflowed = x + 1  # recorded, not run: no error yet
    fine = x - 1
    with pytest.raises(TensorOverflowError, match=r"add: integer result overflows int32"):
        fine.numpy()  # the batch ran; its first failure is raised at this readback
    with pytest.raises(TensorOverflowError):
        overflowed.numpy()  # the failed kernel's output stays poisoned
    np.testing.assert_array_equal(fine.numpy(), [2**31 - 2, 4])  # later readbacks are clean
    table = ia.tensor(np.arange(12, dtype=np.float32).reshape(4, 3), device="webgpu")
    with pytest.raises(
        IndexOutOfRangeError, match=r"gather: index -5 is out of range for axis 0 of size 4"
    ):
        ops.gather(table, ia.tensor(np.array([1, -5], dtype=np.int64), device="webgpu"), 0).numpy()
    np.testing.assert_array_equal(
        ops.gather(table, ia.tensor([3, -1], device="webgpu"), 0).numpy(), [[9, 10, 11]] * 2
    )


def test_error_slots_recycle_across_many_checked_kernels(gpu: Any) -> None:
    x = ia.tensor(np.arange(4, dtype=np.int32), device="webgpu")
    total = x
    for _ in range(2500):  # more checked dispatches than error slots in one batch
        total = total + x
    np.testing.assert_array_equal(total.numpy(), np.arange(4) * 2501)


def test_activation_fuses_into_the_linear_epilogue(gpu: Any) -> None:
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((8, 32)).astype(np.float32)
    w_np = rng.standard_normal((16, 32)).astype(np.float32)
    b_np = rng.standard_normal(16).astype(np.float32)
    x, w, b = (ia.tensor(a, device="webgpu") for a in (x_np, w_np, b_np))
    gpu.synchronize()
    before = gpu.stats()["dispatches"]
    pre = ops.linear(x, w, b)
    post = ops.gelu(pre)
    assert gpu.stats()["dispatches"] - before == 1  # one kernel wrote both
    reference = x_np @ w_np.T + b_np
    # the pre-activation stays valid
    np.testing.assert_allclose(pre.numpy(), reference, rtol=1e-5, atol=1e-5)
    gelu = 0.5 * reference * (1 + np.vectorize(math.erf)(reference / math.sqrt(2)))
    np.testing.assert_allclose(post.numpy(), gelu, rtol=1e-5, atol=1e-5)
    # another consumer of the pre-activation in between: still correct either way
    pre2 = ops.linear(x, w, b)
    other = pre2 * 2
    post2 = ops.relu(pre2)
    np.testing.assert_allclose(post2.numpy(), np.maximum(reference, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(other.numpy(), reference * 2, rtol=1e-5, atol=1e-5)


def test_profiling_reports_gpu_time_per_kernel(gpu: Any) -> None:
    if "timestamp-query" not in gpu.device.features:
        pytest.skip("adapter without timestamp queries")
    x = ia.tensor(
        np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32), device="webgpu"
    )
    with gpu.profile() as report:
        (ops.exp(x) @ x).numpy()
        ops.softmax(x, -1).numpy()
    names = {k.name for k in report.rows()}
    assert any("exp" in n and n.endswith("float32") for n in names)
    assert any(n.startswith("matmul.") for n in names)
    assert any(n.startswith("softmax.float32") for n in names)
    assert all(k.calls >= 1 and k.total_ns > 0 for k in report.rows())
    assert "calls" in report.table()
    assert gpu.dispatcher.recorder.profiler is None


def test_values_computed_from_a_failed_kernel_raise_too(gpu: Any) -> None:
    x = ia.tensor(np.array([2**31 - 1, 1], dtype=np.int32), device="webgpu")
    bad = x + 1
    downstream = ops.maximum(bad, 0)  # depends on the failed add (and cannot fail itself)
    derived_float = bad.astype("float32") * 0.5
    unrelated = ia.tensor(np.array([3.0], dtype=np.float32), device="webgpu") * 2
    with pytest.raises(TensorOverflowError):
        bad.numpy()
    with pytest.raises(TensorOverflowError, match="add: integer result overflows int32"):
        downstream.numpy()  # a later readback of a dependent value raises, never wrong numbers
    with pytest.raises(TensorOverflowError):
        derived_float.numpy()
    np.testing.assert_array_equal(unrelated.numpy(), [6.0])
    np.testing.assert_array_equal((x - 1).numpy(), [2**31 - 2, 0])


def test_element_wise_chains_run_as_one_kernel(gpu: Any) -> None:
    from ipfs_accelerate.hal.webgpu._fusion import MAX_NODES

    x_np = np.linspace(-2, 2, 1000, dtype=np.float32)
    x = ia.tensor(x_np, device="webgpu")
    gpu.synchronize()
    before = gpu.stats()["dispatches"]
    y, y_np = x, x_np
    for i in range(100):
        y, y_np = (
            (y * 1.01, y_np * np.float32(1.01)) if i % 2 else (y + 0.5, y_np + np.float32(0.5))
        )
        if i == 50:
            middle, middle_np = y, y_np
    # a kernel per MAX_NODES ops, at most
    assert gpu.stats()["dispatches"] - before <= 100 // MAX_NODES
    np.testing.assert_allclose(y.numpy(), y_np, rtol=1e-5)
    dispatches = gpu.stats()["dispatches"] - before
    assert dispatches <= -(-100 // MAX_NODES) + 1
    # an intermediate is computed on its own
    np.testing.assert_allclose(middle.numpy(), middle_np, rtol=1e-5)
    assert gpu.stats()["dispatches"] - before <= dispatches + 1
    settled = gpu.stats()["dispatches"]
    unused = x * 3.0  # a pending value never read costs nothing
    del unused
    gpu.synchronize()
    assert gpu.stats()["dispatches"] == settled


def test_fused_expressions_share_inputs_and_change_dtypes(gpu: Any) -> None:
    rng = np.random.default_rng(5)
    a_np, b_np = rng.standard_normal((2, 64)).astype(np.float32)
    a, b = ia.tensor(a_np, device="webgpu"), ia.tensor(b_np, device="webgpu")
    doubled = a * 2.0
    both = doubled + doubled  # one pending value used twice in an expression
    np.testing.assert_allclose(both.numpy(), a_np * 4, rtol=1e-6)
    mask = (ops.exp(doubled) - b) > 1.0  # float ops ending in a bool
    np.testing.assert_array_equal(mask.numpy(), (np.exp(a_np * 2) - b_np) > 1)
    many = [
        ia.tensor(rng.standard_normal(64).astype(np.float32), device="webgpu") for _ in range(9)
    ]
    total = many[0]
    for t in many[1:]:  # more inputs than one kernel binds: the expression is cut
        total = ops.maximum(total, t) * 1.0 + ops.sigmoid(t)
    expected = many[0].numpy()
    for t in many[1:]:
        v = t.numpy()
        expected = np.maximum(expected, v) + 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-5, atol=1e-6)
    if "float16" in {d.name for d in gpu.supported_dtypes}:
        half_np = np.array([60000, 1.0, 0.1], np.float16)
        half = ia.tensor(half_np, device="webgpu")
        with np.errstate(
            over="ignore"
        ):  # intermediates round to float16 as in numpy: 120000 -> inf
            np.testing.assert_array_equal(((half * 2) / 2).numpy(), (half_np * 2) / 2)
    # a consumer that is not element-wise
    product = ops.matmul(ops.reshape(a * 0.5, (8, 8)), ops.reshape(b + 1, (8, 8)))
    np.testing.assert_allclose(
        product.numpy(), (a_np * 0.5).reshape(8, 8) @ (b_np + 1).reshape(8, 8), rtol=1e-5, atol=1e-5
    )


def test_fusion_can_be_turned_off(private_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPFS_ACCELERATE_WEBGPU_FUSION", "0")
    name, backend = private_backend()
    x = ia.tensor(np.arange(4, dtype=np.float32), device=name)
    backend.synchronize()
    before = backend.stats()["dispatches"]
    y = (x + 1) * 2
    assert backend.stats()["dispatches"] - before == 2  # recorded at once, one per op
    np.testing.assert_array_equal(y.numpy(), [2, 4, 6, 8])


def test_steady_state_binds_nothing_new_whatever_the_pool_holds(gpu: Any) -> None:
    """Buffers left in the pool by earlier work (here: many released in a scrambled order)
    must not make a repeated computation create bind groups forever: the pool hands out the
    lowest free buffer id first, so each step gets the same buffers as the last."""
    import random

    import ipfs_accelerate as ia
    from ipfs_accelerate import ops

    leftovers = [ia.zeros(16, 8, device="webgpu") for _ in range(40)]
    for t in leftovers:
        t.numpy()
    random.Random(0).shuffle(leftovers)
    while leftovers:  # released in a scrambled order
        leftovers.pop()
    x = ia.randn(16, 24, seed=2, device="webgpu")
    w = ia.randn(8, 24, seed=3, device="webgpu")

    def step() -> None:
        h = ops.softmax(ops.linear(x, w) * 0.5, axis=-1)
        ops.sum(ops.layer_norm(h, 8) + ops.exp(h), axis=0).numpy()

    for _ in range(3):
        step()
    before = gpu.stats()
    for _ in range(10):
        step()
    after = gpu.stats()
    assert after["bind_group_creations"] == before["bind_group_creations"]
    assert after["buffers_created"] == before["buffers_created"]


def test_a_decoder_step_is_one_submission(gpu: Any) -> None:
    """A decode step of a Llama-family decoder on webgpu records its ops and submits once,
    when the step's logits are read for sampling: one submit and one readback per token."""
    from ipfs_accelerate.models import TextGenerator
    from ipfs_accelerate.models.generation import SamplingParams
    from tests.models._decoder_checkpoints import decoder_checkpoint

    generator = TextGenerator.from_pretrained(decoder_checkpoint("llama"), device="webgpu")
    params = SamplingParams(max_new_tokens=9, temperature=0, ignore_eos=True)
    prompt = [[5, 17, 23, 42, 8]]
    list(generator.engine.run(prompt, [params]))  # compile, tune and warm the pools
    gpu.synchronize()
    steps = generator.engine.run(prompt, [params])
    next(steps)  # the prefill and the first token
    before = gpu.stats()
    decoded = sum(1 for _ in steps)
    after = gpu.stats()
    assert decoded == 8
    assert after["submits"] - before["submits"] == decoded
    assert after["readbacks"] - before["readbacks"] == decoded
