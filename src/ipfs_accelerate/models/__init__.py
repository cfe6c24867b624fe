"""Models on the HAL: BERT, MPNet, ModernBERT, ViT, CLIP, Whisper and the Llama-family and GPT-2
decoders from Hugging Face checkpoints, their preprocessing, and ready-to-use pipelines.

The models are written once on :mod:`ipfs_accelerate.ops` and run on every backend;
``device="auto"`` picks one with :func:`ipfs_accelerate.hal.select_backend`. Heavy
dependencies (tokenizers, Pillow, soundfile, huggingface_hub) load on first use.

Quick start::

    from ipfs_accelerate.models import TextEmbedder
    embedder = TextEmbedder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    vectors = embedder.embed(["a sentence", "another one"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipfs_accelerate._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "TextEmbedder": "ipfs_accelerate.models.pipelines",
    "Reranker": "ipfs_accelerate.models.pipelines",
    "Ranked": "ipfs_accelerate.models.pipelines",
    "TextClassifier": "ipfs_accelerate.models.pipelines",
    "fine_tune": "ipfs_accelerate.models.training",
    "ImageClassifier": "ipfs_accelerate.models.pipelines",
    "ZeroShotImageClassifier": "ipfs_accelerate.models.pipelines",
    "SpeechRecognizer": "ipfs_accelerate.models.pipelines",
    "TranscriptSegment": "ipfs_accelerate.models.pipelines",
    "WordTiming": "ipfs_accelerate.models.pipelines",
    "BertConfig": "ipfs_accelerate.models.bert",
    "BertModel": "ipfs_accelerate.models.bert",
    "BertForSequenceClassification": "ipfs_accelerate.models.bert",
    "RobertaConfig": "ipfs_accelerate.models.roberta",
    "RobertaModel": "ipfs_accelerate.models.roberta",
    "RobertaForSequenceClassification": "ipfs_accelerate.models.roberta",
    "DistilBertConfig": "ipfs_accelerate.models.distilbert",
    "DistilBertModel": "ipfs_accelerate.models.distilbert",
    "DistilBertForSequenceClassification": "ipfs_accelerate.models.distilbert",
    "ViTConfig": "ipfs_accelerate.models.vit",
    "ViTModel": "ipfs_accelerate.models.vit",
    "ViTForImageClassification": "ipfs_accelerate.models.vit",
    "CLIPConfig": "ipfs_accelerate.models.clip",
    "CLIPModel": "ipfs_accelerate.models.clip",
    "WhisperConfig": "ipfs_accelerate.models.whisper",
    "WhisperForConditionalGeneration": "ipfs_accelerate.models.whisper",
    "MPNetConfig": "ipfs_accelerate.models.mpnet",
    "MPNetModel": "ipfs_accelerate.models.mpnet",
    "MPNetForSequenceClassification": "ipfs_accelerate.models.mpnet",
    "ModernBertConfig": "ipfs_accelerate.models.modernbert",
    "ModernBertModel": "ipfs_accelerate.models.modernbert",
    "ModernBertForSequenceClassification": "ipfs_accelerate.models.modernbert",
    # text generation
    "TextGenerator": "ipfs_accelerate.models.pipelines",
    "LlamaConfig": "ipfs_accelerate.models.llama",
    "LlamaForCausalLM": "ipfs_accelerate.models.llama",
    "GPT2Config": "ipfs_accelerate.models.gpt2",
    "GPT2LMHeadModel": "ipfs_accelerate.models.gpt2",
    "ChatTemplate": "ipfs_accelerate.models.chat_template",
    "SamplingParams": "ipfs_accelerate.models.generation",
    "load_model": "ipfs_accelerate.models.loading",
    "load_checkpoint": "ipfs_accelerate.models.loading",
    "resolve_checkpoint": "ipfs_accelerate.models.loading",
    "read_safetensors": "ipfs_accelerate.models.loading",
    "default_sharing_manager": "ipfs_accelerate.models.loading",
    "BUNDLED_MODELS": "ipfs_accelerate.models.loading",
}

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    _LAZY,
    submodules=[
        "bert",
        "chat_template",
        "clip",
        "distilbert",
        "generation",
        "gpt2",
        "llama",
        "loading",
        "modernbert",
        "mpnet",
        "pipelines",
        "preprocessing",
        "roberta",
        "vit",
        "whisper",
    ],
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ipfs_accelerate.models.bert import BertConfig as BertConfig
    from ipfs_accelerate.models.bert import (
        BertForSequenceClassification as BertForSequenceClassification,
    )
    from ipfs_accelerate.models.bert import BertModel as BertModel
    from ipfs_accelerate.models.chat_template import ChatTemplate as ChatTemplate
    from ipfs_accelerate.models.clip import CLIPConfig as CLIPConfig
    from ipfs_accelerate.models.clip import CLIPModel as CLIPModel
    from ipfs_accelerate.models.distilbert import DistilBertConfig as DistilBertConfig
    from ipfs_accelerate.models.distilbert import (
        DistilBertForSequenceClassification as DistilBertForSequenceClassification,
    )
    from ipfs_accelerate.models.distilbert import DistilBertModel as DistilBertModel
    from ipfs_accelerate.models.generation import SamplingParams as SamplingParams
    from ipfs_accelerate.models.gpt2 import GPT2Config as GPT2Config
    from ipfs_accelerate.models.gpt2 import GPT2LMHeadModel as GPT2LMHeadModel
    from ipfs_accelerate.models.llama import LlamaConfig as LlamaConfig
    from ipfs_accelerate.models.llama import LlamaForCausalLM as LlamaForCausalLM
    from ipfs_accelerate.models.loading import BUNDLED_MODELS as BUNDLED_MODELS
    from ipfs_accelerate.models.loading import default_sharing_manager as default_sharing_manager
    from ipfs_accelerate.models.loading import load_checkpoint as load_checkpoint
    from ipfs_accelerate.models.loading import load_model as load_model
    from ipfs_accelerate.models.loading import read_safetensors as read_safetensors
    from ipfs_accelerate.models.loading import resolve_checkpoint as resolve_checkpoint
    from ipfs_accelerate.models.modernbert import ModernBertConfig as ModernBertConfig
    from ipfs_accelerate.models.modernbert import (
        ModernBertForSequenceClassification as ModernBertForSequenceClassification,
    )
    from ipfs_accelerate.models.modernbert import ModernBertModel as ModernBertModel
    from ipfs_accelerate.models.mpnet import MPNetConfig as MPNetConfig
    from ipfs_accelerate.models.mpnet import (
        MPNetForSequenceClassification as MPNetForSequenceClassification,
    )
    from ipfs_accelerate.models.mpnet import MPNetModel as MPNetModel
    from ipfs_accelerate.models.pipelines import ImageClassifier as ImageClassifier
    from ipfs_accelerate.models.pipelines import Ranked as Ranked
    from ipfs_accelerate.models.pipelines import Reranker as Reranker
    from ipfs_accelerate.models.pipelines import SpeechRecognizer as SpeechRecognizer
    from ipfs_accelerate.models.pipelines import TextClassifier as TextClassifier
    from ipfs_accelerate.models.pipelines import TextEmbedder as TextEmbedder
    from ipfs_accelerate.models.pipelines import TextGenerator as TextGenerator
    from ipfs_accelerate.models.pipelines import TranscriptSegment as TranscriptSegment
    from ipfs_accelerate.models.pipelines import WordTiming as WordTiming
    from ipfs_accelerate.models.pipelines import ZeroShotImageClassifier as ZeroShotImageClassifier
    from ipfs_accelerate.models.roberta import RobertaConfig as RobertaConfig
    from ipfs_accelerate.models.roberta import (
        RobertaForSequenceClassification as RobertaForSequenceClassification,
    )
    from ipfs_accelerate.models.roberta import RobertaModel as RobertaModel
    from ipfs_accelerate.models.training import fine_tune as fine_tune
    from ipfs_accelerate.models.vit import ViTConfig as ViTConfig
    from ipfs_accelerate.models.vit import ViTForImageClassification as ViTForImageClassification
    from ipfs_accelerate.models.vit import ViTModel as ViTModel
    from ipfs_accelerate.models.whisper import WhisperConfig as WhisperConfig
    from ipfs_accelerate.models.whisper import (
        WhisperForConditionalGeneration as WhisperForConditionalGeneration,
    )
