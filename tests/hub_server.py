"""A small Hugging Face Hub-compatible HTTP server for end-to-end tests.

It implements the part of the Hub HTTP API that ``huggingface_hub`` 2.x uses to create repos,
commit files and download them again, so tests can drive the *real* client without network access
or monkeypatching:

- ``GET  /api/whoami-v2``
- ``POST /api/repos/create``, ``POST /api/validate-yaml``
- ``GET  /api/models/{repo}[/revision/{rev}]`` (model info), ``.../tree/{rev}[/{path}]``,
  ``.../refs``, ``.../commits/{rev}``
- ``POST /api/models/{repo}/preupload/{rev}`` (always answers ``"regular"``: files travel base64
  encoded inside the commit, so neither LFS nor Xet is ever involved),
  ``.../commit/{rev}`` (NDJSON), ``.../branch/{name}``
- ``HEAD|GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``

Errors carry the ``X-Error-Code`` header the client maps to its typed errors (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``). Every commit gets a new sha and keeps its parent and
full tree, so any older revision stays resolvable. Only model repos exist here.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import shutil
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_FRONT_MATTER = re.compile(r"\A\ufeff?---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)


def reserve_local_socket() -> socket.socket:
    """Bind a loopback socket on a free port now, so the URL is known before the server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def git_blob_sha(data: bytes) -> str:
    """The id git (and the Hub) gives a regular file: sha1 over ``blob <size>\\0<data>``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    sha: str
    parent: str | None
    tree: dict[str, tuple[str, int]]  # path -> (blob id, size)
    title: str
    message: str
    date: str
    author: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


class HubError(Exception):
    """An HTTP error answered the way the Hub does it (status, ``X-Error-Code``, JSON body)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubServer:
    """Serves Hub-like model repositories from ``root`` on 127.0.0.1 in a background thread."""

    def __init__(
        self,
        root: str | Path,
        *,
        token: str = "hf_tickets_test_token",
        user: str = "test-user",
        orgs: tuple[str, ...] = ("test-org",),
        sock: socket.socket | None = None,
    ):
        self.root = Path(root)
        self.token, self.user, self.orgs = token, user, tuple(orgs)
        self._sock = sock or reserve_local_socket()
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self.repos: dict[str, Repo] = {}
        # Every request as (method, path, status): lets tests check what the client really did.
        self.requests: list[tuple[str, str, int]] = []
        # Requests this server has no route for: a client feature the tests would silently miss.
        self.unrouted: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        httpd = ThreadingHTTPServer(self._sock.getsockname()[:2], _Handler, bind_and_activate=False)
        httpd.socket.close()  # serve on the socket reserved up front instead
        httpd.socket = self._sock
        httpd.server_name, httpd.server_port = self._sock.getsockname()[:2]
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        httpd.server_activate()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo (tests sharing one server start from an empty Hub)."""
        with self._lock:
            self.repos.clear()
            self.requests.clear()
            self.unrouted.clear()
            shutil.rmtree(self.root / "blobs", ignore_errors=True)
            (self.root / "blobs").mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- storage
    def _put_blob(self, data: bytes) -> tuple[str, int]:
        oid = git_blob_sha(data)
        path = self.root / "blobs" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid, len(data)

    def blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def _new_commit(self, repo: Repo, parent: str | None, tree: dict, title: str, message: str) -> Commit:
        date = _now()
        payload = json.dumps([repo.repo_id, parent, sorted(tree.items()), title, message, date, next(self._counter)])
        commit = Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, tree, title, message, date, self.user)
        repo.commits[commit.sha] = commit
        return commit

    def get_repo(self, repo_id: str, *, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        # Like the Hub: a private repo is indistinguishable from a missing one without credentials.
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """A branch name, a full commit sha, or an unambiguous sha prefix of at least 7 characters."""
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return repo.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self._lock:
            repo = Repo(repo_id, private, _now())
            # The Hub seeds every repo with a first commit holding .gitattributes.
            tree = {".gitattributes": self._put_blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")}
            repo.branches["main"] = self._new_commit(repo, None, tree, "initial commit", "").sha
            self.repos[repo_id] = repo
            return repo


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer has a Content-Length
    server_version = "hf-tickets-test-hub"

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - keep pytest output clean
        pass

    # ----------------------------------------------------------------- plumbing
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        # Split before unquoting: a revision like "refs/pr/1" arrives as one "%2F"-quoted segment.
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self._read_body()
        try:
            self._route(method, parts, body)
        except HubError as err:
            self._send_error(err)
        except Exception as err:  # surface server bugs as 500s instead of hanging the client
            self._send_error(HubError(500, f"{type(err).__name__}: {err}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _require_write(self, repo_id: str | None = None) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        if repo_id is not None and repo_id.split("/")[0] not in (self.hub.user, *self.hub.orgs):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = dict(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        headers["X-Error-Message"] = err.message
        self._json({"error": err.message}, err.status, headers)

    # ----------------------------------------------------------------- routes
    def _route(self, method: str, p: list[str], body: bytes) -> None:
        if p[:1] == ["api"]:
            if p[1:] == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if p[1:] == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(body or b"{}"))
            if p[1:] == ["validate-yaml"] and method == "POST":
                return self._validate_yaml(json.loads(body or b"{}"))
            if len(p) >= 4 and p[1] == "models":
                return self._model_api(method, "/".join(p[2:4]), p[4:], body)
            if len(p) >= 2 and p[1] in ("datasets", "spaces", "kernels"):
                raise HubError(404, "Only model repositories exist on this test Hub", "RepoNotFound")
        elif len(p) >= 5 and p[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve("/".join(p[:2]), p[3], "/".join(p[4:]))
        self._no_route(method)

    def _no_route(self, method: str):
        self.hub.unrouted.append(f"{method} {self.path}")
        raise HubError(404, f"No route for {method} {self.path} on the test Hub")

    def _model_api(self, method: str, repo_id: str, rest: list[str], body: bytes) -> None:
        with self.hub._lock:
            repo = self.hub.get_repo(repo_id, authorized=self._authorized())
        action, args = (rest[0], rest[1:]) if rest else ("info", [])
        if method == "GET" and action == "info":
            return self._info(repo, "main")
        if method == "GET" and action == "revision" and len(args) == 1:
            return self._info(repo, args[0])
        if method == "GET" and action == "tree" and args:
            return self._tree(repo, args[0], "/".join(args[1:]))
        if method == "GET" and action == "refs":
            return self._refs(repo)
        if method == "GET" and action == "commits" and len(args) == 1:
            return self._commits(repo, args[0])
        if method == "POST" and action == "preupload" and len(args) == 1:
            return self._preupload(repo, args[0], json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(args) == 1:
            return self._commit(repo, args[0], body)
        if method == "POST" and action == "branch" and len(args) == 1:
            return self._create_branch(repo, args[0], json.loads(body or b"{}"))
        self._no_route(method)

    def _whoami(self) -> None:
        if not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": name, "fullname": name, "roleInOrg": "admin"} for name in self.hub.orgs]
        self._json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": "Test User",
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
            }
        )

    def _create_repo(self, payload: dict) -> None:
        if payload.get("type", "model") != "model":
            raise HubError(400, "Only model repositories can be created on this test Hub")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        self._require_write(repo_id)
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                raise_body = {"error": "You already created this model repo", "url": url}
                return self._json(raise_body, 409, {"X-Error-Message": raise_body["error"]})
            self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _validate_yaml(self, payload: dict) -> None:
        import yaml  # a dependency of huggingface_hub itself

        match = _FRONT_MATTER.match(payload.get("content", ""))
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._json({"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []}, 400)
        if data is not None and not isinstance(data, dict):
            return self._json({"errors": [{"message": "Metadata must be a mapping"}], "warnings": []}, 400)
        self._json({"errors": [], "warnings": []})

    def _info(self, repo: Repo, revision: str) -> None:
        with self.hub._lock:
            commit = self.hub.resolve(repo, revision)
        card = _card_metadata(self.hub, commit)
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = [
            {"rfilename": path, **({"size": size, "blobId": oid} if blobs else {})}
            for path, (oid, size) in sorted(commit.tree.items())
        ]
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card.get("tags") or []),
            "library_name": card.get("library_name"),
            "pipeline_tag": card.get("pipeline_tag"),
            "siblings": siblings,
            "usedStorage": sum(size for _, size in commit.tree.values()),
        }
        if card:
            info["cardData"] = card
            if "model-index" in card:
                info["model-index"] = card["model-index"]
        self._json(info)

    def _tree(self, repo: Repo, revision: str, path: str) -> None:
        with self.hub._lock:
            commit = self.hub.resolve(repo, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        files = {p: v for p, v in commit.tree.items() if p.startswith(prefix)}
        if path and not files:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for file_path, (oid, size) in sorted(files.items()):
            parts = file_path[len(prefix) :].split("/")
            # Folders on the way to the file, then the file itself (only the first level unless recursive).
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha(folder.encode()), "path": folder})
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "oid": oid, "size": size, "path": file_path}
        self._json(list(entries.values()))

    def _refs(self, repo: Repo) -> None:
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": sha} for n, sha in repo.branches.items()]
        self._json({"branches": branches, "tags": [], "converts": [], "pullRequests": []})

    def _commits(self, repo: Repo, revision: str) -> None:
        with self.hub._lock:
            commit: Commit | None = self.hub.resolve(repo, revision)
        history = []
        while commit is not None:
            history.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": commit.author}],
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(history)

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        with self.hub._lock:
            commit = self.hub.resolve(repo, revision)
        files = [
            {
                "path": item["path"],
                # "regular": content travels base64-encoded inside the commit call, no LFS/Xet transfer.
                "uploadMode": "regular",
                "shouldIgnore": False,
                # Lets the client skip files whose content did not change (it compares git blob ids).
                "oid": commit.tree.get(item["path"], (None, 0))[0],
            }
            for item in payload.get("files", [])
        ]
        self._json({"files": files, "commitOid": commit.sha})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        self._require_write(repo.repo_id)
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by the test Hub")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a header line")
        header = lines[0]["value"]
        with self.hub._lock:
            if revision not in repo.branches:
                raise HubError(404, f"Cannot commit to {revision}: not a branch", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent and not head.sha.startswith(parent):
                raise HubError(412, f"A commit has happened since {parent}: head of {revision} is {head.sha}")
            tree = dict(head.tree)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = value["path"]
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}")
                    tree[path] = self.hub._put_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"{path} does not exist", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = path.rstrip("/") + "/"
                    tree = {p: v for p, v in tree.items() if not p.startswith(folder)}
                else:  # lfsFile: never requested, since preupload only answers "regular"
                    raise HubError(400, f"Commit operation {key!r} is not supported by the test Hub")
            commit = self.hub._new_commit(
                repo, head.sha, tree, header.get("summary") or "", header.get("description") or ""
            )
            repo.branches[revision] = commit.sha
        self._json(
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{commit.sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> None:
        self._require_write(repo.repo_id)
        with self.hub._lock:
            if branch in repo.branches:
                return self._json({"error": f"Branch {branch} already exists"}, 409)
            start = self.hub.resolve(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
        self._json({})

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self.hub.get_repo(repo_id, authorized=self._authorized())
            commit = self.hub.resolve(repo, revision)
        if path not in commit.tree:
            # X-Repo-Commit lets the client cache the file's absence for this commit.
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        oid, size = commit.tree[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{oid}"',
            "Accept-Ranges": "bytes",
        }
        data = self.hub.blob(oid)
        status, start = 200, 0
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match and self.command == "GET":  # the client resumes interrupted downloads with a Range
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else size
            data, status = data[start:end], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{size}"
        headers["Content-Length"] = str(len(data))
        self._send(status, data, headers)


def _card_metadata(hub: HubServer, commit: Commit) -> dict:
    """YAML front matter of README.md at ``commit`` (what the Hub exposes as ``cardData``)."""
    import yaml

    if "README.md" not in commit.tree:
        return {}
    match = _FRONT_MATTER.match(hub.blob(commit.tree["README.md"][0]).decode("utf-8", "replace"))
    try:
        data = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
