"""Built-in models, loading errors, inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phasetime.experiments import models
from phasetime.experiments.data.inputs import build_inputs, load_image, synthetic_image


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llava", "tiny-qwen2-vl"])
def test_builtins_are_deterministic_and_generate(name: str) -> None:
    a, processor = models.load(name, device="cpu", seed=3)
    b, _ = models.load(name, device="cpu", seed=3)
    c, _ = models.load(name, device="cpu", seed=4)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    images = [synthetic_image(80)] if models.is_vision_language(processor) else []
    inputs = build_inputs(processor, "What is shown?", images, batch_size=2)
    out = a.generate(**inputs, max_new_tokens=3, min_new_tokens=3)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert isinstance(models.tokenizer_of(processor).decode(out[0]), str)


def test_qwen2_vl_visual_tokens_follow_image_size() -> None:
    _, processor = models.load("tiny-qwen2-vl", device="cpu")
    small = build_inputs(processor, "x", [synthetic_image(56)])["input_ids"].shape[1]
    large = build_inputs(processor, "x", [synthetic_image(224)])["input_ids"].shape[1]
    assert large - small == (224 // 28) ** 2 - (56 // 28) ** 2


def test_load_errors() -> None:
    with pytest.raises(models.ModelLoadError, match="unknown model"):
        models.load("tiny-gpt", device="cpu")
    with pytest.raises(models.ModelLoadError, match="unknown dtype"):
        models.load("tiny-llama", device="cpu", dtype="int3")
    with pytest.raises(models.ModelLoadError, match="not in the local cache"):
        models.load("nobody/nothing", device="cpu")  # offline: no hub
    with pytest.raises(models.ModelLoadError, match="unknown model"):
        models.check_name("a/b/c")


def test_text_model_refuses_images() -> None:
    _, tokenizer = models.load("tiny-llama", device="cpu")
    with pytest.raises(ValueError, match="takes no images"):
        build_inputs(tokenizer, "x", [synthetic_image(8)])


def test_images(tmp_path: Path) -> None:
    a, b = synthetic_image(32), synthetic_image(32)
    assert a.tobytes() == b.tobytes() and a.size == (32, 32)
    a.save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").tobytes() == a.tobytes()
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "b.png")


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llava"])
def test_a_local_directory_loads_like_a_hub_model(tmp_path: Path, name: str) -> None:
    import phasetime

    model, processor = models.load(name, device="cpu")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = models.load(str(tmp_path), device="cpu", dtype="float32")
    assert type(loaded) is type(model)
    assert torch.equal(next(loaded.parameters()), next(model.parameters()))
    images = [synthetic_image(64)] if models.is_vision_language(loaded_processor) else []
    m = phasetime.measure(loaded, build_inputs(loaded_processor, "Hi", images), max_new_tokens=3, min_new_tokens=3)
    assert m.output_tokens == 3 and (m.vision_ms > 0) == bool(images)
    with pytest.raises(models.ModelLoadError, match="no config.json"):
        models.check_name(str(tmp_path.parent))  # a directory, but not a model
