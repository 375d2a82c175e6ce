"""Model inputs for a measured call: a prompt (through the chat template) and images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, ImageDraw

from ..core.errors import UsageError

from .models import is_vision_language, tokenizer_of


def synthetic_image(size: int, seed: int = 0) -> Image.Image:
    """A deterministic ``size`` x ``size`` RGB test image: a gradient with a few shapes."""
    if size < 1:
        raise UsageError(f"image size must be >= 1, got {size}")
    img = Image.new("RGB", (size, size))
    px = img.load()
    assert px is not None
    for y in range(0, size, max(1, size // 64)):
        for x in range(0, size, max(1, size // 64)):
            px[x, y] = ((x * 255) // size, (y * 255) // size, (seed * 53) % 256)
    draw = ImageDraw.Draw(img)
    s = size
    draw.rectangle([s // 8, s // 8, s // 2, s // 2], fill=(220, 40, 40))
    draw.ellipse([s // 2, s // 2, 7 * s // 8, 7 * s // 8], fill=(40, 80, 220))
    return img


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB; a one-line ``UsageError`` when it cannot be read
    (missing, not an image, truncated, too large)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise UsageError(f"image not found: {p}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL raises many types
        raise UsageError(f"cannot read image {p}: {exc}") from None


def chat_prompt(processor: Any, text: str, n_images: int) -> str:
    """``text`` (after ``n_images`` image placeholders) through the processor's chat template."""
    template_owner = processor if getattr(processor, "chat_template", None) else tokenizer_of(processor)
    if getattr(template_owner, "chat_template", None):
        if is_vision_language(processor):
            content: Any = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        else:
            content = text
        messages = [{"role": "user", "content": content}]
        return template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # No template: a plain prompt, with the processor's image token in front.
    image_token = getattr(processor, "image_token", "<image>")
    return image_token * n_images + ("\n" if n_images else "") + text


def build_inputs(
    processor: Any,
    prompt: str,
    images: Sequence[Image.Image] = (),
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The processor's output for ``batch_size`` copies of (prompt, images), on ``device``."""
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    if images and not is_vision_language(processor):
        raise UsageError("this model takes no images (its processor has no image processor)")
    text = chat_prompt(processor, prompt, len(images))
    return encode(processor, [text] * batch_size, [list(images) for _ in range(batch_size)], device)


def encode(processor: Any, texts: list[str], images: list[list[Image.Image]], device: torch.device | str) -> dict[str, Any]:
    """One processor call for a batch (``images[i]`` go with ``texts[i]``), tensors moved to ``device``.

    A batch without any image goes through the tokenizer alone.
    """
    if any(images):
        encoded = processor(images=images, text=texts, return_tensors="pt", padding=True)
    else:
        encoded = tokenizer_of(processor)(texts, return_tensors="pt", padding=True)
    # Some processors return training labels (PaliGemma): generate() would compute a loss with them.
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in encoded.items() if k != "labels"}
