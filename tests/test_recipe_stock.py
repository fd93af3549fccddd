"""The stock examples' own tests (transformers' examples/pytorch/test_pytorch_examples.py:
test_run_glue, test_run_mlm) with their argument lists unchanged: only the model path, the data
paths and --use_cpu differ. The tiny models have already learned the tiny data (the stock tests
start from pre-trained distilbert/distilroberta), so the stock thresholds are meaningful.

With no ticket flag, a stock command runs the default ticket search (rounds to 90% sparsity) and
ends with the exported ticket's model in output_dir, scored in all_results.json.
"""

import itertools
import json
import sys
from pathlib import Path

import pytest
from tiny import tiny_checkpoint
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

import hf_tickets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402
import run_mlm  # noqa: E402

PAIRS = [
    ("a great film", "i loved it", 1),
    ("wonderful and moving", "worth seeing", 1),
    ("a dull mess", "i left early", 0),
    ("boring and flat", "not worth it", 0),
]
SENTENCES = ["the cat sat on the mat .", "the dog sat on the rug .", "a cat and a dog sat ."]


def get_results(output_dir):
    """As the stock test helper: all_results.json of the run."""
    return json.loads((Path(output_dir) / "all_results.json").read_text())


def write_mrpc_csv(directory: Path, n_train=24, n_dev=12):
    directory.mkdir(parents=True, exist_ok=True)
    rows = itertools.cycle(PAIRS)
    for name, n in (("train.csv", n_train), ("dev.csv", n_dev)):
        lines = ["label,sentence1,sentence2"] + [f"{y},{a},{b}" for a, b, y in itertools.islice(rows, n)]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory / "train.csv", directory / "dev.csv"


@pytest.fixture(scope="module")
def mrpc(tmp_path_factory):
    return write_mrpc_csv(tmp_path_factory.mktemp("MRPC"))


@pytest.fixture(scope="module")
def tiny_mrpc_model(tmp_path_factory, mrpc):
    """A tiny BERT that has learned the tiny MRPC-like data (a dense fine-tune through the recipe)."""
    base = tiny_checkpoint(tmp_path_factory.mktemp("base") / "model")
    out = tmp_path_factory.mktemp("mrpc_model") / "model"
    train, dev = mrpc
    run_glue.main(
        ["--model_name_or_path", base, "--train_file", str(train), "--validation_file", str(dev)]
        + ["--output_dir", str(out), "--do_train", "--max_steps", "40", "--learning_rate", "5e-3"]
        + ["--per_device_train_batch_size", "8", "--max_seq_length", "32", "--imp_rounds", "0", "--use_cpu"]
        + ["--report_to", "none", "--save_strategy", "no"]
    )
    return str(out)


@pytest.fixture(scope="module")
def sample_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("fixtures") / "sample_text.txt"
    path.write_text("\n".join(itertools.islice(itertools.cycle(SENTENCES), 60)) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_mlm_model(tmp_path_factory, sample_text):
    """A tiny BERT that has learned the sample text (positions for 128 tokens, so blocks of 128)."""
    base = Path(tiny_checkpoint(tmp_path_factory.mktemp("base") / "model"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(base)
    out = tmp_path_factory.mktemp("mlm_model") / "model"
    run_mlm.main(
        ["--model_name_or_path", str(base), "--train_file", str(sample_text), "--output_dir", str(out)]
        + ["--do_train", "--max_steps", "150", "--learning_rate", "5e-3", "--per_device_train_batch_size", "4"]
        + ["--max_seq_length", "32", "--imp_rounds", "0", "--use_cpu", "--report_to", "none", "--save_strategy", "no"]
    )
    return str(out)


def test_run_glue(tiny_mrpc_model, mrpc, tmp_path):
    train, dev = mrpc
    testargs = f"""
        run_glue.py
        --model_name_or_path {tiny_mrpc_model}
        --output_dir {tmp_path}
        --train_file {train}
        --validation_file {dev}
        --do_train
        --do_eval
        --per_device_train_batch_size=2
        --per_device_eval_batch_size=1
        --learning_rate=1e-4
        --max_steps=10
        --warmup_steps=2
        --seed=42
        --max_seq_length=128
        --use_cpu
        """.split()
    run_glue.main(testargs[1:])
    result = get_results(tmp_path)
    assert result["eval_accuracy"] >= 0.75
    assert {"train_runtime", "train_samples", "eval_samples"} <= set(result)
    # The default search ran and output_dir holds the exported ticket's sparse model.
    assert len(list(tmp_path.glob("round_*"))) == 23
    ticket = hf_tickets.Ticket.from_pretrained(tmp_path)
    assert ticket.sparsity > 0.05
    AutoModelForSequenceClassification.from_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tmp_path)


def test_run_mlm(tiny_mlm_model, sample_text, tmp_path):
    testargs = f"""
        run_mlm.py
        --model_name_or_path {tiny_mlm_model}
        --train_file {sample_text}
        --validation_file {sample_text}
        --output_dir {tmp_path}
        --do_train
        --do_eval
        --prediction_loss_only
        --num_train_epochs=1
        --use_cpu
        """.split()
    run_mlm.main(testargs[1:])
    result = get_results(tmp_path)
    assert result["perplexity"] < 42
    assert {"train_runtime", "train_samples", "eval_samples", "eval_loss"} <= set(result)
    assert hf_tickets.Ticket.from_pretrained(tmp_path).sparsity > 0.05
    AutoModelForMaskedLM.from_pretrained(tmp_path)
