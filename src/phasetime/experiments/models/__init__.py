"""Loading models: the built-in random-weight ones, a hub id, or a local directory.

``load(name_or_path)`` returns ``(model, processor)``. Built-in names (see
:data:`BUILTIN`) need no download; ``path/to/file.py:function`` calls a function of yours
that returns ``(model, processor)``; anything else goes through ``AutoProcessor`` and
``AutoModelForImageTextToText`` (falling back to ``AutoModelForCausalLM``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...core.errors import PhasetimeError, first_line
from .tiny import BUILDERS, BUILTIN_POSITIONS

__all__ = ["BUILTIN", "DEFAULT_MODEL", "DTYPES", "ModelLoadError", "Shape", "check_name", "is_vision_language", "load",
           "max_positions", "resolve_device", "resolve_dtype", "shape", "tokenizer_of"]

BUILTIN: dict[str, str] = {name: doc for name, (_, doc) in BUILDERS.items()}
DEFAULT_MODEL = "tiny-llava"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(PhasetimeError, ValueError):
    """The model name or path could not be resolved or loaded."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) is CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {str(device)!r} was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        raise ModelLoadError("device 'mps' is not supported: phasetime times CPU and CUDA models (on MPS the host "
                             "clock would time kernel launches, and generate() defers its stop check there)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"`` (or None) is bfloat16 on CUDA and float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def is_vision_language(processor: Any) -> bool:
    """Whether ``processor`` takes images (a VLM) or only text."""
    return getattr(processor, "image_processor", None) is not None


def tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


_FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


def _factory(name: str) -> tuple[Path, str] | None:
    """``(file, function)`` for a model named ``path/to/file.py:function`` (a model you build yourself)."""
    match = _FACTORY.match(name)
    return (Path(match["file"]).expanduser(), match["function"]) if match else None


def _load_factory(name: str) -> tuple[torch.nn.Module, Any]:
    import importlib.util

    located = _factory(name)
    assert located is not None
    file, function = located
    spec = importlib.util.spec_from_file_location(f"phasetime_model_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"model {name!r}: cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelLoadError(f"model {name!r}: importing {file} failed: {first_line(exc)}") from exc
    build = getattr(module, function, None)
    if not callable(build):
        raise ModelLoadError(f"model {name!r}: {file} has no function {function!r}")
    built = build()
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module)):
        raise ModelLoadError(f"model {name!r}: {function}() must return (model, processor)")
    return built


def _check_config(file: Path) -> None:
    """A model directory's config.json must be a JSON object naming its model type."""
    try:
        config = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:100]
        raise ModelLoadError(f"cannot read {file}: {reason}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"cannot read {file}: expected a JSON object, got {type(config).__name__}")


def check_name(name_or_path: str) -> None:
    """Fail early (before anything is written) for a name that cannot resolve to a model.

    Built-in names pass; a local directory needs a ``config.json``; a hub id (``org/name``)
    passes unless ``HF_HUB_OFFLINE`` is set and it is not in the local cache.
    """
    if name_or_path in BUILDERS:
        return
    factory = _factory(name_or_path)
    if factory is not None:
        if not factory[0].is_file():
            raise ModelLoadError(f"model {name_or_path!r}: no file {factory[0]}")
        return
    local = Path(name_or_path).expanduser()
    try:
        is_dir = local.is_dir()
        if is_dir and not (local / "config.json").exists():
            raise ModelLoadError(f"model directory {local} has no config.json")
        if is_dir:
            _check_config(local / "config.json")
    except OSError as exc:  # a name too long for a path, say
        raise ModelLoadError(f"unknown model {name_or_path[:80]!r}: {exc.strerror or exc}") from None
    if is_dir:
        return
    if "/" not in name_or_path or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(
            f"unknown model {name_or_path!r}: not a built-in ({', '.join(BUILTIN)}), "
            "a local directory or a hub id (org/name)"
        )
    from huggingface_hub import try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name_or_path, "config.json"), str)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        if not cached:
            raise ModelLoadError(f"model {name_or_path!r} is not in the local cache and HF_HUB_OFFLINE is set")
        return
    unreachable = hub_unreachable()
    if unreachable is not None:
        what = ("it is in the local cache: set HF_HUB_OFFLINE=1 to use that copy" if cached
                else "it is not in the local cache either")
        raise ModelLoadError(f"model {name_or_path!r}: the hub does not answer ({unreachable}); {what} "
                             "(HF_HUB_OFFLINE=1 skips the hub, which otherwise retries for minutes)")


HUB_TIMEOUT_S = 5.0


def hub_unreachable(timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """None when the hub (``HF_ENDPOINT``, default huggingface.co) accepts a connection within
    ``timeout_s``; else why not. Skipped (None) behind a proxy, which a direct probe cannot judge.
    Asked once per endpoint and process: a run checks each hub model when it is validated and
    again when it loads."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    return _probe_hub(os.environ.get("HF_ENDPOINT") or "https://huggingface.co", timeout_s)


@functools.lru_cache(maxsize=8)
def _probe_hub(endpoint: str, timeout_s: float) -> str | None:
    parts = urllib.parse.urlsplit(endpoint)
    if not parts.hostname:
        return f"HF_ENDPOINT {endpoint!r} names no host"
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    outcome: dict[str, str] = {}

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            outcome["ok"] = ""
        except OSError as exc:
            outcome["error"] = exc.strerror or str(exc) or type(exc).__name__

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    if "ok" in outcome:
        return None
    return f"{endpoint}: {outcome.get('error', f'no answer within {timeout_s:g} s')}"


def _config(name_or_path: str, trust_remote_code: bool) -> Any:
    """A hub or local model's config, or None where it cannot be read (the load says why, later)."""
    try:
        from transformers import AutoConfig

        local = Path(name_or_path).expanduser()
        return AutoConfig.from_pretrained(str(local) if local.is_dir() else name_or_path, trust_remote_code=trust_remote_code)
    except Exception:  # an unreadable config fails the load later, with its own message
        return None


def max_positions(name_or_path: str, trust_remote_code: bool = False) -> int | None:
    """The positions the model's language model supports, from its config alone (None: unknown)."""
    if name_or_path in BUILDERS:
        return BUILTIN_POSITIONS
    config = None if _factory(name_or_path) is not None else _config(name_or_path, trust_remote_code)
    for owner in (getattr(config, "text_config", None), config):
        value = getattr(owner, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class Shape:
    """What a run can know of a model before loading its weights (None: not known)."""

    vocabulary: int | None  # the text config's vocabulary (what transformers compares for a draft)
    takes_images: bool | None


@functools.lru_cache(maxsize=64)
def shape(name_or_path: str, trust_remote_code: bool = False) -> Shape:
    """A model's :class:`Shape`: a built-in is built on the meta device (no memory, no time), a hub
    or local model read from its config; a model you build yourself is not known."""
    if name_or_path in BUILDERS:
        with torch.device("meta"):
            model, processor = BUILDERS[name_or_path][0]()
        text = model.config.get_text_config()
        return Shape(getattr(text, "vocab_size", None), is_vision_language(processor))
    config = None if _factory(name_or_path) is not None else _config(name_or_path, trust_remote_code)
    if config is None:
        return Shape(None, None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return Shape(getattr(text, "vocab_size", None), any(hasattr(config, k) for k in ("vision_config", "visual")))


def load(
    name_or_path: str,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    *,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    seed: int = 0,
) -> tuple[torch.nn.Module, Any]:
    """Load ``(model, processor)`` in eval mode on ``device`` with ``dtype``.

    Built-in models are built with ``torch.manual_seed(seed)``, so the same name and
    seed give the same weights on every machine.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if name_or_path in BUILDERS or _factory(name_or_path) is not None:
        torch.manual_seed(seed)
        model, processor = BUILDERS[name_or_path][0]() if name_or_path in BUILDERS else _load_factory(name_or_path)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        return model.to(device=dev, dtype=dt), processor
    return _load_pretrained(name_or_path, dev, dt, trust_remote_code, attn_implementation)


def _load_pretrained(
    name_or_path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool, attn_implementation: str | None
) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    check_name(name_or_path)
    local = Path(name_or_path).expanduser()
    source = str(local) if local.is_dir() else name_or_path
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError, ValueError or KeyError here
        raise ModelLoadError(f"cannot load a processor for {name_or_path!r}: {first_line(exc)}") from exc
    errors = []
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        try:
            model = auto.from_pretrained(source, **kwargs)
            return model.to(device).eval(), processor
        except (ValueError, KeyError) as exc:  # architecture not mapped to this auto class
            errors.append(first_line(exc))
        except OSError as exc:
            raise ModelLoadError(f"cannot load model {name_or_path!r}: {first_line(exc)}") from exc
    raise ModelLoadError(f"cannot load model {name_or_path!r}: {errors[-1]}")


