"""Every VLM a researcher brings: every built-in family, an encoder nobody named, models with
their own generate(), compiled models, video."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import phasetime
from conftest import VirtualClock, inject_delays, load_tiny, tiny_inputs
from phasetime import UnsupportedGeneration
from phasetime.experiments import models
from phasetime.experiments.data.inputs import synthetic_image
from phasetime.experiments.models.tiny import TEXT_BUILTINS, TEXT_ONLY_IMPOSSIBLE, video_inputs

FAMILIES = [name for name in models.BUILTIN if name.startswith("tiny-") and name not in TEXT_BUILTINS]
TOWERS = ("vision_tower", "visual", "vision_model")
V, P, D = 20.0, 30.0, 10.0


def tower(model: torch.nn.Module) -> torch.nn.Module:
    """The family's vision tower, found here by its usual names (independently of the probe)."""
    return next(module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in TOWERS)


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "language_model", None)
    return (inner if inner is not None and not hasattr(model, "get_decoder") else model).get_decoder()


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_is_attributed_exactly(name: str) -> None:
    model, _ = load_tiny(name)
    n = 4
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock, vision_tower=tower(model), language_model=decoder(model)):
        m = phasetime.measure(model, tiny_inputs(name), clock=clock, max_new_tokens=n, min_new_tokens=n)
    assert m.vision_ms == V and m.vision_calls >= 1, (m.vision_ms, m.vision_calls)
    assert m.prefill_ms == P and m.itl_ms == (D,) * (n - 1) and m.decode_steps == n - 1
    assert m.output_tokens == n and m.other_ms == 0.0


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_on_the_real_clock(name: str) -> None:
    model, _ = load_tiny(name)
    with_image = phasetime.measure(model, tiny_inputs(name), max_new_tokens=3, min_new_tokens=3)
    assert with_image.vision_ms > 0 and with_image.vision_calls >= 1
    assert with_image.decode_steps == 2 and with_image.output_tokens == 3
    assert with_image.other_ms >= 0  # the phases fit inside the call
    if name in TEXT_ONLY_IMPOSSIBLE:
        return
    text = phasetime.measure(model, tiny_inputs(name, images=0), max_new_tokens=3, min_new_tokens=3)
    assert text.vision_ms == 0.0 and text.vision_calls == 0 and text.decode_steps == 2


def test_a_video_is_timed_as_vision() -> None:
    model, processor = load_tiny("tiny-qwen2-vl")
    frames = [synthetic_image(56, seed=i) for i in range(4)]
    inputs = video_inputs(processor, frames, "What happens?")
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock):
        m = phasetime.measure(model, inputs, clock=clock, max_new_tokens=3, min_new_tokens=3)
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert m.vision_ms == V and m.prefill_ms == P and m.itl_ms == (D, D)


class PictureReader(torch.nn.Module):
    def __init__(self, hidden: int, flat: bool = False) -> None:
        super().__init__()
        self.flat = flat
        self.layer = torch.nn.Linear(3 * 32 * 32, hidden) if flat else torch.nn.Conv2d(3, hidden, 8, stride=8)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.layer(pixels)
        return out if self.flat else out.flatten(2).mean(-1)


def odd_vlm(flat: bool = False) -> Any:
    """A VLM whose image encoder has a name no list knows (like Phi-4-multimodal's)."""
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")

    class OddVLM(LlamaForCausalLM):
        def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
            if pixel_values is not None and input_ids is not None and input_ids.shape[1] > 1:
                features = self.picture_reader(pixel_values.flatten(1) if flat else pixel_values)  # [B, H]
                inputs_embeds = self.model.embed_tokens(input_ids) + features[:, None, :]
                input_ids = None
            return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)

    model = OddVLM(base.config)
    model.load_state_dict(base.state_dict())
    model.picture_reader = PictureReader(base.config.hidden_size, flat)
    model.generation_config = base.generation_config
    return model.eval()


def odd_inputs() -> dict[str, Any]:
    return {**tiny_inputs("tiny-llama"), "pixel_values": torch.rand(1, 3, 32, 32)}


def test_an_encoder_nobody_named_is_found_through_the_pixels() -> None:
    model = odd_vlm()
    for _ in range(2):  # found in the first call, by its hooks in the next
        clock = VirtualClock()
        with inject_delays(model, V, P, D, clock=clock, vision_tower=model.picture_reader, language_model=model.model):
            m = phasetime.measure(model, odd_inputs(), clock=clock, max_new_tokens=3, min_new_tokens=3)
        assert m.vision_ms == V and m.prefill_ms == P and m.vision_calls == 1


def test_an_encoder_that_cannot_be_found_is_a_loud_error_with_the_fix() -> None:
    model = odd_vlm(flat=True)  # the forward reshapes the pixels first: no module receives them as given
    with pytest.raises(UnsupportedGeneration, match=r"pixel inputs \(pixel_values\).*vision=\[") as info:
        phasetime.measure(model, odd_inputs(), max_new_tokens=3, min_new_tokens=3)
    assert "would land in prefill" in str(info.value)
    named = phasetime.measure(model, odd_inputs(), vision=["picture_reader"], max_new_tokens=3, min_new_tokens=3)
    assert named.vision_calls == 1 and named.vision_ms > 0
    none = phasetime.measure(model, odd_inputs(), vision=[], max_new_tokens=3, min_new_tokens=3)
    assert none.vision_calls == 0 and none.vision_ms == 0.0
    assert "generate" not in vars(model)


def test_a_model_with_its_own_generate_is_timed_through_its_language_model() -> None:
    model, _ = load_tiny("tiny-blip2")
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock, vision_tower=model.vision_model,
                       language_model=model.language_model.get_decoder()):
        m = phasetime.measure(model, tiny_inputs("tiny-blip2"), clock=clock, max_new_tokens=4, min_new_tokens=4)
    # vision: everything before the inner generate() (the ViT, here V, plus the Q-Former and projection)
    assert m.vision_ms == V and m.prefill_ms == P and m.itl_ms == (D,) * 3 and m.output_tokens == 4


def test_a_model_with_an_unknown_own_generate_is_refused_before_running() -> None:
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")
    ran = []

    class Homemade(LlamaForCausalLM):
        def generate(self, *args, **kwargs):  # type: ignore[override]
            ran.append(1)
            return super().generate(*args, **kwargs)

    model = Homemade(base.config).eval()
    with pytest.raises(UnsupportedGeneration, match="Homemade brings its own generate"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=2)
    assert ran == []


def test_torch_compile_of_the_whole_model() -> None:
    model, _ = load_tiny("tiny-llava")
    compiled = torch.compile(model, backend="eager")
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock):
        m = phasetime.measure(compiled, tiny_inputs("tiny-llava"), clock=clock, max_new_tokens=3, min_new_tokens=3)
    assert m.vision_ms == V and m.prefill_ms == P and m.itl_ms == (D, D)
    assert "generate" not in vars(model) and "generate" not in vars(compiled)


@pytest.mark.parametrize("name", [name for name in models.BUILTIN if name != "llava-1.4b-random"])
def test_inspect_every_builtin(name: str) -> None:
    from conftest import run_cli

    result = run_cli("inspect", name, "--device", "cpu")
    assert result.exit_code == 0, result
    assert "vision is timed as:" in result.stdout and "decode: 3 forwards for 4 tokens (N - 1)" in result.stdout
    if name not in TEXT_BUILTINS:
        assert "vision ran: no vision ran" not in result.stdout and "warning: the model takes images" not in result.stdout


def test_inspect_a_local_directory_and_a_model_it_cannot_time(tmp_path) -> None:
    from conftest import run_cli

    model, processor = load_tiny("tiny-llava")
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    result = run_cli("inspect", tmp_path / "m", "--device", "cpu")
    assert result.exit_code == 0 and "get_image_features()" in result.stdout, result
