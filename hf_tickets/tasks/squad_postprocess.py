"""From start/end logits to answers, as the stock ``utils_qa.postprocess_qa_predictions`` does, and the
predictions files it leaves in ``output_dir``: ``<prefix>_predictions.json``,
``<prefix>_nbest_predictions.json`` and, for SQuAD v2.0, ``<prefix>_null_odds.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm

from hf_tickets.core.atomic_files import atomic_write_text
from hf_tickets.tasks.metrics import squad_metrics, squad_v2_metrics
from hf_tickets.tasks.squad import squad_references

logger = logging.getLogger(__name__)


@dataclass
class QAPredictions:
    """One answer per question id, the n-best candidates behind it and, for v2, the null-score margins."""

    predictions: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float] | None = None  # v2: null score minus best span score, per question

    def save(self, output_dir: str | Path, prefix: str) -> list[Path]:
        """Write the stock files (indent 4, as ``utils_qa``) into ``output_dir``; returns their paths."""
        contents = {"predictions": self.predictions, "nbest_predictions": self.nbest}
        if self.null_odds is not None:
            contents["null_odds"] = self.null_odds
        paths = []
        for name, content in contents.items():
            path = Path(output_dir) / f"{prefix}_{name}.json"
            paths.append(atomic_write_text(path, json.dumps(content, indent=4) + "\n"))
        logger.info("%s predictions of %d questions written to %s", prefix, len(self.predictions), output_dir)
        return paths


def postprocess_qa_predictions(
    examples: Dataset,
    features: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """The best answer per question over all its windows, with the stock script's rules.

    Candidates are the spans of the ``n_best_size`` best starts and ends of each window that lie in
    the context, end after they start and are at most ``max_answer_length`` tokens long, scored by
    start + end logit. For v2 the null answer scores the lowest CLS start + end over the windows (all
    windows must agree there is no answer); the question gets the empty answer when that null score
    beats the best span's by more than ``null_score_diff_threshold``. Questions without any window
    (cut away by ``max_eval_samples``) get no prediction.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(start_logits)} start / {len(end_logits)} end logit rows for {len(features)} features")
    features_by_example: dict[str, list[int]] = {}
    for feature_index, example_id in enumerate(features["example_id"]):
        features_by_example.setdefault(example_id, []).append(feature_index)
    offset_mappings = list(features["offset_mapping"])  # one read, not one per window
    result = QAPredictions({}, {}, {} if version_2_with_negative else None)
    rows = zip(examples["id"], examples["context"])
    for example_id, context in tqdm(rows, total=len(examples), desc="Post-processing answers", leave=False):
        feature_indices = features_by_example.get(example_id)
        if not feature_indices:
            continue
        null, candidates = None, []
        for feature_index in feature_indices:
            starts, ends = start_logits[feature_index], end_logits[feature_index]
            if null is None or starts[0] + ends[0] < null["score"]:
                null = {"offsets": (0, 0), "score": starts[0] + ends[0], "start_logit": starts[0], "end_logit": ends[0]}
            candidates += _window_candidates(
                starts, ends, offset_mappings[feature_index], n_best_size, max_answer_length
            )
        if version_2_with_negative:
            candidates.append(null)
        best = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
        if version_2_with_negative and not any(c["offsets"] == (0, 0) for c in best):
            best.append(null)
        nbest = [
            {"start_logit": c["start_logit"], "end_logit": c["end_logit"], "text": context[slice(*c["offsets"])]}
            for c in best
        ]
        scores = [c["score"] for c in best]
        if not nbest or (len(nbest) == 1 and nbest[0]["text"] == ""):
            # As the stock script: a placeholder so that every question has an n-best list.
            nbest.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0})
            scores.insert(0, 0.0)
        scores = np.asarray(scores, dtype=np.float64)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        for candidate, probability in zip(nbest, probabilities):
            candidate["probability"] = probability
        result.nbest[example_id] = [{k: _plain(v) for k, v in c.items()} for c in nbest]
        if not version_2_with_negative:
            result.predictions[example_id] = nbest[0]["text"]
            continue
        best_span = next((c for c in nbest if c["text"] != ""), nbest[0])
        score_diff = float(null["score"] - best_span["start_logit"] - best_span["end_logit"])
        result.null_odds[example_id] = score_diff
        result.predictions[example_id] = "" if score_diff > null_score_diff_threshold else best_span["text"]
    return result


def _window_candidates(starts, ends, offsets, n_best_size: int, max_answer_length: int) -> list[dict]:
    top_starts = np.argsort(starts)[-1 : -n_best_size - 1 : -1].tolist()
    top_ends = np.argsort(ends)[-1 : -n_best_size - 1 : -1].tolist()
    candidates = []
    for start in top_starts:
        for end in top_ends:
            if start >= len(offsets) or end >= len(offsets) or offsets[start] is None or offsets[end] is None:
                continue
            if end < start or end - start + 1 > max_answer_length:
                continue
            candidates.append(
                {
                    "offsets": (offsets[start][0], offsets[end][1]),
                    "score": starts[start] + ends[end],
                    "start_logit": starts[start],
                    "end_logit": ends[end],
                }
            )
    return candidates


def _plain(value):
    """numpy scalars as Python floats, so the n-best lists are JSON."""
    return float(value) if isinstance(value, np.floating) else value


def squad_scores(
    predictions: QAPredictions, examples: Dataset, *, version_2_with_negative: bool = False
) -> dict[str, float]:
    """The official scores of the questions that got a prediction: v1.1 ``exact_match``/``f1``, or the v2.0
    set (``exact``, ``f1``, ``total``, ``HasAns_*``, ``NoAns_*``, ``best_*``). As the stock script, every
    question's no-answer probability is 0 for v2."""
    references = {k: v for k, v in squad_references(examples).items() if k in predictions.predictions}
    if version_2_with_negative:
        return squad_v2_metrics(predictions.predictions, references)
    return squad_metrics(predictions.predictions, references)


class SquadScorer:
    """Scores the windows of one question set (eval or predict) and keeps its last predictions.

    An instance is the Trainer's ``compute_metrics`` for the eval windows: the Trainer evaluates them in
    order, so the logits line up with ``features``. The stock script subclasses the Trainer for this.
    """

    def __init__(
        self,
        examples: Dataset,
        features: Dataset,
        *,
        version_2_with_negative: bool = False,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
    ):
        self.examples, self.features = examples, features
        self.version_2_with_negative = version_2_with_negative
        self.settings = dict(
            version_2_with_negative=version_2_with_negative,
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
            null_score_diff_threshold=null_score_diff_threshold,
        )
        self.last: QAPredictions | None = None

    @property
    def has_answers(self) -> bool:
        return "answers" in self.examples.column_names

    def score_logits(self, start_logits, end_logits) -> dict[str, float]:
        """Answers from the logits (kept in ``last``) and their official scores (none without gold answers)."""
        self.last = postprocess_qa_predictions(self.examples, self.features, start_logits, end_logits, **self.settings)
        if not self.has_answers:
            return {}
        return squad_scores(self.last, self.examples, version_2_with_negative=self.version_2_with_negative)

    def __call__(self, eval_prediction) -> dict[str, float]:
        start_logits, end_logits = eval_prediction.predictions[:2]
        if len(start_logits) != len(self.features):
            raise ValueError(
                f"SQuAD compute_metrics got logits for {len(start_logits)} windows but scores the "
                f"{len(self.features)} eval windows it was built for; evaluate on the task's own eval dataset"
            )
        return self.score_logits(start_logits, end_logits)

    def save(self, output_dir: str | Path, prefix: str) -> list[Path]:
        """The stock predictions files of the last scoring; nothing if nothing was scored yet."""
        return self.last.save(output_dir, prefix) if self.last is not None else []
