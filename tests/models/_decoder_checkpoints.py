"""Tiny seeded decoder checkpoints (Llama, Llama with llama3 rope, Mistral, Qwen2, Qwen3,
GPT-2) written by transformers, with byte-level BPE tokenizers trained by ``tokenizers`` and
a chat template; built once per test process into a temporary directory, offline."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.models._checkpoints import CORPUS, _perturb, _write_json

FAMILIES = ("llama", "llama3", "mistral", "qwen2", "qwen3", "gpt2")

#: ChatML, as Qwen and SmolLM2 write it
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: Llama 2's, with a system prompt folded into the first user turn and raise_exception
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

_SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def _tokenizer(directory: Path, *, add_bos: bool, template: str, eos: str) -> Any:
    from tokenizers import processors

    from tests.models._checkpoints import bpe_tokenizer

    tok = bpe_tokenizer(directory / "tokenizer.json", _SPECIALS, clip_style=False)
    if add_bos:  # as Llama's tokenizer: <s> before every text
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        tok.save(str(directory / "tokenizer.json"))
    settings = {"bos_token": "<s>", "eos_token": eos, "model_max_length": 64}
    _write_json(directory / "tokenizer_config.json", settings)
    (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
    return tok


def make_decoder(directory: Path, family: str, seed: int = 5) -> Path:
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    gpt2 = family == "gpt2"
    template = LLAMA2 if family in ("llama", "mistral") else CHATML
    eos_token = "</s>" if template == LLAMA2 else "<|im_end|>"
    tok = _tokenizer(directory, add_bos=family in ("llama", "llama3"), template=template,
                     eos=eos_token)  # fmt: skip
    vocab, eos = tok.get_vocab_size(), tok.token_to_id(eos_token)
    torch.manual_seed(seed)
    common = {"vocab_size": vocab, "bos_token_id": tok.token_to_id("<s>"), "eos_token_id": eos}
    if gpt2:
        config: Any = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=64, **common
        )
        model: Any = transformers.GPT2LMHeadModel(config)
    else:
        sizes = {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        }  # fmt: skip
        extra: dict[str, Any] = {
            "llama": {"tie_word_embeddings": False},
            "llama3": {
                "tie_word_embeddings": True,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 4.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 16,
                },
            },
            "mistral": {"sliding_window": 8},
            "qwen2": {},
            "qwen3": {"head_dim": 16, "tie_word_embeddings": True},
        }[family]
        name = {"llama3": "Llama"}.get(family, family.capitalize())
        config = getattr(transformers, f"{name}Config")(**sizes, **common, **extra)
        model = getattr(transformers, f"{name}ForCausalLM")(config)
    model = model.eval()
    # strong noise: a weakly perturbed decoder repeats one token whatever the prompt
    _perturb(model, seed, gain=1.0)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=eos, bos_token_id=common["bos_token_id"], do_sample=False
    )
    model.save_pretrained(directory, safe_serialization=True)
    return directory


_ROOT: list[Path] = []


@functools.cache
def decoder_checkpoint(family: str) -> Path:
    """The checkpoint of ``family`` (built on first use in this process)."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="decoders-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return make_decoder(_ROOT[0] / family, family)


__all__ = ["CHATML", "CORPUS", "FAMILIES", "LLAMA2", "decoder_checkpoint", "make_decoder"]
