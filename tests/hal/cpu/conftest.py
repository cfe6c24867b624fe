"""Fixtures of the cpu backend's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ipfs_accelerate.hal.cpu import _mkl


@pytest.fixture
def blas_setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set $IPFS_ACCELERATE_CPU_BLAS for a test (None: unset; read again at once); the
    setting and MKL's loaded state are restored after."""

    def choose(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(_mkl.BLAS_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(_mkl.BLAS_VARIABLE, value)
        _mkl._reset()

    yield choose
    monkeypatch.undo()
    _mkl._reset()
