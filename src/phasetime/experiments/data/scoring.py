"""Answer scoring: pure functions following the established definitions.

Every metric takes the model's prediction (a string), the reference answers (one or more
strings) and, for multiple choice, the options, and returns a score in [0, 1].

* ``vqa``: VQAv2 soft accuracy. Both sides get the EvalAI normalisation (punctuation,
  periods, number words, articles, contractions); the score is the mean, over the
  leave-one-out subsets of the references (leaving out *by index*, so duplicate answers
  stay in the other subsets), of ``min(1, matches / 3)``. With a single reference it is
  exact match after normalisation (leave-one-out would leave nothing).
* ``exact_match``: normalised (lower case, EvalAI punctuation, articles dropped) equality
  with any reference.
* ``anls``: average normalised Levenshtein similarity, threshold 0.5 (DocVQA): the best
  over the references of ``1 - d / max(len)`` where that is >= 0.5, else 0.
* ``relaxed``: ChartQA relaxed accuracy: numbers within 5% of the reference (``%``
  marks divide by 100), otherwise case-insensitive exact match.
* ``multiple_choice``: the option letter extracted from the prediction (a bare letter,
  ``A.``, ``(A)``, ``A)``, ``The answer is A``, ``Answer: A``, or the text of exactly one
  option) compared with the reference letter (or option text).
* ``yes_no``: MME-style: the prediction's leading yes/no against the reference.
"""

from __future__ import annotations

import re
import string
from typing import Callable, Sequence

# --- EvalAI normalisation (the VQA challenge's answer processing) -------------------------
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_vqa(text: str) -> str:
    """The EvalAI answer normalisation used by the VQA challenge."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


# --- metrics -------------------------------------------------------------------------------
def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 soft accuracy (see the module docstring)."""
    if not answers:
        raise ValueError("vqa accuracy needs at least one reference answer")
    pred = normalize_vqa(prediction)
    refs = [normalize_vqa(a) for a in answers]
    if len(refs) == 1:
        return float(pred == refs[0])
    scores = []
    for left_out in range(len(refs)):
        matches = sum(1 for i, ref in enumerate(refs) if i != left_out and ref == pred)
        scores.append(min(1.0, matches / 3))
    return sum(scores) / len(scores)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference."""
    pred = normalize_vqa(prediction)
    return float(any(pred == normalize_vqa(a) for a in answers))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity of one prediction (DocVQA's ANLS)."""
    pred = " ".join(prediction.strip().lower().split())
    best = 0.0
    for answer in answers:
        ref = " ".join(answer.strip().lower().split())
        longest = max(len(pred), len(ref))
        distance = levenshtein(pred, ref) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _to_float(text: str) -> float | None:
    text = text.strip().replace(",", "")
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: numbers within ``tolerance`` (relative), else exact match."""
    pred = prediction.strip().rstrip(".")
    pred_value = _to_float(pred)
    for answer in answers:
        ref_value = _to_float(answer)
        if pred_value is not None and ref_value is not None:
            if ref_value == 0:
                if pred_value == 0:
                    return 1.0
            elif abs(pred_value - ref_value) / abs(ref_value) <= tolerance:
                return 1.0
        elif pred.lower() == answer.strip().lower():
            return 1.0
    return 0.0


_LETTER_PATTERNS = [
    re.compile(r"^\(?([A-Z])\)?[.:)]?$"),  # "A", "A.", "(A)", "A)", "A:"
    re.compile(r"^\(?([A-Z])[.:)]\s"),  # "A. text", "(A) text", "A) text"
    re.compile(r"\banswer(?: is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),  # "The answer is A"
    re.compile(r"\boption\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
]


def extract_choice(prediction: str, choices: Sequence[str]) -> str | None:
    """The option letter a prediction names, or None when it names none (or several)."""
    letters = list(string.ascii_uppercase[: len(choices)])
    text = prediction.strip()
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    # Option text: whole words after normalisation ("the blue circle" names "a blue circle").
    padded = f" {normalize_vqa(text)} "
    options = (normalize_vqa(choice) for choice in choices)
    named = [letter for letter, option in zip(letters, options) if option and f" {option} " in padded]
    return named[0] if len(named) == 1 else None


def multiple_choice(prediction: str, answers: Sequence[str], choices: Sequence[str]) -> float:
    """1.0 when the extracted option is the reference (a letter or the option's text)."""
    if not choices:
        raise ValueError("multiple_choice scoring needs the sample's choices")
    letters = list(string.ascii_uppercase[: len(choices)])
    targets = set()
    for answer in answers:
        a = answer.strip()
        if a.upper() in letters:
            targets.add(a.upper())
        for letter, choice in zip(letters, choices):
            if a.lower() == choice.strip().lower():
                targets.add(letter)
    return float(extract_choice(prediction, choices) in targets)


def _yes_no(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words and words[0] in ("yes", "no") else "other"


def yes_no(prediction: str, answers: Sequence[str]) -> float:
    """MME-style: the prediction's leading yes/no must equal the reference's."""
    return float(any(_yes_no(prediction) == _yes_no(a) != "other" for a in answers))


MetricFn = Callable[[str, Sequence[str], Sequence[str]], float]
METRICS: dict[str, MetricFn] = {
    "vqa": lambda p, a, c: vqa_accuracy(p, a),
    "exact_match": lambda p, a, c: exact_match(p, a),
    "anls": lambda p, a, c: anls(p, a),
    "relaxed": lambda p, a, c: relaxed_accuracy(p, a),
    "multiple_choice": multiple_choice,
    "yes_no": lambda p, a, c: yes_no(p, a),
}


def score(metric: str, prediction: str, answers: Sequence[str], choices: Sequence[str] = ()) -> float:
    """Score one prediction with the named metric."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})")
    return METRICS[metric](prediction, answers, choices)
