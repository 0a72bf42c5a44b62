"""Protocols: what each one trains on, holds out and counts as relevant; bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from evalworld import checkerboard, etl_frame, ts, users_frame, videos_frame

from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.evaluation.protocols import (
    EvalTask,
    ProtocolError,
    build_task,
    csr_keys,
    sample_negatives,
)


def _task(protocol: str, events: pl.DataFrame | None = None, **cfg: Any) -> EvalTask:
    ev, videos, users = checkerboard()
    config = EvalConfig(protocol=protocol, **cfg)
    return build_task(
        events if events is not None else ev, videos, users, config, 2.0, has_oracle=True
    )


def _pairs(m: sp.csr_array, users: np.ndarray) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return {(int(users[r]), int(c)) for r, c in zip(coo.row, coo.col, strict=True)}


def test_temporal_trains_on_train_and_valid_only_and_never_sees_test() -> None:
    ev, _, _ = checkerboard()
    task = _task("temporal")
    train_ids = set(task.train.interactions.get_column(S.EVENT_ID).to_list())
    test_ids = set(ev.filter(pl.col(S.SPLIT) == S.TEST).get_column(S.EVENT_ID).to_list())
    valid_ids = set(ev.filter(pl.col(S.SPLIT) == S.VALID).get_column(S.EVENT_ID).to_list())
    assert not train_ids & test_ids
    assert valid_ids <= train_ids
    assert task.train.interactions.columns == S.EVENTS.names
    first_test = ev.filter(pl.col(S.SPLIT) == S.TEST).get_column(S.TS).dt.epoch("us").min()
    last_train = task.train.interactions.get_column(S.TS).dt.epoch("us").max()
    assert isinstance(first_test, int) and isinstance(last_train, int)
    assert last_train < first_test
    assert (task.eval_ts_us == task.train.cutoff_us).all()


def test_temporal_relevance_is_engaged_test_views_graded_by_watch_ratio() -> None:
    task = _task("temporal")
    coo = task.relevant.tocoo()
    # checkerboard: 3 engaged own-group test views per user, watch ratio 0.9; the skipped
    # other-group test view is not relevant
    assert np.diff(task.relevant.indptr).tolist() == [3] * task.users.size
    assert np.allclose(coo.data, 0.9)
    assert all(int(c) % 2 == int(task.users[r]) % 2 for r, c in zip(coo.row, coo.col, strict=True))
    # relevant items are never in the user's training history
    assert not _pairs(task.relevant, task.users) & _pairs(task.seen, task.users)


def test_temporal_null_skip_counts_as_engaged_and_null_ratio_as_one() -> None:
    rows = [
        {S.USER_IDX: 0, S.VIDEO_IDX: 0, S.TS: ts(0)},
        {S.USER_IDX: 0, S.VIDEO_IDX: 1, S.TS: ts(5), S.SPLIT: S.TEST},  # nulls: relevant, 1
        {
            S.USER_IDX: 0,
            S.VIDEO_IDX: 2,
            S.TS: ts(5),
            S.SPLIT: S.TEST,
            S.WATCH_RATIO: 7.0,
            S.SKIPPED: False,
        },  # capped at relevance_cap
        {S.USER_IDX: 0, S.VIDEO_IDX: 3, S.TS: ts(5), S.SPLIT: S.TEST, S.SKIPPED: True},
        {S.USER_IDX: 0, S.VIDEO_IDX: 0, S.TS: ts(6), S.SPLIT: S.TEST},  # re-watch: seen
        {S.USER_IDX: 1, S.VIDEO_IDX: 3, S.TS: ts(6), S.SPLIT: S.TEST, S.SKIPPED: True},
    ]
    ev = etl_frame(rows)
    task = build_task(
        ev,
        videos_frame(5),
        users_frame(2),
        EvalConfig(protocol="temporal", relevance_cap=2.0),
        2.0,
        False,
    )
    assert task.users.tolist() == [0]  # user 1 only skipped
    rel = task.relevant.toarray()[0]
    assert rel.tolist() == [0.0, 1.0, 2.0, 0.0, 0.0]
    assert task.impressions is not None
    assert task.impressions.key.size == 4  # user 0's four distinct test (user, video) pairs
    # the logged skip rate counts only impressions whose skip flag is known: 2 of 3
    assert task.logged["skip_rate"] == pytest.approx(2 / 3)


def test_temporal_drops_relevant_items_uploaded_after_the_cutoff() -> None:
    rows = [
        {S.USER_IDX: 0, S.VIDEO_IDX: 0, S.TS: ts(0)},
        {S.USER_IDX: 0, S.VIDEO_IDX: 1, S.TS: ts(5), S.SPLIT: S.TEST},
        {S.USER_IDX: 0, S.VIDEO_IDX: 2, S.TS: ts(6), S.SPLIT: S.TEST},
    ]
    task = build_task(
        etl_frame(rows), videos_frame(3, late={2: 5.5}), users_frame(1), EvalConfig(), 2.0, False
    )
    assert task.relevant.toarray()[0].tolist() == [0.0, 1.0, 0.0]


def test_loo_holds_out_exactly_the_last_interaction_without_leaking_it() -> None:
    ev, _, _ = checkerboard()
    task = _task("loo-full")
    held = ev.filter(pl.col(S.LOO_SPLIT) == S.TEST)
    held_ids = set(held.get_column(S.EVENT_ID).to_list())
    train_ids = set(task.train.interactions.get_column(S.EVENT_ID).to_list())
    assert not held_ids & train_ids
    assert len(train_ids) == ev.height - held.height  # valid rows are trained on
    want = {(int(u), int(v)) for u, v in held.select(S.USER_IDX, S.VIDEO_IDX).iter_rows()}
    assert _pairs(task.relevant, task.users) == want
    # the held-out item is not among the user's training items
    assert not want & _pairs(task.seen, task.users)
    # each user is served at the time of their held-out interaction
    ts_by_user = dict(
        zip(
            held.get_column(S.USER_IDX).to_list(),
            held.get_column(S.TS).dt.epoch("us").to_list(),
            strict=True,
        )
    )
    assert [ts_by_user[int(u)] for u in task.users] == task.eval_ts_us.tolist()


def test_loo_skipped_held_out_is_not_evaluated() -> None:
    rows = [
        {S.USER_IDX: 0, S.VIDEO_IDX: 0, S.TS: ts(0)},
        {S.USER_IDX: 0, S.VIDEO_IDX: 1, S.TS: ts(1), S.LOO_SPLIT: S.TEST, S.SKIPPED: True},
        {S.USER_IDX: 1, S.VIDEO_IDX: 1, S.TS: ts(0)},
        {S.USER_IDX: 1, S.VIDEO_IDX: 2, S.TS: ts(1), S.LOO_SPLIT: S.TEST},
    ]
    task = build_task(
        etl_frame(rows),
        videos_frame(3),
        users_frame(2),
        EvalConfig(protocol="loo-full"),
        2.0,
        False,
    )
    assert task.users.tolist() == [1]


def test_loo_sampled_candidates() -> None:
    task = _task("loo-sampled", n_negatives=20)
    assert task.candidates is not None
    cand = task.candidates
    assert cand.shape == (task.users.size, 21)
    target = task.relevant.indices
    seen = {(int(r), int(c)) for r, c in zip(*task.seen.nonzero(), strict=True)}
    for r in range(cand.shape[0]):
        row = cand[r].tolist()
        assert len(set(row)) == 21
        assert row.count(int(target[r])) == 1
        assert not any((r, c) in seen for c in row)
        assert not {78, 79} & set(row)  # uploaded on day 20, after every held-out time
    # the held-out item is not always in the same slot
    assert len({int(np.flatnonzero(cand[r] == target[r])[0]) for r in range(cand.shape[0])}) > 1


def test_popularity_negatives_are_never_unpopular_items() -> None:
    seen = sp.csr_array((np.ones(2), ([0, 1], [0, 1])), shape=(2, 10))
    seen.sort_indices()
    pop = np.array([5.0, 5.0, 1.0, 0.0, 3.0, 0.0, 2.0, 0.0, 4.0, 1.0])
    rng = np.random.default_rng(0)
    negs = sample_negatives(
        seen, np.array([2, 4]), np.array([0, 0]), np.zeros(10, np.int64), 4, pop, rng
    )
    for r, row in enumerate(negs.tolist()):
        assert len(set(row)) == 4
        assert not {3, 5, 7} & set(row)
        assert r not in row  # seen
        assert [2, 4][r] not in row  # target
    with pytest.raises(ProtocolError, match="n_negatives=6"):
        sample_negatives(
            seen,
            np.array([2, 4]),
            np.array([0, 0]),
            np.zeros(10, np.int64),
            6,
            pop,
            rng,
            max_rounds=5,
        )
    assert csr_keys(seen).tolist() == [0, 11]


def test_bad_input_names_table_and_field() -> None:
    ev, videos, users = checkerboard()
    with pytest.raises(S.BadInput, match=r"etl_events\.watch_ratio: missing column"):
        build_task(ev.drop(S.WATCH_RATIO), videos, users, EvalConfig(), 2.0, False)
    with pytest.raises(S.BadInput, match=r"videos\.upload_ts: dtype"):
        build_task(
            ev,
            videos.with_columns(pl.col(S.UPLOAD_TS).dt.epoch("s")),
            users,
            EvalConfig(),
            2.0,
            False,
        )
    with pytest.raises(S.BadInput, match="video_idx not in videos"):
        build_task(ev, videos.head(10), users, EvalConfig(), 2.0, False)
    with pytest.raises(S.BadInput, match="split == 'test'"):
        build_task(
            ev.with_columns(pl.lit(S.TRAIN).alias(S.SPLIT)), videos, users, EvalConfig(), 2.0, False
        )
    with pytest.raises(S.BadInput, match="not temporal"):
        late_train = ev.with_columns(
            pl.when(pl.col(S.EVENT_ID) == 0)
            .then(pl.lit(ts(30)))
            .otherwise(pl.col(S.TS))
            .alias(S.TS)
        )
        build_task(late_train, videos, users, EvalConfig(), 2.0, False)
    with pytest.raises(S.BadInput, match="oracle"):
        build_task(ev, videos, users, EvalConfig(protocol="oracle"), 2.0, False)
    two = ev.with_columns(pl.lit(S.TEST).alias(S.LOO_SPLIT))
    with pytest.raises(S.BadInput, match="exactly one interaction per user"):
        build_task(two, videos, users, EvalConfig(protocol="loo-full"), 2.0, False)


def test_max_users_subsamples_deterministically() -> None:
    a = _task("temporal", max_users=7, seed=1)
    b = _task("temporal", max_users=7, seed=1)
    c = _task("temporal", max_users=7, seed=2)
    assert a.users.size == 7
    assert a.users.tolist() == b.users.tolist()
    assert a.users.tolist() != c.users.tolist()
    assert np.all(np.diff(a.users) > 0)
