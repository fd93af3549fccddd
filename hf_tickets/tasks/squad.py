"""SQuAD files for the recipes: the official nested layout and the flat layout of ``datasets``, v1.1 and v2.0,
and the sliding-window features of the stock ``run_qa.py``.

Post-processing (logits to answers, the predictions files) is in ``squad_postprocess``; the official
scores in ``metrics``.
"""

from __future__ import annotations

import json
from functools import partial
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


# --- features -------------------------------------------------------------------------------

PURPOSES = ("train", "eval", "predict")


def squad_features(
    examples,
    tokenizer,
    purpose: str = "train",
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = True,
):
    """Split each context into overlapping windows of ``max_seq_length`` tokens, ``doc_stride`` apart.

    ``train`` and ``eval`` windows are labelled with the answer's token span (``start_positions``,
    ``end_positions``; the CLS token when the window does not hold the whole answer or the question has
    none); labelled eval windows give the Trainer an eval loss and make it call ``compute_metrics``.
    ``eval`` and ``predict`` windows keep ``example_id`` and an ``offset_mapping`` that is None outside
    the context, so post-processing can only pick answers inside the context. Use with
    ``Dataset.map(..., batched=True, remove_columns=...)``.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if not tokenizer.is_fast:
        raise TicketError("SQuAD features need a fast tokenizer: offsets map tokens back to the context")
    pad_on_right = tokenizer.padding_side == "right"
    context_index = 1 if pad_on_right else 0
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
    sample_mapping = encoded.pop("overflow_to_sample_mapping")
    offset_mapping = encoded["offset_mapping"] if purpose != "train" else encoded.pop("offset_mapping")
    labelled = purpose != "predict" and "answers" in examples
    if labelled:
        encoded["start_positions"], encoded["end_positions"] = [], []
    if purpose != "train":
        encoded["example_id"] = []
    for i, offsets in enumerate(offset_mapping):
        sequence_ids = encoded.sequence_ids(i)
        if labelled:
            start, end = _answer_span(
                encoded["input_ids"][i],
                offsets,
                sequence_ids,
                context_index,
                tokenizer,
                examples["answers"][sample_mapping[i]],
            )
            encoded["start_positions"].append(start)
            encoded["end_positions"].append(end)
        if purpose != "train":
            encoded["example_id"].append(examples["id"][sample_mapping[i]])
            encoded["offset_mapping"][i] = [
                offset if sequence_ids[k] == context_index else None for k, offset in enumerate(offsets)
            ]
    return encoded


def _answer_span(input_ids, offsets, sequence_ids, context_index, tokenizer, answers) -> tuple[int, int]:
    """Token indices of the first gold answer in one window, or the CLS index twice if it is not all there."""
    if tokenizer.cls_token_id in input_ids:
        cls_index = input_ids.index(tokenizer.cls_token_id)
    elif tokenizer.bos_token_id is not None and tokenizer.bos_token_id in input_ids:
        cls_index = input_ids.index(tokenizer.bos_token_id)
    else:
        cls_index = 0
    if not answers["answer_start"]:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    token_start = sequence_ids.index(context_index)
    token_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_index)
    if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
        return cls_index, cls_index
    while token_start < len(offsets) and offsets[token_start][0] <= start_char:
        token_start += 1
    while offsets[token_end][1] >= end_char:
        token_end -= 1
    return token_start - 1, token_end + 1


def build_features(
    examples: Dataset,
    tokenizer,
    *,
    purpose: str,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = True,
    num_proc: int | None = None,
    load_from_cache_file: bool | None = None,
) -> Dataset:
    """``examples.map`` with ``squad_features`` for ``purpose``; drops the raw columns."""
    if doc_stride >= max_seq_length:
        raise TicketError(f"doc_stride {doc_stride} must be smaller than max_seq_length {max_seq_length}")
    function = partial(
        squad_features,
        tokenizer=tokenizer,
        purpose=purpose,
        max_seq_length=max_seq_length,
        doc_stride=doc_stride,
        pad_to_max_length=pad_to_max_length,
    )
    try:
        return examples.map(
            function,
            batched=True,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            remove_columns=examples.column_names,
            desc=f"Windowing {purpose} contexts",
        )
    except BaseException as err:  # the Rust tokenizer panics (a BaseException) instead of raising
        if "stride" not in str(err):
            raise
        raise TicketError(
            f"doc_stride {doc_stride} leaves no room in max_seq_length {max_seq_length} for the context next to "
            f"the longest questions; raise --max_seq_length or lower --doc_stride"
        ) from None


def model_inputs(features: Dataset) -> Dataset:
    """The features the model sees: without the bookkeeping columns used by post-processing."""
    return features.remove_columns([c for c in ("example_id", "offset_mapping") if c in features.column_names])
