"""Offline evaluation metrics for the tasks of Chen et al. (2020): GLUE, SQuAD v1.1 and MLM.

``evaluate.load("glue")`` / ``evaluate.load("squad")`` fetch their code from the Hub, which is not
reachable on an offline machine, so the official definitions are re-implemented here on top of
scikit-learn and scipy. Key names match the Hub metrics so results stay comparable with the stock
Hugging Face examples.
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
MAIN_METRIC: dict[str, str] = {**GLUE_MAIN_METRIC, "squad": "f1", "mlm": "accuracy"}


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
