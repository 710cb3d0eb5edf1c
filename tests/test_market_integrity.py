"""Blob integrity: a stored package whose bytes change on disk is never handed out.

``load``, ``download`` and ``package_path`` re-hash the blob and raise ``BlobIntegrityError``
(naming the learnware and version) on a mismatch; ``verify`` lists every tampered blob; intact
packages keep working.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learndock.errors import MarketError
from learndock.market import BlobIntegrityError, Market
from learndock.package import package_digest
from market_helpers import class_rows, digits_package

pytest_plugins = ["market_helpers"]


def _blob(home: Path, sha: str) -> Path:
    return home / "blobs" / sha[:2] / sha[2:4] / sha


def test_tampered_blob_is_refused_and_reported(
    market: Market, digits_zips: dict, market_home: Path, tmp_path: Path
) -> None:
    victim = market.add(digits_zips[(5, 6)])
    other = market.add(digits_zips[(7, 8, 9)])
    assert market.verify() == []
    # Swap in another valid package: it would load and predict -- the wrong model.
    _blob(market_home, victim.package_sha256).write_bytes(
        _blob(market_home, other.package_sha256).read_bytes()
    )

    lid = victim.learnware_id
    with pytest.raises(BlobIntegrityError) as err:
        market.load(lid)
    assert isinstance(err.value, MarketError)
    assert lid in str(err.value) and "version 1" in str(err.value)
    assert (err.value.learnware_id, err.value.version) == (lid, 1)
    assert err.value.expected == victim.package_sha256
    assert err.value.actual == other.package_sha256

    dest = tmp_path / "victim.zip"
    with pytest.raises(BlobIntegrityError, match=lid):
        market.download(lid, dest)
    assert not dest.exists() and list(tmp_path.glob("*.part")) == []
    assert market.get(lid).download_count == 0
    with pytest.raises(BlobIntegrityError, match=lid):
        market.package_path(lid)

    problems = market.verify()
    assert len(problems) == 1, problems
    assert lid in problems[0] and "tampered" in problems[0]
    assert other.learnware_id not in problems[0]

    # the intact learnware still loads, predicts and downloads
    with market.load(other.learnware_id) as lw:
        X, y = class_rows((7, 8, 9), train=False)
        assert np.mean(lw.predict(X) == y) > 0.8
    out = market.download(other.learnware_id, tmp_path / "other.zip")
    assert package_digest(out) == package_digest(digits_zips[(7, 8, 9)])
    assert market.package_path(other.learnware_id) == _blob(market_home, other.package_sha256)


def test_a_corrupt_old_version_does_not_block_the_current_one(
    market: Market, digits_zips: dict, market_home: Path, tmp_path: Path
) -> None:
    v1 = market.add(digits_zips[(5, 6)])
    v2_zip = digits_package(tmp_path, (5, 6), version="1.1.0", description="Retrained.")
    v2 = market.update(v1.learnware_id, v2_zip)
    blob = _blob(market_home, v1.package_sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    blob.write_bytes(bytes(data))

    lid = v1.learnware_id
    with market.load(lid) as lw:  # current version: version 2, intact
        assert lw.version == "1.1.0"
    with pytest.raises(BlobIntegrityError, match="version 1"):
        market.load(lid, version=1)
    with pytest.raises(BlobIntegrityError, match="version 1"):
        market.download(lid, tmp_path / "v1.zip", version=1)
    assert market.download(lid, tmp_path / "v2.zip", version=2).exists()
    problems = market.verify()
    assert len(problems) == 1 and lid in problems[0] and "version 1" in problems[0], problems
    assert v2.package_sha256 not in problems[0]
