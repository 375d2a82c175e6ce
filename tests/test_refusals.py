"""What cannot be timed is refused by name, in one line, before anything is written (issue 25).

Each bad input 0.3 let through to the middle of a run (after the results directory existed),
or ran without a word: a draft with another tokenizer, prompt lookup over a prompt with images,
an engine that is not installed or cannot load the model, options that do nothing on their
own, min_new_tokens above max_new_tokens. The library refuses the same calls before the model
runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import phasetime
from conftest import EXAMPLES, load_tiny, run_cli, tiny_inputs
from phasetime import UnsupportedGeneration

pytestmark = pytest.mark.anyversion


def refused(tmp_path: Path, *args: str) -> str:
    """Run ``phasetime run ARGS --out DIR``: it must fail with one line and leave no directory."""
    out = tmp_path / "out"
    result = run_cli("run", *args, "--out", str(out), "--max-new-tokens", "2", "--repeats", "1", "--warmup", "0",
                     "--device", "cpu", "--quiet")
    lines = [line for line in result.output.splitlines() if line.strip() and "Loading weights" not in line]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result
    assert not out.exists()
    return lines[0]


def test_a_draft_with_another_tokenizer(tmp_path: Path) -> None:
    line = refused(tmp_path, "--model", "tiny-llava", "--draft", "tiny-llama-draft")
    assert "the draft's tokenizer does not match the target's (vocabularies of 260 and 261 tokens)" in line


def test_a_draft_with_another_tokenizer_in_the_library_before_the_model_runs() -> None:
    model, _ = load_tiny("tiny-llava")
    draft, _ = load_tiny("tiny-llama-draft")
    forwards = []
    handle = model.register_forward_pre_hook(lambda m, a: forwards.append(1))
    try:
        with pytest.raises(UnsupportedGeneration, match="the draft's tokenizer does not match"):
            phasetime.measure(model, tiny_inputs("tiny-llava"), assistant_model=draft, max_new_tokens=3)
    finally:
        handle.remove()
    assert forwards == []


def test_prompt_lookup_with_images(tmp_path: Path) -> None:
    line = refused(tmp_path, "--model", "tiny-llava", "--prompt-lookup", "3")
    assert "prompt lookup on models[0] 'tiny-llava' with images is not supported" in line
    model, _ = load_tiny("tiny-llava")
    with pytest.raises(UnsupportedGeneration, match=r"prompt lookup with media inputs \(pixel_values\)"):
        phasetime.measure(model, tiny_inputs("tiny-llava"), prompt_lookup_num_tokens=3, max_new_tokens=3)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_an_engine_that_is_not_installed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("run", str(Path(EXAMPLES) / "vllm.yaml"), "--out", str(out), "--quiet")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and not out.exists(), result
    assert "backend vllm needs vLLM, which this environment lacks" in result.output


def test_a_built_in_the_engine_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import phasetime.vllm.engine as engine

    monkeypatch.setattr(engine, "unavailable", lambda: None)  # as if vLLM were installed
    line = refused(tmp_path, "--model", "tiny-llava", "--backend", "vllm")
    assert "the built-in 'tiny-llava' does not load in vLLM (the built-ins it runs: tiny-llama-h32" in line


@pytest.mark.parametrize("args,words", [
    (["--num-assistant-tokens", "3"], "num_assistant_tokens=3 does nothing without a draft model"),
    (["--address", "auto"], "address does nothing on the local executor"),
    (["--image", "x.png", "--image-size", "64"], "--image-size sizes the generated image"),
    (["--min-new-tokens", "10", "--max-new-tokens", "4"], "min_new_tokens 10 is more than max_new_tokens 4"),
])
def test_options_that_do_nothing_or_contradict(tmp_path: Path, args: list[str], words: str) -> None:
    out = tmp_path / "out"
    result = run_cli("run", "--model", "tiny-llama", *args, "--out", str(out), "--quiet")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result
    assert not out.exists()


@pytest.mark.parametrize("generation,words", [
    ("{temperature: 0.5}", "temperature=0.5 does nothing without sampling (do_sample: true)"),
    ("{max_matching_ngram_size: 2}", "max_matching_ngram_size=2 does nothing without prompt lookup"),
    ("{length_penalty: 2.0}", "length_penalty=2.0 does nothing without a beam search"),
])
def test_generation_options_that_do_nothing_in_a_file(tmp_path: Path, generation: str, words: str) -> None:
    file = tmp_path / "exp.yaml"
    file.write_text(f"name: x\nmodels: [tiny-llama]\nsweep: {{generation: [{generation}]}}\n")
    result = run_cli("run", str(file), "--out", str(tmp_path / "out"), "--quiet")
    assert result.exit_code == 2 and result.output.count("\n") == 1 and words in result.output, result
    assert not (tmp_path / "out").exists()
