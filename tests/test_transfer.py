"""hf-tickets transfer: source ticket x target task -> score, beside the full model, resumable."""

import json

import pytest
from tiny import NEGATIVE, POSITIVE, tiny_checkpoint, write_sst2
from transformers import BertForMaskedLM

import hf_tickets
from hf_tickets.commands.cli import main
from hf_tickets.commands.transfer import FULL_MODEL, transfer_rows


def write_cola(folder, n=24):
    folder.mkdir(parents=True)
    good, bad = POSITIVE, [" ".join(reversed(s.split())) for s in NEGATIVE]
    rows = [f"src\t{i % 2}\t\t{(good if i % 2 else bad)[i % 5]}" for i in range(n)]
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("\n".join(rows) + "\n")


def test_transfer_table_with_full_model_scores_and_resume(tmp_path, capsys):
    base = tiny_checkpoint(tmp_path / "base")
    model = BertForMaskedLM.from_pretrained(base)
    hf_tickets.prune(model, 0.3).save_pretrained(tmp_path / "t30")
    hf_tickets.prune(model, 0.8, strategy="random").save_pretrained(tmp_path / "r80")
    write_sst2(tmp_path / "glue" / "SST-2")
    write_cola(tmp_path / "glue" / "CoLA")
    argv = [
        "transfer",
        "--ticket",
        str(tmp_path / "t30"),
        "--ticket",
        str(tmp_path / "r80"),
        "--tasks",
        "sst2",
        "cola",
        "--model_name_or_path",
        base,
        "--glue_dir",
        str(tmp_path / "glue"),
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "4",
        "--max_seq_length",
        "32",
        "--use_cpu",
        "--matching_tolerance",
        "0.05",
    ]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert {(r["task"], round(r["sparsity"], 2)) for r in rows} == {
        ("sst2", 0.3),
        ("sst2", 0.8),
        ("cola", 0.3),
        ("cola", 0.8),
    }
    for r in rows:
        assert r["metric"] == {"sst2": "eval_accuracy", "cola": "eval_matthews_correlation"}[r["task"]]
        assert r["full_score"] is not None and r["matching"] == (r["score"] >= r["full_score"] - 0.05)
    assert "| source ticket |" in (tmp_path / "out" / "transfer.md").read_text()
    full_run = tmp_path / "out" / "full_model__sst2" / "transfer_results.json"
    stamp = full_run.stat().st_mtime_ns
    assert main(argv) == 0  # everything exists: nothing is retrained
    assert full_run.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "out" / "transfer.json").read_text()) == rows


def test_matching_uses_the_full_model_std_when_given():
    def record(source, s, score):
        return {"main_metric": "eval_accuracy", "ticket_sparsity": s, "metrics": {"eval_accuracy": score}}

    results = {
        (FULL_MODEL, "rte"): record(FULL_MODEL, 0.0, 0.70),
        ("mlm", "rte"): record("mlm", 0.7, 0.68),
        ("sst2", "rte"): record("sst2", 0.6, 0.60),
    }
    rows = {r["source"]: r for r in transfer_rows(results, full_std=0.03)}
    assert rows["mlm"]["matching"] is True and rows["sst2"]["matching"] is False
    assert rows["mlm"]["full_score"] == pytest.approx(0.70)


def test_missing_glue_folder_is_a_clear_error(tmp_path):
    base = tiny_checkpoint(tmp_path / "base")
    hf_tickets.prune(BertForMaskedLM.from_pretrained(base), 0.3).save_pretrained(tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="MRPC"):
        main(
            [
                "transfer",
                "--ticket",
                str(tmp_path / "t"),
                "--tasks",
                "mrpc",
                "--model_name_or_path",
                base,
                "--glue_dir",
                str(tmp_path),
                "--output_dir",
                str(tmp_path / "out"),
                "--use_cpu",
                "--debug",  # the exception itself; without it the CLI prints one line and exits 1
            ]
        )
