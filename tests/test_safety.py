"""Issue 13, "Unsafe: must never happen again": one test (or a few) per item. Each would fail if the
unsafe behaviour came back: user folders deleted by push, a folder source swapped between check and
load, tokens sent where nobody asked, links followed out of a folder, a user's --out overwritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hubtools import tiny  # noqa: E402
from hubtools.net import free_port  # noqa: E402

import zoo.hub as hub  # noqa: E402
from zoo._io import sha256_file  # noqa: E402
from zoo.errors import CheckpointError, HubError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REPO = "zoo/tiny-mlp-toy"


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("ZOO_HUB_SEND_TOKEN", raising=False)


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    path = tiny.write_registry(tmp_path / "registry.yaml")
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    return path


@pytest.fixture()
def checkpoint(tmp_path, registry):
    return tiny.make_checkpoint(tmp_path / "runs" / "toy")


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links not followed) with its bytes: 'nothing changed' checks."""
    out = {}
    for top, dirs, names in os.walk(folder):
        for name in names:
            path = Path(top) / name
            out[str(path.relative_to(folder))] = (b"LINK:" + os.readlink(path).encode()) if path.is_symlink() \
                else path.read_bytes()
    return out


def zoo_cli(*args, env=None):
    full = {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=full,
                          cwd=ROOT, timeout=300)


# ---- 1. push never deletes a folder zoo did not publish ---------------------------------------------

def test_push_refuses_a_parent_of_the_source_and_keeps_its_siblings(tmp_path, registry):
    hubdir = tmp_path / "hubdir"
    runs = hubdir / "org" / "runs"
    tiny.make_checkpoint(runs / "a")
    tiny.make_checkpoint(runs / "b", seed=1)
    (runs / "notes.txt").write_text("my notes")
    before = tree(hubdir)
    with pytest.raises(HubError) as err:
        hub.push(runs / "a", "org/runs", hub=str(hubdir))
    assert "refusing" in str(err.value) and "\n" not in str(err.value)
    assert tree(hubdir) == before


def test_push_of_a_folder_onto_itself_is_refused(tmp_path, registry):
    hubdir = tmp_path / "hubdir"
    me = tiny.make_checkpoint(hubdir / "org" / "self")
    (me / ".train").mkdir()
    (me / ".train" / "state.pt").write_bytes(b"training state")
    (me / "extra.txt").write_text("mine")
    before = tree(hubdir)
    with pytest.raises(HubError, match="refusing"):
        hub.push(me, "org/self", hub=str(hubdir))
    assert tree(hubdir) == before


def test_push_refuses_a_user_folder_and_a_published_repo_with_user_files(tmp_path, checkpoint):
    hubdir = tmp_path / "hubdir"
    mine = hubdir / "org" / "mine"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(HubError, match="was not published by zoo push"):
        hub.push(checkpoint, "org/mine", hub=str(hubdir))
    assert (mine / "thesis.tex").read_text() == "years of work"

    hub.push(checkpoint, REPO, hub=str(hubdir))
    hub.push(checkpoint, REPO, hub=str(hubdir))  # zoo's own repo: replaced
    (hubdir / REPO / "notes.txt").write_text("added by hand")
    with pytest.raises(HubError, match="holds files zoo did not publish"):
        hub.push(checkpoint, REPO, hub=str(hubdir))
    assert (hubdir / REPO / "notes.txt").read_text() == "added by hand"


def test_push_replaces_a_repo_published_before_markers(tmp_path, checkpoint):
    """The project's hub/ repos predate the marker: a folder of checkpoint files only is replaced."""
    hubdir = tmp_path / "hubdir"
    old = hubdir / REPO
    old.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "README.md"):
        shutil.copyfile(checkpoint / name, old / name)
    pushed = hub.push(checkpoint, REPO, hub=str(hubdir))
    assert hub.folder_revision(old) == pushed["entry"]["revision"]


def test_cli_push_refusal_is_one_line(tmp_path, registry, checkpoint):
    runs = tmp_path / "hubdir" / "org" / "runs"
    shutil.copytree(checkpoint, runs / "a")
    (runs / "notes.txt").write_text("x")
    done = zoo_cli("push", str(runs / "a"), "--repo", "org/runs", "--hub", str(tmp_path / "hubdir"),
                   env={"ZOO_REGISTRY": str(registry)})
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and (runs / "notes.txt").exists()


# ---- 2. a folder source: the bytes loaded are the bytes hashed --------------------------------------

def test_folder_pull_returns_a_verified_copy_not_the_source(tmp_path, checkpoint):
    pushed = hub.push(checkpoint, REPO, hub=str(tmp_path / "hubdir"))
    entry = pushed["entry"]
    got = hub.pull(REPO, entry["revision"], entry["files"], hub=str(tmp_path / "hubdir"))
    weights = tmp_path / "hubdir" / REPO / "model.safetensors"
    weights.write_bytes(b"swapped after the check")  # a writer of the shared folder strikes
    assert sha256_file(got / "model.safetensors") == entry["files"]["model.safetensors"]
    import torch
    model = tiny.tiny_mlp()
    from zoo.checkpoint import load_weights
    load_weights(model, got)
    assert torch.equal(model.state_dict()["0.weight"],
                       __import__("safetensors.torch", fromlist=["load_file"]).load_file(
                           str(checkpoint / "model.safetensors"))["0.weight"])


def test_folder_pull_under_a_swapping_writer_never_yields_unverified_bytes(tmp_path, checkpoint):
    pushed = hub.push(checkpoint, REPO, hub=str(tmp_path / "hubdir"))
    entry = pushed["entry"]
    weights = tmp_path / "hubdir" / REPO / "model.safetensors"
    good = weights.read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 1
    stop = threading.Event()

    def swapper():
        flip = False
        while not stop.is_set():
            tmp = weights.with_name(".swap")
            tmp.write_bytes(bytes(bad) if flip else good)
            os.replace(tmp, weights)
            flip = not flip

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    ok = refused = 0
    try:
        for _ in range(60):
            try:
                got = hub.pull(REPO, entry["revision"], entry["files"], hub=str(tmp_path / "hubdir"))
            except HubError:
                refused += 1
                continue
            ok += 1
            # what a loader reads now is exactly what was verified
            assert sha256_file(got / "model.safetensors") == entry["files"]["model.safetensors"]
    finally:
        stop.set()
        thread.join()
    assert ok + refused == 60


# ---- 3. tokens and credentials ----------------------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    handler = type("Rec", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_pull_sends_no_token_unless_asked(tmp_path, recorder, monkeypatch):
    url, handler = recorder
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_strangers")
    files = {"config.json": "0" * 64}
    with pytest.raises(HubError):
        hub.pull(REPO, "a" * 40, files, hub=url, cache_dir=tmp_path / "c", progress=False)
    assert handler.seen and not any(handler.seen), handler.seen
    # asked for: then it goes (so the check above can see a header when one is sent)
    handler.seen.clear()
    with pytest.raises(HubError):
        hub.pull(REPO, "a" * 40, files, hub=url, cache_dir=tmp_path / "c", progress=False, token=True)
    assert any(h and "hf_not_for_strangers" in h for h in handler.seen), handler.seen


def test_push_warns_before_sending_a_token_over_http_or_to_another_host(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    from zoo.hub.sources import token_warning
    assert "plain http" in token_warning("http://127.0.0.1:9")
    assert "host other than" in token_warning("https://mirror.example.org")
    assert token_warning("https://huggingface.co") is None
    assert "***@" in token_warning("http://me:pw@127.0.0.1:9") and "pw" not in token_warning(
        "http://me:pw@127.0.0.1:9").replace("plain", "")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN_PATH", "/nonexistent/token")
    assert token_warning("http://127.0.0.1:9") is None  # no token, nothing to warn about


def test_credentials_in_a_hub_url_are_never_echoed(tmp_path, checkpoint, registry, monkeypatch, capsys,
                                                  caplog):
    down = f"http://alice:s3cr3tpw@127.0.0.1:{free_port()}"
    # pull: the error line
    with pytest.raises(HubError) as err:
        hub.pull(REPO, "a" * 40, {"config.json": "0" * 64}, hub=down, cache_dir=tmp_path / "c",
                 progress=False)
    assert "s3cr3tpw" not in str(err.value) and "***@" in str(err.value)
    assert "s3cr3tpw" not in capsys.readouterr().err + caplog.text  # huggingface_hub's retry lines
    # push --json: the hub it reports
    push_mod = sys.modules["zoo.hub.push"]
    monkeypatch.setattr(push_mod, "_publish_url", lambda *a, **k: "f" * 40)
    from typer.testing import CliRunner

    from cli.main import app
    result = CliRunner().invoke(app, ["push", str(checkpoint), "--repo", REPO, "--hub", down, "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cr3tpw" not in result.output and json.loads(result.stdout)["hub"].startswith("http://***@")
    # push to a down server, as a user runs it: one line, no password, the token warning first
    done = zoo_cli("push", str(checkpoint), "--repo", REPO, "--hub", down,
                   env={"ZOO_REGISTRY": str(registry), "HF_TOKEN": "hf_x"})
    assert done.returncode != 0 and "s3cr3tpw" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 2 and "warning" in lines[0], done.stderr


# ---- 4. push publishes the checkpoint's own files, never through a link ----------------------------

def test_push_publishes_only_checkpoint_files_and_follows_no_link(tmp_path, checkpoint):
    secret = tmp_path / "outside" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    (checkpoint / "id_rsa").symlink_to(secret)
    (checkpoint / "notes.txt").write_text("mine")
    (checkpoint / "sub").mkdir()
    (checkpoint / "sub" / "data.bin").write_bytes(b"x")
    (checkpoint / "linkdir").symlink_to(secret.parent)
    pushed = hub.push(checkpoint, REPO, hub=str(tmp_path / "hubdir"))
    dest = tmp_path / "hubdir" / REPO
    assert sorted(hub.published_files(dest)) == ["README.md", "config.json", "model.safetensors"]
    assert sorted(pushed["entry"]["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert pushed["skipped"] == ["id_rsa", "linkdir", "notes.txt", "sub/"]
    assert not any(b"PRIVATE KEY" in data for data in tree(tmp_path / "hubdir").values())


def test_push_refuses_weights_that_are_a_link(tmp_path, checkpoint):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(checkpoint / "model.safetensors", outside)
    (checkpoint / "model.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        hub.push(checkpoint, REPO, hub=str(tmp_path / "hubdir"))
    assert not (tmp_path / "hubdir").exists()


def test_mirror_follows_no_link_out_of_a_repo(tmp_path, checkpoint):
    hubdir = tmp_path / "hubdir"
    pushed = hub.push(checkpoint, REPO, hub=str(hubdir))
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (hubdir / REPO / "leak.txt").symlink_to(secret)
    revisions = hub.build_mirror(hubdir, tmp_path / "mirrors")
    assert revisions == {REPO: pushed["entry"]["revision"]}  # the link is not part of the repo
    import zlib
    objects = (tmp_path / "mirrors" / "models" / REPO / ".git" / "objects").rglob("*")
    assert not any(b"TOP SECRET" in zlib.decompress(p.read_bytes()) for p in objects if p.is_file())


# ---- 5. --out: never a user's folder, one writer at a time, checked before any data work ------------

FT = ["finetune", "deeponet", "--dataset", "antiderivative", "-o", "size=40", "-o", "no_eval=true",
      "--steps", "2", "-b", "8"]


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"learning_rate": 0.1}\n')
    (path / "README.md").write_text("# my own project\n")
    return path


def test_finetune_refuses_a_users_folder_before_any_data_work(tmp_path, monkeypatch):
    import zoo.loading
    from zoo.training import loop

    def no(*a, **k):
        raise AssertionError("a model was built or data prepared before the --out check")

    monkeypatch.setattr(zoo.loading, "load", no)
    monkeypatch.setattr(zoo.loading, "dataset_for", no)
    mine = _user_folder(tmp_path / "mine")
    before = tree(mine)
    args = {"name": "deeponet", "dataset": "antiderivative", "out": str(mine), "options": {"overwrite": True}}
    with pytest.raises(CheckpointError, match="zoo did not write"):
        loop.run(args)
    with pytest.raises(CheckpointError, match="zoo did not write"):
        loop.launch_distributed(args, 2)
    assert tree(mine) == before


def test_cli_finetune_into_a_users_folder_is_one_line_and_changes_nothing(tmp_path):
    mine = _user_folder(tmp_path / "mine")
    before = tree(mine)
    done = zoo_cli(*FT, "--out", str(mine))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "refusing to write there" in done.stderr and tree(mine) == before


def test_a_checkpoint_of_another_model_is_refused_as_out(tmp_path, registry):
    from zoo.checkpoint import save_checkpoint

    other = tiny.make_checkpoint(tmp_path / "other")   # a tiny-mlp checkpoint
    before = tree(other)
    with pytest.raises(CheckpointError, match="not of 'deeponet'"):
        save_checkpoint(other, tiny.tiny_mlp(), {"model": "deeponet", "config": {}})
    assert tree(other) == before
    mine = _user_folder(tmp_path / "mine")   # what convert --out writes through
    with pytest.raises(CheckpointError, match="refusing"):
        save_checkpoint(mine, tiny.tiny_mlp(), {"model": "tiny-mlp", "config": {}})
    assert (mine / "README.md").read_text() == "# my own project\n"


def test_two_runs_into_one_out_cannot_both_proceed(tmp_path):
    from zoo.checkpoint import run_lock

    out = tmp_path / "run"
    with run_lock(out):   # a first `zoo finetune` holds the folder
        t0 = time.monotonic()
        done = zoo_cli(*FT, "--out", str(out))
        assert done.returncode == 1 and "another zoo process is writing" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and time.monotonic() - t0 < 120
    assert not (out / "config.json").exists() and not (out / ".train" / "state.pt").exists()


# ---- 6. kill -9 of a DDP finetune takes its workers with it ----------------------------------------

def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_a_ddp_finetune_leaves_no_worker(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "finetune", "deeponet", "--dataset", "antiderivative",
                             "-o", "size=400", "-o", "no_eval=true", "--steps", "100000", "-b", "8",
                             "--save-every", "1", "--nproc-per-node", "2", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spec = str(out / ".train" / "launch.json")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / ".train" / "state.pt").is_file():
        time.sleep(0.2)
    assert (out / ".train" / "state.pt").is_file(), "the workers never started training"
    assert len(_processes_mentioning(spec)) >= 3   # torchrun and two workers
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _processes_mentioning(spec):
        time.sleep(0.2)
    left = _processes_mentioning(spec)
    for pid in left:   # clean up before failing
        os.kill(pid, 9)
    assert not left, f"{len(left)} processes outlived the killed `zoo finetune`"
    # and nothing writes the run folder any more
    before = (out / ".train" / "state.pt").stat().st_mtime_ns
    time.sleep(2)
    assert (out / ".train" / "state.pt").stat().st_mtime_ns == before


# ---- 8. `--hub ''` is not the project's own hub/ ----------------------------------------------------

@pytest.mark.parametrize("given", ["", " ", ",,,"])
def test_push_to_an_empty_hub_is_refused(tmp_path, checkpoint, given):
    project = tree(hub.project_hub_dir()) if hub.project_hub_dir().is_dir() else {}
    with pytest.raises(HubError, match="names no folder or URL"):
        hub.push(checkpoint, REPO, hub=given)
    assert (tree(hub.project_hub_dir()) if hub.project_hub_dir().is_dir() else {}) == project


def test_pull_from_a_hub_list_of_nothing_says_so(tmp_path):
    with pytest.raises(HubError, match="names no folder or URL"):
        hub.pull(REPO, "a" * 40, {"config.json": "0" * 64}, hub=",,,", cache_dir=tmp_path / "c")


# ---- 9. broken cache entries are listed, fail verify, and rm removes them ---------------------------

def test_cache_sees_and_removes_a_broken_entry(tmp_path, checkpoint):
    pushed = hub.push(checkpoint, REPO, hub=str(tmp_path / "hubdir"))
    entry = pushed["entry"]
    cache = tmp_path / "c"
    got = hub.pull(REPO, entry["revision"], entry["files"], hub=str(tmp_path / "hubdir"), cache_dir=cache)
    hub.cache_check(hub.cache_verify(cache_dir=cache))   # healthy first
    (got / "model.safetensors").resolve().unlink()        # the blob goes, the link dangles
    listed = hub.cache_ls(cache_dir=cache)
    assert [(r["repo"], r.get("broken")) for r in listed] == [(REPO, True)]
    rows = hub.cache_verify(cache_dir=cache)
    assert ("model.safetensors", "missing") in [(r["file"], r["status"]) for r in rows]
    with pytest.raises(HubError, match="broken"):
        hub.cache_check(rows)
    removed = hub.cache_rm(REPO, cache_dir=cache)
    assert [r["repo"] for r in removed["removed"]] == [REPO]
    assert hub.cache_ls(cache_dir=cache) == [] and hub.cache_verify(cache_dir=cache) == []


# ---- push/pull names: a repo id or a pinned file name never leaves its folder -----------------------

@pytest.mark.parametrize("repo", ["org/x\n", "org/x..", "org/..", "../x", "org/x/y", "org/x."])
def test_bad_repo_ids_are_refused_and_create_nothing(tmp_path, checkpoint, repo):
    with pytest.raises(HubError, match="not a repo id"):
        hub.push(checkpoint, repo, hub=str(tmp_path / "hubdir"))
    assert not (tmp_path / "hubdir").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_pinned_file_names_outside_the_repo_are_one_line(tmp_path, name):
    with pytest.raises(HubError, match="not a path inside the repo"):
        hub.pull(REPO, "a" * 40, {name: "0" * 64}, hub=str(tmp_path), cache_dir=tmp_path / "c")
