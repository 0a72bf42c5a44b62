"""The artifact bundle: where offline training hands models to serving and evaluation.

Bottom layer (imports only ``config``/``schema`` from the package). A bundle directory::

    ART/manifest.json        {"bundle_format": 1, "model_version": ..., "components": {NAME: {...}}}
    ART/<component>/...      files of one component (retrieval, ranker, ...)

Each component entry records its config (and a hash of it), the data fingerprint it was trained
on, library versions, metrics and the time it was written. A component is written into a
temporary directory and renamed into place, then the manifest is replaced atomically, so a reader
sees either the old or the new component, never a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shortrec.schema import BadInput

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
_VERSIONED = ("shortrec", "numpy", "polars", "torch", "faiss-cpu", "onnxruntime")


class BundleError(BadInput):
    """The bundle is missing, malformed or lacks a component (the message names which)."""


def config_hash(config: BaseModel) -> str:
    """Stable short hash of a config (sorted JSON of its fields)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def read_manifest(art: Path) -> dict[str, Any]:
    path = Path(art) / MANIFEST
    if not path.is_file():
        return {"bundle_format": BUNDLE_FORMAT, "components": {}}
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: line {e.lineno}: invalid JSON: {e.msg}") from e
    if doc.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path}: bundle_format {doc.get('bundle_format')!r}, expected {BUNDLE_FORMAT}"
        )
    return doc


def _write_manifest(art: Path, doc: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=art)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, art / MANIFEST)


@contextlib.contextmanager
def write_component(
    art: Path,
    name: str,
    config: BaseModel,
    data_fingerprint: str,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Write one component atomically.

    Yields ``(directory, info)``: write the component's files into ``directory`` and put metrics
    or other facts into ``info`` (a dict merged into the manifest entry). On success the directory
    replaces ``ART/name`` and the manifest is updated; on error nothing changes.
    """
    art = Path(art)
    art.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=art))
    info: dict[str, Any] = {}
    try:
        yield tmp, info
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = art / name
    old = art / f".{name}.old-{os.getpid()}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    doc = read_manifest(art)
    entry = {
        "path": name,
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "data_fingerprint": data_fingerprint,
        "versions": _versions(),
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **info,
    }
    doc.setdefault("components", {})[name] = entry
    doc["model_version"] = hashlib.sha256(
        json.dumps(
            {
                k: (v["config_hash"], v["data_fingerprint"], v["written_at"])
                for k, v in sorted(doc["components"].items())
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    _write_manifest(art, doc)


def component_dir(art: Path, name: str) -> Path:
    """Directory of a component, checked to exist in the manifest and on disk."""
    doc = read_manifest(art)
    if name not in doc.get("components", {}):
        have = sorted(doc.get("components", {}))
        raise BundleError(f"{Path(art) / MANIFEST}: no component {name!r} (have: {have})")
    path = Path(art) / str(doc["components"][name]["path"])
    if not path.is_dir():
        raise BundleError(f"{path}: component directory missing")
    return path
