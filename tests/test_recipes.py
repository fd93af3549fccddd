"""The recipes end to end on a tiny model: dense fine-tune, transfer of a ticket, QA and MLM plumbing."""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForMaskedLM

import hf_tickets
from hf_tickets.tasks import shared_data_dir
from tiny import tiny_checkpoint, write_sst2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402
import run_mlm  # noqa: E402
import run_qa  # noqa: E402

COMMON = ["--do_train", "--do_eval", "--use_cpu", "--report_to", "none", "--per_device_train_batch_size", "8",
          "--max_seq_length", "32", "--save_strategy", "no", "--learning_rate", "5e-3", "--seed", "0"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory):
    return write_sst2(tmp_path_factory.mktemp("sst2"))


def test_dense_fine_tune_learns_the_task(tiny_base, sst2_files, tmp_path):
    train, dev = sst2_files
    metrics = run_glue.main(["--model_name_or_path", tiny_base, "--task_name", "sst2", "--train_file", str(train),
                             "--validation_file", str(dev), "--output_dir", str(tmp_path), "--max_steps", "30", *COMMON])
    assert metrics["eval_accuracy"] >= 0.9
    assert json.loads((tmp_path / "all_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]


def test_transfer_trains_theta0_under_the_ticket(tiny_base, sst2_files, tmp_path):
    ticket = hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.6)
    ticket.config.provenance = {"task": "mlm"}
    ticket.save_pretrained(tmp_path / "ticket")
    train, dev = sst2_files
    record = run_glue.main(["--model_name_or_path", tiny_base, "--task_name", "sst2", "--train_file", str(train),
                            "--validation_file", str(dev), "--output_dir", str(tmp_path / "out"), "--max_steps", "10",
                            "--ticket", str(tmp_path / "ticket"), *COMMON])
    assert record["ticket_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert record["metrics"]["sparsity"] == pytest.approx(0.6, abs=1e-3)  # measured on the trained model
    saved = json.loads((tmp_path / "out" / "transfer_results.json").read_text())
    assert saved["task"] == "sst2" and saved["ticket_provenance"] == {"task": "mlm"}


def test_a_ticket_for_another_base_is_refused(tiny_base, sst2_files, tmp_path):
    other = tiny_checkpoint(tmp_path / "other", seed=1)
    hf_tickets.prune(BertForMaskedLM.from_pretrained(other), 0.5).save_pretrained(tmp_path / "ticket")
    train, dev = sst2_files
    with pytest.raises(hf_tickets.TicketError, match="fingerprint"):
        run_glue.main(["--model_name_or_path", tiny_base, "--task_name", "sst2", "--train_file", str(train),
                       "--validation_file", str(dev), "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
                       "--ticket", str(tmp_path / "ticket"), *COMMON])


def test_run_qa_scores_squad_v1(tiny_base, tmp_path):
    squad = shared_data_dir() / "squad" / "xquad.en.json"
    metrics = run_qa.main(["--model_name_or_path", tiny_base, "--train_file", str(squad), "--validation_file", str(squad),
                           "--output_dir", str(tmp_path), "--max_steps", "3", "--max_train_samples", "24",
                           "--max_eval_samples", "12", "--doc_stride", "16", *COMMON, "--max_seq_length", "96"])
    assert 0 <= metrics["eval_exact_match"] <= metrics["eval_f1"] <= 100


def test_run_qa_too_small_a_window_is_a_clear_error(tiny_base, tmp_path):
    squad = shared_data_dir() / "squad" / "xquad.en.json"
    with pytest.raises(ValueError, match="doc_stride 16 leaves no room"):
        run_qa.main(["--model_name_or_path", tiny_base, "--validation_file", str(squad), "--output_dir", str(tmp_path),
                     "--max_eval_samples", "40", "--doc_stride", "16", *COMMON])


def test_run_mlm_reports_perplexity_and_masked_accuracy(tiny_base, tmp_path):
    text = shared_data_dir() / "wikitext-2" / "wiki.valid.raw"
    metrics = run_mlm.main(["--model_name_or_path", tiny_base, "--train_file", str(text), "--validation_file", str(text),
                            "--output_dir", str(tmp_path), "--max_steps", "3", "--max_train_samples", "48",
                            "--max_eval_samples", "16", *COMMON])
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-4)
    assert 0 <= metrics["eval_accuracy"] <= 1


def test_json_config_files_work_like_the_stock_scripts(tiny_base, sst2_files, tmp_path):
    train, dev = sst2_files
    config = {"model_name_or_path": tiny_base, "task_name": "sst2", "train_file": str(train), "validation_file": str(dev),
              "output_dir": str(tmp_path), "do_eval": True, "use_cpu": True, "report_to": "none", "max_seq_length": 32}
    (tmp_path / "args.json").write_text(json.dumps(config))
    metrics = run_glue.main([str(tmp_path / "args.json")])
    assert "eval_accuracy" in metrics and "train_steps" not in metrics


def test_bad_data_file_is_a_clear_error(tiny_base, tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\ngood\tmaybe\n")
    with pytest.raises(ValueError, match="maybe"):
        run_glue.main(["--model_name_or_path", tiny_base, "--task_name", "sst2", "--train_file", str(bad),
                       "--validation_file", str(bad), "--output_dir", str(tmp_path / "out"), *COMMON])
