"""The same package content is not published twice by accident."""

from __future__ import annotations

from pathlib import Path

import pytest

from learndock.errors import DuplicateError
from learndock.market import Market
from market_helpers import row_counts
from server_helpers import LiveServer, error_of

pytest_plugins = ["market_helpers"]


def test_local_add_returns_the_existing_learnware_refuses_or_allows(
        market: Market, digits_zips: dict) -> None:
    zip_ = digits_zips[(5, 6)]
    first = market.add(zip_)
    before = row_counts(market)
    again = market.add(zip_)
    assert again.learnware_id == first.learnware_id and again.version == first.version
    notes = [i.message for i in again.report.items if i.name == "duplicate"]
    assert notes and first.learnware_id in notes[0] and "nothing new was stored" in notes[0]
    assert row_counts(market) == before and len(market) == 1
    with pytest.raises(DuplicateError, match=first.learnware_id) as info:
        market.add(zip_, duplicates="refuse")
    assert info.value.learnware_id == first.learnware_id and info.value.version == 1
    with pytest.raises(DuplicateError):
        market.submit(zip_, duplicates="refuse")
    assert row_counts(market) == before
    third = market.add(zip_, duplicates="allow")
    assert third.learnware_id != first.learnware_id and len(market) == 2
    with pytest.raises(ValueError, match="duplicates must be"):
        market.add(zip_, duplicates="sometimes")


def test_a_deleted_learnwares_content_can_be_published_again(
        market: Market, digits_zips: dict) -> None:
    first = market.add(digits_zips[(7, 8, 9)])
    market.delete(first.learnware_id)
    again = market.add(digits_zips[(7, 8, 9)], duplicates="refuse")
    assert again.accepted and again.learnware_id != first.learnware_id


@pytest.mark.integration
def test_dock_answers_409_naming_the_existing_learnware(tmp_path: Path,
                                                        digits_zips: dict) -> None:
    with LiveServer(tmp_path / "dock", duplicates="refuse") as srv:
        owner, _ = srv.account()
        sub = owner.upload(digits_zips[(0, 1, 2)])
        with srv.http(owner.token) as h:
            r = h.post("/learnwares", files={"file": ("p.zip", digits_zips[(0, 1, 2)].read_bytes(),
                                                      "application/zip")})
        assert r.status_code == 409, r.text
        err = error_of(r)
        assert err["code"] == "duplicate" and sub.learnware_id in err["message"]
        assert err["details"] == {"learnware_id": sub.learnware_id, "version": 1}
