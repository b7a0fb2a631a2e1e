"""olah (a self-hosted Hugging Face Hub mirror) on 127.0.0.1, offline, serving the git repos in
`<workdir>/mirrors/models/<org>/<name>` (specs/local-hub.md has the recipe)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from hubtools.net import free_port, wait_http

from zoo.hub.mirror import build_git_repo, build_mirror

TOML = """[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{workdir}/olah-cache"
mirror-scheme = "http"
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{workdir}/mirrors"]

[accessibility]
offline = true
"""


def olah_cli() -> str:
    here = Path(sys.executable).parent / "olah-cli"
    found = str(here) if here.exists() else shutil.which("olah-cli")
    if not found:
        raise RuntimeError("olah-cli not found (pip install olah==0.5.4)")
    return found


class Olah:
    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        self.mirrors = self.workdir / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def add_repo(self, repo: str, folder: str | Path) -> str:
        """Serve `folder` as `repo`; returns the revision (== zoo.hub.folder_revision(folder))."""
        return build_git_repo(folder, self.mirrors / "models" / repo)

    def add_hub(self, hub_dir: str | Path) -> dict[str, str]:
        return build_mirror(hub_dir, self.mirrors)

    def repo_dir(self, repo: str) -> Path:
        return self.mirrors / "models" / repo

    def start(self) -> "Olah":
        (self.workdir / "olah.toml").write_text(TOML.format(port=self.port, workdir=self.workdir))
        log = open(self.workdir / "olah.out", "wb")
        self.proc = subprocess.Popen([olah_cli(), "-c", str(self.workdir / "olah.toml"), "--log-path",
                                      str(self.workdir / "olah-logs")], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"})
        log.close()
        try:
            wait_http(f"{self.url}/api/models/zoo/__probe__/revision/main")
        except RuntimeError:
            self.stop()
            raise RuntimeError("olah did not start: " + (self.workdir / "olah.out").read_text()[-2000:])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
