"""A chunked prefill on the real engine: a token budget per step below the prompt's length
(engine_args), so that vLLM feeds the prompt in chunks over several steps. One engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from phasetime.experiments.plan.spec import parse_experiment
from phasetime.experiments.running.run import run_experiment
from phasetime.results import read

BUDGET = 32  # tokens per step; tiny-qwen2-vl-h32's prompt below has 67


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("chunked") / "run"
    exp = parse_experiment({
        "name": "chunked", "backend": "vllm", "models": ["tiny-qwen2-vl-h32"],
        "engine_args": {"max_num_batched_tokens": BUDGET, "max_num_seqs": 4},
        "inputs": {"kind": "synthetic", "prompt": "Describe this image in detail.", "image_size": 112},
        "sweep": {"max_new_tokens": [6]}, "repeats": 3, "warmup": 1,
    })
    result = run_experiment(exp, out)
    assert result.failed == 0
    return read(out)


def test_the_prompt_is_prefilled_in_chunks_and_summed(table) -> None:
    for row in table.to_pylist():
        chunks = -(-row["prompt_tokens"] // BUDGET)  # the steps a prompt of this length needs
        assert row["prefill_forwards"] == chunks >= 3
        prefill_spans = [s for s in row["spans"] if s["name"] == "prefill"]
        assert len(prefill_spans) == chunks
        assert row["vision_ms"] > 0 and row["vision_calls"] >= 1
        # prefill is the chunks' model time (vision taken out), the gaps between them are hand-off
        assert row["prefill_ms"] <= sum(s["end_ms"] - s["start_ms"] for s in prefill_spans) + 1e-6
        assert row["handoff_ms"] > 0
        assert row["output_tokens"] == 6 and row["decode_steps"] == 5
        # vLLM's own prefill (first scheduled to first token) spans every chunk: ours sits inside it
        assert row["prefill_ms"] + row["vision_ms"] <= row["engine_prefill_ms"] + 1e-6
