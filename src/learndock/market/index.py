"""The island index: each island's random-feature vectors, kept current without reloading.

One :class:`IslandView` per island and kernel version holds the random-feature vector of every
searchable spec (current version of a live learnware), its learnware id and its tags. Small
islands keep the vectors in a numpy matrix and rank them exactly; from ``ann_min_rows`` specs
on, the vectors live in a usearch HNSW graph (approximate nearest neighbours, optionally
quantised to f16 / i8), persisted under ``<home>/index/`` and reopened on the next start.

Keeping current: every write that changes what an island serves appends to ``change_log``
(``add``/``remove`` of spec rows, a monotonically increasing ``seq``) in the same transaction,
after locking the island's row (its ``generation`` moves), so within one island the log's order
is the commit order. A view remembers the last ``seq`` it applied; a search that sees a new
generation applies only the newer log entries (idempotently), so a process never reloads an
island after a write, and every process on every machine that shares the database sees a
write from the first search that starts after it commits. A kernel revision (a new
``kernel_version``) rebuilds the view from the database.

Tag filters are applied here, on the view's own tag columns, before and during the nearest
neighbour stage (no fetch of the matching ids per query): small filtered sets are ranked
exactly, large ones through the graph with over-fetching.

It lives in the market, not in :mod:`learndock.search`, because it reads the market's tables;
the search pipeline sees it only through :class:`learndock.search.pipeline.VectorIndex`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, RowMapping

from learndock.market import schema as t
from learndock.search.query import has_tag_filters
from learndock.search.statistical import Candidate, Nearest, prefilter
from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures
from learndock.spec.semantic import SemanticQuery

log = logging.getLogger(__name__)

#: From this many searchable specs on, an island's vectors go into an HNSW graph.
ANN_MIN_ROWS = 20_000
#: Filtered sets (or islands) at most this large are ranked exactly, not through the graph.
EXACT_MAX_ROWS = 20_000
#: HNSW graph degree and build/search breadth (usearch's connectivity / expansion_*).
ANN_CONNECTIVITY = 16
ANN_EXPANSION_ADD = 128
ANN_EXPANSION_SEARCH = 256
#: A graph with more than this many nodes per live row (removed rows are tombstones) is
#: rebuilt from the database on its next use.
TOMBSTONE_REBUILD = 2.0
#: Tag columns kept per spec (coded as small ints) for filtering inside the index.
_CODED = ("task_type", "library_type", "license")


class _Grow:
    """An append-only numpy buffer with amortised O(1) appends (capacity doubles)."""

    def __init__(self, dtype: Any, width: int | None = None, values: np.ndarray | None = None
                 ) -> None:
        shape = (0,) if width is None else (0, width)
        if values is None:
            self._buf = np.empty(shape, dtype=dtype)
        else:  # restored columns get room to grow: the first write after a reopen copies
            n = values.shape[0]  # nothing (a doubling of 10^6 rows took ~20 ms)
            self._buf = np.empty((n + max(64, n // 8), *values.shape[1:]), dtype=values.dtype)
            self._buf[:n] = values
        self.n = values.shape[0] if values is not None else 0

    def append(self, values: np.ndarray) -> None:
        m = values.shape[0]
        if self.n + m > self._buf.shape[0]:
            cap = max(self.n + m, 2 * self._buf.shape[0], 64)
            new = np.empty((cap, *self._buf.shape[1:]), dtype=self._buf.dtype)
            new[: self.n] = self._buf[: self.n]
            self._buf = new
        self._buf[self.n : self.n + m] = values
        self.n += m

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self.n]


@dataclass
class _Rows:
    """New rows for a view: spec row ids, learnware ids, tags and (float32) vectors."""

    ids: np.ndarray
    learnware_ids: np.ndarray
    tags: dict[str, list[Any]]
    vectors: np.ndarray


@dataclass
class IslandView:
    """One island under one kernel version, as the nearest-neighbour stage sees it."""

    key: str
    kernel_version: int
    kernel: GaussianKernel
    rff_map: RandomFourierFeatures
    dimension: int  # the island's input dimension (queries on another one match nothing)
    generation: int = -1
    last_seq: int = 0
    ann_min_rows: int = ANN_MIN_ROWS
    ann_dtype: str = "f32"
    ids: _Grow = field(default_factory=lambda: _Grow(np.int64))
    lw_ids: _Grow = field(default_factory=lambda: _Grow(object))
    alive: _Grow = field(default_factory=lambda: _Grow(bool))
    codes: dict[str, _Grow] = field(default_factory=lambda: {c: _Grow(np.int16) for c in _CODED})
    vocab: dict[str, dict[str, int]] = field(default_factory=lambda: {c: {} for c in _CODED})
    scenario_mask: _Grow = field(default_factory=lambda: _Grow(np.int64))
    output_dimension: _Grow = field(default_factory=lambda: _Grow(np.int32))
    vectors: _Grow | None = None  # exact mode: (n, rff_dim) float32
    ann: Any = None  # usearch Index, from ann_min_rows live rows on
    n_alive: int = 0
    dirty: bool = False  # changed since it was last saved
    #: searches (server threads) and catch-ups take it: a catch-up grows the columns in place
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # ------------------------------------------------------------------ what search reads
    @property
    def size(self) -> int:
        """Searchable specs in the island."""
        return self.n_alive

    @property
    def spec_row_ids(self) -> np.ndarray:
        """Spec row ids of the searchable specs (ascending)."""
        return self.ids.view[self.alive.view]

    @property
    def learnware_ids(self) -> np.ndarray:
        """Learnware ids of the searchable specs, in :attr:`spec_row_ids` order."""
        return self.lw_ids.view[self.alive.view]

    @property
    def rff(self) -> np.ndarray:
        """The searchable specs' vectors, in :attr:`spec_row_ids` order (float32)."""
        if self.vectors is not None:
            return self.vectors.view[self.alive.view]
        return self._ann_vectors(self.spec_row_ids)

    def _ann_vectors(self, keys: np.ndarray) -> np.ndarray:
        if keys.size == 0:
            return np.zeros((0, self.rff_map.n_components), dtype=np.float32)
        got = self.ann.get(keys, dtype=np.float32)
        return np.asarray(got, dtype=np.float32).reshape(keys.size, -1)

    def mask(self, q: SemanticQuery | None) -> np.ndarray:
        """Which slots pass the query's tag filters (and are alive)."""
        m = self.alive.view.copy()
        if not has_tag_filters(q):
            return m
        assert q is not None
        if q.input_dimension is not None and q.input_dimension != self.dimension:
            return np.zeros_like(m)
        for name in _CODED:
            values = getattr(q, name)
            if values:
                codes = [self.vocab[name][v.value] for v in values if v.value in self.vocab[name]]
                m &= np.isin(self.codes[name].view, np.array(codes, dtype=np.int16))
        if q.scenarios:
            from learndock.market.db import scenario_mask

            m &= (self.scenario_mask.view & scenario_mask(q.scenarios)) != 0
        if q.output_dimension is not None:
            m &= self.output_dimension.view == q.output_dimension
        return m

    def nearest(self, embedding: np.ndarray, k: int, q: SemanticQuery | None) -> Nearest:
        """The ``k`` specs whose vectors are nearest ``embedding`` among those passing the
        query's tag filters: exactly when the set is small or the island has no graph,
        otherwise through the graph, over-fetching by the filter's selectivity."""
        with self.lock:
            return self._nearest(embedding, k, q)

    def _nearest(self, embedding: np.ndarray, k: int, q: SemanticQuery | None) -> Nearest:
        m = self.mask(q)
        n_ok = int(m.sum())
        if n_ok == 0 or k <= 0:
            return Nearest(np.empty(0, dtype=np.int64), n_ok, "exact")
        if self.vectors is not None:
            top = prefilter(self.vectors.view, embedding, m, k)
            return Nearest(self.ids.view[top], n_ok, "exact")
        if n_ok <= EXACT_MAX_ROWS:
            keys = self.ids.view[m]
            top = prefilter(self._ann_vectors(keys), embedding, None, k)
            return Nearest(keys[top], n_ok, "exact")
        # the graph also holds removed rows (tombstones, see remove): they are filtered out
        # like rows a tag filter rejects, with the over-fetch sized by the share kept
        in_graph = len(self.ann)
        filtered = n_ok < in_graph
        count = min(in_graph, math.ceil(k * in_graph / n_ok * 1.25) + 16)
        u = np.asarray(embedding, dtype=np.float32)
        while True:
            self.ann.expansion_search = max(ANN_EXPANSION_SEARCH, count)
            found = self.ann.search(u, count)
            keys = np.asarray(found.keys, dtype=np.int64)
            if filtered:
                pos = np.searchsorted(self.ids.view, keys)
                keys = keys[m[np.clip(pos, 0, self.ids.n - 1)]]
            if keys.size >= k or count >= in_graph:
                return Nearest(keys[:k], n_ok, "ann")
            count = min(in_graph, count * 4)

    # ------------------------------------------------------------------ keeping current
    def add(self, rows: _Rows) -> None:
        """Append rows (ids not already present; ascending, after the last one)."""
        present = self.ids.view
        if present.size and rows.ids.size:
            pos = np.clip(np.searchsorted(present, rows.ids), 0, present.size - 1)
            keep = present[pos] != rows.ids  # a row already here (alive or not) stays as is
            if not keep.all():
                rows = _Rows(rows.ids[keep], rows.learnware_ids[keep],
                             {c: [v for v, k in zip(vs, keep, strict=True) if k]
                              for c, vs in rows.tags.items()}, rows.vectors[keep])
            if rows.ids.size and rows.ids[0] <= present[-1]:
                raise _OutOfOrder
        if rows.ids.size == 0:
            return
        self.ids.append(rows.ids)
        self.lw_ids.append(rows.learnware_ids)
        self.alive.append(np.ones(rows.ids.size, dtype=bool))
        for name in _CODED:
            vocab = self.vocab[name]
            self.codes[name].append(np.array(
                [vocab.setdefault(v, len(vocab)) for v in rows.tags[name]], dtype=np.int16))
        self.scenario_mask.append(np.array(rows.tags["scenario_mask"], dtype=np.int64))
        self.output_dimension.append(np.array(
            [-1 if v is None else int(v) for v in rows.tags["output_dimension"]], dtype=np.int32))
        self.n_alive += int(rows.ids.size)
        if self.vectors is not None:
            self.vectors.append(rows.vectors)
            if self.n_alive >= self.ann_min_rows:
                self._to_ann()
        else:
            self.ann.add(rows.ids, rows.vectors)
        self.dirty = True

    def remove(self, spec_row_ids: np.ndarray) -> None:
        """Mark rows as gone (absent or already removed rows are ignored)."""
        present = self.ids.view
        if present.size == 0 or spec_row_ids.size == 0:
            return
        pos = np.searchsorted(present, spec_row_ids)
        inside = pos < present.size
        pos, wanted = pos[inside], spec_row_ids[inside]
        pos = pos[present[pos] == wanted]
        alive = self.alive.view
        pos = pos[alive[pos]]
        if pos.size == 0:
            return
        alive[pos] = False
        self.n_alive -= int(pos.size)
        # Removed rows stay in the graph as tombstones (the alive mask hides them): usearch
        # reuses a removed node's slot on the next insert, and that insert then costs ~30 ms
        # at 10^6 nodes instead of ~1 ms (measured), on the first search after every write.
        # A graph that is mostly tombstones is rebuilt (TOMBSTONE_REBUILD).
        self.dirty = True

    @property
    def needs_rebuild(self) -> bool:
        """A graph holding more removed rows than live ones is rebuilt from the database."""
        return self.ann is not None and len(self.ann) > TOMBSTONE_REBUILD * max(self.n_alive, 1)

    def _new_ann(self) -> Any:
        from usearch.index import Index

        return Index(ndim=self.rff_map.n_components, metric="l2sq", dtype=self.ann_dtype,
                     connectivity=ANN_CONNECTIVITY, expansion_add=ANN_EXPANSION_ADD,
                     expansion_search=ANN_EXPANSION_SEARCH)

    def start_ann(self) -> None:
        """Switch an empty view to a graph before rows arrive (a build of a large island)."""
        if self.ids.n:
            raise ValueError("start_ann is for an empty view; rows convert with _to_ann")
        self.ann, self.vectors = self._new_ann(), None

    def _to_ann(self) -> None:
        assert self.vectors is not None
        index = self._new_ann()
        keys = self.spec_row_ids
        if keys.size:
            index.add(keys, self.vectors.view[self.alive.view])
        self.ann, self.vectors = index, None

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write the graph and the side columns (atomically: temp files, then rename)."""
        if self.ann is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        base = directory / _file_stem(self.key, self.kernel_version)
        tmp_graph, tmp_meta = base.with_suffix(".usearch.tmp"), base.with_suffix(".npz.tmp")
        self.ann.save(str(tmp_graph))
        with open(tmp_meta, "wb") as f:
            np.savez(
                f, ids=self.ids.view, learnware_ids=self.lw_ids.view.astype(str),
                alive=self.alive.view, scenario_mask=self.scenario_mask.view,
                output_dimension=self.output_dimension.view,
                **{f"code_{c}": self.codes[c].view for c in _CODED},
                meta=np.array(json.dumps({
                    "key": self.key, "kernel_version": self.kernel_version,
                    "last_seq": self.last_seq, "vocab": self.vocab, "dtype": self.ann_dtype,
                    "kernel": self.kernel.to_dict(), "n_alive": self.n_alive})),
            )
        os.replace(tmp_graph, base.with_suffix(".usearch"))
        os.replace(tmp_meta, base.with_suffix(".npz"))
        self.dirty = False

    @classmethod
    def restore(cls, directory: Path, key: str, kernel_version: int, kernel: GaussianKernel,
                rff_map: RandomFourierFeatures, dimension: int, ann_min_rows: int
                ) -> IslandView | None:
        """The saved view of this island and kernel version, or None (missing, unreadable,
        or saved under another kernel)."""
        base = directory / _file_stem(key, kernel_version)
        graph, meta_path = base.with_suffix(".usearch"), base.with_suffix(".npz")
        if not graph.is_file() or not meta_path.is_file():
            return None
        from usearch.index import Index
        try:
            with np.load(meta_path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta["key"] != key or meta["kernel_version"] != kernel_version \
                        or GaussianKernel.from_dict(meta["kernel"]) != kernel:
                    return None
                view = cls(key, kernel_version, kernel, rff_map, dimension,
                           last_seq=int(meta["last_seq"]), ann_min_rows=ann_min_rows,
                           ann_dtype=meta["dtype"])
                view.ids = _Grow(np.int64, values=z["ids"])
                view.lw_ids = _Grow(object, values=z["learnware_ids"].astype(object))
                view.alive = _Grow(bool, values=z["alive"])
                view.scenario_mask = _Grow(np.int64, values=z["scenario_mask"])
                view.output_dimension = _Grow(np.int32, values=z["output_dimension"])
                view.codes = {c: _Grow(np.int16, values=z[f"code_{c}"]) for c in _CODED}
                view.vocab = {c: dict(meta["vocab"][c]) for c in _CODED}
                view.n_alive = int(meta["n_alive"])
            ann = Index(ndim=rff_map.n_components, metric="l2sq", dtype=view.ann_dtype,
                        connectivity=ANN_CONNECTIVITY, expansion_add=ANN_EXPANSION_ADD,
                        expansion_search=ANN_EXPANSION_SEARCH)
            ann.load(str(graph))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # RuntimeError: usearch
            log.warning("island %s: saved index unreadable (%s); rebuilding", key, exc)
            return None
        view.ann = ann
        return view


class _OutOfOrder(Exception):
    """New spec rows arrived with ids below the view's last one: rebuild instead."""


def _file_stem(key: str, version: int) -> str:
    return f"{hashlib.sha256(key.encode()).hexdigest()[:24]}-v{version}"


def _current_versions() -> Any:
    return select(t.learnwares.c.current_version_id).where(and_(
        t.learnwares.c.deleted_at.is_(None), t.learnwares.c.current_version_id.is_not(None)))


#: Spec rows read per batch when a view is built: memory stays at one batch of rows plus the
#: index itself (reading all rows at once peaked at ~9 GB for 10^6 specs).
BUILD_BATCH = 20_000


def _rows_query(where: Any) -> Any:
    lw = t.learnwares.c
    return (select(t.specs.c.id, t.specs.c.learnware_id, t.specs.c.rff, lw.task_type,
                   lw.library_type, lw.license, lw.scenario_mask, lw.output_dimension)
            .select_from(t.specs.join(t.learnwares, t.learnwares.c.id == t.specs.c.learnware_id))
            .where(where).order_by(t.specs.c.id))


def _to_rows(rows: Sequence[Any], dim: int) -> _Rows:
    vectors = (np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
               if rows else np.zeros((0, dim), dtype=np.float32))
    return _Rows(
        ids=np.array([r[0] for r in rows], dtype=np.int64),
        learnware_ids=np.array([r[1] for r in rows], dtype=object),
        tags={"task_type": [r[3] for r in rows], "library_type": [r[4] for r in rows],
              "license": [r[5] for r in rows], "scenario_mask": [r[6] for r in rows],
              "output_dimension": [r[7] for r in rows]},
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
    )


def _fetch_rows(conn: Connection, where: Any, dim: int) -> _Rows:
    """Spec rows (with their learnware's tags) matching ``where``, ascending by id."""
    return _to_rows(conn.execute(_rows_query(where)).all(), dim)


def _stream_rows(conn: Connection, where: Any, dim: int) -> Iterator[_Rows]:
    """:func:`_fetch_rows` in batches of :data:`BUILD_BATCH` (a server-side cursor on
    PostgreSQL; SQLite's cursor steps through the result as it is read)."""
    res = conn.execution_options(stream_results=True).execute(_rows_query(where))
    try:
        while rows := res.fetchmany(BUILD_BATCH):
            yield _to_rows(rows, dim)
    finally:
        res.close()


class IslandIndex:
    """Per-island views, cached by island key, kept current from the change log."""

    def __init__(self, directory: Path | None = None, *, ann_min_rows: int = ANN_MIN_ROWS,
                 ann_dtype: str = "f32") -> None:
        if ann_dtype not in ("f32", "f16", "i8"):
            raise ValueError(f"ann_dtype must be f32, f16 or i8, not {ann_dtype!r}")
        #: island key -> its view (benchmarks read and clear it directly).
        self.cache: dict[str, IslandView] = {}
        self.directory = directory
        self.ann_min_rows = ann_min_rows
        self.ann_dtype = ann_dtype
        #: how each view came to be (for tests and benchmarks): key -> built|restored|caught-up
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # one catch-up or build at a time in this process

    def for_island(self, conn: Connection, key: str) -> IslandView | None:
        """The island's current view (None if there is no such island)."""
        with self._lock:
            return self._for_island(conn, key)

    def _for_island(self, conn: Connection, key: str) -> IslandView | None:
        row = conn.execute(select(t.islands).where(t.islands.c.key == key)).mappings().first()
        if row is None:
            return None
        view = self.cache.get(key)
        version = int(row["kernel_version"])
        if view is not None and view.kernel_version == version:
            if view.generation == row["generation"]:
                return view
            try:
                self._catch_up(conn, view)
            except _OutOfOrder:
                view = None
            else:
                if not view.needs_rebuild:
                    view.generation = int(row["generation"])
                    self.events.append((key, "caught-up"))
                    return view
        view = self._open(conn, key, row)
        self.cache[key] = view
        return view

    def _open(self, conn: Connection, key: str, row: RowMapping) -> IslandView:
        kernel = GaussianKernel.from_dict(json.loads(row["kernel_json"]))
        dim = int(row["rff_dim"])
        rff_map = RandomFourierFeatures(kernel, dim, int(row["rff_seed"]))
        version = int(row["kernel_version"])
        if self.directory is not None:
            view = IslandView.restore(self.directory, key, version, kernel, rff_map,
                                      int(row["dimension"]), self.ann_min_rows)
            if view is not None:
                try:
                    self._catch_up(conn, view)
                except _OutOfOrder:
                    view = None
            if view is not None and not view.needs_rebuild \
                    and view.n_alive == self._count(conn, key):
                view.generation = int(row["generation"])
                self.events.append((key, "restored"))
                return view
        # the log position first: entries after it are applied by the next catch-up
        last_seq = conn.execute(select(func.coalesce(func.max(t.change_log.c.seq), 0))
                                .where(t.change_log.c.island_key == key)).scalar_one()
        view = IslandView(key, version, kernel, rff_map, int(row["dimension"]),
                          generation=int(row["generation"]), last_seq=int(last_seq),
                          ann_min_rows=self.ann_min_rows, ann_dtype=self.ann_dtype,
                          vectors=_Grow(np.float32, dim))
        expected = self._count(conn, key)
        if expected >= self.ann_min_rows:  # a graph from the start: no full matrix in memory
            view.start_ann()
        for rows in _stream_rows(conn, and_(t.specs.c.island_key == key,
                                            t.specs.c.version_id.in_(_current_versions())), dim):
            view.add(rows)
        self.events.append((key, "built"))
        if view.ann is not None and self.directory is not None:
            try:
                view.save(self.directory)
            except OSError as exc:
                log.warning("island %s: could not save its index (%s)", key, exc)
        return view

    @staticmethod
    def _count(conn: Connection, key: str) -> int:
        return int(conn.execute(
            select(func.count()).select_from(t.specs)
            .where(and_(t.specs.c.island_key == key,
                        t.specs.c.version_id.in_(_current_versions())))
        ).scalar_one())

    @staticmethod
    def _catch_up(conn: Connection, view: IslandView) -> None:
        """Apply the island's log entries after the view's last one, in order (under the
        view's lock: searches of other threads never see half-grown columns)."""
        with view.lock:
            IslandIndex._apply_log(conn, view)

    @staticmethod
    def _apply_log(conn: Connection, view: IslandView) -> None:
        entries = conn.execute(
            select(t.change_log.c.seq, t.change_log.c.op, t.change_log.c.spec_row_id)
            .where(and_(t.change_log.c.island_key == view.key,
                        t.change_log.c.seq > view.last_seq))
            .order_by(t.change_log.c.seq)
        ).all()
        if not entries:
            return
        # net effect per spec row, in log order (an add then a remove cancels out)
        state: dict[int, str] = {}
        for _, op, rid in entries:
            state[int(rid)] = op
        removed = np.array(sorted(r for r, op in state.items() if op == "remove"),
                           dtype=np.int64)
        added = sorted(r for r, op in state.items() if op == "add")
        view.remove(removed)
        if added:
            rows = _fetch_rows(conn, and_(t.specs.c.id.in_(added),
                                          t.specs.c.kernel_version == view.kernel_version),
                               view.rff_map.n_components)
            if rows.ids.size != len(added):
                raise _OutOfOrder  # rescored under another kernel meanwhile: rebuild
            view.add(rows)
        view.last_seq = int(entries[-1][0])

    def save(self) -> None:
        """Persist every changed graph (called when the market closes)."""
        if self.directory is None:
            return
        for view in self.cache.values():
            if view.dirty and view.ann is not None:
                try:
                    view.save(self.directory)
                except OSError as exc:
                    log.warning("island %s: could not save its index (%s)", view.key, exc)

    def candidates(self, conn: Connection, spec_row_ids: list[int]) -> dict[int, Candidate]:
        """The stored reduced sets of these spec rows, for the exact rerank."""
        rows = conn.execute(
            select(
                t.specs.c.id, t.specs.c.learnware_id, t.specs.c.n_points, t.specs.c.dimension,
                t.specs.c.z, t.specs.c.beta, t.specs.c.self_inner,
            ).where(t.specs.c.id.in_(spec_row_ids))
        ).all()
        out = {}
        for rid, lid, k, d, z, beta, si in rows:
            out[int(rid)] = Candidate(
                lid,
                np.frombuffer(z, dtype="<f8").reshape(int(k), int(d)),
                np.frombuffer(beta, dtype="<f8"),
                float(si),
            )
        return out
