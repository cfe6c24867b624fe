"""The CPU backend (numpy)."""

from ipfs_accelerate.hal.cpu._backend import CPUBackend

__all__ = ["CPUBackend"]
