"""create_tensor_sharing_demo: its statistics are the sharing that really happened."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.sharing import create_tensor_sharing_demo
from tests.models import _checkpoints


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoints.make_bert(tmp_path_factory.mktemp("demo-bert"))


def _distinct_bytes(model: object) -> int:
    """The bytes of a model's distinct weight contents (as a content-addressed store keeps
    them), computed from its parameters, apart from the manager."""
    seen: dict[tuple[str, str, tuple[int, ...]], int] = {}
    for _, parameter in model.named_parameters():  # type: ignore[attr-defined]
        array = np.ascontiguousarray(parameter.numpy())
        key = (hashlib.sha256(array.tobytes()).hexdigest(), array.dtype.str, array.shape)
        seen[key] = array.nbytes
    return sum(seen.values())


# the tiny checkpoint has 40 positions and spells unknown words letter by letter
@pytest.mark.filterwarnings("ignore::ipfs_accelerate.errors.TruncationWarning")
def test_demo_statistics_equal_what_the_pipelines_hold_in_common(bert_dir: Path) -> None:
    from ipfs_accelerate.models import BertModel, TextEmbedder

    stats = create_tensor_sharing_demo(bert_dir, "cpu", query_max_length=8)
    alone = BertModel.from_pretrained(bert_dir, "cpu", sharing=False)
    expected = _distinct_bytes(alone)
    documents, queries = stats["pipelines"]
    assert (documents["role"], queries["role"]) == ("documents", "queries")
    assert documents["name"] != queries["name"] and len(stats["models"]) == 2
    # both pipelines hold every weight of the checkpoint; the process holds one copy
    assert documents["total_memory_bytes"] == queries["total_memory_bytes"] == expected
    assert documents["exclusive_memory_bytes"] == queries["exclusive_memory_bytes"] == 0
    assert stats["bytes_held"] == stats["memory_usage_bytes"] == expected
    assert stats["bytes_without_sharing"] == 2 * expected
    assert stats["bytes_saved"] == queries["shared_memory_bytes"] == expected > 0
    assert stats["dedup_hits"] >= sum(1 for _ in alone.named_parameters())
    # the ranking is the one unshared pipelines give: sharing changed no number
    private = TextEmbedder.from_pretrained(bert_dir, "cpu", sharing=False)
    short = TextEmbedder.from_pretrained(bert_dir, "cpu", sharing=False, max_length=8)
    texts = [row["document"] for row in stats["ranking"]]
    cosines = private.embed(texts) @ short.embed(stats["query"])
    np.testing.assert_allclose([row["cosine"] for row in stats["ranking"]], cosines, rtol=1e-5)
    assert list(cosines) == sorted(cosines, reverse=True)


def test_demo_refuses_a_bad_query_length(bert_dir: Path) -> None:
    for bad in (1, True, 4.0):
        with pytest.raises(InvalidArgumentError, match="query_max_length"):
            create_tensor_sharing_demo(bert_dir, query_max_length=bad)  # type: ignore[arg-type]
