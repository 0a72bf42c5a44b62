"""Deterministic experiment assignment: salted hashing, layers, holdout, forced QA users.

A user id hashes to a bucket in ``0..EXPERIMENT_BUCKETS-1`` under a salt::

    bucket(salt, uid) = int.from_bytes(blake2b(f"{salt}:{uid}", digest_size=8), "big") % 10_000

(BLAKE2b, RFC 7693, via :mod:`hashlib`; stable across processes, machines and Python versions,
unlike ``hash()``). The modulo bias of a 64-bit digest over 10 000 buckets is below 1e-15.

Assignment of one user, for an :class:`ExperimentSet`:

1. Forced QA users are put in their pinned arm; that takes the layer's slot for them.
2. Users whose ``bucket(holdout.salt, uid) < fraction * 10_000`` are held out: no other arm.
3. Per layer, ``b = bucket(layer salt, uid)``; the enabled experiment whose ``[lo, hi)``
   holds ``b`` (ranges do not overlap in a layer, so experiments there are mutually exclusive)
   takes the user. Different layers use different salts, so they are independent (orthogonal).
4. Inside the experiment, ``bucket(experiment salt, uid)`` picks the arm: arm ``i`` owns the
   buckets ``[round(10_000 * W_{i-1} / W), round(10_000 * W_i / W))`` of cumulative weights.

The layer hash and the arm hash use different salts, so the arm split is independent of which
slice of the layer the experiment owns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shortrec.config import (
    EXPERIMENT_BUCKETS,
    ArmOverrides,
    ExperimentConfig,
    ExperimentsConfig,
)

UserId = str | int
I64 = npt.NDArray[np.int64]
I16 = npt.NDArray[np.int16]

#: Arm index meaning "not in the experiment" in vectorised assignment.
NOT_ASSIGNED = -1


def _digest(salt: str, uid: UserId) -> bytes:
    return hashlib.blake2b(f"{salt}:{uid}".encode(), digest_size=8).digest()


def bucket(salt: str, user_id: UserId) -> int:
    """Bucket ``0..EXPERIMENT_BUCKETS-1`` of one user id under ``salt`` (formula above)."""
    return int.from_bytes(_digest(salt, user_id), "big") % EXPERIMENT_BUCKETS


def buckets(salt: str, user_ids: Iterable[UserId]) -> I64:
    """Vectorised :func:`bucket`: int64 array of shape ``(len(user_ids),)``.

    The digests come from hashlib in one tight loop and are converted to integers in numpy
    (one big-endian ``uint64`` view), which keeps 1M ids around a second.
    """
    blob = b"".join(
        [hashlib.blake2b(f"{salt}:{u}".encode(), digest_size=8).digest() for u in user_ids]
    )
    words = np.frombuffer(blob, dtype=">u8")
    return (words % np.uint64(EXPERIMENT_BUCKETS)).astype(np.int64)


def arm_edges(weights: Sequence[float]) -> I64:
    """Upper bucket bound of each arm, shape ``(n_arms,)``; the last equals the bucket count."""
    w = np.asarray(weights, dtype=np.float64)
    edges: I64 = np.rint(np.cumsum(w) / w.sum() * EXPERIMENT_BUCKETS).astype(np.int64)
    return edges


@dataclass(frozen=True)
class Assignment:
    """The result of assigning one user: ``arms`` (experiment -> arm), the merged overrides of
    those arms, and whether the user is in the global holdout."""

    arms: dict[str, str]
    overrides: ArmOverrides
    holdout: bool


def merge_overrides(parts: Iterable[ArmOverrides]) -> ArmOverrides:
    """Merge arm overrides: each set knob of each part is taken (``params`` merged by key).

    :class:`ExperimentsConfig` guarantees a knob belongs to one layer, and a user is in at most
    one experiment per layer, so no knob is set twice for one user.
    """
    merged: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for p in parts:
        for name in ("model_version", "source_quotas", "diversity_trade_off", "reranker"):
            value = getattr(p, name)
            if value is not None:
                merged[name] = value
        params.update(p.params)
    return ArmOverrides(**merged, params=params)


@dataclass(frozen=True)
class ExperimentSet:
    """An immutable, validated set of experiments that assigns users to arms.

    ``version`` fingerprints the declaration (recorded in the exposure log), so logs can be
    told apart after a reload.
    """

    config: ExperimentsConfig
    version: str = ""
    _live: tuple[ExperimentConfig, ...] = field(init=False, repr=False)
    _edges: dict[str, I64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        live = tuple(e for e in self.config.experiments if e.enabled)
        object.__setattr__(self, "_live", live)
        object.__setattr__(
            self, "_edges", {e.name: arm_edges([a.weight for a in e.arms]) for e in live}
        )

    # ------------------------------------------------------------ metadata
    @property
    def experiments(self) -> tuple[ExperimentConfig, ...]:
        """The enabled experiments, in declaration order."""
        return self._live

    def experiment(self, name: str) -> ExperimentConfig:
        for e in self.config.experiments:
            if e.name == name:
                return e
        raise KeyError(
            f"unknown experiment {name!r}; known: {[e.name for e in self.config.experiments]}"
        )

    def layer_salt(self, layer: str) -> str:
        decl = self.config.layers.get(layer)
        return decl.salt if decl is not None and decl.salt is not None else f"layer:{layer}"

    # ------------------------------------------------------------ one user
    def assign(self, user_id: UserId) -> dict[str, str]:
        """Experiment name -> arm name for one user (empty when held out or in none)."""
        return self.assign_full(user_id).arms

    def overrides(self, user_id: UserId) -> ArmOverrides:
        """The merged overrides of the user's arms."""
        return self.assign_full(user_id).overrides

    def assign_full(self, user_id: UserId) -> Assignment:
        """Arms, merged overrides and holdout status of one user (steps 1-4 above)."""
        uid = str(user_id)
        arms: dict[str, str] = {}
        taken: set[str] = set()
        for e in self._live:
            pinned = e.forced.get(uid)
            if pinned is not None:
                arms[e.name] = pinned
                taken.add(e.layer)
        hold = self.config.holdout
        held = hold.fraction > 0 and bucket(hold.salt, uid) < round(
            hold.fraction * EXPERIMENT_BUCKETS
        )
        if not held:
            layer_bucket: dict[str, int] = {}
            for e in self._live:
                if e.layer in taken:
                    continue
                if e.layer not in layer_bucket:
                    layer_bucket[e.layer] = bucket(self.layer_salt(e.layer), uid)
                lo, hi = e.buckets
                if lo <= layer_bucket[e.layer] < hi:
                    i = int(
                        np.searchsorted(self._edges[e.name], bucket(e.hash_salt, uid), side="right")
                    )
                    arms[e.name] = e.arms[i].name
        by_name = {e.name: e for e in self._live}
        parts = [
            next(a.overrides for a in by_name[n].arms if a.name == arm) for n, arm in arms.items()
        ]
        return Assignment(arms=arms, overrides=merge_overrides(parts), holdout=held)

    # ------------------------------------------------------------ many users
    def assign_many(self, user_ids: Sequence[UserId]) -> dict[str, I16]:
        """Vectorised :meth:`assign`: experiment -> int16 arm index per user, shape ``(n,)``,
        ``NOT_ASSIGNED`` (-1) where the user is not in the experiment. Same answer as
        :meth:`assign`, user by user (tested)."""
        ids = [str(u) for u in user_ids]
        n = len(ids)
        out = {e.name: np.full(n, NOT_ASSIGNED, dtype=np.int16) for e in self._live}
        taken = {e.layer: np.zeros(n, dtype=bool) for e in self._live}
        pos = {u: i for i, u in enumerate(ids)}
        for e in self._live:
            arm_index = {a.name: i for i, a in enumerate(e.arms)}
            for uid, arm in e.forced.items():
                i_user = pos.get(uid)
                if i_user is not None:
                    out[e.name][i_user] = arm_index[arm]
                    taken[e.layer][i_user] = True
        hold = self.config.holdout
        held = np.zeros(n, dtype=bool)
        if hold.fraction > 0:
            held = buckets(hold.salt, ids) < round(hold.fraction * EXPERIMENT_BUCKETS)
        layer_bucket: dict[str, I64] = {}
        for e in self._live:
            if e.layer not in layer_bucket:
                layer_bucket[e.layer] = buckets(self.layer_salt(e.layer), ids)
            lo, hi = e.buckets
            lb = layer_bucket[e.layer]
            inside = (lb >= lo) & (lb < hi) & ~held & ~taken[e.layer]
            arm_of = np.searchsorted(self._edges[e.name], buckets(e.hash_salt, ids), side="right")
            out[e.name][inside] = arm_of[inside].astype(np.int16)
        return out
