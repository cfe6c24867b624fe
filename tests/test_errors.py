"""The typed exception tree: its names never shadow Python's built-ins."""

from __future__ import annotations

import builtins

from ipfs_accelerate import errors


def test_no_error_name_shadows_a_builtin() -> None:
    shadowing = [name for name in errors.__all__ if hasattr(builtins, name)]
    assert shadowing == []


def test_api_timeout_and_connection_errors_are_still_the_builtin_kinds() -> None:
    assert issubclass(errors.APITimeoutError, builtins.TimeoutError)
    assert issubclass(errors.APIConnectionError, builtins.ConnectionError)
    assert issubclass(errors.APITimeoutError, errors.APIError)
    assert issubclass(errors.APIConnectionError, errors.APIError)
    assert not hasattr(errors, "TimeoutError") and not hasattr(errors, "ConnectionError")
