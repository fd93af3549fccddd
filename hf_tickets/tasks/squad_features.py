"""The sliding-window features of the stock ``run_qa.py``: a long context becomes overlapping windows,
each labelled with the answer's token span (training) or mapped back to the context (evaluation)."""

from __future__ import annotations

from functools import partial

from datasets import Dataset

from hf_tickets.core.errors import TicketError

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
