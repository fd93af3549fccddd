"""SQuAD files for the recipes: the official nested layout and the flat layout of ``datasets``, v1.1 and v2.0.

The sliding windows are in ``squad_features``, post-processing (logits to answers, the predictions
files) in ``squad_postprocess`` and the official scores in ``metrics``.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, List, Value

from hf_tickets.core.errors import TicketError

SQUAD_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    }
)
# A test file may come without answers: it is then predicted, not scored.
UNANSWERED_FEATURES = Features({name: kind for name, kind in SQUAD_FEATURES.items() if name != "answers"})


def _field(record, key: str, kind: type | tuple[type, ...], where: str, default=...):
    """``record[key]`` checked to be of ``kind``; a TicketError naming the file and the field otherwise."""
    if not isinstance(record, dict):
        raise TicketError(f"{where}: expected an object, got {type(record).__name__}")
    if key not in record:
        if default is not ...:
            return default
        raise TicketError(f"{where}: missing key {key!r}")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in kinds)
        raise TicketError(f"{where}.{key}: should be {names}, got {type(value).__name__}")
    return value


def _answers(value, context: str, where: str) -> dict[str, list]:
    """Answers as ``{text: [...], answer_start: [...]}`` from either layout: the official list of
    ``{text, answer_start}`` objects or the columnar dict of ``datasets``."""
    if isinstance(value, list):
        texts = [_field(a, "text", str, f"{where}[{i}]") for i, a in enumerate(value)]
        starts = [_field(a, "answer_start", int, f"{where}[{i}]") for i, a in enumerate(value)]
    elif isinstance(value, dict):
        texts = _field(value, "text", list, where)
        starts = _field(value, "answer_start", list, where)
        if len(texts) != len(starts):
            raise TicketError(f"{where}: {len(texts)} texts but {len(starts)} answer_start values")
        for i, (text, start) in enumerate(zip(texts, starts)):
            if not isinstance(text, str):
                raise TicketError(f"{where}.text[{i}]: should be str, got {type(text).__name__}")
            if not isinstance(start, int) or isinstance(start, bool):
                raise TicketError(f"{where}.answer_start[{i}]: should be int, got {type(start).__name__}")
    else:
        raise TicketError(f"{where}: should be a list or an object, got {type(value).__name__}")
    for i, (text, start) in enumerate(zip(texts, starts)):
        if not 0 <= start <= len(context) - len(text):
            raise TicketError(f"{where}: answer {i} ({text!r} at {start}) lies outside its context")
    return {"text": texts, "answer_start": starts}


class _Rows:
    """Collects questions, refusing duplicate ids (predictions are keyed by id) and mixed answer presence."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: dict[str, list] = {name: [] for name in SQUAD_FEATURES}
        self.where_of_id: dict[str, str] = {}
        self.with_answers: bool | None = None

    def add(self, record: dict, where: str, title: str, context: str) -> None:
        question_id = _field(record, "id", (str, int), where)
        question_id = str(question_id)
        if question_id in self.where_of_id:
            raise TicketError(f"{where}.id: {question_id!r} already used at {self.where_of_id[question_id]}")
        self.where_of_id[question_id] = where
        has_answers = "answers" in record
        if self.with_answers is not None and has_answers != self.with_answers:
            raise TicketError(f"{where}: 'answers' is {'present' if has_answers else 'missing'} here but not before")
        self.with_answers = has_answers
        self.columns["id"].append(question_id)
        self.columns["title"].append(title)
        self.columns["context"].append(context)
        self.columns["question"].append(_field(record, "question", str, where))
        if has_answers:
            self.columns["answers"].append(_answers(record["answers"], context, f"{where}.answers"))

    def dataset(self) -> Dataset:
        if not self.columns["id"]:
            raise TicketError(f"{self.path}: no question in the file")
        if not self.with_answers:
            del self.columns["answers"]
            return Dataset.from_dict(self.columns, features=UNANSWERED_FEATURES)
        return Dataset.from_dict(self.columns, features=SQUAD_FEATURES)


def _nested(rows: _Rows, article, where: str) -> None:
    title = _field(article, "title", str, where, default="")
    for p, paragraph in enumerate(_field(article, "paragraphs", list, where)):
        where_p = f"{where}.paragraphs[{p}]"
        context = _field(paragraph, "context", str, where_p)
        for q, qa in enumerate(_field(paragraph, "qas", list, where_p)):
            rows.add(qa, f"{where_p}.qas[{q}]", title, context)


def _flat(rows: _Rows, record, where: str) -> None:
    rows.add(record, where, _field(record, "title", str, where, default=""), _field(record, "context", str, where))


def _records(path: Path, text: str) -> tuple[list, str]:
    """The list of articles or questions in the file, and how to name its items in errors."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise TicketError(f"{path}: not a SQuAD JSON file ({exc})") from None
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as line_exc:
                raise TicketError(f"{path}: line {n}: not JSON ({line_exc})") from None
        return records, "line"
    if isinstance(document, list):
        return document, "[]"
    if isinstance(document, dict) and "data" not in document and ("context" in document or "paragraphs" in document):
        return [document], "line"  # JSON lines holding a single question
    return _field(document, "data", list, str(path)), "data"


def read_squad_json(path: str | Path) -> Dataset:
    """One SQuAD file as rows ``id, title, context, question, answers{text, answer_start}``.

    Reads the official nested layout (``data`` -> ``paragraphs`` -> ``qas``, v1.1 or v2.0 where an
    unanswerable question has no answer), the flat layout of ``datasets`` and the stock ``run_qa.py``
    (``data`` as a list of ``{id, title, context, question, answers: {text, answer_start}}``, also as a
    bare list or JSON lines) and, for test files, questions without ``answers`` (then no column
    ``answers``). A malformed file raises a ``TicketError`` naming the file and the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TicketError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TicketError(f"{path}: not a SQuAD JSON file ({exc})") from exc
    records, container = _records(path, text)
    rows = _Rows(path)
    for i, record in enumerate(records):
        where = (
            f"{path}: line {i + 1}" if container == "line" else f"{path}: {'' if container == '[]' else 'data'}[{i}]"
        )
        if isinstance(record, dict) and "paragraphs" in record:
            _nested(rows, record, where)
        else:
            _flat(rows, record, where)
    return rows.dataset()


def load_squad_json(
    train_file: str | Path | None = None, validation_file: str | Path | None = None, test_file: str | Path | None = None
) -> DatasetDict:
    """SQuAD JSON files as splits ``train``, ``validation`` and/or ``test``."""
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    files = {split: path for split, path in files.items() if path is not None}
    if not files:
        raise TicketError("load_squad_json needs a train_file, a validation_file or a test_file")
    splits = {split: read_squad_json(path) for split, path in files.items()}
    for split in ("train", "validation"):
        if split in splits and "answers" not in splits[split].column_names:
            raise TicketError(f"{files[split]}: the {split} file has no 'answers'; only a test file may omit them")
    return DatasetDict(splits)


def squad_references(examples: Dataset) -> dict[str, list[str]]:
    """Gold answer texts by question id, as ``metrics.squad_metrics`` wants them."""
    return {example_id: answers["text"] for example_id, answers in zip(examples["id"], examples["answers"])}
