"""A small upload endpoint: what `HfApi.create_repo` + `upload_folder` call in huggingface_hub
2.4 (with HF_HUB_DISABLE_XET=1), and nothing else. olah is a read-only mirror, so push tests need
this. Each commit is materialised as a folder and written with `zoo.hub.mirror.build_git_repo` into the
same `mirrors/` folder olah serves, so a pushed repo can be pulled back through olah at once, and
the commit sha it reports is `zoo.hub.revision.folder_revision` of the pushed files.

Requests (spec local-hub.md, "Uploads"): whoami-v2, repos/create, validate-yaml, preupload,
LFS batch + PUT, commit (NDJSON)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hubtools.net import free_port, wait_http

from zoo.hub.mirror import build_git_repo
from zoo.hub.revision import is_lfs


def make_app(mirrors: Path, state: Path, base_url: str):
    # (FastAPI resolves the `Request` annotations in this module's globals: imported at the top)
    app = FastAPI()
    objects = state / "lfs"
    objects.mkdir(parents=True, exist_ok=True)
    app.state.log = []

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        app.state.log.append((request.method, request.url.path))
        return await call_next(request)

    @app.get("/api/whoami-v2")
    def whoami():
        return {"type": "user", "name": "zoo", "orgs": []}

    @app.post("/api/repos/create")
    async def create(request: Request):
        body = await request.json()
        repo = f"{body.get('organization') or 'zoo'}/{body['name']}"
        (state / "repos" / repo).mkdir(parents=True, exist_ok=True)
        return {"url": f"{base_url}/{repo}"}

    @app.post("/api/validate-yaml")
    def validate_yaml():
        return {"errors": [], "warnings": []}

    @app.post("/api/models/{org}/{name}/preupload/{revision}")
    async def preupload(org: str, name: str, revision: str, request: Request):
        body = await request.json()
        return {"files": [{"path": f["path"], "uploadMode": "lfs" if is_lfs(f["path"], f["size"]) else "regular",
                           "shouldIgnore": False} for f in body["files"]]}

    @app.post("/{org}/{name}.git/info/lfs/objects/batch")
    async def lfs_batch(org: str, name: str, request: Request):
        body = await request.json()
        out = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not (objects / obj["oid"]).exists():
                entry["actions"] = {"upload": {"href": f"{base_url}/lfs-upload/{obj['oid']}"}}
            out.append(entry)
        return JSONResponse({"transfer": "basic", "objects": out},
                            media_type="application/vnd.git-lfs+json")

    @app.put("/lfs-upload/{oid}")
    async def lfs_upload(oid: str, request: Request):
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return JSONResponse({"error": "sha256 does not match the oid"}, status_code=400)
        tmp = objects / f".{oid}.tmp"
        tmp.write_bytes(data)
        tmp.replace(objects / oid)
        return {}

    @app.post("/api/models/{org}/{name}/commit/{revision}")
    async def commit(org: str, name: str, revision: str, request: Request):
        repo = f"{org}/{name}"
        work = state / "repos" / repo
        work.mkdir(parents=True, exist_ok=True)
        for line in (await request.body()).decode().splitlines():
            if not line.strip():
                continue
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "file":
                dst = work / value["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                dst = work / value["path"]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(objects / value["oid"], dst)
            elif key == "deletedFile":
                (work / value["path"]).unlink(missing_ok=True)
            elif key == "deletedFolder":
                shutil.rmtree(work / value["path"], ignore_errors=True)
        sha = build_git_repo(work, mirrors / "models" / repo)
        return {"commitUrl": f"{base_url}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    return app


class UploadServer:
    def __init__(self, mirrors: str | Path, state: str | Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = make_app(Path(mirrors), Path(state), self.url)
        self._server = None
        self._thread = None

    @property
    def log(self) -> list[tuple[str, str]]:
        return self.app.state.log

    def start(self) -> "UploadServer":
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_http(f"{self.url}/api/whoami-v2")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
            time.sleep(0)
