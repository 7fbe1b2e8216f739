"""Where datasets are read from, how downloads are made, and how derived caches are keyed.

- The data root (`data_root`, environment variable DFA_BENCH_DATA) is only ever read: `dataset_path`
  checks that it exists before a loader looks inside it, so a wrong root is one clear message and
  nothing is created there.
- A dataset that can be downloaded (MNIST, CIFAR-10, Planetoid) is looked for in the data root first,
  then in <cache_root>/downloads/ (DFA_BENCH_CACHE); a download goes to the latter only. `staged` makes
  a download (or an extraction) appear at its final path only once complete and verified: a failed or
  offline download leaves neither a partial file nor an empty folder.
- Derived caches (preprocessed Criteo, PyG's Planetoid tensors, BPE tokens) are keyed by
  `source_fingerprint`: the sources' paths, sizes and modification times, so a changed source is
  processed again.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterator

from dfa_bench.errors import DataError

DATA_ENV, CACHE_ENV = "DFA_BENCH_DATA", "DFA_BENCH_CACHE"
DATA_FOLDERS = "planetoid/, criteo/, movielens/, wikitext/, nerf/, mnist/, cifar10/"


def check_data_root(root) -> Path:
    """The data root, or a DataError saying it is missing and how to point at the right one."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data root {root} {what} (set {DATA_ENV}, or data_root=, to the folder that holds "
                        f"{DATA_FOLDERS})")
    return root


def dataset_path(root, *parts: str) -> Path:
    """<root>/<parts...> after checking that the data root exists; the path itself may be absent."""
    return check_data_root(root).joinpath(*parts)


def download_dir(cache_root, *parts: str) -> Path:
    """<cache_root>/downloads/<parts...>: where downloaded datasets go (not created here)."""
    return Path(cache_root).joinpath("downloads", *parts)


def source_fingerprint(sources, **settings) -> str:
    """A short hash of the sources' resolved paths, sizes and modification times and of `settings`."""
    stats = []
    for path in sources:
        st = Path(path).stat()
        stats.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    key = json.dumps({"sources": stats, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:16]


# -- staged writes and downloads ------------------------------------------------------------------------
def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it created, outermost first."""
    made = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
    return made


@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` (a file or a folder: the block decides) that is renamed to `final`
    when the block succeeds. On any failure the temporary path is removed, and so is every folder made
    to hold it, so nothing is left behind."""
    final = Path(final)
    made = _make_parents(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part"))
    tmp.rmdir()  # only the unique name is wanted: the block creates a file or a folder there
    try:
        yield tmp
        if not tmp.exists():
            raise DataError(f"{final}: nothing was written")
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when still empty
        raise


def open_url(url: str, timeout: float = 60):
    """The response to `url` (a binary file-like object); tests replace this to simulate the network."""
    return urllib.request.urlopen(url, timeout=timeout)


def fetch(url: str, dest: Path, md5: str | None = None, *, what: str, hint: str) -> None:
    """Download `url` into the file `dest` (inside a `staged` block), checking its MD5 when given.
    A failed download is one DataError naming the URL, the error and `hint` (what to do by hand)."""
    digest = hashlib.md5()
    try:
        with open_url(url) as response, open(dest, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise DataError(f"{what}: the download from {url} failed ({type(err).__name__}: {err}); {hint}") from None
    if md5 is not None and digest.hexdigest() != md5:
        raise DataError(f"{what}: the file downloaded from {url} has MD5 {digest.hexdigest()}, expected {md5}; "
                        f"not saved. {hint}")
