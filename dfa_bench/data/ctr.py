"""Click-through-rate datasets, preprocessed once into memory-mapped arrays next to the other caches.

Criteo (Kaggle Display Advertising Challenge `train.txt`): label, 13 integer and 26 categorical
tab-separated fields. Preprocessing is the reference CTR code's (torchfm's CriteoDataset, which the
paper's recsys.py uses): every one of the 39 fields becomes a categorical index; an integer value x > 2
maps to int(log(x)^2), other integers to x - 2, an empty field to its own category; categories seen fewer
than `min_threshold` (10) times in a field share one out-of-vocabulary index for that field.

The file is streamed twice in chunks (count, then index), so memory stays bounded whatever the file
size: the chunk, plus one 64-bit hash and count per distinct value of each field. Malformed lines (wrong
field count, a label other than 0/1, a non-integer integer field) are counted, reported with examples,
and left out; a file more than half malformed stops with a clear message. The result is cached under
<cache_root>/ctr/<file name>-<fingerprint>/ as `features.npy` (int32, rows x fields), `labels.npy`
(float32) and `meta.json`; the fingerprint covers the source's path, size and modification time and the
preprocessing settings, so a changed source file is preprocessed again.

MovieLens (ml-100k `u.data`, ml-1m `ratings.dat`): fields (user, movie), label rating > 3, as torchfm's
MovieLens datasets.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfa_bench import files
from dfa_bench.data import source_fingerprint
from dfa_bench.errors import DataError

log = logging.getLogger("dfa_bench")

CRITEO_INT, CRITEO_CAT = 13, 26
CRITEO_FIELDS = CRITEO_INT + CRITEO_CAT
PREP_VERSION = 1
CHUNK_LINES = 200_000
_EMPTY = np.int64(-(2**62))  # the code of an empty integer field


@dataclass
class CTRData:
    features: np.ndarray  # (rows, fields) int32, memory-mapped
    labels: np.ndarray  # (rows,) float32, memory-mapped
    field_dims: list[int]
    meta: dict


# -- Criteo -------------------------------------------------------------------------------------------
def _chunks(path: Path, lines_per_chunk: int):
    """(first line number, lines) chunks of a text file, read with bounded memory."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="\n") as f:
        first, lines = 1, []
        for line in f:
            lines.append(line)
            if len(lines) == lines_per_chunk:
                yield first, lines
                first, lines = first + len(lines), []
        if lines:
            yield first, lines


def parse_criteo_chunk(lines: list[str], first_line: int = 1) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Labels (n,), 64-bit codes (n, 39) of the well-formed lines, and (line number, reason) of the others."""
    bad: list[tuple[int, str]] = []
    good = []
    for i, line in enumerate(lines):
        line = line.rstrip("\r\n")
        if line.count("\t") != CRITEO_FIELDS:
            bad.append((first_line + i, f"{line.count(chr(9)) + 1} fields instead of {CRITEO_FIELDS + 1}"))
        else:
            good.append((first_line + i, line))
    if not good:
        return np.empty(0, np.float32), np.empty((0, CRITEO_FIELDS), np.int64), bad
    frame = pd.read_csv(io.StringIO("\n".join(line for _, line in good)), sep="\t", header=None, dtype=object,
                        na_filter=False, quoting=3, names=range(CRITEO_FIELDS + 1), engine="c",
                        lineterminator="\n")
    numbers = np.array([n for n, _ in good])
    label = frame[0]
    ok = label.isin(["0", "1"]).to_numpy().copy()
    codes = np.empty((len(frame), CRITEO_FIELDS), np.int64)
    for j in range(1, CRITEO_INT + 1):
        text = frame[j]
        empty = (text == "").to_numpy()
        value = pd.to_numeric(text.where(~empty, "0"), errors="coerce").to_numpy(dtype=np.float64)
        valid = np.isfinite(value) & (value == np.floor(value))
        ok &= valid
        value = np.where(valid, value, 0.0)
        big = value > 2
        with np.errstate(divide="ignore", invalid="ignore"):
            converted = np.where(big, np.floor(np.log(np.where(big, value, 3.0)) ** 2), value - 2)
        codes[:, j - 1] = np.where(empty, _EMPTY, converted.astype(np.int64))
    for j in range(CRITEO_INT + 1, CRITEO_FIELDS + 1):
        codes[:, j - 1] = pd.util.hash_array(frame[j].to_numpy(dtype=object)).view(np.int64)
    for n, lab in zip(numbers[~ok], label.to_numpy()[~ok]):
        bad.append((int(n), "label not 0/1" if lab not in ("0", "1") else "non-integer integer field"))
    labels = label.to_numpy()[ok].astype(np.float32)
    return labels, codes[ok], sorted(bad)


class _FieldCounter:
    """Exact value counts of one field in bounded memory: sorted unique 64-bit codes and their counts."""

    def __init__(self) -> None:
        self.keys = np.empty(0, np.int64)
        self.counts = np.empty(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_n = 0

    def add(self, values: np.ndarray) -> None:
        keys, counts = np.unique(values, return_counts=True)
        self._pending.append((keys, counts))
        self._pending_n += len(keys)
        if self._pending_n > 4_000_000:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c for _, c in self._pending)])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts, minlength=len(self.keys)).astype(np.int64)
        self._pending, self._pending_n = [], 0

    def vocabulary(self, min_count: int) -> np.ndarray:
        self._merge()
        return self.keys[self.counts >= min_count]


def _index(codes: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Position of each code in the sorted vocabulary; len(vocabulary) (the OOV index) when absent."""
    pos = np.searchsorted(vocabulary, codes)
    pos_clipped = np.minimum(pos, max(len(vocabulary) - 1, 0))
    found = (pos < len(vocabulary)) & (vocabulary[pos_clipped] == codes) if len(vocabulary) else np.zeros_like(pos, bool)
    return np.where(found, pos, len(vocabulary)).astype(np.int32)


def _fingerprint(source: Path, settings: dict) -> str:
    return source_fingerprint([source], version=PREP_VERSION, **settings)


def preprocess_criteo(source: Path, target: Path, min_threshold: int = 10, progress: bool = True,
                      lines_per_chunk: int = CHUNK_LINES) -> dict:
    """Two streaming passes over `source`; writes features.npy, labels.npy, meta.json into `target`."""
    started = time.time()
    size = source.stat().st_size
    counters = [_FieldCounter() for _ in range(CRITEO_FIELDS)]
    rows = lines = 0
    malformed: list[tuple[int, str]] = []
    n_malformed = 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"{source.name}: counting", disable=not progress) as bar:
        for first, chunk in _chunks(source, lines_per_chunk):
            labels, codes, bad = parse_criteo_chunk(chunk, first)
            for j, counter in enumerate(counters):
                counter.add(codes[:, j])
            rows += len(labels)
            lines += len(chunk)
            n_malformed += len(bad)
            malformed.extend(bad[: max(0, 5 - len(malformed))])
            bar.update(sum(len(line) for line in chunk))
    if lines == 0:
        raise DataError(f"{source} is empty")
    if n_malformed * 2 > lines:
        examples = "; ".join(f"line {n}: {why}" for n, why in malformed)
        raise DataError(f"{source}: {n_malformed} of {lines} lines are malformed ({examples}). Is it a Criteo "
                        f"train.txt (label, 13 integer and 26 categorical fields, tab-separated)?")
    if n_malformed:
        log.warning("%s: %d of %d lines are malformed and left out (%s)", source, n_malformed, lines,
                    "; ".join(f"line {n}: {why}" for n, why in malformed))
    vocabularies = [c.vocabulary(min_threshold) for c in counters]
    del counters
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    features = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.int32, shape=(rows, CRITEO_FIELDS))
    label_out = np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.float32, shape=(rows,))
    row = 0
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"{source.name}: indexing", disable=not progress) as bar:
        for first, chunk in _chunks(source, lines_per_chunk):
            labels, codes, _ = parse_criteo_chunk(chunk, first)
            n = len(labels)
            for j, vocabulary in enumerate(vocabularies):
                features[row : row + n, j] = _index(codes[:, j], vocabulary)
            label_out[row : row + n] = labels
            row += n
            bar.update(sum(len(line) for line in chunk))
    features.flush()
    label_out.flush()
    del features, label_out
    meta = {
        "source": str(source.resolve()), "rows": rows, "lines": lines, "malformed": n_malformed,
        "malformed_examples": [f"line {n}: {why}" for n, why in malformed],
        "field_dims": [len(v) + 1 for v in vocabularies], "min_threshold": min_threshold,
        "version": PREP_VERSION, "seconds": round(time.time() - started, 3),
    }
    files.write_json(tmp / "meta.json", meta)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return meta


# -- MovieLens ----------------------------------------------------------------------------------------
def preprocess_movielens(source: Path, target: Path) -> dict:
    """(user, movie) fields and label rating > 3, from ml-100k u.data (tabs) or ml-1m ratings.dat (::)."""
    sep = "::" if source.name.endswith(".dat") else "\t"
    try:
        frame = pd.read_csv(source, sep=sep, header=None, engine="python" if sep == "::" else "c",
                            names=["user", "item", "rating", "time"], dtype=np.int64)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{source}: not a MovieLens ratings file (user, item, rating, timestamp): {err}") from None
    if frame.empty:
        raise DataError(f"{source} is empty")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    features = (frame[["user", "item"]].to_numpy() - 1).astype(np.int32)
    np.save(tmp / "features.npy", features)
    np.save(tmp / "labels.npy", (frame["rating"].to_numpy() > 3).astype(np.float32))
    meta = {"source": str(source.resolve()), "rows": len(frame), "lines": len(frame), "malformed": 0,
            "field_dims": [int(features[:, 0].max()) + 1, int(features[:, 1].max()) + 1], "version": PREP_VERSION}
    files.write_json(tmp / "meta.json", meta)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return meta


# -- the cache ----------------------------------------------------------------------------------------
def load_ctr(kind: str, source: Path, cache_root: Path, min_threshold: int = 10, progress: bool = True) -> CTRData:
    """The preprocessed dataset, from the cache when it matches the source, else built (and cached)."""
    if not source.is_file():
        raise DataError(f"{source} not found")
    settings = {"kind": kind, "min_threshold": min_threshold if kind == "criteo" else None}
    where = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    target = Path(cache_root) / "ctr" / f"{source.name}-{where}-{_fingerprint(source, settings)}"
    data = _open_cache(target)
    if data is None:
        with files.build_lock(target):
            data = _open_cache(target)  # another process may have built it meanwhile
            if data is None:
                data = _build(kind, source, target, min_threshold, progress)
    return data


def _build(kind: str, source: Path, target: Path, min_threshold: int, progress: bool) -> CTRData:
    prefix = target.name.rsplit("-", 1)[0]  # <file name>-<hash of its path>: older versions of this source
    for stale in target.parent.glob(f"{prefix}-*"):
        if stale != target and stale.is_dir() and not stale.name.endswith(".tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    log.info("preprocessing %s into %s", source, target)
    if kind == "criteo":
        preprocess_criteo(source, target, min_threshold, progress)
    elif kind == "movielens":
        preprocess_movielens(source, target)
    else:
        raise DataError(f"unknown CTR dataset kind {kind!r}")
    data = _open_cache(target)
    if data is None:
        raise DataError(f"the cache {target} could not be read back after preprocessing")
    return data


def _open_cache(target: Path) -> CTRData | None:
    """The cached arrays, or None when absent or unreadable (a corrupt cache is rebuilt)."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        features = np.load(target / "features.npy", mmap_mode="r")
        labels = np.load(target / "labels.npy", mmap_mode="r")
        if features.shape != (meta["rows"], len(meta["field_dims"])) or labels.shape != (meta["rows"],):
            raise ValueError("array shapes do not match meta.json")
        return CTRData(features, labels, list(meta["field_dims"]), meta)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("the cache %s is unreadable (%s); rebuilding it", target, err)
        return None


# -- a generated Criteo-format file, for scale tests and benchmarks -----------------------------------
def generate_criteo(path: Path, rows: int, seed: int = 0, malformed_every: int = 0) -> None:
    """Write `rows` lines in Criteo's format with Zipf-like categories (not real data: for scale tests)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            labels = (rng.random(n) < 0.25).astype(int)
            ints = rng.geometric(0.05, size=(n, CRITEO_INT)) - 1
            ints_missing = rng.random((n, CRITEO_INT)) < 0.2
            cats = rng.zipf(1.3, size=(n, CRITEO_CAT)) % 2_000_000
            cats_missing = rng.random((n, CRITEO_CAT)) < 0.05
            out = []
            for i in range(n):
                int_text = ["" if m else str(v) for v, m in zip(ints[i], ints_missing[i])]
                cat_text = ["" if m else f"{(v * 2654435761 + j) & 0xFFFFFFFF:08x}"
                            for j, (v, m) in enumerate(zip(cats[i], cats_missing[i]))]
                line = "\t".join([str(labels[i]), *int_text, *cat_text])
                if malformed_every and (start + i) % malformed_every == malformed_every - 1:
                    line = line.rsplit("\t", 1)[0]  # one field short
                out.append(line)
            f.write("\n".join(out) + "\n")

