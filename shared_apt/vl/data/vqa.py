"""VQAv2 answers: upstream ViLT's ``normalize_word`` (vilt/utils/glossary.py), answer vocabulary, soft scores and the
VQA score (docs/backbones.md, ViLT; the official VQA evaluation script).

The normalisation reproduces upstream's code including its quirks, not the intent of the official evaluation script:

* punctuation: the decision "delete p" vs "replace p by a space" is taken on the ORIGINAL string, and any
  digit-comma-digit match anywhere makes every punctuation mark be deleted;
* periods: every "." not followed by a digit is deleted (the "not preceded by a digit" look-behind is written as a
  look-ahead and never fires), and upstream passed ``re.UNICODE`` as the ``count`` argument, so at most 32 go;
* number words, articles and the contraction table apply to lower-cased whitespace-split words;
* remaining commas are deleted last.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import torch

MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_MAX_PERIODS_REMOVED = int(re.UNICODE)  # upstream: period_strip.sub("", s, re.UNICODE) -> count = 32

# The 120-entry table of the official VQA evaluation script (capitalised keys never fire: the words are
# lower-cased before the look-up).
CONTRACTIONS: Dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def _strip_punctuation(text: str) -> str:
    """Rule 1: per mark, delete it if the original has "p " / " p" / digit,digit, else turn it into a space."""
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if (p + " " in text) or (" " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return out


def normalize_word(token: str) -> str:
    """Upstream ``normalize_word`` (docs/backbones.md, ViLT): punctuation, periods, lower-case, numbers, articles, contractions,
    commas."""
    text = _strip_punctuation(token)
    text = _PERIOD_STRIP.sub("", text, count=_MAX_PERIODS_REMOVED)
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    words = [CONTRACTIONS.get(w, w) for w in words]
    return " ".join(words).replace(",", "")


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary, labels, soft scores
# ----------------------------------------------------------------------------------------------------------------


def build_answer_vocabulary(multiple_choice_answers: Iterable[str], min_count: int = 9) -> Dict[str, int]:
    """answer -> class id: normalised answers seen >= `min_count` times, ids in order of first appearance
    (upstream write_vqa.py over train2014 then val2014 ``multiple_choice_answer``; 3129 classes for VQAv2)."""
    counts = Counter(normalize_word(a) for a in multiple_choice_answers)
    kept = [answer for answer, n in counts.items() if n >= min_count]
    return {answer: i for i, answer in enumerate(kept)}


def answer_score(count: int) -> float:
    """Upstream ``get_score``: 0 / 0.3 / 0.6 / 0.9 for 0..3 matching annotators, 1.0 for 4 or more."""
    if count <= 0:
        return 0.0
    return {1: 0.3, 2: 0.6, 3: 0.9}.get(int(count), 1.0)


def labels_and_scores(raw_answers: Sequence[str], answer2label: Mapping[str, int]) -> Tuple[List[int], List[float]]:
    """Labels and soft scores of one question from its (10) RAW annotator answers, in first-occurrence order.

    Raw strings are counted as they are (not normalised); answers that are not vocabulary keys are skipped.
    """
    counts = Counter(raw_answers)
    labels, scores = [], []
    for answer, n in counts.items():
        if answer in answer2label:
            labels.append(int(answer2label[answer]))
            scores.append(answer_score(n))
    return labels, scores


def official_vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official VQA accuracy on exact strings: mean over the leave-one-out subsets of min(#matches / 3, 1).

    For 10 annotators this equals :func:`answer_score` of the prediction's count (section 7); it is provided as the
    independent reference."""
    n = len(human_answers)
    if n == 0:
        raise ValueError("official_vqa_accuracy needs at least one human answer")
    if n == 1:
        return min(float(human_answers[0] == prediction) / 3.0, 1.0)
    total = 0.0
    for i in range(n):
        others = [a for j, a in enumerate(human_answers) if j != i]
        total += min(sum(a == prediction for a in others) / 3.0, 1.0)
    return total / n


def dense_targets(labels: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], num_classes: int) -> torch.Tensor:
    """[B, num_classes] float target with each question's soft scores at its labels (the VQA loss target)."""
    target = torch.zeros(len(labels), num_classes)
    for i, (ls, ss) in enumerate(zip(labels, scores)):
        for label, score in zip(ls, ss):
            if not 0 <= int(label) < num_classes:
                raise ValueError(f"VQA label {label} of sample {i} is outside [0, {num_classes})")
            target[i, int(label)] = float(score)
    return target


def vqa_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-question VQA score: the soft score of the argmax class (0 if it is not a label). Shape [B]."""
    if logits.shape != target.shape:
        raise ValueError(f"VQA logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ in shape")
    pred = logits.argmax(dim=1, keepdim=True)
    return target.gather(1, pred).squeeze(1)


def id2answer_from_tables(answer_lists: Iterable, label_lists: Iterable) -> Tuple[Dict[str, int], "Id2Answer"]:
    """Upstream VQAv2DataModule.setup: answer -> id from the tables' (answers, answer_labels) columns (one entry per
    image row: per question a list of answers), and an id -> answer map that answers "unknown" for unseen ids."""
    answer2id: Dict[str, int] = {}
    for row_answers, row_labels in zip(answer_lists, label_lists):
        if row_answers is None or row_labels is None:
            continue
        for q_answers, q_labels in zip(row_answers, row_labels):
            for answer, label in zip(q_answers or [], q_labels or []):
                answer2id[answer] = int(label)
    id2answer = Id2Answer()
    for answer, label in sorted(answer2id.items(), key=lambda kv: kv[1]):
        id2answer[label] = answer
    return answer2id, id2answer


class Id2Answer(dict):
    """``defaultdict(lambda: "unknown")`` that pickles (used by the VQA submission code)."""

    def __missing__(self, key):
        return "unknown"
