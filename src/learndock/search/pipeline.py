"""The search pipeline: semantic filter -> full text -> prefilter -> exact rerank -> mixture
(-> cross-island: learnwares of other feature spaces, when the user describes their columns).

Each stage narrows what the next one sees and adds a line to the result's explanation. The
pipeline reads the market only through two narrow interfaces -- :class:`SearchCatalogue`
(tags, text, names, islands) and :class:`VectorIndex` (an island's vectors and stored specs) --
so it does no SQL of its own and the index behind it can change without touching it.

A user's spec is checked against the caps (:func:`learndock.spec.io.validate_stat_spec`)
before any kernel work, so an oversized or absurd spec costs nothing but the refusal.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from sqlalchemy.engine import Connection, Engine

from learndock.config import ArchiveLimits
from learndock.errors import MarketError, SpecError
from learndock.search.query import as_query, describe_query, has_tag_filters
from learndock.search.result import CrossIslandMatch, MixtureMatch, SearchResult, SingleMatch
from learndock.search.statistical import (
    Candidate,
    IslandVectors,
    exact_scores,
    gram,
    keep_finite,
    mixture_weights,
)
from learndock.search.text import query_terms
from learndock.spec.embedding import RKMEEmbeddingSpec
from learndock.spec.health import kernel_health
from learndock.spec.io import StatSpec, load_stat_spec, validate_stat_spec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.semantic import SemanticQuery

#: A mixture is recommended only if it cuts MMD^2 of the best single learnware by this much.
MIXTURE_MIN_IMPROVEMENT = 0.2


class IslandRow(NamedTuple):
    """What the pipeline needs to know of an island to decide whether a spec may enter it."""

    key: str
    kernel: GaussianKernel  # the market's current kernel for the island
    kernel_version: int
    encoder: str | None  # image/text islands: the id of the encoder their specs were built with


class SearchCatalogue(Protocol):
    def ids_matching(self, conn: Connection, q: SemanticQuery | None) -> set[str]: ...

    def text_rank(self, conn: Connection, text: str) -> dict[str, float]: ...

    def names(self, conn: Connection, ids: list[str]) -> dict[str, tuple[str, int]]: ...

    def island_rows(self, conn: Connection, data_type: str, dimension: int) -> list[IslandRow]: ...

    def filters(self, q: SemanticQuery | None, include_rejected: bool = False) -> list[Any]: ...


class CrossIslandSource(Protocol):
    """Heterogeneous search over the other feature spaces
    (:class:`learndock.market.hetero_store.HeteroStore`)."""

    def cross_island(self, conn: Connection, filters: list[Any], user: Any,
                     descriptions: list[str], target_description: str, top_k: int) -> Any: ...


class VectorIndex(Protocol):
    def for_island(self, conn: Connection, key: str) -> IslandVectors | None: ...

    def candidates(self, conn: Connection, spec_row_ids: list[int]) -> dict[int, Candidate]: ...


def in_kernel(spec: StatSpec, kernel: GaussianKernel) -> StatSpec:
    """The same weighted point set, evaluated under ``kernel`` (an RKME is a point set: any
    kernel can score it; the one it was fitted with is only where its points came from)."""
    return spec if spec.kernel == kernel else dataclasses.replace(spec, kernel=kernel)


class _Scored(NamedTuple):
    mmd: float
    score: float
    learnware_id: str
    island: str


@dataclass
class SearchPipeline:
    """Runs one search on one connection (every stage sees the same market state)."""

    engine: Engine
    catalogue: SearchCatalogue
    index: VectorIndex
    limits: ArchiveLimits  # caps on the user's spec
    hetero: CrossIslandSource | None = None  # cross-island search (None: never)

    def checked_spec(self, spec: StatSpec | str | Path | None) -> StatSpec | None:
        """Load (if a path) and cap-check a user's spec; SpecError says what is wrong."""
        if spec is None:
            return None
        if isinstance(spec, (str, Path)):  # the file's size is capped before it is parsed
            spec = load_stat_spec(spec, self.limits, user=True)
        return validate_stat_spec(spec, self.limits, user=True)

    def run(
        self,
        query: SemanticQuery | dict[str, Any] | None,
        spec: StatSpec | str | Path | None,
        *,
        top_k: int,
        max_mixture: int,
        prefilter_k: int | None,
        mixture_pool: int,
    ) -> SearchResult:
        """See :meth:`learndock.market.Market.search`."""
        t0 = time.perf_counter()
        user = self.checked_spec(spec)
        q = as_query(query)
        res = SearchResult()
        with self.engine.connect() as conn:
            allowed_ids: set[str] | None = None
            if user is None:  # with a spec, the island index applies the tag filters itself
                allowed_ids = self.catalogue.ids_matching(conn, q)
                res.explanation.append(
                    f"tag filters kept {len(allowed_ids)} learnware(s)"
                    + (f" ({describe_query(q)})" if q else "")
                )
            text_rank = self._text(conn, q, res)
            res.timings_ms["semantic"] = (time.perf_counter() - t0) * 1e3
            if text_rank is None:
                pass  # words that match nothing: nothing to rank
            elif user is None:
                self._by_text(conn, allowed_ids or set(), text_rank, res, top_k)
            else:
                self._statistical(conn, q, user, text_rank, res, top_k, max_mixture,
                                  prefilter_k, mixture_pool)
                self._cross_island(conn, q, user, res, top_k)
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res

    # ------------------------------------------------------------------ semantic stages
    def _text(
        self, conn: Connection, q: SemanticQuery | None, res: SearchResult
    ) -> dict[str, float] | None:
        """learnware id -> text rank ({} without words to search; None if none matched)."""
        if q is None or not q.text.strip():
            return {}
        shown = repr(q.text[:60])
        if not query_terms(q.text):
            res.explanation.append(f"full-text: no searchable words in {shown} (ignored)")
            return {}
        text_rank = self.catalogue.text_rank(conn, q.text)
        if not text_rank:
            res.explanation.append(f"full-text: no learnware matched the words of {shown}")
            return None
        res.explanation.append(
            f"full-text: {len(text_rank)} learnware(s) share words with {shown}"
        )
        return text_rank

    def _by_text(
        self, conn: Connection, allowed_ids: set[str], text_rank: dict[str, float],
        res: SearchResult, top_k: int,
    ) -> None:
        """Without a spec: the tag matches, best text rank first (only those sharing a word,
        when the query has words)."""
        ids = sorted(allowed_ids, key=lambda i: (-text_rank.get(i, 0.0), i))
        if text_rank:
            ids = [i for i in ids if i in text_rank]
            if not ids:
                res.explanation.append(
                    "no learnware kept by the tag filters matched the words")
        names = self.catalogue.names(conn, ids[:top_k])
        res.single = [
            SingleMatch(i, *names[i], text_rank=text_rank.get(i)) for i in ids[:top_k]
            if i in names
        ]

    # ------------------------------------------------------------------ heterogeneous stage
    def _cross_island(self, conn: Connection, q: SemanticQuery | None, spec: StatSpec,
                      res: SearchResult, top_k: int) -> None:
        """Learnwares of other table feature spaces, ranked in the system space, when the user
        described their columns (the query's ``input_descriptions``; ``learndock search`` and
        the web page send those a spec file carries, :func:`~learndock.spec.table.
        column_descriptions`). Kept apart in ``res.cross_island``: their scores are not MMD under an
        island's kernel."""
        if self.hetero is None or isinstance(spec, RKMEEmbeddingSpec):
            return
        if q is not None and q.data_type and "Table" not in [d.value for d in q.data_type]:
            return
        descs = list(q.input_descriptions) if q is not None else []
        if not descs:
            return
        if len(descs) != spec.dimension:
            res.explanation.append(
                f"cross-island: {len(descs)} input description(s) for a spec of "
                f"{spec.dimension} columns; give one per column to search other feature spaces")
            return
        t0 = time.perf_counter()
        try:
            out = self.hetero.cross_island(conn, self.catalogue.filters(q), spec, descs,
                                           q.target_description if q is not None else "", top_k)
        except (SpecError, MarketError, ImportError) as exc:
            res.explanation.append(f"cross-island search failed: {exc}")
            return
        finally:
            res.timings_ms["cross_island"] = (time.perf_counter() - t0) * 1e3
        names = self.catalogue.names(conn, [m.learnware_id for m in out.matches])
        res.cross_island = [
            CrossIslandMatch(
                learnware_id=m.learnware_id, name=names[m.learnware_id][0],
                version=names[m.learnware_id][1], island=m.island_key, score=float(m.score),
                verdict=m.verdict, similarity=float(m.similarity), coverage=float(m.coverage),
                shared_features=int(m.shared), input_dimension=int(m.bridge.target_dimension),
                map_version=int(m.map_version), bridge=m.bridge.to_dict(), notes=list(m.notes))
            for m in out.matches if m.learnware_id in names
        ]
        res.explanation.extend(out.explanation)

    # ------------------------------------------------------------------ statistical stages
    def _islands(
        self, conn: Connection, q: SemanticQuery | None, spec: StatSpec, res: SearchResult
    ) -> list[str]:
        """Keys of the islands of the user's feature space (explains if none). Whatever
        kernel the user fitted with, the spec is scored under each island's own kernel."""
        spec_type = getattr(spec, "data_type", "Table")
        data_types = [d.value for d in q.data_type] if q and q.data_type else [spec_type]
        if spec_type not in data_types:
            res.explanation.append(f"your spec describes {spec_type} data but the query asks "
                                   f"for {'/'.join(data_types)} learnwares")
            return []
        rows = self.catalogue.island_rows(conn, spec_type, spec.dimension)
        if isinstance(spec, RKMEEmbeddingSpec):
            # Specs from different encoders live in different spaces: never compared.
            others = sorted({r.encoder or "?" for r in rows if r.encoder != spec.encoder_id})
            rows = [r for r in rows if r.encoder == spec.encoder_id]
            if not rows:
                res.explanation.append(
                    f"refused: your {spec_type.lower()} spec was built with encoder "
                    f"{spec.encoder_id}; "
                    + (f"this market's {spec_type} learnwares use {', '.join(others)} -- rebuild "
                       "your spec with that encoder"
                       + (" (encoders named reference:... are the reference engine's, which "
                          "learndock cannot run: such specs are comparable only with each other)"
                          if any(o.startswith("reference:") for o in others) else "")
                       if others
                       else f"the market has no {spec_type} learnwares with specs")
                )
                return []
        if not rows:
            res.explanation.append(
                f"no island of {'/'.join(data_types)} data with dimension {spec.dimension}"
            )
            return []
        for r in rows:
            if r.kernel != spec.kernel:
                res.explanation.append(
                    f"island {r.key}: your spec was fitted with another kernel than the "
                    f"island's (version {r.kernel_version}); it is rescored under the island's "
                    f"kernel. For a sharper match fit it with that kernel: `learndock market "
                    f"kernel {r.key} -o kernel.json`, then `learndock spec table --kernel-from "
                    "kernel.json`"
                )
            health = kernel_health(in_kernel(spec, r.kernel))
            if health.degenerate:  # e.g. the reference's gamma 0.1 on raw features
                res.explanation.append(
                    f"warning: scores in island {r.key} carry little meaning: "
                    + health.explanation
                )
        return [r.key for r in rows]

    def _statistical(
        self,
        conn: Connection,
        q: SemanticQuery | None,
        spec: StatSpec,
        text_rank: dict[str, float],
        res: SearchResult,
        top_k: int,
        max_mixture: int,
        prefilter_k: int | None,
        mixture_pool: int,
    ) -> None:
        t1 = time.perf_counter()
        keys = self._islands(conn, q, spec, res)
        if not keys:
            return
        k_pre = prefilter_k or max(64, 4 * top_k, mixture_pool)
        scored: list[_Scored] = []
        per_island: dict[str, list[tuple[float, Candidate, float]]] = {}
        vectors: dict[str, IslandVectors] = {}
        users: dict[str, StatSpec] = {}  # the user's spec under each island's kernel
        for key in keys:
            idx = self.index.for_island(conn, key)
            if idx is None or idx.size == 0:
                continue
            vectors[key] = idx
            u = in_kernel(spec, idx.kernel)
            users[key] = u
            near = idx.nearest(idx.rff_map.embed(u.z, u.beta), k_pre, q)
            res.explanation.append(
                f"island {key}: {idx.size} spec(s)"
                + (f", {near.n_allowed} pass the tag filters" if has_tag_filters(q) else "")
                + f"; random-feature {'graph search' if near.method == 'ann' else 'prefilter'} "
                f"kept {len(near.spec_row_ids)} for exact MMD"
            )
            if len(near.spec_row_ids) == 0:
                continue
            rows = self.index.candidates(conn, [int(r) for r in near.spec_row_ids])
            cands = [rows[int(r)] for r in near.spec_row_ids if int(r) in rows]
            cands, mmd, score, ip, dropped = keep_finite(cands, *exact_scores(u, cands,
                                                                              idx.kernel))
            if dropped:
                res.explanation.append(
                    f"island {key}: dropped {dropped} learnware(s) whose MMD was not a finite "
                    "number (corrupt spec or overflow)"
                )
            per_island[key] = sorted(zip(mmd.tolist(), cands, ip.tolist(), strict=True),
                                     key=lambda x: x[0])
            scored += [_Scored(m, s, c.learnware_id, key)
                       for m, s, c in zip(mmd.tolist(), score.tolist(), cands, strict=True)]
        res.timings_ms["statistical"] = (time.perf_counter() - t1) * 1e3
        if not scored:
            res.explanation.append("no learnware passed the filters in a compatible island")
            return
        scored.sort(key=lambda x: (round(x.mmd, 12), -text_rank.get(x.learnware_id, 0.0),
                                   x.learnware_id))
        top_rows = scored[:top_k]
        names = self.catalogue.names(conn, [r.learnware_id for r in top_rows])
        res.single = [
            SingleMatch(r.learnware_id, *names[r.learnware_id], score=r.score, mmd=r.mmd,
                        text_rank=text_rank.get(r.learnware_id), island=r.island)
            for r in top_rows
            if r.learnware_id in names
        ]
        t2 = time.perf_counter()
        best = scored[0]
        self._mixture(conn, users[best.island], best, per_island[best.island][:mixture_pool],
                      vectors[best.island], max_mixture, res)
        res.timings_ms["mixture"] = (time.perf_counter() - t2) * 1e3

    def _mixture(
        self, conn: Connection, spec: StatSpec, best: _Scored,
        pool: list[tuple[float, Candidate, float]], idx: IslandVectors, max_mixture: int,
        res: SearchResult,
    ) -> None:
        """A weighted mixture within the island of the best single match, if it helps enough."""
        if max_mixture < 2 or len(pool) < 2:
            return
        cands = [c for _, c, _ in pool]
        h = np.array([ip for _, _, ip in pool])
        g = gram(cands, idx.kernel)
        if not np.isfinite(g).all():
            res.explanation.append("no mixture: the candidates' kernel values are not finite")
            return
        w, mix2 = mixture_weights(spec.self_inner, g, h, max_mixture)
        order = [i for i in np.argsort(-w, kind="stable") if w[i] > 1e-4]
        best2 = best.mmd**2
        improvement = 1.0 - mix2 / best2 if best2 > 0 else 0.0
        norm = spec.self_inner + float(w @ g @ w)
        if not np.isfinite([mix2, improvement, norm]).all():
            res.explanation.append("no mixture: its MMD is not a finite number")
            return
        if len(order) < 2:
            res.explanation.append(
                "no mixture: the best weighting of the candidates puts (almost) all weight on "
                "one learnware")
            return
        recommended = improvement >= MIXTURE_MIN_IMPROVEMENT
        ids = [cands[i].learnware_id for i in order]
        names = self.catalogue.names(conn, ids)
        res.mixture = MixtureMatch(
            learnware_ids=ids,
            names=[names[i][0] for i in ids],
            weights=[float(w[i]) for i in order],
            mmd=float(np.sqrt(mix2)),
            score=float(np.clip(1.0 - mix2 / norm, 0.0, 1.0)),
            best_single_mmd=float(best.mmd),
            improvement=float(improvement),
            recommended=recommended,
            island=best.island,
        )
        res.explanation.append(
            f"mixture of {len(order)} learnwares cuts MMD^2 by {max(improvement, 0.0):.0%} "
            f"against the best single one: "
            + ("recommended" if recommended else
               f"not recommended (needs >= {MIXTURE_MIN_IMPROVEMENT:.0%})")
        )
