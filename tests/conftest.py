import atexit
import os
import shutil
import tempfile

import pytest
from hub_server import HubServer, reserve_local_socket

# --- Local Hub (tests/hub_server.py) --------------------------------------------------------------
# huggingface_hub copies HF_ENDPOINT and its telemetry switch into constants when it is first
# imported, so they are set here, before any test module imports it: every Hub request of the test
# session (huggingface_hub, transformers, hf_tickets) goes to the local server, never to the internet.
# The port is reserved now and served on by the `hub_server` fixture.
_HUB_SOCKET = reserve_local_socket()
os.environ["HF_ENDPOINT"] = "http://{}:{}".format(*_HUB_SOCKET.getsockname()[:2])
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"  # also skips the agent-registry fetch in the user agent
os.environ["HF_HUB_DISABLE_XET"] = "1"  # the local Hub only speaks plain HTTP uploads/downloads
# Downloads from the local Hub (even `local_dir` ones write refs there) stay out of ~/.cache/huggingface.
_HUB_CACHE = tempfile.mkdtemp(prefix="hf_tickets-test-hub-cache-")
os.environ["HF_HUB_CACHE"] = _HUB_CACHE
atexit.register(shutil.rmtree, _HUB_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def _hub_server_process(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), sock=_HUB_SOCKET) as server:
        yield server


@pytest.fixture
def hub_server(_hub_server_process, monkeypatch):
    """A Hub-compatible server on 127.0.0.1, emptied for each test; HF_ENDPOINT/HF_TOKEN point at it."""
    import huggingface_hub

    server = _hub_server_process
    if huggingface_hub.constants.ENDPOINT != server.url:
        pytest.fail(f"huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT={server.url}")
    server.reset()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", server.token)
    return server


# --- Recipes on a tiny model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A tiny random BERT checkpoint with a tokenizer (one per test module)."""
    from tiny import tiny_checkpoint  # imports transformers: only after HF_ENDPOINT is set above

    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    """(train, dev) SST-2-style tsv files the tiny model can learn."""
    from tiny import write_sst2

    return write_sst2(tmp_path_factory.mktemp("sst2"))
