"""Offline evaluation metrics for the tasks of Chen et al. (2020): GLUE, SQuAD v1.1 and v2.0, and MLM.

``evaluate.load("glue")`` / ``evaluate.load("squad")`` / ``evaluate.load("squad_v2")`` fetch their code
from the Hub, which is not reachable on an offline machine, so the official definitions are
re-implemented here on top of scikit-learn and scipy. Key names match the Hub metrics so results
stay comparable with the stock Hugging Face examples.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import EvalPrediction

# The number each task reports in the paper's tables. MNLI is the matched accuracy: the recipe
# evaluates the mismatched set separately under the prefix ``eval_mismatched``.
GLUE_MAIN_METRIC: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "accuracy",
    "stsb": "pearson",
    "qqp": "accuracy",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}
MAIN_METRIC: dict[str, str] = {**GLUE_MAIN_METRIC, "squad": "f1", "squad_v2": "f1", "mlm": "accuracy"}


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def glue_metrics(
    task_name: str | None, predictions: Sequence, labels: Sequence, *, is_regression: bool = False
) -> dict[str, float]:
    """The official GLUE metrics of ``task_name`` for class ids (or scores, for STS-B).

    ``task_name=None`` is a custom dataset: accuracy, or mean squared error when regressing, like
    the stock ``run_glue.py``.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ in shape")
    if task_name is None:
        if is_regression:
            return {"mse": float(((predictions - labels) ** 2).mean())}
        return {"accuracy": _accuracy(predictions, labels)}
    if task_name not in GLUE_MAIN_METRIC:
        raise ValueError(f"unknown GLUE task {task_name!r}; expected one of {sorted(GLUE_MAIN_METRIC)}")
    if task_name == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(labels, predictions))}
    if task_name == "stsb":
        pearson = float(pearsonr(predictions, labels)[0])
        spearman = float(spearmanr(predictions, labels)[0])
        return {"pearson": pearson, "spearmanr": spearman, "combined_score": (pearson + spearman) / 2}
    accuracy = _accuracy(predictions, labels)
    if task_name in ("mrpc", "qqp"):
        f1 = float(f1_score(labels, predictions))
        return {"accuracy": accuracy, "f1": f1, "combined_score": (accuracy + f1) / 2}
    return {"accuracy": accuracy}


def glue_metric_fn(
    task_name: str | None, *, is_regression: bool | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for the Trainer: argmax over logits, or squeeze for regression."""
    regression = task_name == "stsb" if is_regression is None else is_regression

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        # Models may return extra outputs (hidden states, attentions) after the logits.
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.squeeze(logits, axis=-1) if regression else np.argmax(logits, axis=-1)
        return glue_metrics(task_name, predictions, eval_prediction.label_ids, is_regression=regression)

    return compute_metrics


# --- SQuAD v1.1: a faithful port of the official evaluate-v1.1.py ---------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of the normalised strings (0 when nothing overlaps, as in v1.1)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Official SQuAD v1.1 ``exact_match`` and ``f1`` in percent (0-100).

    Each question scores its best match over its gold answers. As in the official script, a
    question without a prediction scores 0 and predictions for unknown ids are ignored.
    """
    if not references:
        raise ValueError("squad_metrics needs at least one reference question")
    exact_match = f1 = 0.0
    for question_id, gold_answers in references.items():
        if isinstance(gold_answers, str):
            raise ValueError(f"references[{question_id!r}] must be a list of answers, not a string")
        if not gold_answers:
            raise ValueError(f"question {question_id!r} has no gold answer")
        if question_id not in predictions:
            continue
        prediction = predictions[question_id]
        exact_match += max(squad_exact_match(prediction, gold) for gold in gold_answers)
        f1 += max(squad_f1(prediction, gold) for gold in gold_answers)
    return {"exact_match": 100.0 * exact_match / len(references), "f1": 100.0 * f1 / len(references)}


# --- SQuAD v2.0: the official evaluate-v2.0.py, as the Hub's ``squad_v2`` metric runs it ----------


def _squad_v2_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def squad_v2_f1(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1; unlike v1.1, an empty gold or prediction scores 1 when both are empty, else 0."""
    prediction_tokens, gold_tokens = _squad_v2_tokens(prediction), _squad_v2_tokens(ground_truth)
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(prediction_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_threshold(predictions, raw_scores, no_answer_probabilities, has_answer) -> tuple[float, float]:
    """The score reachable by calling every question above a no-answer probability threshold unanswerable,
    and the best such threshold: start from "all unanswerable", then admit questions by rising probability."""
    score = best_score = sum(1 for question_id in raw_scores if not has_answer[question_id])
    best_threshold = 0.0
    for question_id in sorted(no_answer_probabilities, key=lambda k: no_answer_probabilities[k]):
        if question_id not in raw_scores:
            continue
        if has_answer[question_id]:
            score += raw_scores[question_id]
        elif predictions[question_id]:
            score -= 1
        if score > best_score:
            best_score, best_threshold = score, no_answer_probabilities[question_id]
    return 100.0 * best_score / len(raw_scores), best_threshold


def squad_v2_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    no_answer_probabilities: Mapping[str, float] | None = None,
    no_answer_threshold: float = 1.0,
) -> dict[str, float]:
    """Official SQuAD v2.0 scores in percent, with the keys of the Hub's ``squad_v2`` metric.

    ``references`` maps each question id to its gold answer texts, an empty list for an unanswerable
    question (whose only correct answer is the empty string). Questions without a prediction are
    left out, as in the official script; predictions for unknown ids are ignored. A question whose
    no-answer probability exceeds ``no_answer_threshold`` counts as answered "no answer".
    ``no_answer_probabilities`` defaults to 0 for every prediction, as the stock ``run_qa.py`` passes.
    Returns ``exact``, ``f1``, ``total``, ``HasAns_exact/f1/total`` and ``NoAns_exact/f1/total`` (each
    when such questions exist), and ``best_exact``, ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh``.
    """
    if not references:
        raise ValueError("squad_v2_metrics needs at least one reference question")
    if no_answer_probabilities is None:
        no_answer_probabilities = {question_id: 0.0 for question_id in predictions}
    has_answer, exact_raw, f1_raw = {}, {}, {}
    for question_id, gold_answers in references.items():
        if isinstance(gold_answers, str):
            raise ValueError(f"references[{question_id!r}] must be a list of answers, not a string")
        has_answer[question_id] = bool(gold_answers)
        if question_id not in predictions:
            continue
        golds = [text for text in gold_answers if normalize_answer(text)] or [""]
        exact_raw[question_id] = max(squad_exact_match(predictions[question_id], gold) for gold in golds)
        f1_raw[question_id] = max(squad_v2_f1(predictions[question_id], gold) for gold in golds)
    if not exact_raw:
        raise ValueError("squad_v2_metrics: no prediction for any reference question")

    def thresholded(raw: dict[str, float]) -> dict[str, float]:
        return {
            question_id: float(not has_answer[question_id])
            if no_answer_probabilities.get(question_id, 0.0) > no_answer_threshold
            else score
            for question_id, score in raw.items()
        }

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    result: dict[str, float] = {}
    groups = (
        ("", list(exact)),
        ("HasAns_", [q for q in exact if has_answer[q]]),
        ("NoAns_", [q for q in exact if not has_answer[q]]),
    )
    for prefix, question_ids in groups:
        if question_ids:
            result[f"{prefix}exact"] = 100.0 * sum(exact[q] for q in question_ids) / len(question_ids)
            result[f"{prefix}f1"] = 100.0 * sum(f1[q] for q in question_ids) / len(question_ids)
            result[f"{prefix}total"] = len(question_ids)
    probabilities = {q: p for q, p in no_answer_probabilities.items() if q in has_answer}
    result["best_exact"], result["best_exact_thresh"] = _best_threshold(
        predictions, exact_raw, probabilities, has_answer
    )
    result["best_f1"], result["best_f1_thresh"] = _best_threshold(predictions, f1_raw, probabilities, has_answer)
    return result


# --- Masked language modelling ------------------------------------------------------------


def preprocess_logits_for_metrics(logits, labels):
    """Keep only the argmax token ids: the full vocabulary logits of a whole eval set do not fit in memory."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def masked_token_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over the masked positions only (label -100 marks the positions not to predict)."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    mask = labels != -100
    if not mask.any():
        raise ValueError("no masked token to score: every label is -100")
    return float((predictions[mask] == labels[mask]).mean())


def mlm_metric_fn(eval_prediction: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` for MLM; use with ``preprocess_logits_for_metrics``."""
    return {"accuracy": masked_token_accuracy(eval_prediction.predictions, eval_prediction.label_ids)}


def perplexity(eval_loss: float) -> float:
    """exp(mean cross-entropy); ``inf`` rather than an OverflowError for a diverged model."""
    try:
        return math.exp(eval_loss)
    except OverflowError:
        return math.inf
