import math

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_tickets.tasks.metrics import (
    GLUE_MAIN_METRIC,
    MAIN_METRIC,
    glue_metric_fn,
    glue_metrics,
    masked_token_accuracy,
    mlm_metric_fn,
    normalize_answer,
    perplexity,
    preprocess_logits_for_metrics,
    squad_f1,
    squad_metrics,
)

# labels 1 1 0 0 vs predictions 1 0 0 0: TP=1 FN=1 TN=2 FP=0
LABELS = [1, 1, 0, 0]
PREDICTIONS = [1, 0, 0, 0]


def test_matthews_correlation_from_confusion_counts():
    tp, fn, tn, fp = 1, 1, 2, 0
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    result = glue_metrics("cola", PREDICTIONS, LABELS)
    assert result.keys() == {"matthews_correlation"}
    assert result["matthews_correlation"] == pytest.approx(expected)
    assert result["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_f1_and_accuracy_for_paraphrase_tasks(task):
    precision, recall = 1 / 1, 1 / 2
    f1 = 2 * precision * recall / (precision + recall)
    result = glue_metrics(task, PREDICTIONS, LABELS)
    assert result["f1"] == pytest.approx(f1)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["combined_score"] == pytest.approx((f1 + 3 / 4) / 2)


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_only_tasks(task):
    assert glue_metrics(task, [0, 2, 1, 1], [0, 2, 2, 1]) == {"accuracy": 0.75}


def test_stsb_pearson_and_spearman():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    linear = glue_metrics("stsb", 2 * x + 1, x)
    assert linear["pearson"] == pytest.approx(1.0)
    assert linear["spearmanr"] == pytest.approx(1.0)
    # monotone but not linear: rank correlation stays 1, linear correlation drops
    cubic = glue_metrics("stsb", x**3, x)
    assert cubic["spearmanr"] == pytest.approx(1.0)
    assert cubic["pearson"] < 0.95
    # x = 1 2 3, y = 1 3 2: cov 1, both variances 2 -> r = 0.5 (ranks are the values themselves)
    small = glue_metrics("stsb", [1.0, 3.0, 2.0], [1.0, 2.0, 3.0])
    assert small["pearson"] == pytest.approx(0.5)
    assert small["spearmanr"] == pytest.approx(0.5)
    assert small["combined_score"] == pytest.approx(0.5)


def test_metric_fn_takes_argmax_of_logits_and_ignores_extra_outputs():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [-5.0, 5.0]])  # argmax 1 0 0 1
    labels = np.array([1, 0, 1, 1])
    compute = glue_metric_fn("mrpc")
    result = compute(EvalPrediction(predictions=(logits, np.zeros((4, 3))), label_ids=labels))
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_metric_fn_squeezes_regression_outputs():
    compute = glue_metric_fn("stsb")
    scores = np.array([[1.0], [2.0], [3.0]])
    result = compute(EvalPrediction(predictions=scores, label_ids=np.array([2.0, 4.0, 6.0])))
    assert result["pearson"] == pytest.approx(1.0)


def test_custom_task_uses_accuracy_or_mse():
    assert glue_metrics(None, [1, 0], [1, 1]) == {"accuracy": 0.5}
    assert glue_metrics(None, [1.0, 3.0], [1.0, 1.0], is_regression=True) == {"mse": 2.0}
    compute = glue_metric_fn(None, is_regression=True)
    assert compute(EvalPrediction(predictions=np.array([[0.0], [2.0]]), label_ids=np.array([1.0, 1.0]))) == {"mse": 1.0}


def test_unknown_task_and_shape_mismatch_are_errors():
    with pytest.raises(ValueError, match="unknown GLUE task 'glue'"):
        glue_metrics("glue", [1], [1])
    with pytest.raises(ValueError, match="shape"):
        glue_metrics("sst2", [1, 0], [1])


def test_main_metrics_are_those_of_the_paper():
    assert GLUE_MAIN_METRIC["cola"] == "matthews_correlation"
    assert GLUE_MAIN_METRIC["stsb"] == "pearson"
    for task in ("mnli", "qqp", "wnli", "qnli", "mrpc", "rte", "sst2"):
        assert GLUE_MAIN_METRIC[task] == "accuracy"
    assert MAIN_METRIC["squad"] == "f1" and MAIN_METRIC["mlm"] == "accuracy"
    # every main metric is a key the metric function really returns
    for task, key in GLUE_MAIN_METRIC.items():
        predictions, labels = ([1.0, 0.0, 1.0], [1.0, 0.0, 0.5]) if task == "stsb" else ([1, 0, 1], [1, 0, 0])
        assert key in glue_metrics(task, predictions, labels)


@pytest.mark.parametrize(
    "raw, normalized",
    [("The Cat!", "cat"), ("  an   apple, a pear ", "apple pear"), ("Theater", "theater"), ("U.S.A.", "usa")],
)
def test_squad_normalization(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_squad_exact_match_and_partial_f1():
    # "the big red dog" -> big red dog ; "a red dog barked" -> red dog barked: 2 shared of 3 and 3
    assert squad_f1("the big red dog", "a red dog barked") == pytest.approx(2 / 3)
    assert squad_f1("red", "blue") == 0.0
    predictions = {"q1": "The Cat!", "q2": "the big red dog", "q3": "nothing here"}
    references = {"q1": ["cat"], "q2": ["green", "a red dog barked"], "q3": ["something"], "q4": ["unanswered"]}
    result = squad_metrics(predictions, references)
    assert result["exact_match"] == pytest.approx(100 * 1 / 4)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)


def test_squad_best_gold_answer_counts_and_unknown_predictions_are_ignored():
    result = squad_metrics({"q": "Denver Broncos", "stray": "x"}, {"q": ["Broncos", "Denver Broncos"]})
    assert result == {"exact_match": 100.0, "f1": 100.0}


def test_squad_rejects_bad_references():
    with pytest.raises(ValueError, match="list of answers"):
        squad_metrics({"q": "a"}, {"q": "a"})
    with pytest.raises(ValueError, match="at least one"):
        squad_metrics({}, {})


def test_masked_token_accuracy_ignores_unmasked_positions():
    labels = np.array([[-100, 5, -100, 7], [3, -100, -100, -100]])
    predictions = np.array([[5, 5, 0, 1], [3, 9, 9, 9]])
    assert masked_token_accuracy(predictions, labels) == pytest.approx(2 / 3)
    assert mlm_metric_fn(EvalPrediction(predictions=predictions, label_ids=labels)) == {
        "accuracy": pytest.approx(2 / 3)
    }
    with pytest.raises(ValueError, match="no masked token"):
        masked_token_accuracy(predictions, np.full_like(labels, -100))


def test_preprocess_logits_keeps_argmax_ids():
    logits = torch.tensor([[[0.1, 2.0, 0.3], [5.0, 0.0, 0.0]]])
    ids = preprocess_logits_for_metrics((logits, torch.zeros(1)), None)
    assert ids.tolist() == [[1, 0]]


def test_perplexity_is_exp_of_loss():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.5)) == pytest.approx(7.5)
    assert perplexity(1e6) == math.inf
