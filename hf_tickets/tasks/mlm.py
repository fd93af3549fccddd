"""Masked language modelling data as in the stock ``run_mlm.py``: raw text files, tokenized and
concatenated into fixed-size blocks, masked on the fly by ``DataCollatorForLanguageModeling``.
"""

from __future__ import annotations

import logging
from itertools import chain
from pathlib import Path

from datasets import DatasetDict, load_dataset
from transformers import DataCollatorForLanguageModeling

logger = logging.getLogger(__name__)

# The stock script caps an unset block size here: longer blocks rarely fit in memory.
DEFAULT_MAX_BLOCK_SIZE = 1024


def _load_text(path: Path, cache_dir: str | None):
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return load_dataset("text", data_files={"data": str(path)}, cache_dir=cache_dir)["data"]
    except Exception as exc:  # the loader raises several types (UnicodeDecodeError wrapped, arrow errors)
        raise ValueError(f"{path}: cannot be read as UTF-8 text: {exc}") from exc


def load_text_files(
    train_file: str | Path,
    validation_file: str | Path | None = None,
    validation_split_percentage: int = 5,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Splits ``train`` and ``validation`` with one ``text`` row per line of the files.

    Without a validation file, the first ``validation_split_percentage`` percent of the training
    lines become the validation split, as the stock script's ``train[:N%]`` slice does.
    """
    train = _load_text(Path(train_file), cache_dir)
    if validation_file is not None:
        return DatasetDict(train=train, validation=_load_text(Path(validation_file), cache_dir))
    if not 0 < validation_split_percentage < 100:
        raise ValueError(f"validation_split_percentage must be in (0, 100), got {validation_split_percentage}")
    n_validation = round(len(train) * validation_split_percentage / 100)
    if not 0 < n_validation < len(train):
        raise ValueError(
            f"{train_file}: {len(train)} lines are too few for a {validation_split_percentage}% validation split"
        )
    return DatasetDict(
        train=train.select(range(n_validation, len(train))),
        validation=train.select(range(n_validation)),
    )


def resolve_block_size(tokenizer, block_size: int | None) -> int:
    """The requested block size, bounded by what the model accepts."""
    if block_size is None:
        return min(tokenizer.model_max_length, DEFAULT_MAX_BLOCK_SIZE)
    if block_size > tokenizer.model_max_length:
        logger.warning(
            "block_size %d exceeds the tokenizer's %d; using %d",
            block_size,
            tokenizer.model_max_length,
            tokenizer.model_max_length,
        )
        return tokenizer.model_max_length
    return block_size


def tokenize_and_group(
    raw_datasets: DatasetDict, tokenizer, block_size: int | None = None, map_kwargs: dict | None = None
) -> DatasetDict:
    """Tokenize every non-blank line, concatenate each split and cut it into ``block_size`` blocks.

    The remainder shorter than a block is dropped. ``special_tokens_mask`` is kept so the collator
    never masks [CLS]/[SEP].
    """
    block_size = resolve_block_size(tokenizer, block_size)

    def tokenize(examples):
        # WikiText writes blank lines as a single space: they carry no text, only [CLS] [SEP].
        lines = [line for line in examples["text"] if line.strip()]
        return tokenizer(lines, return_special_tokens_mask=True)

    def group(examples):
        concatenated = {key: list(chain.from_iterable(values)) for key, values in examples.items()}
        total = len(concatenated["input_ids"]) // block_size * block_size
        return {
            key: [values[i : i + block_size] for i in range(0, total, block_size)]
            for key, values in concatenated.items()
        }

    tokenized = DatasetDict(
        {
            split: dataset.map(
                tokenize,
                batched=True,
                remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
                **(map_kwargs or {}),
            )
            for split, dataset in raw_datasets.items()
        }
    )
    # Batches of 1,000 lines are grouped separately, as in the stock script: each drops its own remainder.
    return DatasetDict(
        {
            split: dataset.map(
                group, batched=True, desc=f"Grouping {split} into blocks of {block_size}", **(map_kwargs or {})
            )
            for split, dataset in tokenized.items()
        }
    )


def mlm_data_collator(
    tokenizer, mlm_probability: float = 0.15, pad_to_multiple_of: int | None = None, seed: int | None = None
) -> DataCollatorForLanguageModeling:
    """BERT's masking: 15% of tokens, of which 80% [MASK], 10% random, 10% unchanged."""
    return DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of, seed=seed
    )


def tokenize_line_by_line(
    raw_datasets: DatasetDict,
    tokenizer,
    max_seq_length: int | None = None,
    pad_to_max_length: bool = False,
    map_kwargs: dict | None = None,
) -> DatasetDict:
    """``--line_by_line``: every non-empty line is one sequence, truncated to ``max_seq_length``."""
    max_seq_length = resolve_block_size(tokenizer, max_seq_length)
    padding = "max_length" if pad_to_max_length else False

    def tokenize(examples):
        lines = [line for line in examples["text"] if len(line) > 0 and not line.isspace()]
        return tokenizer(
            lines, padding=padding, truncation=True, max_length=max_seq_length, return_special_tokens_mask=True
        )

    return DatasetDict(
        {
            split: dataset.map(
                tokenize,
                batched=True,
                remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
                **(map_kwargs or {}),
            )
            for split, dataset in raw_datasets.items()
        }
    )
