"""Optimizers for the parameters that autograd gives gradients to (docs/training.md).

``SGD`` and ``AdamW`` follow torch.optim's update rules step for step (tests compare them
on the same parameters and gradients); they update parameters in place with
``Tensor.copy_`` under ``no_grad``, on the parameters' own backend. ``clip_grad_norm_``
scales gradients to a maximum joint norm.
"""

from ipfs_accelerate.optim._adamw import AdamW
from ipfs_accelerate.optim._clip import clip_grad_norm_
from ipfs_accelerate.optim._compiled import CompiledStep, compile_step
from ipfs_accelerate.optim._optimizer import Optimizer
from ipfs_accelerate.optim._sgd import SGD

__all__ = ["SGD", "AdamW", "CompiledStep", "Optimizer", "clip_grad_norm_", "compile_step"]
