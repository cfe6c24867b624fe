"""The official inference servers, one module of data each (a :class:`ServerKind`), and their
spec builders. Adding a server is one module here and one line below."""

from ._builder import Option, ServerKind
from .ovms import OVMS, ovms_server_spec
from .tei import TEI, tei_server_spec
from .tgi import TGI, tgi_server_spec
from .vllm import VLLM, vllm_server_spec

__all__ = [
    "OVMS",
    "TEI",
    "TGI",
    "VLLM",
    "Option",
    "ServerKind",
    "ovms_server_spec",
    "tei_server_spec",
    "tgi_server_spec",
    "vllm_server_spec",
]
