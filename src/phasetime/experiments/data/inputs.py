"""Model inputs for a measured call: a prompt (through the chat template) and images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ...core.errors import UsageError

from ..models import is_vision_language, tokenizer_of


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


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _eight_bit(img: Image.Image, source: str) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image scaled to 8 bits (PIL's own
    conversion clips it: a 16-bit PNG turns almost white, a float TIFF black)."""
    values = np.asarray(img, dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    low = float(finite.min()) if finite.size else 0.0
    if low < 0:
        raise UsageError(f"image {source}: mode {img.mode} with negative values ({low:g}): cannot tell its scale")
    if img.mode == "F" and top <= 1.0:
        scale = 255.0  # float images in [0, 1]
    elif img.mode.startswith("I;16") or top > 255:
        if top > 65535:
            raise UsageError(f"image {source}: mode {img.mode} with values up to {top:g}: cannot tell its scale")
        scale = 255.0 / 65535.0
    else:
        scale = 1.0  # an integer or float image already in 0..255
    scaled = np.clip(np.nan_to_num(values) * scale + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_rgb(img: Image.Image, source: str = "in memory") -> Image.Image:
    """An image as a model is fed it, the way Hugging Face's ``load_image`` does: EXIF
    orientation applied, then RGB; high-bit-depth modes are scaled to 8 bits first."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in _HIGH_DEPTH:
        img = _eight_bit(img, source)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file as RGB (:func:`to_rgb`); a one-line ``UsageError``
    when it cannot be read (missing, not an image, truncated, too large, of no known scale)."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            img.load()
            return to_rgb(img, str(p))
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
