"""Text specs on real BBC News articles: the MiniLM encoder and its cache, round trips,
encoder-mismatch refusal, and market search + reuse with TF-IDF + naive Bayes learnwares.

``tests/data/bbc_minilm.npz`` holds MiniLM embeddings of 260 fixed articles (200 from the
train split, 60 from the test split). They seed the embedding cache, so only one test runs the
real encoder -- and it checks the cached vectors are what the encoder produces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline

from learndock.datasets import bbc_news
from learndock.errors import EncoderMismatchError, SpecError
from learndock.market import Market
from learndock.package import pack, write_package
from learndock.reuse import AveragingReuser, EnsemblePruningReuser, FeatureAugmentReuser
from learndock.spec import MiniLMEncoder, RKMETextSpec, load_stat_spec
from learndock.spec.encoders import EmbeddingCache

FIXTURE = Path(__file__).parent / "data" / "bbc_minilm.npz"
SUBSETS = [(0, 1, 2), (0, 3, 4), (1, 2, 3)]
USERS = {(0, 1): (0, 1, 2), (3, 4): (0, 3, 4), (2, 3): (1, 2, 3)}
K = 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(texts, labels, is_train, home): the fixture articles, with a seeded embedding cache
    under ``home`` (LEARNDOCK_HOME points there for the module)."""
    data = np.load(FIXTURE)
    texts_all, _ = bbc_news.load()
    texts = [texts_all[i] for i in data["index"]]
    home = tmp_path_factory.mktemp("text-home")
    enc = MiniLMEncoder(cache=False)
    assert str(data["encoder"]) == enc.identity, "the MiniLM weights changed: rebuild the fixture"
    cache = EmbeddingCache(home / "cache" / "embeddings.sqlite3")
    cache.put_many(enc.identity, {EmbeddingCache.digest(t): e.astype(np.float32)
                                  for t, e in zip(texts, data["embedding"], strict=True)})
    cache.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEARNDOCK_HOME", str(home))
        yield texts, data["label"], data["split"] == 0, home


def subset(corpus, topics, train: bool) -> tuple[np.ndarray, np.ndarray]:
    texts, y, is_train, _ = corpus
    m = np.isin(y, topics) & (is_train if train else ~is_train)
    return np.asarray(texts, dtype=object)[m], y[m]


def cached_encoder(corpus) -> MiniLMEncoder:
    enc = MiniLMEncoder(cache=corpus[3] / "cache" / "embeddings.sqlite3")
    enc._model = _no_model  # type: ignore[method-assign]  # every text must come from the cache
    return enc


def _no_model():
    raise AssertionError("the encoder ran although every text is cached")


def text_spec(corpus, X, **kw) -> RKMETextSpec:
    return RKMETextSpec.fit(X, K, encoder=cached_encoder(corpus), max_iter=5, **kw)


def test_cached_embeddings_are_what_the_encoder_produces(corpus) -> None:
    texts, *_ = corpus
    fresh = MiniLMEncoder(cache=False, device="cpu").encode(texts[:3])
    cached = cached_encoder(corpus).encode(texts[:3])
    assert fresh.shape == (3, 384)
    cos = np.sum(fresh * cached, axis=1)
    assert np.all(cos > 0.999), cos


def test_cache_is_content_addressed(corpus, tmp_path) -> None:
    texts, *_ = corpus
    enc = cached_encoder(corpus)
    a = enc.encode([texts[0], texts[1], texts[0]])
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.allclose(a[0], a[1])
    # a corrupt cache file is replaced, not trusted
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database" * 100)
    c = EmbeddingCache(bad)
    assert c.get_many("x", ["y"]) == {}
    c.close()


def test_text_input_validation(corpus) -> None:
    enc = cached_encoder(corpus)
    with pytest.raises(SpecError, match="not a single string"):
        enc.encode("just one string")
    with pytest.raises(SpecError, match="must all be strings"):
        enc.encode(["ok", 3])
    with pytest.raises(SpecError, match="no texts"):
        enc.encode([])


def test_text_spec_round_trips_and_records_the_encoder(corpus, tmp_path) -> None:
    X, _ = subset(corpus, (0, 1, 2), train=True)
    s = text_spec(corpus, X)
    assert s.type_name == "rkme-text" and s.dimension == 384
    assert s.encoder["name"] == "all-MiniLM-L6-v2"
    assert len(s.encoder["config"]["weights_sha256"]) == 64
    assert text_spec(corpus, X).fingerprint() == s.fingerprint()
    back = load_stat_spec(s.save(tmp_path / "t.json"))
    assert isinstance(back, RKMETextSpec) and back.fingerprint() == s.fingerprint()


def test_specs_from_another_encoder_are_refused(corpus) -> None:
    X, _ = subset(corpus, (0, 1, 2), train=True)
    s = text_spec(corpus, X)
    foreign = RKMETextSpec(s.z, s.beta, s.kernel, encoder={**s.encoder, "id": "other-encoder:00"})
    with pytest.raises(EncoderMismatchError):
        s.mmd2(foreign)
    with pytest.raises(SpecError, match="not the one this spec was built with"):
        foreign.encode(["hello"])


def _text_learnware(corpus, work: Path, topics: tuple[int, ...]) -> Path:
    X, y = subset(corpus, topics, train=True)
    model = make_pipeline(TfidfVectorizer(sublinear_tf=True, min_df=2), MultinomialNB(alpha=0.1))
    model.fit(list(X), y)
    name = "bbc-" + "-".join(bbc_news.TOPICS[t] for t in topics)
    d = work / name
    write_package(d, model, name=name, spec=text_spec(corpus, X),
                  semantic={"name": name, "description": f"BBC topics {topics}",
                            "data_type": "Text", "task_type": "Classification",
                            "library_type": "Scikit-learn", "scenarios": ["Entertainment"],
                            "license": "MIT",
                            "output": {"dimension": 3, "descriptions": {
                                i: bbc_news.TOPICS[t] for i, t in enumerate(topics)}}})
    pack(d, work / f"{name}.zip")
    return work / f"{name}.zip"


@pytest.fixture(scope="module")
def text_market(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("text-market")
    with Market(work / "home") as m:
        ids = {}
        for topics in SUBSETS:
            r = m.add(_text_learnware(corpus, work, topics))
            assert r.accepted, r.report.text()
            ids[topics] = r.learnware_id
        yield m, ids


@pytest.mark.parametrize("user", list(USERS), ids=lambda u: f"{u[0]}{u[1]}")
def test_user_finds_the_learnware_that_covers_its_topics(corpus, text_market, user) -> None:
    m, ids = text_market
    X, _ = subset(corpus, user, train=False)
    res = m.search(spec=text_spec(corpus, X))
    assert res.best is not None and res.best.learnware_id == ids[USERS[user]]
    assert res.single[0].island.startswith("text:d384:")


def test_market_refuses_a_spec_from_another_encoder(corpus, text_market) -> None:
    m, _ = text_market
    X, _ = subset(corpus, (0, 1), train=False)
    s = text_spec(corpus, X)
    foreign = RKMETextSpec(s.z, s.beta, s.kernel, encoder={**s.encoder, "id": "other-encoder:00"})
    res = m.search(spec=foreign)
    assert res.single == [] and res.mixture is None
    assert any("refused" in e and "other-encoder:00" in e for e in res.explanation)
    (island,) = [i for i in m.islands() if i.data_type == "Text"]
    assert island.encoder == s.encoder_id


def test_reusers_work_on_texts(corpus, text_market) -> None:
    m, ids = text_market
    X, y = subset(corpus, (0, 1, 3, 4), train=False)
    lws = [m.load(ids[(0, 1, 2)]), m.load(ids[(0, 3, 4)])]
    assert AveragingReuser(lws).fit(X).score(X, y) > 0.8
    rng = np.random.default_rng(0)
    few = rng.choice(len(X), 24, replace=False)
    rest = np.setdiff1d(np.arange(len(X)), few)
    assert EnsemblePruningReuser(lws).fit(X[few], y[few]).score(X[rest], y[rest]) > 0.8
    fa = FeatureAugmentReuser(lws).fit(X[few], y[few])  # user features: cached MiniLM vectors
    assert fa.score(X[rest], y[rest]) > 0.8
    assert lws[0].predict(list(X[:3])).shape == (3,)


def test_cli_spec_text(corpus, tmp_path) -> None:
    texts, y, is_train, home = corpus
    csv = tmp_path / "mine.csv"
    import pandas as pd

    pd.DataFrame({"id": range(30), "text": texts[:30]}).to_csv(csv, index=False)
    out = tmp_path / "spec.json"
    env = {**os.environ, "LEARNDOCK_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "learndock.cli.main", "spec", "text", str(csv), "-o", str(out),
         "-k", "5", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["type"] == "rkme-text" and info["n_samples"] == 30 and info["n_points"] == 5
    assert isinstance(load_stat_spec(out), RKMETextSpec)
    bad = subprocess.run(
        [sys.executable, "-m", "learndock.cli.main", "spec", "text", str(tmp_path / "no.txt"),
         "-o", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "not found" in bad.stderr + bad.stdout
