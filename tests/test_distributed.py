"""Several processes for real: scripts in tests/dist_scripts run on 2 CPU ranks (gloo).

Each script asserts what one rank can see and writes what it holds to a probe directory; these
tests compare the ranks. A hang (e.g. ranks waiting on a collective the other never calls) fails
the test through the launch timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_model

import hf_tickets
from hf_tickets.core import collectives
from hf_tickets.core.collectives import broadcast_masks, masks_from_main
from hf_tickets.core.shards import full_weight, local_mask, local_view
from hf_tickets.training import launch as launch_checks
from hf_tickets.training.launch import _accelerate_launch_args, _num_processes_in_argv
from hf_tickets.training.trainer_loss import use_true_loss

SCRIPTS = Path(__file__).parent / "dist_scripts"
RECIPES = Path(__file__).parents[1] / "recipes"
VENV_BIN = Path(sys.executable).parent
LAUNCH_TIMEOUT = 240  # seconds; the first DeepSpeed launch also compiles its shared-memory op (~30 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    script: str, *args, launcher: str = "torchrun", nproc: int = 2, timeout: float = LAUNCH_TIMEOUT
) -> subprocess.CompletedProcess:
    """Run tests/dist_scripts/<script> on ``nproc`` processes; fail with its output if it fails or hangs."""
    port = str(free_port())
    if launcher == "torchrun":
        cmd = [VENV_BIN / "torchrun", "--nproc_per_node", str(nproc), "--master_port", port]
    elif launcher == "accelerate-multi":  # the way to get several CPU processes from accelerate
        cmd = [
            VENV_BIN / "accelerate",
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(nproc),
            "--main_process_port",
            port,
        ]
    elif launcher == "accelerate-cpu":  # starts ONE process whatever --num_processes says
        cmd = [VENV_BIN / "accelerate", "launch", "--cpu", "--num_processes", str(nproc), "--main_process_port", port]
    elif launcher.startswith("accelerate-config="):  # accelerate launch --config_file PATH
        cmd = [
            VENV_BIN / "accelerate",
            "launch",
            "--config_file",
            launcher.partition("=")[2],
            "--main_process_port",
            port,
        ]
    elif launcher == "python":
        cmd = [sys.executable]
    else:
        raise ValueError(launcher)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [str(c) for c in cmd] + [str(SCRIPTS / script)] + [str(a) for a in args]  # an absolute script path stays
    # Own session: on a hang the launcher AND its workers are killed, not just the launcher.
    process = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SCRIPTS, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{script} hung (> {timeout} s):\n{stderr[-4000:]}")
    result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def ranks(probe: Path, n: int = 2) -> list[dict]:
    """Each rank's JSON facts, with its tensors under "tensors"."""
    found = []
    for r in range(n):
        record = json.loads((probe / f"rank{r}.json").read_text())
        tensors_file = probe / f"rank{r}.safetensors"
        record["tensors"] = load_file(tensors_file) if tensors_file.exists() else {}
        found.append(record)
    return found


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------- one process
def test_single_process_helpers_are_identity_without_copies():
    model = tiny_model(__import__("transformers").BertModel)
    p = model.encoder.layer[0].attention.self.query.weight
    mask = torch.rand(p.shape) > 0.5
    assert not collectives.is_initialized() and collectives.world_size() == 1 and collectives.is_main_process()
    assert full_weight(p).data_ptr() == p.data_ptr()  # no gather, no copy
    assert local_view(p) is p
    assert local_mask(mask, p) is mask  # already on p's device
    masks = {"a": mask}
    assert broadcast_masks(masks) is masks
    assert masks_from_main(lambda: masks) is masks


def test_single_process_prune_and_apply_unchanged():
    model = tiny_model(__import__("transformers").BertModel)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ticket = hf_tickets.prune(model, 0.5)
    report = ticket.apply(model)
    assert report.pruned == ticket.num_pruned and report.base_similarity > 0.99
    for name, p in ticket.parameters_of(model).items():
        assert torch.equal(p.detach(), before[name] * ticket.masks[name])


def test_launch_line_parsing():
    line = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "train.py"]
    args = _accelerate_launch_args(line)
    assert args == ["--cpu", "--num_processes", "2", "train.py"]
    assert _num_processes_in_argv(args) == 2
    assert _num_processes_in_argv(["--num-processes=4", "x.py"]) == 4
    assert _num_processes_in_argv(["--num_proc", "3"]) == 3  # argparse accepts abbreviations
    assert _num_processes_in_argv(["--num_machines", "2"]) is None
    assert _accelerate_launch_args(["python", "train.py", "launch"]) is None
    assert _accelerate_launch_args(["python", "-m", "accelerate.commands.launch", "--cpu"]) == ["--cpu"]
    assert _accelerate_launch_args(["accelerate", "config"]) is None


def test_use_true_loss_declares_mean_loss_heads_only():
    from transformers import BertForMaskedLM, BertForSequenceClassification, BertLMHeadModel

    classifier = use_true_loss(tiny_model(BertForSequenceClassification))
    masked_lm = use_true_loss(tiny_model(BertForMaskedLM))
    # BertLMHeadModel computes self.loss_function(..., **kwargs), which divides by num_items_in_batch.
    causal = use_true_loss(tiny_model(BertLMHeadModel, is_decoder=True))
    assert classifier.accepts_loss_kwargs is False and masked_lm.accepts_loss_kwargs is False
    assert "accepts_loss_kwargs" not in vars(causal)


# ------------------------------------------------------------- 2 processes
@pytest.mark.slow
def test_fsdp2_sharded_ticket_equals_unsharded(tmp_path):
    launch("fsdp2_ticket.py", tmp_path / "probe", tmp_path / "out")
    r0, r1 = ranks(tmp_path / "probe")
    for r in (r0, r1):
        assert r["sharded_types"] == ["DTensor"]
        assert r["round1_equal"] and r["round2_equal"] and r["toy_equal"] and r["fingerprint_equal"]
        assert r["loaded_ticket_equal"] and r["checkpoint_tensors"] > 0
        assert r["rewound"]  # θ0 loaded shard by shard with load_full_state_dict
    assert_same_tensors(r0["tensors"], r1["tensors"])
    # Shards really were uneven / empty: 37-row intermediate weights split 19 + 18; [1, 4] split 1 + 0.
    assert 19 in r0["round1_shard_rows"] and 18 in r1["round1_shard_rows"]
    assert r0["toy_shard_rows"] == [1, 2] and r1["toy_shard_rows"] == [0, 1]
    out = tmp_path / "out"
    # The ticket file is the ordinary one, byte for byte what the unsharded twin saves.
    for name in ("ticket_masks.safetensors", "ticket_config.json"):
        assert (out / "ticket" / name).read_bytes() == (out / "ref_ticket" / name).read_bytes()
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.slow
def test_fsdp2_imp_manager_rewinds_shards_and_finds_the_unsharded_tickets(tmp_path):
    launch("fsdp2_imp.py", tmp_path / "probe", tmp_path / "out")
    r0, r1 = ranks(tmp_path / "probe")
    for r in (r0, r1):
        assert r["types"] == [["Parameter"], ["DTensor"]]  # the second run really was sharded
        assert r["rewound"] and r["zero_after_every_step"] and r["theta0_file_whole"]
        assert r["tickets_equal"] == [True, True, True]
    assert_same_tensors(r0["tensors"], r1["tensors"])
    assert {k.split(".")[0] for k in r0["tensors"]} == {"plain", "sharded"}


@pytest.mark.slow
def test_deepspeed_zero3_sharded_ticket_equals_unsharded(tmp_path):
    # deepspeed is required (the `distributed` extra), never skipped: an ImportError fails the test.
    import deepspeed  # noqa: F401

    launch("zero3_ticket.py", tmp_path / "probe", tmp_path / "out")
    r0, r1 = ranks(tmp_path / "probe")
    for r in (r0, r1):
        assert r["all_partitioned"] and r["round1_equal"] and r["fingerprint_equal"] and r["round2_equal"]
        assert r["master_masked"] and r["kept_weights_trained"]
        assert r["rewound"] and r["rewound_master"]  # θ0 into partition, gathered copy and fp32 master
        assert r["alive_after_steps"] == [0, 0, 0]
        assert r["gathered_after_step"] == [False, True]  # both partitioned and persistent parameters met
    assert_same_tensors(r0["tensors"], r1["tensors"])
    out = tmp_path / "out"
    for name in ("ticket_masks.safetensors", "ticket_config.json"):
        assert (out / "ticket" / name).read_bytes() == (out / "ref_ticket" / name).read_bytes()


def test_deepspeed_zero3_plain_loop_imp_keeps_pruned_weights_and_master_copy_zero(tmp_path):
    import deepspeed  # noqa: F401

    launch("zero3_imp.py", tmp_path / "probe", tmp_path / "out")
    r0, r1 = ranks(tmp_path / "probe")
    for r in (r0, r1):
        assert r["rounds"] == [[0, 0.0], [1, 0.5], [2, 0.75]]
        # After every apply_masks() of every round: partition, fp32 master and gathered weight all zero.
        assert r["alive_partition"] == [0] * 9 and r["alive_master"] == [0] * 9 and r["alive_full"] == [0] * 9
    assert_same_tensors(r0["tensors"], r1["tensors"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["round"] for row in results["rounds"]] == [0, 1, 2] and results["complete"]


@pytest.mark.parametrize("failure", ["truncated_metrics", "unwritable_round", "locked"])
def test_a_failure_on_the_main_process_stops_every_rank_with_the_same_error(tmp_path, failure):
    from transformers import BertForSequenceClassification

    from hf_tickets.training.imp import IMPConfig, IMPManager
    from hf_tickets.training.imp.run_state import OutputDirLock

    out = tmp_path / "out"
    lock = OutputDirLock(out)
    if failure == "truncated_metrics":  # a run with round 0 done, whose metrics.json is cut short
        torch.manual_seed(0)
        manager = IMPManager(tiny_model(BertForSequenceClassification), IMPConfig(imp_rounds=2), out)
        for rnd in manager.rounds():
            rnd.finish({"eval_accuracy": 0.5})
            break
        metrics = out / "round_00" / "metrics.json"
        metrics.write_text(metrics.read_text()[:20])
        expected = f"{metrics}: unreadable"
    elif failure == "unwritable_round":  # round 0's pruning cannot write round 1's ticket
        out.mkdir()
        (out / "round_01").write_text("in the way")
        expected = "round_01"
    else:
        lock.acquire()  # another live run holds output_dir
        expected = f"in use by another IMP run (pid {os.getpid()}"
    try:
        launch("imp_main_fails.py", tmp_path / "probe", out, timeout=120)  # a rank waiting for a timeout hangs
    finally:
        lock.release()
    r0, r1 = ranks(tmp_path / "probe")
    assert expected in r0["error"], r0
    assert r1 == r0  # the same error, on the rank that only waited


@pytest.mark.slow
def test_trainer_logs_true_loss_under_ddp_and_accumulation(tmp_path):
    launch("trainer_loss.py", tmp_path, launcher="python")
    launch("trainer_loss.py", tmp_path, launcher="accelerate-multi")
    run = {
        name: json.loads((tmp_path / f"{name}.json").read_text())
        for name in ("single", "accumulate_stock", "accumulate_fixed", "ddp_stock", "ddp_fixed")
    }
    assert run["ddp_fixed"]["world_size"] == 2 and run["single"]["world_size"] == 1
    reference = run["single"]
    for name in ("ddp_fixed", "accumulate_fixed"):
        for key in ("loss", "grad_norm"):
            assert run[name][key] == pytest.approx(reference[key], rel=1e-5), (name, key)
    # What use_true_loss fixes: the stock Trainer reports (and backpropagates) twice the loss here.
    # Exactly twice at the first step (same weights); after it the doubled gradient norm exceeds
    # max_grad_norm=1, clipping changes the steps, and the runs drift slightly apart.
    for name in ("ddp_stock", "accumulate_stock"):
        for key in ("loss", "grad_norm"):
            assert run[name][key][0] == pytest.approx(2 * reference[key][0], rel=1e-5), (name, key)
            assert run[name][key] == pytest.approx([2 * v for v in reference[key]], rel=1e-2), (name, key)


@pytest.mark.slow
def test_ddp_plain_loop_identical_masks_zero_every_step_uneven_batches(tmp_path):
    # A rank waiting in an all-reduce the other never joins would hang: 120 s is ~10x the run.
    launch("ddp_plain_loop.py", tmp_path / "probe", tmp_path / "out", launcher="accelerate-multi", timeout=120)
    r0, r1 = ranks(tmp_path / "probe")
    assert r0["batches"] == [3, 3] and r1["batches"] == [2, 2]  # uneven, and no hang
    for r in (r0, r1):
        assert r["info"] == {"world_size": 2, "backend": "gloo", "requested_num_processes": 2}
        assert r["zero_after_every_step"] and r["warning"] is None  # 2 asked, 2 running: no warning
        assert r["round1_sparsity"] == 0.5
    # A bad strategy option is refused on every rank before any collective: the same clear error everywhere.
    assert r0["failed_prune"].startswith("TicketError") and "no_such_option" in r0["failed_prune"]
    assert r1["failed_prune"] == r0["failed_prune"]
    # Rank 1's weights were made to disagree before each pruning: rank 0's masks still won.
    assert_same_tensors(r0["tensors"], r1["tensors"])  # masks and final (joined) weights
    saved = hf_tickets.Ticket.from_pretrained(tmp_path / "out" / "round1")
    assert all(torch.equal(m, r0["tensors"][f"mask.{n}"]) for n, m in saved.masks.items())


@pytest.mark.slow
def test_accelerate_cpu_launch_of_two_processes_warns_that_it_started_one(tmp_path):
    result = launch("single_process_warning.py", tmp_path, launcher="accelerate-cpu")
    assert not (tmp_path / "rank1.json").exists()  # accelerate really started a single process
    (record,) = ranks(tmp_path, n=1)
    assert record["world_size"] == 1 and record["num_processes"] == 1 and record["requested"] == 2
    assert "2 processes were requested but this run has 1" in record["message"]
    assert record["warned"] == [record["message"]]
    assert "2 processes were requested but this run has 1: the launcher started a single process" in result.stderr
    assert "--multi_gpu --num_processes N" in result.stderr  # and how to get them


@pytest.mark.slow
def test_accelerate_multi_cpu_config_of_two_processes_warns_that_it_started_one(tmp_path):
    # A MULTI_CPU config asking for 2 processes also starts one here; the count comes from the file.
    config = tmp_path / "cpu2.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nnum_machines: 1\nnum_processes: 2\n"
        "machine_rank: 0\nmixed_precision: 'no'\nuse_cpu: true\n"
    )
    launch("single_process_warning.py", tmp_path / "probe", launcher=f"accelerate-config={config}")
    (record,) = ranks(tmp_path / "probe", n=1)
    assert not (tmp_path / "probe" / "rank1.json").exists()
    assert record["world_size"] == 1 and record["requested"] == 2
    assert "2 processes were requested but this run has 1" in record["message"]


def test_world_size_env_without_process_group_warns(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched as 2 processes, but nothing initialised torch.distributed
    with pytest.warns(RuntimeWarning, match="2 processes were requested but this run has 1.*not initialised"):
        message = launch_checks.warn_if_single_process_requested()
    assert message is not None and launch_checks.distributed_info()["requested_num_processes"] == 2
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert launch_checks.warn_if_single_process_requested() is None


@pytest.mark.slow
def test_ddp_trainer_ticket_callback_checkpoints_and_resume(tmp_path):
    out = tmp_path / "out"
    launch("ddp_trainer_callback.py", tmp_path / "probe", out, launcher="accelerate-multi")
    r0, r1 = ranks(tmp_path / "probe")
    for r in (r0, r1):
        # After every one of the 6 + 2 optimizer steps, no pruned weight is alive on this rank.
        assert r["checks"] == [[step, 0] for step in range(1, 9)] and r["global_step"] == 8
        assert r["resumed_ticket_equal"]  # both ranks took the checkpoint's ticket, not the one passed in
    # Only rank 0 writes tickets: one per checkpoint.
    assert r0["saves"] == [str(out / f"checkpoint-{s}") for s in (3, 6, 8)] and r1["saves"] == []
    assert_same_tensors(r0["tensors"], r1["tensors"])  # masks and trained weights
    saved = hf_tickets.Ticket.from_pretrained(out / "checkpoint-8")
    assert saved.sparsity == pytest.approx(0.5, abs=1e-4)
    assert all(torch.equal(m, r0["tensors"][f"mask.{n}"]) for n, m in saved.masks.items())


@pytest.mark.slow
def test_ddp_imp_manager_plain_loop_resume_and_only_rank0_writes(tmp_path):
    probe, out = tmp_path / "probe", tmp_path / "out"
    launch("ddp_imp.py", probe, out, "first", launcher="accelerate-multi", timeout=180)
    launch("ddp_imp.py", probe, out, "resume", launcher="accelerate-multi", timeout=180)
    first, resumed = ranks(probe / "first"), ranks(probe / "resume")
    assert first[0]["full"]["batches"] == [3] * 4 and first[1]["full"]["batches"] == [2] * 4  # uneven, no hang
    for r in first + resumed:
        for run in ("full", "part", "resumed"):
            assert r.get(run, {"zero_after_every_step": True})["zero_after_every_step"], run
    assert [r["resumed"]["rounds_run"] for r in resumed] == [[2, 3], [2, 3]]  # finished rounds were skipped
    # Identical masks on both ranks, and only rank 0 wrote anything under the output directory.
    assert_same_tensors(first[0]["tensors"], first[1]["tensors"])
    assert_same_tensors(resumed[0]["tensors"], resumed[1]["tensors"])
    assert first[0]["writes"] and resumed[0]["writes"]
    assert first[1]["writes"] == [] and resumed[1]["writes"] == []
    # Interrupted after round 1 and resumed: the same tickets as the uninterrupted run.
    for index in range(4):
        ticket_dir = f"round_{index:02d}/ticket"
        assert hf_tickets.Ticket.from_pretrained(out / "part" / ticket_dir).equals(
            hf_tickets.Ticket.from_pretrained(out / "full" / ticket_dir)
        ), index
    results = json.loads((out / "part" / "results.json").read_text())
    assert results["world_size"] == 2 and results["distributed"]["backend"] == "gloo"
    assert [row["eval_accuracy"] for row in results["rounds"]] == [0.5] * 4  # rank 0's numbers, not rank 1's


@pytest.mark.slow
def test_glue_recipe_imp_search_on_two_processes(tmp_path):
    from tiny import tiny_checkpoint, write_sst2

    base = tiny_checkpoint(tmp_path / "model")
    train, dev = write_sst2(tmp_path / "sst2")
    out = tmp_path / "out"
    launch(
        RECIPES / "run_glue.py",
        "--model_name_or_path",
        base,
        "--task_name",
        "sst2",
        "--train_file",
        train,
        "--validation_file",
        dev,
        "--output_dir",
        out,
        "--max_steps",
        "10",
        "--sparsity_schedule",
        "0.3,0.6",
        "--do_train",
        "--do_eval",
        "--use_cpu",
        "--report_to",
        "none",
        "--per_device_train_batch_size",
        "4",
        "--max_seq_length",
        "32",
        "--save_strategy",
        "no",
        "--learning_rate",
        "5e-3",
        "--seed",
        "0",
        launcher="accelerate-multi",
        timeout=300,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["distributed"]["requested_num_processes"] == 2
    assert [round(r["sparsity"], 3) for r in results["rounds"]] == [0.0, 0.3, 0.6]
    # Binary cross-entropy starts near ln 2 = 0.69; the stock Trainer would log about twice that here.
    assert all(0.5 < r["train_loss"] < 0.9 for r in results["rounds"])
    found = hf_tickets.Ticket.from_pretrained(out)  # the exported ticket (beside its model) is one of the rounds
    assert any(found.equals(hf_tickets.Ticket.from_pretrained(out / f"round_{i:02d}" / "ticket")) for i in range(3))


@pytest.mark.slow
def test_glue_recipe_structured_search_shrinks_once_on_two_processes(tmp_path):
    from tiny import tiny_checkpoint, write_sst2
    from transformers import AutoModelForSequenceClassification

    base = tiny_checkpoint(tmp_path / "model")
    train, dev = write_sst2(tmp_path / "sst2")
    out = tmp_path / "out"
    done = launch(
        RECIPES / "run_glue.py",
        "--model_name_or_path", base, "--task_name", "sst2", "--train_file", train, "--validation_file", dev,
        "--output_dir", out, "--max_steps", "4", "--sparsity_schedule", "0.3", "--ticket_granularity", "neurons",
        "--shrink", "--do_train", "--do_eval", "--use_cpu", "--report_to", "none",
        "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--save_strategy", "no", "--seed", "0",
        launcher="accelerate-multi",
        timeout=300,
    )  # fmt: skip
    assert json.loads((out / "results.json").read_text())["world_size"] == 2
    # Both ranks finish (the main process alone shrinks, between the export and its barrier) and it is logged once.
    assert done.stdout.count("shrunk model in") == 1
    masked = AutoModelForSequenceClassification.from_pretrained(out).eval()
    shrunk = AutoModelForSequenceClassification.from_pretrained(out / "shrunk", trust_remote_code=True).eval()
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in masked.parameters())
    ids = torch.randint(1000, 2000, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(shrunk(input_ids=ids).logits, masked(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
