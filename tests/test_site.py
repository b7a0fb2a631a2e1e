"""`zoo site build DIR`: a static catalogue from the registry; every internal link resolves, the
index carries its search/filter script and no external asset; a user's folder is never overwritten."""

import json
import re

import pytest

from conftest import run_zoo


def test_site_builds_and_links_resolve(tmp_path):
    out = tmp_path / "site"
    r = run_zoo("site", "build", str(out), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    index = (out / "index.html").read_text()
    import zoo.registry as reg
    models = reg.load_registry().models
    assert res["models"] == len(models)
    for name in models:                       # every model is listed, planned ones marked
        assert f"<code>{name}</code>" in index
    assert 'class="planned">planned' in index and 'class="ready">ready' in index
    assert 'id="q"' in index and 'id="task"' in index and "addEventListener" in index
    from zoo.verbs.site import check_links
    assert check_links(out) == []
    # no external asset: nothing fetched by the browser from elsewhere
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="https?:', text), page
    fam = (out / "families" / "deeponet.html").read_text()
    assert "zoo verify deeponet.darcy" in fam and "the paper's</th>" in fam
    assert '<span class="paper">(' in fam          # a paper number beside ours, labelled
    assert "zoo finetune deeponet --dataset darcy" in fam     # how the checkpoint was made


def test_check_links_finds_a_broken_link(tmp_path):
    from zoo.verbs.site import build, check_links
    build(tmp_path / "s")
    page = tmp_path / "s" / "families" / "deeponet.html"
    page.write_text(page.read_text() + '<a href="nowhere.html">x</a><a href="../index.html#nope">y</a>')
    bad = check_links(tmp_path / "s")
    assert len(bad) == 2 and "nowhere.html" in bad[0] + bad[1]


def test_rebuild_over_a_previous_site_and_refuse_a_user_folder(tmp_path):
    from zoo.verbs.site import build
    build(tmp_path / "s")
    build(tmp_path / "s")                     # a previous site is replaced
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    r = run_zoo("site", "build", str(user))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not empty" in r.stderr
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_site_is_torch_free(tmp_path):
    import subprocess, sys
    from conftest import ROOT
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", "site", "build", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "import time" in r.stderr
    assert not [l for l in r.stderr.splitlines() if l.rstrip().endswith(" torch")]


def test_a_checkpoints_published_learning_curve_is_on_its_family_page(tmp_path, monkeypatch):
    from conftest import ROOT
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from hubtools import tiny
    from zoo.verbs.site import build, check_links
    png = b"\x89PNG a curve"
    files = {"README.md": "0" * 64, "config.json": "1" * 64, "curve.png": "2" * 64, "model.safetensors": "3" * 64}
    ck = {"dataset": "toy", "repo": "zoo/tiny-mlp-toy", "revision": "a" * 40, "files": files, "license": "MIT",
          "made_by": "zoo finetune tiny-mlp --dataset toy -o eval_every=5", "metrics": {"rel_l2": 0.1}}
    monkeypatch.setenv("ZOO_REGISTRY", str(tiny.write_registry(tmp_path / "registry.yaml", {"toy": ck})))
    (tmp_path / "hub" / "zoo" / "tiny-mlp-toy").mkdir(parents=True)
    (tmp_path / "hub" / "zoo" / "tiny-mlp-toy" / "curve.png").write_bytes(png)
    build(tmp_path / "site")
    page = (tmp_path / "site" / "families" / "tiny.html").read_text()
    assert 'src="../assets/curves/zoo-tiny-mlp-toy.png"' in page and "learning curve of" in page
    assert (tmp_path / "site" / "assets" / "curves" / "zoo-tiny-mlp-toy.png").read_bytes() == png
    assert check_links(tmp_path / "site") == []

    del files["curve.png"]          # a picture the checkpoint does not pin is never shown
    monkeypatch.setenv("ZOO_REGISTRY", str(tiny.write_registry(tmp_path / "registry.yaml", {"toy": ck})))
    build(tmp_path / "site2")
    assert "learning curve of" not in (tmp_path / "site2" / "families" / "tiny.html").read_text()
