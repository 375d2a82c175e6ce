"""The backend seam without vLLM: what a vLLM experiment refuses by name, the cell keys of
hf cells kept, and a clear error where vLLM is not installed (tests/vllm_engine times the engine)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from phasetime.experiments.plan.grid import expand
from phasetime.experiments.plan.spec import ExperimentError, parse_experiment
from phasetime.experiments.running.run import run_experiment
from phasetime.results import verify

BASE = {"name": "b", "models": ["tiny-llama-h32"], "sweep": {"max_new_tokens": [2]}, "repeats": 1, "warmup": 0}


@pytest.mark.parametrize("extra, words", [
    ({"sweep": {"generation": [{"draft": "tiny-llama-draft"}]}}, "speculative decoding"),
    ({"sweep": {"generation": [{"num_beams": 2}]}}, "beam search"),
    ({"sweep": {"generation": [{"repetition_penalty": 1.2}]}}, "repetition_penalty"),
    ({"sweep": {"method": ["both"]}}, "subtract method"),
    ({"resources": {"memory": True}}, "resources (memory)"),
    ({"executor": "ray"}, "local executor"),
])
def test_what_vllm_cannot_time_is_refused_by_name(extra: dict, words: str) -> None:
    with pytest.raises(ExperimentError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_experiment({**BASE, "backend": "vllm", **extra})
    parse_experiment({**BASE, **extra})  # the same on generate() is fine


@pytest.mark.parametrize("args, words", [
    ({"enable_prefix_caching": True}, "sets ['enable_prefix_caching'] itself"),
    ({"speculative_config": {"method": "ngram"}}, "speculative decoding"),
    ({"pipeline_parallel_size": 2}, "pipeline parallelism"),
])
def test_engine_args_phasetime_cannot_honour_are_refused(args: dict, words: str) -> None:
    with pytest.raises(ExperimentError, match=re.escape(words)):
        parse_experiment({**BASE, "backend": "vllm", "engine_args": args})
    with pytest.raises(ExperimentError, match="need backend: vllm"):
        parse_experiment({**BASE, "engine_args": {"max_num_batched_tokens": 32}})


def test_engine_args_shape_the_cells_only_when_given() -> None:
    plain = expand(parse_experiment({**BASE, "backend": "vllm"}))
    same = expand(parse_experiment({**BASE, "backend": "vllm", "engine_args": {}}))
    chunked = expand(parse_experiment({**BASE, "backend": "vllm", "engine_args": {"max_num_batched_tokens": 32}}))
    assert plain[0].key == same[0].key != chunked[0].key


def test_hf_cells_keep_their_keys_and_vllm_cells_differ() -> None:
    hf = expand(parse_experiment(BASE))
    same = expand(parse_experiment({**BASE, "backend": "hf"}))
    vllm = expand(parse_experiment({**BASE, "backend": "vllm"}))
    assert [c.key for c in hf] == [c.key for c in same]  # naming the default changes nothing
    assert "backend" not in hf[0].params and vllm[0].params["backend"] == "vllm"
    assert hf[0].key != vllm[0].key


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_run_is_refused_saying_how_to_get_it(tmp_path: Path) -> None:
    """Before anything is written (0.3 failed every cell one by one)."""
    from phasetime.experiments.plan.checks import RunError

    with pytest.raises(RunError, match="scripts/setup-vllm.sh"):
        run_experiment(parse_experiment({**BASE, "backend": "vllm"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_only_the_vllm_backend_imports_vllm_and_only_when_asked() -> None:
    import ast

    import phasetime

    root = Path(phasetime.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == "vllm" or n.startswith("vllm.") for n in names):
                found.append((path.relative_to(root).as_posix(), id(node) in top))
    # the offline engine, and the plugin that runs inside vLLM's own server processes
    assert found and {p for p, _ in found} == {"vllm/engine.py", "vllm/plugin.py"}
    assert not any(at_top for _, at_top in found)  # inside functions: imported when a cell needs it


def test_a_repeated_vllm_warning_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """vLLM's CPU worker warns twice a request that torch's threads cannot be set (142 of the 231
    lines of the offline example's log): phasetime lets the first through and drops the rest."""
    import logging

    from phasetime.vllm.engine import PINNED_THREADS, say_once

    logger = logging.getLogger("phasetime-test.cpu_worker")
    say_once(logger, PINNED_THREADS)
    say_once(logger, PINNED_THREADS)  # installed once
    with caplog.at_level("WARNING", logger="phasetime-test.cpu_worker"):
        for _ in range(6):
            logger.warning("CPU backend doesn't allow to use `torch.set_num_threads` after the thread binding, skip it.")
        logger.warning("another warning")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "said once" in messages[0] and messages[1] == "another warning"
