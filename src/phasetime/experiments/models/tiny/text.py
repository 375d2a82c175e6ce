"""Text-only built-ins: a tiny Llama, and the small drafts for assisted decoding."""

from __future__ import annotations

from typing import Any

from .common import TEXT_TEMPLATE, byte_tokenizer, chat_template, finish, text_config


def build_llama(*, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128,
                extra_special: tuple[str, ...] = (), chat: str = TEXT_TEMPLATE) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer(list(extra_special), chat=chat)
    config = LlamaConfig(**text_config(len(tokenizer), hidden, layers, heads, kv_heads, intermediate))
    return finish(LlamaForCausalLM(config)), tokenizer


def build_llama_draft() -> tuple[Any, Any]:
    """A 1-layer, 32-wide Llama with tiny-llama's tokenizer: a draft for tiny-llama."""
    return build_llama(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64)


def build_llava_draft() -> tuple[Any, Any]:
    """A 1-layer, 32-wide Llama with tiny-llava's tokenizer (<image> included): a text draft for tiny-llava."""
    return build_llama(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, extra_special=("<image>",),
                       chat=chat_template())


def build_llama_h32() -> tuple[Any, Any]:
    """tiny-llama with 2 heads of 32 (vLLM's CPU attention takes head sizes 32, 64, 80, ...)."""
    return build_llama(heads=2, kv_heads=1)
