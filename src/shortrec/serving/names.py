"""Human-readable catalogue names for the demo page: titles, tag/topic names, creators, users.

The ranker's video table (:class:`~shortrec.serving.snapshot.Catalogue`) keeps only what the
models need: tag and topic indices, creator *hash buckets* and duration *bucket edges*. A person
scrolling the feed needs names, so the bundle may carry one more, optional component::

    ART/names/videos.parquet              schema.VIDEOS (title, creator_idx, exact duration, ...)
    ART/names/vocab/{tags,categories,creators}.parquet   schema.VOCAB (idx -> name / id)
    ART/names/users.parquet               schema.VOCAB: a sample of known user ids (the busiest)

:func:`write_names` copies it from a dataset directory (the ``shortrec build``/``publish`` step
calls it); :func:`load_names` reads it back at serving time (None when the bundle has none).
:func:`describe` joins both sources into :class:`VideoInfo`; without a names component (or for
videos uploaded after the bundle) it falls back to labels made from indices ("video 12",
"topic 3", "tag 40", "creator #7" — the last a bucket key, not an id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from shortrec import schema as S
from shortrec.artifacts import BundleError, component_dir, read_manifest, write_component
from shortrec.serving.snapshot import Catalogue

NAMES_COMPONENT = "names"
VIDEOS_FILE = "videos.parquet"
USERS_FILE = "users.parquet"
VOCAB_DIR = "vocab"
#: vocabularies the component carries (the dataset's ``vocab/NAME.parquet``)
NAMED_VOCABS = ("tags", "categories", "creators")
_HISTORIES = Path("etl") / "histories.parquet"
_ETL_MANIFEST = Path("etl") / "manifest.json"
_USERS_VOCAB = Path(VOCAB_DIR) / "users.parquet"
_HIST_LEN = "hist_len"


class NamesConfig(BaseModel):
    """What :func:`write_names` copies: ``max_users`` known user ids for the demo's picker
    (those with the longest published histories; the most interesting feeds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_users: int = Field(default=200, ge=0, le=100_000)


@dataclass(frozen=True)
class VideoInfo:
    """What a person sees about one video. ``named`` is False when the labels are made from
    indices (no names component, or a video uploaded after the bundle); ``duration_s`` is
    exact from the names table, else the ranker's duration bucket edge (None: unknown)."""

    video_idx: int
    title: str
    creator: str
    category: str | None
    tags: tuple[str, ...]
    duration_s: float | None
    upload_us: int | None
    named: bool


def _read_table(path: Path, schema: S.TableSchema) -> pl.DataFrame:
    """Read a parquet table of the component and check it (``BundleError`` names the file)."""
    if not path.is_file():
        raise BundleError(f"{path}: file missing from the {NAMES_COMPONENT!r} component")
    try:
        df = pl.read_parquet(path)
        return S.check(S.conform(df, schema), schema, str(path))
    except S.BadInput as e:
        raise BundleError(str(e)) from e
    except Exception as e:  # a corrupt file makes a bad bundle, named
        raise BundleError(f"{path}: cannot read: {type(e).__name__}: {e}") from e


def _vocab_lookup(df: pl.DataFrame) -> npt.NDArray[np.object_]:
    """Dense ``idx -> id`` array (None where the vocabulary has a gap)."""
    idx = df.get_column(S.IDX).to_numpy().astype(np.int64)
    n = int(idx.max()) + 1 if idx.size else 0
    out = np.full(n, None, dtype=object)
    out[idx] = df.get_column(S.ID).to_list()
    return out


class CatalogueNames:
    """The loaded names component: per-video titles, creators, topics, tags and durations by
    ``video_idx``, the tag/topic/creator vocabularies and the sample of known user ids."""

    def __init__(
        self,
        videos: pl.DataFrame,
        vocabs: dict[str, pl.DataFrame],
        users: pl.DataFrame,
    ) -> None:
        self._videos = videos
        vid = videos.get_column(S.VIDEO_IDX).to_numpy().astype(np.int64)
        # row of each video_idx (-1: not named); video_idx is dense in practice, but a gap
        # must not shift every later title
        self._row = np.full(int(vid.max()) + 1 if vid.size else 0, -1, np.int64)
        self._row[vid] = np.arange(vid.shape[0])
        self._tags = _vocab_lookup(vocabs["tags"])
        self._categories = _vocab_lookup(vocabs["categories"])
        self._creators = _vocab_lookup(vocabs["creators"])
        self.users: tuple[str, ...] = tuple(users.sort(S.IDX).get_column(S.ID).to_list())

    @staticmethod
    def load(path: Path) -> CatalogueNames:
        """Read and validate the component directory ``path`` (``BundleError`` on any fault)."""
        path = Path(path)
        videos = _read_table(path / VIDEOS_FILE, S.VIDEOS)
        vocabs = {v: _read_table(path / VOCAB_DIR / f"{v}.parquet", S.VOCAB) for v in NAMED_VOCABS}
        users = _read_table(path / USERS_FILE, S.VOCAB)
        return CatalogueNames(videos, vocabs, users)

    def _name(self, table: npt.NDArray[np.object_], idx: int) -> str | None:
        if 0 <= idx < table.shape[0]:
            v = table[idx]
            return None if v is None else str(v)
        return None

    def rows(self, video_idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Row of each video in the names table, ``-1`` for videos it does not name."""
        ok = (video_idx >= 0) & (video_idx < self._row.shape[0])
        out = np.full(video_idx.shape[0], -1, np.int64)
        out[ok] = self._row[video_idx[ok]]
        return out

    def tag(self, idx: int) -> str:
        return self._name(self._tags, idx) or f"tag {idx}"

    def category(self, idx: int) -> str:
        return self._name(self._categories, idx) or f"topic {idx}"

    def creator(self, idx: int) -> str:
        return self._name(self._creators, idx) or f"creator {idx}"

    def gather(self, rows: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """The names table's rows ``rows`` (all >= 0) as dicts."""
        return self._videos[rows.tolist()].to_dicts() if rows.shape[0] else []


def load_names(art: Path) -> CatalogueNames | None:
    """The names component of bundle ``art``, or None when the bundle has none."""
    if NAMES_COMPONENT not in read_manifest(Path(art)).get("components", {}):
        return None
    return CatalogueNames.load(component_dir(Path(art), NAMES_COMPONENT))


def describe(
    catalogue: Catalogue, names: CatalogueNames | None, video_idx: list[int]
) -> tuple[list[VideoInfo], list[int]]:
    """``(infos, missing)``: a :class:`VideoInfo` per video the catalogue knows (in the order
    asked, duplicates kept), and the ids it does not know."""
    known = [v for v in video_idx if catalogue.known(v)]
    missing = [v for v in video_idx if not catalogue.known(v)]
    ids = np.asarray(known, np.int64)
    meta = catalogue.meta(ids)
    rows = names.rows(ids) if names is not None else np.full(ids.shape[0], -1, np.int64)
    named = names.gather(rows[rows >= 0]) if names is not None else []
    it = iter(named)
    out: list[VideoInfo] = []
    for i, v in enumerate(known):
        up = int(meta.upload_us[i])
        upload = up if up >= 0 else None
        if names is not None and rows[i] >= 0:
            r = next(it)
            cat = r[S.CATEGORY]
            dur = r[S.DURATION_S]
            out.append(
                VideoInfo(
                    video_idx=v,
                    title=r[S.TITLE] or f"video {v}",
                    creator=names.creator(int(r[S.CREATOR_IDX])),
                    category=None if cat is None else names.category(int(cat)),
                    tags=tuple(names.tag(int(t)) for t in r[S.TAGS]),
                    duration_s=None if dur is None else round(float(dur), 3),  # float32 noise off
                    upload_us=upload,
                    named=True,
                )
            )
            continue
        # labels from indices: a video uploaded after the bundle, or a bundle without names
        cat_i = int(meta.category[i])
        tag_i = [int(t) for t in meta.tags[i] if t >= 0]
        dur_f = float(meta.duration_s[i])
        creator = int(meta.creator[i])
        out.append(
            VideoInfo(
                video_idx=v,
                title=f"video {v}",
                creator=f"creator #{creator}" if creator >= 0 else "unknown creator",
                category=None
                if cat_i < 0
                else (names.category(cat_i) if names else f"topic {cat_i}"),
                tags=tuple(names.tag(t) if names else f"tag {t}" for t in tag_i),
                duration_s=dur_f if np.isfinite(dur_f) else None,
                upload_us=upload,
                named=False,
            )
        )
    return out, missing


def _sample_users(root: Path, users: pl.DataFrame, n: int) -> pl.DataFrame:
    """The ``n`` known users with the longest ETL histories (ties: lower index), else the
    first ``n`` of the vocabulary (no ETL yet)."""
    hist = root / _HISTORIES
    if n == 0:
        return users.head(0)
    if not hist.is_file():
        return users.sort(S.IDX).head(n)
    try:
        h = pl.read_parquet(hist, columns=[S.USER_IDX, S.HIST_VIDEO_IDX])
    except Exception as e:  # a corrupt file is bad input, named
        raise S.BadInput(f"{hist}: cannot read user histories: {e}") from e
    top = (
        h.select(
            pl.col(S.USER_IDX).alias(S.IDX),
            pl.col(S.HIST_VIDEO_IDX).list.len().alias(_HIST_LEN),
        )
        .sort([_HIST_LEN, S.IDX], descending=[True, False])
        .head(n)
    )
    return top.join(users, on=S.IDX, how="inner").sort(S.IDX).select(S.IDX, S.ID)


def write_names(dataset_root: Path, art: Path, config: NamesConfig | None = None) -> Path:
    """Copy the names of dataset ``dataset_root`` into bundle ``art`` as the ``names``
    component (atomic; replaces an older one). Raises ``BadInput`` naming a missing or
    invalid input file. Returns the component directory."""
    cfg = config or NamesConfig()
    root = Path(dataset_root)
    videos = _read_input(root / "videos.parquet", S.VIDEOS)
    vocabs = {v: _read_input(root / VOCAB_DIR / f"{v}.parquet", S.VOCAB) for v in NAMED_VOCABS}
    users = _sample_users(root, _read_input(root / _USERS_VOCAB, S.VOCAB), cfg.max_users)
    fp = ""
    if (root / _ETL_MANIFEST).is_file():
        try:
            fp = str(json.loads((root / _ETL_MANIFEST).read_text()).get("fingerprint", ""))
        except json.JSONDecodeError as e:
            raise S.BadInput(f"{root / _ETL_MANIFEST}: line {e.lineno}: invalid JSON") from e
    with write_component(Path(art), NAMES_COMPONENT, cfg, fp) as (out, info):
        videos.write_parquet(out / VIDEOS_FILE)
        (out / VOCAB_DIR).mkdir()
        for name, df in vocabs.items():
            df.write_parquet(out / VOCAB_DIR / f"{name}.parquet")
        users.write_parquet(out / USERS_FILE)
        info["metrics"] = {"videos": videos.height, "users": users.height}
    return Path(art) / NAMES_COMPONENT


def _read_input(path: Path, schema: S.TableSchema) -> pl.DataFrame:
    if not path.is_file():
        raise S.BadInput(f"{path}: not found (a dataset directory with vocab/ is needed)")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # a corrupt file is bad input, named
        raise S.BadInput(f"{path}: cannot read: {e}") from e
    return S.check(S.conform(df, schema), schema, str(path))
