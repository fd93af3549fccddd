"""run_mlm's stock flags (--model_type, --config_overrides, --dtype/--torch_dtype, --low_cpu_mem_usage,
--line_by_line, pad_to_max_length default) and the recipes' composed arguments."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY

from hf_tickets.experiments.arguments import MLMDataArguments, MLMModelArguments, TicketArguments
from hf_tickets.experiments.experiment import load_theta0, load_tokenizer, parse_recipe_args
from hf_tickets.tasks.prepared import prepare_mlm
from hf_tickets.training.imp_config import IMPConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_mlm  # noqa: E402

LINES = ["the cat sat on the mat .", "", "the dog sat on the rug .", "a cat and a dog ."] * 6
RUN = ["--use_cpu", "--report_to", "none", "--save_strategy", "no", "--max_seq_length", "16", "--imp_rounds", "0"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_text("\n".join(LINES) + "\n")
    return str(path)


def parse(*argv):
    return parse_recipe_args(MLMDataArguments, list(argv), MLMModelArguments)


def read(path):
    return json.loads(Path(path).read_text())


def test_model_type_and_config_overrides_build_a_fresh_model(tiny_base, text, tmp_path):
    overrides = ",".join(f"{k}={v}" for k, v in {**TINY, "vocab_size": 30522, "max_position_embeddings": 64}.items())
    run_mlm.main(
        ["--model_type", "bert", "--config_overrides", overrides, "--tokenizer_name", tiny_base]
        + ["--train_file", text, "--output_dir", str(tmp_path), "--do_train", "--max_steps", "2", *RUN]
    )
    config = read(tmp_path / "config.json")
    assert (config["model_type"], config["hidden_size"], config["max_position_embeddings"]) == ("bert", 32, 64)
    with pytest.raises(ValueError, match="config_overrides"):
        parse("--model_name_or_path", tiny_base, "--config_overrides", "hidden_size=8", "--train_file", text)
    with pytest.raises(ValueError, match="tokenizer_name"):
        parse("--model_type", "bert", "--train_file", text)


def test_line_by_line_makes_one_sequence_per_line(tiny_base, text, tmp_path):
    run_mlm.main(
        ["--model_name_or_path", tiny_base, "--train_file", text, "--validation_file", text, "--line_by_line"]
        + ["--output_dir", str(tmp_path), "--do_train", "--do_eval", "--max_steps", "2", *RUN]
    )
    non_empty = sum(1 for line in LINES if line.strip())
    assert read(tmp_path / "train_results.json")["train_samples"] == non_empty
    results = read(tmp_path / "all_results.json")
    assert results["eval_samples"] == non_empty and results["perplexity"] == pytest.approx(
        torch.tensor(results["eval_loss"]).exp().item(), rel=1e-5
    )


def test_dtype_and_its_torch_dtype_alias(tiny_base, text):
    for flag in ("--dtype", "--torch_dtype"):
        model_args, data_args, training_args, _, _ = parse(
            "--model_name_or_path", tiny_base, "--train_file", text, flag, "bfloat16", "--low_cpu_mem_usage"
        )
        assert model_args.dtype == "bfloat16" and model_args.low_cpu_mem_usage
        task = prepare_mlm(data_args, load_tokenizer(model_args))
        assert next(load_theta0(model_args, task).parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="contradicts"):
        parse("--model_name_or_path", tiny_base, "--train_file", text, "--dtype", "float16", "--torch_dtype", "float32")


def test_stock_defaults_and_refusals(tiny_base, text):
    _, data_args, _, search_args, ticket_args = parse("--model_name_or_path", tiny_base, "--train_file", text)
    assert data_args.pad_to_max_length is False and data_args.line_by_line is False  # as the stock run_mlm
    assert isinstance(search_args, IMPConfig) and search_args.matching_metric is None  # the task's, later
    assert isinstance(ticket_args, TicketArguments) and not isinstance(ticket_args, IMPConfig)
    with pytest.raises(ValueError, match="--streaming is not supported"):
        parse("--model_name_or_path", tiny_base, "--train_file", text, "--streaming")


def test_parsing_arguments_does_not_load_the_imp_engine():
    code = "import sys, hf_tickets.experiments.arguments; print('hf_tickets.training.imp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
