"""Lazy exports for the package ``__init__`` modules (PEP 562), derived from one table each.

A package writes ``name -> defining module`` once; :func:`lazy_exports` gives it ``__all__``,
a module ``__getattr__`` that imports the defining module on first access (so heavy
dependencies load on first use, never on ``import ipfs_accelerate``) and ``__dir__``.
Type checkers do not run ``__getattr__``: each package keeps ``import X as X`` lines under
``TYPE_CHECKING`` for them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]

Getattr = Callable[[str], Any]
Dir = Callable[[], list[str]]


def lazy_exports(
    package: str,
    table: Mapping[str, str],
    *,
    eager: Iterable[str] = (),
    submodules: Iterable[str] = (),
    export_submodules: bool = False,
) -> tuple[list[str], Getattr, Dir]:
    """``(__all__, __getattr__, __dir__)`` of ``package``.

    ``table`` maps each lazily exported name to the module that defines it: a bare module
    name is a submodule of ``package`` (``"_base"``), a dotted one is absolute
    (``"ipfs_accelerate.storage"``), so a package can re-export a name from elsewhere.
    ``eager`` names are already bound in the package and are only listed. ``submodules``
    load on attribute access and are listed by ``dir()``; with ``export_submodules`` they
    are part of ``__all__`` too (``from package import *`` then imports them).
    """
    modules = dict(table)
    children = sorted(set(submodules))
    public = sorted({*modules, *eager, *(children if export_submodules else ())})

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is not None:
            path = module if "." in module else f"{package}.{module}"
            value = getattr(importlib.import_module(path), name)
        elif name in children:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # cached in the package: later lookups are plain attribute reads
        setattr(sys.modules[package], name, value)
        return value

    listed = sorted({*public, *children})

    def __dir__() -> list[str]:
        return list(listed)

    return public, __getattr__, __dir__
