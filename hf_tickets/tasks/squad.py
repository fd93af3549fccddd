"""SQuAD v1.1 for the recipes: the JSON reader, the sliding-window features and the
post-processing of the stock ``run_qa.py`` (extractive QA, every question answerable).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, List, Value

from hf_tickets.tasks.metrics import squad_metrics

SQUAD_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    }
)


def _require(mapping, key: str, kind: type, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def read_squad_json(path: str | Path) -> Dataset:
    """One SQuAD v1.1 file as rows ``id, title, context, question, answers{text, answer_start}``."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a SQuAD JSON file ({exc})") from exc
    rows: dict[str, list] = {name: [] for name in SQUAD_FEATURES}
    for a, article in enumerate(_require(document, "data", list, str(path))):
        where = f"{path}: data[{a}]"
        title = _require(article, "title", str, where)
        for p, paragraph in enumerate(_require(article, "paragraphs", list, where)):
            where_p = f"{where}.paragraphs[{p}]"
            context = _require(paragraph, "context", str, where_p)
            for q, qa in enumerate(_require(paragraph, "qas", list, where_p)):
                where_q = f"{where_p}.qas[{q}]"
                answers = _require(qa, "answers", list, where_q)
                rows["id"].append(_require(qa, "id", str, where_q))
                rows["question"].append(_require(qa, "question", str, where_q))
                rows["title"].append(title)
                rows["context"].append(context)
                rows["answers"].append(
                    {
                        "text": [
                            _require(answer, "text", str, f"{where_q}.answers[{i}]") for i, answer in enumerate(answers)
                        ],
                        "answer_start": [
                            _require(answer, "answer_start", int, f"{where_q}.answers[{i}]")
                            for i, answer in enumerate(answers)
                        ],
                    }
                )
    if not rows["id"]:
        raise ValueError(f"{path}: no question in the file")
    return Dataset.from_dict(rows, features=SQUAD_FEATURES)


def load_squad_json(train_file: str | Path | None = None, validation_file: str | Path | None = None) -> DatasetDict:
    """SQuAD v1.1 JSON files as splits ``train`` and/or ``validation``."""
    files = {"train": train_file, "validation": validation_file}
    files = {split: path for split, path in files.items() if path is not None}
    if not files:
        raise ValueError("load_squad_json needs a train_file or a validation_file")
    return DatasetDict({split: read_squad_json(path) for split, path in files.items()})


def squad_references(examples: Dataset) -> dict[str, list[str]]:
    """Gold answers by question id, as ``metrics.squad_metrics`` wants them."""
    return {example_id: answers["text"] for example_id, answers in zip(examples["id"], examples["answers"])}


# --- features -------------------------------------------------------------------------------


def _tokenize_windows(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    if not tokenizer.is_fast:
        raise ValueError("SQuAD features need a fast tokenizer: offsets map tokens back to the context")
    pad_on_right = tokenizer.padding_side == "right"
    # Leading whitespace in some questions wastes window space and breaks truncation="only_second".
    questions = [question.lstrip() for question in examples["question"]]
    first, second = (questions, examples["context"]) if pad_on_right else (examples["context"], questions)
    encoded = tokenizer(
        first,
        second,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    )
    return encoded, (1 if pad_on_right else 0)


def prepare_train_features(
    examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = True
):
    """Split each context into overlapping windows and label the answer's token span in each.

    A window that does not contain the whole answer points start and end at the CLS token.
    Use with ``Dataset.map(..., batched=True, remove_columns=...)``.
    """
    encoded, context_index = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = encoded.pop("overflow_to_sample_mapping")
    offset_mapping = encoded.pop("offset_mapping")
    encoded["start_positions"], encoded["end_positions"] = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = encoded["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = encoded.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if not answers["answer_start"]:
            encoded["start_positions"].append(cls_index)
            encoded["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = sequence_ids.index(context_index)
        token_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_index)
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            encoded["start_positions"].append(cls_index)
            encoded["end_positions"].append(cls_index)
            continue
        while token_start < len(offsets) and offsets[token_start][0] <= start_char:
            token_start += 1
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        encoded["start_positions"].append(token_start - 1)
        encoded["end_positions"].append(token_end + 1)
    return encoded


def prepare_validation_features(
    examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = True
):
    """Windows as for training, plus ``example_id`` and an ``offset_mapping`` that is None
    outside the context, so post-processing can only pick answers inside the context."""
    encoded, context_index = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = encoded.pop("overflow_to_sample_mapping")
    encoded["example_id"] = []
    for i in range(len(encoded["input_ids"])):
        sequence_ids = encoded.sequence_ids(i)
        encoded["example_id"].append(examples["id"][sample_mapping[i]])
        encoded["offset_mapping"][i] = [
            offset if sequence_ids[k] == context_index else None
            for k, offset in enumerate(encoded["offset_mapping"][i])
        ]
    return encoded


def build_features(
    examples: Dataset,
    tokenizer,
    *,
    train: bool,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = True,
) -> Dataset:
    """``examples.map`` with the train or validation feature function; drops the raw columns."""
    if doc_stride >= max_seq_length:
        raise ValueError(f"doc_stride {doc_stride} must be smaller than max_seq_length {max_seq_length}")
    function = prepare_train_features if train else prepare_validation_features
    try:
        return _map_features(examples, function, tokenizer, max_seq_length, doc_stride, pad_to_max_length, train)
    except BaseException as err:  # the Rust tokenizer panics (a BaseException) instead of raising
        if "stride" not in str(err):
            raise
        raise ValueError(
            f"doc_stride {doc_stride} leaves no room in max_seq_length {max_seq_length} for the context next to "
            f"the longest questions; raise --max_seq_length or lower --doc_stride"
        ) from None


def _map_features(examples, function, tokenizer, max_seq_length, doc_stride, pad_to_max_length, train):
    return examples.map(
        partial(
            function,
            tokenizer=tokenizer,
            max_seq_length=max_seq_length,
            doc_stride=doc_stride,
            pad_to_max_length=pad_to_max_length,
        ),
        batched=True,
        remove_columns=examples.column_names,
        desc="Windowing train contexts" if train else "Windowing validation contexts",
    )


# --- post-processing ------------------------------------------------------------------------


def postprocess_qa_predictions(
    examples: Dataset,
    features: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """The best answer text per question id from the start/end logits of every window.

    Over all windows of a question, the span with the highest start+end logit wins among the
    ``n_best_size`` best starts and ends, inside the context, at most ``max_answer_length``
    tokens long. A question with no valid span gets the empty answer.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(start_logits)} start / {len(end_logits)} end logit rows for {len(features)} features")
    features_by_example: dict[str, list[int]] = {}
    for feature_index, example_id in enumerate(features["example_id"]):
        features_by_example.setdefault(example_id, []).append(feature_index)
    offset_mappings = list(features["offset_mapping"])  # one read, not one per window
    predictions: dict[str, str] = {}
    for example in examples:
        context = example["context"]
        best_score, best_text = -np.inf, ""
        for feature_index in features_by_example.get(example["id"], []):
            offsets = offset_mappings[feature_index]
            starts, ends = start_logits[feature_index], end_logits[feature_index]
            top_starts = np.argsort(starts)[-1 : -n_best_size - 1 : -1]
            top_ends = np.argsort(ends)[-1 : -n_best_size - 1 : -1]
            for start in top_starts:
                for end in top_ends:
                    if (
                        start >= len(offsets)
                        or end >= len(offsets)
                        or offsets[start] is None
                        or offsets[end] is None
                        or end < start
                        or end - start + 1 > max_answer_length
                    ):
                        continue
                    score = starts[start] + ends[end]
                    if score > best_score:
                        best_score, best_text = score, context[offsets[start][0] : offsets[end][1]]
        predictions[example["id"]] = best_text
    return predictions


def squad_predictions_and_metrics(
    examples: Dataset, features: Dataset, raw_predictions, n_best_size: int = 20, max_answer_length: int = 30
) -> tuple[dict[str, str], dict[str, float]]:
    """From ``Trainer.predict(features).predictions`` (start, end logits) to answers and EM/F1."""
    start_logits, end_logits = raw_predictions[:2]
    predictions = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, n_best_size, max_answer_length
    )
    return predictions, squad_metrics(predictions, squad_references(examples))


def squad_eval_dataset(features: Dataset) -> Dataset:
    """The features the model sees: without the bookkeeping columns used by post-processing."""
    return features.remove_columns([c for c in ("example_id", "offset_mapping") if c in features.column_names])
