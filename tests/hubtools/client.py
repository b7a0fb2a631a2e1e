"""Run one hub call in a fresh process (huggingface_hub reads HF_* variables at import time).

    python -m hubtools.client pull REPO REVISION FILES_JSON [--hub H] [--progress]
    python -m hubtools.client pull-model NAME [--hub H]

Prints one JSON line: {"ok": true, "path": ...} or {"ok": false, "error": "<one line>"}.

HUBTOOLS_DISK_FULL_AFTER=N makes every download's file writes fail with ENOSPC after N bytes
(a full disk, simulated in zoo.hub.download's writes)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys


def _fill_disk_after(limit: int) -> None:
    from zoo.hub import download

    real_open = download.open_partial

    class FullDisk:
        def __init__(self, f):
            self._f, self._written = f, 0

        def write(self, data):
            if self._written + len(data) > limit:
                self._f.write(data[: max(0, limit - self._written)])
                self._f.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._written += len(data)
            return self._f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    def open_partial(path, mode):
        return FullDisk(real_open(path, mode))

    download.open_partial = open_partial


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull")
    p.add_argument("repo")
    p.add_argument("revision")
    p.add_argument("files")
    p.add_argument("--hub")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--unpinned", action="store_true", help="pin no sha256 (files map to null)")
    m = sub.add_parser("pull-model")
    m.add_argument("name")
    m.add_argument("--hub")
    args = parser.parse_args()

    import zoo.hub as hub
    from zoo.errors import ZooError

    if os.environ.get("HUBTOOLS_DISK_FULL_AFTER"):
        _fill_disk_after(int(os.environ["HUBTOOLS_DISK_FULL_AFTER"]))

    try:
        if args.cmd == "pull":
            files = json.loads(args.files)
            if args.unpinned:
                files = {k: None for k in files}
            path = hub.pull(args.repo, args.revision, files, hub=args.hub,
                            progress=args.progress)
        else:
            path = hub.pull_model(args.name, hub=args.hub, progress=False)
    except ZooError as err:
        print(json.dumps({"ok": False, "error": str(err), "type": type(err).__name__}))
        return 1
    print(json.dumps({"ok": True, "path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
