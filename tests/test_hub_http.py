"""The hub over the real HTTP path: olah on 127.0.0.1 serving LFS-pointer git repos built from a
folder hub, reached through huggingface_hub; pushes go to a small upload endpoint of the tests'
own that writes into the same mirrors. Client calls run in fresh processes because
huggingface_hub reads HF_* variables when it is imported; a counting proxy sits in front of olah.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

from hubtools import tiny  # noqa: E402
from hubtools.olah_server import Olah  # noqa: E402
from hubtools.proxy import CountingProxy  # noqa: E402
from hubtools.upload_server import UploadServer  # noqa: E402

from zoo import hub  # noqa: E402


class Published:
    """A folder hub with two checkpoints, served by olah; the registry pins both."""

    def __init__(self, root: Path):
        self.root = root
        self.registry = root / "registry.yaml"
        tiny.write_registry(self.registry)
        os.environ["ZOO_REGISTRY"] = str(self.registry)
        self.hub_dir = root / "hubdir"
        small = tiny.make_checkpoint(root / "runs" / "toy")
        wide = tiny.make_checkpoint(root / "runs" / "wide", width=512, depth=1, tag="wide")  # ~1 MB
        # > 10 MB: huggingface_hub writes in 10 MB chunks, so only a bigger file is ever half-written
        big = tiny.make_checkpoint(root / "runs" / "big", width=2048, depth=1, tag="big")
        self.entries = {
            "toy": hub.push(small, "zoo/tiny-mlp-toy", hub=str(self.hub_dir))["entry"],
            "wide": hub.push(wide, "zoo/tiny-mlp-wide", hub=str(self.hub_dir))["entry"],
            "big": hub.push(big, "zoo/tiny-mlp-big", hub=str(self.hub_dir))["entry"],
        }
        tiny.write_registry(self.registry, self.entries)
        self.olah = Olah(root / "olah")
        self.revisions = self.olah.add_hub(self.hub_dir)
        self.olah.start()
        self.proxy = CountingProxy(self.olah.url).start()

    def close(self):
        self.proxy.stop()
        self.olah.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    before = os.environ.get("ZOO_REGISTRY")
    pub = Published(tmp_path_factory.mktemp("hub-http"))
    yield pub
    pub.close()
    if before is None:
        os.environ.pop("ZOO_REGISTRY", None)
    else:
        os.environ["ZOO_REGISTRY"] = before


@pytest.fixture()
def proxy(served):
    served.proxy.bytes_per_second = None
    served.proxy.reset()
    return served.proxy


def client_env(hf_home: Path, registry: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_ENDPOINT", "ZOO_HUB", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME")}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]), ZOO_REGISTRY=str(registry),
               OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def pull(served, hf_home: Path, tag: str = "toy", *, hub_url: str | None = None, revision: str | None = None,
         repo: str | None = None, background: bool = False, **env):
    entry = served.entries[tag]
    args = [sys.executable, "-m", "hubtools.client", "pull", repo or entry["repo"], revision or entry["revision"],
            json.dumps(entry["files"]), "--hub", hub_url or served.proxy.url]
    if background:
        return subprocess.Popen(args, env=client_env(hf_home, served.registry, **env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    done = subprocess.run(args, env=client_env(hf_home, served.registry, **env), capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot(hf_home: Path, repo: str) -> Path:
    return hf_home / "hub" / f"models--{repo.replace('/', '--')}"


def weights_gets(proxy, name="model.safetensors") -> int:
    return sum(1 for method, path in proxy.requests if method == "GET" and path.endswith("/" + name))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- pulls ------------------------------------------------------------------------------------------

def test_olah_serves_the_folder_revision(served):
    for tag, entry in served.entries.items():
        assert served.revisions[entry["repo"]] == entry["revision"]


def test_pull_verifies_and_a_second_pull_makes_no_request(served, proxy, tmp_path):
    entry = served.entries["toy"]
    first = pull(served, tmp_path)
    assert first["ok"], first
    path = Path(first["path"])
    assert path == snapshot(tmp_path, entry["repo"]) / "snapshots" / entry["revision"]
    assert {n: hub.sha256_file(path / n) for n in entry["files"]} == entry["files"]
    assert weights_gets(proxy) == 1
    proxy.reset()
    second = pull(served, tmp_path)
    assert second == first and proxy.count() == 0
    offline = pull(served, tmp_path, HF_HUB_OFFLINE="1")
    assert offline == first and proxy.count() == 0


def test_offline_without_cache_is_one_clear_line(served, proxy, tmp_path):
    got = pull(served, tmp_path, HF_HUB_OFFLINE="1")
    assert not got["ok"] and "HF_HUB_OFFLINE" in got["error"] and "not fully in the cache" in got["error"]
    assert proxy.count() == 0


def test_tampered_blob_in_the_cache_is_fetched_again(served, proxy, tmp_path):
    entry = served.entries["toy"]
    path = Path(pull(served, tmp_path)["path"])
    blob = (path / "model.safetensors").resolve()
    flip_last_byte(blob)
    proxy.reset()
    again = pull(served, tmp_path)
    assert again["ok"], again
    assert hub.sha256_file(Path(again["path"]) / "model.safetensors") == entry["files"]["model.safetensors"]
    assert weights_gets(proxy) == 1  # only the bad file came again
    assert weights_gets(proxy, "config.json") == 0


def test_tampered_file_on_the_server_is_refused(served, proxy, tmp_path):
    entry = served.entries["toy"]
    repo = "zoo/tiny-mlp-tampered"
    src = served.hub_dir / entry["repo"]
    served.olah.add_repo(repo, src)
    oid = entry["files"]["model.safetensors"]
    lfs_object = served.olah.repo_dir(repo) / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    flip_last_byte(lfs_object)  # same size: huggingface_hub's own size check passes
    got = pull(served, tmp_path, repo=repo)
    assert not got["ok"]
    actual = hub.sha256_file(lfs_object)
    assert "model.safetensors" in got["error"] and oid in got["error"] and actual in got["error"]
    assert "refused" in got["error"]
    assert weights_gets(proxy) == 2  # fetched, then re-fetched once
    cached = snapshot(tmp_path, repo)
    assert not (cached / "snapshots" / entry["revision"] / "model.safetensors").exists()
    assert not (cached / "blobs" / actual).exists()


def test_wrong_revision_is_one_clear_line(served, proxy, tmp_path):
    got = pull(served, tmp_path, revision="no-such-branch")
    assert not got["ok"]
    assert got["error"].startswith("revision 'no-such-branch' not found in 'zoo/tiny-mlp-toy'")
    assert "(it has main)" in got["error"]


def test_missing_repo_is_one_clear_line(served, proxy, tmp_path):
    got = pull(served, tmp_path, repo="zoo/no-such-repo")
    assert not got["ok"] and got["error"].startswith("repo 'zoo/no-such-repo' not found at")


def test_server_down_uses_the_cache(served, tmp_path):
    front = CountingProxy(served.olah.url).start()
    first = pull(served, tmp_path, hub_url=front.url)
    assert first["ok"]
    front.stop()
    assert pull(served, tmp_path, hub_url=front.url) == first


def test_server_down_without_cache_is_one_clear_line(served, tmp_path):
    """huggingface_hub retried a dead endpoint for ~23 s; zoo's own retries give up within seconds."""
    front = CountingProxy(served.olah.url).start()
    front.stop()
    t0 = time.monotonic()
    got = pull(served, tmp_path, hub_url=front.url)
    assert not got["ok"] and got["error"].startswith(f"cannot reach {front.url}")
    assert time.monotonic() - t0 < 15


def _size(served, tag: str, name: str = "model.safetensors") -> int:
    return (served.hub_dir / served.entries[tag]["repo"] / name).stat().st_size


def test_a_killed_pull_resumes_and_fetches_only_the_rest(served, proxy, tmp_path):
    """Issue 13: kill a pull mid-file, run it again: the second run asks for the rest with a range
    request, the server sends only the missing bytes, and the whole file verifies."""
    entry = served.entries["big"]
    size = _size(served, "big")
    proxy.bytes_per_second = 3_000_000  # the ~17 MB file takes ~6 s
    proc = pull(served, tmp_path, "big", background=True)
    blobs = snapshot(tmp_path, entry["repo"]) / "blobs"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 4_000_000 for p in blobs.glob("*.incomplete")) if blobs.is_dir() else True:
        assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    oid = entry["files"]["model.safetensors"]
    snap = snapshot(tmp_path, entry["repo"]) / "snapshots" / entry["revision"]
    assert not (snap / "model.safetensors").exists() and not (blobs / oid).exists()
    rows = hub.cache_verify(entry["repo"], cache_dir=tmp_path / "hub")
    partial = [r for r in rows if r["status"] == "partial"]
    assert len(partial) == 1 and 4_000_000 < partial[0]["size"] < size
    have = partial[0]["size"]
    proxy.bytes_per_second = None
    proxy.reset()
    again = pull(served, tmp_path, "big")
    assert again["ok"], again
    assert hub.sha256_file(Path(again["path"]) / "model.safetensors") == oid
    assert proxy.ranges == [f"bytes={have}-"]
    small = sum(_size(served, "big", n) for n in entry["files"] if n != "model.safetensors")
    assert size - have <= proxy.body_bytes <= size - have + small   # only the rest came
    assert not list(blobs.glob("*.incomplete"))
    print(f"resume: killed at {have} of {size} bytes; the second run received {proxy.body_bytes} bytes")


def test_a_connection_dropped_midway_is_resumed_in_the_same_run(served, proxy, tmp_path):
    entry = served.entries["wide"]
    size = _size(served, "wide")
    proxy.drop_after = 300_000
    got = pull(served, tmp_path, "wide")
    assert got["ok"], got
    assert hub.sha256_file(Path(got["path"]) / "model.safetensors") == entry["files"]["model.safetensors"]
    assert proxy.ranges == ["bytes=300000-"]
    small = sum(_size(served, "wide", n) for n in entry["files"] if n != "model.safetensors")
    assert size <= proxy.body_bytes <= size + small   # nothing was fetched twice


def test_a_partial_that_does_not_verify_is_discarded_and_fetched_again(served, proxy, tmp_path):
    entry = served.entries["wide"]
    oid = entry["files"]["model.safetensors"]
    blobs = snapshot(tmp_path, entry["repo"]) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{oid}.zoo.incomplete").write_bytes(b"\0" * 1000)   # garbage where the file starts
    got = pull(served, tmp_path, "wide")
    assert got["ok"], got
    assert hub.sha256_file(Path(got["path"]) / "model.safetensors") == oid
    assert proxy.ranges == ["bytes=1000-"] and weights_gets(proxy) == 2
    assert not list(blobs.glob("*.incomplete"))


def test_full_disk_is_one_line_and_leaves_nothing(served, proxy, tmp_path):
    entry = served.entries["wide"]
    got = pull(served, tmp_path, "wide", HUBTOOLS_DISK_FULL_AFTER="4096")
    assert not got["ok"] and "No space left on device" in got["error"]
    assert got["error"].startswith(f"download of {entry['repo']}@")
    blobs = snapshot(tmp_path, entry["repo"]) / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert not list((snapshot(tmp_path, entry["repo"]) / "snapshots").rglob("model.safetensors"))
    again = pull(served, tmp_path, "wide")
    assert again["ok"], again


def test_concurrent_pulls_end_with_one_verified_copy(served, proxy, tmp_path):
    entry = served.entries["wide"]
    proxy.bytes_per_second = 1_000_000  # long enough for the three to overlap
    procs = [pull(served, tmp_path, "wide", background=True) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["ok"] for r in results), results
    assert len({r["path"] for r in results}) == 1
    blobs = snapshot(tmp_path, entry["repo"]) / "blobs"
    assert len(list(blobs.iterdir())) == len(entry["files"])  # one blob per file, no duplicates
    assert not list(blobs.glob("*.incomplete"))
    path = Path(results[0]["path"])
    assert {n: hub.sha256_file(path / n) for n in entry["files"]} == entry["files"]
    assert weights_gets(proxy) == 1  # the file lock made the other two wait, not download


# ---- cache ------------------------------------------------------------------------------------------

def test_cache_ls_verify_rm(served, proxy, tmp_path):
    entry = served.entries["toy"]
    path = Path(pull(served, tmp_path)["path"])
    cache = tmp_path / "hub"
    listed = hub.cache_ls(cache_dir=cache)
    assert [(r["name"], r["repo"], r["revision"], r["files"]) for r in listed] == [
        ("tiny-mlp.toy", entry["repo"], entry["revision"], 3)]
    rows = hub.cache_verify("tiny-mlp", cache_dir=cache)
    assert sorted((r["file"], r["status"]) for r in rows) == [
        ("README.md", "ok"), ("config.json", "ok"), ("model.safetensors", "ok")]
    flip_last_byte((path / "config.json").resolve())
    bad = [r for r in hub.cache_verify(cache_dir=cache) if r["status"] != "ok"]
    assert [(r["file"], r["status"], r["expected"]) for r in bad] == [
        ("config.json", "mismatch", entry["files"]["config.json"])]
    assert bad[0]["actual"] == hub.sha256_file(path / "config.json")
    removed = hub.cache_rm("tiny-mlp.toy", cache_dir=cache)
    assert removed["removed"] == [{"repo": entry["repo"], "revision": entry["revision"]}] and removed["freed"] > 0
    assert hub.cache_ls(cache_dir=cache) == []


def zoo_cli(served, hf_home: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env=client_env(hf_home, served.registry, **env), timeout=120, cwd=ROOT)


def test_cli_pull_cache_verify_and_errors(served, proxy, tmp_path):
    entry = served.entries["toy"]
    done = zoo_cli(served, tmp_path, "pull", "tiny-mlp", "--hub", served.olah.url)
    assert done.returncode == 0, done.stderr
    assert "sha256 verified" in done.stdout and entry["revision"][:12] in done.stdout
    done = zoo_cli(served, tmp_path, "cache", "verify", "--json")
    assert done.returncode == 0 and {r["status"] for r in json.loads(done.stdout)} == {"ok"}
    snap = snapshot(tmp_path, entry["repo"]) / "snapshots" / entry["revision"]
    flip_last_byte((snap / "model.safetensors").resolve())
    done = zoo_cli(served, tmp_path, "cache", "verify")
    assert done.returncode == 1 and "mismatch" in done.stdout
    done = zoo_cli(served, tmp_path, "pull", "tiny-mlpp")
    assert done.returncode == 2 and "did you mean 'tiny-mlp'" in done.stderr and "Traceback" not in done.stderr
    done = zoo_cli(served, tmp_path, "pull", "tiny-mlp", "--hub", served.olah.url, HF_HUB_OFFLINE="1")
    assert done.returncode == 1 and "HF_HUB_OFFLINE" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ---- push -------------------------------------------------------------------------------------------

def test_push_to_an_endpoint_then_pull_back(served, proxy, tmp_path):
    upload = UploadServer(served.olah.mirrors, tmp_path / "upload-state").start()
    try:
        checkpoint = tiny.make_checkpoint(tmp_path / "runs" / "pushed", seed=7, tag="pushed")
        done = zoo_cli(served, tmp_path, "push", str(checkpoint), "--repo", "zoo/tiny-mlp-pushed",
                       "--hub", upload.url, "--json")
        assert done.returncode == 0, done.stderr
        pushed = json.loads(done.stdout)
    finally:
        upload.stop()
    entry = pushed["entry"]
    assert ("POST", "/api/models/zoo/tiny-mlp-pushed/commit/main") in upload.log
    assert any(m == "PUT" for m, _ in upload.log)  # the weights went through the LFS protocol
    # the same checkpoint pushed to a folder gets the same revision: one rule for both
    assert hub.push(checkpoint, "zoo/tiny-mlp-pushed", hub=str(tmp_path / "folder"))["entry"]["revision"] \
        == entry["revision"]
    served.entries["pushed"] = entry
    got = pull(served, tmp_path / "pull-back", "pushed")
    assert got["ok"], got
    assert {n: hub.sha256_file(Path(got["path"]) / n) for n in entry["files"]} == entry["files"]


def test_project_hub_is_served_over_http(served, proxy, tmp_path):
    """The project's hub/ built into olah's mirrors: every checkpoint in it pulls through
    huggingface_hub at the registry's pinned revision."""
    from test_hub import project_checkpoints

    found = project_checkpoints()
    if not found:
        pytest.skip("no registry checkpoint has its repo in hub/ yet")
    served.olah.add_hub(hub.project_hub_dir())
    for name, ck in found:
        served.entries[name] = {"repo": ck.repo, "revision": ck.revision, "files": ck.files}
        got = pull(served, tmp_path, name)
        assert got["ok"], (name, got)
