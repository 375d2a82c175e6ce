"""Data set loaders and the synthetic VQA set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from phasetime.experiments.data.datasets import (
    BadSample, DatasetError, Sample, format_question, load_hf, load_llava, load_manifest,
)
from phasetime.experiments.data.synthetic import synthetic_vqa
from phasetime.experiments.data.scoring import score

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_manifest_jsonl_and_json_list(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    records = [
        {"id": 1, "image": "img/a.png", "question": "Q1?", "answers": "yes"},
        {"id": "b", "image": ["img/a.png", "img/a.png"], "question": "Q2?", "answers": ["x", "y"],
         "choices": ["x", "y"], "category": "mc"},
        {"id": "c", "question": "text only"},
    ]
    for path in (write_jsonl(tmp_path / "m.jsonl", records), tmp_path / "m.json"):
        if path.suffix == ".json":
            path.write_text(json.dumps(records))
        samples = load_manifest(path)
        assert [s.id for s in samples] == ["1", "b", "c"]
        assert samples[0].images == (tmp_path / "img" / "a.png",) and samples[0].answers == ("yes",)
        assert len(samples[1].images) == 2 and samples[1].choices == ("x", "y") and samples[1].category == "mc"
        assert samples[2].images == () and samples[2].answers == ()
        assert samples[0].load_images()[0].size == (8, 8)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": 1, "question": "q"}\n{"id": 1, "question": "q"}\n', r"m\.jsonl:2: duplicate id '1'"),
        ('{"id": 1}\n', r"m\.jsonl:1: missing 'question'"),
        ('{"id": 1, "question": "q"}\n{oops\n', r"m\.jsonl:2: invalid JSON"),
        ('{"id": 1, "question": "q", "answers": [{"a": 1}]}\n', "answers must be a string"),
        ("[1, 2]", r"m\.jsonl:1: expected an object"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_manifest(path)


def test_missing_image_names_the_sample(tmp_path: Path) -> None:
    samples = load_manifest(write_jsonl(tmp_path / "m.jsonl", [{"id": "s7", "image": "nope.png", "question": "q"}]))
    with pytest.raises(BadSample, match="sample 's7': image not found"):
        samples[0].load_images()


def test_llava_questions_with_answers(tmp_path: Path) -> None:
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": 10, "image": "a.jpg", "text": "What?", "category": "conv"},
        {"question_id": 11, "image": "b.jpg", "text": "Why?"},
    ])
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 10, "text": "a cat"}, {"question_id": 11, "answer": ["x", "y"]}])
    samples = load_llava(questions, answers, image_folder=tmp_path / "images")
    assert [(s.id, s.question, s.answers) for s in samples] == [("10", "What?", ("a cat",)), ("11", "Why?", ("x", "y"))]
    assert samples[0].images == (tmp_path / "images" / "a.jpg",) and samples[0].category == "conv"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"image": "a.jpg", "text": "?"}])
    with pytest.raises(DatasetError, match="missing 'question_id'"):
        load_llava(bad)


def test_hugging_face_dataset_on_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "qid": ["a", "b"], "img": [Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4))],
        "query": ["Q1", "Q2"], "label": [["x"], ["y", "z"]],
    })
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "ds"))
    samples = load_hf(tmp_path / "ds", {"id": "qid", "image": "img", "question": "query", "answers": "label"})
    assert [(s.id, s.question, s.answers) for s in samples] == [("a", "Q1", ("x",)), ("b", "Q2", ("y", "z"))]
    assert samples[1].load_images()[0].size == (4, 4)
    with pytest.raises(DatasetError, match="no column 'question'"):
        load_hf(tmp_path / "ds", {})
    with pytest.raises(DatasetError, match="no split 'train'"):
        load_hf(tmp_path / "ds", {"question": "query"}, split="train")


def test_synthetic_vqa_is_deterministic_and_answerable() -> None:
    a, b = synthetic_vqa(10, seed=1), synthetic_vqa(10, seed=1)
    assert [(s.question, s.answers) for s in a] == [(s.question, s.answers) for s in b]
    assert a[0].images[0].tobytes() == b[0].images[0].tobytes()
    assert {s.category for s in synthetic_vqa(25)} == {"color", "count", "presence", "position", "shape"}
    for s in synthetic_vqa(25):  # the reference answer scores 1 with the default metric
        assert score("vqa", s.answers[0], s.answers) == 1.0
    mc = synthetic_vqa(10, multiple_choice=True)
    for s in mc:
        assert s.choices and s.answers[0] in "ABCD"
        assert score("multiple_choice", s.answers[0], s.answers, s.choices) == 1.0


def test_question_formatting() -> None:
    s = Sample(id="1", question="Which?", choices=("cat", "dog"))
    assert format_question(s, "Look.", "Answer with the letter.") == "Look.\nWhich?\nA. cat\nB. dog\nAnswer with the letter."
    assert format_question(Sample(id="2", question=" Q ")) == "Q"


@pytest.mark.parametrize("content, message", [
    (b'{"id": "a", "question": "caf\xe9"}\n', "not UTF-8"),
    (b'{"id": "a", "question": ' + b"[" * 3000 + b"]" * 3000 + b"}\n", "nested too deeply"),
    (b"[" + b"[" * 3000 + b"]" * 3000 + b"]", "nested too deeply"),
    (b'{"id": "a"}\n', "missing 'question'"),
    (b"[1, 2]", "expected an object"),
])
def test_broken_manifests_are_one_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_manifest(path)
