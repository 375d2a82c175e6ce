"""Qwen-VL built-ins: tiny-qwen2-vl (images and video) and tiny-qwen2.5-vl, with dynamic
resolution (56 x 56 up to 448 x 448 pixels, so image size changes the visual tokens)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .common import byte_tokenizer, chat_template, finish, image_only, pil_image_processor, text_config

SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = chat_template("<|vision_start|><|image_pad|><|vision_end|>", "<|vision_start|><|video_pad|><|vision_end|>",
                         user="<|im_start|>{{ m['role'] }}\n", turn_end="<|im_end|>\n",
                         generation="<|im_start|>assistant\n", image_after="")
PATCH, MERGE, TEMPORAL = 14, 2, 2
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _parts(processor_class: type) -> tuple[Any, dict[str, Any], Any]:
    tokenizer = byte_tokenizer(SPECIALS, chat=TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    tokens = {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
              "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
    image_processor = pil_image_processor("qwen2_vl.image_processing_pil_qwen2_vl", "Qwen2VLImageProcessorPil",
                                          "Qwen2VLImageProcessor")(
        min_pixels=56 * 56, max_pixels=448 * 448, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL)
    processor = image_only(processor_class)(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                            chat_template=TEMPLATE)
    return tokenizer, tokens, processor


def _text(vocab: int, heads: int = 4) -> dict[str, Any]:
    text = text_config(vocab, heads=heads, kv_heads=heads // 2)
    half = 64 // heads // 2  # rotary half of the head size, split over time, height and width
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [half // 4, half * 3 // 8, half - half // 4 - half * 3 // 8]}
    return text


def build_qwen2_vl(heads: int = 4) -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tokenizer, tokens, processor = _parts(Qwen2VLProcessor)
    config = Qwen2VLConfig(
        text_config=_text(len(tokenizer), heads),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=PATCH,
                           spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3),
        **tokens,
    )
    return finish(Qwen2VLForConditionalGeneration(config)), processor


def build_qwen2_vl_h32() -> tuple[Any, Any]:
    """tiny-qwen2-vl with 2 language-model heads of 32 (a head size vLLM's CPU attention takes)."""
    return build_qwen2_vl(heads=2)


def build_qwen2_5_vl() -> tuple[Any, Any]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tokenizer, tokens, processor = _parts(Qwen2_5_VLProcessor)
    config = Qwen2_5_VLConfig(
        text_config=_text(len(tokenizer)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, in_channels=3,
                           window_size=56, fullatt_block_indexes=[1]),
        **tokens,
    )
    return finish(Qwen2_5_VLForConditionalGeneration(config)), processor


def video_inputs(processor: Any, frames: Sequence[Any], prompt: str, side: int = 56) -> dict[str, Any]:
    """Model inputs of one video (a list of PIL frames) and a prompt for a Qwen-VL built-in.

    transformers' Qwen-VL video processor needs torchvision; this builds the same
    ``pixel_values_videos`` and ``video_grid_thw``: frames resized to ``side`` pixels, normalised,
    grouped in pairs along time (padded with the last frame) and cut into 14-pixel patches in
    the order the vision tower expects.
    """
    import torch

    arrays = [(np.asarray(f.convert("RGB").resize((side, side)), dtype=np.float32) / 255 - MEAN) / STD for f in frames]
    if len(arrays) % TEMPORAL:
        arrays.append(arrays[-1])
    video = np.stack(arrays).transpose(0, 3, 1, 2)  # [T, C, H, W]
    t, h, w = video.shape[0] // TEMPORAL, side // PATCH, side // PATCH
    patches = video.reshape(t, TEMPORAL, 3, h // MERGE, MERGE, PATCH, w // MERGE, MERGE, PATCH)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * h * w, 3 * TEMPORAL * PATCH * PATCH)
    tokenizer = processor.tokenizer
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}],
                                         add_generation_prompt=True, tokenize=False)
    text = text.replace("<|video_pad|>", "<|video_pad|>" * (t * h * w // MERGE**2))
    encoded = tokenizer([text], return_tensors="pt")
    return {**encoded, "pixel_values_videos": torch.tensor(patches), "video_grid_thw": torch.tensor([[t, h, w]])}
