"""Model shapes the built-ins do not have, each a tiny random Llama with a media path bolted on.

Each is one way a real family moves its media to the language model (docs/metrics.md, "Media"):

* :func:`captioner`: a decoder over image and text tokens concatenated (GIT, BLIP's decoder);
* :func:`gated_cross_attention`: the language model's layers attend to the image through
  gated cross-attention at every step (Flamingo, IDEFICS), no resampler;
* :func:`merging_embedding`: one embedding module takes ids and pixels, calls the image
  encoder and merges its features into the text embeddings (Phi-4-multimodal);
* :func:`qformer`: a Q-Former reads the image and the instruction (InstructBLIP);
* :func:`resampler_every_step`: a resampler inside the language model re-run over the image
  features at every decode step;
* :func:`audio`: an audio encoder over ``input_features`` (Qwen2-Audio);
* :func:`patches`: a one-layer encoder over ``image_patches`` (Fuyu);
* :func:`reused_id`: a vision output freed and a tensor allocated at its address, fed to a
  module that has nothing to do with the image (0.3 took it for a connector).

Every model's own encoder is ``model.encoder`` and its language model ``model.model`` (the
Llama decoder); the prompt holds :data:`PLACES` image (or audio) placeholder tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaForCausalLM

from conftest import load_tiny, tiny_inputs

H = 64  # tiny-llama's hidden size
PLACES = 4  # placeholder tokens of the image (or the audio) in the prompt
IMAGE, AUDIO = 7, 8  # their token ids (bytes no prompt here uses)


class Tower(torch.nn.Module):
    """Pixels [B, 3, 32, 32] -> features [B, 4, H]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, H, 16, stride=16)
        self.norm = torch.nn.LayerNorm(H)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(pixels).flatten(2).transpose(1, 2))


class Ear(torch.nn.Module):
    """Log-mel features [B, 16, 32] -> features [B, 4, H]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(16, H, 8, stride=8)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features).transpose(1, 2)


def merge(embeds: torch.Tensor, ids: torch.Tensor, token: int, features: torch.Tensor) -> torch.Tensor:
    """The features written into the placeholder positions of the text embeddings."""
    return embeds.masked_scatter((ids == token)[..., None], features.to(embeds.dtype))


def _prefill(input_ids: Any) -> bool:
    return input_ids is not None and input_ids.shape[1] > 1


def build(cls: type, **modules: torch.nn.Module) -> Any:
    """An instance of ``cls`` (a LlamaForCausalLM) with tiny-llama's weights and ``modules`` added."""
    base, _ = load_tiny("tiny-llama")
    torch.manual_seed(0)
    model = cls(base.config)
    model.load_state_dict(base.state_dict(), strict=False)
    for name, module in modules.items():
        setattr(model, name, module)
    model.generation_config = base.generation_config
    return model.eval()


def inputs(media: dict[str, torch.Tensor], token: int = IMAGE) -> dict[str, Any]:
    text = tiny_inputs("tiny-llama", prompt="Say what you see.")
    ids = torch.cat([torch.full((1, PLACES), token), text["input_ids"]], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **media}


def pixels() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.rand(1, 3, 32, 32)}


# -- the shapes ------------------------------------------------------------------------------------
class Captioner(LlamaForCausalLM):
    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if pixel_values is not None and _prefill(input_ids):
            image = self.encoder(pixel_values)  # [B, P, H]
            text = self.model.embed_tokens(input_ids[:, PLACES:])
            inputs_embeds, input_ids = torch.cat([image, text], dim=1), None  # the decoder reads both
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def captioner() -> Any:
    return build(Captioner, encoder=Tower())


class GatedCrossAttention(torch.nn.Module):
    """Text attends to the image; a gate (tanh, 0.5 here) mixes it in."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(H, H) for _ in range(3))
        self.gate = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, hidden: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.q(hidden) @ self.k(image).transpose(1, 2) / H ** 0.5, dim=-1)
        return hidden + torch.tanh(self.gate) * (weights @ self.v(image))


class WithCrossAttention(torch.nn.Module):
    """A decoder layer followed by gated cross-attention to the image the model holds."""

    def __init__(self, layer: torch.nn.Module, owner: Any) -> None:
        super().__init__()
        self.layer = layer
        self.cross = GatedCrossAttention()
        self._owner = [owner]  # not a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.layer(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = self.cross(hidden, self._owner[0].image)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden


class CrossAttending(LlamaForCausalLM):
    def forward(self, input_ids=None, pixel_values=None, **kwargs):  # type: ignore[override]
        if pixel_values is not None and _prefill(input_ids):
            self.image = self.encoder(pixel_values)  # kept for every step, as Flamingo keeps it
        return super().forward(input_ids=input_ids, **kwargs)


def gated_cross_attention() -> Any:
    model = build(CrossAttending, encoder=Tower())
    model.model.layers = torch.nn.ModuleList(WithCrossAttention(layer, model) for layer in model.model.layers)
    return model


class MergingEmbedding(torch.nn.Module):
    def __init__(self, tokens: torch.nn.Module) -> None:
        super().__init__()
        self.tokens = tokens
        self.encoder = Tower()

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.tokens(input_ids)
        if pixel_values is not None:
            embeds = merge(embeds, input_ids, IMAGE, self.encoder(pixel_values))
        return embeds


class Merging(LlamaForCausalLM):
    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        inputs_embeds = self.embedder(input_ids, pixel_values if _prefill(input_ids) else None)  # every step
        return super().forward(inputs_embeds=inputs_embeds, **kwargs)


def merging_embedding() -> Any:
    model = build(Merging)
    model.embedder = MergingEmbedding(model.model.embed_tokens)
    model.encoder = model.embedder.encoder  # the truth's handle on it (the same module)
    return model


class QFormer(torch.nn.Module):
    """Learned queries read the image features and the instruction's own embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(1, PLACES, H) * 0.1)
        self.words = torch.nn.Embedding(260, H)
        self.keys = torch.nn.Linear(H, H)

    def forward(self, image: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        context = torch.cat([image, self.words(instruction)], dim=1)
        weights = torch.softmax(self.queries @ self.keys(context).transpose(1, 2) / H ** 0.5, dim=-1)
        return weights @ context


class InstructedVLM(LlamaForCausalLM):
    def forward(self, input_ids=None, pixel_values=None, qformer_input_ids=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if pixel_values is not None and _prefill(input_ids):
            features = self.projection(self.qformer(self.encoder(pixel_values), qformer_input_ids))
            inputs_embeds, input_ids = merge(self.model.embed_tokens(input_ids), input_ids, IMAGE, features), None
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def qformer() -> Any:
    return build(InstructedVLM, encoder=Tower(), qformer=QFormer(), projection=torch.nn.Linear(H, H))


class Resampler(torch.nn.Module):
    """Learned latents over the image features: [B, P, H] -> [B, 1, H]."""

    def __init__(self) -> None:
        super().__init__()
        self.latents = torch.nn.Parameter(torch.randn(1, 1, H) * 0.1)
        self.proj = torch.nn.Linear(H, H)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.latents @ self.proj(image).transpose(1, 2), dim=-1)
        return weights @ image


class Resampling(LlamaForCausalLM):
    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if pixel_values is not None and _prefill(input_ids):
            self.image = self.encoder(pixel_values)
        summary = self.model.resampler(self.image)  # inside the language model, at every step
        inputs_embeds = self.model.embed_tokens(input_ids) + summary
        return super().forward(inputs_embeds=inputs_embeds, **kwargs)


def resampler_every_step() -> Any:
    model = build(Resampling, encoder=Tower())
    model.model.resampler = Resampler()
    return model


class Listening(LlamaForCausalLM):
    def forward(self, input_ids=None, input_features=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if input_features is not None and _prefill(input_ids):
            features = self.encoder(input_features)
            inputs_embeds, input_ids = merge(self.model.embed_tokens(input_ids), input_ids, AUDIO, features), None
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def audio() -> Any:
    return build(Listening, encoder=Ear())


def sound() -> dict[str, torch.Tensor]:
    return {"input_features": torch.randn(1, 16, 32)}


class Patched(LlamaForCausalLM):
    def forward(self, input_ids=None, image_patches=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if image_patches is not None and _prefill(input_ids):
            features = self.encoder(image_patches)  # [B, P, 768] -> [B, P, H]
            inputs_embeds, input_ids = merge(self.model.embed_tokens(input_ids), input_ids, IMAGE, features), None
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def patches() -> Any:
    return build(Patched, encoder=torch.nn.Linear(3 * 16 * 16, H))


def image_patches() -> dict[str, torch.Tensor]:
    return {"image_patches": torch.rand(1, PLACES, 3 * 16 * 16)}


class ReusedId(LlamaForCausalLM):
    """The tower's output is freed; a tensor allocated at its address (found by allocating until
    one lands there) goes to ``bystander``, a module that never sees the image."""

    reused = False

    def forward(self, input_ids=None, pixel_values=None, inputs_embeds=None, **kwargs):  # type: ignore[override]
        if pixel_values is not None and _prefill(input_ids):
            out = self.encoder(pixel_values)
            features, address = out * 1.0, id(out)
            del out  # freed: its address is free for the next tensor
            kept, fresh = [], None
            for _ in range(10_000):
                candidate = torch.zeros(1, PLACES, H)
                if id(candidate) == address:
                    fresh = candidate
                    break
                kept.append(candidate)
            type(self).reused = fresh is not None
            noise = self.bystander(fresh if fresh is not None else kept[0])
            embeds = merge(self.model.embed_tokens(input_ids), input_ids, IMAGE, features)
            inputs_embeds, input_ids = embeds + 0.0 * noise.mean(), None
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)


def reused_id() -> Any:
    return build(ReusedId, encoder=Tower(), bystander=torch.nn.Linear(H, H))


def instruction() -> dict[str, torch.Tensor]:
    return {**pixels(), "qformer_input_ids": torch.tensor([[72, 101, 121, 33]])}


# name -> (the model, its media inputs, their medium)
SHAPES = {
    "captioner": (captioner, pixels, "vision"),
    "gated_cross_attention": (gated_cross_attention, pixels, "vision"),
    "merging_embedding": (merging_embedding, pixels, "vision"),
    "qformer": (qformer, instruction, "vision"),
    "resampler_every_step": (resampler_every_step, pixels, "vision"),
    "audio": (audio, sound, "audio"),
    "patches": (patches, image_patches, "vision"),
    "reused_id": (reused_id, pixels, "vision"),
}


def shape(name: str) -> tuple[Any, dict[str, Any], str]:
    """(model, the call's inputs, the medium) of one shape."""
    make, media, medium = SHAPES[name]
    return make(), inputs(media(), AUDIO if medium == "audio" else IMAGE), medium
