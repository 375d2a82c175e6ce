"""What every built-in model shares: a byte-level tokenizer made in memory, a chat template,
a small Llama-shaped text config, and the finishing touches on a built model.

Timing does not depend on weight values, so a model built from a config with seeded random
weights times like the real thing of the same shape; nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
BOS_ID, EOS_ID, PAD_ID = 1, 2, 3
BUILTIN_POSITIONS = 4096  # max_position_embeddings of every built-in language model


def chat_template(image: str = "<image>", video: str = "<video>", *, user: str = "{{ m['role'].upper() }}: ",
                  turn_end: str = "\n", generation: str = "ASSISTANT:", image_after: str = "\n") -> str:
    """A Jinja chat template: each turn is ``user`` + its images, videos and text + ``turn_end``."""
    return (
        "{% for m in messages %}" + user
        + "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        + "{% if c['type'] == 'image' %}" + image + image_after
        + "{% elif c['type'] == 'video' %}" + video + image_after
        + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}" + turn_end + "{% endfor %}"
        + "{% if add_generation_prompt %}" + generation + "{% endif %}"
    )


TEXT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] if m['content'] is string "
    "else m['content'] | map(attribute='text') | join('') }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def byte_tokenizer(extra_special: list[str], vocab_size: int | None = None, chat: str | None = None,
                   named: dict[str, str] | None = None) -> Any:
    """A byte-level tokenizer: 4 control tokens, ``extra_special`` tokens, 256 bytes, then
    fillers up to ``vocab_size``. ``named`` makes some special tokens attributes of the
    tokenizer (``{"image_token": "<image>"}`` gives ``tokenizer.image_token(_id)``), as some
    processors expect."""
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
    kwargs: dict[str, Any] = {"extra_special_tokens": named} if named else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=extra_special,
        padding_side="left",  # decoder-only batches are left-padded
        **kwargs,
    )
    if chat is not None:
        tokenizer.chat_template = chat
    return tokenizer


def text_config(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int = 128, **extra: Any) -> dict[str, Any]:
    """A small Llama-shaped language model config (the keys most families share)."""
    return dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=BUILTIN_POSITIONS,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, **extra,
    )


def finish(model: Any) -> Any:
    """Greedy generation with the built-in special ids, in eval mode."""
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = BOS_ID, EOS_ID, PAD_ID
    gc.do_sample = False
    return model.eval()


def image_only(processor_class: type) -> type:
    """The processor class without its video processor (transformers' needs torchvision)."""

    class ImageOnlyProcessor(processor_class):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = processor_class.__name__
    return ImageOnlyProcessor


def pil_image_processor(module: str, pil_name: str, fallback: str) -> type:
    """The PIL image processor of a family (transformers >= 5.18 splits them from the
    torchvision ones), or the older single class."""
    import importlib

    try:
        return getattr(importlib.import_module(f"transformers.models.{module}"), pil_name)
    except (ImportError, AttributeError):
        import transformers

        return getattr(transformers, fallback)
