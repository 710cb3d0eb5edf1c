"""Full-text search in every language, on SQLite (FTS5) and PostgreSQL: Chinese and Japanese
(no spaces between words), German (umlauts), Russian (Cyrillic); words that match nothing find
nothing, through ``search`` (with and without a spec) and ``list``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config

import learndock.market
from learndock.market import Market
from learndock.search.text import query_terms
from market_helpers import (
    BACKENDS,
    backend_market,
    class_rows,
    digits_package,
    user_spec,
)

pytest_plugins = ["market_helpers"]

#: key -> (classes, title, description, license)
LEARNWARES = {
    "zh": ((0, 1, 2), "天气预报", "天气预报模型：根据历史数据预测明天的降雨概率。", "MIT"),
    "ja": ((2, 3, 4), "手書き数字", "手書き数字の認識モデルです。", "MIT"),
    "de": ((5, 6), "Geburtenzählung", "Tägliche Geburtenzählung für bayerische Krankenhäuser.",
           "MIT"),
    "ru": ((7, 8, 9), "Прогноз погоды", "Прогноз погоды для Москвы и Санкт-Петербурга.",
           "Apache-2.0"),
    "en": ((1, 4, 7), "digit reader", "Recognises handwritten digits one, four and seven.",
           "MIT"),
}


def _package(w: Path, key: str) -> Path:
    classes, title, description, lic = LEARNWARES[key]
    return digits_package(w, classes, name=f"fulltext-{key}", title=title,
                          description=description, license=lic)


@pytest.fixture(scope="module", params=BACKENDS)
def tmarket(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(market, backend, ids by key) with one learnware per language."""
    w = tmp_path_factory.mktemp(f"fulltext-{request.param}")
    with backend_market(request.param, w / "home") as m:
        ids = {}
        for key in LEARNWARES:
            r = m.add(_package(w, key))
            assert r.accepted, r.report.text()
            ids[key] = r.learnware_id
        yield m, request.param, ids


def _text_ids(m: Market, text: str, **tags: object) -> list[str]:
    return [s.learnware_id for s in m.search({"text": text, **tags}, top_k=100).single]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("天气预报", {"zh"}),  # the start of a run of characters
        ("降雨", {"zh"}),  # the middle of one
        ("明天会下雨吗？降雨概率", {"zh"}),  # a question: its runs are phrases, OR-ed
        ("手書き", {"ja"}),
        ("Geburtenzählung", {"de"}),
        ("GEBURTENZÄHLUNG", {"de"}),
        ("krankenhäuser", {"de"}),
        ("Прогноз погоды", {"ru"}),
        ("МОСКВЫ", {"ru"}),
        ("handwritten digits", {"en"}),
        ("天气预报 Geburtenzählung погоды", {"zh", "de", "ru"}),
    ],
)
def test_words_of_every_language_find_their_learnware(tmarket, text: str, expected: set) -> None:
    m, _, ids = tmarket
    res = m.search({"text": text})
    found = [s.learnware_id for s in res.single]
    assert set(found) == {ids[k] for k in expected}, (text, res.explanation)
    assert all(s.text_rank is not None and s.text_rank > 0 for s in res.single)
    assert {i.id for i in m.list({"text": text}).items} == set(found)


def test_accents_are_folded_on_sqlite(tmarket) -> None:
    m, backend, ids = tmarket
    if backend != "sqlite":
        pytest.skip("PostgreSQL's 'simple' configuration keeps accents (no unaccent extension)")
    assert _text_ids(m, "geburtenzahlung") == [ids["de"]]
    assert _text_ids(m, "Krankenhauser") == [ids["de"]]


@pytest.mark.parametrize("text", ["xyzzyqwv", "Flugzeugträger", "龘靐齉", "самолёт"])
def test_words_that_match_nothing_find_nothing(tmarket, text: str) -> None:
    m, _, _ = tmarket
    res = m.search({"text": text})
    assert res.single == [] and res.mixture is None and res.learnware_ids == []
    assert any("no learnware matched the words" in line for line in res.explanation), (
        res.explanation)
    page = m.list({"text": text})
    assert page.items == [] and page.total == 0
    # with a spec: the words still decide that nothing fits
    X, _ = class_rows((5, 6), train=False)
    res = m.search({"text": text}, spec=user_spec(X))
    assert res.single == [] and res.mixture is None
    assert any("no learnware matched the words" in line for line in res.explanation)
    json.dumps(res.to_dict(), allow_nan=False)


def test_words_filtered_out_by_tags_find_nothing(tmarket) -> None:
    m, _, ids = tmarket
    # the only Apache-2.0 learnware is the Russian one, which does not mention births
    assert _text_ids(m, "Geburtenzählung", license="Apache-2.0") == []
    assert _text_ids(m, "погоды", license="Apache-2.0") == [ids["ru"]]
    assert m.list({"text": "Geburtenzählung", "license": "Apache-2.0"}).total == 0


def test_a_query_without_searchable_words_does_not_filter(tmarket) -> None:
    m, _, ids = tmarket
    res = m.search({"text": "the of a"}, top_k=100)
    assert {s.learnware_id for s in res.single} == set(ids.values())
    assert any("no searchable words" in line for line in res.explanation)


def test_query_terms_split_unspaced_scripts_and_fold_case() -> None:
    assert query_terms("天气预报") == ["天 气 预 报"]
    assert query_terms("Straße") == ["straße", "strasse"]
    assert query_terms("हिन्दी समाचार") == ["हिन्दी", "समाचार"]  # vowel signs stay in the word
    assert query_terms("the data of a") == []
    assert query_terms('"; DROP TABLE learnwares; --') == ["drop", "table", "learnwares"]


def _alembic(m: Market, op: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location",
                        str(Path(learndock.market.__file__).parent / "migrations"))
    with m.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, op)(cfg, revision)


def test_migration_0002_reindexes_an_existing_market(
    market: Market, market_home: Path, db_url: str | None, tmp_path: Path
) -> None:
    zh = market.add(_package(tmp_path, "zh")).learnware_id
    de = market.add(_package(tmp_path, "de")).learnware_id
    _alembic(market, "downgrade", "0001")  # the index as 0001 built it
    if db_url is None:
        db = sqlite3.connect(market_home / "market.db")
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'learnware_fts'").fetchone()
        db.close()
        assert "porter" in sql
    with Market(market_home, database_url=db_url) as again:  # opening migrates to head
        assert _text_ids(again, "降雨") == [zh]
        assert _text_ids(again, "Geburtenzählung") == [de]
        assert _text_ids(again, "Прогноз") == []
    if db_url is None:
        db = sqlite3.connect(market_home / "market.db")
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'learnware_fts'").fetchone()
        db.close()
        assert "remove_diacritics 2" in sql
