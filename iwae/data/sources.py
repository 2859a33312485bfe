"""Where the raw dataset files come from and how each is recognised.

Every raw file (declared in `iwae.data.catalogue`) has one or more published fingerprints and an
ordered list of sources. A local mirror (a directory laid out like
`mirror/mnist/train-images-idx3-ubyte.gz`, or an http(s) base URL) is tried first, then the
canonical URL, then known public mirrors. Each source gets a timeout and a few retries;
every candidate is verified before it replaces the destination, and a failure reports every
source tried and why. Partial downloads never survive: they live under a temporary name
until verified.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from iwae.errors import UserError
from iwae.system.files import atomic_path

MIRROR_ENV = "IWAE_DATA_MIRROR"


@dataclass(frozen=True)
class Fingerprint:
    algorithm: str  # "sha256", "md5" or "git-blob" (the id `git hash-object` prints)
    digest: str
    of_decompressed: bool = False  # fingerprint of the gunzipped content
    note: str = ""

    def matches(self, path: Path) -> bool:
        return file_digest(path, self.algorithm, self.of_decompressed) == self.digest


@dataclass(frozen=True)
class RawFile:
    """A raw file as stored under `resources/` (`name`), with its accepted fingerprints."""

    name: str  # e.g. "mnist/train-images-idx3-ubyte.gz"
    fingerprints: tuple[Fingerprint, ...]
    urls: tuple[str, ...]
    # other names the file may have in a local mirror (e.g. a gzipped copy); when a source
    # is plain text and `name` ends in .gz the content is gzipped on arrival
    mirror_names: tuple[str, ...] = field(default=())

    def verify(self, path: Path) -> Fingerprint | None:
        for fp in self.fingerprints:
            if fp.matches(path):
                return fp
        return None


def file_digest(path: Path, algorithm: str, decompressed: bool = False) -> str:
    opener = gzip.open if decompressed else open
    if algorithm == "git-blob":
        if decompressed:
            raise ValueError("git-blob fingerprints are of the file itself")
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        h = hashlib.new(algorithm)
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _gzip_in_place(path: Path) -> None:
    with atomic_path(path) as packed:
        with open(path, "rb") as f, gzip.open(packed, "wb") as g:
            shutil.copyfileobj(f, g)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def mirror_from_env(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get(MIRROR_ENV) or None


def _candidates(raw: RawFile, mirror: str | None) -> list[str]:
    out = []
    if mirror:
        for name in (raw.name, *raw.mirror_names):
            if mirror.startswith(("http://", "https://")):
                out.append(mirror.rstrip("/") + "/" + name)
            else:
                out.append(str(Path(mirror) / name))
    return out + list(raw.urls)


def _download(url: str, dest: Path, timeout: float, retries: int, quiet: bool) -> None:
    last = None
    for attempt in range(retries):
        if attempt:
            time.sleep(2**attempt)
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "iwae-reproduction/1.0"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if not quiet and total and sys.stderr.isatty():
                        print(f"\r  {done / 1e6:.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr)
                if not quiet and total and sys.stderr.isatty():
                    print(file=sys.stderr)
            return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                break  # a missing file does not appear on retry
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = str(getattr(e, "reason", e))
    raise OSError(last or "failed")


def fetch_file(
    raw: RawFile,
    dest_dir: Path,
    mirror: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    quiet: bool = False,
) -> Path:
    """Make `dest_dir / raw.name` a verified copy of `raw`; return its path."""
    target = Path(dest_dir) / raw.name
    if target.exists() and raw.verify(target):
        return target
    tried = []
    if target.exists():  # a corrupt or foreign copy: never used, never left looking valid
        target.unlink()
        tried.append(f"{target} (existing copy): fingerprint mismatch, removed")
    for source in _candidates(raw, mirror):
        remote = source.startswith(("http://", "https://"))
        if not remote and not Path(source).is_file():
            tried.append(f"{source}: not found")
            continue
        if not quiet:
            print(f"fetching {raw.name} from {source}", file=sys.stderr)
        try:
            with atomic_path(target) as tmp:
                if remote:
                    _download(source, tmp, timeout, retries, quiet)
                else:
                    shutil.copyfile(source, tmp)
                if raw.name.endswith(".gz") and not _is_gzip(tmp):
                    _gzip_in_place(tmp)
                if raw.verify(tmp) is None:
                    raise ValueError("fingerprint mismatch (" + _describe(raw) + ")")
            return target
        except (OSError, ValueError, EOFError, gzip.BadGzipFile) as e:
            tried.append(f"{source}: {e}")
    raise UserError(f"{raw.name}: no source gave a verified copy; tried: " + "; ".join(tried))


def _describe(raw: RawFile) -> str:
    return ", ".join(
        f"{fp.algorithm}{' of gunzipped content' if fp.of_decompressed else ''} {fp.digest[:12]}…"
        for fp in raw.fingerprints
    )
