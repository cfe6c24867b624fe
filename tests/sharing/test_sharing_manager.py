"""TensorSharingManager: registration, deduplication by content id, views, sharing, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.errors import (
    DtypeError,
    InvalidArgumentError,
    OutOfMemoryError,
    ShapeError,
    SharingError,
    TensorNotFoundError,
    UnknownBackendError,
    UnknownTensorTypeError,
    ViewBoundsError,
)
from ipfs_accelerate.sharing import (
    SharedTensor,
    TensorSharingManager,
    content_id,
    get_compatible_models_for_tensor,
    model_family,
)

KB = 1024
MB = 1024 * 1024


def _weights(n: int, seed: int = 0, dtype: str = "float32") -> ia.Tensor:
    return ia.tensor(np.random.default_rng(seed).standard_normal(n).astype(dtype))


def _f32(nbytes: int) -> tuple[int]:
    return (nbytes // 4,)


# ----------------------------------------------------------------------------- registration


def test_register_allocates_and_holds_for_producer_and_consumers() -> None:
    m = TensorSharingManager()
    t = m.register_shared_tensor(
        "emb", [1, 768], producer_model="bert", consumer_models=["t5", "llama"]
    )
    assert isinstance(t, SharedTensor)
    assert t.data.shape == (1, 768) and t.data.dtype == "float32" and t.data.device == "cpu"
    assert t.holders == {"bert": 1, "t5": 1, "llama": 1}
    assert t.producer_model == "bert" and t.content_id is None
    assert m.get_shared_tensor("emb") is t
    assert m.get_shared_tensor("emb", model_name="clip") is t
    assert t.holders["clip"] == 1
    assert "emb" in m and len(m) == 1
    stats = m.get_stats()
    assert stats["memory_usage_bytes"] == 768 * 4
    assert stats["cache_hits"] == 2 and stats["cache_misses"] == 0


def test_register_the_same_name_again_returns_it_or_refuses_a_mismatch() -> None:
    m = TensorSharingManager()
    first = m.register_shared_tensor("emb", (4,), producer_model="bert")
    assert m.register_shared_tensor("emb", [4], producer_model="bert") is first
    assert first.holders == {"bert": 2}  # each registration is a hold its model must release
    with pytest.raises(
        SharingError, match=r"'emb' is already registered with shape \(4,\).*asked for shape \(5,\)"
    ):
        m.register_shared_tensor("emb", (5,))
    with pytest.raises(SharingError, match=r"dtype float32.*dtype float16"):
        m.register_shared_tensor("emb", (4,), dtype="float16")


def test_unknown_names_raise_tensor_not_found_naming_what_exists() -> None:
    m = TensorSharingManager()
    m.register_shared_tensor("a", (2,))
    with pytest.raises(
        TensorNotFoundError, match="no shared tensor named 'b'; registered names: 'a'"
    ) as info:
        m.get_shared_tensor("b")
    assert isinstance(info.value, KeyError)
    assert m.get_stats()["cache_misses"] == 1
    with pytest.raises(TensorNotFoundError, match="'nope'"):
        m.create_tensor_view("nope", "v", 0, 1)
    with pytest.raises(TensorNotFoundError, match="'nope'"):
        m.share_tensor_between_models("nope", "bert", ["t5"])
    m.create_tensor_view("a", "v", 0, 1)
    with pytest.raises(TensorNotFoundError, match="'v' is a view: use get_tensor_view"):
        m.get_shared_tensor("v")
    with pytest.raises(TensorNotFoundError, match="'a' is a tensor: use get_shared_tensor"):
        m.get_tensor_view("a")


def test_bad_registration_arguments() -> None:
    m = TensorSharingManager()
    with pytest.raises(UnknownBackendError, match="unknown backend 'tpu'"):
        m.register_shared_tensor("w", (2,), storage_type="tpu")
    with pytest.raises(DtypeError, match="unsupported dtype 'int4'"):
        m.register_shared_tensor("w", (2,), dtype="int4")
    with pytest.raises(ShapeError, match="non-integer dimension"):
        m.register_shared_tensor("w", (2, 1.5))  # type: ignore[arg-type]
    with pytest.raises(ShapeError, match=r"data has shape \(3,\) but shape \(2,\)"):
        m.register_shared_tensor("w", (2,), data=_weights(3))
    # the default dtype is float32: float16 data needs dtype="float16", never a silent cast
    with pytest.raises(DtypeError, match="data has dtype float16 but dtype='float32'"):
        m.register_shared_tensor("w", (2,), data=_weights(2, dtype="float16"))
    with pytest.raises(
        InvalidArgumentError, match="data must be a Tensor or numpy array, got list"
    ):
        m.register_shared_tensor("w", (2,), data=[1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="consumer_models must be a list of names"):
        m.register_shared_tensor("w", (2,), consumer_models="t5")
    with pytest.raises(InvalidArgumentError, match="model name must be a non-empty string"):
        m.register_shared_tensor("w", (2,), consumer_models=["t5", ""])
    assert len(m) == 0 and m.get_stats()["memory_usage_bytes"] == 0  # nothing half-registered


@pytest.mark.parametrize("limit", [-1, float("nan"), "512", True])
def test_bad_memory_limit(limit: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_memory_mb must be a non-negative number"):
        TensorSharingManager(max_memory_mb=limit)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- content addressing


def test_identical_weights_are_stored_once() -> None:
    m = TensorSharingManager()
    w1 = _weights(1000, seed=1)
    w2 = ia.tensor(w1.numpy().copy())  # a second pipeline loading the same checkpoint
    a = m.register_shared_tensor("pipe1/emb", (1000,), producer_model="bert", data=w1)
    b = m.register_shared_tensor("pipe2/emb", (1000,), producer_model="bert-large", data=w2)
    assert b is a
    assert a.data is w1  # held as given: no copy
    assert a.content_id == content_id(w1) == content_id(w2)
    assert a.holders == {"bert": 1, "bert-large": 1}
    assert m.get_shared_tensor("pipe2/emb") is a  # the second name is an alias
    stats = m.get_stats()
    assert stats["memory_usage_bytes"] == 4000  # counted once
    assert stats["total_tensors"] == 1 and stats["total_aliases"] == 1
    assert stats["dedup_hits"] == 1 and stats["dedup_saved_bytes"] == 4000
    usage = m.get_tensor_memory_usage()
    assert list(usage) == ["pipe1/emb"] and usage["pipe1/emb"]["aliases"] == ["pipe2/emb"]


def test_dedup_requires_equal_dtype_and_shape() -> None:
    m = TensorSharingManager()
    base = np.arange(8, dtype=np.float32)
    a = m.register_shared_tensor("a", (8,), data=base)
    as_int = m.register_shared_tensor("b", (8,), dtype="int32", data=base.view(np.int32))
    reshaped = m.register_shared_tensor("c", (2, 4), data=base.reshape(2, 4))
    assert len({id(a), id(as_int), id(reshaped)}) == 3
    assert a.content_id == as_int.content_id == reshaped.content_id  # same bytes, same id
    assert m.get_stats()["memory_usage_bytes"] == 3 * 32


def test_tensors_registered_without_data_are_never_merged() -> None:
    m = TensorSharingManager()
    a = m.register_shared_tensor("a", (4,))
    b = m.register_shared_tensor("b", (4,))
    assert a is not b and not np.shares_memory(a.data.numpy(), b.data.numpy())


def test_a_held_tensor_written_after_registration_is_not_handed_out_as_the_old_content() -> None:
    m = TensorSharingManager()
    original = np.arange(4, dtype=np.float32)
    a = m.register_shared_tensor("a", (4,), data=original.copy())
    old_id = a.content_id
    a.data[0] = 42.0  # a model writes into it
    b = m.register_shared_tensor("b", (4,), data=original)
    assert b is not a
    np.testing.assert_array_equal(b.data.numpy(), original)
    assert b.content_id == old_id and a.content_id is None  # a's id no longer describes it
    with pytest.raises(SharingError, match="'b' is already registered with different content"):
        m.register_shared_tensor("b", (4,), data=np.ones(4, dtype=np.float32))


def test_registering_cpu_data_for_another_backend_moves_it(cpu2: str) -> None:
    m = TensorSharingManager()
    w = _weights(16)
    t = m.register_shared_tensor("w", (16,), storage_type=cpu2, data=w)
    assert t.data.device == "cpu2" and t.storage_type == "cpu2"
    np.testing.assert_array_equal(t.data.numpy(), w.numpy())
    assert not np.shares_memory(t.data._data, w.numpy())
    # the same content on another backend is another copy, not the CPU one
    on_cpu = m.register_shared_tensor("w-cpu", (16,), data=w)
    assert on_cpu is not t and on_cpu.data is w


def test_device_data_registered_for_the_host_is_moved_then_hashed(cpu2: str) -> None:
    m = TensorSharingManager()
    on_device = _weights(32, seed=5).to(cpu2)
    t = m.register_shared_tensor("w", (32,), data=on_device)
    assert t.data.device == "cpu" and on_device.device == "cpu2"
    assert t.content_id == content_id(on_device)
    np.testing.assert_array_equal(t.data.numpy(), on_device.numpy())


def test_strided_data_is_hashed_and_stored_row_major() -> None:
    m = TensorSharingManager()
    base = ia.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    t = m.register_shared_tensor("wt", (4, 3), data=base.T)
    expected = np.ascontiguousarray(np.arange(12, dtype=np.float32).reshape(3, 4).T)
    np.testing.assert_array_equal(t.data.numpy(), expected)
    assert t.content_id == content_id(expected)


def test_registering_large_weights_makes_no_copy() -> None:
    m = TensorSharingManager()
    array = np.random.default_rng(0).standard_normal(8 * MB // 4, dtype=np.float32)  # 8 MB
    tracemalloc.start()
    try:
        t = m.register_shared_tensor("big", array.shape, data=array)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.shares_memory(t.data.numpy(), array)
    assert peak < MB // 4, f"registering 8 MB of weights allocated {peak} bytes"


# ----------------------------------------------------------------------------- views


def test_manager_views_are_zero_copy_and_count_no_memory() -> None:
    m = TensorSharingManager()
    m.register_shared_tensor(
        "emb", (2, 8), producer_model="bert", data=np.arange(16, dtype=np.float32).reshape(2, 8)
    )
    half = m.create_tensor_view("emb", "emb/first-half", [0, 0], [2, 4], model_name="t5")
    flat = m.create_tensor_view("emb", "emb/row1", 8, 8)
    assert m.get_tensor_view("emb/first-half") is half
    np.testing.assert_array_equal(flat.data.numpy(), np.arange(8, 16))
    m.get_shared_tensor("emb").data[1, 0] = -5.0
    assert flat.data.numpy()[0] == -5.0 and half.data.numpy()[1, 0] == -5.0
    assert m.get_shared_tensor("emb").reference_count == 2  # bert + t5 through its view
    usage = m.get_tensor_memory_usage()
    assert (
        usage["emb/first-half"]["memory_bytes"] == 0 and usage["emb/first-half"]["view_of"] == "emb"
    )
    assert usage["emb"]["views"] == ["emb/first-half", "emb/row1"]
    assert (
        m.get_stats()["memory_usage_bytes"] == 64 == sum(u["memory_bytes"] for u in usage.values())
    )
    with pytest.raises(
        ViewBoundsError, match=r"elements \[10, 18\) lie outside the parent's 16 elements"
    ):
        m.create_tensor_view("emb", "bad", 10, 8)
    with pytest.raises(SharingError, match="the name 'emb/row1' is already taken by a view"):
        m.create_tensor_view("emb", "emb/row1", 0, 1)
    m.register_shared_tensor("x", (1,))
    with pytest.raises(SharingError, match="the name 'emb' is already taken by a tensor"):
        m.create_tensor_view("x", "emb", 0, 1)
    with pytest.raises(SharingError, match="already taken by a view"):
        m.register_shared_tensor("emb/row1", (8,))


# ----------------------------------------------------------------------------- sharing, releasing


def test_share_tensor_between_models() -> None:
    m = TensorSharingManager()
    t = m.register_shared_tensor(
        "vit_emb", (1, 1024), producer_model="vit", consumer_models=["clip"]
    )
    assert m.share_tensor_between_models("vit_emb", "vit", ["llava", "xclip"]) is True
    assert t.holders == {"vit": 1, "clip": 1, "llava": 1, "xclip": 1}
    m.share_tensor_between_models("vit_emb", "clip", ["llava"])  # llava already holds it
    assert t.holders["llava"] == 1
    with pytest.raises(SharingError, match="model 'bert' neither holds nor produced 'vit_emb'"):
        m.share_tensor_between_models("vit_emb", "bert", ["t5"])
    t.release("vit")
    m.share_tensor_between_models("vit_emb", "vit", ["blip"])  # the producer may share what it made
    view = m.create_tensor_view("vit_emb", "cls", [0, 0], [1, 16], model_name="clip")
    m.share_tensor_between_models("cls", "clip", ["blip"])
    assert view.holders == {"clip": 1, "blip": 1}


def test_release_model_tensors_drops_every_hold_of_a_model() -> None:
    m = TensorSharingManager()
    a = m.register_shared_tensor("a", (4,), producer_model="bert")
    b = m.register_shared_tensor("b", (4,), producer_model="vit", consumer_models=["bert"])
    a.acquire("bert")
    view = m.create_tensor_view("b", "bv", 0, 2, model_name="bert")
    assert m.release_model_tensors("bert") == 3  # a, b and the view bv
    assert a.holders == {} and b.holders == {"vit": 1} and view.holders == {}
    assert a.can_be_freed() and not b.can_be_freed()
    assert m.release_model_tensors("bert") == 0


# ----------------------------------------------------------------------------- freeing


OPTIMIZE_KEYS = {
    "initial_memory_bytes",
    "current_memory_bytes",
    "freed_memory_bytes",
    "freed_tensors_count",
    "freed_tensors",
    "memory_reduction_percent",
    "remaining_tensor_count",
}


def test_optimize_frees_exactly_what_nothing_keeps() -> None:
    m = TensorSharingManager()
    m.register_shared_tensor("held", _f32(4 * KB), producer_model="bert")
    pinned = m.register_shared_tensor("pinned", _f32(4 * KB))
    pinned.pin()
    m.register_shared_tensor("parent-of-held-view", _f32(4 * KB))
    m.create_tensor_view("parent-of-held-view", "held-view", 0, 8, model_name="t5")
    m.register_shared_tensor("parent-of-pinned-view", _f32(4 * KB))
    m.create_tensor_view("parent-of-pinned-view", "pinned-view", 0, 8).pin()
    free1 = m.register_shared_tensor("free1", _f32(8 * KB), data=_weights(2 * KB, seed=1))
    m.register_shared_tensor("free1-alias", _f32(8 * KB), data=_weights(2 * KB, seed=1))
    m.register_shared_tensor("free2", _f32(16 * KB), producer_model="vit")
    m.release_model_tensors("vit")
    loose_view = m.create_tensor_view("free2", "unheld-view", 0, 8)
    before = m.get_optimization_recommendations()

    result = m.optimize_memory_usage()

    assert set(result) == OPTIMIZE_KEYS
    assert sorted(result["freed_tensors"]) == ["free1", "free2"]
    assert result["freed_tensors_count"] == 2
    assert result["initial_memory_bytes"] == 40 * KB
    assert result["freed_memory_bytes"] == 24 * KB == before["potential_savings_bytes"]
    assert sorted(before["freeable_tensors"]) == ["free1", "free2"]
    assert result["current_memory_bytes"] == 16 * KB == m.get_stats()["memory_usage_bytes"]
    assert result["memory_reduction_percent"] == pytest.approx(60.0)
    assert result["remaining_tensor_count"] == 4
    assert free1.is_freed and loose_view.is_freed  # an unheld view goes with its parent
    for name in ("free1", "free1-alias", "unheld-view"):
        assert name not in m
    for name in ("held", "pinned", "parent-of-held-view", "parent-of-pinned-view", "held-view"):
        assert name in m
    again = m.optimize_memory_usage()
    assert again["freed_tensors"] == [] and again["memory_reduction_percent"] == 0.0


def test_optimize_on_an_empty_manager() -> None:
    result = TensorSharingManager().optimize_memory_usage()
    assert result == {
        "initial_memory_bytes": 0,
        "current_memory_bytes": 0,
        "freed_memory_bytes": 0,
        "freed_tensors_count": 0,
        "freed_tensors": [],
        "memory_reduction_percent": 0.0,
        "remaining_tensor_count": 0,
    }


# ----------------------------------------------------------------------------- memory limit


def test_limit_evicts_least_recently_used_freeable_tensors_first() -> None:
    m = TensorSharingManager(max_memory_mb=1)  # 1,048,576 bytes
    a = m.register_shared_tensor("a", _f32(400 * KB))
    b = m.register_shared_tensor("b", _f32(400 * KB))
    m.get_shared_tensor("a")  # a is now more recent than b
    c = m.register_shared_tensor("c", _f32(400 * KB))
    assert b.is_freed and not a.is_freed and not c.is_freed
    assert "b" not in m
    stats = m.get_stats()
    assert stats["evicted_tensors"] == 1 and stats["evicted_bytes"] == 400 * KB
    assert stats["memory_usage_bytes"] == 800 * KB
    with pytest.raises(SharingError, match=r"'b' was freed \(evicted \(least recently used\)"):
        _ = b.data
    _ = c.data  # reading data counts as use: a is now the least recent
    m.register_shared_tensor("d", _f32(400 * KB))
    assert a.is_freed and not c.is_freed


def test_limit_never_evicts_pinned_held_or_view_parents() -> None:
    m = TensorSharingManager(max_memory_mb=1)
    m.register_shared_tensor("pinned", _f32(256 * KB)).pin()
    m.register_shared_tensor("held", _f32(256 * KB), producer_model="bert")
    m.register_shared_tensor("held-view-parent", _f32(256 * KB))
    m.create_tensor_view("held-view-parent", "v1", 0, 4, model_name="t5")
    m.register_shared_tensor("pinned-view-parent", _f32(256 * KB))
    m.create_tensor_view("pinned-view-parent", "v2", 0, 4).pin()
    with pytest.raises(OutOfMemoryError) as info:
        m.register_shared_tensor("more", _f32(4 * KB))
    message = str(info.value)
    assert "register_shared_tensor('more')" in message and "max_memory_mb=1" in message
    assert "needs 4096 bytes" in message and "pinned: pinned" in message
    assert (
        "held-view-parent, held" not in message
        and "held, held-view-parent, pinned-view-parent" in message
    )
    assert isinstance(info.value, MemoryError)
    assert m.get_stats()["memory_usage_bytes"] == MB and "more" not in m
    assert m.get_stats()["evicted_tensors"] == 0


def test_out_of_memory_message_stays_short_with_many_tensors() -> None:
    m = TensorSharingManager(max_memory_mb=1)
    for i in range(16):
        m.register_shared_tensor(f"layer{i:02d}", _f32(64 * KB), producer_model="bert")
    with pytest.raises(OutOfMemoryError, match=r"layer00, layer01, .*layer09, \.\.\. \(6 more\)"):
        m.register_shared_tensor("one-more", (1,))


def test_out_of_memory_evicts_nothing_when_eviction_cannot_make_room() -> None:
    m = TensorSharingManager(max_memory_mb=1)
    m.register_shared_tensor("held", _f32(768 * KB), producer_model="bert")
    small = m.register_shared_tensor("small", _f32(128 * KB))
    with pytest.raises(OutOfMemoryError, match="only 131072 could be evicted"):
        m.register_shared_tensor("big", _f32(512 * KB))
    assert not small.is_freed  # the cache survives a registration that could not succeed
    with pytest.raises(OutOfMemoryError, match="needs 2097152 bytes"):
        m.register_shared_tensor("huge", _f32(2 * MB))


def test_identical_content_needs_no_room() -> None:
    m = TensorSharingManager(max_memory_mb=1)
    w = _weights(256 * KB, seed=3)  # the whole megabyte
    first = m.register_shared_tensor("w", w.shape, producer_model="a", data=w)
    again = m.register_shared_tensor(
        "w2", w.shape, producer_model="b", data=ia.tensor(w.numpy().copy())
    )
    assert again is first and m.get_stats()["memory_usage_bytes"] == MB


def test_zero_limit_holds_only_empty_tensors() -> None:
    m = TensorSharingManager(max_memory_mb=0)
    assert m.register_shared_tensor("empty", (0, 4)).get_memory_usage() == 0
    with pytest.raises(OutOfMemoryError):
        m.register_shared_tensor("one", (1,))


# ----------------------------------------------------------------------------- patterns, reports


def test_compatible_models_for_each_tensor_type() -> None:
    assert {t: get_compatible_models_for_tensor(t) for t in (
        "text_embedding", "vision_embedding", "audio_embedding", "vision_text_joint",
        "audio_text_joint",
    )} == {
        "text_embedding": ["bert", "roberta", "t5", "llama", "bart", "gpt2"],
        "vision_embedding": ["vit", "clip", "detr", "swin", "dino"],
        "audio_embedding": ["whisper", "wav2vec2", "hubert", "clap"],
        "vision_text_joint": ["clip", "llava", "blip", "xclip"],
        "audio_text_joint": ["clap", "whisper_text", "wav2vec2_text"],
    }  # fmt: skip
    get_compatible_models_for_tensor("text_embedding").append("mutated")
    assert "mutated" not in get_compatible_models_for_tensor("text_embedding")


def test_unknown_tensor_type_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownTensorTypeError,
        match=(
            "unknown tensor type 'text_embeddings'; known types: text_embedding, vision_embedding"
        ),
    ) as info:
        get_compatible_models_for_tensor("text_embeddings")
    assert isinstance(info.value, SharingError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("bert", "bert"),
        ("bert-base-uncased", "bert"),
        ("google-bert/bert-base-uncased", "bert"),
        ("openai/whisper-tiny", "whisper"),
        ("whisper_text", "whisper_text"),
        ("openai/clip-vit-base-patch32", "clip"),
        ("microsoft/xclip-base-patch32", "xclip"),
        ("facebook/dinov2-small", "dino"),
        ("Llama-2-7b", "llama"),
        ("meta-llama/Llama2_7b", "llama"),
        ("gpt2", "gpt2"),
        ("bertology", None),
        ("resnet-50", None),
    ],
)
def test_model_family(name: str, family: str | None) -> None:
    assert model_family(name) == family


def test_sharing_opportunities_group_active_models_by_family() -> None:
    m = TensorSharingManager()
    m.register_shared_tensor("t1", (2,), producer_model="bert-base-uncased")
    m.register_shared_tensor("t2", (2,), producer_model="roberta-base")
    m.register_shared_tensor("i1", (2,), producer_model="openai/clip-vit-base-patch32")
    m.register_shared_tensor("i2", (2,), consumer_models=["vit-base"])
    m.register_shared_tensor("a1", (2,), producer_model="whisper-tiny")
    m.register_shared_tensor("x", (2,), producer_model="bertology")
    opportunities = m.analyze_sharing_opportunities()
    assert opportunities == {
        "text_embedding": ["bert-base-uncased", "roberta-base"],
        "vision_embedding": ["openai/clip-vit-base-patch32", "vit-base"],
    }
    assert m.get_stats()["sharing_opportunities"] == opportunities
    advice = m.get_optimization_recommendations()["recommendations"]
    assert any(
        "bert-base-uncased, roberta-base can share text_embedding" in line for line in advice
    )


def test_model_memory_usage_counts_each_tensor_once_per_model() -> None:
    m = TensorSharingManager()
    m.register_shared_tensor("shared", _f32(4 * KB), producer_model="bert", consumer_models=["t5"])
    m.register_shared_tensor("own", _f32(2 * KB), producer_model="bert")
    m.get_shared_tensor("own", model_name="bert")  # a second hold: still one tensor's bytes
    m.create_tensor_view("shared", "sv", 0, 4, model_name="llama")
    usage = m.get_model_memory_usage()
    assert set(usage) == {"bert", "t5", "llama"}
    assert usage["bert"]["total_memory_bytes"] == 6 * KB
    assert usage["bert"]["exclusive_memory_bytes"] == 2 * KB
    assert usage["bert"]["shared_memory_bytes"] == 4 * KB
    assert usage["bert"]["tensors"]["own"]["holds"] == 2
    assert usage["bert"]["tensors"]["shared"]["shared_with"] == ["llama", "t5"]
    assert usage["llama"]["total_memory_bytes"] == 4 * KB  # held through its view
    assert usage["llama"]["tensors"]["shared"]["via_views"] == ["sv"]
    assert usage["llama"]["view_count"] == 1 and usage["t5"]["view_count"] == 0


def test_recommendations_and_stats() -> None:
    m = TensorSharingManager(max_memory_mb=0.01)  # 10,485 bytes
    m.register_shared_tensor("big", _f32(8 * KB), producer_model="bert").pin()
    m.register_shared_tensor("loose", _f32(1 * KB))
    m.get_shared_tensor("big")
    with pytest.raises(TensorNotFoundError):
        m.get_shared_tensor("missing")
    rec = m.get_optimization_recommendations()
    assert [t["name"] for t in rec["largest_tensors"]] == ["big", "loose"]
    assert rec["low_reference_tensors"] == ["loose"]  # big is pinned
    assert rec["freeable_tensors"] == ["loose"] and rec["potential_savings_bytes"] == KB
    assert rec["total_memory_bytes"] == 9 * KB
    assert rec["cache_efficiency"] == {"hits": 1, "misses": 1, "hit_rate": 0.5}
    text = " ".join(rec["recommendations"])
    assert "optimize_memory_usage() to free 1 tensor(s)" in text
    assert "88% of max_memory_mb=0.01" in text and "1 pinned tensor(s)" in text
    stats = m.get_stats()
    assert (
        stats["total_tensors"] == 2 and stats["models"] == ["bert"] and stats["total_models"] == 1
    )
    assert stats["max_memory_bytes"] == 10485 and stats["hit_rate"] == 0.5
