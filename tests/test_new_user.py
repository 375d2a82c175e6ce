"""What a new user hit on 0.2.0 (issue 15, cases 3-11): each is now a clear one-line error
before anything is written, or the right behaviour."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import phasetime
import phasetime.sensors.roof as roof_module
from conftest import load_tiny, run_cli, tiny_inputs
from phasetime.core.errors import UnsupportedGeneration, UsageError
from phasetime.sensors.roof import Roof, cached_roof
from phasetime.experiments import models
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.data.inputs import load_image
from phasetime.experiments.plan.spec import ExperimentError, load_experiment, parse_experiment
from phasetime.experiments.plan.checks import MAX_CALLS, RunError, check_size, prepare
from phasetime.results import StoreError

pytestmark = pytest.mark.anyversion


def vqa(**extra):
    return parse_experiment({"name": "v", "models": ["tiny-llava"], "repeats": 1, "warmup": 0,
                             "inputs": {"kind": "synthetic-vqa", "samples": 3, "image_size": 32}, **extra})


# 3 -------------------------------------------------------------------------------------
def test_a_batch_larger_than_the_data_set_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="batch_size: 8 is larger than the data set, which has 3"):
        run_experiment(vqa(sweep={"batch_size": [8], "max_new_tokens": [1]}), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    prepare(vqa(sweep={"batch_size": [3], "max_new_tokens": [1]}))  # the whole data set in one batch is fine


# 4 -------------------------------------------------------------------------------------
def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path: Path) -> None:
    file = tmp_path / "e.yaml"
    file.write_text("name: e\nmodels: [tiny-llama]\nrepeats: 1\nsweep:\n  max_new_tokens: [1]\nrepeats: 50\n")
    with pytest.raises(ExperimentError, match=r"key 'repeats' is given twice \(lines 3 and 6\)"):
        load_experiment(file)
    nested = tmp_path / "n.yaml"
    nested.write_text("name: n\nmodels: [tiny-llama]\nsweep:\n  max_new_tokens: [1]\n  max_new_tokens: [2]\n")
    result = run_cli("run", nested, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "max_new_tokens' is given twice" in result.output
    assert not (tmp_path / "o").exists()


# 5 -------------------------------------------------------------------------------------
def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    fed = np.asarray(load_image(tmp_path / "a.png"))
    want = np.round(ramp / 257.0)  # 65535 -> 255, by hand
    assert fed.shape == (64, 64, 3) and np.abs(fed[..., 0] - want).max() <= 1
    assert (fed == 255).mean() < 0.01  # PIL's own conversion made 99.6% white


def test_a_float_tiff_in_0_1_is_scaled_not_black(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "f.tiff")
    fed = np.asarray(load_image(tmp_path / "f.tiff"))
    assert np.abs(fed[..., 1] - np.round(ramp * 255)).max() <= 1


def test_a_float_image_of_unknown_scale_is_refused_with_its_name(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), -3.0, dtype=np.float32)).save(tmp_path / "neg.tiff")
    with pytest.raises(UsageError, match="neg.tiff.*negative"):
        load_image(tmp_path / "neg.tiff")


def test_exif_orientation_is_applied_as_hugging_face_load_image_does(tmp_path: Path) -> None:
    from transformers.image_utils import load_image as hf_load_image

    img = Image.new("RGB", (400, 100), (200, 10, 10))
    img.paste((10, 200, 10), (0, 0, 50, 100))  # a green band on the left, to see the rotation
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    ours, theirs = load_image(tmp_path / "photo.jpg"), hf_load_image(str(tmp_path / "photo.jpg"))
    assert ours.size == (100, 400) == theirs.size
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


# 6 -------------------------------------------------------------------------------------
def test_a_truncated_hf_arrow_file_is_one_line(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"question": ["q1", "q2"], "answers": [["a"], ["b"]]}).save_to_disk(str(folder))
    arrow = next(folder.glob("*.arrow"))
    for content in (arrow.read_bytes()[:100], b""):
        arrow.write_bytes(content)
        exp = parse_experiment({"name": "h", "models": ["tiny-llama"], "inputs": {"kind": "hf", "path": str(folder)}})
        with pytest.raises(RunError, match="cannot load data set"):
            prepare(exp)


def test_a_full_disk_when_taking_the_lock_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if b"pid" in data:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    exp = parse_experiment({"name": "l", "models": ["tiny-llama"], "sweep": {"max_new_tokens": [1]}})
    with pytest.raises(StoreError, match="cannot lock .*No space left on device"):
        run_experiment(exp, tmp_path / "out")


def test_a_truncated_config_json_is_refused_before_the_directory_is_made(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "hidden_si')
    with pytest.raises(models.ModelLoadError, match="cannot read .*config.json"):
        models.check_name(str(model))
    result = run_cli("run", "--model", model, "--max-new-tokens", "1", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "config.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


# 7 -------------------------------------------------------------------------------------
class FakePipeline:
    task = "image-text-to-text"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, *args, **kwargs):
        return []


def test_measure_names_what_it_was_given_instead_of_a_model() -> None:
    model, processor = load_tiny("tiny-llama")
    inputs = tiny_inputs("tiny-llama")
    for wrong, words in ((FakePipeline(model), "pipeline.model"), (processor, "processor"),
                         (torch.nn.Linear(2, 2), "has no generate")):
        with pytest.raises(UsageError, match=words):
            phasetime.measure(wrong, inputs, max_new_tokens=2)
        with pytest.raises(UsageError, match=words):
            phasetime.Probe(wrong)
    with pytest.raises(UsageError, match="inputs must be the dict"):
        phasetime.measure(model, [1, 2, 3], max_new_tokens=2)


def test_image_tokens_without_pixels_are_refused_not_timed_as_text() -> None:
    model, _ = load_tiny("tiny-llava")
    inputs = dict(tiny_inputs("tiny-llava"))
    inputs.pop("pixel_values")
    with pytest.raises(UnsupportedGeneration, match="image placeholder token.*no media input"):
        phasetime.measure(model, inputs, max_new_tokens=2, min_new_tokens=2)


# 8 -------------------------------------------------------------------------------------
def test_absurd_sizes_are_refused_unless_confirmed(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="warmup"):
        parse_experiment({"name": "w", "models": ["tiny-llama"], "warmup": 10000})
    huge = parse_experiment({"name": "h", "models": ["tiny-llama"], "sweep": {
        "max_new_tokens": list(range(1, 101)), "batch_size": list(range(1, 101)), "image_size": list(range(8, 108))}})
    with pytest.raises(RunError, match="1,000,000 cells"):
        run_experiment(huge, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    many = parse_experiment({"name": "m", "models": ["tiny-llama"], "repeats": 100_000,
                             "sweep": {"max_new_tokens": [1, 2, 3]}})
    with pytest.raises(RunError, match=f"300,003 generate\\(\\) calls.*more than {MAX_CALLS:,}.*--yes"):
        prepare(many)
    assert len(prepare(many, yes=True).cells) == 3
    assert check_size(vqa(sweep={"batch_size": [1, 2], "max_new_tokens": [1]}), prepare(vqa()).samples) == 3 + 2


# 9 -------------------------------------------------------------------------------------
def test_an_unreachable_hub_is_detected_with_the_offline_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    assert models.hub_unreachable(timeout_s=2.0) is not None
    with pytest.raises(models.ModelLoadError, match="the hub does not answer.*HF_HUB_OFFLINE=1"):
        models.check_name("some-org/some-model")


# 10 ------------------------------------------------------------------------------------
def fake_measure(values: list[float]):
    rounds = iter(values)

    def measure(device, dtype="float32"):
        v = next(rounds)
        return Roof("cpu test", dtype, v, v / 10, "measured")

    return measure


def test_roof_reads_without_measure_and_refuses_a_noisy_measurement(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASETIME_CACHE", str(tmp_path))

    def never(*args, **kwargs):
        raise AssertionError("phasetime roof measured without --measure")

    monkeypatch.setattr(roof_module, "measure", never)
    result = run_cli("roof", "--device", "cpu")
    assert result.exit_code == 0 and "none cached" in result.output and not (tmp_path / "roof.json").exists()
    monkeypatch.setattr(roof_module, "measure", fake_measure([100e9, 54e9, 19e9]))  # a busy machine
    result = run_cli("roof", "--device", "cpu", "--measure")
    assert result.exit_code == 2 and "disagree by 81%" in result.output and not (tmp_path / "roof.json").exists()
    monkeypatch.setattr(roof_module, "measure", fake_measure([124e9, 121e9, 123e9]))
    result = run_cli("roof", "--device", "cpu", "--measure")
    assert result.exit_code == 0 and "0.124 TFLOP/s" in result.output
    stored = cached_roof(torch.device("cpu"), "float32")
    assert stored is not None and stored.flops_per_s == 124e9 and stored.spread == round(3 / 124, 4)
    assert stored.measured_at is not None and stored.measured_at.startswith("20")
    assert "load_average" in json.loads((tmp_path / "roof.json").read_text()).popitem()[1]
    monkeypatch.setattr(roof_module, "measure", never)
    assert "cached" in run_cli("roof", "--device", "cpu").output


# 11 ------------------------------------------------------------------------------------
def test_help_shows_flags_without_a_value_type() -> None:
    for args in (["--help"], ["run", "--help"], ["check", "--help"]):
        result = run_cli(*args)
        assert result.exit_code == 0 and "<bool>" not in result.output and "--" in result.output
