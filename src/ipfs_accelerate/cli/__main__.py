"""``python -m ipfs_accelerate.cli``: the ``ipfs-accelerate`` command."""

from . import main

main()
