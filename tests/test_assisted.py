"""Assisted decoding (a draft model), prompt lookup and beam search, against ground truth.

Delays are injected into the target's forwards (the first one, which consumes the prompt,
takes PREFILL; every later one, a verify forward, takes VERIFY), into every forward of the
draft model (DRAFT) and into prompt lookup's host-side search (SEARCH). The test counts
the forwards with hooks of its own, so the expected phases come from that count, not
from the probe: on the virtual clock they must come out exactly, on the real clock at
least. Tokens are compared with the same generate() call without the probe, acceptance
counts with the ``num_matches`` transformers hands its candidate generator every round.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import torch

import phasetime
from phasetime import UnsupportedGeneration
from conftest import VirtualClock, discover, load_tiny, spin, tiny_inputs

PREFILL, VERIFY, DRAFT, SEARCH, VISION = 7.0, 3.0, 0.5, 0.25, 11.0


@contextmanager
def delays(target: torch.nn.Module, draft: torch.nn.Module | None, clock: VirtualClock | None,
           log: list[str]) -> Iterator[None]:
    """Inject the delays above; ``log`` gets "T" for every target forward, "D" for every draft forward."""
    wait = clock.advance if clock is not None else spin

    def on_target(module: Any, args: Any) -> None:
        wait(PREFILL if "T" not in log else VERIFY)
        log.append("T")

    def on_draft(module: Any, args: Any) -> None:
        wait(DRAFT)
        log.append("D")

    lm = target.model.language_model if hasattr(target.model, "language_model") else target.model
    handles = [lm.register_forward_pre_hook(on_target)]
    if draft is not None:
        handles.append(draft.model.register_forward_pre_hook(on_draft))
    tower = getattr(target.model, "vision_tower", None)
    if tower is not None:
        handles.append(tower.register_forward_pre_hook(lambda m, a: wait(VISION)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def transformers_matches() -> Iterator[list[int]]:
    """The num_matches transformers passes to the candidate generator after every round."""
    from transformers.generation import candidate_generator as cg

    seen: list[int] = []
    patched = []
    for cls in (cg.AssistedCandidateGenerator, cg.PromptLookupCandidateGenerator):
        original = cls.update_candidate_strategy

        def record(self: Any, input_ids: Any, scores: Any, num_matches: Any, _original: Any = original) -> Any:
            seen.append(int(num_matches))
            return _original(self, input_ids, scores, num_matches)

        patched.append((cls, original))
        cls.update_candidate_strategy = record
    try:
        yield seen
    finally:
        for cls, original in patched:
            cls.update_candidate_strategy = original


def nudged_copy(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """A draft with the target's weights plus seeded noise: it agrees with the target sometimes.
    It proposes 4 candidates a round to start with, whatever its confidence (a random-weight
    draft is never confident enough for transformers' default threshold to let it go on)."""
    draft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    draft.generation_config.assistant_confidence_threshold = 0.0
    draft.generation_config.num_assistant_tokens = 4
    return draft


def expected(log: list[str], vision: float = 0.0) -> dict[str, float]:
    """The phases the injected delays make, from the test's own forward count."""
    first_target = log.index("T")
    early = log[:first_target].count("D")
    later = log[first_target:].count("D")
    verifies = log.count("T") - 1
    ttft = vision + early * DRAFT + PREFILL
    decode = later * DRAFT + verifies * VERIFY
    return {"ttft": ttft, "decode": decode, "draft": later * DRAFT, "verify": verifies * VERIFY,
            "first_draft": early * DRAFT, "rounds": verifies + 1}


@pytest.mark.parametrize("scale", [0.0, 0.005, None])  # a perfect draft, a near one, the built-in random one
def test_assisted_phases_are_exact_on_the_virtual_clock(virtual_clock: VirtualClock, scale: float | None) -> None:
    model, _ = load_tiny("tiny-llama")
    draft = load_tiny("tiny-llama-draft")[0] if scale is None else nudged_copy(model, scale)
    inputs = tiny_inputs("tiny-llama", prompt="abc abc abc abc")
    log: list[str] = []
    with delays(model, draft, virtual_clock, log), transformers_matches() as matches:
        m = phasetime.measure(model, inputs, assistant_model=draft, max_new_tokens=12, min_new_tokens=12)
    want = expected(log)
    assert m.decoding == "assisted" and m.output_tokens == 12
    assert len(m.rounds) == want["rounds"] == len(matches)
    assert [r.accepted for r in m.rounds] == matches  # transformers' own acceptance, round by round
    assert m.prefill_ms == pytest.approx(PREFILL)
    assert m.ttft_ms == pytest.approx(want["ttft"])
    assert m.decode_ms == pytest.approx(want["decode"])
    assert m.tpot_ms == pytest.approx(want["decode"] / 11)
    assert (m.draft_ms, m.verify_ms, m.first_draft_ms) == pytest.approx((want["draft"], want["verify"], want["first_draft"]))
    assert m.total_ms == pytest.approx(want["ttft"] + want["decode"])
    assert sum(r.draft_forwards for r in m.rounds) == log.count("D")
    assert sum(r.tokens for r in m.rounds) == 12
    # tokens of one round are ready together: the hand-made ready times from the test's log and
    # transformers' matches (round r adds matches[r] + 1 tokens when its verify forward is done)
    ready, now, drafts = [], 0.0, 0
    for who in log:
        if who == "D":
            drafts += 1
            continue
        now += drafts * DRAFT + (PREFILL if not ready else VERIFY)
        ready.extend([now] * (matches[len(set(ready))] + 1))
        drafts = 0
    assert list(m.ready_ms) == pytest.approx(ready[:12])
    assert list(m.itl_ms) == pytest.approx([b - a for a, b in zip(ready, ready[1:12])])
    distinct = sorted(set(ready))
    assert list(m.round_gaps_ms) == pytest.approx([b - a for a, b in zip(distinct, distinct[1:])])
    for r in m.rounds[1:]:
        assert r.verify_ms == pytest.approx(VERIFY) and r.draft_ms == pytest.approx(r.draft_forwards * DRAFT)
    if scale == 0.0:
        assert m.acceptance_rate == 1.0 and m.tokens_per_round is not None and m.tokens_per_round > 3
    if scale == 0.005:
        assert 0 < m.accepted_tokens < m.proposed_tokens  # some candidates taken, some not


def test_assisted_tokens_equal_generate_without_the_probe() -> None:
    model, _ = load_tiny("tiny-llama")
    draft = nudged_copy(model, 0.005)
    inputs = tiny_inputs("tiny-llama", prompt="abc abc abc abc")
    m = phasetime.measure(model, inputs, assistant_model=draft, max_new_tokens=10, min_new_tokens=10)
    plain = model.generate(**inputs, assistant_model=draft, max_new_tokens=10, min_new_tokens=10)
    greedy = model.generate(**inputs, max_new_tokens=10, min_new_tokens=10)
    assert torch.equal(m.output_ids, plain) and torch.equal(m.output_ids, greedy)
    assert "generate" not in vars(model) and "_get_candidate_generator" not in vars(model)
    assert not draft._forward_hooks and not draft._forward_pre_hooks  # the draft's hooks lived for the call only


def test_assisted_phases_are_lower_bounds_on_the_real_clock() -> None:
    model, _ = load_tiny("tiny-llama")
    draft = nudged_copy(model, 0.005)
    log: list[str] = []
    with delays(model, draft, None, log):
        m = phasetime.measure(model, tiny_inputs("tiny-llama", prompt="abc abc abc"), assistant_model=draft,
                              max_new_tokens=8, min_new_tokens=8)
    want = expected(log)
    assert m.prefill_ms >= PREFILL and m.verify_ms >= want["verify"] and m.draft_ms >= want["draft"]
    assert m.decode_ms >= want["decode"] and m.ttft_ms is not None and m.ttft_ms >= want["ttft"]
    assert m.other_ms == pytest.approx(m.setup_ms + m.handoff_ms + m.first_token_ms + m.first_draft_ms, abs=1e-6)


def test_a_vlm_with_a_text_draft_times_vision_as_vision(virtual_clock: VirtualClock) -> None:
    model, _ = load_tiny("tiny-llava")
    draft, _ = load_tiny("tiny-llava-draft")
    inputs = tiny_inputs("tiny-llava")
    discover(model, inputs)
    log: list[str] = []
    with delays(model, draft, virtual_clock, log):
        m = phasetime.measure(model, inputs, assistant_model=draft, max_new_tokens=6, min_new_tokens=6)
    want = expected(log, vision=VISION)
    assert m.vision_ms == pytest.approx(VISION) and m.prefill_ms == pytest.approx(PREFILL)
    assert m.ttft_ms == pytest.approx(want["ttft"]) and m.decode_ms == pytest.approx(want["decode"])
    assert m.output_tokens == 6 and m.decoding == "assisted"


def test_prompt_lookup_times_the_search_as_its_own_part(virtual_clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    search = PromptLookupCandidateGenerator.get_candidates

    def slow_search(self: Any, input_ids: Any, **kwargs: Any) -> Any:
        virtual_clock.advance(SEARCH)
        return search(self, input_ids, **kwargs)

    monkeypatch.setattr(PromptLookupCandidateGenerator, "get_candidates", slow_search)
    model, _ = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama", prompt="the cat sat on the mat, the cat sat on the mat, the cat")
    log: list[str] = []
    with delays(model, None, virtual_clock, log), transformers_matches() as matches:
        m = phasetime.measure(model, inputs, prompt_lookup_num_tokens=3, max_new_tokens=10, min_new_tokens=10)
    rounds = log.count("T")
    assert m.decoding == "prompt_lookup" and len(m.rounds) == rounds == len(matches)
    assert [r.accepted for r in m.rounds] == matches
    assert m.first_draft_ms == pytest.approx(SEARCH) and m.draft_ms == pytest.approx(SEARCH * (rounds - 1))
    assert m.verify_ms == pytest.approx(VERIFY * (rounds - 1))
    assert m.decode_ms == pytest.approx((SEARCH + VERIFY) * (rounds - 1))
    assert m.ttft_ms == pytest.approx(SEARCH + PREFILL)
    assert all(r.draft_forwards == 0 for r in m.rounds)
    plain = model.generate(**inputs, prompt_lookup_num_tokens=3, max_new_tokens=10, min_new_tokens=10)
    assert torch.equal(m.output_ids, plain)


def test_beam_search_on_a_vlm_times_vision_and_every_step(virtual_clock: VirtualClock) -> None:
    model, _ = load_tiny("tiny-llava")
    inputs = tiny_inputs("tiny-llava")
    discover(model, inputs)
    log: list[str] = []
    with delays(model, None, virtual_clock, log):
        m = phasetime.measure(model, inputs, num_beams=2, max_new_tokens=5, min_new_tokens=5)
    assert (m.decoding, m.num_beams, m.output_tokens) == ("beam_search", 2, 5)
    assert m.vision_ms == pytest.approx(VISION) and m.prefill_ms == pytest.approx(PREFILL)
    assert m.ttft_ms == pytest.approx(VISION + PREFILL) and m.decode_ms == pytest.approx(VERIFY * (log.count("T") - 1))
    assert torch.equal(m.output_ids, model.generate(**inputs, num_beams=2, max_new_tokens=5, min_new_tokens=5))


def test_speculative_sampling_is_timed_in_rounds(virtual_clock: VirtualClock) -> None:
    model, _ = load_tiny("tiny-llama")
    draft = nudged_copy(model, 0.005)
    log: list[str] = []
    torch.manual_seed(0)
    with delays(model, draft, virtual_clock, log):
        m = phasetime.measure(model, tiny_inputs("tiny-llama"), assistant_model=draft, do_sample=True,
                              max_new_tokens=8, min_new_tokens=8)
    want = expected(log)
    assert m.decoding == "assisted" and sum(r.tokens for r in m.rounds) == 8 and len(m.rounds) == want["rounds"]
    assert m.decode_ms == pytest.approx(want["decode"]) and m.ttft_ms == pytest.approx(want["ttft"])


@pytest.mark.parametrize("returned", [1, 2])
def test_beam_search_times_every_step(virtual_clock: VirtualClock, returned: int) -> None:
    model, _ = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama", batch_size=2)
    log: list[str] = []
    kwargs = dict(num_beams=3, num_return_sequences=returned, max_new_tokens=7, min_new_tokens=7)
    with delays(model, None, virtual_clock, log):
        m = phasetime.measure(model, inputs, **kwargs)
    steps = log.count("T")
    assert m.decoding == "beam_search" and m.num_beams == 3
    assert m.batch_size == 2 * returned and all(s.output_tokens == 7 for s in m.sequences)
    assert m.prefill_ms == pytest.approx(PREFILL) and m.ttft_ms == pytest.approx(PREFILL)
    assert m.decode_steps == steps - 1 == 6
    assert m.decode_ms == pytest.approx(VERIFY * 6)
    assert all(s.tpot_ms == pytest.approx(VERIFY) for s in m.sequences)
    assert torch.equal(m.output_ids, model.generate(**inputs, **kwargs))


def test_unknown_candidate_generators_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.generation import candidate_generator as cg

    class MyGenerator(cg.PromptLookupCandidateGenerator):
        pass

    model, _ = load_tiny("tiny-llama")
    original = type(model)._get_candidate_generator

    def mine(self: Any, *args: Any, **kwargs: Any) -> Any:
        generator = original(self, *args, **kwargs)
        generator.__class__ = MyGenerator
        return generator

    monkeypatch.setattr(type(model), "_get_candidate_generator", mine)
    with pytest.raises(UnsupportedGeneration, match="MyGenerator"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), prompt_lookup_num_tokens=2, max_new_tokens=3)
    assert "_get_candidate_generator" not in vars(model)


def test_the_subtract_method_refuses_assisted_decoding() -> None:
    model, _ = load_tiny("tiny-llama")
    with pytest.raises(UnsupportedGeneration, match="subtract method"):
        phasetime.measure(model, tiny_inputs("tiny-llama"), method="subtract", prompt_lookup_num_tokens=2,
                          max_new_tokens=3)


def _decoding_experiment(**overrides: Any) -> Any:
    from phasetime.experiments.plan.spec import parse_experiment

    data = {"name": "decoding", "models": ["tiny-llama"], "order": "grid", "repeats": 2, "warmup": 1,
            "inputs": {"kind": "synthetic", "prompt": "abc abc abc abc"},
            "sweep": {"max_new_tokens": [5], "generation": [{}, {"prompt_lookup_num_tokens": 2},
                                                               {"draft": "tiny-llama-draft"}, {"num_beams": 2}]}}
    data.update(overrides)
    return parse_experiment(data)


def test_a_run_records_every_decoding_with_its_rounds(tmp_path: Any) -> None:
    import numpy as np

    from phasetime.analysis.checks import failed, run_checks
    from phasetime.analysis.report import build_report
    from phasetime.experiments.running.run import run_experiment
    from phasetime.results import read, verify

    out = tmp_path / "run"
    result = run_experiment(_decoding_experiment(), out)
    assert (result.done, result.failed) == (4, 0)
    inventory = verify(out)
    assert not inventory.problems and len(inventory.markers) == 4
    table = read(out)
    rows = table.to_pylist()
    by = {r["decoding"]: r for r in rows}
    assert set(by) == {"greedy", "prompt_lookup", "assisted", "beam_search"}
    assert by["assisted"]["draft"] == "tiny-llama-draft" and by["greedy"]["draft"] is None
    assert by["beam_search"]["num_beams"] == 2 and by["beam_search"]["rounds"] is None
    for mode in ("assisted", "prompt_lookup"):
        row = by[mode]
        assert row["rounds"] == len(row["round_tokens"]) >= 1 and sum(row["round_tokens"]) == 5
        assert row["accepted_tokens"] <= row["proposed_tokens"] and row["draft_ms"] >= 0
        assert np.isclose(row["call_decode_ms"], row["decode_ms"]) and row["tpot_ms"] is not None
    assisted = [r for r in rows if r["decoding"] == "assisted"]
    assert len(assisted) == 2 and all(sum(r["round_draft_forwards"]) >= r["rounds"] - 1 for r in assisted)
    assert not [c.check for c in failed(run_checks(table, None)) if c.check in ("decode_present", "phases_within_total")]
    page, figures = build_report(table, None)
    assert "fig-rounds" in figures and "draft" in page
    from phasetime.results.trace import trace

    call = next(r["call_id"] for r in rows if r["decoding"] == "assisted")
    names = [e["name"] for e in trace(table, [call])["traceEvents"]]
    row = next(r for r in rows if r["call_id"] == call)
    assert sum(n.startswith("draft, round") for n in names) == row["rounds"]
    assert sum(n.startswith("verify, round") for n in names) == row["rounds"] - 1


def test_run_json_keeps_the_draft_and_resume_reloads_it(tmp_path: Any) -> None:
    from phasetime.experiments.running.run import run_experiment

    exp = _decoding_experiment(sweep={"max_new_tokens": [3, 4], "generation": [{"draft": "tiny-llama-draft"}]},
                               repeats=1, warmup=0)
    out = tmp_path / "run"
    run_experiment(exp, out)
    again = run_experiment(exp, out, resume=True)
    assert (again.skipped, again.done) == (2, 0)


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"generation": [{"draft": "tiny-llama-draft", "num_beams": 2}]}, "not with beams"),
        ({"generation": [{"draft": "tiny-llama-draft"}], "batch_size": [2]}, "one prompt per call"),
        ({"generation": [{"prompt_lookup_num_tokens": 2}], "method": ["both"]}, "need method: \\[direct\\]"),
        ({"generation": [{"assistant_model": "tiny-llama-draft"}]}, "draft: MODEL"),
        ({"generation": [{"draft": ""}]}, "must be a model"),
        ({"generation": [{"assistant_early_exit": 1}]}, "assistant_early_exit"),
    ],
)
def test_experiment_files_refuse_what_cannot_be_timed(sweep: dict, message: str) -> None:
    from phasetime.experiments.plan.spec import ExperimentError

    with pytest.raises(ExperimentError, match=message):
        _decoding_experiment(sweep={"max_new_tokens": [3], **sweep})


def test_cost_and_energy_are_refused_with_rounds_and_beams() -> None:
    from phasetime.experiments.plan.spec import ExperimentError

    with pytest.raises(ExperimentError, match="one token per forward"):
        _decoding_experiment(resources={"cost": True})


def test_an_unknown_draft_is_named_before_anything_runs(tmp_path: Any) -> None:
    from phasetime.experiments.running.run import RunError, run_experiment

    exp = _decoding_experiment(sweep={"max_new_tokens": [3], "generation": [{"draft": "tiny-nope"}]})
    with pytest.raises(RunError, match=r"sweep.generation\[0\].draft"):
        run_experiment(exp, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["assisted", "lookup"])
def test_the_example_experiments_run(tmp_path: Any, name: str) -> None:
    import os

    from conftest import EXAMPLES
    from phasetime.experiments.running.run import run_experiment
    from phasetime.experiments.plan.spec import load_experiment
    from phasetime.results import read

    exp = load_experiment(os.path.join(EXAMPLES, f"{name}.yaml"))
    short = exp.model_copy(update={"repeats": 1, "warmup": 0,
                                   "sweep": exp.sweep.model_copy(update={"max_new_tokens": [4]})})
    result = run_experiment(short, tmp_path / name)
    assert (result.done, result.failed) == (len(exp.sweep.generation), 0), result.errors
    want = {"assisted": {"greedy", "assisted", "beam_search"}, "lookup": {"greedy", "prompt_lookup", "assisted",
                                                                          "beam_search"}}[name]
    assert set(read(tmp_path / name).column("decoding").to_pylist()) == want


def test_the_cli_runs_a_draft_prompt_lookup_and_beams(tmp_path: Any) -> None:
    from conftest import run_cli

    for model, flag, value, mode in (("tiny-llava", "--draft", "tiny-llava-draft", "assisted"),
                                     ("tiny-llama", "--prompt-lookup", "2", "prompt_lookup"),
                                     ("tiny-llava", "--num-beams", "2", "beam_search")):
        out = tmp_path / mode
        result = run_cli("run", "--model", model, flag, value, "--max-new-tokens", "3", "--repeats", "1",
                         "--warmup", "0", "--device", "cpu", "--out", str(out), "--quiet")
        assert result.exit_code == 0, result
        from phasetime.results import read

        assert set(read(out).column("decoding").to_pylist()) == {mode}


def test_beams_given_through_a_generation_config_are_read_as_beams() -> None:
    """One reader of generation options (the call's keyword, else its generation_config, else the
    model's): 0.3 read num_beams = 1 here and timed the search as one token per step."""
    import copy

    model, _ = load_tiny("tiny-llama")
    config = copy.deepcopy(model.generation_config)
    config.update(num_beams=3, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    m = phasetime.measure(model, tiny_inputs("tiny-llama"), generation_config=config)
    assert (m.decoding, m.num_beams, m.output_tokens) == ("beam_search", 3, 4)
    plain = model.generate(**tiny_inputs("tiny-llama"), generation_config=config)
    assert torch.equal(m.output_ids, plain)
