"""One builder for the official servers' specs. Each server is described as data, a
:class:`ServerKind` in its own module (``vllm.py``, ``tgi.py``, ...); this module turns such a
description into the public ``*_server_spec`` function and into :class:`ServerSpec` objects.

Every builder has the same frame: the server's required arguments (the model), then
``runtime`` (``"docker"``: the official image, whose entrypoint takes the arguments; or
``"process"``: the bare command), ``image``, the port inside the container, ``host_port``,
``network_mode`` (Docker only: ``"host"`` shares the host's network, the server then
listening on 127.0.0.1 at ``host_port``), the
server's own options, ``extra_args`` and ``env``. An option becomes a command-line flag, a
secret in the server's environment (never on its command line, where ``docker inspect`` or
``ps`` would show it), a mounted host directory, or a container setting (``gpus``,
``shm_size``...), as its :class:`Option` says.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.resilience import Secret

from .._spec import PORT_PLACEHOLDER, ServerSpec

__all__ = [
    "GPUS",
    "HF_LAUNCHER_ARGS",
    "REQUIRED",
    "Option",
    "ServerKind",
    "arg",
    "flag",
    "mount",
    "secret",
]

Values = dict[str, Any]

GPUS = "int | str | tuple[str, ...] | None"
# Hugging Face's launchers (TGI, TEI) take the same leading arguments
HF_LAUNCHER_ARGS = ("--model-id", "{model_id}", "--hostname", "{bind}", "--port", "{port}")
# ServerSpec fields that only a container uses: taken from the values in the docker form only
_CONTAINER_SETTINGS = ("gpus", "devices", "shm_size", "ipc_mode")
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Option:
    """One keyword argument of a spec builder, and what its value becomes.

    ``flag``: appended as ``flag value`` when the value is set (``True``: the flag alone;
    None or False: nothing). ``secret_env``: handed to the server in that environment variable.
    ``mount``: in the docker form, the host directory the value names is mounted there
    (``{name}`` in it is the value ``name``). ``render``: the arguments it adds, computed from
    all the values (for options that interact). An option with none of these is read by the
    kind's ``prepare`` step or is a container setting of :class:`ServerSpec`.
    """

    name: str
    annotation: str
    default: Any = None
    flag: str | None = None
    secret_env: str | None = None
    mount: str | None = None
    render: Callable[[Mapping[str, Any]], list[str]] | None = None


def arg(name: str, *, mount: str | None = None) -> Option:
    """A required argument (the model), given by position or by name."""
    return Option(name, "str", REQUIRED, mount=mount)


def flag(cli: str, kind: str) -> Option:
    """An optional command-line flag; the keyword is the flag's name (``--max-model-len``:
    ``max_model_len``)."""
    return Option(cli.lstrip("-").replace("-", "_"), f"{kind} | None", flag=cli)


def secret(name: str, env: str) -> Option:
    return Option(name, "str | Secret | None", secret_env=env)


def mount(name: str, host_dir: str | None, target: str) -> Option:
    return Option(name, "str | None", host_dir, mount=target)


@dataclass(frozen=True)
class ServerKind:
    """An official inference server, as data.

    ``docker_command`` and ``process_command`` are the leading arguments of each form (after
    the image; the whole argv for a process), before the options' flags: ``{port}`` stays for
    :class:`ServerSpec` to fill in; ``{bind}`` is the address to listen on (all of a
    container's, whose port is published on loopback only; loopback for a process and for a
    container on the host's network, ``network_mode="host"``); any other
    ``{name}`` is the value ``name``. ``prepare`` derives values from the others before the
    spec is built (it may add values that the templates name, or container settings such as
    ``devices``).
    """

    name: str
    image: str | None
    port: int
    docker_command: tuple[str, ...]
    process_command: tuple[str, ...]
    options: tuple[Option, ...] = ()
    required: tuple[Option, ...] = (arg("model_id"),)
    port_option: str = "port"
    health_path: str = "/health"
    container: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[[Values, bool], None] | None = None

    @property
    def function_name(self) -> str:
        return f"{self.name}_server_spec"

    def signature(self) -> inspect.Signature:
        """The public builder's signature: the common frame around this server's options."""
        kw = inspect.Parameter.KEYWORD_ONLY
        image_type = "str" if self.image is not None else "str | None"
        options = [
            ("runtime", "str", "docker"),
            ("image", image_type, self.image),
            (self.port_option, "int", self.port),
            ("host_port", "int | None", None),
            ("network_mode", "str | None", None),
            *((o.name, o.annotation, o.default) for o in self.options),
            ("extra_args", "Sequence[str]", ()),
            ("env", "Mapping[str, str] | None", None),
        ]
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Signature(
            [inspect.Parameter(o.name, positional, annotation=o.annotation) for o in self.required]
            + [inspect.Parameter(n, kw, default=d, annotation=a) for n, a, d in options],
            return_annotation="ServerSpec",
        )

    def make(self, *args: Any, **kwargs: Any) -> ServerSpec:
        """Build the spec from the public builder's arguments."""
        try:
            bound = self.signature().bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.function_name}(): {exc}") from None
        bound.apply_defaults()
        return self.build(dict(bound.arguments))

    def build(self, values: Values) -> ServerSpec:
        """The spec from every argument's value (defaults included)."""
        runtime = values["runtime"]
        if runtime not in ("docker", "process"):
            raise ConfigurationError(
                f"{self.function_name}: runtime must be 'docker' or 'process', got {runtime!r}"
            )
        docker = runtime == "docker"
        values = dict(values)
        if self.prepare is not None:
            self.prepare(values, docker)
        network_mode = values["network_mode"]
        if network_mode is not None and not docker:
            raise ConfigurationError(
                f"{self.function_name}: network_mode is a Docker setting; a process runs on "
                f"the host's network already (got network_mode={network_mode!r})"
            )
        # a published container port is reachable on loopback only, so the server may listen
        # on all of the container's addresses; on the host's network those would be every
        # interface of the machine, so it listens on loopback like a process
        bind = "0.0.0.0" if docker and network_mode != "host" else "127.0.0.1"
        fields = {**values, "port": PORT_PLACEHOLDER, "bind": bind}
        template = self.docker_command if docker else self.process_command
        args = [part.format_map(fields) for part in template]
        for option in self.options:
            value = values[option.name]
            if option.render is not None:
                args += option.render(values)
            elif option.flag is not None and value is not None and value is not False:
                args += [option.flag] if value is True else [option.flag, str(value)]
        args += list(values["extra_args"])
        every = (*self.required, *self.options)
        secrets = {
            o.secret_env: _secret(values[o.name])
            for o in every
            if o.secret_env is not None and values[o.name]
        }
        volumes = {
            values[o.name]: o.mount.format_map(fields)
            for o in every
            if docker and o.mount is not None and values[o.name]
        }
        settings = {k: values[k] for k in _CONTAINER_SETTINGS if k in values}
        return ServerSpec(
            name=self.name,
            command=tuple(args),
            image=values["image"] if docker else None,
            port=values[self.port_option],
            host_port=values["host_port"],
            health_path=self.health_path,
            env=dict(values["env"] or {}),
            secret_env=secrets,
            volumes=volumes,
            network_mode=network_mode,
            **({**self.container, **settings} if docker else {}),
        )

    def builder(self, module: str, doc: str) -> Callable[..., ServerSpec]:
        """The public ``{name}_server_spec`` function, with this kind's signature."""

        def build(*args: Any, **kwargs: Any) -> ServerSpec:
            return self.make(*args, **kwargs)

        build.__name__ = build.__qualname__ = self.function_name
        build.__module__ = module
        build.__doc__ = doc
        build.__signature__ = self.signature()  # type: ignore[attr-defined]
        return build


def _secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(str(value))
