"""A minimal local Hugging Face Hub (stdlib HTTP server on 127.0.0.1) for offline push/download tests.

It implements the routes ``huggingface_hub`` uses for ``create_repo``, ``upload_folder`` (regular, inline
uploads), model cards, ``hf_hub_download``/``snapshot_download`` and ``from_pretrained`` (see
``specs/environment.md``). Repositories live in memory: ``{repo_id: {path: bytes}}`` plus a commit sha.

Use::

    server = LocalHub(); server.start()      # server.endpoint == "http://127.0.0.1:<port>"
    ...  HF_ENDPOINT=server.endpoint ...
    server.fail_next_commits = 1             # answer the next commit with HTTP 500
    server.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

__all__ = ["LocalHub"]

USER = "user"


class LocalHub:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.shas: dict[str, str] = {}
        self.fail_next_commits = 0
        self.requests: list[str] = []
        self._server = None
        self._thread = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    # --- helpers -----------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers=None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _repo_info(self, repo_id: str):
        files = self.hub.repos[repo_id]
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": self.hub.shas[repo_id],
            "private": False,
            "siblings": [{"rfilename": path} for path in sorted(files)],
            "tags": [],
        }

    # --- routes ------------------------------------------------------------------------------------------------
    def do_GET(self):
        self._route()

    def do_HEAD(self):
        self._route()

    def do_POST(self):
        self._route()

    def _route(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        self.hub.requests.append(f"{self.command} {path}")
        if path == "/api/whoami-v2":
            return self._json(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}},
                                    "orgs": []})
        if path == "/api/validate-yaml":
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if path == "/api/repos/create" and self.command == "POST":
            payload = json.loads(self._body() or b"{}")
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            if repo_id in self.hub.repos:
                return self._json(409, {"error": "You already created this model repo", "url": f"{self.hub.endpoint}/{repo_id}"})
            self.hub.repos[repo_id] = {}
            self.hub.shas[repo_id] = hashlib.sha1(repo_id.encode()).hexdigest()
            return self._json(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
        if match and self.command == "POST":
            payload = json.loads(self._body() or b"{}")
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in payload.get("files", [])]
            return self._json(200, {"files": files, "commitOid": self.hub.shas.get(match.group(1))})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
        if match and self.command == "POST":
            return self._commit(match.group(1))
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        if match:
            repo_id = match.group(1)
            if repo_id not in self.hub.repos:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            files = self.hub.repos[repo_id]
            return self._json(200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                    for p, b in sorted(files.items())])
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(/revision/([^/]+))?", path)
        if match:
            repo_id = match.group(1)
            if repo_id not in self.hub.repos:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return self._json(200, self._repo_info(repo_id))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            repo_id, _, filename = match.groups()
            if repo_id not in self.hub.repos:
                return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            content = self.hub.repos[repo_id].get(filename)
            if content is None:
                return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            etag = f'"{hashlib.sha1(content).hexdigest()}"'
            return self._send(200, content, {"ETag": etag, "X-Repo-Commit": self.hub.shas[repo_id]},
                              content_type="application/octet-stream")
        # Anything else (e.g. /api/agent-harnesses) is unknown to this server: a plain 404.
        return self._json(404, {"error": f"not found: {path}"})

    def _commit(self, repo_id: str):
        body = self._body()
        if self.hub.fail_next_commits > 0:
            self.hub.fail_next_commits -= 1
            return self._json(500, {"error": "Internal Server Error (LocalHub.fail_next_commits)"})
        if repo_id not in self.hub.repos:
            return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        files = dict(self.hub.repos[repo_id])
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            key, value = entry.get("key"), entry.get("value", {})
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
        self.hub.repos[repo_id] = files
        sha = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())).encode()).hexdigest()
        self.hub.shas[repo_id] = sha
        return self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha})
