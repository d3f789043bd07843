"""Pretrained weights and tokenizers from Hugging Face checkpoints, without torch."""

from llmjax.pretrained.encoder_tokenizer import load_tokenizer
from llmjax.pretrained.hf_import import encoder_config_from_hf, from_hf, load_encoder_weights

__all__ = ["encoder_config_from_hf", "from_hf", "load_encoder_weights", "load_tokenizer"]
