"""Calibrating a missing MLM head before an MLM ticket search: detection, a frozen encoder, the curve, θ0 and
the ticket's provenance. Tiny random BERTs; the text repeats a few sentences so a head can learn something."""

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_checkpoint
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM, BertModel, TrainingArguments

from hf_tickets.core.errors import TicketError
from hf_tickets.core.ticket import Ticket
from hf_tickets.tasks.prepared import prepare_mlm
from hf_tickets.training import head_calibration
from hf_tickets.training.head_calibration import (
    HeadCalibration,
    calibrate_mlm_head,
    head_parameter_names,
    missing_mlm_head_keys,
    resolve_calibration_steps,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_mlm  # noqa: E402

SENTENCES = ["the cat sat on the mat .", "a dog ran in the park .", "the sun is hot today ."]


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    """A tiny BERT saved without an MLM head, as sentence-transformers' MiniLM is."""
    return tiny_checkpoint(tmp_path_factory.mktemp("headless") / "model", cls=BertModel)


@pytest.fixture(scope="module")
def with_head(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("with_head") / "model", cls=BertForMaskedLM)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n".join(SENTENCES * 60) + "\n")
    return path


def mlm_task(model_path, text_file):
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data_args = SimpleNamespace(
        dataset_name=None,
        dataset_config_name=None,
        validation_split_percentage=5,
        train_file=str(text_file),
        validation_file=str(text_file),
        max_seq_length=16,
        max_train_samples=64,
        max_eval_samples=16,
        mlm_probability=0.15,
    )
    return prepare_mlm(data_args, tokenizer, seed=0), tokenizer


def test_detects_a_missing_mlm_head_from_the_loading_info(headless, with_head, caplog):
    missing = missing_mlm_head_keys(headless)
    assert missing and all(k.startswith("cls.") for k in missing)
    assert missing_mlm_head_keys(with_head) == []
    with caplog.at_level(logging.WARNING, logger="hf_tickets"):
        assert resolve_calibration_steps(None, headless) == head_calibration.DEFAULT_CALIBRATION_STEPS
    assert "no pre-trained MLM head" in caplog.text and "--calibrate_head_steps 0" in caplog.text
    assert resolve_calibration_steps(None, with_head) == 0
    assert resolve_calibration_steps(0, headless) == 0  # 0 turns it off even without a head
    assert resolve_calibration_steps(7, with_head) == 7
    with pytest.raises(TicketError, match="calibrate_head_steps"):
        resolve_calibration_steps(-1, headless)


def test_calibration_trains_the_head_only_and_records_the_curve(headless, text_file, tmp_path):
    task, tokenizer = mlm_task(headless, text_file)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(headless)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = set(head_parameter_names(model))
    assert head and not any(k.startswith("bert.") for k in head)
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, report_to=[], seed=0, disable_tqdm=True
    )
    calibration = calibrate_mlm_head(
        model,
        task.train_dataset,
        task.eval_datasets["eval"],
        tokenizer,
        args,
        max_steps=40,
        eval_every=5,
        learning_rate=1e-2,
    )
    after = model.state_dict()
    # The encoder (the tied decoder weight included: it is the word embeddings) is bit-identical ...
    for name, value in before.items():
        if name.startswith("bert."):
            assert torch.equal(value, after[name]), name
    # ... and the head moved.
    assert any(not torch.equal(before[n], after[n]) for n in head)
    assert all(p.requires_grad for p in model.parameters())  # trainability restored for the search
    steps = [p["step"] for p in calibration.curve]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == calibration.steps and len(steps) >= 3
    assert calibration.final_accuracy > calibration.initial_accuracy  # the repeated text is learnable
    record = calibration.to_provenance()
    assert record["final_masked_token_accuracy"] == calibration.final_accuracy
    assert record["curve"][0][0] == 0 and record["steps"] == calibration.steps
    saved = HeadCalibration.load(calibration.save(tmp_path / "record.json"))
    assert saved == calibration


def test_calibration_stops_at_a_plateau(headless, text_file, tmp_path):
    task, tokenizer = mlm_task(headless, text_file)
    model = AutoModelForMaskedLM.from_pretrained(headless)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, report_to=[])
    # A learning rate this small cannot move the accuracy by min_delta: the plateau rule ends the run early.
    calibration = calibrate_mlm_head(
        model,
        task.train_dataset,
        task.eval_datasets["eval"],
        tokenizer,
        args,
        max_steps=200,
        eval_every=2,
        learning_rate=1e-9,
        patience=2,
    )
    assert calibration.plateaued and 50 <= calibration.steps < 200  # judged after a quarter of the steps


def test_mlm_recipe_calibrates_a_missing_head_into_theta0_and_the_ticket(headless, text_file, tmp_path):
    out = tmp_path / "mlm"
    run_mlm.main(
        [
            "--model_name_or_path", headless, "--train_file", str(text_file), "--validation_file", str(text_file),
            "--output_dir", str(out), "--max_seq_length", "16", "--max_train_samples", "32",
            "--max_eval_samples", "8", "--max_steps", "2", "--sparsity_schedule", "0.3",
            "--calibrate_head_steps", "12", "--learning_rate", "1e-2", "--do_train", "--do_eval", "--use_cpu",
            "--report_to", "none", "--save_strategy", "no", "--per_device_train_batch_size", "8",
        ]
    )  # fmt: skip
    record = json.loads((out / "head_calibration.json").read_text())
    assert 0 < record["steps"] <= 12 and record["curve"][0]["step"] == 0
    ticket = Ticket.from_pretrained(out)
    provenance = ticket.config.provenance["head_calibration"]
    assert provenance["steps"] == record["steps"]
    assert provenance["final_masked_token_accuracy"] == record["curve"][-1]["accuracy"]
    # θ0 (what IMP rewinds to) holds the calibrated head on top of the checkpoint's unchanged encoder.
    theta0 = load_file(out / "theta0.safetensors")
    torch.manual_seed(0)  # load_theta0's seed: the same random head as the search started from
    fresh = AutoModelForMaskedLM.from_pretrained(headless).state_dict()
    assert torch.equal(
        theta0["bert.encoder.layer.0.attention.self.query.weight"],
        fresh["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert not torch.equal(
        theta0["cls.predictions.transform.dense.weight"], fresh["cls.predictions.transform.dense.weight"]
    )


def test_mlm_recipe_leaves_a_checkpoint_with_its_head_alone(with_head, text_file, tmp_path):
    out = tmp_path / "mlm"
    run_mlm.main(
        [
            "--model_name_or_path", with_head, "--train_file", str(text_file), "--validation_file", str(text_file),
            "--output_dir", str(out), "--max_seq_length", "16", "--max_train_samples", "16",
            "--max_eval_samples", "8", "--max_steps", "1", "--sparsity_schedule", "0.3", "--do_train", "--do_eval",
            "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--per_device_train_batch_size", "8",
        ]
    )  # fmt: skip
    assert not (out / "head_calibration.json").exists()
    assert "head_calibration" not in Ticket.from_pretrained(out).config.provenance
