"""The two kinds of repo as a Hugging Face user meets them, against the local Hub (tests/hub_server.py).

A sparse-model repo must work with transformers alone, and a ticket repo with the README's three
lines, each in a fresh Python process that starts from nothing but the repo id (the Hub settings
come from the environment conftest.py set up).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData, snapshot_download
from tiny import tiny_checkpoint
from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

import hf_tickets
from hf_tickets.commands.cli import main as cli_main
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE
from hf_tickets.hub.cards import RESULTS_FILE, ticket_card, write_results_file
from hf_tickets.hub.hub_api import TicketHubError
from hf_tickets.hub.sparse_checkpoint import save_sparse_checkpoint
from hf_tickets.hub.upload import push_sparse_checkpoint

BASE = "test-org/tiny-bert"
BOOKKEEPING = {
    "eval_loss": 0.4,
    "eval_runtime": 1.5,
    "eval_samples_per_second": 80.0,
    "eval_steps_per_second": 10.0,
    "train_runtime": 12.0,
    "train_loss": 0.5,
    "total_flos": 132663238656.0,
    "epoch": 3.0,
    "eval_combined_score": 0.9,
    "train_time_s": 12.0,
    "train_steps": 30,
}
RESULTS = [
    {"round": 0, "sparsity": 0.0, "eval_accuracy": 0.9, "eval_f1": 0.88, **BOOKKEEPING},
    {"round": 1, "sparsity": 0.5, "eval_accuracy": 0.89, "eval_f1": 0.87, **BOOKKEEPING},
]
GLUE_SST2 = {
    "task": "sst2",
    "task_type": "text-classification",
    "main_metric": "accuracy",
    "dataset": "nyu-mll/glue",
    "dataset_name": "GLUE SST-2",
    "dataset_config": "sst2",
    "dataset_split": "validation",
}


def upload_folder(repo_id: str, folder: Path) -> str:
    """Put a model folder on the local Hub with the plain client (as its authors would have)."""
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    operations = [CommitOperationAdd(p.name, str(p)) for p in sorted(folder.iterdir()) if p.is_file()]
    return api.create_commit(repo_id, operations, commit_message="Upload model").oid


def run_fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter in which hf_tickets cannot be imported; return its JSON output."""
    guard = "import sys\nsys.modules['hf_tickets'] = None  # any import of hf_tickets fails\n"
    return _run(guard + textwrap.dedent(code))


def _run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def base_folder(tmp_path):
    """A tiny random BERT classifier with the real MiniLM tokenizer, as a Hub model folder."""
    return Path(tiny_checkpoint(tmp_path / "base", cls=BertForSequenceClassification))


def test_dense_sparse_model_repo_works_with_transformers_alone(hub_server, base_folder, tmp_path):
    commit = upload_folder(BASE, base_folder)
    model = BertForSequenceClassification.from_pretrained(
        BASE,
    )
    tokenizer = AutoTokenizer.from_pretrained(
        BASE,
    )
    ticket = hf_tickets.prune(model, 0.5)
    assert (ticket.config.base_model, ticket.config.base_model_revision) == (BASE, commit)
    ticket.config.provenance.update(GLUE_SST2)
    push_sparse_checkpoint(model, ticket, "test-org/sparse-sst2", tokenizer=tokenizer, results=RESULTS)

    out = run_fresh_python(
        """
        import json
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        tokenizer = AutoTokenizer.from_pretrained("test-org/sparse-sst2")
        pipe = pipeline("text-classification", model="test-org/sparse-sst2")
        model = AutoModelForSequenceClassification.from_pretrained("test-org/sparse-sst2")
        zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if "encoder" in n and n.endswith("weight"))
        label = pipe("a great film")[0]["label"]
        out = {"vocab": len(tokenizer), "pipe_vocab": len(pipe.tokenizer), "label": label, "zeros": zeros}
        print(json.dumps({**out, "class": type(model).__name__}))
        """
    )
    assert out["vocab"] == out["pipe_vocab"] == len(tokenizer) > 1000  # the real WordPiece vocabulary
    assert out["label"] in {"LABEL_0", "LABEL_1"} and out["class"] == "BertForSequenceClassification"
    assert out["zeros"] >= ticket.num_pruned

    api = HfApi()
    files = {f.path for f in api.list_repo_tree("test-org/sparse-sst2")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {MASKS_FILE, CONFIG_FILE, "README.md", RESULTS_FILE} <= files
    card = ModelCard.load("test-org/sparse-sst2")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert "hf_tickets" in card.data.tags and card.data.base_model == BASE
    assert 'pipeline("text-classification", model="test-org/sparse-sst2")' in card.text
    # The model-index: this model's scores only, on the dataset as the Hub names it.
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "f1"}
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.89)
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == ("nyu-mll/glue", "sst2", "validation")
    ModelCardData(**card.data.to_dict())  # the Hub's own data classes accept the metadata as written
    card.validate()  # and the Hub's YAML check (the local Hub's /api/validate-yaml)
    # Bookkeeping lives in the JSON file beside the card (and never prints as 132663238656.0000).
    record = json.loads(
        Path(api.hf_hub_download("test-org/sparse-sst2", RESULTS_FILE, cache_dir=tmp_path / "d")).read_text()
    )
    assert record["rounds"][1]["total_flos"] == 132663238656.0 and record["main_metric"] == "eval_accuracy"
    assert "132663238656" not in card.content and "total_flos" not in card.content


def test_compact_sparse_model_card_says_how_to_expand(hub_server, base_folder, tmp_path):
    upload_folder(BASE, base_folder)
    model = BertForSequenceClassification.from_pretrained(
        BASE,
    )
    ticket = hf_tickets.prune(model, 0.6)
    tokenizer = AutoTokenizer.from_pretrained(
        BASE,
    )
    push_sparse_checkpoint(model, ticket, "test-org/compact", tokenizer=tokenizer, compact=True)
    card = ModelCard.load("test-org/compact")
    assert card.data.library_name == "hf_tickets" and card.data.pipeline_tag is None
    assert "hf-tickets pull test-org/compact ./sparse-model" in card.text


def test_a_sparse_model_is_never_pushed_without_its_tokenizer(hub_server, base_folder, tmp_path, capsys):
    model = BertForSequenceClassification.from_pretrained(base_folder)
    ticket = hf_tickets.prune(model, 0.5)
    with pytest.raises(TicketHubError, match="needs tokenizer="):
        push_sparse_checkpoint(model, ticket, "test-org/no-tokenizer")

    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    ticket.save_pretrained(folder)
    assert cli_main(["push", str(folder), "test-org/no-tokenizer"]) == 1  # one line on stderr, no traceback
    assert "holds a model but no tokenizer" in capsys.readouterr().err
    assert "test-org/no-tokenizer" not in hub_server.repos  # refused before anything was created


def test_cli_push_fills_the_repo_id_into_a_card_written_before(hub_server, base_folder, tmp_path):
    upload_folder(BASE, base_folder)
    ticket = hf_tickets.prune(
        BertForMaskedLM.from_pretrained(
            BASE,
        ),
        0.5,
    )
    ticket.save_pretrained(tmp_path / "ticket")
    ticket_card(ticket, results=RESULTS).save(tmp_path / "ticket" / "README.md")  # as a recipe writes it

    assert cli_main(["push", str(tmp_path / "ticket"), "test-org/cli-card"]) == 0
    card = ModelCard.load("test-org/cli-card")
    assert 'Ticket.from_pretrained("test-org/cli-card")' in card.text and "<this repo>" not in card.text
    assert "<this repo>" in (tmp_path / "ticket" / "README.md").read_text()  # the local file is left as it was


def test_cli_push_of_a_saved_sparse_checkpoint_makes_a_sparse_model_repo(hub_server, base_folder, tmp_path):
    upload_folder(BASE, base_folder)
    model = BertForSequenceClassification.from_pretrained(BASE)
    ticket = hf_tickets.prune(model, 0.5)
    ticket.config.provenance.update(GLUE_SST2)
    folder = save_sparse_checkpoint(model, ticket, tmp_path / "ckpt", tokenizer=AutoTokenizer.from_pretrained(BASE))
    write_results_file(folder, ticket, RESULTS)  # what a recipe leaves beside the checkpoint

    assert cli_main(["push", str(folder), "test-org/from-cli"]) == 0
    card = ModelCard.load("test-org/from-cli")
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "text-classification")
    assert "| ticket (IMP) | 1 | 50.00% | 0.8900 | 0.8700 | 0.4000 |" in card.text
    assert card.data.eval_results[0].metric_value == 0.89
    assert {"tokenizer.json", RESULTS_FILE, "sparsity_vs_score.png"} <= {
        f.path for f in HfApi().list_repo_tree("test-org/from-cli")
    }


def test_base_model_is_the_hub_origin_even_from_a_local_snapshot(hub_server, base_folder, tmp_path):
    commit = upload_folder(BASE, base_folder)
    snapshot = snapshot_download(BASE, cache_dir=tmp_path / "cache")
    assert f"models--test-org--tiny-bert/snapshots/{commit}" in snapshot
    ticket = hf_tickets.prune(BertForMaskedLM.from_pretrained(snapshot), 0.5)
    assert (ticket.config.base_model, ticket.config.base_model_revision) == (BASE, commit)
    assert ModelCard(str(ticket_card(ticket))).data.base_model == BASE

    local = hf_tickets.prune(BertForMaskedLM.from_pretrained(base_folder), 0.5)  # a plain local folder
    assert local.config.base_model is None and local.config.base_model_revision is None
    card = ticket_card(local, results=RESULTS, repo_id="test-org/t")
    assert card.data.base_model is None and str(tmp_path) not in card.content
    assert "| Base model | unknown (loaded from a local directory) |" in card.text
    assert "of unknown origin" in card.text and 'from_pretrained("path/to/the/base/model")' in card.text


def test_readme_three_lines_in_a_fresh_process(hub_server, tmp_path):
    tiny_checkpoint(tmp_path / "mlm", cls=BertForMaskedLM)
    commit = upload_folder(BASE, tmp_path / "mlm")
    mlm = BertForMaskedLM.from_pretrained(
        BASE,
    )
    hf_tickets.prune(mlm, 0.7).push_to_hub("test-org/mlm-ticket")

    # Nothing from the tests: the user's code, with hf_tickets and transformers installed.
    out = _run(
        textwrap.dedent(
            f"""
            import json, torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
            from hf_tickets import Ticket

            ticket = Ticket.from_pretrained("test-org/mlm-ticket")
            revision = ticket.config.base_model_revision  # the commit the ticket was found on
            model = AutoModelForSequenceClassification.from_pretrained("{BASE}", revision=revision)
            ticket.apply(model)

            tokenizer = AutoTokenizer.from_pretrained("{BASE}")
            batch = tokenizer(["a great film", "a dull mess"] * 4, return_tensors="pt", padding=True)
            labels = torch.tensor([1, 0] * 4)
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
            losses = []
            for _ in range(20):
                loss = model(**batch, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                ticket.apply(model, verify_base=False)  # keep the pruned weights at zero
                losses.append(loss.item())
            kept = all(bool(torch.all(model.base_model.get_parameter(n)[~m] == 0)) for n, m in ticket.masks.items())
            print(json.dumps({{"losses": losses, "kept": kept, "revision": ticket.config.base_model_revision}}))
            """
        )
    )
    assert out["revision"] == commit and out["kept"]
    assert out["losses"][-1] < out["losses"][0]  # it trains
