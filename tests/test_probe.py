"""Probe mechanics: attaching, detaching, vision lookup, refused generation modes."""

from __future__ import annotations

import inspect

import pytest

import phasetime
from conftest import inject_delays, load_tiny, tiny_inputs
from phasetime import UnsupportedGeneration
from phasetime.hf.outputs import count_output_tokens
from phasetime.hf.names import vision_methods, vision_modules


def _hook_counts(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_probe_leaves_no_trace(tiny_name: str) -> None:
    model, _ = load_tiny(tiny_name)
    # transformers installs its own output-capturing hooks on a model's first run.
    model.generate(**tiny_inputs(tiny_name), max_new_tokens=1)
    before = _hook_counts(model)
    signature = inspect.signature(model.base_model.get_image_features) if tiny_name != "tiny-llama" else None
    with phasetime.Probe(model) as probe:
        assert "generate" in vars(model)
        if signature is not None:
            # generate() picks the encoder's arguments from this signature.
            assert inspect.signature(model.base_model.get_image_features) == signature
        model.generate(**tiny_inputs(tiny_name), max_new_tokens=3, min_new_tokens=3)
        model.generate(**tiny_inputs(tiny_name), max_new_tokens=2, min_new_tokens=2)
    assert [m.output_tokens for m in probe.measurements] == [3, 2]
    assert "generate" not in vars(model)
    assert "get_image_features" not in vars(model.base_model)
    assert _hook_counts(model) == before
    # Calls after detaching are not recorded.
    model.generate(**tiny_inputs(tiny_name), max_new_tokens=2)
    assert len(probe.measurements) == 2


def test_vision_lookup() -> None:
    llava, _ = load_tiny("tiny-llava")
    owner, names = vision_methods(llava)
    assert owner is llava.base_model and "get_image_features" in names
    llama, _ = load_tiny("tiny-llama")
    assert vision_methods(llama) is None and vision_modules(llama) == []


def test_vision_override_with_module_paths(virtual_clock) -> None:
    model, _ = load_tiny("tiny-llava")
    with inject_delays(model, 15.0, 1.0, 1.0, clock=virtual_clock):
        with phasetime.Probe(model, vision=["model.vision_tower", "model.multi_modal_projector"]) as probe:
            model.generate(**tiny_inputs("tiny-llava"), max_new_tokens=2, min_new_tokens=2)
    m = probe.measurements[-1]
    assert m.vision_calls == 2  # tower and projector run one after the other
    assert m.vision_ms == pytest.approx(15.0)  # the tower's 15 ms, exactly (virtual clock), the projector's 0
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        phasetime.Probe(model, vision=["model.nope"]).attach()
    assert "generate" not in vars(model)  # a failed attach rolls back


@pytest.mark.parametrize(
    "kwargs, mode",
    [
        (dict(penalty_alpha=0.6, top_k=4), "contrastive_search"),
        (dict(num_beams=4, num_beam_groups=2), "group_beam_search"),
        (dict(dola_layers="high"), "dola_generation"),
        (dict(assistant_early_exit=1), "assistant_early_exit"),
    ],
)
def test_untimeable_modes_are_refused_by_name(kwargs: dict, mode: str) -> None:
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(UnsupportedGeneration, match=mode):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=3, **kwargs)
    assert "generate" not in vars(model)


def test_the_target_as_its_own_draft_is_refused() -> None:
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(UnsupportedGeneration, match="its own draft"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=3, assistant_model=model)


def test_output_tokens_stop_at_the_first_eos() -> None:
    import torch

    generated = torch.tensor([[5, 6, 2, 3, 3], [5, 6, 7, 8, 9], [2, 3, 3, 3, 3], [3, 3, 2, 3, 3]])
    assert count_output_tokens(generated, {2}) == [3, 5, 1, 3]
    assert count_output_tokens(generated, set()) == [5, 5, 5, 5]


def test_unknown_method_is_refused() -> None:
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(ValueError, match="method"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), method="guess", max_new_tokens=2)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"do_sample": True}, {"num_beams": 3}, {"num_beams": 2, "do_sample": True}, {"penalty_alpha": 0.6, "top_k": 4},
     {"num_beams": 4, "num_beam_groups": 2}, {"force_words_ids": [[5]], "num_beams": 2}],
)
def test_generation_mode_agrees_with_transformers(kwargs: dict) -> None:
    import copy

    from phasetime.hf.generation import generation_mode

    model, _ = load_tiny("tiny-llama")
    config = copy.deepcopy(model.generation_config)
    config.update(**kwargs)
    assert generation_mode(model, kwargs) == config.get_generation_mode().value


def test_nvtx_ranges_name_every_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: calls.append(f"push {name}"))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: calls.append("pop"))
    model, _ = load_tiny("tiny-llava")
    phasetime.measure(model, tiny_inputs("tiny-llava"), nvtx=True, max_new_tokens=3, min_new_tokens=3)
    calls = calls[2:]  # the probe first checks that NVTX works
    pushes = [c.removeprefix("push ") for c in calls if c.startswith("push ")]
    # transformers <= 5.17 encodes the image inside the prefill forward, >= 5.18 before it: the
    # tower and the projector, each its own range
    assert pushes[0] == "phasetime.generate" and pushes.count("vision") == 2
    assert [p for p in pushes[1:] if p != "vision"] == ["prefill", "decode step 1", "decode step 2"]
    assert calls.count("pop") == len(pushes)  # balanced


def test_nvtx_without_cuda_build_is_refused() -> None:
    import torch

    if torch.version.cuda is not None:
        pytest.skip("a CUDA build of torch has NVTX")
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(ValueError, match="NVTX ranges need a CUDA build"):
        phasetime.Probe(model, nvtx=True)


def _generate_plain(model, name: str, n: int = 2):
    return model.generate(**tiny_inputs(name), max_new_tokens=n, min_new_tokens=n)


@pytest.mark.parametrize("order", ["lifo", "fifo"])
def test_probes_detached_in_any_order_restore_the_model(order: str) -> None:
    model, _ = load_tiny("tiny-llava")
    _generate_plain(model, "tiny-llava")
    before = _hook_counts(model)
    first, second = phasetime.Probe(model), phasetime.Probe(model, vision=["model.vision_tower"])
    first.attach()
    second.attach()
    _generate_plain(model, "tiny-llava", 3)
    assert [m.output_tokens for m in first.measurements] == [3] and len(second.measurements) == 1
    (first if order == "fifo" else second).detach()
    _generate_plain(model, "tiny-llava", 2)  # the remaining probe still records
    remaining = second if order == "fifo" else first
    assert len(remaining.measurements) == 2
    remaining.detach()
    assert "generate" not in vars(model) and "get_image_features" not in vars(model.base_model)
    assert _hook_counts(model) == before
    assert _generate_plain(model, "tiny-llava").shape[0] == 1  # plain generate() works


def test_measure_from_two_threads_on_one_model() -> None:
    import threading

    model, _ = load_tiny("tiny-llama")
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            results[n] = [phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=n, min_new_tokens=n)
                          for _ in range(5)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in (3, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # each thread got its own calls, each complete
    assert {n: [m.output_tokens for m in ms] for n, ms in results.items()} == {3: [3] * 5, 6: [6] * 5}
    assert all(m.decode_steps == n - 1 and len(m.itl_ms) == n - 1 for n, ms in results.items() for m in ms)
    assert "generate" not in vars(model) and "_phasetime_hooks" not in vars(model)


def test_subtract_refuses_untimeable_modes_before_running() -> None:
    model, _ = load_tiny("tiny-llama")
    calls = []
    original = model.generate
    model.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with pytest.raises(UnsupportedGeneration, match="beam_search"):
            phasetime.measure(model, tiny_inputs("tiny-llama"), method="subtract", max_new_tokens=3, num_beams=4)
    finally:
        del model.generate
    assert calls == []


def test_wrong_option_types_are_refused_by_name() -> None:
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(UnsupportedGeneration, match="num_beams='4' is not a number"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=3, num_beams="4")


def test_a_failed_attach_releases_only_what_it_took(virtual_clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe B fails to hook its first target: probe A keeps every vision hook it had (0.2.0
    released A's projector hook, and its time silently became prefill)."""
    from phasetime.hf.hooks import ModelHooks

    model, _ = load_tiny("tiny-llava")
    projector = model.model.multi_modal_projector
    a = phasetime.Probe(model, vision=["model.vision_tower", "model.multi_modal_projector"])
    a.attach()
    real = ModelHooks._install_target

    def refuse_the_lm(self, key):
        if key == ("module", "model.language_model"):
            raise RuntimeError("this target cannot be hooked")
        return real(self, key)

    monkeypatch.setattr(ModelHooks, "_install_target", refuse_the_lm)
    b = phasetime.Probe(model, vision=["model.language_model", "model.multi_modal_projector"])
    with pytest.raises(RuntimeError, match="cannot be hooked"):
        b.attach()
    handle = projector.register_forward_pre_hook(lambda module, args: virtual_clock.advance(3.0))
    try:
        with inject_delays(model, 15.0, 1.0, 1.0, clock=virtual_clock):
            model.generate(**tiny_inputs("tiny-llava"), max_new_tokens=2, min_new_tokens=2)
    finally:
        handle.remove()
        a.detach()
    m = a.measurements[-1]
    assert m.vision_ms == pytest.approx(18.0) and m.prefill_ms == pytest.approx(1.0)  # tower 15 + projector 3


def test_a_failed_attach_or_a_description_leaves_nothing_on_the_model() -> None:
    model, _ = load_tiny("tiny-llava")
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        phasetime.Probe(model, vision=["model.nope"]).attach()
    assert "_phasetime_hooks" not in vars(model)
    assert phasetime.Probe(model).describe_media() and "_phasetime_hooks" not in vars(model)


def test_measurements_keep_the_sequences_on_the_host_unless_asked() -> None:
    import torch

    model, _ = load_tiny("tiny-llava")
    inputs = tiny_inputs("tiny-llava")
    kwargs = dict(max_new_tokens=3, min_new_tokens=3, return_dict_in_generate=True, output_scores=True)
    m = phasetime.measure(model, inputs, **kwargs)
    assert isinstance(m.output_ids, torch.Tensor) and m.output_ids.device.type == "cpu"
    assert m.output_ids.shape == (1, inputs["input_ids"].shape[1] + 3)  # the sequences, not scores or cache
    full = phasetime.measure(model, inputs, keep_output=True, **kwargs)
    assert hasattr(full.output_ids, "scores") and torch.equal(full.output_ids.sequences, m.output_ids)


def test_setups_phasetime_cannot_time_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder-decoder models and MPS: a named refusal, never a wrong number."""
    import torch

    from phasetime.core.clock import clock_for
    from phasetime.experiments import models

    model, _ = load_tiny("tiny-llama")
    monkeypatch.setattr(model.config, "is_encoder_decoder", True)
    with pytest.raises(UnsupportedGeneration, match=r"encoder-decoder models \(LlamaForCausalLM\) are not supported"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), max_new_tokens=2)
    monkeypatch.setattr(model.config, "is_encoder_decoder", False)
    with pytest.raises(UnsupportedGeneration, match="'mps' devices are not supported"):
        clock_for("mps")
    with pytest.raises(models.ModelLoadError, match="'mps' is not supported"):
        models.resolve_device("mps")


def test_inspect_says_in_one_line_when_the_processor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import run_cli
    from phasetime.experiments.models import inspection

    def broken(*args, **kwargs):
        raise KeyError("chat_template")

    monkeypatch.setattr(inspection, "build_inputs", broken)
    result = run_cli("inspect", "tiny-llava")
    assert result.exit_code == 2 and "could not build a prompt with an image" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_exception_inside_a_probed_generate_leaves_the_probe_ready() -> None:
    """A forward that raises at the third step: the error reaches the caller unchanged, no
    measurement is recorded for the broken call, nothing of it stays behind (the call state,
    the draft's hooks), and the next call is measured as if nothing happened."""
    from phasetime.hf.hooks import ModelHooks

    model, _ = load_tiny("tiny-llama")
    draft, _ = load_tiny("tiny-llama-draft")
    calls = {"n": 0}

    def third_forward_fails(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    handle = model.register_forward_pre_hook(third_forward_fails)
    with phasetime.Probe(model) as probe:
        try:
            with pytest.raises(RuntimeError, match="illegal memory access"):
                model.generate(**tiny_inputs("tiny-llama"), assistant_model=draft, max_new_tokens=6, min_new_tokens=6)
        finally:
            handle.remove()
        hooks = ModelHooks.existing(model)
        assert probe.measurements == [] and hooks is not None and hooks.call is None
        assert not draft._forward_pre_hooks and not draft._forward_hooks
        model.generate(**tiny_inputs("tiny-llama"), max_new_tokens=4, min_new_tokens=4)
    assert len(probe.measurements) == 1 and probe.measurements[0].output_tokens == 4
    assert "generate" not in vars(model)


class SlowClock:
    """The host clock, each mark costing 0.2 ms more (a probe whose own work is known)."""

    name = "perf-counter"

    def sync(self) -> None:
        return None

    def mark(self) -> int:
        import time

        from conftest import spin

        spin(0.2)
        return time.perf_counter_ns()

    def resolve_ms(self, marks):
        return [(m - marks[0]) / 1e6 for m in marks]


def test_probe_ms_owns_the_time_spent_in_the_hooks() -> None:
    """Every mark costs 0.2 ms here: probe_ms is at least that, for every mark of the call (its
    hooks time their whole bodies, and add what torch's calling them costs, calibrated)."""
    model, _ = load_tiny("tiny-llama")
    m = phasetime.measure(model, tiny_inputs("tiny-llama"), clock=SlowClock(), max_new_tokens=6, min_new_tokens=6)
    marks = 2 + 2 * (m.prefill_forwards + m.decode_steps)  # the call's bounds and every forward's
    assert m.probe_ms >= 0.2 * marks


def test_a_custom_stopping_criterion_ends_a_row_where_it_says() -> None:
    """Rows that end at EOS are read from the tokens; a custom criterion (or stop strings, a time
    limit) is watched at every step instead, so the length is where it stopped the row."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowLengths(StoppingCriteria):
        """Row 0 ends after 3 tokens, row 1 after 5."""

        def __init__(self, prompt: int) -> None:
            self.prompt = prompt

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            made = input_ids.shape[1] - self.prompt
            return torch.tensor([made >= 3, made >= 5])

    model, _ = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama", batch_size=2)
    stop = RowLengths(inputs["input_ids"].shape[1])
    m = phasetime.measure(model, inputs, stopping_criteria=StoppingCriteriaList([stop]), max_new_tokens=8)
    assert [s.output_tokens for s in m.sequences] == [3, 5] and m.decode_steps == 4
    assert [len(s.itl_ms) for s in m.sequences] == [2, 4]
