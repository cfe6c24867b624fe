"""The CLI tests run the commands against the serve tests' fixtures (the tiny checkpoints, the
bundled MiniLM and a running server), so that each command's output is compared with what the
library and the server give for the same input."""

from __future__ import annotations

# fixtures are found by name in a conftest's namespace; these are used, not just imported
# the session fixtures (checkpoints, registry, server) come from tests/serve/fixtures.py,
# registered once in tests/conftest.py so that both folders share one server
from tests.serve.conftest import _clean_env  # noqa: F401
