"""normalize_word, answer vocabulary, soft scores and the VQA score, checked against hand-derived values from the
rules of docs/backbones.md, ViLT (the official VQA evaluation script) and against the official leave-one-out VQA accuracy."""
import pickle

import pytest
import torch

from shared_apt.vl.data.vqa import (CONTRACTIONS, answer_score, build_answer_vocabulary, dense_targets,
                                 id2answer_from_tables, labels_and_scores, normalize_word, official_vqa_accuracy,
                                 vqa_scores)


@pytest.mark.parametrize("raw, expected", [
    # number words (incl. none -> 0), case
    ("Two", "2"), ("none", "0"), ("ZERO", "0"), ("ten", "10"), ("eleven", "eleven"),
    # articles dropped, only as whole words
    ("the dog", "dog"), ("an apple", "apple"), ("A Cat", "cat"), ("theater", "theater"), ("a", ""),
    # contractions, after lower-casing (capitalised table keys never fire)
    ("dont", "don't"), ("Isnt it", "isn't it"), ("Im", "im"), ("youre", "you're"),
    # punctuation without a neighbouring space -> replaced by a space
    ("red-white", "red white"), ("hello?world", "hello world"), ("yes!", "yes"), ("(left)", "left"),
    ("a/b", "b"),  # '/' -> space, then the article "a" is dropped
    # punctuation next to a space -> deleted
    ("red - white", "red white"), ("hello, world?", "hello world"), ("a, b", "b"),
    # the decision is per mark, on the ORIGINAL string: "? " deletes '?', '-' has no space so becomes one
    ("what? red-white", "what red white"),
    # digit-comma-digit anywhere -> every punctuation mark is deleted
    ("1,000", "1000"), ("1,000 red-white", "1000 redwhite"),
    # periods: deleted unless followed by a digit
    ("mr. smith.", "mr smith"), ("3.5", "3.5"), ("end.", "end"), ("1.5.", "1.5"), (".5", ".5"),
    # commas left after the punctuation step are deleted at the end (none remain in practice)
    ("  many   spaces ", "many spaces"),
])
def test_normalize_word_hand_cases(raw, expected):
    assert normalize_word(raw) == expected


def test_normalize_word_removes_at_most_32_periods():
    # upstream passed re.UNICODE (= 32) as the count of period_strip.sub
    s = "x" + "." * 40
    assert normalize_word(s) == "x" + "." * 8


def test_contraction_table_is_the_120_entry_table():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the table's own oddity
    assert CONTRACTIONS["ow's'at"] == "'ow's'at"


def test_vocabulary_threshold_and_first_appearance_order():
    answers = ["Two"] * 3 + ["yes"] * 9 + ["2"] * 6 + ["no"] * 8 + ["blue."] * 9 + ["the cat"] * 9
    vocab = build_answer_vocabulary(answers, min_count=9)
    # "Two" and "2" both normalise to "2" (9 total, first seen before "yes"); "no" has 8 only
    assert vocab == {"2": 0, "yes": 1, "blue": 2, "cat": 3}


def test_soft_scores_of_ten_annotators_by_hand():
    vocab = {"2": 0, "3": 1, "yes": 2, "red": 3}
    raw = ["2", "2", "3", "two", "2", "3", "4", "3", "2", "yes"]
    labels, scores = labels_and_scores(raw, vocab)
    # "2" x4 -> 1.0, "3" x3 -> 0.9, "yes" x1 -> 0.3; "two" is not normalised so it is no vocabulary key
    assert labels == [0, 1, 2]
    assert scores == [1.0, 0.9, 0.3]
    for answer, score in zip(["2", "3", "yes", "red", "two"], [1.0, 0.9, 0.3, 0.0, 0.3]):
        assert official_vqa_accuracy(answer, raw) == pytest.approx(score)


@pytest.mark.parametrize("count", range(0, 11))
def test_soft_score_equals_official_leave_one_out_accuracy(count):
    humans = ["x"] * count + ["y"] * (10 - count)
    assert answer_score(count) == pytest.approx(official_vqa_accuracy("x", humans))


def test_vqa_score_on_a_hand_computed_batch():
    # 3 questions, 4 classes; targets from soft scores
    target = dense_targets([[0, 1, 2], [3], []], [[1.0, 0.9, 0.3], [0.6], []], num_classes=4)
    assert target.tolist()[0] == pytest.approx([1.0, 0.9, 0.3, 0.0])
    logits = torch.tensor([
        [0.1, 2.0, 0.0, 0.0],   # argmax 1 -> 0.9
        [0.0, 0.0, 0.0, 5.0],   # argmax 3 -> 0.6
        [1.0, 0.0, 0.0, 0.0],   # question without labels -> 0
    ])
    per_question = vqa_scores(logits, target)
    assert per_question.tolist() == pytest.approx([0.9, 0.6, 0.0])
    with pytest.raises(ValueError, match="outside"):
        dense_targets([[4]], [[1.0]], num_classes=4)


def test_id2answer_from_table_columns_defaults_to_unknown():
    answers = [[["red", "blue"], ["yes"]], [["3"]], None]
    labels = [[[0, 1], [2]], [[5]], None]
    answer2id, id2answer = id2answer_from_tables(answers, labels)
    assert answer2id == {"red": 0, "blue": 1, "yes": 2, "3": 5}
    assert id2answer[5] == "3" and id2answer[4] == "unknown"
    assert pickle.loads(pickle.dumps(id2answer))[3] == "unknown"
