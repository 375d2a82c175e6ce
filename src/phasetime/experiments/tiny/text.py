"""Text-only built-ins."""

from __future__ import annotations

from typing import Any

from .common import TEXT_TEMPLATE, byte_tokenizer, finish, text_config


def build_llama(*, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer([], chat=TEXT_TEMPLATE)
    config = LlamaConfig(**text_config(len(tokenizer), hidden, layers, heads, kv_heads, intermediate))
    return finish(LlamaForCausalLM(config)), tokenizer
