"""--push_to_hub ends like the stock scripts: one final push of what output_dir holds, never a round
(the local Hub server of tests/hub_server.py, read back with the real huggingface_hub client)."""

import sys
from pathlib import Path

from huggingface_hub import HfApi
from tiny import write_sst2
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_tickets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_glue  # noqa: E402


def args(base, tmp_path, *extra):
    train, dev = write_sst2(tmp_path / "data")
    return [
        "--model_name_or_path", base, "--task_name", "sst2", "--train_file", str(train), "--validation_file", str(dev),
        "--output_dir", str(tmp_path / "out"), "--do_train", "--do_eval", "--max_steps", "4", "--use_cpu",
        "--report_to", "none", "--per_device_train_batch_size", "8", "--max_seq_length", "32", *extra,
    ]  # fmt: skip


def test_a_search_pushes_once_what_output_dir_holds(hub_server, tiny_base, tmp_path):
    repo = "test-user/sst2-ticket"
    # Checkpoints every 2 steps in every round: none of them may reach the repo.
    extra = ("--sparsity_schedule", "0.5", "--save_strategy", "steps", "--save_steps", "2")
    run_glue.main(args(tiny_base, tmp_path, *extra, "--push_to_hub", "--hub_model_id", repo))
    api = HfApi()
    files = {f.path for f in api.list_repo_tree(repo)}
    expected = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}
    expected |= {"ticket_masks.safetensors", "ticket_config.json", "README.md", "all_results.json"}
    expected |= {"train_results.json", "eval_results.json", "trainer_state.json"}
    assert expected <= files and not any(f.startswith(("round_", "checkpoint")) for f in files)
    assert [c.title for c in api.list_repo_commits(repo)] == ["End of training", "initial commit"]
    local = hf_tickets.Ticket.from_pretrained(tmp_path / "out")
    assert hf_tickets.Ticket.from_pretrained(repo, cache_dir=tmp_path / "dl").equals(local)
    AutoModelForSequenceClassification.from_pretrained(repo, cache_dir=tmp_path / "dl")
    AutoTokenizer.from_pretrained(repo, cache_dir=tmp_path / "dl")
    assert not hub_server.unrouted


def test_a_dense_run_pushes_once_at_the_end(hub_server, tiny_base, tmp_path):
    repo = "test-user/sst2-dense"
    extra = ("--imp_rounds", "0", "--save_strategy", "steps", "--save_steps", "2")
    run_glue.main(args(tiny_base, tmp_path, *extra, "--push_to_hub", "--hub_model_id", repo))
    api = HfApi()
    files = {f.path for f in api.list_repo_tree(repo)}
    assert {"model.safetensors", "config.json", "all_results.json", "README.md"} <= files
    assert not any(f.startswith("checkpoint") for f in files)
    assert len(api.list_repo_commits(repo)) == 2  # the repo's creation and the final push
    AutoModelForSequenceClassification.from_pretrained(repo, cache_dir=tmp_path / "dl")


def test_a_structured_search_with_shrink_pushes_the_sparse_model_not_the_shrunk_one(hub_server, tiny_base, tmp_path):
    # output_dir/shrunk has other shapes than the base model and its own code: the repo stays one sparse-model repo
    repo = "test-user/sst2-neurons"
    extra = ("--sparsity_schedule", "0.3", "--ticket_granularity", "neurons", "--shrink")
    run_glue.main(args(tiny_base, tmp_path, *extra, "--push_to_hub", "--hub_model_id", repo))
    assert (tmp_path / "out" / "shrunk" / "model.safetensors").is_file()
    files = {f.path for f in HfApi().list_repo_tree(repo, recursive=True)}
    assert {"model.safetensors", "ticket_masks.safetensors", "tokenizer.json", "README.md"} <= files
    assert not any(f.startswith(("shrunk", "round_", "checkpoint")) for f in files)
    AutoModelForSequenceClassification.from_pretrained(repo, cache_dir=tmp_path / "dl")
    assert hf_tickets.Ticket.from_pretrained(repo, cache_dir=tmp_path / "dl").config.strategy == "neurons"
