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


def odd_vlm(flat: bool = False, scaled: bool = False) -> Any:
    """A VLM whose image encoder has a name no list knows (like Phi-4-multimodal's); ``scaled``:
    it is fed a rescaled copy of the pixels (same shape, another tensor)."""
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")

    class OddVLM(LlamaForCausalLM):
        def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
            if pixel_values is not None and input_ids is not None and input_ids.shape[1] > 1:
                fed = pixel_values.flatten(1) if flat else (pixel_values * 2.0 - 1.0 if scaled else pixel_values)
                features = self.picture_reader(fed)  # [B, H]
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


def connected_vlm(tower_name: str, connector_name: str) -> Any:
    """A VLM whose forward feeds the pixels to a tower (``tower_name``), its output to a
    connector (``connector_name``), a separate module, and that into the language model."""
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")
    hidden = base.config.hidden_size

    class ConnectedVLM(LlamaForCausalLM):
        def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
            if pixel_values is not None and input_ids is not None and input_ids.shape[1] > 1:
                features = getattr(self, connector_name)(getattr(self, tower_name)(pixel_values))
                inputs_embeds = self.model.embed_tokens(input_ids) + features[:, None, :]
                input_ids = None
            return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)

    model = ConnectedVLM(base.config)
    model.load_state_dict(base.state_dict())
    setattr(model, tower_name, PictureReader(hidden))
    setattr(model, connector_name, torch.nn.Linear(hidden, hidden))
    model.generation_config = base.generation_config
    return model.eval()


def measure_connected(model: Any, tower: torch.nn.Module, connector: torch.nn.Module) -> Any:
    """One call on the virtual clock: the tower V ms, the connector 4 ms, prefill P, decode D."""
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock, vision_tower=tower, language_model=model.model):
        handle = connector.register_forward_pre_hook(lambda m, a: clock.advance(4.0))
        try:
            return phasetime.measure(model, odd_inputs(), clock=clock, max_new_tokens=3, min_new_tokens=3)
        finally:
            handle.remove()


def test_a_connector_between_tower_and_language_model_counts_as_vision() -> None:
    """A tower found by its name followed by a perceiver-style resampler, a separate module the
    model's forward calls on the tower's output: both are vision (0.2 billed the resampler
    to prefill)."""
    model = connected_vlm("vision_model", "resampler")
    m = measure_connected(model, model.vision_model, model.resampler)
    assert m.vision_ms == V + 4.0 and m.vision_calls == 2 and m.prefill_ms == P and m.itl_ms == (D, D)


@pytest.mark.parametrize("tower_name", ["vision_model", "eye"])  # a usual name, or one no list knows
def test_a_connector_nobody_named_is_found_through_what_the_tower_returns(tower_name: str) -> None:
    """The tower's output goes through a module with a name no list knows, then into the
    language model: following the data finds both in the discovery call, and times them as
    vision from then on, in later probes too (the map is kept per model and kind of input)."""
    from phasetime.hf import media

    model = connected_vlm(tower_name, "squeezer")
    for _ in range(2):
        m = measure_connected(model, getattr(model, tower_name), model.squeezer)
        assert m.vision_ms == V + 4.0 and m.vision_calls == 2 and m.prefill_ms == P and m.itl_ms == (D, D)
    found = media.known(model, frozenset({"pixel_values"}))
    assert found is not None and found.source == "dataflow"
    assert [(f.path, f.role) for f in found.found] == sorted([(tower_name, "encoder"), ("squeezer", "connector")])
    assert found.language == ("lm_head", "model")  # and no layer of the language model is vision


def test_a_discovery_is_kept_until_its_modules_are_swapped() -> None:
    """The media map of a model and kind of input is made once (a fresh probe per measure() call
    does not follow the data again) and made anew once a module it found is no longer the
    model's."""
    from phasetime.hf import media

    model = odd_vlm()
    phasetime.measure(model, odd_inputs(), max_new_tokens=2, min_new_tokens=2)
    first = media.known(model, frozenset({"pixel_values"}))
    assert first is not None and [f.path for f in first.found] == ["picture_reader"]
    phasetime.measure(model, odd_inputs(), max_new_tokens=2, min_new_tokens=2)
    assert media.known(model, frozenset({"pixel_values"})) is first
    model.picture_reader = PictureReader(model.config.hidden_size)  # swapped: the old map no longer holds
    assert media.known(model, frozenset({"pixel_values"})) is None
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock, vision_tower=model.picture_reader, language_model=model.model):
        m = phasetime.measure(model, odd_inputs(), clock=clock, max_new_tokens=3, min_new_tokens=3)
    assert m.vision_ms == V and m.prefill_ms == P and media.known(model, frozenset({"pixel_values"})) is not first


@pytest.mark.parametrize("flat,scaled", [(True, False), (False, True)])
def test_an_encoder_fed_a_reshaped_or_rescaled_copy_is_found(flat: bool, scaled: bool) -> None:
    """0.3 looked for the module receiving the pixel tensor itself (or one of its shape): a
    flattened copy was refused and a rescaled one a guess. The data leads to it either way."""
    model = odd_vlm(flat=flat, scaled=scaled)
    clock = VirtualClock()
    with inject_delays(model, V, P, D, clock=clock, vision_tower=model.picture_reader, language_model=model.model):
        m = phasetime.measure(model, odd_inputs(), clock=clock, max_new_tokens=3, min_new_tokens=3)
    assert m.vision_ms == V and m.prefill_ms == P and m.itl_ms == (D, D) and m.vision_calls == 1


class Functional(torch.nn.Module):
    """Holds a weight the model's own forward multiplies the pixels with: no module reads them."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3 * 32 * 32, hidden) * 0.01)


def functional_vlm() -> Any:
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")

    class FunctionalVLM(LlamaForCausalLM):
        def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
            if pixel_values is not None and input_ids is not None and input_ids.shape[1] > 1:
                features = pixel_values.flatten(1) @ self.plain.weight  # [B, H], in no module
                inputs_embeds = self.model.embed_tokens(input_ids) + features[:, None, :]
                input_ids = None
            return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)

    model = FunctionalVLM(base.config)
    model.load_state_dict(base.state_dict(), strict=False)
    model.plain = Functional(base.config.hidden_size)
    model.generation_config = base.generation_config
    return model.eval()


def test_an_encoder_that_cannot_be_found_is_a_loud_error_with_the_fix() -> None:
    """Pixels turned into features by code in no module: no module reads them, the names find
    nothing either, so the call is refused with the way out, and timed once the user says."""
    model = functional_vlm()
    with pytest.raises(UnsupportedGeneration, match=r"vision inputs \(pixel_values\).*vision=\[") as info:
        phasetime.measure(model, odd_inputs(), max_new_tokens=3, min_new_tokens=3)
    assert "would land in prefill" in str(info.value) and "no module outside the language model" in str(info.value)
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
    """An own generate() with its own loop is refused before it runs; one that hands over to
    the standard generate() on itself is timed like the standard one."""
    from transformers import LlamaForCausalLM

    base, _ = load_tiny("tiny-llama")
    ran = []

    class Homemade(LlamaForCausalLM):
        def generate(self, input_ids=None, **kwargs):  # type: ignore[override]
            ran.append(1)
            for _ in range(2):
                input_ids = torch.cat([input_ids, self(input_ids=input_ids).logits[:, -1:].argmax(-1)], dim=1)
            return input_ids

    class HandsOver(LlamaForCausalLM):
        def generate(self, *args, **kwargs):  # type: ignore[override]
            ran.append(2)
            return super().generate(*args, **kwargs)

    model = Homemade(base.config).eval()
    with pytest.raises(UnsupportedGeneration, match="Homemade brings its own generate"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=2)
    assert ran == []
    polite = HandsOver(base.config).eval()
    polite.generation_config = base.generation_config
    clock = VirtualClock()
    with inject_delays(polite, 0.0, P, D, clock=clock, language_model=polite.model):
        m = phasetime.measure(polite, tiny_inputs("tiny-llama"), clock=clock, max_new_tokens=3, min_new_tokens=3)
    assert ran == [2] and m.prefill_ms == P and m.itl_ms == (D, D)


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
    assert "media timed" in result.stdout and "decode: 3 forwards for 4 tokens (N - 1)" in result.stdout
    if name not in TEXT_BUILTINS:
        assert "vision ran: no vision ran" not in result.stdout and "warning: the model takes images" not in result.stdout
        assert "(encoder, by dataflow): reads pixel_values" in result.stdout  # found by the data, not a name
        assert "language model (what runs at every decode step): " in result.stdout


def test_inspect_a_local_directory_and_a_model_it_cannot_time(tmp_path) -> None:
    from conftest import run_cli

    model, processor = load_tiny("tiny-llava")
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    result = run_cli("inspect", tmp_path / "m", "--device", "cpu")
    assert result.exit_code == 0 and "vision: model.vision_tower (encoder, by dataflow): reads pixel_values" in result.stdout, result


def tiny_janus() -> Any:
    """A random-weight Janus (SigLIP-style tower, aligner, VQ model, 2-layer Llama): its own
    generate() hands over to the standard one on the same model in text mode."""
    from transformers import JanusConfig, JanusForConditionalGeneration, LlamaConfig
    from transformers.models.janus.configuration_janus import JanusVisionConfig, JanusVQVAEConfig

    vision = JanusVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=16, projection_dim=64)
    vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=32, latent_channels=32, base_channels=32, channel_multiplier=[1, 1],
                          num_res_blocks=1, attn_resolutions=[], image_token_embed_dim=32, num_patches=4, projection_dim=32)
    text = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2)
    torch.manual_seed(0)
    config = JanusConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), vq_config=vq.to_dict(),
                         image_token_id=299)
    return JanusForConditionalGeneration(config).eval()


def test_a_model_whose_generate_hands_over_to_its_own_standard_one_is_timed(virtual_clock: VirtualClock) -> None:
    """Janus in text mode: its generate() calls super().generate(): timed exactly (0.2 refused
    it), with the tokens of the same call without the probe; its image mode is refused by name."""
    model = tiny_janus()
    ids = torch.tensor([[1, 5, 6] + [299] * 4 + [7, 8]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.rand(1, 3, 32, 32)}
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    with inject_delays(model, 11.0, 7.0, 3.0, clock=virtual_clock, vision_tower=model.model.vision_model,
                       language_model=model.model.language_model):
        m = phasetime.measure(model, inputs, **kwargs)
    assert m.output_tokens == 5 and m.vision_ms == 11.0 and m.prefill_ms == 7.0
    assert m.itl_ms == (3.0,) * 4 and m.ttft_ms == 18.0 and m.other_ms == 0.0
    assert torch.equal(m.output_ids, model.generate(**inputs, **kwargs))
    with pytest.raises(UnsupportedGeneration, match="generation_mode='image'"):
        phasetime.measure(model, inputs, generation_mode="image", max_new_tokens=2)
    assert "generate" not in vars(model)
