"""Tiny seeded RoBERTa, XLM-RoBERTa and DistilBERT checkpoints written by transformers
(base models and sequence-classification heads), with tokenizers the text pipelines can load.

Every parameter is perturbed with seeded noise (see ``_checkpoints._perturb``), so parity
tests also check biases, norms and the padding row of the position table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.models._checkpoints import CORPUS, _perturb, _write_json, wordpiece_tokenizer

#: usable positions of the RoBERTa checkpoints (max_position_embeddings - pad_token_id - 1)
ROBERTA_TOKENS = 40


def roberta_tokenizer(path: Path, specials: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on the tiny corpus whose first ids are ``specials``
    (``<s>``, ``</s>``, ``<pad>`` in the order given), with RoBERTa's ``<s> A </s>`` template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
    )
    tok.save(str(path))
    return tok


def make_roberta(
    directory: Path,
    *,
    model_type: str = "roberta",
    classifier: bool = False,
    num_labels: int = 3,
    seed: int = 10,
) -> Path:
    """``model_type`` "roberta" (pad id 1, as roberta-base) or "xlm-roberta" (the pad token
    placed at id 3, so that nothing may assume RoBERTa's usual padding index)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    xlm = model_type == "xlm-roberta"
    specials = ["<s>", "<unk>", "</s>", "<pad>"] if xlm else ["<s>", "<pad>", "</s>", "<unk>"]
    tok = roberta_tokenizer(directory / "tokenizer.json", specials)
    pad = tok.token_to_id("<pad>")
    torch.manual_seed(seed)
    prefix = "XLMRoberta" if xlm else "Roberta"
    config_class = getattr(transformers, f"{prefix}Config")
    head = "ForSequenceClassification" if classifier else "Model"
    model_class = getattr(transformers, f"{prefix}{head}")
    config = config_class(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, hidden_act="gelu",
        max_position_embeddings=ROBERTA_TOKENS + pad + 1, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=pad, bos_token_id=0, eos_token_id=2,
        num_labels=num_labels,
    )  # fmt: skip
    model = model_class(config).eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "tokenizer_config.json",
        {"model_max_length": ROBERTA_TOKENS, "pad_token": "<pad>", "bos_token": "<s>",
         "eos_token": "</s>"},
    )  # fmt: skip
    return directory


def make_distilbert(
    directory: Path,
    *,
    classifier: bool = False,
    sinusoidal: bool = False,
    num_labels: int = 2,
    seed: int = 11,
) -> Path:
    """With ``sinusoidal`` the position table stays the sinusoid transformers writes (it is
    left out of the perturbation)."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertModel,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_tokenizer(directory / "tokenizer.json")
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=vocab, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
        max_position_embeddings=40, activation="gelu", sinusoidal_pos_embds=sinusoidal,
        num_labels=num_labels,
    )  # fmt: skip
    model_class = DistilBertForSequenceClassification if classifier else DistilBertModel
    model = model_class(config).eval()
    embeddings = (model.distilbert if classifier else model).embeddings
    sinusoid = embeddings.position_embeddings.weight.detach().clone()
    _perturb(model, seed)
    if sinusoidal:
        with torch.no_grad():
            embeddings.position_embeddings.weight.copy_(sinusoid)
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "tokenizer_config.json",
        {"model_max_length": 40, "pad_token": "[PAD]", "do_lower_case": True},
    )
    return directory
