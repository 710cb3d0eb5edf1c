"""The island index: each island's random-feature vectors, kept in memory between searches.

Loading an island means reading one float32 row per spec from the database; a search then
prefilters against the whole island in one vectorised pass. The store bumps an island's
``generation`` in the same transaction as every write that changes which specs it serves, so
the index compares one integer per search to know whether its copy is stale, and reloads the
island when it is. (A later change log + ANN index can replace the reload behind the same two
calls: :meth:`IslandIndex.for_island` and :meth:`IslandIndex.candidates`.)

It lives in the market, not in :mod:`learndock.search`, because it reads the market's tables;
the search pipeline sees it only through :class:`learndock.search.pipeline.VectorIndex`.
"""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, RowMapping

from learndock.market import schema as t
from learndock.search.statistical import Candidate, IslandVectors
from learndock.spec.kernels import GaussianKernel, RandomFourierFeatures


class IslandIndex:
    """Per-island vectors, cached by island key, reloaded when the island's generation moves."""

    def __init__(self) -> None:
        #: island key -> the vectors last loaded (benchmarks read and clear it directly).
        self.cache: dict[str, IslandVectors] = {}

    def for_island(self, conn: Connection, key: str) -> IslandVectors | None:
        """The island's current vectors (None if there is no such island)."""
        row = conn.execute(select(t.islands).where(t.islands.c.key == key)).mappings().first()
        if row is None:
            return None
        cached = self.cache.get(key)
        if cached is not None and cached.generation == row["generation"]:
            return cached
        vectors = self._load(conn, key, row)
        self.cache[key] = vectors
        return vectors

    @staticmethod
    def _load(conn: Connection, key: str, row: RowMapping) -> IslandVectors:
        # The specs of current versions of live learnwares. An IN subquery, not a join:
        # learnwares.current_version_id has no index, and SQLite's planner drives a join from
        # the island's specs and scans learnwares once per spec (O(N^2): 41 s at 10,000).
        current = select(t.learnwares.c.current_version_id).where(
            and_(
                t.learnwares.c.deleted_at.is_(None),
                t.learnwares.c.current_version_id.is_not(None),
            )
        )
        rows = conn.execute(
            select(t.specs.c.id, t.specs.c.learnware_id, t.specs.c.rff)
            .where(and_(t.specs.c.island_key == key, t.specs.c.version_id.in_(current)))
            .order_by(t.specs.c.id)
        ).all()
        kernel = GaussianKernel.from_dict(json.loads(row["kernel_json"]))
        dim = int(row["rff_dim"])
        rff = (
            np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
            if rows
            else np.zeros((0, dim), dtype=np.float32)
        )
        return IslandVectors(
            generation=int(row["generation"]),
            learnware_ids=np.array([r[1] for r in rows], dtype=object),
            spec_row_ids=np.array([r[0] for r in rows], dtype=np.int64),
            rff=np.ascontiguousarray(rff),
            kernel=kernel,
            rff_map=RandomFourierFeatures(kernel, dim, int(row["rff_seed"])),
        )

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
