"""GLUE data for the recipes: original GLUE tsv files, csv/json files like the stock
``run_glue.py``, or a Hub dataset, all turned into the column layout of the Hub ``glue`` dataset.

Every loaded split has the task's text columns under their Hub names plus ``label``: a
``ClassLabel`` in the Hub's class order, or a float score for STS-B. Unlabelled test splits carry
label -1, as on the Hub.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset

from hf_tickets.core.atomic_files import atomic_write_text

logger = logging.getLogger(__name__)

NO_LABEL = -1


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its Hub column names and classes, and how its original tsv files look."""

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression (STS-B)
    tsv_text_columns: tuple[str, ...]  # header names of text_columns in the original tsv
    tsv_label_column: str
    tsv_label_values: tuple[str, ...] = ("0", "1")  # the raw label of each class id
    tsv_headerless_columns: tuple[str, ...] | None = None  # CoLA train/dev have no header

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    def features(self) -> Features:
        label = Value("float32") if self.label_names is None else ClassLabel(names=list(self.label_names))
        return Features({**{column: Value("string") for column in self.text_columns}, "label": label})


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola",
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("sentence",),
            "label",
            tsv_headerless_columns=("source", "label", "original_label", "sentence"),
        ),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), ("sentence",), "label"),
        GlueTask(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("#1 String", "#2 String"), "Quality"
        ),
        GlueTask("stsb", ("sentence1", "sentence2"), None, ("sentence1", "sentence2"), "score", tsv_label_values=()),
        GlueTask(
            "qqp",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("question1", "question2"),
            "is_duplicate",
        ),
        GlueTask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("sentence1", "sentence2"),
            "gold_label",
            tsv_label_values=("entailment", "neutral", "contradiction"),
        ),
        GlueTask(
            "qnli",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            ("question", "sentence"),
            "label",
            tsv_label_values=("entailment", "not_entailment"),
        ),
        GlueTask(
            "rte",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
            ("sentence1", "sentence2"),
            "label",
            tsv_label_values=("entailment", "not_entailment"),
        ),
        # WNLI's tsv writes 1 for entailment, and the Hub orders the classes not_entailment, entailment.
        GlueTask(
            "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("sentence1", "sentence2"), "label"
        ),
    )
}

STSB_SCORE_RANGE = (0.0, 5.0)


def get_glue_task(task_name: str) -> GlueTask:
    try:
        return GLUE_TASKS[task_name.lower()]
    except KeyError:
        raise ValueError(f"unknown GLUE task {task_name!r}; expected one of {', '.join(GLUE_TASKS)}") from None


@dataclass(frozen=True)
class LabelInfo:
    """What the model config needs to know about the labels of a loaded dataset."""

    names: tuple[str, ...] | None  # None: regression

    @property
    def is_regression(self) -> bool:
        return self.names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.names is None else len(self.names)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.names is None else dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.names is None else {name: i for i, name in enumerate(self.names)}

    def config_kwargs(self) -> dict:
        """Keyword arguments for ``AutoConfig``/``from_pretrained``. Regression passes no label
        maps: an explicit ``id2label=None`` would override ``num_labels`` in transformers 5."""
        if self.names is None:
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": self.num_labels, "id2label": self.id2label, "label2id": self.label2id}


def label_info(raw_datasets: DatasetDict) -> LabelInfo:
    """Class names (``ClassLabel``) or regression (float label) from any split's features."""
    for split in raw_datasets.values():
        feature = split.features.get("label")
        if isinstance(feature, ClassLabel):
            return LabelInfo(tuple(feature.names))
        if isinstance(feature, Value) and feature.dtype.startswith("float"):
            return LabelInfo(None)
    raise ValueError(f"no split has a ClassLabel or float 'label' column (splits: {list(raw_datasets)})")


def glue_eval_splits(task_name: str | None, raw_datasets: DatasetDict) -> list[tuple[str, str]]:
    """(split, metric_key_prefix) pairs to evaluate: MNLI reports matched and mismatched apart."""
    if task_name == "mnli":
        candidates = [("validation_matched", "eval"), ("validation_mismatched", "eval_mismatched")]
    else:
        candidates = [("validation", "eval")]
    return [(split, prefix) for split, prefix in candidates if split in raw_datasets]


def glue_sentence_keys(task_name: str | None, column_names: list[str]) -> tuple[str, str | None]:
    """The text column(s) fed to the tokenizer; for a custom dataset chosen like the stock script."""
    if task_name is not None:
        columns = get_glue_task(task_name).text_columns
        return columns[0], columns[1] if len(columns) > 1 else None
    candidates = [name for name in column_names if name != "label"]
    if "sentence1" in candidates and "sentence2" in candidates:
        return "sentence1", "sentence2"
    if not candidates:
        raise ValueError(f"no text column besides 'label' in columns {column_names}")
    return candidates[0], candidates[1] if len(candidates) > 1 else None


# --- reading --------------------------------------------------------------------------------


def _label_lookup(task: GlueTask) -> dict[str, int]:
    """Raw tsv values, Hub class names and class ids as strings all map to the class id."""
    lookup: dict[str, int] = {}
    for class_id, name in enumerate(task.label_names or ()):
        lookup.update({name: class_id, str(class_id): class_id, task.tsv_label_values[class_id]: class_id})
    return lookup


def _parse_label(task: GlueTask, raw, where: str) -> float | int:
    if raw is None:
        raise ValueError(f"{where}: missing label for {task.name}")
    if isinstance(raw, float) and task.label_names is not None and raw.is_integer():
        raw = int(raw)  # pandas reads an int column with gaps as float
    text = str(raw).strip()
    if task.label_names is None:
        try:
            score = float(text)
        except ValueError:
            raise ValueError(
                f"{where}: label {text!r} is not a number; {task.name} expects a score in {STSB_SCORE_RANGE}"
            ) from None
        if not STSB_SCORE_RANGE[0] <= score <= STSB_SCORE_RANGE[1]:
            raise ValueError(f"{where}: score {score} outside {STSB_SCORE_RANGE} for {task.name}")
        return score
    lookup = _label_lookup(task)
    if text not in lookup:
        raise ValueError(f"{where}: label {text!r} is not one of {task.name}'s labels {sorted(set(lookup))}")
    return lookup[text]


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: MRPC's header starts with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot read file: {exc.strerror or exc}") from exc


def read_glue_tsv(path: str | Path, task_name: str, *, labelled: bool = True) -> tuple[Dataset, list[int]]:
    """Read an original GLUE tsv file; returns the dataset and the line numbers of skipped rows.

    GLUE sentences contain quote characters, so lines are split on tabs with no quoting at all.
    A row whose field count differs from the header is a broken row (a stray tab or a truncated
    line); like the Hub ``glue`` builder we drop it instead of guessing its columns.
    """
    path, task = Path(path), get_glue_task(task_name)
    lines = _read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise ValueError(f"{path}: empty file, expected a {task.name} tsv")
    first_fields = lines[0].split("\t")
    if task.tsv_headerless_columns and first_fields[0] != "index":
        header, first_line_number = list(task.tsv_headerless_columns), 1
    else:
        header, first_line_number, lines = first_fields, 2, lines[1:]
    wanted = list(task.tsv_text_columns) + ([task.tsv_label_column] if labelled else [])
    missing = [column for column in wanted if column not in header]
    if missing:
        raise ValueError(
            f"{path}: line 1: header {header} lacks column(s) {missing}; a {task.name} tsv needs {wanted}"
            + ("" if labelled else " (unlabelled test file)")
        )
    positions = [header.index(column) for column in task.tsv_text_columns]
    label_position = header.index(task.tsv_label_column) if task.tsv_label_column in header else None
    columns: dict[str, list] = {column: [] for column in task.text_columns}
    labels, skipped = [], []
    for line_number, line in enumerate(lines, start=first_line_number):
        fields = line.split("\t")
        if len(fields) != len(header):
            skipped.append(line_number)
            continue
        for column, position in zip(task.text_columns, positions):
            columns[column].append(fields[position])
        if label_position is None:
            labels.append(NO_LABEL)
        else:
            labels.append(_parse_label(task, fields[label_position], f"{path}: line {line_number}"))
    if skipped:
        logger.warning(
            "%s: skipped %d row(s) with a field count other than %d (lines %s)",
            path,
            len(skipped),
            len(header),
            skipped[:10],
        )
    return Dataset.from_dict({**columns, "label": labels}, features=task.features()), skipped


def _load_table(path: Path, cache_dir: str | None) -> Dataset:
    """A csv/json file through the datasets loaders, as the stock script does."""
    loader = "csv" if path.suffix == ".csv" else "json"
    try:
        return load_dataset(loader, data_files={"data": str(path)}, cache_dir=cache_dir)["data"]
    except Exception as exc:  # the loaders raise many types (arrow, pandas, DatasetGenerationError)
        raise ValueError(f"{path}: cannot be read as {loader}: {exc}") from exc


def _row_place(path: Path, index: int) -> str:
    """Where row ``index`` lives, for error messages: a csv file has a header line first."""
    return f"{path}: line {index + 2}" if path.suffix == ".csv" else f"{path}: record {index + 1}"


def _table_to_task(dataset: Dataset, path: Path, task: GlueTask, labelled: bool) -> Dataset:
    wanted = list(task.text_columns) + (["label"] if labelled else [])
    missing = [column for column in wanted if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; {task.name} needs {wanted}, found {dataset.column_names}"
        )
    texts = [dataset[column] for column in task.text_columns]
    raw_labels = dataset["label"] if "label" in dataset.column_names else [None] * len(dataset)
    columns: dict[str, list] = {column: [] for column in task.text_columns}
    labels, skipped = [], []
    for i, raw_label in enumerate(raw_labels):
        row_texts = [column[i] for column in texts]
        if any(text is None for text in row_texts):  # an empty cell: a broken row, as in the tsv reader
            skipped.append(i)
            continue
        for column, text in zip(task.text_columns, row_texts):
            columns[column].append(str(text))
        labels.append(
            NO_LABEL if raw_label is None and not labelled else _parse_label(task, raw_label, _row_place(path, i))
        )
    if skipped:
        logger.warning("%s: skipped %d row(s) with an empty text cell (rows %s)", path, len(skipped), skipped[:10])
    return Dataset.from_dict({**columns, "label": labels}, features=task.features())


def _custom_labels(datasets: dict[str, tuple[Dataset, Path]]) -> DatasetDict:
    """Label handling for a dataset with no GLUE task, as in the stock ``run_glue.py``."""
    reference_split = "train" if "train" in datasets else next(iter(datasets))
    reference, path = datasets[reference_split]
    if "label" not in reference.column_names:
        raise ValueError(f"{path}: no 'label' column (found {reference.column_names})")
    if reference.features["label"].dtype.startswith("float"):
        result = {}
        for split, (dataset, _) in datasets.items():
            if "label" not in dataset.column_names:
                dataset = dataset.add_column("label", [float(NO_LABEL)] * len(dataset))
            result[split] = dataset.cast_column("label", Value("float32"))
        return DatasetDict(result)
    label_list = sorted(set(reference["label"]))
    label_to_id = {label: i for i, label in enumerate(label_list)}
    class_label = ClassLabel(names=[str(label) for label in label_list])
    result = {}
    for split, (dataset, path) in datasets.items():
        if "label" in dataset.column_names:
            ids = []
            for i, label in enumerate(dataset["label"]):
                if label not in label_to_id:
                    raise ValueError(
                        f"{_row_place(path, i)}: label {label!r} not among {reference_split} labels {label_list}"
                    )
                ids.append(label_to_id[label])
            dataset = dataset.remove_columns("label")
        else:
            ids = [NO_LABEL] * len(dataset)
        result[split] = dataset.add_column("label", ids).cast_column("label", class_label)
    return DatasetDict(result)


def load_glue(
    task_name: str | None = None,
    *,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    validation_mismatched_file: str | Path | None = None,
    test_mismatched_file: str | Path | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Load a GLUE task (or a custom sentence(-pair) classification set) as a ``DatasetDict``.

    Splits: ``train``, ``validation``, ``test``; for MNLI, as on the Hub, ``validation_matched``
    and ``test_matched`` (from ``validation_file``/``test_file``) plus ``validation_mismatched``
    and ``test_mismatched``. Files ending ``.tsv``/``.txt`` are original GLUE files and need
    ``task_name``; ``.csv``/``.json``/``.jsonl`` go through the datasets loaders. ``dataset_name``
    passes straight to ``load_dataset`` (the config defaults to the task name).
    """
    task = get_glue_task(task_name) if task_name is not None else None
    if dataset_name is not None:
        return load_dataset(dataset_name, dataset_config_name or (task.name if task else None), cache_dir=cache_dir)
    is_mnli = task is not None and task.name == "mnli"
    if not is_mnli and (validation_mismatched_file or test_mismatched_file):
        raise ValueError("mismatched validation/test files exist only for mnli")
    files = {
        "train": train_file,
        "validation_matched" if is_mnli else "validation": validation_file,
        "validation_mismatched": validation_mismatched_file,
        "test_matched" if is_mnli else "test": test_file,
        "test_mismatched": test_mismatched_file,
    }
    files = {split: Path(path) for split, path in files.items() if path is not None}
    if not files:
        raise ValueError("load_glue needs data files or a dataset_name")
    loaded: dict[str, Dataset] = {}
    tables: dict[str, tuple[Dataset, Path]] = {}
    for split, path in files.items():
        if not path.is_file():
            raise ValueError(f"{path}: no such file (given as the {split} file)")
        labelled = not split.startswith("test")
        if path.suffix in (".tsv", ".txt"):
            if task is None:
                raise ValueError(f"{path}: an original GLUE tsv file needs task_name to know its layout")
            loaded[split], _ = read_glue_tsv(path, task.name, labelled=labelled)
        elif path.suffix in (".csv", ".json", ".jsonl"):
            dataset = _load_table(path, cache_dir)
            if task is None:
                tables[split] = (dataset, path)
            else:
                loaded[split] = _table_to_task(dataset, path, task, labelled)
        else:
            raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected .tsv, .txt, .csv, .json or .jsonl")
    if tables:
        loaded.update(_custom_labels(tables))
    return DatasetDict({split: loaded[split] for split in files})


def preprocess_glue(
    raw_datasets: DatasetDict,
    tokenizer,
    task_name: str | None,
    max_seq_length: int = 128,
    pad_to_max_length: bool = False,
    map_kwargs: dict | None = None,
) -> DatasetDict:
    """Tokenize the text column(s); keeps ``label`` and drops every other original column.

    ``map_kwargs``: extra ``Dataset.map`` arguments (``num_proc``, ``load_from_cache_file``)."""
    if max_seq_length > tokenizer.model_max_length:
        logger.warning(
            "max_seq_length %d exceeds the tokenizer's %d; using %d",
            max_seq_length,
            tokenizer.model_max_length,
            tokenizer.model_max_length,
        )
        max_seq_length = tokenizer.model_max_length
    first_split = next(iter(raw_datasets.values()))
    sentence1_key, sentence2_key = glue_sentence_keys(task_name, first_split.column_names)
    padding = "max_length" if pad_to_max_length else False

    def tokenize(examples):
        texts = (
            (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key], examples[sentence2_key])
        )
        return tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)

    return DatasetDict(
        {
            split: dataset.map(
                tokenize,
                batched=True,
                remove_columns=[c for c in dataset.column_names if c != "label"],
                desc=f"Tokenizing {split}",
                **(map_kwargs or {}),
            )
            for split, dataset in raw_datasets.items()
        }
    )


def predict_writer(predict_sets: dict, label_names: tuple[str, ...] | None):
    """``predict_fn`` of a GLUE task: ``predict_results_<task>.txt`` per test set, as the stock ``run_glue.py``.

    ``predict_sets`` maps the name in the file name (the task name; ``mnli`` and ``mnli-mm`` for MNLI's
    two test sets; ``None`` for a custom dataset, as the stock script writes) to a tokenized set without labels.
    """

    def predict(trainer, output_dir) -> dict:
        for name, dataset in predict_sets.items():
            logits = trainer.predict(dataset, metric_key_prefix="predict").predictions
            logits = logits[0] if isinstance(logits, tuple) else logits
            if label_names is None:
                lines = [f"{i}\t{value:3.3f}" for i, value in enumerate(np.squeeze(logits, axis=-1).tolist())]
            else:
                lines = [f"{i}\t{label_names[k]}" for i, k in enumerate(np.argmax(logits, axis=1).tolist())]
            if trainer.is_world_process_zero():
                path = Path(output_dir) / f"predict_results_{name}.txt"
                atomic_write_text(path, "\n".join(["index\tprediction", *lines]) + "\n")
                logger.info("***** Predict results %s ***** written to %s", name, path)
        return {}  # run_glue saves no predict metrics

    return predict
