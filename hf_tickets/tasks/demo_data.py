"""The README's demo dataset: 10,568 Rotten Tomatoes sentences rated by people (Hutto & Gilbert,
ICWSM 2014), as shipped, MIT-licensed, inside the vaderSentiment 3.3.2 source distribution.

The sdist comes through pip from PyPI (the one registry every machine of the project reaches),
is pinned by sha256, and is read in memory: nothing is extracted to disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

CACHE_ENV_VAR = "HF_TICKETS_CACHE"
VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MOVIE_REVIEWS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
# Far above the real sizes (2.5 MB, 1.4 MB); a bound so a hostile archive cannot fill memory.
MAX_MEMBER_BYTES = 64 * 1024 * 1024

MOVIE_REVIEW_FEATURES = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "hf_tickets")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path) -> Path:
    actual = sha256_of(path)
    if actual != VADER_SHA256:
        path.unlink()
        raise ValueError(f"{path}: sha256 {actual} differs from the pinned {VADER_SHA256}; the file was removed")
    return path


def fetch_vader_sdist(cache_dir: str | Path | None = None) -> Path:
    """The hash-checked vaderSentiment 3.3.2 sdist, downloaded once with pip into the cache."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / VADER_SDIST
    if target.exists():
        return _verify(target)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        # A hash in a requirements file makes pip check the archive right after the download,
        # before it runs the sdist's setup.py to read its metadata (pip download always does that
        # for an sdist; no flag turns it off).
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{VADER_REQUIREMENT} --hash=sha256:{VADER_SHA256}\n")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
            str(requirements),
            "-d",
            scratch,
        ]
        # Without build isolation pip reads the metadata with our setuptools instead of
        # installing one in a throw-away environment; it needs setuptools to be there.
        if importlib.util.find_spec("setuptools") is not None:
            command.insert(command.index("-r"), "--no-build-isolation")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        downloaded = Path(scratch) / VADER_SDIST
        if result.returncode != 0 or not downloaded.exists():
            raise RuntimeError(
                f"pip could not download {VADER_REQUIREMENT}:\n{result.stderr.strip() or result.stdout.strip()}"
            )
        _verify(downloaded)
        os.replace(downloaded, target)
    return target


def _read_member(archive: tarfile.TarFile, name: str, where: str) -> bytes:
    """A regular file's bytes, found by exact name: links and devices are refused."""
    try:
        member = archive.getmember(name)
    except KeyError:
        raise ValueError(f"{where}: no member {name!r}") from None
    if not member.isfile():
        raise ValueError(f"{where}: member {name!r} is not a regular file")
    if member.size > MAX_MEMBER_BYTES:
        raise ValueError(f"{where}: member {name!r} is {member.size} bytes, over the {MAX_MEMBER_BYTES} limit")
    return archive.extractfile(member).read()


def read_ground_truth(text: bytes, where: str = "ground truth") -> Dataset:
    """Rows ``id<TAB>mean rating<TAB>sentence`` (CRLF) to ``sentence``/``label`` by rating sign.

    Sentences rated exactly 0 are neither positive nor negative and are dropped.
    """
    sentences, labels = [], []
    for line_number, line in enumerate(text.decode("utf-8").split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{where}: line {line_number}: {len(fields)} fields, expected id, rating, sentence")
        try:
            rating = float(fields[1])
        except ValueError:
            raise ValueError(f"{where}: line {line_number}: rating {fields[1]!r} is not a number") from None
        if rating != 0:
            sentences.append(fields[2])
            labels.append(int(rating > 0))
    return Dataset.from_dict({"sentence": sentences, "label": labels}, features=MOVIE_REVIEW_FEATURES)


def read_movie_reviews(sdist: str | Path) -> Dataset:
    """The movie-review sentences from the nested archive, read in memory."""
    with tarfile.open(sdist, "r:gz") as outer:
        inner_bytes = _read_member(outer, INNER_ARCHIVE, str(sdist))
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        text = _read_member(inner, MOVIE_REVIEWS, f"{sdist}!{INNER_ARCHIVE}")
    return read_ground_truth(text, f"{sdist}!{MOVIE_REVIEWS}")


def split_train_validation(dataset: Dataset, seed: int = 0, validation_fraction: float = 0.2) -> DatasetDict:
    """A seeded random split, each split in shuffled order: the file lists all positive sentences first,
    so a truncated split (``--max_train_samples``) must not keep the file order."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_validation = round(len(dataset) * validation_fraction)
    return DatasetDict(
        train=dataset.select(order[n_validation:]),
        validation=dataset.select(order[:n_validation]),
    )


def load_movie_reviews(
    cache_dir: str | Path | None = None, seed: int = 0, validation_fraction: float = 0.2
) -> DatasetDict:
    """Splits ``train``/``validation`` with columns ``sentence`` and ``label`` (0 negative, 1 positive)."""
    return split_train_validation(read_movie_reviews(fetch_vader_sdist(cache_dir)), seed, validation_fraction)
