"""Experiment files: validation messages, grid expansion, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phasetime.experiments.plan.grid import expand
from phasetime.experiments.plan.quick import quick_experiment
from phasetime.experiments.plan.spec import ExperimentError, load_experiment, parse_experiment

EXAMPLES = Path(__file__).parent.parent / "examples"


def errors_of(data: dict) -> str:
    with pytest.raises(ExperimentError) as info:
        parse_experiment(data, "exp.yaml")
    return str(info.value)


def test_problems_are_reported_with_their_path() -> None:
    message = errors_of({
        "name": "x",
        "models": [{"name": "tiny-llava", "dtyp": "float32"}],
        "sweep": {"max_new_tokens": [4, 0], "batch_size": "two"},
        "repeats": 0,
    })
    assert message.startswith("exp.yaml: 4 problem(s)")
    assert "models[0].dtyp: unknown key" in message
    assert "sweep.max_new_tokens[1]: Input should be greater than or equal to 1" in message
    assert "sweep.batch_size: Input should be a valid list" in message
    assert "repeats: Input should be greater than or equal to 1" in message


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"models": ["tiny-llava"]}, "name: Field required"),
        ({"name": "bad name", "models": ["m"]}, "name: String should match pattern"),
        ({"name": "x", "models": []}, "models: List should have at least 1 item"),
        ({"name": "x", "models": [{"name": "m", "dtype": "int3"}]}, "models[0].dtype: Input should be 'auto', 'float32', 'float16' or 'bfloat16'"),
        ({"name": "x", "models": ["m"], "inputs": {"kind": "manifest"}}, "inputs: a 'manifest' data set needs a path"),
        ({"name": "x", "models": ["m"], "inputs": {"kind": "csv"}}, "inputs: Input tag 'csv' found using 'kind'"),
        ({"name": "x", "models": ["m"], "metric": "vqa"}, "a metric needs a data set"),
        ({"name": "x", "models": ["m"], "metric": "bleu"}, "metric: Input should be"),
        ({"name": "x", "models": ["m"], "sweep": {"generation": [{"max_new_tokens": 3}]}}, "cannot be set here"),
        ({"name": "x", "models": ["m"], "sweep": {"max_pixels": [1], "max_visual_tokens": [1]}}, "not both"),
        ({"name": "x", "models": ["m"], "inputs": {"kind": "synthetic", "images": -1}}, "inputs.images"),
    ],
)
def test_validation_messages(data: dict, expected: str) -> None:
    assert expected in errors_of(data)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [tiny-llava\nrepeats: 2\n")
    with pytest.raises(ExperimentError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_experiment(bad)
    with pytest.raises(ExperimentError, match="cannot read"):
        load_experiment(tmp_path / "missing.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ExperimentError, match="expected a mapping"):
        load_experiment(top)


def test_grid_expansion_order_and_parameters() -> None:
    exp = parse_experiment({
        "name": "g", "models": ["tiny-llava", "tiny-qwen2-vl"],
        "sweep": {"max_new_tokens": [2, 8], "batch_size": [1, 4], "method": ["both"],
                  "generation": [{}, {"do_sample": True, "temperature": 0.7}]},
    })
    cells = expand(exp)
    assert len(cells) == 2 * 2 * 2 * 2 * 2
    assert [c.index for c in cells] == list(range(32))
    assert [c.params["model"] for c in cells[:16]] == ["tiny-llava"] * 16  # a model's cells are contiguous
    assert [c.params["max_new_tokens"] for c in cells[:4]] == [2, 8, 2, 8]  # output length innermost
    assert {c.params["method"] for c in cells} == {"direct", "subtract"}
    assert cells[1].generate_kwargs == {"max_new_tokens": 8, "min_new_tokens": 8}
    assert cells[3].generate_kwargs == {"do_sample": True, "temperature": 0.7, "max_new_tokens": 8, "min_new_tokens": 8}
    assert len({c.key for c in cells}) == 32 and cells[0].key == expand(exp)[0].key


def test_min_new_tokens_defaults() -> None:
    latency = parse_experiment({"name": "l", "models": ["m"], "sweep": {"max_new_tokens": [5]}})
    assert expand(latency)[0].params["min_new_tokens"] == 5  # exact lengths when timing
    scored = parse_experiment({"name": "a", "models": ["m"], "inputs": {"kind": "synthetic-vqa"}, "metric": "vqa",
                               "sweep": {"max_new_tokens": [5]}})
    assert expand(scored)[0].params["min_new_tokens"] == 0  # answers may stop at EOS
    told = parse_experiment({"name": "t", "models": ["m"], "min_new_tokens": 4, "sweep": {"max_new_tokens": [5, 20]}})
    assert [c.params["min_new_tokens"] for c in expand(told)] == [4, 4]
    with pytest.raises(ExperimentError, match="min_new_tokens 9 is more than max_new_tokens 5"):
        parse_experiment({"name": "t", "models": ["m"], "min_new_tokens": 9, "sweep": {"max_new_tokens": [5, 20]}})


def test_quick_experiment_matches_the_cli_defaults() -> None:
    exp = quick_experiment()
    assert [c.params["max_new_tokens"] for c in expand(exp)] == [1, 2, 4, 8, 16, 32]
    assert exp.repeats == 5 and exp.warmup == 2 and exp.models[0].name == "tiny-llava"
    assert quick_experiment(method="both").sweep.method == ["both"]


@pytest.mark.parametrize("name", ["latency", "motivation", "accuracy", "assisted", "lookup"])
def test_examples_are_valid(name: str) -> None:
    exp = load_experiment(EXAMPLES / f"{name}.yaml")
    assert exp.name == name and expand(exp)
    json.dumps(exp.model_dump(mode="json"))  # what run.json stores


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"name: x\nmodels: [tiny-llama]\ndescription: \xff\xfe\n", "not UTF-8"),
        (b"name: x\nmodels: " + b"[" * 1200 + b"]" * 1200 + b"\n", "nested too deeply"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {generation: [{num_beams: '4'}]}\n", "num_beams='4' must be an integer"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {generation: [{top_k: a}]}\n", "top_k='a' must be an integer"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {generation: [{when: 2024-01-01}]}\n", "values must be numbers"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {generation: [{tempreature: 0.5}]}\n", "'tempreature' is not a generate() option"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {generation: [{temperature: -1.0, do_sample: true}]}\n", "temperature=-1.0 must be > 0.0"),
        (b"name: x\nmodels: [{name: tiny-llama, device: gpu}]\n", "unknown device 'gpu'"),
        (b"name: x\nmodels: [{name: tiny-llama, attn_implementation: bogus}]\n", "unknown attention implementation 'bogus'"),
        (b"name: x\nmodels: [tiny-llama]\ninputs: {kind: synthetic, images: 10000000000}\n", "inputs.images: Input should be less than or equal to 64"),
        (b"name: x\nmodels: [tiny-llama]\ninputs: {kind: synthetic, image_size: 2147483648}\n", "less than or equal to 8192"),
        (b"name: x\nmodels: [tiny-llama]\nseed: 1e20\n", "seed"),
        (b"name: x\nmodels: [tiny-llama]\ninputs: {kind: manifest, path: \"a\\0b\"}\n", "NUL byte"),
        (b"name: x\nmodels: [tiny-llama]\nsweep: {max_new_tokens: [99999999999999999999]}\n", "less than or equal to 1000000"),
        (b"name: x\nmodels: [tiny-llama]\nexecutor: slurm\n", "executor.kind"),
    ],
)
def test_bad_values_are_listed_not_raised(tmp_path: Path, text: bytes, expected: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert expected in str(info.value), str(info.value)


def test_cell_keys_change_with_anything_that_shapes_the_rows() -> None:
    base = {"name": "k", "models": ["tiny-llama"], "sweep": {"max_new_tokens": [2]}}
    key = expand(parse_experiment(base))[0].key
    for change in ({"repeats": 5}, {"seed": 1}, {"prompt": {"pre": "Q:"}}, {"threads": 2}, {"warmup": 0}):
        assert expand(parse_experiment({**base, **change}))[0].key != key, change
    for same in ({"name": "other"}, {"order": "grid"}, {"executor": "ray"}, {"description": "why"}):
        assert expand(parse_experiment({**base, **same}))[0].key == key, same
