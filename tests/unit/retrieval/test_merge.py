from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shortrec.config import MergeConfig
from shortrec.retrieval.merge import merge, quota_slots
from shortrec.retrieval.types import Candidates


def _c(name: str, vids: list[int]) -> Candidates:
    return Candidates(
        name, np.array(vids, np.int32), np.linspace(1, 0, len(vids), dtype=np.float32)
    )


def test_quotas_dedupe_and_provenance() -> None:
    a = _c("two_tower", [1, 2, 3, 4, 5, 6])
    b = _c("trending", [2, 7, 8, 9])
    m = merge([a, b], {"two_tower": 0.5, "trending": 0.5}, total=6)
    got = set(m.video_idx.tolist())
    # two_tower admits 1,2,3; trending skips 2 (taken) and admits 7,8,9
    assert got == {1, 2, 3, 7, 8, 9}
    assert len(m.video_idx) == len(got)
    i = m.video_idx.tolist().index(2)
    assert m.sources_of(i) == ("two_tower", "trending")
    assert m.from_source("trending").sum() == 4
    # 2 is ranked first by both-source fusion
    assert m.video_idx[0] == 2


def test_seen_never_returned_and_short_sources_fill_from_others() -> None:
    a = _c("two_tower", [1, 2, 3, 4, 5, 6, 7, 8])
    b = _c("fresh", [1, 9])
    m = merge([a, b], {"two_tower": 0.5, "fresh": 0.5}, total=6, seen=[1, 4])
    assert not set(m.video_idx.tolist()) & {1, 4}
    assert len(m) == 6  # fresh had one unseen video: its other slots went to two_tower
    assert set(m.video_idx.tolist()) == {2, 3, 5, 6, 7, 9}


def test_quota_limits_a_source_when_others_have_enough() -> None:
    a = _c("two_tower", list(range(100, 200)))
    b = _c("trending", list(range(0, 100)))
    m = merge([a, b], {"two_tower": 0.8, "trending": 0.2}, total=10)
    assert m.from_source("two_tower").sum() == 8
    assert m.from_source("trending").sum() == 2


def test_quota_slots_preserve_the_total() -> None:
    assert quota_slots({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 10) == {"a": 4, "b": 3, "c": 3}
    assert sum(quota_slots({"a": 0.45, "b": 0.2, "c": 0.35}, 7).values()) == 7


def test_duplicate_source_names_rejected_and_empty_input() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        merge([_c("tags", [1]), _c("tags", [2])], {"tags": 1.0}, 5)
    assert len(merge([Candidates.empty("tags")], {"tags": 1.0}, 5)) == 0


def test_merge_config_rejects_bad_quotas() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        MergeConfig(quotas={"nope": 0.5})
    with pytest.raises(ValueError, match="sum"):
        MergeConfig(quotas={"tags": 0.7, "trending": 0.7})
    with pytest.raises(ValueError, match="weights: unknown source"):
        MergeConfig(weights={"nope": 0.5})
    with pytest.raises(ValueError, match="weights and quotas must be >= 0"):
        MergeConfig(weights={"tags": -0.1, "trending": 0.5})
    with pytest.raises(ValueError, match="weight > 0"):
        MergeConfig(weights={"tags": 0.0})


def test_reserved_slots_and_fusion_of_the_rest() -> None:
    # fresh reserves 2 of 6 slots with no fusion weight; the other 4 go to the videos the
    # weighted sources rank high together, not to each source's own best
    tags = _c("tags", [1, 2, 3, 4, 5, 6])
    tower = _c("two_tower", [7, 8, 3, 4, 9, 10])
    fresh = _c("fresh", [20, 21, 22])
    w = {"tags": 0.5, "two_tower": 0.5}
    m = merge([tags, tower, fresh], {"fresh": 2 / 6}, 6, weights=w)
    got = m.video_idx.tolist()
    assert got[:2] == [3, 4]  # proposed by both: first
    assert set(got) == {3, 4, 1, 7, 20, 21}
    assert m.from_source("fresh").sum() == 2
    # with the quotas as weights (the old behaviour) fresh would fuse too; here it only fills
    assert got[-2:] == [20, 21]


def test_plan_sizes_each_source() -> None:
    cfg = MergeConfig(
        quotas={"fresh": 0.04},
        weights={"tags": 0.5, "two_tower": 0.5},
        depth=1.0,
        oversample=1.5,
        cold_quotas={"trending": 0.6, "explore": 0.4},
    )
    q, w, sizes = cfg.plan(500, 7, cold=False)
    assert q == {"fresh": 0.04} and w == {"tags": 0.5, "two_tower": 0.5}
    assert sizes == {"two_tower": 507, "tags": 507, "fresh": 30 + 7}  # depth vs quota share
    q, w, sizes = cfg.plan(500, 0, cold=True)  # cold: quotas only, no fusion depth
    assert q == w == {"trending": 0.6, "explore": 0.4}
    assert sizes == {"trending": 450, "explore": 300}
    # an experiment arm's quotas replace the reserves; the weights stay
    q, w, sizes = cfg.plan(100, 0, cold=False, quotas={"trending": 0.5})
    assert q == {"trending": 0.5} and sizes == {"two_tower": 100, "tags": 100, "trending": 75}
    # without weights the quotas fuse, as before fusion weights existed; quotas given alone
    # (a config or bundle written then) mean the same, and the depth applies to no source
    q, w, _ = MergeConfig(quotas={"tags": 1.0}, weights=None).plan(10, 0, cold=False)
    assert w == q == {"tags": 1.0}
    old = MergeConfig.model_validate({"quotas": {"tags": 0.6, "trending": 0.4}})
    assert old.weights is None
    assert old.plan(100, 0, cold=False)[2] == {"tags": 90, "trending": 60}  # quota x 1.5
    assert MergeConfig().weights  # the defaults still fuse with their own weights


@settings(max_examples=60, deadline=None)
@given(
    lists=st.lists(st.lists(st.integers(0, 40), max_size=30), min_size=1, max_size=4),
    seen=st.lists(st.integers(0, 40), max_size=20),
    total=st.integers(1, 50),
)
def test_merge_properties(lists: list[list[int]], seen: list[int], total: int) -> None:
    names = ["two_tower", "tags", "trending", "fresh"][: len(lists)]
    cands = [_c(n, list(dict.fromkeys(v))) for n, v in zip(names, lists, strict=True)]
    m = merge(cands, {n: 1.0 / len(names) for n in names}, total, seen)
    out = m.video_idx.tolist()
    unseen_union = {v for vs in lists for v in vs} - set(seen)
    assert len(out) == len(set(out))  # dedupe
    assert not set(out) & set(seen)  # seen filter
    assert len(out) == min(total, len(unseen_union))  # full when possible
    assert np.all(np.diff(m.score) <= 0)
    for i, v in enumerate(out):  # provenance is exactly the sources that proposed it
        assert set(m.sources_of(i)) == {n for n, vs in zip(names, lists, strict=True) if v in vs}


def _reference_merge(
    lists: list[Candidates],
    quotas: dict[str, float],
    total: int,
    seen: list[int],
    rrf_k: float,
    weights: dict[str, float] | None = None,
) -> tuple[list[int], list[float], list[int]]:
    """The merge written plainly, one source and one video at a time (the fast path must
    give the same videos, float32 scores and provenance bits, in the same order)."""
    names = [c.source for c in lists]
    kept: list[list[int]] = []
    for c in lists:
        out: list[int] = []
        for v in c.video_idx.tolist():
            if v not in out and v not in seen:
                out.append(v)
        kept.append(out)
    if total <= 0 or not any(kept):
        return [], [], []
    fused: dict[int, float] = {}
    fusion = quotas if weights is None else weights
    for w_of in (lambda n: fusion.get(n, 0.0), lambda n: 1e-9):  # two passes, as documented
        for name, vs in zip(names, kept, strict=True):
            for r, v in enumerate(vs, start=1):
                fused[v] = fused.get(v, 0.0) + w_of(name) / (rrf_k + float(r))
    bits = {v: sum(1 << b for b, vs in enumerate(kept) if v in vs) for v in fused}
    slots = quota_slots({n: quotas.get(n, 0.0) for n in names}, total)
    taken: list[int] = []
    for i in sorted(range(len(names)), key=lambda i: -quotas.get(names[i], 0.0)):
        want = max(0, min(slots[names[i]], total - len(taken)))
        taken.extend([v for v in kept[i] if v not in taken][:want])
    by_score = sorted(fused, key=lambda v: (-fused[v], v))
    taken.extend([v for v in by_score if v not in taken][: total - len(taken)])
    page = [v for v in by_score if v in taken]
    return page, [float(np.float32(fused[v])) for v in page], [bits[v] for v in page]


@settings(max_examples=150, deadline=None)
@given(
    lists=st.lists(st.lists(st.integers(0, 60), max_size=40), min_size=0, max_size=5),
    seen=st.lists(st.integers(0, 60), max_size=30),
    total=st.integers(0, 60),
    weights=st.lists(st.sampled_from([0.0, 0.1, 0.15, 0.2, 0.45, 1.0]), min_size=5, max_size=5),
    rrf_k=st.sampled_from([0.0, 1.0, 60.0]),
    unweighted=st.integers(0, 5),
    fusion=st.none() | st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.0]), min_size=5, max_size=5),
)
def test_merge_equals_the_plain_reference(
    lists: list[list[int]],
    seen: list[int],
    total: int,
    weights: list[float],
    rrf_k: float,
    unweighted: int,
    fusion: list[float] | None,
) -> None:
    # duplicates inside a list, seen videos, empty lists, sources without a quota, and fusion
    # weights apart from the quotas (None: the quotas) included
    names = ["explore", "fresh", "tags", "trending", "two_tower"][: len(lists)]
    cands = [_c(n, v) for n, v in zip(names, lists, strict=True)]
    quotas = {n: weights[i] for i, n in enumerate(names) if i != unweighted}
    w = None if fusion is None else {n: fusion[i] for i, n in enumerate(names)}
    m = merge(cands, quotas, total, seen, rrf_k, w)
    vids, scores, bits = _reference_merge(cands, quotas, total, seen, rrf_k, w)
    assert m.video_idx.tolist() == vids
    assert m.score.tolist() == scores
    assert m.sources.tolist() == bits
    assert m.source_names == tuple(names)
