"""The official SQuAD v2.0 metric (evaluate-v2.0.py, as the Hub's ``squad_v2``) on hand-worked cases."""

import pytest

from hf_tickets.tasks.metrics import squad_metrics, squad_v2_f1, squad_v2_metrics

# q1, q3 answerable; q2, q4 unanswerable (no gold answer: only "" is right).
REFERENCES = {"q1": ["Denver Broncos"], "q2": [], "q3": ["the red dog", "red"], "q4": []}
PREDICTIONS = {
    "q1": "Broncos",  # EM 0; F1: 1 of 1 predicted, 1 of 2 gold tokens -> 2/3
    "q2": "",  # right abstention: EM 1, F1 1
    "q3": "a red dog",  # normalises to "red dog" like the first gold: EM 1, F1 1
    "q4": "something",  # answers an unanswerable question: EM 0, F1 0
}
STOCK_KEYS = [
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
]


def test_v2_scores_split_by_answerability():
    result = squad_v2_metrics(PREDICTIONS, REFERENCES)
    assert list(result) == STOCK_KEYS
    assert result["exact"] == pytest.approx(100 * 2 / 4)
    assert result["f1"] == pytest.approx(100 * (2 / 3 + 1 + 1 + 0) / 4)
    assert result["total"] == 4
    assert result["HasAns_exact"] == pytest.approx(50.0)
    assert result["HasAns_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["HasAns_total"] == 2
    assert result["NoAns_exact"] == result["NoAns_f1"] == pytest.approx(50.0)
    assert result["NoAns_total"] == 2


def test_v2_best_threshold_with_the_stock_zero_probabilities():
    # All no-answer probabilities 0 (what run_qa passes): start from "every question unanswerable" = 2
    # right (q2, q4); admitting q1 (+0 EM / +2/3 F1), q2 (+0), q3 (+1), q4 (-1) in order peaks after q3.
    result = squad_v2_metrics(PREDICTIONS, REFERENCES)
    assert result["best_exact"] == pytest.approx(100 * 3 / 4)
    assert result["best_f1"] == pytest.approx(100 * (2 + 2 / 3 + 1) / 4)
    assert result["best_exact_thresh"] == result["best_f1_thresh"] == 0.0


def test_v2_no_answer_probabilities_and_threshold():
    probabilities = {"q1": 0.9, "q2": 0.8, "q3": 0.1, "q4": 0.7}
    result = squad_v2_metrics(PREDICTIONS, REFERENCES, probabilities, no_answer_threshold=0.5)
    # Above 0.5 a question counts as "no answer": q1 -> wrong (0), q2 and q4 -> right (1); q3 keeps its 1.
    assert result["exact"] == result["f1"] == pytest.approx(75.0)
    assert result["HasAns_exact"] == pytest.approx(50.0) and result["NoAns_exact"] == pytest.approx(100.0)
    # By rising probability: q3 (+1 -> 3 right), q4 (-1), q2 (0), q1 (+0 EM, +2/3 F1 -> 2.67): best after q3.
    assert result["best_exact"] == pytest.approx(75.0) and result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(75.0) and result["best_f1_thresh"] == 0.1


def test_v2_f1_of_empty_strings_and_groups_present_only():
    assert squad_v2_f1("", "") == 1.0
    assert squad_v2_f1("the", "") == 1.0  # both normalise to nothing
    assert squad_v2_f1("x", "") == 0.0 and squad_v2_f1("", "x") == 0.0
    assert squad_v2_f1("red", "blue") == 0.0
    only_answerable = squad_v2_metrics({"q": "Denver Broncos"}, {"q": ["Broncos", "Denver Broncos"]})
    assert "NoAns_total" not in only_answerable and only_answerable["HasAns_total"] == 1
    assert only_answerable["exact"] == only_answerable["best_exact"] == 100.0


def test_v2_gold_answers_that_normalise_to_nothing_count_as_no_answer():
    # The official script drops such golds; with none left, only the empty prediction is right.
    assert squad_v2_metrics({"q": ""}, {"q": ["the"]})["exact"] == 100.0


def test_v2_missing_and_unknown_predictions():
    result = squad_v2_metrics({"q1": "Denver Broncos", "stray": "x"}, {"q1": ["Denver Broncos"], "q2": []})
    assert result["total"] == 1 and result["exact"] == 100.0  # q2 unpredicted: left out, as in evaluate-v2.0.py
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2_metrics({"stray": "x"}, {"q": ["a"]})
    with pytest.raises(ValueError, match="not a string"):
        squad_v2_metrics({"q": "a"}, {"q": "a"})


def test_v1_keys_unchanged():
    assert list(squad_metrics({"q": "Broncos"}, {"q": ["Denver Broncos"]})) == ["exact_match", "f1"]
