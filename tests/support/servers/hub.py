"""Stand-ins for the Hugging Face Hub: a local cache folder in the Hub's layout, and its
HTTP API for one repository."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.servers.base import JsonHandler, LocalServer

SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_hub(repo_id: str, files: dict[str, bytes]):
    """A local HTTP server answering the Hub API calls huggingface_hub makes for one
    repository at commit SHA (revision, tree listing, HEAD and GET of resolve URLs).
    Returns the server and the list of files it has served."""
    served = []

    class Handler(JsonHandler):
        protocol_version = "HTTP/1.0"  # one request per connection, as huggingface_hub expects here

        def reply(self, code: int, body: bytes, headers: dict, head: bool):
            self.send_body(code, body, headers, head)

        def route(self, head: bool):
            path, as_json = self.path.split("?")[0], {"Content-Type": "application/json"}
            resolve = f"/{repo_id}/resolve/{SHA}/"
            if path in (f"/api/models/{repo_id}", f"/api/models/{repo_id}/revision/main"):
                info = {"id": repo_id, "sha": SHA, "siblings": [{"rfilename": n} for n in files]}
                return self.reply(200, json.dumps(info).encode(), as_json, head)
            if path.startswith(f"/api/models/{repo_id}/tree/{SHA}"):
                tree = [{"type": "file", "path": name, "size": len(body),
                         "oid": hashlib.sha1(body).hexdigest()} for name, body in files.items()]
                return self.reply(200, json.dumps(tree).encode(), as_json, head)
            if path.startswith(resolve) and path[len(resolve):] in files:
                body = files[path[len(resolve):]]
                if not head:
                    served.append(path[len(resolve):])
                return self.reply(200, body, {"X-Repo-Commit": SHA,
                                              "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}, head)
            return self.reply(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head)

        def do_GET(self):
            self.route(head=False)

        def do_HEAD(self):
            self.route(head=True)

    return LocalServer(Handler).start(), served


def hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A Hub cache entry as huggingface_hub writes it: content-addressed blobs, refs/main,
    and a snapshot folder of relative symlinks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SHA)
    for rel, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / SHA / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo
