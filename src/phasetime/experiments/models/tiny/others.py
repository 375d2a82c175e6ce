"""More built-ins: tiny-smolvlm (Idefics3-style), tiny-internvl, tiny-mllama (cross-attention)
and tiny-blip2 (a model that brings its own generate())."""

from __future__ import annotations

from typing import Any

from .common import PAD_ID, byte_tokenizer, chat_template, finish, image_only, pil_image_processor, text_config

SIDE, PATCH = 56, 14


def build_smolvlm() -> tuple[Any, Any]:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor

    named = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
             "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"}
    template = chat_template("<image>", user="{{ m['role'] | capitalize }}:", turn_end="<end_of_utterance>\n",
                             generation="Assistant:", image_after="")
    tokenizer = byte_tokenizer(list(named.values()), chat=template, named=named)
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SIDE, patch_size=PATCH),
        text_config=dict(model_type="llama", **text_config(len(tokenizer))),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2, pad_token_id=PAD_ID,
    )
    image_processor = pil_image_processor("smolvlm.image_processing_pil_smolvlm", "SmolVLMImageProcessorPil",
                                          "SmolVLMImageProcessor")(
        do_image_splitting=False, size={"longest_edge": SIDE}, max_image_size={"longest_edge": SIDE})
    # The template stays with the tokenizer: SmolVLM's own apply_chat_template asks the (absent) video processor.
    processor = image_only(SmolVLMProcessor)(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                             image_seq_len=(SIDE // PATCH) ** 2 // 4)
    return finish(SmolVLMForConditionalGeneration(config)), processor


def build_internvl() -> tuple[Any, Any]:
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    template = chat_template("<IMG_CONTEXT>", user="<|im_start|>{{ m['role'] }}\n", turn_end="<|im_end|>\n",
                             generation="<|im_start|>assistant\n")
    tokenizer = byte_tokenizer([*named.values(), "<|im_start|>", "<|im_end|>"], chat=template, named=named)
    seq = (SIDE // PATCH) ** 2 // 4  # downsample ratio 0.5 in each direction
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[SIDE, SIDE], patch_size=[PATCH, PATCH]),
        text_config=dict(model_type="qwen2", **text_config(len(tokenizer))),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq,
    )
    image_processor = pil_image_processor("got_ocr2.image_processing_pil_got_ocr2", "GotOcr2ImageProcessorPil",
                                          "GotOcr2ImageProcessor")(
        size={"height": SIDE, "width": SIDE}, crop_to_patches=False)
    processor = image_only(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                              video_processor=None, image_seq_length=seq, chat_template=template)
    return finish(InternVLForConditionalGeneration(config)), processor


def build_mllama() -> tuple[Any, Any]:
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor

    template = chat_template("<|image|>", image_after="")
    tokenizer = byte_tokenizer(["<|image|>"], chat=template, named={"image_token": "<|image|>"})
    text = text_config(len(tokenizer) + 8, layers=3, cross_attention_layers=[1])
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=SIDE, patch_size=PATCH, max_num_tiles=4,
                           intermediate_layers_indices=[0], vision_output_dim=64),
        text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )
    image_processor = pil_image_processor("mllama.image_processing_pil_mllama", "MllamaImageProcessorPil",
                                          "MllamaImageProcessor")(size={"height": SIDE, "width": SIDE}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)
    return finish(MllamaForConditionalGeneration(config)), processor


def build_blip2() -> tuple[Any, Any]:
    """BLIP-2: ViT, Q-Former and an OPT language model; its generate() encodes the image, then
    calls the language model's generate()."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    template = chat_template("", user="", turn_end="", generation="", image_after="")
    tokenizer = byte_tokenizer(["<image>"], chat=template)
    queries = 4
    text = text_config(len(tokenizer))
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=SIDE, patch_size=PATCH),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=text["vocab_size"], hidden_size=64, num_hidden_layers=2,
                         ffn_dim=128, num_attention_heads=4, max_position_embeddings=text["max_position_embeddings"],
                         word_embed_proj_dim=64, bos_token_id=text["bos_token_id"], eos_token_id=text["eos_token_id"],
                         pad_token_id=text["pad_token_id"]),
        num_query_tokens=queries, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = pil_image_processor("blip.image_processing_pil_blip", "BlipImageProcessorPil",
                                          "BlipImageProcessor")(size={"height": SIDE, "width": SIDE})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=queries)
    processor.chat_template = template
    model = finish(Blip2ForConditionalGeneration(config))
    model.language_model.generation_config = model.generation_config
    return model, processor
