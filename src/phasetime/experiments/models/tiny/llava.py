"""LLaVA-family built-ins: tiny-llava, llava-1.4b-random and tiny-llava-onevision."""

from __future__ import annotations

from typing import Any

from .common import byte_tokenizer, chat_template, finish, image_only, pil_image_processor, text_config

LLAVA_TEMPLATE = chat_template()


def _llava(vision: dict[str, Any], text: dict[str, Any], vocab_size: int | None) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = byte_tokenizer(["<image>"], vocab_size=vocab_size, chat=LLAVA_TEMPLATE)
    image_size, patch = vision["image_size"], vision["patch_size"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text_config(len(tokenizer), **text)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    image_processor = pil_image_processor("llava.image_processing_pil_llava", "LlavaImageProcessorPil",
                                          "CLIPImageProcessor")(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        vision_feature_select_strategy="default", chat_template=LLAVA_TEMPLATE,
    )
    return finish(LlavaForConditionalGeneration(config)), processor


def build_llava() -> tuple[Any, Any]:
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14)
    return _llava(vision, dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128), None)


def build_llava_1b() -> tuple[Any, Any]:
    """~1.4B parameters: CLIP ViT-L/14-336 + a 22-layer, 2048-wide Llama (TinyLlama's shape)."""
    vision = dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=336, patch_size=14, projection_dim=768,
    )
    text = dict(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632)
    return _llava(vision, text, 32000)


def build_llava_onevision() -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP tower, any-resolution tiling, Qwen2 language model."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

    template = chat_template("<image>", "<video>")
    tokenizer = byte_tokenizer(["<image>", "<video>"], chat=template)
    size, patch = 56, 14
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=size, patch_size=patch),
        text_config=dict(model_type="qwen2", **text_config(len(tokenizer))),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=[[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]],
    )
    image_processor = pil_image_processor("llava_onevision.image_processing_pil_llava_onevision",
                                          "LlavaOnevisionImageProcessorPil", "LlavaOnevisionImageProcessor")(
        size={"height": size, "width": size}, image_grid_pinpoints=config.image_grid_pinpoints)
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
        num_image_tokens=(size // patch) ** 2, vision_feature_select_strategy="full", chat_template=template,
    )
    return finish(LlavaOnevisionForConditionalGeneration(config)), processor
