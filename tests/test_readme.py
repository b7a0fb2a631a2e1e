"""Every command block of the README runs, in order, in a fresh folder, as a newcomer would paste
it (issue 12). A block is left out only where the README says why, in a
`<!-- readme-test: skip (reason) -->` line right above it; a line naming a placeholder path
(`PATH/TO/...`) is left out. To keep the run short, `--steps N` / `steps=N` become 20; nothing
else is changed."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SKIP = re.compile(r"<!-- readme-test: skip \((.+)\) -->")
FENCE = re.compile(r"^```(\w*)\s*$")


def readme_blocks(text: str) -> list[dict]:
    """Fenced blocks in order: language, body lines, and the skip reason when the README gives one."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        skip = SKIP.search(lines[i - 1]) if i else None
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        blocks.append({"lang": m.group(1), "body": lines[i + 1:j], "line": i + 1,
                       "skip": skip.group(1) if skip else None})
        i = j + 1
    return blocks


def cheap(line: str) -> str:
    return re.sub(r"(--steps |steps=)\d+", r"\g<1>20", line)


def test_readme_blocks_are_parsed_and_every_skip_gives_a_reason():
    blocks = readme_blocks((ROOT / "README.md").read_text())
    runnable = [b for b in blocks if not b["skip"]]
    assert any(b["lang"] == "python" for b in runnable)
    assert any("zoo finetune deeponet" in "\n".join(b["body"]) for b in runnable)
    # a python block that reuses the CLI's run folder (`runs/a`) must come after the CLI block
    order = [b["lang"] for b in runnable]
    assert order.index("python") > max(i for i, b in enumerate(runnable) if "--out runs/a" in "\n".join(b["body"]))
    assert cheap("zoo finetune x --steps 2000 --out a") == "zoo finetune x --steps 20 --out a"


@pytest.mark.slow
def test_every_readme_block_runs_in_order(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"),
           "COLUMNS": "80"}
    env.pop("ZOO_HUB", None)
    work = tmp_path / "work"
    work.mkdir()
    ran = 0
    for block in readme_blocks((ROOT / "README.md").read_text()):
        if block["skip"]:
            continue
        where = f"README.md block at line {block['line']}"
        if block["lang"] == "python":
            script = work / f"readme_{block['line']}.py"
            script.write_text("\n".join(cheap(ln) for ln in block["body"]) + "\n")
            done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=900)
            assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"
            ran += 1
            continue
        assert block["lang"] == "", f"{where}: a block in '{block['lang']}' needs a skip reason or a runner"
        for raw in block["body"]:
            line = raw.split("  #")[0].strip()
            if not line or "PATH/TO" in line:
                continue
            argv = shlex.split(cheap(line))
            assert argv[0] == "zoo", f"{where}: not a zoo command: {line}"
            done = subprocess.run([sys.executable, "-m", "zoo", *argv[1:]], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{where}: `{line}` failed:\n{done.stderr[-3000:]}"
            assert "Traceback" not in done.stderr, f"{where}: `{line}`:\n{done.stderr[-3000:]}"
            ran += 1
    assert ran >= 15
    assert (work / "runs" / "a" / "config.json").is_file()
    # the Python block's run did not touch the CLI's runs/a: it went to the next free folder
    assert sorted(p.name for p in (work / "runs" / "finetune").iterdir()) == ["deeponet-1", "deeponet-2"]
