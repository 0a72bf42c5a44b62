"""Fetch MovieLens-100K (RecBole atomic files) from the ``recbole==1.2.1`` wheel on PyPI.

    python scripts/fetch_movielens.py [--dest DIR]

The wheel ships ``recbole/dataset_example/ml-100k/`` (``ml-100k.inter`` with the header
``user_id:token item_id:token rating:float timestamp:float``, ``ml-100k.item``, ``ml-100k.user``,
plus ``.kg``/``.link``). The wheel is downloaded with pip (``pip download recbole==1.2.1
--no-deps --only-binary :all:``), only that folder is extracted, and the destination (default
``~/.cache/shortrec/ml-100k``) appears atomically. A destination that already holds the files is
reused. Exit code 0 on success, 1 when the registry cannot be reached or the wheel is unusable.
Then: ``shortrec ingest movielens DEST --out DATA``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_SPEC = "recbole==1.2.1"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
DEFAULT_DEST = Path.home() / ".cache" / "shortrec" / "ml-100k"


class FetchError(RuntimeError):
    """The wheel could not be downloaded or does not hold the expected files."""


def is_complete(dest: Path) -> bool:
    return all((dest / f).is_file() and (dest / f).stat().st_size > 0 for f in FILES)


def fetch(dest: Path = DEFAULT_DEST, timeout_s: float = 300.0) -> Path:
    """Make ``dest`` hold the ML-100K atomic files and return it (a no-op when it already does)."""
    dest = Path(dest).expanduser()
    if is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shortrec-recbole-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            WHEEL_SPEC,
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise FetchError(f"pip download {WHEEL_SPEC} timed out after {timeout_s:.0f}s") from e
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise FetchError(
                f"pip download {WHEEL_SPEC} failed (rc={proc.returncode}): " + " | ".join(tail)
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                members = [
                    m for m in zf.namelist() if m.startswith(MEMBER_DIR) and not m.endswith("/")
                ]
                for m in members:
                    target = staging / Path(m).name  # flat: no path from the archive is trusted
                    with zf.open(m) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out)
            if not is_complete(staging):
                raise FetchError(
                    f"{wheels[0].name} has no complete {MEMBER_DIR} (expected {', '.join(FILES)})"
                )
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dest", type=Path, default=DEFAULT_DEST, help=f"cache directory (default {DEFAULT_DEST})"
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="pip timeout in seconds")
    args = ap.parse_args(argv)
    try:
        path = fetch(args.dest, args.timeout)
    except FetchError as e:
        print(f"fetch_movielens: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
