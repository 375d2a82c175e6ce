"""Built-in models: real transformers architectures with random weights, built offline.

Timing does not depend on weight values, so a model built from a config with seeded
random weights times like the real thing of the same shape. Each builder returns
``(model, processor)``; the tokenizer is a byte-level BPE without merges (every UTF-8
byte is a token), made in memory, so nothing is downloaded.
"""

from __future__ import annotations

from typing import Any, Callable

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
BUILTIN_POSITIONS = 4096  # max_position_embeddings of every built-in language model
BOS_ID, EOS_ID, PAD_ID = 1, 2, 3

_LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TEXT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] if m['content'] is string "
    "else m['content'] | map(attribute='text') | join('') }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def byte_tokenizer(extra_special: list[str], vocab_size: int | None = None, chat_template: str | None = None) -> Any:
    """A byte-level tokenizer: 4 control tokens, ``extra_special`` tokens, 256 bytes, then fillers up to ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in [UNK, BOS, EOS, PAD, *extra_special, *sorted(pre_tokenizers.ByteLevel.alphabet())]:
        vocab[token] = len(vocab)
    while vocab_size is not None and len(vocab) < vocab_size:
        vocab[f"<extra_{len(vocab)}>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=extra_special,
        padding_side="left",  # decoder-only batches are left-padded
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def _llama_text_config(vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=BUILTIN_POSITIONS,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


def _finish(model: Any) -> Any:
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    gc.do_sample = False
    return model.eval()


def build_llama(*, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer([], chat_template=_TEXT_TEMPLATE)
    config = LlamaConfig(**_llama_text_config(len(tokenizer), hidden, layers, heads, kv_heads, intermediate))
    return _finish(LlamaForCausalLM(config)), tokenizer


def _llava(vision: dict[str, Any], text: dict[str, Any], vocab_size: int | None) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = byte_tokenizer(["<image>"], vocab_size=vocab_size, chat_template=_LLAVA_TEMPLATE)
    image_size, patch = vision["image_size"], vision["patch_size"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**_llama_text_config(len(tokenizer), **text)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    try:  # transformers >= 5.18 splits image processors into torchvision and PIL backends
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor
    image_processor = ImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
        vision_feature_select_strategy="default",
        chat_template=_LLAVA_TEMPLATE,
    )
    return _finish(LlavaForConditionalGeneration(config)), processor


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


def _image_only(processor_class: type) -> type:
    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        """The processor without a video processor (transformers' needs torchvision)."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = processor_class.__name__
    return ImageOnlyProcessor


def build_qwen2_vl() -> tuple[Any, Any]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = byte_tokenizer(specials, chat_template=_QWEN_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    text = _llama_text_config(len(tokenizer), hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128)
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as ImageProcessor
    # Dynamic resolution: 56x56 up to 448x448 pixels, so image size changes the visual tokens.
    image_processor = ImageProcessor(min_pixels=56 * 56, max_pixels=448 * 448, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = _image_only(Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=_QWEN_TEMPLATE
    )
    return _finish(Qwen2VLForConditionalGeneration(config)), processor


BUILDERS: dict[str, tuple[Callable[[], tuple[Any, Any]], str]] = {
    "tiny-llama": (build_llama, "Llama text model, 2 layers x 64 wide (~0.1M parameters)"),
    "tiny-llava": (build_llava, "LLaVA: 2-layer CLIP (56 px, 14 px patches) + 2-layer Llama"),
    "tiny-qwen2-vl": (build_qwen2_vl, "Qwen2-VL: 2-block ViT with dynamic resolution + 2-layer Qwen2"),
    "llava-1.4b-random": (build_llava_1b, "LLaVA: CLIP ViT-L/14-336 + 22-layer 2048-wide Llama, ~1.4B (GPU benchmark)"),
}
