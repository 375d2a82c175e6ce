"""Fuzzing: generated experiment files and damaged results directories get a clean error or a
correct answer, never a traceback (seeded, a few hundred examples). Deep nesting has its
own tests (test_experiment, test_datasets): PyYAML takes over a second to refuse it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasetime.core.errors import PhasetimeError
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.spec import load_experiment, parse_experiment
from phasetime.experiments.plan.checks import prepare
from phasetime.results import StoreError, read, verify
from phasetime.results.export import export

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values of every kind a YAML file can hold, extremes included.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.dates(),
    st.sampled_from(["tiny-llama", "tiny-llava", "auto", "cpu", "cuda", "gpu", "float32", "max", "ray", "\0", "x" * 300]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)
KEYS = {
    "top": ["name", "description", "models", "inputs", "prompt", "sweep", "metric", "min_new_tokens", "repeats",
            "warmup", "seed", "threads", "order", "executor", "unknown_key"],
    "sweep": ["max_new_tokens", "batch_size", "image_size", "max_pixels", "max_visual_tokens", "dtype",
              "attn_implementation", "method", "generation"],
    "inputs": ["kind", "prompt", "image", "image_size", "images", "path", "limit", "samples", "columns"],
    "generation": ["num_beams", "top_k", "temperature", "do_sample", "stop_strings", "eos_token_id", "whatever"],
}


@st.composite
def experiments(draw: st.DrawFn) -> dict:
    """Mostly-valid experiment files with some keys given wrong types or extreme values."""
    data: dict = {"name": "fuzz", "models": ["tiny-llama"], "sweep": {"max_new_tokens": [2]}, "repeats": 1,
                  "warmup": 0}
    for key in draw(st.lists(st.sampled_from(KEYS["top"]), max_size=3)):
        data[key] = draw(values)
    if draw(st.booleans()):
        sweep = dict(data["sweep"]) if isinstance(data.get("sweep"), dict) else {}
        for key in draw(st.lists(st.sampled_from(KEYS["sweep"]), max_size=2)):
            sweep[key] = draw(values)
        if draw(st.booleans()):
            sweep["generation"] = [{k: draw(values) for k in draw(st.lists(st.sampled_from(KEYS["generation"]),
                                                                           max_size=2))}]
        data["sweep"] = sweep
    if draw(st.booleans()):
        data["inputs"] = {k: draw(values) for k in draw(st.lists(st.sampled_from(KEYS["inputs"]), max_size=3))}
    return data


def _encode(data: dict, how: str) -> bytes:
    text = yaml.safe_dump(data, allow_unicode=True)
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "latin-1 bytes":
        return text.encode("utf-8") + b"\ndescription: caf\xe9\n"
    return text.encode("utf-8")


@FUZZ
@given(data=experiments(), how=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1 bytes"]))
def test_experiment_files_get_an_error_or_a_plan(tmp_path_factory: pytest.TempPathFactory, data: dict, how: str) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = folder / "exp.yaml"
    try:
        path.write_bytes(_encode(data, how))
    except yaml.representer.RepresenterError:
        return
    try:
        experiment = load_experiment(path)
        prepared = prepare(experiment)  # everything a run checks before it writes
    except PhasetimeError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
        return
    assert prepared.cells and prepared.samples
    json.dumps(experiment.model_dump(mode="json"))  # what run.json stores


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    exp = parse_experiment({"name": "f", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
                            "sweep": {"max_new_tokens": [1, 2, 3]}, "repeats": 2, "warmup": 0})
    out = tmp_path_factory.mktemp("fuzz") / "run"
    run_experiment(exp, out)
    return out, read(out).num_rows


DAMAGE = st.one_of(
    st.just(("delete", b"")),
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=4000).map(lambda n: n.to_bytes(2, "big"))),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("json"), values.map(lambda v: json.dumps(v, default=str).encode())),
)


@FUZZ
@given(picks=st.lists(st.tuples(st.integers(min_value=0, max_value=100), DAMAGE), min_size=1, max_size=3))
def test_damaged_directories_are_named_never_tracebacks(finished: tuple[Path, int], picks: list) -> None:
    source, rows = finished
    out = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(source, out)
    try:
        files = sorted(p for p in out.rglob("*") if p.is_file())
        for index, (how, payload) in picks:
            file = files[index % len(files)]
            if not file.exists():
                continue
            if how == "delete":
                file.unlink()
            elif how == "truncate":
                data = file.read_bytes()
                file.write_bytes(data[: int.from_bytes(payload, "big") % max(len(data), 1)])
            else:
                file.write_bytes(payload)
        inventory = verify(out)
        try:
            table = read(out)
        except StoreError as exc:
            assert inventory.problems or "no measurements" in str(exc)
            return
        # Read fine: then it is whole, or exactly the cells verify calls done and intact.
        assert table.num_rows == inventory.rows() and table.num_rows <= rows
        export(out, "csv", out.parent / "x.csv")
    except StoreError:
        pass  # e.g. "not a phasetime results directory": a clean error too
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
