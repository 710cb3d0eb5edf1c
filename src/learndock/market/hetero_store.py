"""The market's system space: load it, bring it up to date, store its versions and bridges.

One job: keep ``system_spaces`` / ``island_bridges`` / ``islands.system_version`` (migration
0006) in step with the market's table islands, and answer heterogeneous searches from them
(:meth:`HeteroStore.cross_island`, called by :class:`learndock.search.pipeline.SearchPipeline`).

**Lazy, incremental updates.** Nothing here runs on the add path: embedding column
descriptions loads MiniLM (~8 s the first time in a process), which no upload should wait
for. Instead, before a heterogeneous search (and on :meth:`learndock.market.Market.
update_system_space`), every table island that has searchable specs and is not yet in the
stored space is added with :meth:`SystemSpace.add_island` -- its columns described by a current
version's manifest (``semantic.input.descriptions``; a missing description falls back to the
feature's name), its statistics estimated from a seeded sample of up to ``SAMPLE_SPECS`` of
its current specs' reduced sets. Islands whose every description is a generic name (``f0``,
``x3``, ``column 7``: what a package without names gets) are left out: matching them by
wording would bridge unrelated columns. The space is append-only, so existing islands keep
their maps; when its version moves, the new version (one per update: the stored versions are 1, 2, 3, ...
whatever the number of islands each added) is stored (``system_spaces``), the bridges
between each new island and every other island with at least one shared feature
(``island_bridges``), and each new island's ``system_version``. A space stored under another
embedder (setting ``hetero_embedder``) is rebuilt from scratch as the next version.

**Concurrency.** A version is written with a plain insert on its primary key, in one
transaction with its bridges and island rows: two processes that grow the space from version
v at once both insert version v + 1, one fails (unique violation), rolls everything back, re-reads the
winner's space and adds only what is still missing. Readers only ever see whole versions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from learndock.errors import MarketError, SpecError
from learndock.market import schema as t
from learndock.market.db import write_txn
from learndock.spec.kernels import GaussianKernel
from learndock.spec.table import RKMETableSpec

log = logging.getLogger(__name__)

#: Specs per island whose reduced sets estimate its columns' statistics when it joins.
SAMPLE_SPECS = 64
#: Most specs per island scored by a heterogeneous search. The island index's random-feature
#: prefilter lives in each island's own kernel space, so it cannot rank across spaces: the
#: first ``CROSS_ISLAND_CAP`` (by spec row) of each island are scored, and the explanation
#: says when an island had more.
CROSS_ISLAND_CAP = 2000
#: Descriptions that say nothing about a column (the defaults of unnamed features).
GENERIC = re.compile(r"^\s*(f|x|col|column|feature|var|v)[ _-]?\d+\s*$", re.IGNORECASE)
#: Output descriptions that say nothing about the target (write_package's default).
GENERIC_OUTPUT = {"the predicted value", "prediction", "value", "target", "y"}
#: Tries of an update that lost the race for a version.
UPDATE_ATTEMPTS = 5


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def make_embedder(kind: str, cache_dir: Path | None = None) -> Any:
    """The column embedder for the ``hetero_embedder`` setting (``auto``: MiniLM when the
    ``text`` extra is installed, else the hashing stand-in)."""
    from learndock.hetero import HashingEmbedder, MiniLMColumnEmbedder

    if kind == "hashing":
        return HashingEmbedder()
    cache = (cache_dir / "embeddings.sqlite3") if cache_dir is not None else None
    try:
        return MiniLMColumnEmbedder(cache=cache)
    except (SpecError, ImportError) as exc:
        if kind == "minilm":
            raise MarketError(f"hetero_embedder=minilm: {exc}") from None
        log.info("system space: MiniLM unavailable (%s); using the hashing embedder", exc)
        return HashingEmbedder()


@dataclass
class IslandColumns:
    """A table island as the system space sees it."""

    key: str
    dimension: int
    descriptions: list[str]
    system_version: int | None = None

    @property
    def informative(self) -> bool:
        return any(not GENERIC.match(d) for d in self.descriptions)


@dataclass
class CrossIslandOutcome:
    """What :meth:`HeteroStore.cross_island` found: matches (``HeteroMatch``), the names of
    their learnwares, and explanation lines."""

    matches: list[Any] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    map_version: int | None = None


class HeteroStore:
    """The system space of one market (see the module docstring)."""

    def __init__(self, engine: Engine, embedder: str = "auto",
                 cache_dir: Path | None = None) -> None:
        self.engine = engine
        self.embedder_kind = embedder
        self.cache_dir = cache_dir
        self._embedder: Any = None
        self._space: Any = None  # the last SystemSpace loaded or written (by version)
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = make_embedder(self.embedder_kind, self.cache_dir)
        return self._embedder

    # ------------------------------------------------------------------ reading
    @staticmethod
    def stored_version(conn: Connection) -> int:
        return int(conn.execute(select(func.max(t.system_spaces.c.version))).scalar() or 0)

    def load(self, conn: Connection) -> Any:
        """The newest stored space (``None`` when there is none), cached by version."""
        from learndock.hetero import SystemSpace

        version = self.stored_version(conn)
        if version == 0:
            return None
        if self._space is not None and self._space.version == version:
            return self._space
        row = conn.execute(select(t.system_spaces.c.space_json, t.system_spaces.c.embedder)
                           .where(t.system_spaces.c.version == version)).one()
        if row.embedder != self.embedder.identity:
            space = SystemSpace.from_json(row.space_json)  # read-only: another embedder
        else:
            space = SystemSpace.from_json(row.space_json, self.embedder)
        self._space = space
        return space

    @staticmethod
    def table_islands(conn: Connection, known: dict[str, list[str]] | None = None
                      ) -> dict[str, IslandColumns]:
        """Table islands with searchable specs, with their column descriptions (``known``:
        descriptions already in the system space, not read again from the manifests)."""
        live = (select(t.specs.c.island_key).select_from(
            t.specs.join(t.learnwares, t.learnwares.c.current_version_id == t.specs.c.version_id))
            .where(t.learnwares.c.deleted_at.is_(None)).distinct())
        rows = conn.execute(
            select(t.islands.c.key, t.islands.c.dimension, t.islands.c.feature_names_json,
                   t.islands.c.system_version)
            .where(and_(t.islands.c.data_type == "Table", t.islands.c.key.in_(live)))
            .order_by(t.islands.c.created_at, t.islands.c.key)).all()
        out = {}
        for key, dim, names_json, sv in rows:
            if known is not None and str(key) in known:
                out[str(key)] = IslandColumns(str(key), int(dim), list(known[str(key)]),
                                              None if sv is None else int(sv))
                continue
            names = json.loads(names_json or "[]")
            descs = [str(names[j]) if j < len(names) and str(names[j]).strip() else f"column {j}"
                     for j in range(int(dim))]
            manifests = conn.execute(
                select(t.versions.c.manifest_json).select_from(
                    t.versions.join(t.learnwares,
                                    t.learnwares.c.current_version_id == t.versions.c.id))
                .where(and_(t.learnwares.c.island_key == key, t.learnwares.c.deleted_at.is_(None)))
                .order_by(t.learnwares.c.created_at, t.learnwares.c.id).limit(50)).scalars()
            best: dict[int, str] = {}
            for mj in manifests:
                given = ((json.loads(mj or "{}").get("semantic") or {}).get("input") or {}) \
                    .get("descriptions") or {}
                got = {int(k): str(v) for k, v in given.items()
                       if str(v).strip() and 0 <= int(k) < int(dim)}
                if len(got) > len(best):
                    best = got
                if len(best) == int(dim):
                    break
            descs = [best.get(j, descs[j]) for j in range(int(dim))]
            out[str(key)] = IslandColumns(str(key), int(dim), descs,
                                          None if sv is None else int(sv))
        return out

    @staticmethod
    def _sample_specs(conn: Connection, key: str, n: int) -> list[Any]:
        """A seeded sample of up to ``n`` current spec rows of the island (reduced sets)."""
        ids = sorted(int(i) for i in conn.execute(
            select(t.specs.c.id).select_from(
                t.specs.join(t.learnwares,
                             t.learnwares.c.current_version_id == t.specs.c.version_id))
            .where(and_(t.specs.c.island_key == key, t.learnwares.c.deleted_at.is_(None))))
            .scalars())
        if len(ids) > n:
            seed = int.from_bytes(key.encode()[:8].ljust(8, b"\0"), "little")
            ids = sorted(np.random.default_rng(seed).choice(ids, n, replace=False).tolist())
        rows = conn.execute(select(t.specs.c.n_points, t.specs.c.dimension, t.specs.c.z,
                                   t.specs.c.beta).where(t.specs.c.id.in_(ids))
                            .order_by(t.specs.c.id)).all()
        return [_Points(np.frombuffer(z, "<f8").reshape(int(k), int(d)), np.frombuffer(b, "<f8"))
                for k, d, z, b in rows]

    # ------------------------------------------------------------------ updating
    def update(self, islands: dict[str, IslandColumns] | None = None) -> Any:
        """Bring the stored space up to date with the market's table islands; returns it
        (``None`` when no island can join). Safe to call from several processes at once.
        ``islands``: :meth:`table_islands` as the caller just read them (a search does: not
        read again, it scans every spec row's island)."""
        with self._lock:
            for _ in range(UPDATE_ATTEMPTS):
                try:
                    return self._update_once(islands)
                except IntegrityError:  # another process stored this version first: re-read
                    self._space = None
                    islands = None
                    continue
            raise MarketError("could not store a new system-space version (too many "
                              "concurrent updates); try again")

    def _update_once(self, islands: dict[str, IslandColumns] | None) -> Any:
        from learndock.hetero import SystemSpace

        with self.engine.connect() as conn:
            stored = self.stored_version(conn)
            loaded = self.load(conn)
            if islands is None:
                islands = self.table_islands(conn, _known(loaded))
            rebuild = loaded is not None and loaded.embedder_id != self.embedder.identity
            known = set() if loaded is None or rebuild else set(loaded.islands)
            new = [c for c in islands.values() if c.key not in known and c.informative]
            if not new:
                return None if loaded is None or rebuild else loaded
            if loaded is None or rebuild:
                space = SystemSpace(self.embedder)
            else:  # grow a copy: the cached space stays whole if the write loses a race
                space = SystemSpace.from_json(loaded.to_json(), self.embedder)
            added = []
            for c in new:
                specs = self._sample_specs(conn, c.key, SAMPLE_SPECS)
                if not specs:
                    continue
                try:
                    if space.add_island(c.key, c.descriptions, specs):
                        added.append(c.key)
                except SpecError as exc:  # e.g. a spec of another width: leave the island out
                    log.warning("system space: island %s left out (%s)", c.key, exc)
        if not added:
            return None if loaded is None or rebuild else loaded
        # One stored version per update, whatever the number of islands it added: every
        # writer that started from version ``stored`` inserts ``stored + 1``, so of two
        # concurrent ones exactly one succeeds (and versions only grow, also on a rebuild).
        space.version = stored + 1
        self._store(space, added)
        self._space = space
        return space

    def _store(self, space: Any, joined: list[str]) -> None:
        now = time.time()
        bridges = []
        for a in joined:
            for b in space.islands:
                if b == a:
                    continue
                pairs = [(a, b)] + ([(b, a)] if b not in joined else [])
                for s, d in pairs:
                    br = space.bridge(s, d)
                    if br.pairs:
                        bridges.append({"source_island": s, "target_island": d,
                                        "map_version": space.version,
                                        "bridge_json": json.dumps(br.to_dict()),
                                        "created_at": now})
        version = space.version

        def write(conn: Connection) -> None:
            conn.execute(insert(t.system_spaces).values(
                version=version, space_json=space.to_json(), fingerprint=space.fingerprint(),
                embedder=str(space.embedder_id), created_at=now))
            if bridges:
                conn.execute(insert(t.island_bridges), bridges)
            conn.execute(update(t.islands).where(t.islands.c.key.in_(joined))
                         .values(system_version=version))

        write_txn(self.engine, write)

    # ------------------------------------------------------------------ bridges
    def bridges(self, source_island: str | None = None) -> list[dict[str, Any]]:
        """Stored bridges (newest map version first), optionally from one island."""
        q = select(t.island_bridges).order_by(t.island_bridges.c.map_version.desc(),
                                              t.island_bridges.c.source_island,
                                              t.island_bridges.c.target_island)
        if source_island is not None:
            q = q.where(t.island_bridges.c.source_island == source_island)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [{"source_island": r["source_island"], "target_island": r["target_island"],
                 "map_version": int(r["map_version"]), "bridge": json.loads(r["bridge_json"]),
                 "created_at": float(r["created_at"])} for r in rows]

    # ------------------------------------------------------------------ searching
    def cross_island(
        self, conn: Connection, filters: list[Any], user: Any, descriptions: list[str],
        target_description: str, top_k: int,
    ) -> CrossIslandOutcome:
        """Learnwares of the other table islands ranked for the user's described columns.

        ``filters``: the catalogue's SQL conditions for the query's tags
        (:meth:`learndock.market.catalogue.Catalogue.filters`). Other islands: those whose
        dimension differs from the user's, or whose column descriptions do."""
        from learndock.hetero import HeteroCandidate, hetero_search

        out = CrossIslandOutcome()
        mine = [_norm(d) for d in descriptions]
        islands = self.table_islands(conn, _known(self._space))
        others = {k: c for k, c in islands.items()
                  if c.dimension != len(mine) or [_norm(d) for d in c.descriptions] != mine}
        if not others:
            out.explanation.append("cross-island: no other table feature space in this market")
            return out
        space = self.update(islands)
        if space is None:
            out.explanation.append("cross-island: no other feature space describes its columns "
                                   "(only generic names such as f0, f1, ...)")
            return out
        out.map_version = int(space.version)
        kernels: dict[str, GaussianKernel] = {}
        cands: list[Any] = []
        capped = []
        for key, c in others.items():
            if key not in space.islands:
                continue
            kernel_json = conn.execute(select(t.islands.c.kernel_json)
                                       .where(t.islands.c.key == key)).scalar_one()
            kernels[key] = GaussianKernel.from_dict(json.loads(kernel_json))
            rows = conn.execute(
                select(t.specs.c.learnware_id, t.specs.c.n_points, t.specs.c.dimension,
                       t.specs.c.z, t.specs.c.beta, t.versions.c.manifest_json)
                .select_from(t.specs
                             .join(t.learnwares,
                                   t.learnwares.c.current_version_id == t.specs.c.version_id)
                             .join(t.versions, t.versions.c.id == t.specs.c.version_id))
                .where(and_(t.specs.c.island_key == key, *filters))
                .order_by(t.specs.c.id).limit(CROSS_ISLAND_CAP + 1)).all()
            if len(rows) > CROSS_ISLAND_CAP:
                rows = rows[:CROSS_ISLAND_CAP]
                capped.append(key)
            seen = set()
            for lid, k, d, z, b, mj in rows:
                if lid in seen:  # one spec per learnware (its first)
                    continue
                seen.add(lid)
                try:
                    spec = RKMETableSpec(np.frombuffer(z, "<f8").reshape(int(k), int(d)),
                                         np.frombuffer(b, "<f8"), kernels[key])
                except SpecError:
                    continue
                cands.append(HeteroCandidate(str(lid), key, spec, tuple(c.descriptions),
                                             _output_description(mj)))
        skipped = [k for k in others if k not in space.islands]
        if skipped:
            out.explanation.append(f"cross-island: {len(skipped)} feature space(s) left out: "
                                   "their columns have only generic names")
        for key in capped:
            out.explanation.append(f"cross-island: island {key} has more than "
                                   f"{CROSS_ISLAND_CAP} specs passing the filters; only the "
                                   f"first {CROSS_ISLAND_CAP} were scored")
        if not cands:
            out.explanation.append("cross-island: no learnware of another feature space "
                                   "passed the filters")
            return out
        ranked = hetero_search(user, descriptions, cands, space, None,
                               target_description=target_description or None)
        # A learnware none of whose inputs the user's columns supply is no match at all.
        out.matches = [m for m in ranked if m.shared > 0][:top_k]
        n_islands = len({m.island_key for m in out.matches})
        out.explanation.append(
            f"cross-island: {len(out.matches)} learnware(s) from {n_islands} other feature "
            f"space(s), of {len(cands)} scored in {len({c.island_key for c in cands})}; map "
            f"version {space.version} (your columns read in the system space; scores on one "
            "absolute scale: similarity x coverage of the learnware's inputs"
            + (" x task agreement)" if target_description else
               "; give a target description to tell tasks apart)"))
        return out


def _known(space: Any) -> dict[str, list[str]] | None:
    """Each island's column descriptions as the space holds them."""
    if space is None:
        return None
    return {k: [m.description for m in space.members(k)] for k in space.islands}


@dataclass(frozen=True)
class _Points:
    """A reduced set as the system space reads it (``z``, ``beta``)."""

    z: np.ndarray
    beta: np.ndarray


def _output_description(manifest_json: str | None) -> str | None:
    """A regression learnware's output description when it names the target (classifiers'
    output descriptions are their classes, which say nothing comparable to a user's target)."""
    sem = json.loads(manifest_json or "{}").get("semantic") or {}
    if sem.get("task_type") != "Regression":
        return None
    descs = (sem.get("output") or {}).get("descriptions") or {}
    if len(descs) != 1:
        return None
    text = str(next(iter(descs.values()))).strip()
    return None if not text or _norm(text) in GENERIC_OUTPUT else text
