"""One file over HTTP into the Hugging Face cache layout: resumable, bounded in time, quiet unless
asked, and verified against the sha256 the registry pins.

Why not `hf_hub_download`: it no longer resumes across runs (huggingface_hub#4196), it retries a
dead or hung server for minutes with a log line per try, and it reports an HTTP 500 as "cannot
reach". zoo knows every file's sha256 before asking for it, so a partial file left on disk by a
killed pull can be continued with a range request and still be checked as a whole at the end.

- the partial file is `blobs/<sha256>.zoo.incomplete`, a stable name, so the next run finds it
  (one process at a time: the caller holds the repo's lock);
- 5xx/429 and network errors are retried with backoff; each retry is a `zoo.hub` INFO record,
  shown only with `--verbose`;
- `ZOO_HUB_TIMEOUT` (s, default 30): the longest a file may go without a byte arriving, summed
  over its retries: a server that accepts and never answers costs that, then the next source is
  tried. `ZOO_HUB_DEADLINE` (s, default none): an overall cap per file, however fast bytes flow;
- progress (bytes, rate) on stderr: a live line on a terminal, else a plain line every
  `ZOO_PROGRESS_INTERVAL` seconds (default 10) once a download has lasted that long."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

from zoo.errors import HubError
from zoo.hub.sources import redact

log = logging.getLogger("zoo.hub")

CHUNK = 1 << 20
ATTEMPTS = 4
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class NotFound(HubError):
    """The server says the repo, revision or file does not exist (404/401/403)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _env_seconds(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HubError(f"{name}={raw!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise HubError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def stall_timeout() -> float:
    return _env_seconds("ZOO_HUB_TIMEOUT", 30.0)


def overall_deadline() -> float | None:
    return _env_seconds("ZOO_HUB_DEADLINE", None)


def file_url(endpoint: str, repo: str, revision: str, name: str) -> str:
    return f"{endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(name)}"


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Progress:
    """Bytes and rate on stderr. On a terminal, one line redrawn at most 10 times a second; else
    (a pipe, a log file, CI) a plain line every `interval` seconds, the first only after a download
    has lasted that long, so short pulls stay silent."""

    def __init__(self, name: str, total: int | None, start: int, enabled: bool, stream=None):
        self.name, self.total, self.enabled = name, total, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else (_env_seconds("ZOO_PROGRESS_INTERVAL", 10.0) or 10.0)
        self.t0 = self.last = time.monotonic()
        self.start = self.done = start
        self.shown = False

    def line(self) -> str:
        rate = (self.done - self.start) / max(time.monotonic() - self.t0, 1e-6)
        of = f" of {_human(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        resumed = f", resumed at {_human(self.start)}" if self.start else ""
        return f"zoo: pulling {self.name}: {_human(self.done)}{of}, {_human(rate)}/s{resumed}"

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or now - self.last < self.interval:
            return
        self.last, self.shown = now, True
        try:
            if self.tty:
                self.stream.write("\r" + self.line() + "\x1b[K")
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        if self.enabled and self.shown:
            try:
                self.stream.write(("\r" if self.tty else "") + self.line() + (" done\x1b[K\n" if self.tty else " done\n"))
                self.stream.flush()
            except (OSError, ValueError):
                pass


def open_partial(path: Path, mode: str):
    """Where the bytes go (a seam the tests use to simulate a full disk)."""
    return open(path, mode)


def _sha256_of(path: Path) -> "hashlib._Hash":
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest


def fetch(url: str, partial: Path, *, label: str, headers: dict, progress: bool) -> tuple[str, str | None]:
    """GET `url` into `partial`, continuing from the bytes already there. Returns (sha256 of the
    whole file, the commit the server says it served, from X-Repo-Commit, or None).

    Raises NotFound for 401/403/404, HubError for anything else after the retries and the time
    limits; the partial file is kept (it is resumed next time) unless the server refused a range."""
    import httpx

    stall, deadline = stall_timeout(), overall_deadline()
    t_start = time.monotonic()
    idle = 0.0                      # seconds spent without receiving a byte, over all attempts
    where = redact(url)
    last_problem = "no answer"
    for attempt in range(1, ATTEMPTS + 1):
        have = partial.stat().st_size if partial.exists() else 0
        ask = {**headers, "Accept-Encoding": "identity"}   # ranges count bytes of the file itself
        if have:
            ask["Range"] = f"bytes={have}-"
        left = stall - idle
        if deadline is not None:
            left = min(left, deadline - (time.monotonic() - t_start))
        if left <= 0:
            break
        timeout = httpx.Timeout(left, connect=min(left, 10.0))
        waited_from = time.monotonic()
        try:
            with httpx.Client(follow_redirects=True, timeout=timeout) as client, \
                    client.stream("GET", url, headers=ask) as resp:
                status = resp.status_code
                if status in (401, 403, 404):
                    raise NotFound(f"HTTP {status}", status)
                if status == 416 and have:      # the partial is longer than the file: start over
                    partial.unlink(missing_ok=True)
                    last_problem = "HTTP 416 for the resumed range"
                    continue
                if status in RETRY_STATUS or status >= 500:
                    last_problem = f"HTTP {status}"
                    raise _Retry(last_problem)
                if status not in (200, 206):
                    raise HubError(f"{where} answered HTTP {status} for {label}")
                # the Hub says it on the redirect to its CDN, not on the CDN's answer
                commit = resp.headers.get("x-repo-commit") or next(
                    (h.headers["x-repo-commit"] for h in resp.history if "x-repo-commit" in h.headers), None)
                if status == 206:
                    start = _range_start(resp.headers.get("content-range"))
                    if start != have:       # not the range asked for: keep nothing, ask again
                        partial.unlink(missing_ok=True)
                        last_problem = f"the server sent bytes from {start}, not {have}"
                        continue
                    mode, done = "ab", have
                else:                        # the whole file: a server that ignores ranges
                    mode, done = "wb", 0
                length = resp.headers.get("content-length")
                total = done + int(length) if length and length.isdigit() else None
                bar = Progress(label, total, done, progress)
                try:
                    with open_partial(partial, mode) as f:
                        for block in resp.iter_bytes():   # as received: a drop keeps what came
                            now = time.monotonic()
                            f.write(block)
                            done += len(block)
                            bar.update(done)
                            if deadline is not None and now - t_start > deadline:
                                raise HubError(f"{label} from {where}: not done within ZOO_HUB_DEADLINE="
                                               f"{deadline:g} s ({_human(done)} so far; a later pull resumes)")
                        f.flush()
                        os.fsync(f.fileno())
                finally:
                    bar.close()
                if total is not None and done < total:
                    last_problem = f"connection closed after {_human(done)} of {_human(total)}"
                    raise _Retry(last_problem)
                return _sha256_of(partial).hexdigest(), commit
        except _Retry:
            pass
        except httpx.TimeoutException:
            last_problem = f"no answer within {stall:g} s (ZOO_HUB_TIMEOUT)"
        except (httpx.ConnectError, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            last_problem = _network_reason(exc)
        except httpx.HTTPError as exc:
            last_problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except OSError as exc:
            import errno
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):   # give the space back rather than keep a partial
                partial.unlink(missing_ok=True)
            raise HubError(f"download of {label} from {where} failed: {exc.strerror or exc}") from None
        got_bytes = partial.exists() and partial.stat().st_size > have
        # bytes arrived: the server is alive, the clock for "no progress" starts again
        idle = 0.0 if got_bytes else idle + time.monotonic() - waited_from
        if attempt == ATTEMPTS:
            break
        pause = min(0.5 * 2 ** (attempt - 1), 4.0)
        log.info("zoo: %s from %s: %s; retry %d of %d in %.1f s", label, where, last_problem, attempt,
                 ATTEMPTS - 1, pause)
        if idle + pause >= stall:
            idle += pause
            break
        time.sleep(pause)
        idle += pause
    raise HubError(f"{_lead(last_problem, where)} for {label}")


class _Retry(Exception):
    pass


def _lead(problem: str, where: str) -> str:
    if problem.startswith("HTTP "):
        return f"{where} answered {problem}"
    if problem.startswith("cannot reach: "):
        return f"cannot reach {where} ({problem.split(': ', 1)[1]})"
    return f"{where}: {problem}"


def _network_reason(exc: Exception) -> str:
    import httpx

    text = str(exc).strip()
    if isinstance(exc, httpx.ConnectError):
        why = "connection refused" if "refused" in text.lower() else (text.splitlines()[0] if text else "no route")
        return f"cannot reach: {why}"
    return f"connection dropped ({text.splitlines()[0] if text else type(exc).__name__})"


def _range_start(header: str | None) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(header.split()[1].split("-")[0]) if header else None
    except (IndexError, ValueError):
        return None
