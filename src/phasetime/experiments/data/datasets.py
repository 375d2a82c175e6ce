"""Data sets: the samples an experiment measures (and scores).

Four sources, one :class:`Sample` type:

* a local manifest: JSONL or a JSON list of ``{id, image, question, answers, choices?,
  category?}`` (``image`` a path relative to the manifest, or a list of them);
* LLaVA's eval question format: JSONL of ``{question_id, image, text, category?}`` with a
  separate answers file (JSONL of ``{question_id, text | answer | answers}``);
* a Hugging Face ``datasets`` data set already on disk (``load_from_disk`` or local
  json/csv/parquet files) with a column mapping;
* a synthetic VQA set drawn with Pillow (:mod:`.synthetic`), with exact answers and a
  multiple-choice variant, so accuracy runs work on a fresh machine.

Images are opened lazily (:meth:`Sample.load_images`); a missing or unreadable one raises
:class:`BadSample` naming the sample.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from ...core.errors import PhasetimeError, first_line
from .inputs import load_image, to_rgb


class BadSample(PhasetimeError, ValueError):
    """A sample that cannot be used (missing image, missing field); names the sample."""

    def __init__(self, sample_id: str, reason: str) -> None:
        super().__init__(f"sample {sample_id!r}: {reason}")
        self.sample_id = sample_id


class DatasetError(PhasetimeError, ValueError):
    """A data set file that cannot be read at all."""


@dataclass(frozen=True)
class Sample:
    """One question. ``images`` holds file paths or in-memory PIL images."""

    id: str
    question: str
    images: tuple[Any, ...] = ()
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    category: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def load_images(self) -> list[Image.Image]:
        out = []
        for image in self.images:
            try:
                out.append(to_rgb(image) if isinstance(image, Image.Image) else load_image(image))
            except ValueError as exc:
                raise BadSample(self.id, str(exc)) from None
        return out


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line or index, record) pairs of a JSONL file or a JSON list."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON: {exc}") from None
        except RecursionError:
            raise DatasetError(f"{path}: nested too deeply") from None
        if not isinstance(records, list):
            raise DatasetError(f"{path}: expected a JSON list of objects")
        pairs = list(enumerate(records, 1))
    else:
        pairs = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                pairs.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise DatasetError(f"{path}:{lineno}: nested too deeply") from None
    for where, record in pairs:
        if not isinstance(record, dict):
            raise DatasetError(f"{path}:{where}: expected an object, got {type(record).__name__}")
    return pairs


def _strings(value: Any, where: str, name: str) -> tuple[str, ...]:
    items = _as_tuple(value)
    if not all(isinstance(v, (str, int, float)) for v in items):
        raise DatasetError(f"{where}: {name} must be a string or a list of strings")
    return tuple(str(v) for v in items)


def load_manifest(path: str | Path) -> list[Sample]:
    """Samples of a JSONL / JSON-list manifest; image paths are relative to the manifest."""
    p = Path(path)
    samples, seen = [], set()
    for where, rec in _read_records(p):
        loc = f"{p}:{where}"
        for key in ("id", "question"):
            if key not in rec:
                raise DatasetError(f"{loc}: missing {key!r}")
        sample_id = str(rec["id"])
        if sample_id in seen:
            raise DatasetError(f"{loc}: duplicate id {sample_id!r}")
        seen.add(sample_id)
        images = tuple(p.parent / str(i) for i in _as_tuple(rec.get("image", rec.get("images"))))
        samples.append(
            Sample(
                id=sample_id,
                question=str(rec["question"]),
                images=images,
                answers=_strings(rec.get("answers", rec.get("answer")), loc, "answers"),
                choices=_strings(rec.get("choices"), loc, "choices"),
                category=None if rec.get("category") is None else str(rec["category"]),
            )
        )
    return samples


def load_llava(questions: str | Path, answers: str | Path | None = None, image_folder: str | Path | None = None) -> list[Sample]:
    """LLaVA eval questions (``question_id``, ``image``, ``text``) with an optional answers file."""
    qpath = Path(questions)
    folder = Path(image_folder) if image_folder is not None else qpath.parent
    refs: dict[str, tuple[str, ...]] = {}
    if answers is not None:
        apath = Path(answers)
        for where, rec in _read_records(apath):
            if "question_id" not in rec:
                raise DatasetError(f"{apath}:{where}: missing 'question_id'")
            value = rec.get("answers", rec.get("answer", rec.get("text")))
            refs[str(rec["question_id"])] = _strings(value, f"{apath}:{where}", "answer")
    samples = []
    for where, rec in _read_records(qpath):
        for key in ("question_id", "text"):
            if key not in rec:
                raise DatasetError(f"{qpath}:{where}: missing {key!r}")
        qid = str(rec["question_id"])
        samples.append(
            Sample(
                id=qid,
                question=str(rec["text"]),
                images=tuple(folder / str(i) for i in _as_tuple(rec.get("image"))),
                answers=refs.get(qid, ()),
                category=None if rec.get("category") is None else str(rec["category"]),
            )
        )
    return samples


HF_COLUMNS = ("id", "image", "question", "answers", "choices", "category")


def load_hf(path: str | Path, columns: dict[str, str], split: str | None = None) -> list[Sample]:
    """A ``datasets`` data set on disk (saved with ``save_to_disk``, or json/csv/parquet files).

    ``columns`` maps phasetime's fields (id, image, question, answers, choices, category)
    to the data set's column names; unmapped fields use their own name if present.
    """
    try:
        import datasets
    except ImportError:
        raise DatasetError("Hugging Face data sets need the 'datasets' package: pip install datasets") from None
    p = Path(path)
    try:
        if p.is_dir():
            ds: Any = datasets.load_from_disk(str(p))
        elif p.suffix in (".json", ".jsonl", ".csv", ".parquet"):
            kind = {".jsonl": "json"}.get(p.suffix, p.suffix[1:])
            ds = datasets.load_dataset(kind, data_files=str(p))
        else:
            raise DatasetError(f"{p}: not a saved data set directory nor a .json/.jsonl/.csv/.parquet file")
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets and Arrow raise many types for a damaged file
        raise DatasetError(f"cannot load data set {p}: {first_line(exc, 200)}") from None
    if isinstance(ds, datasets.DatasetDict):
        name = split or ("test" if "test" in ds else next(iter(ds)))
        if name not in ds:
            raise DatasetError(f"{p}: no split {name!r} (has {', '.join(ds)})")
        ds = ds[name]
    mapping = {f: columns.get(f, f) for f in HF_COLUMNS}
    for required in ("question",):
        if mapping[required] not in ds.column_names:
            raise DatasetError(f"{p}: no column {mapping[required]!r} for {required} (columns: {', '.join(ds.column_names)})")
    base = p if p.is_dir() else p.parent
    samples = []
    for index, rec in enumerate(ds):
        def get(f: str) -> Any:
            return rec.get(mapping[f])

        images = []
        for img in _as_tuple(get("image")):
            images.append(img if isinstance(img, Image.Image) else base / str(img))
        samples.append(
            Sample(
                id=str(get("id")) if get("id") is not None else str(index),
                question=str(get("question")),
                images=tuple(images),
                answers=_strings(get("answers"), f"{p} row {index}", "answers"),
                choices=_strings(get("choices"), f"{p} row {index}", "choices"),
                category=None if get("category") is None else str(get("category")),
            )
        )
    return samples


def format_question(sample: Sample, pre: str = "", post: str = "") -> str:
    """The text sent to the model: pre-prompt, question, lettered options, post-prompt."""
    parts = [pre.strip(), sample.question.strip()]
    if sample.choices:
        parts.append("\n".join(f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(sample.choices)))
    parts.append(post.strip())
    return "\n".join(p for p in parts if p)


def take(samples: Iterable[Sample], limit: int | None) -> list[Sample]:
    out = list(samples)
    return out if limit is None else out[:limit]
