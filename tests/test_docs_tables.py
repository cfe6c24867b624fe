"""The backend tables of docs/api_backends.md and README.md, generated from the code.

The tables sit between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``
markers; the tests below regenerate them and fail when a page differs, so the tables cannot
drift from the registry. After changing a backend, rewrite them with

    PYTHONPATH=src python -m tests.test_docs_tables

Everything comes from the code: the list of backends (the registry, in its order), which of
the common methods each implements, its other public methods, where it reads its URL and key
(metadata keys, environment variables), its default URL, whether a key is required (found by
constructing the backend without one), and its default models. What it talks to and the
routes it uses are written by hand on its class (``summary``, ``routes``); every backticked
token of those must occur in the backend's code, so a renamed route fails the test.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api_backends.md"
README = ROOT / "README.md"

# S3 Kit is configured through metadata["s3cfg"], not base_url/api_key (see docs/s3_kit.md)
S3_CONFIG = (
    "`s3cfg`: `endpoint` or `endpoints`, `region`, `bucket`; `$AWS_ENDPOINT_URL_S3`, "
    "`$AWS_ENDPOINT_URL`, `$AWS_REGION`; default: AWS S3 in `us-east-1`",
    "`s3cfg`: `accessKey`, `secretKey`, `sessionToken`; `$AWS_ACCESS_KEY_ID`, "
    "`$AWS_SECRET_ACCESS_KEY`, `$AWS_SESSION_TOKEN`; or `anonymous`, `credential_chain`",
)
UNIFIED_KEYS = ("endpoints", "strategy", "router", "managed_server")
# class attributes, written by hand: what the backend talks to (README) and its routes
DESCRIPTIONS = ("summary", "routes")
COMMON = ("chat", "stream_chat", "embed")


def _backends() -> list[tuple[str, Any]]:
    from ipfs_accelerate.api_backends import get_available_backends, get_backend_class

    return [(name, get_backend_class(name)) for name in get_available_backends()]


def _defined_in(cls: type, name: str) -> type:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    raise AttributeError(name)


def _surfaces(cls: type) -> dict[str, bool]:
    """Which common methods the backend implements (the base class's raise UnsupportedOpError)."""
    from ipfs_accelerate.api_backends import APIBackend, OpenAICompatibleBackend

    # S3 Kit is no APIBackend and has none of them
    found = {
        name: hasattr(cls, name) and _defined_in(cls, name) is not APIBackend for name in COMMON
    }
    if issubclass(cls, OpenAICompatibleBackend) and not cls.supports_embeddings:
        found["embed"] = _defined_in(cls, "embed") is not OpenAICompatibleBackend
    # tools: the OpenAI request builder's flag, or a chat parser that builds ToolCall objects
    owner = _defined_in(cls, "chat") if found["chat"] else None
    if owner is None:
        found["tools"] = False
    elif owner.__module__.endswith("_openai_compat"):
        found["tools"] = bool(getattr(cls, "supports_tools", False))
    else:
        found["tools"] = "ToolCall(" in inspect.getsource(sys.modules[owner.__module__])
    return found


def _other_methods(cls: type) -> str:
    from ipfs_accelerate.api_backends import APIBackend, UnifiedBackend

    skip = set(dir(APIBackend)) | {"plain", "server_spec"}
    unified = set(vars(UnifiedBackend)) if issubclass(cls, UnifiedBackend) else set()
    names = sorted(
        n for n in dir(cls)
        if not n.startswith("_") and n not in skip | unified and callable(getattr(cls, n))
    )  # fmt: skip
    text = ", ".join(f"`{n}`" for n in names)
    if unified:
        managed = sorted(
            n
            for n in unified
            if not n.startswith("_") and n not in skip and callable(getattr(cls, n))
        )
        text = ", ".join(x for x in (text, "Unified: " + ", ".join(f"`{n}`" for n in managed)) if x)
    return text or "—"


def _construct(cls: Callable[..., Any], metadata: dict[str, Any]) -> Any:
    from ipfs_accelerate.errors import ConfigurationError

    try:
        return cls(None, metadata)
    except ConfigurationError:
        return None


def _key_rule(cls: type) -> str:
    """Whether a key is needed, found by constructing the backend without one."""
    custom = _construct(cls, {"base_url": "http://127.0.0.1:9"})
    default_url = getattr(cls, "default_base_url", None)
    at_default = _construct(cls, {}) if default_url else custom
    if custom is None and at_default is None:
        return "required"
    if at_default is None:
        return "required for the default URL only"
    return "optional (sent when given)"


def _url_rule(cls: type) -> str:
    keys = ", ".join(f"`{k}`" for k in ("base_url", *cls.base_url_keys))
    env = ", ".join(f"`${e}`" for e in cls.base_url_env)
    default = f"`{cls.default_base_url}`" if cls.default_base_url else "required"
    return "; ".join(x for x in (keys, env, f"default: {default}") if x)


class _Recorder:
    """A loopback HTTP server that records each request and answers 400 (so nothing retries):
    the model a backend sends when the caller passes none is read from what arrives."""

    def __init__(self) -> None:
        from ._docs_services import LoopThread

        self.requests: list[tuple[str, Any]] = []
        self._thread = LoopThread()
        self.url = self._thread.run(self._start())

    async def _start(self) -> str:
        from aiohttp import web

        async def record(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                data = json.loads(body) if body else None
            except ValueError:
                data = None
            self.requests.append((request.path, data))
            return web.json_response(
                {"error": {"message": "recorded", "type": "invalid_request_error"}}, status=400
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def close(self) -> None:
        self._thread.run(self._runner.cleanup())
        self._thread.close()


def default_models() -> dict[str, str]:
    """What each backend sends as the model of a chat / embed call that names none."""
    from ipfs_accelerate.api_backends import S3Kit
    from ipfs_accelerate.errors import APIError, ConfigurationError

    recorder = _Recorder()
    out: dict[str, str] = {}
    try:
        for name, cls in _backends():
            if cls is S3Kit:
                out[name] = "—"
                continue
            surfaces = _surfaces(cls)
            backend = cls(None, {"base_url": recorder.url, "api_key": "docs-probe"})
            found = []
            calls = (("chat", lambda b: b.sync.chat(None, "hi", max_retries=0)),
                     ("embed", lambda b: b.sync.embed(None, ["hi"], max_retries=0)))  # fmt: skip
            for label, call in calls:
                if (
                    not surfaces["stream_chat" if label == "chat" else "embed"]
                    or not surfaces[label]
                ):
                    continue
                del recorder.requests[:]
                try:
                    call(backend)
                except ConfigurationError:
                    found.append(f"{label}: none (pass one)")
                    continue
                except APIError:
                    pass
                path, body = recorder.requests[-1]
                model = body.get("model") if isinstance(body, dict) else None
                in_path = re.search(r"/models/([^/:]+):", path)
                model = model or (in_path.group(1) if in_path else None)
                found.append(
                    f"{label}: `{model}`" if model else f"{label}: not sent (one model per server)"
                )
            backend.close()
            out[name] = "; ".join(found) or "—"
    finally:
        recorder.close()
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def surfaces_table() -> str:
    rows = ["| Backend | Protocol and routes | chat | stream | embed | tools | Other methods |",
            "|---|---|:-:|:-:|:-:|:-:|---|"]  # fmt: skip
    for name, cls in _backends():
        s = _surfaces(cls)
        marks = " | ".join("✓" if s[k] else "" for k in ("chat", "stream_chat", "embed", "tools"))
        rows.append(f"| `{name}` | {_cell(cls.routes)} | {marks} | {_other_methods(cls)} |")
    return "\n".join(rows)


def config_table() -> str:
    rows = ["| Backend | Server URL: metadata keys; environment; default "
            "| API key: metadata keys; environment | Key | Model sent when none is passed |",
            "|---|---|---|---|---|"]  # fmt: skip
    from ipfs_accelerate.api_backends import S3Kit, UnifiedBackend

    models = default_models()
    for name, cls in _backends():
        if cls is S3Kit:
            rows.append(f"| `{name}` | {S3_CONFIG[0]} | {S3_CONFIG[1]} | required | — |")
            continue
        url = _url_rule(cls)
        if issubclass(cls, UnifiedBackend):
            url += "; or " + ", ".join(f"`{k}`" for k in UNIFIED_KEYS)
        keys = ", ".join(f"`{k}`" for k in ("api_key", *cls.api_key_keys))
        env = ", ".join(f"`${e}`" for e in cls.api_key_env)
        key_cell = "; ".join(x for x in (keys, env) if x)
        rows.append(f"| `{name}` | {url} | {key_cell} | {_key_rule(cls)} | {models[name]} |")
    return "\n".join(rows)


def summary_table() -> str:
    rows = ["| Backend | Talks to |", "|---|---|"]
    for name, cls in _backends():
        rows.append(f"| [`{name}`](docs/api_backends.md#{name}) | {_cell(cls.summary)} |")
    return "\n".join(rows)


GENERATED: dict[Path, dict[str, Callable[[], str]]] = {
    API_PAGE: {"backend-surfaces": surfaces_table, "backend-config": config_table},
    README: {"backend-summary": summary_table},
}


def _section(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN GENERATED: {name} -->\n)(.*?)(<!-- END GENERATED: {name} -->)", re.S
    )


def render(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    for name, make in GENERATED[page].items():
        pattern = _section(name)
        if not pattern.search(text):
            raise AssertionError(f"{page.name} has no GENERATED section {name!r}")
        table = make()
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(3), text)
    return text


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from ._docs_services import PROVIDER_ENV

    for name in PROVIDER_ENV:  # "required" is decided without the developer's keys
        monkeypatch.delenv(name, raising=False)


def test_each_backend_class_describes_itself() -> None:
    """summary and routes are the class's own (a subclass must not show its parent's)."""
    from ipfs_accelerate.api_backends import get_backend_class

    backends = [*_backends(), ("sample_backend", get_backend_class("sample_backend"))]
    assert len(backends) == 19
    for name, cls in backends:
        for attribute in DESCRIPTIONS:
            text = vars(cls).get(attribute)
            assert isinstance(text, str) and text.strip(), f"{name}: no {attribute} on its class"


@pytest.mark.parametrize("page", sorted(GENERATED), ids=lambda p: p.name)
def test_generated_tables_are_current(page: Path) -> None:
    assert page.read_text(encoding="utf-8") == render(page), (
        f"the backend tables of {page.name} are out of date: "
        "run PYTHONPATH=src python -m tests.test_docs_tables"
    )


def test_tables_list_each_backend_once() -> None:
    names = [name for name, _ in _backends()]
    for page, sections in GENERATED.items():
        text = page.read_text(encoding="utf-8")
        for section in sections:
            match = _section(section).search(text)
            assert match is not None
            listed = re.findall(r"^\| \[?`([a-z0-9_]+)`", match.group(2), re.M)
            assert listed == names, f"{page.name} {section}: {listed}"


def _code_of(module: Any) -> str:
    """The module's source without its classes' ``summary``/``routes`` (the text checked)."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.AnnAssign | ast.Assign) and node.end_lineno is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in DESCRIPTIONS for t in targets):
                first, last = node.lineno - 1, node.end_lineno
                lines[first:last] = [""] * (last - first)
    return "\n".join(lines)


def test_hand_written_tokens_occur_in_the_backend_source() -> None:
    from ipfs_accelerate.api_backends import APIBackend, S3Kit

    for name, cls in _backends():
        modules = {
            sys.modules[k.__module__]
            for k in cls.__mro__
            if issubclass(k, APIBackend) or k.__module__.startswith("ipfs_accelerate")
        }
        source = "\n".join(_code_of(m) for m in modules)
        prefix = getattr(cls, "api_prefix", "")
        text = f"{cls.summary} {cls.routes}" + (" ".join(S3_CONFIG) if cls is S3Kit else "")
        for token in re.findall(r"`([^`]+)`", text):
            if token in {n for n, _ in _backends()}:
                continue
            token = token.lstrip("$")
            pieces = [p for p in re.split(r"\{[^}]*\}", token) if p]
            for piece in pieces:
                stripped = piece[len(prefix) :] if prefix and piece.startswith(prefix) else piece
                assert piece in source or stripped in source, (
                    f"{name}: `{token}` is not in its source"
                )


def test_every_backend_has_a_section() -> None:
    text = API_PAGE.read_text(encoding="utf-8")
    for name, _ in _backends():
        assert f"\n### `{name}`\n" in text, f"docs/api_backends.md has no section for {name}"


def test_derived_facts_match_behaviour() -> None:
    """Spot checks that the derivation reads the code right (a wrong rule would pass the rest)."""
    table = {
        name: row
        for name, row in zip(
            [n for n, _ in _backends()], config_table().splitlines()[2:], strict=True
        )
    }
    assert (
        "| required |" in table["openai"]
        and "required for the default URL only" in table["openai_mini"]
    )
    assert "optional" in table["ollama"] and "`$OLLAMA_HOST`" in table["ollama"]
    surfaces = {name: _surfaces(cls) for name, cls in _backends()}
    assert surfaces["groq"] == {"chat": True, "stream_chat": True, "embed": False, "tools": True}
    assert surfaces["hf_tei"] == {
        "chat": False,
        "stream_chat": False,
        "embed": True,
        "tools": False,
    }
    from ipfs_accelerate.api_backends.sample_backend import SampleBackend

    assert surfaces["claude"]["tools"] and not _surfaces(SampleBackend)["tools"]
    assert not any(surfaces["s3_kit"].values())


if __name__ == "__main__":
    import os

    from ._docs_services import PROVIDER_ENV

    for variable in PROVIDER_ENV:  # as in the tests: facts of the code, not of this shell
        os.environ.pop(variable, None)
    for target in GENERATED:
        target.write_text(render(target), encoding="utf-8")
        print(f"rewrote the generated tables of {target.relative_to(ROOT)}")
