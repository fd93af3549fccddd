"""run_glue ends like the stock script: what output_dir holds after a dense run, a transfer and a
search; eval_dataset in the Trainer; --do_predict; resume and the overwrite rule; the plan log."""

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from tiny import RECIPE_FLAGS
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForMaskedLM

import hf_tickets
from hf_tickets.core.errors import TicketError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402

FAST = RECIPE_FLAGS
STOCK_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "trainer_state.json")


def glue_args(base, files, out, *extra):
    train, dev = files
    return [
        "--model_name_or_path",
        base,
        "--task_name",
        "sst2",
        "--train_file",
        str(train),
        "--validation_file",
        str(dev),
        "--output_dir",
        str(out),
        *FAST,
        *extra,
    ]


def read(path):
    return json.loads(Path(path).read_text())


def test_dense_run_leaves_what_the_stock_script_leaves(tiny_base, sst2, tmp_path):
    metrics = run_glue.main(
        glue_args(tiny_base, sst2, tmp_path, "--do_train", "--do_eval", "--max_steps", "12", "--imp_rounds", "0")
    )
    assert all((tmp_path / name).is_file() for name in STOCK_FILES)
    train, evaluation, everything = (
        read(tmp_path / f) for f in ("train_results.json", "eval_results.json", "all_results.json")
    )
    assert {"train_runtime", "train_samples", "train_loss", "train_samples_per_second"} <= set(train)
    assert train["train_samples"] == 40 and evaluation["eval_samples"] == 20
    assert everything == {**train, **evaluation} and everything["eval_accuracy"] == metrics["eval_accuracy"]
    assert "train_time_s" not in everything  # the Trainer's keys only
    assert read(tmp_path / "trainer_state.json")["global_step"] == 12
    # The saved model is the trained one: plain from_pretrained reproduces the reported accuracy.
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    lines = sst2[1].read_text().splitlines()[1:]
    texts, labels = [line.split("\t")[0] for line in lines], [int(line.split("\t")[1]) for line in lines]
    with torch.no_grad():
        logits = model(
            **tokenizer(texts, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
        ).logits
    accuracy = (logits.argmax(-1) == torch.tensor(labels)).float().mean().item()
    assert accuracy == pytest.approx(evaluation["eval_accuracy"])


def test_search_exports_the_chosen_rounds_sparse_model_with_its_ticket(tiny_base, sst2, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hf_tickets")
    test = tmp_path.parent / f"{tmp_path.name}_test.tsv"
    test.write_text("index\tsentence\n" + "".join(f"{i}\ta dull mess {i}\n" for i in range(7)))
    results = run_glue.main(
        glue_args(
            tiny_base, sst2, tmp_path, "--do_train", "--do_eval", "--max_steps", "8", "--sparsity_schedule", "0.3,0.6"
        )
        + ["--do_predict", "--test_file", str(test)]
    )
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Plan:"))
    assert "3 fine-tunes" in plan and "0.300, 0.600" in plan and "--imp_rounds 0" in plan
    chosen = results["exported"]["round"]
    expected = results["matching"]["round"] or 2  # the matching round, else the sparsest
    assert chosen == expected
    ticket = hf_tickets.Ticket.from_pretrained(tmp_path)
    assert ticket.equals(hf_tickets.Ticket.from_pretrained(tmp_path / f"round_{chosen:02d}" / "ticket"))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    params = ticket.parameters_of(model)
    for name, mask in ticket.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0  # the sparse trained model
    row = results["rounds"][chosen]
    everything = read(tmp_path / "all_results.json")
    assert everything["eval_accuracy"] == row["eval_accuracy"] and everything["train_samples"] == 40
    assert read(tmp_path / "trainer_state.json")["global_step"] == 8
    assert (tmp_path / "README.md").is_file() and (tmp_path / "tokenizer_config.json").is_file()
    assert len((tmp_path / "predict_results_sst2.txt").read_text().splitlines()) == 8  # by the exported model
    # Only rounds that can still be exported keep trained weights; every round keeps its ticket.
    weights = sorted(p.parts[-3] for p in tmp_path.glob("round_*/checkpoints/model.safetensors"))
    assert set(weights) <= {"round_02", f"round_{results['matching']['round'] or 2:02d}"}


def test_eval_strategy_and_best_model_reach_the_trainer(tiny_base, sst2, tmp_path):
    common = ("--do_train", "--do_eval", "--max_steps", "6", "--eval_strategy", "steps", "--eval_steps", "3")
    best = (
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--load_best_model_at_end",
        "--metric_for_best_model",
        "accuracy",
    )
    run_glue.main(glue_args(tiny_base, sst2, tmp_path / "dense", *common, *best, "--imp_rounds", "0"))
    history = read(tmp_path / "dense" / "trainer_state.json")["log_history"]
    assert [h["step"] for h in history if "eval_accuracy" in h][:2] == [3, 6]
    assert read(tmp_path / "dense" / "trainer_state.json")["best_model_checkpoint"] is not None
    run_glue.main(
        glue_args(tiny_base, sst2, tmp_path / "imp", *common, "--save_strategy", "no", "--sparsity_schedule", "0.5")
    )
    round_state = read(tmp_path / "imp" / "round_01" / "checkpoints" / "trainer_state.json")
    assert [h["step"] for h in round_state["log_history"] if "eval_accuracy" in h][:2] == [3, 6]


def test_do_predict_writes_predict_results_as_stock(tiny_base, sst2, tmp_path):
    test = tmp_path / "test.tsv"
    test.write_text("index\tsentence\n" + "".join(f"{i}\ta great film {i}\n" for i in range(9)))
    run_glue.main(
        glue_args(
            tiny_base,
            sst2,
            tmp_path / "out",
            "--do_eval",
            "--do_predict",
            "--test_file",
            str(test),
            "--max_predict_samples",
            "5",
            "--imp_rounds",
            "0",
        )
    )
    lines = (tmp_path / "out" / "predict_results_sst2.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 6
    assert all(line.split("\t")[1] in ("negative", "positive") for line in lines[1:])
    with pytest.raises(ValueError, match="--test_file"):
        run_glue.main(glue_args(tiny_base, sst2, tmp_path / "none", "--do_predict", "--imp_rounds", "0"))


def test_dense_run_resumes_from_its_last_checkpoint(tiny_base, sst2, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hf_tickets")
    args = ("--do_train", "--imp_rounds", "0", "--save_strategy", "steps", "--save_steps", "4")
    run_glue.main(glue_args(tiny_base, sst2, tmp_path, *args, "--max_steps", "4"))
    run_glue.main(glue_args(tiny_base, sst2, tmp_path, *args, "--max_steps", "8"))
    assert any("resuming training at" in r.getMessage() and "checkpoint-4" in r.getMessage() for r in caplog.records)
    state = read(tmp_path / "trainer_state.json")
    assert state["global_step"] == 8 and min(h["step"] for h in state["log_history"]) > 4  # steps 1-4 not redone
    resume = ("--resume_from_checkpoint", str(tmp_path / "checkpoint-4"))
    run_glue.main(glue_args(tiny_base, sst2, tmp_path / "other", *args, "--max_steps", "8", *resume))
    state = read(tmp_path / "other" / "trainer_state.json")
    assert state["global_step"] == 8 and min(h["step"] for h in state["log_history"]) > 4


def test_a_non_resumable_output_dir_is_refused(tiny_base, sst2, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for extra in (("--imp_rounds", "0"), ("--sparsity_schedule", "0.5")):
        with pytest.raises(TicketError, match="not empty.*notes.txt"):
            run_glue.main(glue_args(tiny_base, sst2, tmp_path, "--do_train", "--max_steps", "2", *extra))
    with pytest.raises(TicketError, match="resumes from its own output_dir"):
        run_glue.main(
            glue_args(
                tiny_base,
                sst2,
                tmp_path / "new",
                "--do_train",
                "--sparsity_schedule",
                "0.5",
                "--resume_from_checkpoint",
                str(tmp_path),
            )
        )


def test_transfer_leaves_the_trained_sparse_model_and_its_ticket(tiny_base, sst2, tmp_path):
    hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.6).save_pretrained(tmp_path / "ticket")
    run_glue.main(
        glue_args(
            tiny_base,
            sst2,
            tmp_path / "out",
            "--do_train",
            "--do_eval",
            "--max_steps",
            "4",
            "--ticket",
            str(tmp_path / "ticket"),
        )
    )
    out = tmp_path / "out"
    assert all((out / name).is_file() for name in STOCK_FILES) and (out / "transfer_results.json").is_file()
    ticket = hf_tickets.Ticket.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert ticket.sparsity == pytest.approx(0.6, abs=1e-3)
    params = ticket.parameters_of(model)
    for name, mask in ticket.masks.items():
        assert torch.count_nonzero(params[name].detach()[~mask]) == 0
    assert {"eval_accuracy", "eval_samples", "train_runtime", "train_samples"} <= set(read(out / "all_results.json"))


def test_checkpoint_hub_strategies_are_refused(tiny_base, sst2, tmp_path):
    with pytest.raises(TicketError, match="hub_strategy checkpoint"):
        run_glue.main(
            glue_args(
                tiny_base,
                sst2,
                tmp_path,
                "--do_train",
                "--imp_rounds",
                "0",
                "--push_to_hub",
                "--hub_strategy",
                "checkpoint",
            )
        )


def test_early_stopping_works_because_the_trainer_has_the_eval_set(tiny_base, sst2, tmp_path):
    from transformers import EarlyStoppingCallback, TrainingArguments

    from hf_tickets.experiments.arguments import GlueDataArguments, ModelArguments
    from hf_tickets.experiments.experiment import fine_tune, load_theta0, load_tokenizer
    from hf_tickets.tasks.prepared import prepare_glue

    model_args = ModelArguments(model_name_or_path=tiny_base)
    train, dev = sst2
    data_args = GlueDataArguments(task_name="sst2", train_file=str(train), validation_file=str(dev), max_seq_length=32)
    task = prepare_glue(data_args, load_tokenizer(model_args))
    args = TrainingArguments(
        output_dir=str(tmp_path), do_train=True, do_eval=True, max_steps=40, learning_rate=0.0,
        eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
        metric_for_best_model="loss", use_cpu=True, report_to="none", per_device_train_batch_size=8,
    )  # fmt: skip
    stop = EarlyStoppingCallback(early_stopping_patience=2)  # a learning rate of 0 never improves the loss
    metrics = fine_tune(load_theta0(model_args, task), task, args, callbacks=[stop])
    assert metrics["train_steps"] == 3


def test_an_interrupted_search_resumes_in_its_output_dir(tiny_base, sst2, tmp_path, caplog):
    args = glue_args(
        tiny_base, sst2, tmp_path, "--do_train", "--do_eval", "--max_steps", "4", "--sparsity_schedule", "0.5"
    )
    args += ["--save_strategy", "steps", "--save_steps", "2"]
    first = run_glue.main(args)
    # As if killed at the end of round 1's training: its checkpoints exist, its metrics were never written.
    (tmp_path / "round_01" / "metrics.json").unlink()
    caplog.set_level(logging.INFO, logger="hf_tickets")
    again = run_glue.main(args)
    messages = [r.getMessage() for r in caplog.records]
    assert any("resuming it" in m for m in messages)  # the recipe says what it reuses
    # Round 1 had finished training (checkpoint-4 is at max_steps): loaded, not trained again, same record.
    assert any("training had finished" in m and "checkpoint-4" in m for m in messages)
    assert [r["sparsity"] for r in again["rounds"]] == [r["sparsity"] for r in first["rounds"]]
    assert again["rounds"][1]["train_steps"] == first["rounds"][1]["train_steps"] == 4
    assert again["rounds"][1]["train_loss"] == pytest.approx(first["rounds"][1]["train_loss"], rel=1e-6)
    assert hf_tickets.Ticket.from_pretrained(tmp_path).equals(
        hf_tickets.Ticket.from_pretrained(tmp_path / "round_01" / "ticket")
    )
