"""Ground truth: models whose phases take known, injected times (see conftest.inject_delays).

On the virtual clock the injected delays are the only thing that moves time, so every
phase must come out exactly: these tests check phase attribution and cannot flake. A few
tests repeat the measurement on the real clock, where a phase can only be longer than
what was injected into it.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import phasetime
from conftest import VirtualClock, inject_delays, load_tiny, tiny_inputs

V, P, D = 20.0, 30.0, 10.0


def measure_virtual(model, inputs, vision=V, prefill=P, decode=D, jitter=0.0, **kwargs) -> phasetime.Measurement:
    clock = VirtualClock()
    with inject_delays(model, vision, prefill, decode, jitter, clock=clock):
        return phasetime.measure(model, inputs, clock=clock, **kwargs)


def test_every_phase_is_attributed_exactly(tiny_name: str) -> None:
    model, _ = load_tiny(tiny_name)
    vision = 0.0 if tiny_name == "tiny-llama" else V
    n = 6
    m = measure_virtual(model, tiny_inputs(tiny_name), max_new_tokens=n, min_new_tokens=n)
    assert m.timer == "virtual" and m.output_tokens == n and m.decode_steps == n - 1
    assert m.vision_ms == vision and m.prefill_ms == P
    assert m.ttft_ms == vision + P and m.other_ms == 0.0
    assert m.itl_ms == (D,) * (n - 1) and m.tpot_ms == D and m.decode_ms == (n - 1) * D
    assert m.total_ms == vision + P + (n - 1) * D
    assert m.decode_forward_ms == (D,) * (n - 1)


def test_every_phase_is_at_least_its_injected_time_on_the_real_clock(tiny_name: str) -> None:
    model, _ = load_tiny(tiny_name)
    vision = 0.0 if tiny_name == "tiny-llama" else V
    n = 4
    with inject_delays(model, V, P, D):
        m = phasetime.measure(model, tiny_inputs(tiny_name), max_new_tokens=n, min_new_tokens=n)
    assert m.timer == "perf-counter" and m.output_tokens == n
    assert m.vision_ms >= vision and m.prefill_ms >= P
    assert all(gap >= D for gap in m.itl_ms) and m.tpot_ms >= D
    # two readings of the same call: the first token cannot come before vision and prefill ended
    assert m.ttft_ms >= m.vision_ms + m.prefill_ms - 1e-6
    assert m.total_ms >= m.ttft_ms + m.decode_ms - 1e-6


def test_tpot_does_not_depend_on_output_length() -> None:
    model, _ = load_tiny("tiny-llava")
    inputs = tiny_inputs("tiny-llava")
    tpots, legacy = {}, {}
    for n in (2, 4, 8, 16, 32):
        m = measure_virtual(model, inputs, 2.0, 5.0, D, max_new_tokens=n, min_new_tokens=n)
        assert m.output_tokens == n and len(m.itl_ms) == n - 1
        tpots[n] = m.tpot_ms
        legacy[n] = m.decode_ms / n  # the biased denominator, for contrast
    assert set(tpots.values()) == {D}
    # decode / N is biased low for short outputs: exactly (N - 1) / N of the step time.
    assert legacy == {n: D * (n - 1) / n for n in legacy}


def test_one_output_token_has_no_tpot() -> None:
    model, _ = load_tiny("tiny-llava")
    m = measure_virtual(model, tiny_inputs("tiny-llava"), max_new_tokens=1, min_new_tokens=1)
    assert m.output_tokens == 1 and m.tpot_ms is None and m.itl_ms == () and m.decode_ms == 0.0
    assert m.decode_steps == 0 and m.ttft_ms == m.total_ms == V + P


class ForceLengths(LogitsProcessor):
    """Row i emits a filler token until its ``lengths[i]``-th token, which is ``stop`` (EOS by default)."""

    def __init__(self, prompt_len: int, lengths: list[int], stop: int, filler: int = 70) -> None:
        self.prompt_len, self.lengths, self.stop, self.filler = prompt_len, lengths, stop, filler

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len  # tokens generated so far
        forced = torch.full_like(scores, float("-inf"))
        for row, length in enumerate(self.lengths):
            forced[row, self.stop if step == length - 1 else self.filler] = 0.0
        return forced


def test_batch_sequences_that_stop_early_end_early() -> None:
    model, _ = load_tiny("tiny-llava")
    inputs = tiny_inputs("tiny-llava", batch_size=3)
    lengths = [3, 7, 5]
    force = LogitsProcessorList([ForceLengths(inputs["input_ids"].shape[1], lengths, model.generation_config.eos_token_id)])
    m = measure_virtual(model, inputs, max_new_tokens=12, logits_processor=force)
    assert [s.output_tokens for s in m.sequences] == lengths and m.decode_steps == max(lengths) - 1
    for seq, n in zip(m.sequences, lengths):
        assert seq.itl_ms == (D,) * (n - 1) and seq.decode_ms == (n - 1) * D and seq.tpot_ms == D
    assert m.decode_ms == m.sequences[1].decode_ms  # the call's decode ends with the longest
    with pytest.raises(ValueError, match="3 sequences"):
        m.tpot_ms


def test_a_row_that_stops_on_a_stop_string_ends_there() -> None:
    """generate() pads a row that met a stop string with pad tokens, not EOS: its length is where it stopped."""
    model, processor = load_tiny("tiny-llava")
    tokenizer = processor.tokenizer
    inputs = tiny_inputs("tiny-llava", batch_size=2)
    stop_id = tokenizer.convert_tokens_to_ids("Q")  # a byte token: the stop string "Q"
    force = LogitsProcessorList([ForceLengths(inputs["input_ids"].shape[1], [4, 9], stop_id)])
    m = measure_virtual(model, inputs, max_new_tokens=9, min_new_tokens=0, logits_processor=force,
                        stop_strings=["Q"], tokenizer=tokenizer)
    assert [s.output_tokens for s in m.sequences] == [4, 9]
    assert m.sequences[0].decode_ms == 3 * D and m.sequences[0].itl_ms == (D,) * 3


def test_one_token_prompt_is_still_a_prefill() -> None:
    model, _ = load_tiny("tiny-llama")
    inputs = {"input_ids": torch.tensor([[1]]), "attention_mask": torch.tensor([[1]])}
    m = measure_virtual(model, inputs, 0.0, max_new_tokens=4, min_new_tokens=4)
    assert m.prompt_tokens == 1 and m.prefill_forwards == 1 and m.prefill_ms == P
    assert m.decode_steps == 3 and m.itl_ms == (D,) * 3


def test_chunked_prefill_counts_every_chunk_as_prefill() -> None:
    model, _ = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama", prompt="a prompt long enough for three chunks")
    chunk = inputs["input_ids"].shape[1] // 2 - 1  # three chunks
    m = measure_virtual(model, inputs, 0.0, max_new_tokens=4, min_new_tokens=4, prefill_chunk_size=chunk)
    assert m.prefill_forwards == 3 and m.prefill_ms == 3 * P
    assert m.decode_steps == 3 and m.itl_ms == (D,) * 3


def test_without_kv_cache_every_later_forward_is_a_decode_step() -> None:
    model, _ = load_tiny("tiny-llama")
    # no cache: every forward re-reads the prompt, so the injector sees a prefill each time
    m = measure_virtual(model, tiny_inputs("tiny-llama"), 0.0, P, P, max_new_tokens=4, min_new_tokens=4,
                        use_cache=False)
    assert m.prefill_forwards == 1 and m.decode_steps == 3 and m.itl_ms == (P,) * 3


def test_vision_rerun_in_decode_forwards_counts_as_vision() -> None:
    """A VLM without a cache re-encodes its image in every forward on transformers <= 5.17;
    newer versions encode it once. Either way vision is vision and decode is decode."""
    model, _ = load_tiny("tiny-llava")
    per_image = measure_virtual(model, tiny_inputs("tiny-llava"), max_new_tokens=4, min_new_tokens=4).vision_calls
    m = measure_virtual(model, tiny_inputs("tiny-llava"), max_new_tokens=4, min_new_tokens=4, use_cache=False)
    assert per_image == 2  # the tower and the projector, each an outermost media module
    assert m.vision_calls in (per_image, 4 * per_image)  # once (>= 5.18) or in every forward (<= 5.17)
    encodes = m.vision_calls // per_image  # V is injected into the tower only
    assert m.vision_ms == encodes * V and m.decode_vision_ms == (encodes - 1) * V
    assert m.prefill_ms == P and m.itl_ms == (P,) * 3 and m.other_ms == 0.0
    assert m.total_ms == m.vision_ms + m.prefill_ms + m.decode_ms


def test_sampling_is_timed_like_greedy() -> None:
    model, _ = load_tiny("tiny-qwen2-vl")
    torch.manual_seed(0)
    m = measure_virtual(model, tiny_inputs("tiny-qwen2-vl"), max_new_tokens=5, min_new_tokens=5, do_sample=True)
    assert m.output_tokens == 5 and m.tpot_ms == D and m.vision_ms == V


def test_hooks_survive_a_compiled_forward() -> None:
    """generate() compiles the forward for a static cache. The model is compiled and warmed up
    with neither the probe nor the injector attached (hooks added after compilation do not fire
    inside a compiled module: the delays are injected at the model's own forward, whose hooks
    do), then timed: every phase exactly, every decode step seen."""
    from transformers import CompileConfig

    model, _ = load_tiny("tiny-llama")
    config = CompileConfig(backend="eager", fullgraph=False)
    config._compile_all_devices = True  # transformers compiles on CUDA only unless told
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, cache_implementation="static", compile_config=config)
    for _ in range(2):  # the first call compiles inside its first decode step
        model.generate(**tiny_inputs("tiny-llama"), **kwargs)
    assert hasattr(model, "_compiled_call"), "generate() did not take the compiled path"
    clock = VirtualClock()
    with inject_delays(model, 0.0, P, D, clock=clock, language_model=model):
        m = phasetime.measure(model, tiny_inputs("tiny-llama"), clock=clock, **kwargs)
    assert m.compiles == 0 and m.decode_steps == 4
    assert m.itl_ms == (D,) * 4 and m.prefill_ms == P and m.total_ms == P + 4 * D


def test_a_prompt_partly_in_a_cache_counts_only_the_rest() -> None:
    import inspect

    from transformers import DynamicCache

    model, _ = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama", prompt="a fairly long prompt for caching")
    ids = inputs["input_ids"]
    cached = ids.shape[1] - 4
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # renamed in 5.24
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :cached], use_cache=True, **{key: cache})
    m = measure_virtual(model, dict(inputs), 0.0, max_new_tokens=3, min_new_tokens=3, **{key: cache})
    assert m.prompt_tokens == 4 and m.prefill_forwards == 1 and m.decode_steps == 2
    assert m.prefill_ms == P and m.itl_ms == (D, D)


def test_other_is_named_set_up_hand_off_and_first_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Delays injected into generate()'s own work, on the virtual clock: 2 ms in its cache
    preparation (before any forward) lands in setup_ms or handoff_ms, 3 ms in a logits processor (once after
    the prefill, then once per decode step) in first_token_ms and the decode gaps, exactly;
    nothing is left unnamed."""
    from transformers import LogitsProcessor, LogitsProcessorList

    model, _ = load_tiny("tiny-llava")
    clock = VirtualClock()
    real_prepare = type(model)._prepare_cache_for_generation

    def slow_prepare(self, *args, **kwargs):
        clock.advance(2.0)
        return real_prepare(self, *args, **kwargs)

    class Slow(LogitsProcessor):
        def __call__(self, input_ids, scores):
            clock.advance(3.0)
            return scores

    monkeypatch.setattr(type(model), "_prepare_cache_for_generation", slow_prepare)
    with inject_delays(model, V, P, D, clock=clock):
        m = phasetime.measure(model, tiny_inputs("tiny-llava"), clock=clock, max_new_tokens=4, min_new_tokens=4,
                              logits_processor=LogitsProcessorList([Slow()]))
    # transformers >= 5.18 encodes the image first and prepares the cache after it: there the
    # 2 ms fall between vision and prefill (hand-off); before, ahead of everything (set-up).
    import transformers
    from packaging.version import Version

    early = Version(transformers.__version__) < Version("5.18")
    assert (m.setup_ms, m.handoff_ms) == ((2.0, 0.0) if early else (0.0, 2.0)) and m.first_token_ms == 3.0
    assert m.vision_ms == V and m.prefill_ms == P and m.itl_ms == (D + 3.0,) * 3  # each step samples too
    assert m.other_ms == m.setup_ms + m.handoff_ms + m.first_token_ms  # every millisecond named
