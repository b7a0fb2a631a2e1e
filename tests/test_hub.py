"""zoo.hub without a server: sources, the deterministic revision, folder hubs, push, model cards,
the registry snippet. (The HTTP path against olah is in test_hub_http.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from hubtools import tiny  # noqa: E402

import zoo.hub as hub  # noqa: E402
from zoo._io import sha256_file  # noqa: E402
from zoo.card import make_model_card  # noqa: E402
from zoo.errors import CheckpointError, HubError  # noqa: E402


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    path = tiny.write_registry(tmp_path / "registry.yaml")
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    return path


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Folder pulls copy into the Hugging Face cache: each test gets its own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def in_cache(got: Path, tmp_path: Path, revision: str) -> bool:
    """`got` is the verified snapshot in the private cache, not a folder hub's own folder."""
    return got.parent.name == "snapshots" and got.name == revision and \
        got.is_relative_to(tmp_path / "hf-cache")


@pytest.fixture()
def checkpoint(tmp_path, registry):
    return tiny.make_checkpoint(tmp_path / "runs" / "toy")


# ---- sources ----------------------------------------------------------------------------------------

def test_sources_order_from_hub_option_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HUB", f"{tmp_path}/a, https://mirror.example/ ,~/models")
    assert hub.sources() == [f"{tmp_path}/a", "https://mirror.example", str(Path("~/models").expanduser())]
    # --hub wins over ZOO_HUB
    assert hub.sources("http://127.0.0.1:8090") == ["http://127.0.0.1:8090"]


def test_default_sources_are_project_hub_then_hf_endpoint(monkeypatch):
    monkeypatch.delenv("ZOO_HUB", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local:9000/")
    expected = ([str(hub.project_hub_dir())] if hub.project_hub_dir().is_dir() else []) + ["http://mirror.local:9000"]
    assert hub.sources() == expected
    monkeypatch.delenv("HF_ENDPOINT")
    assert hub.sources()[-1] == "https://huggingface.co"


# ---- the deterministic revision ---------------------------------------------------------------------

def _git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
def test_folder_revision_is_the_commit_git_itself_makes(tmp_path):
    """The rule, redone with the git CLI (pointer files committed by hand, fixed identity and date),
    gives the sha folder_revision computes without git; build_git_repo's repo passes git fsck."""
    src = tmp_path / "src"
    (src / "onnx").mkdir(parents=True)
    (src / "config.json").write_text('{"model": "x"}\n')
    (src / "README.md").write_text("# x\n")
    weights = os.urandom(5000)
    (src / "model.safetensors").write_bytes(weights)
    (src / "onnx" / "model.onnx").write_bytes(b"onnx" * 10)
    (src / ".hidden").write_text("not published")

    work = tmp_path / "by-git"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    lfs_names = []
    for name, path in hub.published_files(src).items():
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if hub.is_lfs(name, path.stat().st_size):
            dst.write_bytes(hub.lfs_pointer(sha256_file(path), path.stat().st_size))
            lfs_names.append(name)
        else:
            shutil.copyfile(path, dst)
    (work / ".gitattributes").write_text("".join(f"{n} filter=lfs diff=lfs merge=lfs -text\n" for n in lfs_names))
    _git(work, "add", "-A")
    ident = {"GIT_AUTHOR_NAME": "zoo", "GIT_AUTHOR_EMAIL": "zoo@localhost", "GIT_AUTHOR_DATE": "946684800 +0000",
             "GIT_COMMITTER_NAME": "zoo", "GIT_COMMITTER_EMAIL": "zoo@localhost",
             "GIT_COMMITTER_DATE": "946684800 +0000"}
    _git(work, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "zoo checkpoint", env=ident)
    by_git = _git(work, "rev-parse", "HEAD")

    assert sorted(lfs_names) == ["model.safetensors", "onnx/model.onnx"]
    assert hub.folder_revision(src) == by_git
    built = tmp_path / "mirror"
    assert hub.build_git_repo(src, built) == by_git
    _git(built, "fsck", "--full", "--strict")
    assert _git(built, "rev-parse", "main") == by_git
    oid = sha256_file(src / "model.safetensors")
    assert (built / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == weights


def test_folder_revision_changes_with_content_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}\n")
        (d / "model.safetensors").write_bytes(b"\0" * 100)
    assert hub.folder_revision(a) == hub.folder_revision(b)
    (b / "model.safetensors").write_bytes(b"\0" * 99 + b"\1")
    assert hub.folder_revision(a) != hub.folder_revision(b)


def test_build_git_repo_keeps_earlier_revisions(tmp_path):
    src, repo = tmp_path / "src", tmp_path / "repo"
    src.mkdir()
    (src / "config.json").write_text("{}\n")
    first = hub.build_git_repo(src, repo)
    (src / "config.json").write_text('{"v": 2}\n')
    second = hub.build_git_repo(src, repo)
    assert first != second
    assert (repo / ".git" / "refs" / "heads" / "main").read_text().strip() == second
    assert (repo / ".git" / "objects" / first[:2] / first[2:]).is_file()


# ---- folder hubs ------------------------------------------------------------------------------------

def test_push_to_folder_then_pull_verifies_in_place(tmp_path, checkpoint):
    (checkpoint / "optimizer.pt").write_bytes(b"pickled training state")
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    dest = tmp_path / "hubdir" / "zoo" / "tiny-mlp-toy"
    entry = pushed["entry"]
    # no pickle; the hidden marker says zoo published this folder
    assert sorted(os.listdir(dest)) == [".zoo-published", "README.md", "config.json", "model.safetensors"]
    assert pushed["skipped"] == ["optimizer.pt"]
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no staging left
    assert entry["files"] == {n: sha256_file(dest / n) for n in hub.published_files(dest)}
    assert entry["revision"] == hub.folder_revision(dest)
    assert entry["made_by"].startswith("zoo finetune tiny-mlp")
    assert pushed["tag"] == "toy" and entry["metrics"] == {"rel_l2": 0.0123}

    got = hub.pull(entry["repo"], entry["revision"], entry["files"], hub=str(tmp_path / "hubdir"))
    assert in_cache(got, tmp_path, entry["revision"])
    assert {n: sha256_file(got / n) for n in entry["files"]} == entry["files"]

    # the snippet is valid registry YAML for this checkpoint
    snippet = yaml.safe_load(hub.registry_snippet(pushed))
    from zoo.registry import Checkpoint
    Checkpoint.model_validate(snippet["toy"])


def test_push_publishes_the_learning_curve_and_the_card_shows_it(tmp_path, checkpoint):
    points = [{"step": 5, "rel_l2": 0.5}, {"step": 10, "rel_l2": 0.0123}]
    (checkpoint / "curve.json").write_text(json.dumps({"model": "tiny-mlp", "points": points}))
    (checkpoint / "curve.png").write_bytes(b"\x89PNG not really")
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    dest = tmp_path / "hubdir" / "zoo" / "tiny-mlp-toy"
    assert sorted(pushed["entry"]["files"]) == ["README.md", "config.json", "curve.json", "curve.png",
                                                "model.safetensors"]
    assert pushed["skipped"] == [] and (dest / "curve.png").read_bytes() == b"\x89PNG not really"
    card = (dest / "README.md").read_text()
    assert "## Learning curve" in card and "![learning curve](curve.png)" in card
    assert "| 5 | 0.5 |" in card and "| 10 | 0.0123 |" in card
    got = hub.pull(pushed["entry"]["repo"], pushed["entry"]["revision"], pushed["entry"]["files"],
                   hub=str(tmp_path / "hubdir"))
    assert (got / "curve.json").is_file()

    (checkpoint / "curve.json").write_text("my own notes")      # not a curve zoo wrote: one line, nothing published
    with pytest.raises(CheckpointError, match="curve.json is not a learning curve"):
        hub.push(checkpoint, "zoo/tiny-mlp-other", hub=str(tmp_path / "hubdir"))
    assert not (tmp_path / "hubdir" / "zoo" / "tiny-mlp-other").exists()


def test_push_replaces_a_repo_atomically(tmp_path, checkpoint):
    target = str(tmp_path / "hubdir")
    first = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=target)
    again = tiny.make_checkpoint(tmp_path / "runs" / "toy2", seed=1)
    second = hub.push(again, "zoo/tiny-mlp-toy", hub=target)
    assert first["entry"]["revision"] != second["entry"]["revision"]
    dest = Path(target) / "zoo" / "tiny-mlp-toy"
    assert hub.folder_revision(dest) == second["entry"]["revision"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny-mlp-toy"]


def test_folder_pull_refuses_a_tampered_file_naming_both_hashes(tmp_path, checkpoint):
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    entry = pushed["entry"]
    weights = tmp_path / "hubdir" / "zoo" / "tiny-mlp-toy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(HubError) as err:
        hub.pull(entry["repo"], entry["revision"], entry["files"], hub=str(tmp_path / "hubdir"))
    message = str(err.value)
    assert "model.safetensors" in message and entry["files"]["model.safetensors"] in message
    assert sha256_file(weights) in message and "\n" not in message


def test_pull_falls_back_to_the_next_source(tmp_path, checkpoint):
    good, bad = str(tmp_path / "good"), str(tmp_path / "bad")
    entry = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=good)["entry"]
    hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=bad)
    (Path(bad) / "zoo" / "tiny-mlp-toy" / "config.json").write_text("{}")
    got = hub.pull(entry["repo"], entry["revision"], entry["files"], hub=f"{tmp_path}/empty,{bad},{good}")
    assert in_cache(got, tmp_path, entry["revision"])
    assert {n: sha256_file(got / n) for n in entry["files"]} == entry["files"]


def test_pull_errors_are_one_line(tmp_path):
    with pytest.raises(HubError, match="not a repo id"):
        hub.pull("no-slash", "main", {"a": "0" * 64}, hub=str(tmp_path))
    with pytest.raises(HubError) as err:
        hub.pull("zoo/missing", "main", {"config.json": "0" * 64}, hub=str(tmp_path))
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_pull_model_resolves_the_registry_pin(tmp_path, checkpoint, monkeypatch):
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    tiny.write_registry(os.environ["ZOO_REGISTRY"], {"toy": pushed["entry"]})
    monkeypatch.setenv("ZOO_HUB", str(tmp_path / "hubdir"))
    assert in_cache(hub.pull_model("tiny-mlp"), tmp_path, pushed["entry"]["revision"])
    assert hub.pull_model("tiny-mlp.toy") == hub.pull_model("tiny-mlp")
    # and the lead's create_model goes through it
    import zoo
    model = zoo.create_model("tiny-mlp.toy", pretrained=True)
    from safetensors.torch import load_file
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert all((model.state_dict()[k] == v).all() for k, v in saved.items())


def test_pull_checkpoint_reports_what_zoo_pull_prints(tmp_path, checkpoint, monkeypatch):
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    tiny.write_registry(os.environ["ZOO_REGISTRY"], {"toy": pushed["entry"]})
    res = hub.pull_checkpoint("tiny-mlp", hub=str(tmp_path / "hubdir"), progress=False)
    entry = pushed["entry"]
    assert res == {"name": "tiny-mlp.toy", "repo": "zoo/tiny-mlp-toy", "revision": entry["revision"],
                   "path": res["path"], "files": entry["files"],
                   "verified": "sha256"}
    assert in_cache(Path(res["path"]), tmp_path, entry["revision"])
    assert list(res) == ["name", "repo", "revision", "path", "files", "verified"]  # the --json key order
    with pytest.raises(CheckpointError, match="has no checkpoint to pull"):
        tiny.write_registry(os.environ["ZOO_REGISTRY"])
        hub.pull_checkpoint("tiny-mlp", hub=str(tmp_path / "hubdir"))


def test_cache_check_refuses_only_mismatches():
    ok = {"status": "ok"}
    hub.cache_check([])
    hub.cache_check([ok, {"status": "missing"}, {"status": "unpinned"}, {"status": "partial"}])
    with pytest.raises(HubError, match="2 cached file"):
        hub.cache_check([ok, {"status": "mismatch"}, {"status": "mismatch"}])


def test_push_needs_a_checkpoint_folder(tmp_path, registry):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        hub.push(tmp_path / "empty", "zoo/x", hub=str(tmp_path / "hubdir"))
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model": "tiny-mlp", "config": {}}))
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        hub.push(tmp_path / "empty", "zoo/x", hub=str(tmp_path / "hubdir"))


# ---- model card -------------------------------------------------------------------------------------

def test_model_card_marks_ours_and_the_papers_numbers(registry):
    from huggingface_hub import ModelCard

    meta = {"model": "tiny-mlp", "tag": "toy", "task": "operator", "dataset": "toy",
            "config": {"width": 8, "depth": 2}, "metrics": {"rel_l2": 0.0123}, "eval_data": "toy test split",
            "command": "zoo finetune tiny-mlp --dataset toy --out runs/toy", "license": "CC BY-NC-SA 4.0"}
    card = ModelCard(str(make_model_card(meta)))  # round trip through the text
    data = card.data
    assert data.library_name == "zoo" and data.license == "cc-by-nc-sa-4.0"
    assert data.datasets == ["toy"] and {"zoo", "tiny", "operator"} <= set(data.tags)
    result, = data.eval_results
    assert (result.metric_type, result.metric_value, result.dataset_name) == ("rel_l2", 0.0123, "toy test split")
    assert "ours" in result.metric_name
    text = card.text
    assert "zoo finetune tiny-mlp --dataset toy --out runs/toy" in text
    ours = text.index("Our evaluation")
    papers = text.index("The paper's numbers")
    assert "| rel_l2 | 0.0123 |" in text[ours:papers]
    assert "| rel_l2 | 0.5 | toy | paper Table 1 |" in text[papers:]
    assert "arxiv.org/abs/0000.00000" in text


def test_model_card_unknown_licence_becomes_other(registry):
    card = make_model_card({"model": "tiny-mlp", "license": "Custom Research Licence", "metrics": {}})
    assert card.data.license == "other" and card.data.license_name == "custom-research-licence"
    assert card.data.eval_results is None


# ---- the project's own hub/ against registry.yaml ---------------------------------------------------

def project_checkpoints():
    """(name.tag, checkpoint) for every registry checkpoint whose repo is in the project's hub/."""
    from zoo.registry import parse_registry

    real = Path(__file__).resolve().parent.parent / "registry.yaml"
    reg = parse_registry(real.read_text(), source=real.name)
    return [(f"{m}.{t}", ck) for m, e in reg.models.items() for t, ck in e.checkpoints.items()
            if (hub.project_hub_dir() / ck.repo).is_dir()]


def test_project_hub_matches_the_registry_pins():
    """Every checkpoint in hub/ has the revision and sha256s registry.yaml pins (a re-push that was
    not pasted into the registry fails here)."""
    found = project_checkpoints()
    if not found:
        pytest.skip("no registry checkpoint has its repo in hub/ yet")
    for name, ck in found:
        folder = hub.project_hub_dir() / ck.repo
        got = hub.pull(ck.repo, ck.revision, ck.files, hub=str(hub.project_hub_dir()))
        assert {n: sha256_file(got / n) for n in ck.files} == ck.files, name
        assert hub.folder_revision(folder) == ck.revision, f"{name}: registry revision is stale"
        assert set(ck.files) == set(hub.published_files(folder)), f"{name}: unpinned or missing files"


# ---- layering: the hub and the checkpoint folder stay light and acyclic -----------------------------

def test_hub_and_checkpoint_import_light_and_one_way():
    code = ("import sys, zoo.checkpoint; assert 'zoo.hub' not in sys.modules, 'checkpoint imported the hub'; "
            "import zoo.hub; heavy = {'torch', 'huggingface_hub', 'safetensors'} & set(sys.modules); "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


def test_python_m_zoo_hub_revision_and_mirror(tmp_path, checkpoint):
    hubdir = tmp_path / "hubdir"
    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(hubdir))
    run = lambda *a: subprocess.run([sys.executable, "-m", "zoo.hub", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120, cwd=Path(__file__).parent.parent)
    done = run("revision", str(hubdir / "zoo" / "tiny-mlp-toy"))
    assert done.returncode == 0 and done.stdout.strip() == pushed["entry"]["revision"], done.stderr
    done = run("mirror", str(hubdir), str(tmp_path / "mirrors"))
    assert done.stdout.split() == ["zoo/tiny-mlp-toy", pushed["entry"]["revision"]], done.stderr
    ref = tmp_path / "mirrors" / "models" / "zoo" / "tiny-mlp-toy" / ".git" / "refs" / "heads" / "main"
    assert ref.read_text().strip() == pushed["entry"]["revision"]


def test_data_cache_helpers_keep_their_names_and_keys(tmp_path):
    import hashlib

    from zoo.data import atomic_save_npz, atomic_write_bytes, params_key

    # cache file names of generated data must not change, or every cache is regenerated
    blob = json.dumps({"n": 3, "seed": 0}, sort_keys=True, default=str).encode()
    assert params_key(seed=0, n=3) == hashlib.sha256(blob).hexdigest()[:16]
    atomic_write_bytes(tmp_path / "a" / "x.bin", b"abc")
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.bin"]  # no temp file left behind
    import numpy as np
    atomic_save_npz(tmp_path / "a" / "y.npz", v=np.arange(3))
    assert np.load(tmp_path / "a" / "y.npz")["v"].tolist() == [0, 1, 2]


# ---- the CLI verbs (in-process; errors are ZooErrors that cli/main.py prints as one line) ----------

def test_cli_push_prints_the_registry_entry(tmp_path, checkpoint):
    from typer.testing import CliRunner

    from cli.main import app  # the source checkout's layout (the wheel ships it as zoo.cli)

    result = CliRunner().invoke(app, ["push", str(checkpoint), "--repo", "zoo/tiny-mlp-toy",
                                      "--hub", str(tmp_path / "hubdir")])
    assert result.exit_code == 0, result.output
    snippet = yaml.safe_load(result.stdout)
    dest = tmp_path / "hubdir" / "zoo" / "tiny-mlp-toy"
    assert snippet["toy"]["revision"] == hub.folder_revision(dest)
    assert snippet["toy"]["files"]["model.safetensors"] == sha256_file(dest / "model.safetensors")


def test_cli_pull_json_and_convert_json(tmp_path, checkpoint, monkeypatch):
    from typer.testing import CliRunner

    import zoo.api
    from cli.main import app

    pushed = hub.push(checkpoint, "zoo/tiny-mlp-toy", hub=str(tmp_path / "hubdir"))
    tiny.write_registry(os.environ["ZOO_REGISTRY"], {"toy": pushed["entry"]})
    result = CliRunner().invoke(app, ["pull", "tiny-mlp.toy", "--hub", str(tmp_path / "hubdir"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == hub.pull_checkpoint("tiny-mlp.toy", hub=str(tmp_path / "hubdir"))

    calls = []
    monkeypatch.setattr(zoo.api, "convert", lambda name, src, out: calls.append((name, src, out)) or Path(out))
    result = CliRunner().invoke(app, ["convert", "tiny-mlp", "--from", str(tmp_path / "o.pt"),
                                      "--out", str(tmp_path / "conv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"model": "tiny-mlp", "path": str(tmp_path / "conv"),
                                         "from": str(tmp_path / "o.pt")}
    assert calls == [("tiny-mlp", tmp_path / "o.pt", tmp_path / "conv")]


def test_cli_errors_are_one_line(tmp_path, registry):
    env = {**os.environ, "ZOO_REGISTRY": str(registry), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)])}
    root = Path(__file__).parent.parent
    for args, code, text in [
        (["convert", "tiny-mlp", "--from", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")], 1,
         "no converter for official 'tiny' checkpoints"),
        (["pull", "tiny-mlp"], 1, "model 'tiny-mlp' has no checkpoint to pull"),
        (["push", str(tmp_path), "--repo", "bad id", "--hub", str(tmp_path)], 1, "not a repo id"),
        (["cache", "rm", "no-such-model"], 2, "unknown model 'no-such-model'"),
    ]:
        done = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                              env=env, cwd=root, timeout=120)
        assert done.returncode == code, (args, done.stderr)
        assert text in done.stderr and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
