"""Scoring functions on fixed examples."""

from __future__ import annotations

import pytest

from phasetime.experiments.data.scoring import (
    anls, exact_match, extract_choice, levenshtein, multiple_choice, normalize_vqa, relaxed_accuracy, score,
    vqa_accuracy, yes_no,
)

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("Two", "2"),
        ("The dog.", "dog"),
        ("a red, white ball!", "red white ball"),
        ("1,000", "1000"),
        ("dont", "don't"),
        ("3.5", "3.5"),
        ("  yes\n", "yes"),
        ("black-and-white", "black and white"),
    ],
)
def test_evalai_normalisation(raw: str, normalized: str) -> None:
    assert normalize_vqa(raw) == normalized


def test_vqa_soft_accuracy_leave_one_out() -> None:
    ten = ["2"] * 3 + ["3"] * 7
    # Predicting "2": leaving out one of the three "2"s leaves 2 matches (2/3), 3 of 10 subsets;
    # leaving out a "3" leaves 3 matches (1.0), 7 of 10 subsets.
    assert vqa_accuracy("two", ten) == pytest.approx((3 * 2 / 3 + 7 * 1.0) / 10)
    assert vqa_accuracy("3", ten) == 1.0
    assert vqa_accuracy("4", ten) == 0.0
    # One match: 9 subsets keep it (1/3), one drops it (0).
    one = ["cat"] + ["dog"] * 9
    assert vqa_accuracy("cat", one) == pytest.approx(9 * (1 / 3) / 10)
    # Duplicates are left out by index, not by value: four "cat"s always leave >= 3.
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == 1.0
    assert vqa_accuracy("Cat.", ["cat"]) == 1.0


def test_exact_match_and_anls() -> None:
    assert exact_match("The Eiffel Tower", ["eiffel tower"]) == 1.0
    assert exact_match("tower", ["eiffel tower"]) == 0.0
    assert levenshtein("kitten", "sitting") == 3
    assert anls("Invoice 2021", ["invoice 2021"]) == 1.0
    assert anls("invoice 2O21", ["invoice 2021"]) == pytest.approx(1 - 1 / 12)
    assert anls("total", ["invoice 2021"]) == 0.0  # distance above the 0.5 threshold
    assert anls("", [""]) == 1.0


def test_relaxed_accuracy() -> None:
    assert relaxed_accuracy("104", ["100"]) == 1.0
    assert relaxed_accuracy("106", ["100"]) == 0.0
    assert relaxed_accuracy("12%", ["0.12"]) == 1.0
    assert relaxed_accuracy("1,050.", ["1000"]) == 1.0
    assert relaxed_accuracy("Yes", ["yes"]) == 1.0
    assert relaxed_accuracy("0", ["0"]) == 1.0 and relaxed_accuracy("0.01", ["0"]) == 0.0


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("B", "B"), ("B.", "B"), ("(B)", "B"), ("B) a blue circle", "B"), ("The answer is B.", "B"),
        ("Answer: (C)", "C"), ("I think it is the blue circle", "B"), ("red or blue", None), ("E", None),
        ("I am not sure", None),
    ],
)
def test_choice_extraction(prediction: str, letter: str | None) -> None:
    choices = ["a red square", "a blue circle", "a green triangle", "nothing"]
    assert extract_choice(prediction, choices) == letter


def test_multiple_choice_and_yes_no() -> None:
    choices = ["cat", "dog"]
    assert multiple_choice("(B)", ["B"], choices) == 1.0
    assert multiple_choice("dog", ["dog"], choices) == 1.0
    assert multiple_choice("A", ["dog"], choices) == 0.0
    assert yes_no("Yes, there is.", ["yes"]) == 1.0
    assert yes_no("No", ["yes"]) == 0.0
    assert yes_no("maybe", ["no"]) == 0.0
    assert score("yes_no", "no.", ["No"]) == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", "x", ["x"])
