"""Built-in models written to a directory, for an engine that loads checkpoints from disk (vLLM).

The same name and seed give the same weights as :func:`phasetime.experiments.models.load`,
so a built-in timed on ``generate()`` and on vLLM is one model (and greedy decoding gives the
same tokens on both). Directories are cached under ``$PHASETIME_CACHE`` (default
``~/.cache/phasetime``), one per name, seed and transformers version, written whole or not at
all (a temporary directory renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .tiny import BUILDERS

__all__ = ["cache_root", "checkpoint_dir", "save_processor"]


def cache_root() -> Path:
    return Path(os.environ.get("PHASETIME_CACHE") or Path.home() / ".cache" / "phasetime")


def save_processor(processor: Any, path: Path) -> None:
    """The processor's files: whole when transformers can save it, else its tokenizer, image
    processor and chat template (a built-in processor without a video processor)."""
    try:
        processor.save_pretrained(path)
        return
    except (AttributeError, TypeError):
        pass
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.save_pretrained(path)
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:
        image_processor.save_pretrained(path)
    template = getattr(processor, "chat_template", None)
    if template:
        (path / "chat_template.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")


def checkpoint_dir(name: str, seed: int = 0) -> str:
    """A directory (or hub id) an engine can load ``name`` from: a built-in is written once
    (float32 weights; the engine casts them to the cell's dtype), anything else is returned as given."""
    if name not in BUILDERS:
        return name
    import transformers

    from . import load

    target = cache_root() / "checkpoints" / f"{name}-seed{seed}-transformers{transformers.__version__}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    model, processor = load(name, device="cpu", dtype="float32", seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        save_processor(processor, tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # another process may have written it meanwhile
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
