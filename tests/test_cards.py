"""Model cards: Hub metadata that ModelCard.load parses, sections updated in place, the plot."""

import ast
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from tiny import tiny_model
from transformers import BertForMaskedLM

from hf_tickets import prune
from hf_tickets.hub import cards
from hf_tickets.hub.cards import (
    SECTION_RE,
    fill_repo_id,
    format_number,
    merge_sections,
    model_task,
    primary_metric,
    ticket_card,
)
from hf_tickets.hub.plots import plot_sparsity_vs_score, split_results
from hf_tickets.training.results import is_metric, metric_names

SECTIONS = ["summary", "usage", "how_found", "sparsity", "results", "transfer", "provenance"]
RESULTS = [
    {"round": 0, "sparsity": 0.0, "eval_accuracy": 0.93, "eval_loss": 0.21, "eval_runtime": 3.0},
    {"round": 1, "sparsity": 0.3, "eval_accuracy": 0.925},
    {"round": 2, "sparsity": 0.5, "eval_accuracy": 0.92},
    {"round": 2, "sparsity": 0.5, "eval_accuracy": 0.85, "baseline": "random_pruning"},
]
TRANSFER = [
    {"source": "sst2", "task": "mrpc", "metric": "accuracy", "score": 0.81, "full_score": 0.82, "matching": True},
    {
        "source": "sst2",
        "task": "cola",
        "metric": "matthews_correlation",
        "score": 0.3,
        "full_score": 0.5,
        "matching": False,
    },
]


@pytest.fixture
def ticket():
    model = tiny_model(BertForMaskedLM)
    model.config._name_or_path = "test-org/tiny-bert"
    ticket = prune(model, 0.5)
    ticket.config.provenance = {
        "task": "sst2",
        "task_type": "text-classification",
        "main_metric": "accuracy",
        "dataset": "nyu-mll/glue",
        "dataset_config": "sst2",
        "dataset_split": "validation",
        "round": 2,
        "rounds": 2,
        "rewind": "pretrained",
        "imp": {"prune_per_round": 0.3},
    }
    return ticket


def sections(text: str) -> list[str]:
    return [m.group(1) for m in SECTION_RE.finditer(text)]


def test_metadata_parses_back_with_modelcard_load(ticket, tmp_path):
    card = ticket_card(ticket, results=RESULTS, plot_path="sparsity_vs_score.png", repo_id="test-org/ticket")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "hf_tickets"
    assert loaded.data.base_model == "test-org/tiny-bert"
    assert {"lottery-ticket", "pruning", "sparse"} <= set(loaded.data.tags)
    assert loaded.data.datasets == ["nyu-mll/glue"]
    (result,) = loaded.data.eval_results  # the model-index: the score at this ticket's sparsity
    assert (result.task_type, result.dataset_type, result.dataset_config) == (
        "text-classification",
        "nyu-mll/glue",
        "sst2",
    )
    assert (result.metric_type, result.metric_value, result.dataset_split) == ("accuracy", 0.92, "validation")
    assert result.metric_name == "accuracy"  # the sparsity is the model's, not part of the metric's name
    ModelCardData(**loaded.data.to_dict())  # huggingface_hub's data classes accept it as written


def test_model_index_holds_scores_only_and_the_body_formats_numbers_for_people(ticket):
    logged = {
        "eval_runtime": 3.2,
        "eval_samples_per_second": 300.5,
        "eval_steps_per_second": 9.4,
        "train_runtime": 40.0,
        "train_samples_per_second": 12.0,
        "train_loss": 0.3,
        "total_flos": 132663238656.0,
        "epoch": 3.0,
        "eval_combined_score": 0.9,
        "train_time_s": 41.2,
        "train_steps": 600,
    }
    rows = [{**r, **logged} for r in RESULTS]
    card = ticket_card(ticket, results=rows, results_file="ticket_results.json")
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy"]  # eval_loss: not a headline score
    assert "132663238656" not in card.content and "total_flos" not in card.content
    assert "| ticket (IMP) | 2 | 50.00% | 0.9200 |" in card.text and "`ticket_results.json`" in card.text
    assert "ticket_results.json" not in ticket_card(ticket, results=rows).text  # no file written, none named
    assert format_number(132663238656.0) == "132,663,238,656" and format_number(600) == "600"
    assert format_number(88.54321) == "88.54" and format_number(0.00012) == "1.20e-04"


def test_local_data_under_a_glue_task_name_is_not_reported_as_the_hub_glue_dataset(ticket):
    for key in ("dataset", "dataset_config", "dataset_split"):
        del ticket.config.provenance[key]
    ticket.config.provenance["train_file"] = "/home/someone/data/sst2/train.tsv"
    card = ticket_card(ticket, results=RESULTS)
    assert card.data.datasets is None and card.data.eval_results is None
    assert "glue" not in card.content.lower() and "/home/someone" not in card.content
    assert "local file train.tsv" in card.text


def test_sparse_model_cards_are_transformers_models_with_their_pipeline_tag(ticket):
    dense = ticket_card(ticket, checkpoint="dense", model_class="BertForSequenceClassification", repo_id="org/m")
    assert (dense.data.library_name, dense.data.pipeline_tag) == ("transformers", "text-classification")
    assert "hf_tickets" in dense.data.tags and 'pipeline("text-classification", model="org/m")' in dense.text
    compact = ticket_card(ticket, checkpoint="compact", model_class="BertForMaskedLM", repo_id="org/m")
    assert (compact.data.library_name, compact.data.pipeline_tag) == ("hf_tickets", None)
    assert "hf-tickets pull org/m ./sparse-model" in compact.text
    over_dense = ticket_card(ticket, checkpoint="compact", model_class="BertForMaskedLM", existing=dense)
    assert (over_dense.data.library_name, over_dense.data.pipeline_tag) == ("hf_tickets", None)
    assert "AutoModelForMaskedLM.from_pretrained('./sparse-model')" in compact.text
    assert model_task("BertForQuestionAnswering") == ("question-answering", "AutoModelForQuestionAnswering")
    assert model_task("BertModel") == ("feature-extraction", "AutoModel")
    assert model_task("NotAModel") == (None, "AutoModel")


def test_ticket_usage_pins_the_base_revision_and_the_repo_placeholder_is_filled_later(ticket):
    ticket.config.base_model_revision = "a" * 40
    text = ticket_card(ticket).text
    assert f'from_pretrained("test-org/tiny-bert", revision="{"a" * 40}")' in text
    assert 'Ticket.from_pretrained("<this repo>")' in text
    assert 'Ticket.from_pretrained("org/t")' in fill_repo_id(text, "org/t")


def test_cards_do_not_import_the_tasks_layer():
    tree = ast.parse(Path(cards.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("hf_tickets.tasks")]


def test_body_has_every_section_once_with_the_data(ticket):
    text = ticket_card(ticket, results=RESULTS, transfer=TRANSFER, plot_path="plot.png", repo_id="test-org/ticket").text
    assert sections(text) == SECTIONS
    assert "| Rewind | pretrained |" in text and "prune_per_round" in text  # how it was found
    assert "`encoder.layer.1.output.dense.weight` | 32×64 |" in text  # per-layer table
    assert "![eval_accuracy versus sparsity](plot.png)" in text
    assert "Full (unpruned) model: **0.9300**" in text
    assert "| random_pruning | 2 | 50.00% | 0.8500 |" in text
    assert "| sst2 | cola | matthews_correlation | 0.3000 | 0.5000 | no |" in text
    assert 'Ticket.from_pretrained("test-org/ticket")' in text
    assert 'AutoModelForSequenceClassification.from_pretrained("test-org/tiny-bert")' in text
    assert "| hf_tickets version (card) | 0.1.0 |" in text


def test_without_results_the_empty_sections_are_left_out(ticket):
    ticket.config.provenance["baseline"] = None
    card = ticket_card(ticket)
    assert "| Baseline |" not in card.text  # nor rows without a value
    assert sections(card.text) == ["summary", "usage", "how_found", "sparsity", "provenance"]
    assert "model-index" not in card.data.to_dict() and "## Transfer" not in card.text


def test_a_local_base_model_path_is_never_shown(ticket):
    ticket.config.base_model = "/tmp/some/local/bert"
    card = ticket_card(ticket, results=RESULTS)
    assert card.data.base_model is None and "/tmp/some" not in card.content
    assert "| Base model | unknown (loaded from a local directory) |" in card.text


def test_regenerating_updates_sections_in_place(ticket):
    first = ticket_card(ticket, results=RESULTS[:2], transfer=TRANSFER[:1], repo_id="test-org/ticket")
    edited = first.content.replace(
        "<!-- /hf_tickets:section:usage -->", "<!-- /hf_tickets:section:usage -->\n\nA note from a person."
    )
    second = ticket_card(ticket, results=RESULTS, existing=edited)
    third = ticket_card(ticket, results=RESULTS, existing=second)

    for card in (second, third):
        assert sections(card.text) == SECTIONS
        assert card.text.count("## Sparsity versus score") == 1
        assert "| ticket (IMP) | 2 | 50.00% | 0.9200 |" in card.text  # the new round is there
        assert card.text.count("A note from a person.") == 1  # text outside the markers stays
        assert "| sst2 | mrpc |" in card.text  # transfer=None keeps the transfer table
        assert card.data.eval_results[0].metric_value == 0.92
    assert third.content == second.content  # regenerating with the same data changes nothing


def test_merge_appends_sections_the_old_card_lacks():
    old = "# Old card\n\n<!-- hf_tickets:section:a -->old a<!-- /hf_tickets:section:a -->\n"
    new = (
        "<!-- hf_tickets:section:a -->new a<!-- /hf_tickets:section:a -->\n"
        "<!-- hf_tickets:section:b -->b<!-- /hf_tickets:section:b -->"
    )
    merged = merge_sections(old, new)
    assert merged.startswith("# Old card") and "new a" in merged and "old a" not in merged
    assert sections(merged) == ["a", "b"]
    assert "old a" in merge_sections(old, new, keep={"a"})


def test_primary_metric_is_the_one_the_caller_recorded():
    rows = [{"sparsity": 0.1, "eval_loss": 1.0, "eval_accuracy": 0.7, "eval_matthews_correlation": 0.4}]
    assert primary_metric(rows, "matthews_correlation") == "eval_matthews_correlation"
    assert primary_metric(rows, "eval_accuracy") == "eval_accuracy"
    assert primary_metric(rows, None) == "eval_accuracy"  # no choice recorded: the first score that is not a loss
    assert primary_metric([{"sparsity": 0.1, "eval_loss": 1.0}], None) == "eval_loss"


def test_plot_is_a_png_with_ticket_and_baseline_lines(tmp_path):
    ticket_points, baselines = split_results(RESULTS, "eval_accuracy")
    assert ticket_points == [(0.0, 0.93), (0.3, 0.925), (0.5, 0.92)]
    assert baselines == {"random_pruning": [(0.5, 0.85)]}
    out = plot_sparsity_vs_score(
        RESULTS,
        "eval_accuracy",
        tmp_path / "plot.png",
        full_score=0.93,
        full_std=0.01,
        baselines={"layerwise": [(0.3, 0.9), (0.5, 0.88)]},
    )
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (600, 400)
    plain = plot_sparsity_vs_score(RESULTS[:3], "eval_accuracy", tmp_path / "plain.png")
    assert plain.read_bytes() != out.read_bytes()
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_sparsity_vs_score(RESULTS, "eval_f1", tmp_path / "none.png")


def test_imp_bookkeeping_columns_are_not_reported_as_metrics():
    rows = [
        {
            "round": 0,
            "sparsity": 0.0,
            "eval_accuracy": 0.9,
            "train_time_s": 3.0,
            "train_steps": 10,
            "planned_steps": 10,
            "early_bird_steps_saved": 0,
            "full_score": 0.9,
            "full_std": None,
        }
    ]
    assert metric_names(rows) == ["eval_accuracy"]


def test_one_rule_for_which_logged_numbers_are_scores():
    assert [k for k in ("eval_accuracy", "eval_f1", "test_exact_match", "perplexity", "eval_loss") if is_metric(k)] == [
        "eval_accuracy",
        "eval_f1",
        "test_exact_match",
        "perplexity",
        "eval_loss",
    ]
    not_scores = ["sparsity", "round", "epoch", "eval_runtime", "eval_samples_per_second", "train_steps_per_second"]
    not_scores += ["total_flos", "train_loss", "train_runtime", "eval_combined_score", "combined_score", "train_steps"]
    assert not [k for k in not_scores if is_metric(k)]
    assert not is_metric("eval_accuracy", None) and not is_metric("eval_accuracy", True)


def test_a_structured_ticket_card_says_how_to_shrink_it_and_shows_speed_beside_score():
    model = tiny_model(BertForMaskedLM)
    model.config._name_or_path = "test-org/tiny-bert"
    structured = prune(model, 0.4, strategy="heads+neurons")
    card = ticket_card(structured, repo_id="me/fast-ticket").text
    assert "## Faster: remove the pruned heads and neurons" in card
    assert "This ticket prunes whole attention heads and FFN neurons. Removed" in card
    assert "hf-tickets shrink me/fast-ticket ./smaller-model\n" in card  # the base model is named: no --model
    assert "| Sparsity |" not in card.split("## Faster")[1].split("## Provenance")[0]  # no speed rows given

    speed = {
        "rows": [
            {"sparsity": 0.3, "score": 0.8123, "matching": True, "speedup": 1.52},
            {"sparsity": 0.5, "score": 0.7712, "matching": False, "speedup": 2.134},
        ],
        "metric": "accuracy",
        "shape": "batch 32, sequence 128, one thread",
        "plot_path": "speed_vs_score.png",
    }
    card = ticket_card(structured, repo_id="me/fast-ticket", speed=speed).text
    assert "| 30.00% | 0.8123 | yes | 1.52× |" in card and "| 50.00% | 0.7712 | no | 2.13× |" in card
    assert "![speed-up versus score](speed_vs_score.png)" in card and "batch 32, sequence 128" in card

    # A sparse checkpoint's weights are fine-tuned: shrink the pulled folder, never the base model.
    sparse_card = ticket_card(structured, repo_id="me/fast-model", checkpoint="dense").text
    assert (
        "hf-tickets pull me/fast-model ./sparse-model\nhf-tickets shrink ./sparse-model ./smaller-model" in sparse_card
    )

    # An unstructured ticket has nothing whole to remove: no such section.
    assert "## Faster" not in ticket_card(prune(model, 0.4), repo_id="me/t").text
