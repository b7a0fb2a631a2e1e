"""Run one hub call in a fresh process (huggingface_hub reads HF_* variables at import time).

    python -m hubtools.client pull REPO REVISION FILES_JSON [--hub H] [--progress]
    python -m hubtools.client pull-model NAME [--hub H]

Prints one JSON line: {"ok": true, "path": ...} or {"ok": false, "error": "<one line>"}.

HUBTOOLS_DISK_FULL_AFTER=N makes every download's file writes fail with ENOSPC after N bytes
(a full disk, simulated inside huggingface_hub's own download loop)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys


def _fill_disk_after(limit: int) -> None:
    from huggingface_hub import file_download

    real_http_get = file_download.http_get

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

        def __getattr__(self, name):
            return getattr(self._f, name)

    def http_get(url, temp_file, *args, **kwargs):
        return real_http_get(url, FullDisk(temp_file), *args, **kwargs)

    file_download.http_get = http_get


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull")
    p.add_argument("repo")
    p.add_argument("revision")
    p.add_argument("files")
    p.add_argument("--hub")
    p.add_argument("--progress", action="store_true")
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
            path = hub.pull(args.repo, args.revision, json.loads(args.files), hub=args.hub,
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
