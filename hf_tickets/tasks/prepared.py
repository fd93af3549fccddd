"""A task ready to train: datasets, model class and head size, collator, and how to score it.

Each recipe builds one ``PreparedTask`` (``prepare_glue``, ``prepare_squad``, ``prepare_mlm``,
``prepare_movie_reviews``); the experiment runner then trains and evaluates it the same way for
IMP, baselines and transfer. Evaluation goes through ``Trainer.evaluate`` / ``Trainer.predict``
only, so the Trainer is never subclassed (the stock ``run_qa.py`` subclasses it for this).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    default_data_collator,
)

from hf_tickets.core.errors import TicketError
from hf_tickets.tasks import glue, metrics, mlm, squad, squad_features, squad_postprocess

logger = logging.getLogger(__name__)


@dataclass
class PreparedTask:
    name: str
    model_class: type
    model_kwargs: dict[str, Any]
    train_dataset: Dataset | None
    eval_datasets: dict[str, Dataset]  # metric_key_prefix -> dataset
    data_collator: Callable | None
    main_metric: str  # key in the evaluate() result, e.g. "eval_accuracy"
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    evaluate_fn: Callable | None = None  # (trainer) -> metrics; default: Trainer.evaluate per eval set
    datasets: list[str] = field(default_factory=list)  # where the data came from, as a person reads it (cards)
    predict_fn: Callable | None = None  # (trainer, output_dir) -> predict metrics; writes the stock predict files
    save_eval_predictions: Callable | None = None  # (output_dir) -> None; writes eval predictions files (SQuAD)
    # Set only when the data came from the Hub: what a card's model-index names (dataset, config, split).
    hub_dataset: dict[str, str] | None = None

    def evaluate(self, trainer) -> dict[str, float]:
        if self.evaluate_fn is not None:
            return self.evaluate_fn(trainer)
        results: dict[str, float] = {}
        for prefix, dataset in self.eval_datasets.items():
            results.update(trainer.evaluate(eval_dataset=dataset, metric_key_prefix=prefix))
        return results


def _truncate(dataset: Dataset | None, limit: int | None) -> Dataset | None:
    if dataset is None or limit is None:
        return dataset
    return dataset.select(range(min(limit, len(dataset))))


def _collator(tokenizer, pad_to_max_length: bool, fp16: bool = False):
    if pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if fp16 else None)


def _classification(name, raw: DatasetDict, tokenizer, data_args, eval_splits, datasets) -> PreparedTask:
    labels = glue.label_info(DatasetDict({k: v for k, v in raw.items() if not k.startswith("test")}))
    raw = DatasetDict({split: _truncate(ds, _split_limit(split, data_args)) for split, ds in raw.items()})
    task_name = name if name in glue.GLUE_TASKS else None
    tokenized = glue.preprocess_glue(
        raw, tokenizer, task_name, data_args.max_seq_length, data_args.pad_to_max_length, _map_kwargs(data_args)
    )
    main = metrics.GLUE_MAIN_METRIC.get(name, "mse" if labels.is_regression else "accuracy")
    predict_sets = {
        prefix: tokenized[split].remove_columns("label")
        for split, prefix in (("test", task_name), ("test_matched", "mnli"), ("test_mismatched", "mnli-mm"))
        if split in tokenized
    }
    return PreparedTask(
        name=name,
        model_class=AutoModelForSequenceClassification,
        model_kwargs=labels.config_kwargs(),
        train_dataset=tokenized.get("train"),
        eval_datasets={prefix: tokenized[split] for split, prefix in eval_splits},
        data_collator=_collator(tokenizer, data_args.pad_to_max_length),
        main_metric=f"eval_{main}",
        compute_metrics=metrics.glue_metric_fn(task_name, is_regression=labels.is_regression),
        datasets=datasets,
        predict_fn=glue.predict_writer(predict_sets, labels.names) if predict_sets else None,
    )


def _map_kwargs(data_args) -> dict:
    """--preprocessing_num_workers and --overwrite_cache, as the stock scripts pass them to ``Dataset.map``."""
    return {
        "num_proc": getattr(data_args, "preprocessing_num_workers", None),
        "load_from_cache_file": not getattr(data_args, "overwrite_cache", False),
    }


def data_source(data_args, eval_split: str, default_config: str | None = None) -> tuple[list[str], dict | None]:
    """(the data as a person reads it, the Hub dataset for a model-index or None for local files).

    Local files are never reported as a Hub dataset: a csv named after a GLUE task is not GLUE's split.
    """
    if data_args.dataset_name:
        config = data_args.dataset_config_name or default_config
        hub = {"dataset": data_args.dataset_name, "dataset_config": config, "dataset_split": eval_split}
        return [data_args.dataset_name + (f":{config}" if config else "")], {k: v for k, v in hub.items() if v}
    files = [Path(f).name for f in (data_args.train_file, data_args.validation_file) if f]
    return ([f"local files: {', '.join(files)}"] if files else []), None


def _split_limit(split: str, data_args) -> int | None:
    if split == "train":
        return data_args.max_train_samples
    if split.startswith("test"):
        return getattr(data_args, "max_predict_samples", None)
    return data_args.max_eval_samples


def prepare_glue(data_args, tokenizer, cache_dir: str | None = None, do_predict: bool = False) -> PreparedTask:
    """``do_predict``: also prepare the test split (``--test_file``, or the Hub dataset's) for ``predict_fn``."""
    test_file = getattr(data_args, "test_file", None) if do_predict else None
    if do_predict and test_file is None and data_args.dataset_name is None:
        raise ValueError("--do_predict needs a --test_file (or a --dataset_name with a test split)")
    raw = glue.load_glue(
        data_args.task_name,
        train_file=data_args.train_file,
        validation_file=data_args.validation_file,
        test_file=test_file,
        validation_mismatched_file=getattr(data_args, "validation_mismatched_file", None),
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        cache_dir=cache_dir,
    )
    if not do_predict:
        raw = DatasetDict({k: v for k, v in raw.items() if not k.startswith("test")})
    name = data_args.task_name or "custom"
    eval_splits = glue.glue_eval_splits(data_args.task_name, raw)
    task = _classification(name, raw, tokenizer, data_args, eval_splits, [])
    eval_split = eval_splits[0][0] if eval_splits else "validation"
    task.datasets, task.hub_dataset = data_source(data_args, eval_split, default_config=data_args.task_name)
    return task


def prepare_movie_reviews(data_args, tokenizer, seed: int = 0) -> PreparedTask:
    """The embedded demo: Rotten Tomatoes sentences rated by humans (vaderSentiment's ground truth)."""
    from hf_tickets.tasks.demo_data import load_movie_reviews

    raw = load_movie_reviews(seed=seed)
    return _classification(
        "movie_reviews", raw, tokenizer, data_args, [("validation", "eval")], ["vaderSentiment:movieReviewSnippets"]
    )


def prepare_squad(data_args, tokenizer, cache_dir: str | None = None) -> PreparedTask:
    """SQuAD v1.1 or, with ``version_2_with_negative``, v2.0, truncated as the stock ``run_qa.py`` does.

    The eval windows are scored by the Trainer's own ``compute_metrics`` (so ``--eval_strategy``,
    ``--load_best_model_at_end`` and early stopping see ``eval_f1``); ``save_eval_predictions`` writes
    the predictions files of the last evaluation and ``predict_fn`` runs ``--do_predict`` on the test set.
    """
    v2 = data_args.version_2_with_negative
    raw = _load_squad(data_args, cache_dir)
    max_seq_length = data_args.max_seq_length
    if max_seq_length > tokenizer.model_max_length:
        logger.warning(
            "max_seq_length %d is longer than the model's %d; using %d",
            max_seq_length,
            tokenizer.model_max_length,
            tokenizer.model_max_length,
        )
        max_seq_length = tokenizer.model_max_length
    window = dict(
        max_seq_length=max_seq_length,
        doc_stride=data_args.doc_stride,
        pad_to_max_length=data_args.pad_to_max_length,
        num_proc=data_args.preprocessing_num_workers,
        load_from_cache_file=not data_args.overwrite_cache,
    )
    scoring = dict(
        version_2_with_negative=v2,
        n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length,
        null_score_diff_threshold=data_args.null_score_diff_threshold,
    )

    def windows(split: str, purpose: str, limit: int | None):
        # As the stock script: truncate the questions, window them, then truncate the windows too.
        examples = _truncate(raw[split], limit)
        features = _truncate(squad_features.build_features(examples, tokenizer, purpose=purpose, **window), limit)
        kept = set(features["example_id"]) if purpose != "train" else None
        if kept is not None and len(kept) < len(examples):
            examples = examples.filter(lambda example: example["id"] in kept, desc="Dropping questions cut away")
        return examples, features

    train = windows("train", "train", data_args.max_train_samples)[1] if "train" in raw else None
    eval_scorer = predict_scorer = None
    if "validation" in raw:
        examples, features = windows("validation", "eval", data_args.max_eval_samples)
        eval_scorer = squad_postprocess.SquadScorer(examples, features, **scoring)
    if "test" in raw:
        examples, features = windows("test", "predict", data_args.max_predict_samples)
        predict_scorer = squad_postprocess.SquadScorer(examples, features, **scoring)

    def predict(trainer, output_dir) -> dict[str, float]:
        output = trainer.predict(squad_features.model_inputs(predict_scorer.features), metric_key_prefix="predict")
        scores = predict_scorer.score_logits(*output.predictions[:2])
        if trainer.is_world_process_zero():
            predict_scorer.save(output_dir, "predict")
        results = {**output.metrics, **{f"predict_{k}": v for k, v in scores.items()}}
        results["predict_samples"] = len(predict_scorer.features)
        return results

    return PreparedTask(
        name="squad_v2" if v2 else "squad",
        model_class=AutoModelForQuestionAnswering,
        model_kwargs={},
        train_dataset=train,
        eval_datasets={"eval": squad_features.model_inputs(eval_scorer.features)} if eval_scorer else {},
        data_collator=_collator(tokenizer, data_args.pad_to_max_length),
        main_metric="eval_f1",
        compute_metrics=eval_scorer,
        datasets=data_source(data_args, "validation")[0],
        hub_dataset=data_source(data_args, "validation")[1],
        predict_fn=predict if predict_scorer else None,
        save_eval_predictions=(lambda output_dir: eval_scorer.save(output_dir, "eval")) if eval_scorer else None,
    )


def _load_squad(data_args, cache_dir: str | None) -> DatasetDict:
    """The SQuAD splits; without ``version_2_with_negative`` an unanswerable eval or test question is refused."""
    if data_args.dataset_name is not None:
        from datasets import load_dataset

        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
        sources = {split: f"dataset {data_args.dataset_name} split {split}" for split in raw}
        for split, dataset in raw.items():
            needed = ("id", "context", "question") if split == "test" else ("id", "context", "question", "answers")
            missing = [column for column in needed if column not in dataset.column_names]
            if missing:
                raise TicketError(f"{sources[split]}: missing column(s) {missing}; SQuAD data needs {list(needed)}")
    else:
        raw = squad.load_squad_json(data_args.train_file, data_args.validation_file, data_args.test_file)
        sources = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    if not data_args.version_2_with_negative:
        for split in ("validation", "test"):
            if split in raw and "answers" in raw[split].column_names:
                for question_id, answers in zip(raw[split]["id"], raw[split]["answers"]):
                    if not answers["text"]:
                        raise TicketError(
                            f"{sources[split]}: question {question_id!r} has no answer; pass "
                            "--version_2_with_negative for SQuAD v2.0 data"
                        )
    return raw


def prepare_mlm(data_args, tokenizer, seed: int = 0, cache_dir: str | None = None) -> PreparedTask:
    if data_args.dataset_name is not None:
        from datasets import load_dataset

        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
    else:
        raw = mlm.load_text_files(
            data_args.train_file, data_args.validation_file, data_args.validation_split_percentage, cache_dir=cache_dir
        )
    if getattr(data_args, "line_by_line", False):
        grouped = mlm.tokenize_line_by_line(
            raw, tokenizer, data_args.max_seq_length, data_args.pad_to_max_length, _map_kwargs(data_args)
        )
    else:
        grouped = mlm.tokenize_and_group(raw, tokenizer, data_args.max_seq_length, _map_kwargs(data_args))
    train = _truncate(grouped.get("train"), data_args.max_train_samples)
    validation = _truncate(grouped.get("validation"), data_args.max_eval_samples)

    def evaluate(trainer) -> dict[str, float]:
        # A freshly seeded collator masks the evaluation blocks identically in every IMP round.
        training_collator = trainer.data_collator
        trainer.data_collator = mlm.mlm_data_collator(tokenizer, data_args.mlm_probability, seed=seed)
        try:
            scores = trainer.evaluate(eval_dataset=validation, metric_key_prefix="eval")
        finally:
            trainer.data_collator = training_collator
        scores["eval_perplexity"] = metrics.perplexity(scores["eval_loss"])
        return scores

    return PreparedTask(
        name="mlm",
        model_class=AutoModelForMaskedLM,
        model_kwargs={},
        train_dataset=train,
        eval_datasets={"eval": validation} if validation is not None else {},
        data_collator=mlm.mlm_data_collator(tokenizer, data_args.mlm_probability, seed=seed),
        main_metric="eval_accuracy",
        compute_metrics=metrics.mlm_metric_fn,
        preprocess_logits_for_metrics=metrics.preprocess_logits_for_metrics,
        evaluate_fn=evaluate,
        datasets=data_source(data_args, "validation")[0],
        hub_dataset=data_source(data_args, "validation")[1],
    )
