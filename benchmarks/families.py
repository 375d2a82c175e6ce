"""What each built-in family's media is timed as, found by following the data: the table of
docs/metrics.md ("What media covers, family by family"), made by running it.

For every built-in that takes images (and the shapes of tests/zoo.py, which the built-ins lack),
one short call through ``phasetime inspect``'s machinery: the media modules found, how and why,
the language model, and where vision ran (inside the prefill forward on transformers <= 5.17,
before it on newer ones). Run it under each transformers version the docs cover:

    .venv/bin/python benchmarks/families.py
    .venv-oldest/bin/python benchmarks/families.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402
import transformers  # noqa: E402

import phasetime  # noqa: E402
from phasetime.experiments.models.inspection import inspect_model  # noqa: E402
from phasetime.experiments.models.tiny import TEXT_BUILTINS  # noqa: E402
from phasetime.hf import media  # noqa: E402
from phasetime.hf.generation import media_inputs  # noqa: E402


def row(name: str, found: list[tuple[str, str, str, str]], language: list[str], placement: str) -> str:
    modules = "; ".join(f"`{path}` ({how.split(',')[0]}: {why})" for _, path, how, why in found) or "nothing"
    return f"| {name} | {modules} | {', '.join(f'`{p}`' for p in language)} | {placement} |"


def main() -> None:
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}\n")
    print("| model | media found, by following the data (role: why) | language model | vision ran |")
    print("|---|---|---|---|")
    for name in phasetime.models.BUILTIN:
        if name in TEXT_BUILTINS or name == "llava-1.4b-random":
            continue
        found = inspect_model(name, device="cpu", dtype="float32")
        print(row(name, found.media, found.language, found.vision_placement))
    import zoo

    for name in zoo.SHAPES:
        model, inputs, _ = zoo.shape(name)
        m = phasetime.measure(model, inputs, max_new_tokens=3, min_new_tokens=3)
        found = media.known(model, frozenset(media_inputs(inputs)))
        rows = [(f.phase, f.path, f.role, f.why) for f in sorted(found.found, key=lambda f: (f.role != "encoder", f.path))]
        where = f"{m.vision_calls + m.audio_calls} media calls, {m.decode_vision_ms + m.decode_audio_ms:.2f} ms in decode"
        print(row(f"zoo: {name}", rows, list(found.language), where))


if __name__ == "__main__":
    main()
