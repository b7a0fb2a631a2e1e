"""`zoo pull | push | cache ls|verify|rm|prune | convert`: the hub verbs. Each parses, makes one call
into zoo.hub (convert: zoo.api) and renders the result; errors are zoo.errors types that
cli/main.py prints as one line.

Importing this module imports neither torch nor huggingface_hub (`zoo list` stays fast)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import HubOpt, JsonOpt, err, human_size, out, print_json

cache_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="The local Hugging Face cache, checked against the registry's sha256 pins.")


def _verbose_hub_log() -> None:
    """--verbose: the hub's retry lines (logger `zoo.hub`, INFO) go to stderr; otherwise hidden."""
    import logging

    logger = logging.getLogger("zoo.hub")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def pull(name: str = typer.Argument(..., help="NAME or NAME.TAG"),
         hub: Optional[str] = HubOpt,
         revision: Optional[str] = typer.Option(None, "--revision", help="the registry's pinned revision "
                                                "(default); another one only with --trust-unpinned"),
         trust_unpinned: bool = typer.Option(False, "--trust-unpinned", help="fetch a --revision the "
                                             "registry does not pin, without sha256 verification"),
         local_dir: Optional[Path] = typer.Option(None, "--local-dir", help="also copy the verified files "
                                                  "into this folder (never overwriting your files)"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="show each retry of a failing server"),
         as_json: bool = JsonOpt):
    """Fetch a checkpoint and check every file's sha256 against the registry."""
    import zoo.hub as zhub
    from zoo.loading import is_checkpoint_dir

    if is_checkpoint_dir(name):   # a run folder is accepted wherever a name is: nothing to fetch
        out.print(f"{name} is a run folder, already local: nothing to pull", highlight=False, soft_wrap=True)
        return
    if verbose:
        _verbose_hub_log()
    res = zhub.pull_checkpoint(name, hub=hub, progress=not (quiet or as_json), revision=revision,
                               trust_unpinned=trust_unpinned,
                               local_dir=str(local_dir) if local_dir is not None else None)
    if as_json:
        print_json(res)
        return
    if res["verified"] == "sha256":
        out.print(f"{res['name']}: {len(res['files'])} files, sha256 verified ({res['repo']}@{res['revision'][:12]})")
    else:
        err.print(f"zoo: warning: {res['repo']}@{res['revision'][:12]} is not the registry's pinned revision; "
                  f"its files were NOT verified", highlight=False, soft_wrap=True)
        out.print(f"{res['name']}: {len(res['files'])} files, unverified ({res['repo']}@{res['revision'][:12]})")
    if res.get("unchanged"):
        out.print(f"already in {res['local_dir']} with the same bytes: {', '.join(res['unchanged'])}",
                  highlight=False, soft_wrap=True)
    out.print(res["path"], highlight=False, soft_wrap=True)


def push(folder: Path = typer.Argument(..., help="checkpoint folder (from `zoo finetune` or `zoo convert`)"),
         repo: str = typer.Option(..., "--repo", help="ORG/NAME"),
         hub: Optional[str] = typer.Option(None, "--hub", help="a folder or an endpoint URL "
                                                               "(default: $ZOO_HUB's first, else ./hub)"),
         as_json: bool = JsonOpt):
    """Publish a checkpoint folder with its model card; prints the registry entry to paste."""
    import zoo.hub as zhub

    pushed = zhub.push(folder, repo, hub=hub)
    if as_json:
        print_json(pushed)
        return
    err.print(f"pushed {folder} -> {pushed['hub']}/{repo} @ {pushed['entry']['revision']}", highlight=False,
              soft_wrap=True)
    if pushed.get("skipped"):
        err.print("not published (not a checkpoint file): " + ", ".join(map(str, pushed["skipped"])),
                  highlight=False, soft_wrap=True)
    err.print(f"paste under `{pushed['model']}: checkpoints:` in registry.yaml:", highlight=False)
    sys.stdout.write(zhub.registry_snippet(pushed))


def _ago(ts: float | None) -> str:
    import time

    if ts is None:
        return "-"
    secs = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs / size:.0f} {unit} ago"
    return "just now"


@cache_app.command("ls")
def cache_ls(as_json: bool = JsonOpt):
    """Cached checkpoints: registry name, repo, revision, files, size, last use."""
    import zoo.hub as zhub

    rows = zhub.cache_ls()
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print(f"the cache at {zhub.hf_cache_dir()} holds no models")
        return
    t = Table(title=f"cache: {zhub.hf_cache_dir()}")
    for col in ("checkpoint", "repo", "revision", "files", "size", "last use"):
        t.add_column(col, justify="right" if col in ("files", "size") else "left")
    for r in rows:
        label = r["name"] or ("[red]broken[/]" if r.get("broken") else "[dim]not pinned[/]")
        t.add_row(label, r["repo"], r["revision"][:12], str(r["files"]), human_size(r["size"]),
                  _ago(r.get("last_used")))
    out.print(t)
    total = sum(r["size"] or 0 for r in rows)
    out.print(f"{len(rows)} revision(s), {human_size(total)}", highlight=False)


@cache_app.command("prune")
def cache_prune(dry_run: bool = typer.Option(False, "--dry-run", help="say what would be removed, remove nothing"),
                as_json: bool = JsonOpt):
    """Remove the cached revisions the registry no longer pins."""
    import zoo.hub as zhub

    result = zhub.cache_prune(dry_run=dry_run)
    if as_json:
        print_json(result)
        return
    if not result["removed"]:
        out.print("nothing to prune: every cached revision is pinned by the registry")
        return
    verb = "would remove" if dry_run else "removed"
    for r in result["removed"]:
        out.print(f"{verb} {r['repo']}@{r['revision'][:12]} ({human_size(r['size'])})", highlight=False)
    out.print(f"{'would free' if dry_run else 'freed'} {human_size(result['freed'])}", highlight=False)


_STATUS_STYLE = {"ok": "green", "mismatch": "red", "missing": "yellow", "unpinned": "dim", "partial": "yellow"}


@cache_app.command("verify")
def cache_verify(name: Optional[str] = typer.Argument(None, help="NAME, NAME.TAG or ORG/REPO (default: all)"),
                 as_json: bool = JsonOpt):
    """Re-hash every cached file against the registry pin; exit 1 on any mismatch."""
    import zoo.hub as zhub

    rows = zhub.cache_verify(name)
    if as_json:
        print_json(rows)
    elif not rows:
        out.print("nothing cached" + (f" for {name}" if name else ""))
    else:
        t = Table(title="cache verify (sha256)")
        for col in ("checkpoint", "repo", "revision", "file", "status"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["name"] or "-", r["repo"], (r["revision"] or "-")[:12], r["file"],
                      f"[{_STATUS_STYLE[r['status']]}]{r['status']}[/]")
        out.print(t)
        bad = [r for r in rows if r["status"] == "mismatch"]
        for r in bad:
            err.print(f"{r['repo']}@{r['revision'][:12]} {r['file']}: sha256 {r['actual']}, expected "
                      f"{r['expected']}", highlight=False, soft_wrap=True)
        n_ok = sum(r["status"] == "ok" for r in rows)
        out.print(f"{n_ok} ok, {len(bad)} mismatching, {len(rows) - n_ok - len(bad)} other")
    # an error, not typer.Exit: cli/main.py runs the app with standalone_mode=False
    zhub.cache_check(rows)


@cache_app.command("rm")
def cache_rm(name: str = typer.Argument(..., help="NAME, NAME.TAG or ORG/REPO"),
             as_json: bool = JsonOpt):
    """Delete the cached revisions of a model's checkpoint repos."""
    import zoo.hub as zhub

    result = zhub.cache_rm(name)
    if as_json:
        print_json(result)
        return
    if not result["removed"]:
        out.print(f"nothing cached for {name}")
        return
    for r in result["removed"]:
        out.print(f"removed {r['repo']}@{r['revision'][:12]}")
    out.print(f"freed {human_size(result['freed'])}")


def convert(name: str = typer.Argument(..., help="NAME or NAME.TAG"),
            src: Path = typer.Option(..., "--from", help="the official checkpoint file (.pt/.pth/.safetensors)"),
            out_dir: Path = typer.Option(..., "--out", help="checkpoint folder to write"),
            as_json: bool = JsonOpt):
    """Official pickled checkpoint -> our checkpoint folder, without running pickled code."""
    import zoo.api as api

    folder = api.convert(name, src, out_dir)
    if as_json:
        print_json({"model": name, "path": str(folder), "from": str(src)})
        return
    out.print(f"wrote {folder} (loads strictly into {name}); publish it with "
              f"`zoo push {folder} --repo ORG/NAME`", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the hub verbs to the `zoo` app."""
    app.command("pull")(pull)
    app.command("push")(push)
    app.add_typer(cache_app, name="cache")
    app.command("convert")(convert)
