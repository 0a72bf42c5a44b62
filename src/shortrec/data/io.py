"""Dataset layout on disk and atomic file I/O.

A dataset directory holds::

    manifest.json            what it is (source, preset, seed, counts, skip threshold)
    videos.parquet           schema.VIDEOS
    users.parquet            schema.USERS
    events/part-*.parquet    schema.EVENTS, in parts so large worlds stream in bounded memory
    vocab/{users,videos,creators,tags,categories}.parquet   schema.VOCAB (idx -> external id)
    truth/                   synthetic worlds only: the simulator's latent state (never a feature)
    etl/                     written by `shortrec etl`

Directories and files appear atomically: everything is written under a temporary sibling and
renamed into place, so a crash leaves the previous version (or nothing), never half a dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shortrec import schema as S

MANIFEST = "manifest.json"
VIDEOS_FILE = "videos.parquet"
USERS_FILE = "users.parquet"
EVENTS_DIR = "events"
VOCAB_DIR = "vocab"
TRUTH_DIR = "truth"
ETL_DIR = "etl"
VOCAB_NAMES = ("users", "videos", "creators", "tags", "categories")


class DatasetError(S.BadInput):
    """A dataset directory is missing, incomplete or malformed (the message names the path)."""


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out`` only if the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_parquet_atomic(df: pl.DataFrame, path: Path, zstd_level: int | None = None) -> None:
    """Write ``df`` to ``path`` through a temporary file and a rename (zstd compression at
    ``zstd_level``, the library default when None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp, compression="zstd", compression_level=zstd_level, statistics=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e


def vocab_frame(ids: list[str] | pl.Series) -> pl.DataFrame:
    """Vocabulary table for external ids in index order (index i -> ids[i])."""
    s = pl.Series(S.ID, ids, dtype=pl.String)
    return pl.DataFrame({S.IDX: pl.int_range(0, s.len(), dtype=pl.Int32, eager=True), S.ID: s})


@dataclass(frozen=True)
class Dataset:
    """A dataset directory opened for reading. Tables are lazy; nothing is loaded up front."""

    root: Path
    manifest: dict[str, Any]

    @staticmethod
    def open(root: Path) -> Dataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset directory not found")
        for name in (MANIFEST, VIDEOS_FILE, USERS_FILE):
            if not (root / name).is_file():
                raise DatasetError(f"{root}: missing {name} (is this a shortrec dataset?)")
        if not list((root / EVENTS_DIR).glob("*.parquet")):
            raise DatasetError(f"{root}: no event files in {EVENTS_DIR}/")
        manifest = read_json(root / MANIFEST)
        return Dataset(root=root, manifest=manifest)

    @property
    def skip_threshold_s(self) -> float:
        return float(self.manifest.get("skip_threshold_s", S.DEFAULT_SKIP_THRESHOLD_S))

    @property
    def is_synthetic(self) -> bool:
        return (self.root / TRUTH_DIR).is_dir()

    def events(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.root / EVENTS_DIR / "*.parquet", schema=S.EVENTS.polars_schema)

    def videos(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.root / VIDEOS_FILE, schema=S.VIDEOS.polars_schema)

    def users(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.root / USERS_FILE, schema=S.USERS.polars_schema)

    def vocab(self, name: str) -> pl.DataFrame:
        if name not in VOCAB_NAMES:
            raise KeyError(f"unknown vocabulary {name!r}; expected one of {VOCAB_NAMES}")
        path = self.root / VOCAB_DIR / f"{name}.parquet"
        if not path.is_file():
            raise DatasetError(f"{path}: vocabulary not found")
        return pl.read_parquet(path)

    def validate(self) -> list[S.Violation]:
        """Full validation of every table (reads everything; use at boundaries)."""
        out: list[S.Violation] = []
        out += S.validate(self.videos().collect(), S.VIDEOS)
        out += S.validate(self.users().collect(), S.USERS)
        out += S.validate(self.events().collect(), S.EVENTS)
        for name in VOCAB_NAMES:
            path = self.root / VOCAB_DIR / f"{name}.parquet"
            if path.is_file():
                out += S.validate(pl.read_parquet(path), S.VOCAB)
        return out
