"""A model whose every forward sleeps a known time: a stand-in for a GPU-bound model in the
scaling benchmark (a sleeping worker needs no core, so k of them fit on a 2-core machine).

Use it as a model name in an experiment file: ``benchmarks/sleepy.py:build``. The sleep per
forward is ``PHASETIME_SLEEP_MS`` (default 25 ms).
"""

from __future__ import annotations

import os
import time
from typing import Any


def build() -> tuple[Any, Any]:
    from phasetime.experiments.models.tiny import build_llama

    model, tokenizer = build_llama()
    pause = float(os.environ.get("PHASETIME_SLEEP_MS", "25")) / 1000

    def sleep(module: Any, args: Any, kwargs: Any) -> None:
        time.sleep(pause)

    model.model.register_forward_pre_hook(sleep, with_kwargs=True)
    return model, tokenizer
