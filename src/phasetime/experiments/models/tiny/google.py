"""Gemma-family built-ins: tiny-gemma3 (SigLIP + Gemma3) and tiny-paligemma (SigLIP + Gemma)."""

from __future__ import annotations

from typing import Any

from .common import byte_tokenizer, chat_template, finish, pil_image_processor, text_config

SIDE, PATCH = 56, 14
SIGLIP = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=2, image_size=SIDE, patch_size=PATCH)
GEMMA_TEMPLATE = chat_template("<start_of_image>", user="<start_of_turn>{{ m['role'] }}\n", turn_end="<end_of_turn>\n",
                               generation="<start_of_turn>model\n", image_after="")


def build_gemma3() -> tuple[Any, Any]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor

    named = {"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"}
    specials = [*named.values(), "<start_of_turn>", "<end_of_turn>"]
    tokenizer = byte_tokenizer(specials, chat=GEMMA_TEMPLATE, named=named)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in named.items()}
    tokens_per_image = 4
    config = Gemma3Config(
        text_config=dict(model_type="gemma3_text", head_dim=16, sliding_window=64, **text_config(len(tokenizer))),
        vision_config=SIGLIP, mm_tokens_per_image=tokens_per_image,
        boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"], image_token_index=ids["image_token"],
    )
    image_processor = pil_image_processor("gemma3.image_processing_pil_gemma3", "Gemma3ImageProcessorPil",
                                          "Gemma3ImageProcessor")(size={"height": SIDE, "width": SIDE})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=GEMMA_TEMPLATE,
                                image_seq_length=tokens_per_image)
    return finish(Gemma3ForConditionalGeneration(config)), processor


def build_paligemma() -> tuple[Any, Any]:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    template = chat_template("", user="", turn_end="", generation="", image_after="")
    tokenizer = byte_tokenizer(["<image>"], chat=template, named={"image_token": "<image>"})
    image_processor = pil_image_processor("siglip.image_processing_pil_siglip", "SiglipImageProcessorPil",
                                          "SiglipImageProcessor")(size={"height": SIDE, "width": SIDE})
    image_processor.image_seq_length = (SIDE // PATCH) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    text = text_config(len(processor.tokenizer), head_dim=16)  # the processor added PaliGemma's location tokens
    config = PaliGemmaConfig(
        text_config=dict(model_type="gemma", **text), vision_config={**SIGLIP, "projection_dim": text["hidden_size"]},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vocab_size=text["vocab_size"],
        projection_dim=text["hidden_size"], hidden_size=text["hidden_size"],
    )
    return finish(PaliGemmaForConditionalGeneration(config)), processor
