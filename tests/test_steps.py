"""Engine steps into measurements (phasetime.vllm.steps + derive): made-up steps with known
times, every figure counted by hand. No vLLM needed; tests/vllm_engine/ times the real engine."""

from __future__ import annotations

import pytest

from phasetime.core.phases import derive
from phasetime.vllm.steps import Step, request_events


def measure(steps: list[Step], request: str, prompt: int, n: int, submit: float = 0.0):
    return derive(request_events(steps, request, submit, prompt), prompt_tokens=prompt, output_tokens=[n],
                  timer="virtual")


def one_request() -> list[Step]:
    """Submitted at 0; step 1 (10 ms .. 30 ms): encoder 12-17, model until 26, sampled at 30;
    then three decode steps, 1 ms apart: 31-35 (model to 34), 36-40 (to 39), 41-45 (to 44)."""
    steps = [Step(10, 30, (18, 26), {"a": 10}, encoder=((12, 17),), encoder_inputs={"a": 1})]
    for start in (31, 36, 41):
        steps.append(Step(start, start + 4, (start + 1, start + 3), {"a": 1}))
    return steps


def test_one_request_in_flight_is_exact() -> None:
    m = measure(one_request(), "a", prompt=10, n=4)
    assert m.vision_ms == pytest.approx(5)  # the encoder run
    assert m.prefill_ms == pytest.approx(16 - 5)  # step start (10) to the model's end (26), vision taken out
    assert m.ttft_ms == pytest.approx(30)  # token 1 sampled when step 1 ends
    assert m.ready_ms == pytest.approx((30, 35, 40, 45))  # each token when its step ends
    assert m.decode_ms == pytest.approx(15) and m.sequences[0].tpot_ms == pytest.approx(5)  # 3 whole cycles
    assert m.sequences[0].itl_ms == pytest.approx((5, 5, 5))
    assert m.total_ms == pytest.approx(45) and m.other_ms == pytest.approx(45 - 5 - 11 - 15)
    assert m.setup_ms == pytest.approx(10)  # submit to the prompt's step: processing and the queue
    assert m.prefill_forwards == 1 and m.decode_steps == 3
    # a decode forward: from the previous token to the model's end (waiting, preparing, the forward)
    assert m.decode_forward_ms == pytest.approx((34 - 30, 39 - 35, 44 - 40))


def test_chunked_prefill_sums_its_chunks() -> None:
    steps = [Step(0, 10, (2, 8), {"a": 6}), Step(11, 20, (13, 18), {"a": 4}), Step(21, 25, (22, 24), {"a": 1})]
    m = measure(steps, "a", prompt=10, n=2)
    assert m.prefill_forwards == 2 and m.prefill_ms == pytest.approx(8 + 7)
    assert m.ttft_ms == pytest.approx(20) and m.decode_ms == pytest.approx(5)


def test_a_shared_step_is_split_by_scheduled_tokens() -> None:
    # b is decoding (1 token) while a's 39-token prompt is prefilled in the same step 0-50
    shared = Step(0, 50, (10, 40), {"a": 39, "b": 1})
    steps = [Step(-20, -10, (-18, -12), {"b": 5}), shared, Step(51, 60, (52, 58), {"a": 1, "b": 1})]
    a = measure(steps, "a", prompt=39, n=2, submit=-5)
    assert a.prefill_ms == pytest.approx(40 * 39 / 40)  # step start to model end, a's share 39/40
    assert a.ttft_ms == pytest.approx(55)  # wall clock: submitted at -5, sampled at 50
    assert a.decode_ms == pytest.approx(10)
    b = measure(steps, "b", prompt=5, n=3, submit=-25)
    assert b.ready_ms == pytest.approx((15, 75, 85))  # wall clock, unsplit
    assert b.decode_forward_ms[0] == pytest.approx(10 + 40 / 40)  # waited 10, then its 1/40 of the model time


def test_a_shared_encoder_is_split_by_images() -> None:
    step = Step(0, 30, (20, 28), {"a": 20, "b": 20}, encoder=((2, 12),), encoder_inputs={"a": 1, "b": 1})
    steps = [step, Step(31, 35, (32, 34), {"a": 1, "b": 1})]
    for request in ("a", "b"):
        m = measure(steps, request, prompt=20, n=2)
        assert m.vision_ms == pytest.approx(5)  # half the encoder each
        assert m.prefill_ms == pytest.approx((28 - 10) / 2)  # half of the model time (28 - 0 - 10 encoder)


def test_an_image_encoded_for_another_request_is_not_vision() -> None:
    # vLLM's encoder cache: the same image in two requests of one step is encoded once, for a
    step = Step(0, 30, (20, 28), {"a": 20, "b": 20}, encoder=((2, 12),), encoder_inputs={"a": 1})
    steps = [step, Step(31, 35, (32, 34), {"a": 1, "b": 1})]
    assert measure(steps, "a", prompt=20, n=2).vision_ms == pytest.approx(10)
    assert measure(steps, "b", prompt=20, n=2).vision_ms == 0


def test_bad_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="no step"):
        request_events(one_request(), "z", 0.0, 10)
    with pytest.raises(ValueError, match="before it starts"):
        Step(5, 4, None, {"a": 1})
    with pytest.raises(ValueError, match="no language-model forward"):
        request_events([Step(0, 1, None, {"a": 1})], "a", 0.0, 1)
