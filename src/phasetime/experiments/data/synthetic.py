"""The built-in synthetic VQA set: shapes, colours, counts and positions drawn with Pillow,
with exact answers and a multiple-choice variant, so accuracy runs work on a fresh machine."""

from __future__ import annotations

import random
import string

from PIL import Image, ImageDraw

from .datasets import Sample

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
QUESTION_KINDS = ("color", "count", "presence", "position", "shape")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def _scene(rng: random.Random, size: int) -> tuple[Image.Image, list[tuple[str, str, int]]]:
    """An image with 1-4 shapes on a grey background; returns (image, [(shape, colour, x centre)])."""
    img = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    cell = size // 4
    slots = rng.sample(range(16), rng.randint(1, 4))
    shapes = []
    for slot in slots:
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        x, y = (slot % 4) * cell, (slot // 4) * cell
        pad = cell // 6
        _draw_shape(draw, shape, (x + pad, y + pad, x + cell - pad, y + cell - pad), COLORS[color])
        shapes.append((shape, color, x + cell // 2))
    return img, shapes


def _question(rng: random.Random, kind: str, shapes: list[tuple[str, str, int]], size: int) -> tuple[str, str, list[str]]:
    """(question, answer, options) for one scene; options are what a multiple-choice variant offers."""
    shape, color, x = rng.choice(shapes)
    if kind == "color" and sum(s == shape for s, _, _ in shapes) == 1:
        return f"What color is the {shape}?", color, list(COLORS)
    if kind == "count":
        n = sum(s == shape for s, _, _ in shapes)
        return f"How many {shape}s are there?", str(n), ["1", "2", "3", "4"]
    if kind == "position" and sum(s == shape for s, _, _ in shapes) == 1:
        return f"Is the {shape} on the left or the right?", "left" if x < size // 2 else "right", ["left", "right"]
    if kind == "shape" and len(shapes) == 1:
        return "Which shape is in the image?", shape, list(SHAPES)
    probe = rng.choice(SHAPES)
    answer = "yes" if any(s == probe for s, _, _ in shapes) else "no"
    return f"Is there a {probe} in the image?", answer, ["yes", "no"]


def synthetic_vqa(n: int, *, seed: int = 0, image_size: int = 224, multiple_choice: bool = False) -> list[Sample]:
    """``n`` deterministic VQA samples with exact answers (see the module docstring).

    With ``multiple_choice`` every sample carries its options and the reference is the
    correct option's letter.
    """
    if n < 1:
        raise ValueError(f"a synthetic data set needs n >= 1, got {n}")
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        img, shapes = _scene(rng, image_size)
        kind = QUESTION_KINDS[i % len(QUESTION_KINDS)]
        question, answer, options = _question(rng, kind, shapes, image_size)
        choices: tuple[str, ...] = ()
        answers: tuple[str, ...] = (answer,)
        if multiple_choice:
            choices = tuple(options)
            answers = (string.ascii_uppercase[options.index(answer)],)
        samples.append(
            Sample(id=f"synth-{i:04d}", question=question, images=(img,), answers=answers, choices=choices, category=kind)
        )
    return samples
