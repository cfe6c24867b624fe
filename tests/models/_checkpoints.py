"""Tiny seeded random checkpoints in the Hugging Face layout, built offline with transformers
(config -> model -> save_pretrained(safe_serialization=True)) and tokenizers.

Every parameter, biases and layer-norm scales included, is perturbed with seeded noise after
transformers' initialisation (which sets biases to 0 and norms to 1), so a parity test also
checks that each bias and norm parameter is applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = [
    "a",
    "the",
    "cat",
    "dog",
    "bird",
    "photo",
    "of",
    "is",
    "on",
    "in",
    "and",
    "sat",
    "mat",
    "sun",
    "sky",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "house",
    "tree",
    "car",
    "runs",
    "eats",
    "food",
    "man",
    "woman",
    "girl",
    "boy",
    "playing",
    "violin",
    "riding",
    "horse",
    "bread",
    "hello",
    "world",
    "speech",
    "this",
    "that",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
]

CORPUS = [
    "a photo of a cat", "a photo of a dog", "the quick brown fox jumps over the lazy dog",
    "hello world", "a man is eating food", "a woman is playing violin", "the sun is in the sky",
    "a red car and a blue house", "the bird sat on the tree", "a small green bird",
]  # fmt: skip

WHISPER_SPECIALS = [
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|de|>", "<|translate|>",
    "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
]  # fmt: skip


def _perturb(model: Any, seed: int, gain: float | None = None) -> None:
    """Seeded noise on every parameter. With ``gain``, matrices are redrawn with standard
    deviation gain / sqrt(fan_in), so activations stay O(1) and float32 rounding stays far
    below the parity tolerance while the outputs depend strongly on the inputs."""
    import math

    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator)
            if gain is not None and param.ndim >= 2:
                param.copy_(noise * (gain / math.sqrt(math.prod(param.shape[1:]))))
            else:
                param.add_(noise * 0.1)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


# ----------------------------------------------------------------------------- tokenizers


def wordpiece_tokenizer(path: Path) -> int:
    """A BERT WordPiece tokenizer.json; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab_list = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    letters = sorted(set("".join(WORDS)) | set(".,!?'"))
    vocab_list += [c for c in letters if c not in vocab_list] + [f"##{c}" for c in letters]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    # a saved fixed padding/truncation, like MiniLM's tokenizer.json: the loader must override it
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=48)
    tok.enable_truncation(48)
    tok.save(str(path))
    return len(vocab)


def bpe_tokenizer(path: Path, specials: list[str], *, clip_style: bool) -> Any:
    """A byte-level BPE tokenizer trained on the tiny corpus, ``specials`` appended to its
    vocabulary (CLIP puts bos/eos around texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    # special tokens after the regular vocabulary, as in the real checkpoints (Whisper treats
    # every id above <|notimestamps|> as a timestamp)
    tok.add_special_tokens(specials)
    if clip_style:
        bos, eos = specials[0], specials[1]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
        )
    tok.save(str(path))
    return tok


# ----------------------------------------------------------------------------- checkpoints


def make_bert(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_tokenizer(directory / "tokenizer.json")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu",
    )  # fmt: skip
    model = BertModel(config).eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "tokenizer_config.json",
        {"model_max_length": 40, "pad_token": "[PAD]", "do_lower_case": True},
    )
    return directory


def make_cross_encoder(directory: Path, seed: int = 5, num_labels: int = 1) -> Path:
    """A tiny seeded BertForSequenceClassification written by transformers, then loaded and
    saved again by sentence-transformers' CrossEncoder (its modules.json and activation)."""
    import warnings

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    raw = directory.parent / f"{directory.name}-transformers"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_tokenizer(raw / "tokenizer.json")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, num_labels=num_labels,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    _perturb(model, seed, gain=1.0)
    model.save_pretrained(raw, safe_serialization=True)
    _write_json(raw / "tokenizer_config.json", {"model_max_length": 40, "pad_token": "[PAD]"})
    from sentence_transformers import CrossEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CrossEncoder(str(raw), device="cpu").save(str(directory))
    return directory


def make_vit(directory: Path, seed: int = 1) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64,
        id2label={0: "cat", 1: "dog", 2: "bird", 3: "car"},
        label2id={"cat": 0, "dog": 1, "bird": 2, "car": 3},
    )  # fmt: skip
    model = ViTForImageClassification(config).eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "preprocessor_config.json",
        {
            "image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": 32, "width": 32}, "resample": 2, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        },
    )  # fmt: skip
    return directory


def make_clip(directory: Path, seed: int = 2) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    directory.mkdir(parents=True, exist_ok=True)
    tok = bpe_tokenizer(
        directory / "tokenizer.json", ["<|startoftext|>", "<|endoftext|>"], clip_style=True
    )
    torch.manual_seed(seed)
    text = {
        "vocab_size": tok.get_vocab_size(), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32,
        "bos_token_id": tok.token_to_id("<|startoftext|>"),
        "eos_token_id": tok.token_to_id("<|endoftext|>"),
        "pad_token_id": tok.token_to_id("<|endoftext|>"),
    }  # fmt: skip
    vision = {
        "image_size": 32, "patch_size": 8, "hidden_size": 48, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4,
    }  # fmt: skip
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "tokenizer_config.json", {"model_max_length": 32, "pad_token": "<|endoftext|>"}
    )
    _write_json(
        directory / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor", "do_resize": True,
            "size": {"shortest_edge": 32}, "resample": 3, "do_center_crop": True,
            "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
    )  # fmt: skip
    return directory


def make_whisper(directory: Path, seed: int = 3, *, max_target_positions: int = 40) -> Path:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tok = bpe_tokenizer(directory / "tokenizer.json", WHISPER_SPECIALS, clip_style=False)
    ids = {s: tok.token_to_id(s) for s in WHISPER_SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=32, encoder_layers=2,
        encoder_attention_heads=4, decoder_layers=2, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=max_target_positions,
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        begin_suppress_tokens=[tok.token_to_id("Ġ") or 220, ids["<|endoftext|>"]],
        suppress_tokens=[],
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    # strong noise: a weakly perturbed decoder repeats one token whatever the audio, which
    # would let a decoder that ignores its input pass the greedy-decoding parity test
    _perturb(model, seed, gain=1.0)
    # the random model's favourite tokens, suppressed so that generation must honour the list
    suppress = sorted(
        {ids["<|startoflm|>"], ids["<|startofprev|>"], ids["<|nospeech|>"], 40, 41, 42}
    )
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        max_length=max_target_positions,
        suppress_tokens=suppress, begin_suppress_tokens=[ids["<|endoftext|>"]],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
    )  # fmt: skip
    model.save_pretrained(directory, safe_serialization=True)
    _write_json(
        directory / "preprocessor_config.json",
        {
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
            "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
            "padding_value": 0.0,
        },
    )  # fmt: skip
    return directory
