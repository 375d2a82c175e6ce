"""The work each phase does: FLOPs counted in a replay, bytes from the model and its cache.

FLOPs: :func:`phasetime.hf.replay.count_flops` runs the same ``generate()`` call once more, outside any timed
call, under ``torch.utils.flop_counter.FlopCounterMode``, with a probe whose
:class:`FlopSensor` reads the counter's total at every phase boundary; the FLOPs between two
boundaries belong to the phase of that interval (vision, prefill, decode), exactly as time
does. The counter sees matrix multiplications (2 x m x n x k each), convolutions and
attention: ``scaled_dot_product_attention`` with queries [B, H, T, d] over keys and values
of S positions counts 2 x B x H x T x S x d twice (scores and weighted values), over the
full score matrix (causal masking is not subtracted), on CUDA and on CPU alike. Elementwise
work, norms and softmax are not counted.

Bytes (the minimum each phase must move, docs/metrics.md "Resources"):

* vision: the vision tower's and projector's weights, read once;
* prefill: the language model's weights (without the input embedding table, of which only
  the prompt's rows are read, unless it is tied to the output layer) plus the KV cache it
  writes;
* decode, per step k of S: the same weights, plus the KV cache read (the prefill's, plus
  (k - 1) steps' worth, for a growing cache; the whole buffer for a static one), plus one
  step's worth written. For a mixture of experts only the active experts' weights count
  (``num_experts_per_tok`` / ``num_experts``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.boundaries import Boundary
from .base import PHASES, SensorColumn

if TYPE_CHECKING:
    import torch

COST_COLUMNS = (
    *(SensorColumn(f"{p}_flops", "FLOP", f"floating-point operations of {p} (counted in a replay)") for p in PHASES),
    *(SensorColumn(f"{p}_bytes", "bytes", f"bytes {p} must move at least (weights, KV cache; docs/metrics.md)")
      for p in PHASES),
    SensorColumn("roof_flops_per_s", "FLOP/s", "the device's peak dense FLOP/s for the model's dtype (phasetime roof)"),
    SensorColumn("roof_bytes_per_s", "bytes/s", "the device's peak memory bandwidth (phasetime roof)"),
)


class FlopSensor:
    """Reads a running FlopCounterMode's total at every boundary (only ever in a replay)."""

    name = "flops"
    columns = COST_COLUMNS[:3]

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.samples: list[tuple[str, int]] = []  # (phase after the boundary, FLOPs so far)

    def start(self, prompt_tokens: int) -> None:
        self.samples = []

    def sample(self, boundary: Boundary, output: Any = None) -> None:
        self.samples.append((boundary.after, self.counter.get_total_flops()))

    def finish(self, prompt_tokens: int) -> dict[str, Any]:
        flops = {p: 0 for p in PHASES}
        # the FLOPs between two boundaries belong to the phase the first one opened
        for (phase, before), (_, after) in zip(self.samples, self.samples[1:]):
            if phase in flops:
                flops[phase] += after - before
        return {f"{p}_flops": flops[p] for p in PHASES}


def active_fraction(model: "torch.nn.Module") -> float:
    """The share of expert weights a token uses in a mixture of experts (1 without experts)."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    k = getattr(text, "num_experts_per_tok", None)
    e = getattr(text, "num_local_experts", None) or getattr(text, "num_experts", None)
    return k / e if isinstance(k, int) and isinstance(e, int) and e > 0 else 1.0


def language_read_bytes(model: "torch.nn.Module", weights: dict[str, int]) -> int:
    """Weight bytes one language-model forward reads: all but an untied input embedding table,
    with only the active experts of a mixture of experts."""
    import torch

    total = weights["language"]
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(embed, torch.nn.Module) and not (isinstance(out, torch.nn.Module) and out.weight is embed.weight):
        total -= sum(p.numel() * p.element_size() for p in embed.parameters())
    fraction = active_fraction(model)
    if fraction < 1.0:
        experts = sum(p.numel() * p.element_size() for n, m in model.named_modules() if n.endswith("experts")
                      for p in m.parameters(recurse=True))
        total -= int(experts * (1 - fraction))
    return total


def bytes_moved(language_bytes: int, weights: dict[str, int], kv_prefill: int | None, kv_end: int | None,
                decode_steps: int, vision_ran: bool) -> dict[str, int]:
    """The minimum bytes each phase moves; see the module docstring for the formula."""
    kv0, kv1 = kv_prefill or 0, kv_end or 0
    per_step = (kv1 - kv0) / decode_steps if decode_steps and kv1 > kv0 else 0.0
    reads = decode_steps * kv0 + per_step * decode_steps * (decode_steps - 1) / 2
    return {
        "vision_bytes": (weights["vision"] + weights["projector"]) if vision_ran else 0,
        "prefill_bytes": language_bytes + kv0,
        "decode_bytes": int(decode_steps * language_bytes + reads + per_step * decode_steps),
    }
