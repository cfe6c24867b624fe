"""Text generation for decoder models: the KV cache, sampling, stop conditions, streaming.

:class:`GenerationEngine` runs any :class:`CausalLM` (``LlamaForCausalLM``,
``GPT2LMHeadModel``) over token prompts: one prefill, then one token per step through a
preallocated :class:`KVCache`, each sequence with its own :class:`SamplingParams`.
:class:`~ipfs_accelerate.models.pipelines.TextGenerator` puts a tokenizer and chat template
around it. The logits processors are plain numpy functions (``apply_top_p`` ...), each
equal to transformers' processor of the same name.
"""

from ipfs_accelerate.models.generation._batch import ContinuousBatch
from ipfs_accelerate.models.generation._cache import (
    CacheShape,
    CausalLM,
    DecodeStep,
    KVCache,
)
from ipfs_accelerate.models.generation._engine import (
    GenerationEngine,
    GenerationEvent,
    GenerationResult,
    TokenLogprob,
    TopLogprob,
)
from ipfs_accelerate.models.generation._sampling import (
    MAX_STOP_STRINGS,
    GenerationDefaults,
    SamplingParams,
    apply_frequency_presence,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)
from ipfs_accelerate.models.generation._text import IncrementalDetokenizer, StopStrings

__all__ = [
    "MAX_STOP_STRINGS",
    "CacheShape",
    "CausalLM",
    "ContinuousBatch",
    "DecodeStep",
    "GenerationDefaults",
    "GenerationEngine",
    "GenerationEvent",
    "GenerationResult",
    "IncrementalDetokenizer",
    "KVCache",
    "SamplingParams",
    "StopStrings",
    "TokenLogprob",
    "TopLogprob",
    "apply_frequency_presence",
    "apply_min_p",
    "apply_repetition_penalty",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
]
