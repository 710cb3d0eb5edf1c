"""The search endpoint across feature spaces (issue #17): the query's input_descriptions and
target_description go in, typed cross_island results come out (raw JSON and ``Client``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hetero_helpers import TARGET, two_island_dock, user_data, user_spec
from server_helpers import LiveServer, error_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from two_island_dock(tmp_path_factory.mktemp("hetero-dock"))


def test_search_returns_cross_island_results(srv: LiveServer) -> None:
    _, _, descs = user_data()
    spec = user_spec()
    query = {"input_descriptions": descs, "target_description": TARGET}
    res = srv.client().search(query, spec=spec)
    assert res.single == []
    assert {c.name for c in res.cross_island} == {"dia-a", "dia-b"}
    best = res.cross_island[0]
    assert best.cross_island and 0 < best.score <= 1 and best.verdict == "good match"
    assert best.map_version == 1 and best.bridge["map_version"] == 1
    assert best.shared_features == len(best.bridge["pairs"]) and best.input_dimension == 7
    with srv.http() as h:
        r = h.post("/search", json={"query": query, "spec": spec.to_dict()})
        assert r.status_code == 200
        body = r.json()
        assert [c["learnware_id"] for c in body["cross_island"]] == \
            [c.learnware_id for c in res.cross_island]
        c = body["cross_island"][0]
        assert set(c) >= {"learnware_id", "name", "version", "island", "score", "verdict",
                          "similarity", "coverage", "shared_features", "input_dimension",
                          "map_version", "bridge", "notes", "cross_island"}
        assert set(c["bridge"]["pairs"][0]) == {"source", "target", "feature", "scale",
                                                "shift", "confidence"}
        assert any(line.startswith("cross-island:") for line in body["explanation"])
        # Without descriptions: the old answer, an empty cross_island list.
        r = h.post("/search", json={"spec": spec.to_dict()})
        assert r.status_code == 200 and r.json()["cross_island"] == []
        # Validated like every query field.
        r = h.post("/search", json={"query": {"input_descriptions": ["", "x"]},
                                    "spec": spec.to_dict()})
        assert r.status_code == 422 and "input descriptions" in error_of(r)["message"]
        schema = h.get("/openapi.json").json()["components"]["schemas"]
        assert "CrossIslandOut" in schema and "BridgeOut" in schema
        assert schema["SearchResponse"]["properties"]["cross_island"]["type"] == "array"
