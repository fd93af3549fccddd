"""The recipes end to end on a tiny model: dense fine-tune, transfer of a ticket, QA and MLM plumbing."""

import json
import sys
from pathlib import Path

import pytest
import torch
from tiny import TRAIN_EVAL_FLAGS, tiny_checkpoint
from transformers import BertForMaskedLM

import hf_tickets
from hf_tickets.tasks import shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402
import run_mlm  # noqa: E402
import run_qa  # noqa: E402

COMMON = TRAIN_EVAL_FLAGS


def test_dense_fine_tune_learns_the_task(tiny_base, sst2, tmp_path):
    train, dev = sst2
    metrics = run_glue.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--task_name",
            "sst2",
            "--train_file",
            str(train),
            "--validation_file",
            str(dev),
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "30",
            "--imp_rounds",
            "0",
            *COMMON,
        ]
    )
    assert metrics["eval_accuracy"] >= 0.9
    assert json.loads((tmp_path / "all_results.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]


def test_transfer_trains_theta0_under_the_ticket(tiny_base, sst2, tmp_path):
    ticket = hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.6)
    ticket.config.provenance = {"task": "mlm"}
    ticket.save_pretrained(tmp_path / "ticket")
    train, dev = sst2
    record = run_glue.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--task_name",
            "sst2",
            "--train_file",
            str(train),
            "--validation_file",
            str(dev),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "10",
            "--ticket",
            str(tmp_path / "ticket"),
            *COMMON,
        ]
    )
    assert record["ticket_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert record["metrics"]["sparsity"] == pytest.approx(0.6, abs=1e-3)  # measured on the trained model
    saved = json.loads((tmp_path / "out" / "transfer_results.json").read_text())
    assert saved["task"] == "sst2" and saved["ticket_provenance"] == {"task": "mlm"}


def test_a_ticket_for_another_base_is_refused(tiny_base, sst2, tmp_path):
    other = tiny_checkpoint(tmp_path / "other", seed=1)
    hf_tickets.prune(BertForMaskedLM.from_pretrained(other), 0.5).save_pretrained(tmp_path / "ticket")
    train, dev = sst2
    with pytest.raises(hf_tickets.TicketError, match="fingerprint"):
        run_glue.main(
            [
                "--model_name_or_path",
                tiny_base,
                "--task_name",
                "sst2",
                "--train_file",
                str(train),
                "--validation_file",
                str(dev),
                "--output_dir",
                str(tmp_path / "out"),
                "--max_steps",
                "2",
                "--ticket",
                str(tmp_path / "ticket"),
                *COMMON,
            ]
        )


def test_run_qa_finds_a_ticket_scored_by_squad_v1_f1(tiny_base, tmp_path):
    squad = shared_data_dir() / "squad" / "xquad.en.json"
    results = run_qa.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--train_file",
            str(squad),
            "--validation_file",
            str(squad),
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "3",
            "--max_train_samples",
            "24",
            "--max_eval_samples",
            "12",
            "--doc_stride",
            "16",
            "--sparsity_schedule",
            "0.5",
            *COMMON,
            "--max_seq_length",
            "96",
        ]
    )
    assert results["config"]["matching_metric"] == "eval_f1"
    for row in results["rounds"]:
        assert 0 <= row["eval_exact_match"] <= row["eval_f1"] <= 100
    assert hf_tickets.Ticket.from_pretrained(tmp_path).sparsity == pytest.approx(0.5, abs=1e-3)


def test_run_qa_too_small_a_window_is_a_clear_error(tiny_base, tmp_path):
    squad = shared_data_dir() / "squad" / "xquad.en.json"
    with pytest.raises(ValueError, match="doc_stride 16 leaves no room"):
        run_qa.main(
            [
                "--model_name_or_path",
                tiny_base,
                "--validation_file",
                str(squad),
                "--output_dir",
                str(tmp_path),
                "--max_eval_samples",
                "40",
                "--doc_stride",
                "16",
                *COMMON,
            ]
        )


def test_mlm_ticket_transfers_to_glue_and_squad(tiny_base, sst2, tmp_path):
    text = shared_data_dir() / "wikitext-2" / "wiki.valid.raw"
    results = run_mlm.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--train_file",
            str(text),
            "--validation_file",
            str(text),
            "--output_dir",
            str(tmp_path / "mlm"),
            "--max_steps",
            "3",
            "--max_train_samples",
            "48",
            "--max_eval_samples",
            "16",
            "--sparsity_schedule",
            "0.4",
            *COMMON,
        ]
    )
    for row in results["rounds"]:
        assert row["eval_perplexity"] == pytest.approx(torch.tensor(row["eval_loss"]).exp().item(), rel=1e-4)
        assert 0 <= row["eval_accuracy"] <= 1
    # Evaluation masks are seeded: the dense round's score is reproducible.
    assert results["config"]["matching_metric"] == "eval_accuracy"
    mlm_ticket = str(tmp_path / "mlm")
    train, dev = sst2
    glue = run_glue.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--task_name",
            "sst2",
            "--train_file",
            str(train),
            "--validation_file",
            str(dev),
            "--output_dir",
            str(tmp_path / "glue"),
            "--max_steps",
            "3",
            "--ticket",
            mlm_ticket,
            *COMMON,
        ]
    )
    assert glue["ticket_provenance"]["task"] == "mlm" and glue["metrics"]["sparsity"] == pytest.approx(0.4, abs=1e-3)
    squad = shared_data_dir() / "squad" / "xquad.en.json"
    qa = run_qa.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--train_file",
            str(squad),
            "--validation_file",
            str(squad),
            "--output_dir",
            str(tmp_path / "qa"),
            "--max_steps",
            "2",
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "8",
            "--doc_stride",
            "16",
            "--ticket",
            mlm_ticket,
            *COMMON,
            "--max_seq_length",
            "96",
        ]
    )
    assert "eval_f1" in qa["metrics"]


def test_json_config_files_work_like_the_stock_scripts(tiny_base, sst2, tmp_path):
    train, dev = sst2
    config = {
        "model_name_or_path": tiny_base,
        "task_name": "sst2",
        "train_file": str(train),
        "validation_file": str(dev),
        "output_dir": str(tmp_path),
        "do_eval": True,
        "use_cpu": True,
        "report_to": "none",
        "max_seq_length": 32,
        "imp_rounds": 0,
    }
    (tmp_path / "args.json").write_text(json.dumps(config))
    metrics = run_glue.main([str(tmp_path / "args.json")])
    assert "eval_accuracy" in metrics and "train_steps" not in metrics


def test_bad_data_file_is_a_clear_error(tiny_base, tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("sentence\tlabel\ngood\tmaybe\n")
    with pytest.raises(ValueError, match="maybe"):
        run_glue.main(
            [
                "--model_name_or_path",
                tiny_base,
                "--task_name",
                "sst2",
                "--train_file",
                str(bad),
                "--validation_file",
                str(bad),
                "--output_dir",
                str(tmp_path / "out"),
                *COMMON,
            ]
        )


def test_imp_search_writes_rounds_results_and_the_found_ticket(tiny_base, sst2, tmp_path):
    train, dev = sst2
    args = [
        "--model_name_or_path",
        tiny_base,
        "--task_name",
        "sst2",
        "--train_file",
        str(train),
        "--validation_file",
        str(dev),
        "--output_dir",
        str(tmp_path),
        "--max_steps",
        "10",
        "--sparsity_schedule",
        "0.3,0.6",
        *COMMON,
    ]
    results = run_glue.main(args)
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]
    assert [round(r["sparsity"], 3) for r in results["rounds"]] == [0.0, 0.3, 0.6]
    assert results["config"]["matching_metric"] == "eval_accuracy"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rounds"] == results["rounds"]
    assert "eval_accuracy" in (tmp_path / "results.csv").read_text().splitlines()[0]
    ticket = hf_tickets.Ticket.from_pretrained(tmp_path)  # beside the exported model, as on the Hub
    expected = (results["matching"] or {}).get("round") or 2
    assert ticket.equals(hf_tickets.Ticket.from_pretrained(tmp_path / f"round_{expected:02d}" / "ticket"))
    assert ticket.config.provenance["task"] == "sst2"
    card = (tmp_path / "README.md").read_text()
    # output_dir is a sparse-model repo: a transformers card tagged hf_tickets, every logged number beside it.
    assert (
        "library_name: transformers" in card and "- hf_tickets" in card and "pipeline_tag: text-classification" in card
    )
    # Local tsv files are not the Hub's GLUE dataset: no dataset claim, no model-index.
    assert "nyu-mll/glue" not in card and "model-index" not in card and "local files: train.tsv, dev.tsv" in card
    assert (tmp_path / "sparsity_vs_score.png").is_file()
    assert json.loads((tmp_path / "ticket_results.json").read_text())["rounds"] == results["rounds"]
    # Rerunning the finished search trains nothing more and returns the same rounds.
    again = run_glue.main(args)
    assert again["rounds"] == results["rounds"]


def test_random_pruning_baseline_through_the_recipe(tiny_base, sst2, tmp_path):
    train, dev = sst2
    results = run_glue.main(
        [
            "--model_name_or_path",
            tiny_base,
            "--task_name",
            "sst2",
            "--train_file",
            str(train),
            "--validation_file",
            str(dev),
            "--output_dir",
            str(tmp_path),
            "--max_steps",
            "4",
            "--sparsity_schedule",
            "0.5",
            "--baseline",
            "random_pruning",
            *COMMON,
        ]
    )
    assert results["rounds"][1]["baseline"] == "random_pruning"
    imp_like = hf_tickets.prune(BertForMaskedLM.from_pretrained(tiny_base), 0.5)
    assert not hf_tickets.Ticket.from_pretrained(tmp_path / "round_01" / "ticket").equals(imp_like)


@pytest.mark.parametrize("recipe", [run_glue, run_qa, run_mlm], ids=lambda m: m.__name__)
def test_help_prints_every_flag(recipe, capsys):
    with pytest.raises(SystemExit) as stopped:
        recipe.main(["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "--model_name_or_path" in out and "--matching_tolerance" in out and "1%" in out
    assert "--ticket_granularity {weights,heads,neurons,heads+neurons}" in out
    assert "--unit_score {magnitude,importance}" in out and "--importance_batches IMPORTANCE_BATCHES" in out
    assert "--shrink [SHRINK]" in out and "--shrink_stock_config [SHRINK_STOCK_CONFIG]" in out


def test_only_hub_data_is_named_as_a_hub_dataset():
    from types import SimpleNamespace

    from hf_tickets.tasks.prepared import data_source

    local = SimpleNamespace(
        dataset_name=None, dataset_config_name=None, train_file="/x/train.tsv", validation_file="/x/dev.tsv"
    )
    assert data_source(local, "validation", "sst2") == (["local files: train.tsv, dev.tsv"], None)
    hub = SimpleNamespace(dataset_name="nyu-mll/glue", dataset_config_name=None, train_file=None, validation_file=None)
    assert data_source(hub, "validation", "sst2") == (
        ["nyu-mll/glue:sst2"],
        {"dataset": "nyu-mll/glue", "dataset_config": "sst2", "dataset_split": "validation"},
    )


def test_a_baseline_with_a_cut_dense_round_runs_and_resumes(tiny_base, sst2, tmp_path):
    # What the demo and the reproduction do for random pruning: round 0 (the dense fine-tune IMP already
    # ran) is cut to one step, so it legitimately trains with other arguments than the pruned rounds.
    from transformers import TrainingArguments

    from hf_tickets.experiments.arguments import GlueDataArguments, ModelArguments
    from hf_tickets.experiments.experiment import load_tokenizer, run_imp_search
    from hf_tickets.tasks.prepared import prepare_glue
    from hf_tickets.training.imp_config import IMPConfig

    train, dev = sst2
    model_args = ModelArguments(model_name_or_path=tiny_base)
    data_args = GlueDataArguments(task_name="sst2", train_file=str(train), validation_file=str(dev), max_seq_length=32)
    task = prepare_glue(data_args, load_tokenizer(model_args))
    args = TrainingArguments(
        output_dir=str(tmp_path), do_train=True, do_eval=True, max_steps=3, use_cpu=True, report_to="none",
        per_device_train_batch_size=8, save_strategy="no",
    )  # fmt: skip
    config = IMPConfig(sparsity_schedule="0.5", baseline="random_pruning")
    results = run_imp_search(model_args, task, args, config, dense_round_steps=1, keep_round_models=False)
    assert [r["train_steps"] for r in results["rounds"]] == [1, 3]
    again = run_imp_search(model_args, task, args, config, dense_round_steps=1, keep_round_models=False)
    assert again["rounds"] == results["rounds"]
