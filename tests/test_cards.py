"""Model cards: Hub metadata that ModelCard.load parses, sections updated in place, the plot."""

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from tiny import tiny_model
from transformers import BertForMaskedLM

from hf_tickets import prune
from hf_tickets.hub.cards import SECTION_RE, merge_sections, primary_metric, ticket_card
from hf_tickets.hub.plots import plot_sparsity_vs_score, split_results

SECTIONS = ["summary", "how_found", "sparsity", "results", "transfer", "usage", "provenance"]
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
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.92)
    assert "50.00%" in result.metric_name


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


def test_without_results_the_card_says_so_and_has_no_model_index(ticket):
    card = ticket_card(ticket)
    assert "No per-round results recorded yet." in card.text and "No transfer results recorded yet." in card.text
    assert "model-index" not in card.data.to_dict()


def test_a_local_base_model_path_is_not_put_in_the_metadata(ticket):
    ticket.config.base_model = "/tmp/some/local/bert"
    card = ticket_card(ticket)
    assert card.data.base_model is None
    assert "| Base model | /tmp/some/local/bert |" in card.text


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


def test_primary_metric_follows_the_task():
    rows = [{"sparsity": 0.1, "eval_accuracy": 0.7, "eval_matthews_correlation": 0.4, "eval_loss": 1.0}]
    assert primary_metric(rows, "cola") == "eval_matthews_correlation"
    assert primary_metric(rows, "sst2") == "eval_accuracy"
    assert primary_metric([{"sparsity": 0.1, "eval_loss": 1.0, "eval_f1": 0.5}], None) == "eval_f1"


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
    from hf_tickets.hub.cards import metric_names

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
