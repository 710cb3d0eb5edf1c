"""Market store round-trips (add / update / versions / download / delete / list) on SQLite and
on the real PostgreSQL server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from learndock.errors import MarketError, NotFoundError
from learndock.market import Market
from learndock.market.blobstore import sha256_file
from learndock.package import package_digest
from market_helpers import (
    DIGIT_SETS,
    blob_files,
    class_rows,
    digits_package,
    referenced_blobs,
    row_counts,
    search_ids,
    user_spec,
    wrong_labels_package,
)

pytest_plugins = ["market_helpers"]

HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def v2_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1.1.0 of the (5, 6) learnware: same name, new description and semver."""
    return digits_package(
        tmp_path_factory.mktemp("v2"), (5, 6), version="1.1.0",
        description="Recognises handwritten fives and sixes, retrained.",
    )


def test_add_get_and_random_ids(market: Market, digits_zips: dict, market_home: Path) -> None:
    results = [market.add(digits_zips[s], owner="alice") for s in DIGIT_SETS[:3]]
    ids = [r.learnware_id for r in results]
    assert all(r.accepted and r.version == 1 for r in results), [r.report.text() for r in results]
    assert all(HEX16.match(i) for i in ids)
    assert len(set(ids)) == 3
    # Random, not counters: no two ids are numerically adjacent or share a long prefix.
    nums = sorted(int(i, 16) for i in ids)
    assert all(b - a > 1_000_000 for a, b in zip(nums, nums[1:], strict=False))
    assert len({i[:8] for i in ids}) == 3
    assert len(market) == 3

    info = market.get(ids[0])
    assert info.id == ids[0]
    assert info.name == "digits-012"
    assert info.owner == "alice"
    assert info.status == "accepted"
    assert (info.current_version, info.latest_version) == (1, 1)
    assert info.semantic.task_type.value == "Classification"
    assert info.island is not None and info.island.startswith("table:d64:")
    assert info.download_count == 0

    vs = market.versions(ids[0])
    assert [(v.number, v.semver, v.status, v.available) for v in vs] == [
        (1, "1.0.0", "accepted", True)
    ]
    assert vs[0].package_sha256 == results[0].package_sha256
    assert vs[0].package_sha256 in blob_files(market_home)

    # delete then add again: a fresh id that collides with nothing seen before
    market.delete(ids[1])
    again = market.add(digits_zips[DIGIT_SETS[1]])
    assert again.accepted and HEX16.match(again.learnware_id)
    assert again.learnware_id not in ids
    assert len(market) == 3
    assert market.verify() == []


def test_get_unknown_raises(market: Market) -> None:
    with pytest.raises(NotFoundError):
        market.get("0123456789abcdef")
    with pytest.raises(NotFoundError):
        market.versions("0123456789abcdef")
    with pytest.raises(NotFoundError):
        market.delete("0123456789abcdef")


def test_update_keeps_old_versions_downloadable(
    market: Market, digits_zips: dict, v2_zip: Path, tmp_path: Path
) -> None:
    v1_zip = digits_zips[(5, 6)]
    lid = market.add(v1_zip).learnware_id
    r2 = market.update(lid, v2_zip)
    assert (r2.learnware_id, r2.version, r2.status) == (lid, 2, "accepted")

    info = market.get(lid)
    assert (info.current_version, info.latest_version) == (2, 2)
    assert info.semantic.description == "Recognises handwritten fives and sixes, retrained."
    vs = market.versions(lid)
    assert [(v.number, v.semver, v.available) for v in vs] == [(1, "1.0.0", True), (2, "1.1.0", True)]
    assert vs[0].package_sha256 != vs[1].package_sha256

    d1 = market.download(lid, tmp_path / "v1.zip", version=1)
    d2 = market.download(lid, tmp_path / "v2.zip", version=2)
    dcur = market.download(lid, tmp_path / "cur.zip")
    assert package_digest(d1) == package_digest(v1_zip)
    assert package_digest(d2) == package_digest(v2_zip)
    assert package_digest(dcur) == package_digest(v2_zip)
    assert sha256_file(d1)[0] == vs[0].package_sha256
    assert market.get(lid).download_count == 3
    with pytest.raises(NotFoundError):
        market.download(lid, tmp_path / "v3.zip", version=3)
    assert market.get(lid).download_count == 3

    # still one learnware, found once by search, at its new version
    assert len(market) == 1
    X, _ = class_rows((5, 6), train=False)
    res = market.search(spec=user_spec(X))
    assert [(s.learnware_id, s.version) for s in res.single] == [(lid, 2)]
    with pytest.raises(NotFoundError):
        market.update("0123456789abcdef", v2_zip)
    assert market.verify() == []


def test_delete_hides_and_releases_unshared_blobs(
    market: Market, digits_zips: dict, v2_zip: Path, market_home: Path, tmp_path: Path
) -> None:
    shared_zip = digits_zips[(5, 6)]
    a = market.add(shared_zip).learnware_id
    b = market.add(shared_zip, duplicates="allow").learnware_id  # a second copy, one blob
    assert a != b
    market.update(a, v2_zip)
    other = market.add(digits_zips[(7, 8, 9)]).learnware_id
    shared_sha = market.versions(b)[0].package_sha256
    a_v2_sha = market.versions(a)[1].package_sha256
    assert market.versions(a)[0].package_sha256 == shared_sha
    assert {shared_sha, a_v2_sha} <= blob_files(market_home)
    assert len(market) == 3

    market.delete(a)

    with pytest.raises(NotFoundError):
        market.get(a)
    with pytest.raises(NotFoundError):
        market.versions(a)
    with pytest.raises(NotFoundError):
        market.download(a, tmp_path / "a.zip", version=1)
    with pytest.raises(NotFoundError):
        market.update(a, v2_zip)
    with pytest.raises(NotFoundError):
        market.delete(a)
    assert len(market) == 2
    assert {i.id for i in market.list().items} == {b, other}
    assert a not in {i.id for i in market.list(include_rejected=True).items}
    X, _ = class_rows((5, 6), train=False)
    assert set(search_ids(market, spec=user_spec(X))) == {b, other}
    assert a not in search_ids(market, {"text": "fives sixes handwritten digits"})
    assert a not in search_ids(market)

    # a's own blob is gone, the blob it shared with b survives and b still downloads
    files = blob_files(market_home)
    assert a_v2_sha not in files
    assert shared_sha in files
    assert files == referenced_blobs(market)
    out = market.download(b, tmp_path / "b.zip")
    assert package_digest(out) == package_digest(shared_zip)
    assert market.verify() == []

    market.delete(b)
    assert shared_sha not in blob_files(market_home)
    assert blob_files(market_home) == referenced_blobs(market)
    assert market.sweep(grace_seconds=0).removed_blobs == []
    assert market.verify() == []
    # the rows stay (soft delete) but no longer reference any blob
    assert row_counts(market, a)["versions"] == 2
    assert not referenced_blobs(market) & {shared_sha, a_v2_sha}


@pytest.fixture(scope="module")
def tagged_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, ...], Path]:
    w = tmp_path_factory.mktemp("tagged")
    tags = {
        (0, 1, 2): {"scenarios": ("Education",), "license": "MIT"},
        (2, 3, 4): {"scenarios": ("Education", "Business"), "license": "Apache-2.0"},
        (5, 6): {"scenarios": ("Health",), "license": "MIT"},
        (7, 8, 9): {"scenarios": ("Business",), "license": "BSD-3-Clause"},
        (1, 4, 7): {"scenarios": ("Health", "Computer"), "license": "MIT"},
    }
    return {classes: digits_package(w, classes, **sem) for classes, sem in tags.items()}


def test_list_filters_and_pagination(market: Market, tagged_zips: dict) -> None:
    ids = {classes: market.add(z).learnware_id for classes, z in tagged_zips.items()}

    # pagination: newest first, pages are disjoint and cover everything
    seen: list[str] = []
    for page in range(3):
        pg = market.list(page=page, page_size=2)
        assert (pg.total, pg.page, pg.page_size) == (5, page, 2)
        assert len(pg.items) == (2 if page < 2 else 1)
        seen += [i.id for i in pg.items]
    assert sorted(seen) == sorted(ids.values())
    assert len(set(seen)) == 5
    created = [market.get(i).created_at for i in seen]
    assert created == sorted(created, reverse=True)
    empty = market.list(page=7, page_size=2)
    assert empty.items == [] and empty.total == 5
    with pytest.raises(MarketError):
        market.list(page_size=0)
    with pytest.raises(MarketError):
        market.list(page=-1)

    def listed(q: dict) -> set[str]:
        return {i.id for i in market.list(q).items}

    assert listed({"scenarios": ["Health"]}) == {ids[(5, 6)], ids[(1, 4, 7)]}
    assert listed({"scenarios": ["Business", "Computer"]}) == {
        ids[(2, 3, 4)], ids[(7, 8, 9)], ids[(1, 4, 7)]
    }
    assert listed({"license": "MIT"}) == {ids[(0, 1, 2)], ids[(5, 6)], ids[(1, 4, 7)]}
    assert listed({"license": ["Apache-2.0", "BSD-3-Clause"]}) == {ids[(2, 3, 4)], ids[(7, 8, 9)]}
    assert listed({"license": "MIT", "scenarios": ["Health"]}) == {ids[(5, 6)], ids[(1, 4, 7)]}
    assert listed({"task_type": "Regression"}) == set()
    assert len(listed({"data_type": "Table", "task_type": "Classification"})) == 5
    pg = market.list({"scenarios": ["Health", "Education"]}, page=1, page_size=2)
    assert pg.total == 4 and len(pg.items) == 2

    market.delete(ids[(5, 6)])
    assert listed({"scenarios": ["Health"]}) == {ids[(1, 4, 7)]}
    assert market.list().total == 4


def test_download_count_increments(market: Market, digits_zips: dict, tmp_path: Path) -> None:
    lid = market.add(digits_zips[(0, 1, 2)]).learnware_id
    other = market.add(digits_zips[(2, 3, 4)]).learnware_id
    for n in range(1, 4):
        market.download(lid, tmp_path / f"d{n}.zip")
        assert market.get(lid).download_count == n
    assert market.get(other).download_count == 0
    assert {i.id: i.download_count for i in market.list().items} == {lid: 3, other: 0}


def test_reopen_sees_the_same_store(
    market: Market, digits_zips: dict, market_home: Path, db_url: str | None
) -> None:
    lid = market.add(digits_zips[(7, 8, 9)]).learnware_id
    with Market(market_home, database_url=db_url) as again:
        assert again.get(lid).name == "digits-789"
        assert len(again) == 1
        assert again.verify() == []
        X, _ = class_rows((7, 8, 9), train=False)
        assert search_ids(again, spec=user_spec(X)) == [lid]


@pytest.fixture(scope="module")
def bad_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wrong_labels_package(tmp_path_factory.mktemp("bad"))


def test_rejected_versions_and_updates(
    market: Market, digits_zips: dict, bad_zip: Path, tmp_path: Path
) -> None:
    X, _ = class_rows((5, 6), train=False)
    spec = user_spec(X)

    # accepted v1, rejected v2: v1 stays current and searchable, v2 is kept with its report
    good = market.add(digits_zips[(5, 6)]).learnware_id
    r = market.update(good, bad_zip)
    assert (r.version, r.status) == (2, "rejected")
    info = market.get(good)
    assert (info.status, info.current_version, info.latest_version) == ("accepted", 1, 2)
    assert [(v.number, v.status) for v in market.versions(good)] == [
        (1, "accepted"), (2, "rejected")
    ]
    assert search_ids(market, spec=spec) == [good]
    out = market.download(good, tmp_path / "cur.zip")
    assert package_digest(out) == package_digest(digits_zips[(5, 6)])

    # rejected v1 (stored, invisible), then an accepted v2 makes it a searchable learnware
    bad = market.add(bad_zip)
    assert bad.status == "rejected"
    assert market.get(bad.learnware_id).current_version is None
    assert len(market) == 1
    assert market.list(include_rejected=True).total == 2
    with pytest.raises(NotFoundError):
        market.download(bad.learnware_id, tmp_path / "none.zip")
    r = market.update(bad.learnware_id, digits_zips[(5, 6)])
    assert (r.version, r.status) == (2, "accepted")
    assert market.get(bad.learnware_id).status == "accepted"
    assert len(market) == 2
    assert set(search_ids(market, spec=spec)) == {good, bad.learnware_id}
    assert market.verify() == []
