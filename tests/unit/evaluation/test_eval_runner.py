"""The runner end to end on the checkerboard world, its contracts, and the report files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from evalworld import CheckerboardOracle, IdealRecommender, checkerboard

from shortrec import schema as S
from shortrec.config import EvalConfig
from shortrec.domain import FloatArray, IntArray, Recommender, TrainingData
from shortrec.evaluation.baselines import (
    MostPopular,
    RandomRecommender,
    Trending,
    default_baselines,
)
from shortrec.evaluation.report import EvalReport, write_report
from shortrec.evaluation.runner import EvaluationError, evaluate, top_k

KS = (1, 5, 10, 20)


class AntiIdeal(IdealRecommender):
    """Prefers the other group: the worst personalised list."""

    def score(self, user_idx: IntArray) -> FloatArray:
        return (1.0 - super().score(user_idx)).astype(np.float32)


class Fixed:
    """Returns whatever ``make(n_users, n_items)`` builds; records what it was fit on."""

    def __init__(self, name: str, make: Callable[[int, int], FloatArray]) -> None:
        self.name = name
        self.make = make
        self.data: TrainingData | None = None

    def fit(self, data: TrainingData) -> Fixed:
        self.data = data
        return self

    def score(self, user_idx: IntArray) -> FloatArray:
        assert self.data is not None
        return self.make(len(user_idx), self.data.n_items)


def _run(protocol: str, recs: Sequence[Recommender], **cfg: Any) -> EvalReport:
    ev, videos, users = checkerboard()
    config = EvalConfig(protocol=protocol, ks=KS, **cfg)
    return evaluate(ev, videos, users, recs, config, oracle=CheckerboardOracle(), progress=False)


@pytest.mark.parametrize("protocol", ["temporal", "loo-full", "loo-sampled", "oracle"])
def test_checkerboard_ranks_the_ideal_recommender_first(protocol: str) -> None:
    recs: list[Recommender] = [
        IdealRecommender(),
        AntiIdeal(name="anti"),
        RandomRecommender(seed=0),
        MostPopular(),
        Trending(),
    ]
    rep = _run(protocol, recs, n_negatives=20)
    ndcg = {name: m["ndcg@10"] for name, m in rep.metrics.items()}
    assert max(ndcg, key=ndcg.__getitem__) == "ideal"
    assert min(ndcg, key=ndcg.__getitem__) == "anti"
    assert ndcg["ideal"] > ndcg["random"] + 0.05


def test_oracle_protocol_known_values() -> None:
    rep = _run("oracle", [IdealRecommender(), AntiIdeal(name="anti")])
    ideal, anti = rep.metrics["ideal"], rep.metrics["anti"]
    # every own-group video is worth 0.9: the ideal list is optimal, the anti list worst
    for k in KS:
        assert ideal[f"ndcg@{k}"] == pytest.approx(1.0)
        assert ideal[f"exp_watch_ratio@{k}"] == pytest.approx(0.9)
        assert ideal[f"exp_skip_rate@{k}"] == pytest.approx(0.1)
        assert ideal[f"exp_watch_time_s@{k}"] == pytest.approx(9.0)
        assert anti[f"ndcg@{k}"] == pytest.approx(0.05 / 0.9)
        assert anti[f"exp_skip_rate@{k}"] == pytest.approx(0.9)
    assert "hit@10" not in ideal


def test_oracle_recall_against_each_users_best_catalogue_items() -> None:
    oracle = CheckerboardOracle()
    ev, videos, users = checkerboard()
    config = EvalConfig(protocol="oracle", ks=KS, oracle_recall_top=5)
    recs = [IdealRecommender(), AntiIdeal(name="anti")]
    rep = evaluate(ev, videos, users, recs, config, oracle=oracle, progress=False)
    ideal, anti = rep.metrics["ideal"], rep.metrics["anti"]
    # the relevant set is 5 own-group videos (all worth 0.9; ties by lower index, as the
    # runner's top-k): the ideal list finds one of them at k=1 and all from k=5 on
    assert ideal["recall@1"] == pytest.approx(1 / 5) and ideal["hit@1"] == 1.0
    for k in (5, 10, 20):
        assert ideal[f"recall@{k}"] == pytest.approx(1.0)
        assert anti[f"recall@{k}"] == 0.0 and anti[f"hit@{k}"] == 0.0
    # off by default: no recall under the oracle, as before
    assert "recall@10" not in _run("oracle", [IdealRecommender()]).metrics["ideal"]


def test_oracle_relevant_set_is_computed_once_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from shortrec.evaluation import runner

    calls: list[int] = []
    real = runner._oracle_top

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(runner, "_oracle_top", counted)
    ev, videos, users = checkerboard()
    config = EvalConfig(protocol="oracle", ks=KS, oracle_recall_top=5)
    recs = [IdealRecommender(), AntiIdeal(name="anti"), Trending()]
    evaluate(ev, videos, users, recs, config, oracle=CheckerboardOracle(), progress=False)
    assert len(calls) == 1


def test_temporal_short_video_metrics_known_values() -> None:
    rep = _run("temporal", [IdealRecommender(), AntiIdeal(name="anti")])
    ideal, anti = rep.metrics["ideal"], rep.metrics["anti"]
    # engaged test views are own-group, skipped ones other-group: the ideal scores separate
    # them perfectly, the anti scores invert them
    assert ideal["gauc"] == pytest.approx(1.0)
    assert anti["gauc"] == pytest.approx(0.0)
    # replay: every logged impression the ideal list matches was watched, never skipped
    assert ideal["replay_skip_rate@20"] == pytest.approx(0.0)
    assert ideal["replay_watch_ratio@20"] == pytest.approx(0.9)
    assert anti["replay_skip_rate@20"] == pytest.approx(1.0)
    assert rep.logged["skip_rate"] == pytest.approx(0.25)
    # one creator per list slot pattern: creators are v % 6, own-group videos span 3 creators
    assert ideal["distinct_creators@5"] <= 3 / 5 + 1e-9
    # topics (category) are v % 2 and each group is one parity: one topic per list
    assert ideal["distinct_topics@5"] == pytest.approx(1 / 5)
    assert anti["distinct_topics@5"] == pytest.approx(1 / 5)


def test_same_seed_same_report_and_different_seed_differs() -> None:
    def once(seed: int) -> dict[str, Any]:
        doc: dict[str, Any] = _run(
            "loo-sampled", default_baselines(seed), seed=seed, n_negatives=20
        ).to_json()
        doc.pop("timing")
        return doc

    a, b, c = once(3), once(3), once(4)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["recommenders"] != c["recommenders"]


def test_runner_excludes_seen_items_and_items_not_yet_uploaded() -> None:
    def seen_first(n: int, m: int) -> FloatArray:
        return np.zeros((n, m), dtype=np.float32)

    # a recommender that only proposes the two late videos (uploaded on day 20)
    def late_only(n: int, m: int) -> FloatArray:
        s = np.full((n, m), -np.inf, dtype=np.float32)
        s[:, m - 2 :] = 1.0
        return s

    rep = _run("temporal", [Fixed("late", late_only), Fixed("flat", seen_first)])
    assert rep.metrics["late"]["coverage@10"] == 0.0
    assert rep.metrics["late"]["hit@10"] == 0.0
    # a constant scorer ranks by index: the lowest unseen, eligible items of each user

    class Seen(Fixed):
        def score(self, user_idx: IntArray) -> FloatArray:
            assert self.data is not None
            s = np.zeros((len(user_idx), self.data.n_items), dtype=np.float32)
            inter = self.data.interactions
            for r, u in enumerate(user_idx.tolist()):
                items = inter.filter(inter["user_idx"] == u)["video_idx"].to_numpy()
                s[r, items] = 10.0
            return s

    rep = _run("loo-full", [Seen("seen", seen_first), Fixed("flat", seen_first)])
    # boosting the training items changes nothing: they are excluded before ranking
    doc = rep.to_json()["recommenders"]
    assert doc["seen"] == doc["flat"]


def test_fit_is_called_only_for_unfit_recommenders() -> None:
    ev, videos, users = checkerboard()
    pre = IdealRecommender(name="pre")
    pre.fit(TrainingData(ev.head(0), videos, users, 40, 80, 0, 2.0))
    fresh = IdealRecommender(name="fresh")
    rep = evaluate(ev, videos, users, [pre, fresh], EvalConfig(ks=KS), progress=False)
    assert rep.recommender_info == {
        "pre": {"fit_by_runner": False},
        "fresh": {"fit_by_runner": True},
    }
    assert fresh.fitted_on is not None and fresh.fitted_on.interactions.height > 0
    assert pre.fitted_on is not None and pre.fitted_on.interactions.height == 0


def test_contract_violations_are_reported() -> None:
    with pytest.raises(EvaluationError, match="shape"):
        _run("temporal", [Fixed("short", lambda n, m: np.zeros((n, m - 1), np.float32))])
    with pytest.raises(EvaluationError, match="NaN"):
        _run("temporal", [Fixed("nan", lambda n, m: np.full((n, m), np.nan, np.float32))])
    with pytest.raises(ValueError, match="unique"):
        _run("temporal", [MostPopular(), MostPopular()])


def test_top_k_breaks_ties_by_index_and_marks_empty_slots() -> None:
    rng = np.random.default_rng(0)
    for m in (7, 300, 10_000):  # 10_000 columns takes the sampled-threshold path
        s = rng.integers(0, 4, size=(12, m)).astype(np.float32)
        s[rng.random(s.shape) < 0.3] = -np.inf
        s[0] = -np.inf
        s[1, 3:] = -np.inf
        s[2] = 0.0
        s[2, ::2] = -0.0
        got = top_k(s, 20)
        for i in range(s.shape[0]):
            row = s[i].tolist()
            order = sorted(range(m), key=lambda j: (-row[j], j))
            want = [j for j in order if s[i, j] > -np.inf][:20]
            assert got[i].tolist() == want + [-1] * (20 - len(want))


def test_report_json_markdown_and_plots(tmp_path: Path) -> None:
    rep = _run("loo-sampled", [IdealRecommender(), MostPopular()], n_negatives=20)
    doc = rep.to_json()
    assert doc["protocol"] == "loo-sampled" and doc["k"] == 10 and doc["sampled"] is True
    assert set(doc["data"]) >= {"fingerprint", "users", "items", "interactions"}
    assert doc["data"]["users"] == 40 and doc["data"]["items"] == 80
    assert doc["recommenders"]["ideal"]["ndcg@10"] == rep.metrics["ideal"]["ndcg@10"]
    assert doc["curves"]["ideal"]["hit"]["5"] == rep.metrics["ideal"]["hit@5"]
    assert doc["sampling"] == {"n_negatives": 20, "negatives": "uniform", "candidates_per_user": 21}
    assert "SAMPLED" in rep.markdown()
    paths = write_report(rep, tmp_path)
    assert set(paths) == {"json", "markdown", "metric_vs_k", "accuracy_vs_diversity"}
    assert json.loads(paths["json"].read_text())["recommenders"] == doc["recommenders"]
    assert paths["markdown"].read_text() == rep.markdown()
    for key in ("metric_vs_k", "accuracy_vs_diversity"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_full_protocol_json_has_no_nan_and_a_fingerprint() -> None:
    rep = _run("temporal", [IdealRecommender(), MostPopular()], pairwise_max_k=10)
    text = json.dumps(rep.to_json(), allow_nan=False)
    doc = json.loads(text)
    assert doc["sampled"] is False and "sampling" not in doc
    assert len(doc["data"]["fingerprint"]) == 16
    assert doc["data"]["eval_users"] == 40
    row = doc["recommenders"]["ideal"]
    for key in (
        "ndcg@10",
        "hit@10",
        "recall@10",
        "mrr@10",
        "coverage@10",
        "ild_tags@10",
        "ild_embedding@10",
        "novelty@10",
        "popularity_percentile@10",
        "creator_gini@10",
        "gauc",
        "replay_skip_rate@10",
    ):
        assert key in row
    assert "ild_tags@1" not in row  # undefined for one item
    assert "ild_tags@20" not in row  # beyond pairwise_max_k


def test_oracle_ideal_from_a_catalogue_sample() -> None:
    # 80 videos but a 12-draw sample: the ideal list comes from the sample plus the list
    rep = _run("oracle", [IdealRecommender(), AntiIdeal(name="anti")], oracle_ideal_sample=12)
    assert rep.metrics["ideal"]["ndcg@10"] == pytest.approx(1.0)
    assert 0.0 < rep.metrics["anti"]["ndcg@10"] < 0.5


def test_no_evaluable_user_is_bad_input() -> None:
    ev, videos, users = checkerboard()
    everyone_skips = ev.with_columns(pl.lit(True).alias(S.SKIPPED))
    for protocol in ("temporal", "loo-full"):
        with pytest.raises(S.BadInput, match=f"no user can be evaluated under .*{protocol}"):
            evaluate(
                everyone_skips,
                videos,
                users,
                [MostPopular()],
                EvalConfig(protocol=protocol, ks=KS),
                progress=False,
            )
