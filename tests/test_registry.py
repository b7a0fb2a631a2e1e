import json
import subprocess
import sys

import pytest

from zoo import registry
from zoo.errors import ConfigError, NotReadyError, UnknownNameError
from tests.conftest import ROOT, run_zoo


def test_registry_loads_and_every_ready_builder_imports():
    reg = registry.load_registry()
    assert "deeponet" in reg.models
    for name, entry in reg.models.items():
        if entry.status == "ready":
            assert callable(registry.import_builder(entry, name)), name
        for tag, ck in entry.checkpoints.items():
            assert ck.files and ck.revision, f"{name}.{tag}"


def test_every_family_of_the_brief_is_listed():
    families = {e.family for e in registry.load_registry().models.values()}
    names = set(registry.load_registry().models)
    assert {"deeponet"} <= families
    assert len(names) >= 1


@pytest.mark.parametrize("text, needle", [
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: t\n    status: ready\n"
     "    description: d\n    paper: {title: p}\n", "entry 'm', field 'builder'"),
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: t\n    status: done\n"
     "    description: d\n    paper: {title: p}\n", "entry 'm', field 'status'"),
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: t\n    status: planned\n"
     "    description: d\n", "entry 'm', field 'paper'"),
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: t\n    status: planned\n"
     "    description: d\n    paper: {title: p}\n    colour: red\n", "entry 'm', field 'colour'"),
    ("version: [1\n", "not valid YAML"),
    # references are checked: a ready model's task needs its file, its builder a module
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: segmentashun\n    status: ready\n"
     "    builder: 'zoo.models.deeponet:deeponet'\n    description: d\n    paper: {title: p}\n",
     "entry 'm', field 'task': no task 'segmentashun'"),
    ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: operator\n    status: ready\n"
     "    builder: 'zoo.models.nope:nope'\n    description: d\n    paper: {title: p}\n",
     "entry 'm', field 'builder': no module 'zoo.models.nope'"),
    ("version: 1\nhub_org: zoo\nfamilies:\n  f: {converter: 'zoo.converters.nope:f'}\nmodels:\n  m:\n    family: f\n"
     "    task: operator\n    status: planned\n    description: d\n    paper: {title: p}\n",
     "family 'f', field 'converter': no module 'zoo.converters.nope'"),
])
def test_malformed_entry_is_one_line_naming_entry_and_field(text, needle):
    with pytest.raises(ConfigError) as exc:
        registry.parse_registry(text)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg


def test_bad_sha256_pin_is_refused():
    text = ("version: 1\nhub_org: zoo\nmodels:\n  m:\n    family: f\n    task: t\n    status: planned\n"
            "    description: d\n    paper: {title: p}\n    checkpoints:\n      x: {dataset: d, repo: a/b, revision: r,"
            " files: {model.safetensors: abc}, license: MIT, made_by: c}\n")
    with pytest.raises(ConfigError, match="entry 'm', field 'checkpoints.x.files'"):
        registry.parse_registry(text)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as exc:
        registry.resolve("deeponnet")
    assert str(exc.value) == "unknown model 'deeponnet'; did you mean 'deeponet'?"
    assert exc.value.exit_code == 2


def test_planned_model_cannot_be_built():
    reg = registry.load_registry()
    planned = [n for n, e in reg.models.items() if e.status == "planned"]
    if not planned:
        pytest.skip("no planned entries left")
    with pytest.raises(NotReadyError, match="planned"):
        registry.import_builder(reg.models[planned[0]], planned[0])


def test_cli_list_is_fast_and_does_not_import_torch():
    # CPU time, not wall time: the answer must not depend on what else the machine is doing
    code = ("import sys, time; t=time.process_time(); sys.argv=['zoo','list','--json'];\n"
            "from zoo.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', time.process_time()-t, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    flag, seconds = done.stderr.strip().splitlines()[-1].split()
    assert flag == "NOTORCH"
    rows = json.loads(done.stdout)
    assert any(r["name"] == "deeponet" for r in rows)
    assert float(seconds) < 0.5


def test_cli_list_task_json_and_unknown_task():
    done = run_zoo("list", "--task", "operator", "--json")
    assert done.returncode == 0
    rows = json.loads(done.stdout)
    assert rows and all(r["task"] == "operator" for r in rows)
    bad = run_zoo("list", "--task", "operater")
    assert bad.returncode == 2
    assert "did you mean 'operator'" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_info_and_unknown_model():
    ok = run_zoo("info", "deeponet")
    assert ok.returncode == 0 and "1910.03193" in ok.stdout and "9.27e-07" in ok.stdout
    bad = run_zoo("info", "deeponnet")
    assert bad.returncode == 2
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert lines == ["error: unknown model 'deeponnet'; did you mean 'deeponet'?"]


def test_readme_table_lists_every_paper_and_is_in_sync():
    readme = (ROOT / "README.md").read_text()
    table = registry.markdown_table()
    assert table in readme, "run: python -m zoo.registry --sync-readme README.md"
    for name in registry.load_registry().models:
        assert f"`{name}`" in readme
    assert "no neural architecture" in table and "Configurable Foundation Models" in table


def test_cli_usage_error_is_short_not_a_traceback():
    done = run_zoo("bench", "deeponet", "--no-such-option")
    assert done.returncode == 2
    assert "No such option" in done.stderr and "Traceback" not in done.stderr


def test_family_block_fills_what_variants_share():
    text = ("version: 1\nhub_org: zoo\nfamilies:\n  f:\n    task: operator\n"
            "    builder: 'zoo.models.deeponet:deeponet'\n    paper: {title: shared}\n"
            "models:\n  a:\n    family: f\n    status: ready\n    description: d\n"
            "  b:\n    family: f\n    status: ready\n    description: d\n    paper: {title: own}\n")
    reg = registry.parse_registry(text)
    assert reg.models["a"].paper.title == "shared" and reg.models["b"].paper.title == "own"
    assert reg.models["a"].builder == "zoo.models.deeponet:deeponet" and reg.models["b"].task == "operator"


def test_list_models_takes_a_wildcard_like_timm():
    import zoo
    assert zoo.list_models("mhaf*") == [n for n in registry.load_registry().models if n.startswith("mhaf")]
    assert zoo.list_models("deeponet", pretrained=True) == ["deeponet.antiderivative", "deeponet.darcy",
                                                            "deeponet.darcy-neuralop"]


def test_list_summary_cache_follows_every_edit_of_the_registry(tmp_path, monkeypatch):
    """`zoo list` answers from a JSON summary; editing registry.yaml must never show stale names."""
    from zoo import catalogue
    src = registry.registry_path().read_text()
    path = tmp_path / "registry.yaml"
    path.write_text(src)
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    assert "deeponet" in catalogue.list_models()
    assert list((tmp_path / "cache" / "registry").glob("*.json"))   # the summary was cached
    path.write_text(src.replace("\n  deeponet:\n    family: deeponet\n", "\n  deeponet-renamed:\n    family: deeponet\n", 1))
    names = catalogue.list_models()
    assert "deeponet-renamed" in names and "deeponet" not in names
    assert len(list((tmp_path / "cache" / "registry").glob("*.json"))) == 1   # the stale summary is gone
