"""The system feature space: one shared coordinate system for the table islands of a market.

Why: an island is one feature space, so a user whose columns match no island's schema cannot
be compared with anything. The system space groups columns of different islands that measure
the same thing into **system features**, each with a canonical standardisation, so a spec of
any island can be read in one coordinate system (:meth:`SystemSpace.project`) and a user's
column set can be bridged to any island (:meth:`SystemSpace.bridge_columns`).

How a column joins a system feature (:meth:`SystemSpace.match`): its description must be close
to a member's description (cosine of the column embeddings, :mod:`learndock.hetero.columns`)
AND its marginal distribution, estimated from the reduced sets (weighted by beta), must have
the same *shape* (standardised quantile profile). Description similarity alone is not enough:
MiniLM puts "births 7 days earlier ..." and "births 14 days earlier ..." at 0.94 while true
paraphrases sit at 0.55-0.7, so the acceptance rule trades the two off (``ACCEPT``) and the
columns of one island are assigned one-to-one (Hungarian assignment). A column no feature
accepts founds a new feature, so the space is useful from the first upload and grows with
every island -- no minimum number of uploads, no training.

Units: a member maps raw values to system units by ``u = alpha * x + delta``. A column in the
feature's own units keeps the founder's standardisation (so real distribution shift between
islands stays visible to MMD); a column in another unit (kilometres vs miles: location and
spread scaled by one factor) is rescaled into the founder's units; anything else is
standardised by its own moments, which only closely worded columns may do
(:meth:`SystemSpace._unit_map`).

Versioning: the space is append-only. Adding an island adds members and features and bumps
``version``; existing members and canonical standardisations never change, so a projection made
under version v stays correct under every later version (it may only lack features shared
later). Re-adding a known island with the same descriptions changes nothing and keeps the
version. Deterministic: the same islands in the same order give the same space.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from learndock.errors import SpecError
from learndock.hetero.columns import ColumnEmbedder, default_embedder, normalise_description

FORMAT = "learndock-system-space"
FORMAT_VERSION = 1
#: Quantile levels of a column's marginal profile.
PROBS = np.linspace(0.05, 0.95, 10)
#: (min description similarity, max shape distance) pairs; a column may join a feature when
#: any pair holds. Calibrated on MiniLM: exact/near-exact wording >= 0.8, paraphrases
#: 0.4-0.7, different features with similar wording (lag 7 vs lag 14) up to 0.94 -- so the
#: lower the wording similarity, the closer the distributions must agree.
ACCEPT = ((0.8, 0.6), (0.5, 0.3), (0.4, 0.2))
#: Weight of the shape distance against description similarity in the assignment. Small:
#: the shape gates a match (``ACCEPT``) but barely ranks -- estimated from ~100 reduced
#: points, the profiles of seven weekday indicators differ by noise that outweighed MiniLM's
#: 0.02-0.05 margins between the right and the wrong weekday at 0.5 (measured).
SHAPE_WEIGHT = 0.1
#: A member that needs its own moments (another unit) must also be described alike at least
#: this closely: "flight distance in kilometres" vs "distance (miles)" is 0.69, while "day of
#: the year (1 to 366)" vs "sine of day of year (annual cycle)" is 0.65 -- another
#: *encoding*, which no affine map turns into the other, and whose standardised quantiles
#: look alike. A narrow margin, calibrated on benchmarks/hetero.py's columns only.
MOMENT_MIN_SIM = 0.67
#: Spreads within this factor are read as the same unit (groups of one panel differ in spread
#: by up to ~1.6x: carriers' distances, indicator frequencies).
SAME_UNIT_SPREAD = 2.0
#: Columns described this closely are read in the same unit whatever their spreads: a small
#: state's log birth level varies 3x more than the founding state's, and standardising it by
#: its own moments erased its 70-sd distance to the founder (measured: Wyoming's user then
#: matched no Birthdays learnware at all).
SAME_UNIT_SIM = 0.8
#: A unit change is a common factor of location and spread: |log(loc ratio / spread ratio)|
#: at most this much.
RESCALE_AGREEMENT = 0.2
#: ... and at least this factor (a later season moves delays' location and spread together by
#: ~1.3x; miles to kilometres is 1.61).
RESCALE_MIN = 1.5


def _weighted_quantiles(v: np.ndarray, w: np.ndarray, probs: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cw = np.cumsum(w) - 0.5 * w
    cw /= max(float(w.sum()), 1e-300)
    return np.interp(probs, cw, v)


@dataclass(frozen=True)
class ColumnStats:
    """Weighted marginal summary of one column, from reduced sets (raw units)."""

    loc: float
    scale: float
    quantiles: tuple[float, ...]

    @classmethod
    def from_points(cls, values: np.ndarray, weights: np.ndarray) -> ColumnStats:
        w = np.asarray(weights, float)
        w = w / max(float(w.sum()), 1e-300)
        v = np.asarray(values, float)
        loc = float(w @ v)
        sd = float(np.sqrt(max(w @ (v - loc) ** 2, 0.0)))
        if not np.isfinite(sd) or sd <= 1e-12 * max(1.0, abs(loc)):
            sd = 1.0
        return cls(loc, sd, tuple(float(q) for q in _weighted_quantiles(v, w, PROBS)))

    def shape(self) -> np.ndarray:
        """The standardised quantile profile (unit-free)."""
        return (np.asarray(self.quantiles) - self.loc) / self.scale


def column_stats(specs: Sequence[Any], dimension: int) -> list[ColumnStats]:
    """Per-column stats pooled over specs (each spec weighs the same; beta inside a spec)."""
    if not specs:
        raise SpecError("an island needs at least one spec to estimate its columns")
    zs, ws = [], []
    for s in specs:
        z = np.asarray(s.z, float)
        if z.ndim != 2 or z.shape[1] != dimension:
            raise SpecError(f"a spec has shape {z.shape}; the island has {dimension} columns")
        b = np.asarray(s.beta, float).reshape(-1)
        zs.append(z)
        ws.append(b / b.sum() / len(specs))
    Z, W = np.vstack(zs), np.concatenate(ws)
    return [ColumnStats.from_points(Z[:, j], W) for j in range(dimension)]


@dataclass
class Member:
    """One island column inside a system feature: ``u = alpha * x + delta``."""

    island: str
    column: int
    description: str
    alpha: float
    delta: float
    unit_map: str  # "founder" | "shared-units" | "moment-matched"
    similarity: float  # description similarity when it joined (1 for the founder)
    shape_distance: float
    stats: ColumnStats

    def to_units(self, x: np.ndarray) -> np.ndarray:
        return self.alpha * np.asarray(x, float) + self.delta


@dataclass
class SystemFeature:
    id: int
    loc: float  # canonical standardisation, raw units of the founder
    scale: float
    shape: tuple[float, ...]  # founder's standardised quantile profile
    quantiles: tuple[float, ...]  # founder's raw quantiles
    members: list[Member] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.members[0].description if self.members else f"feature-{self.id}"

    def member_of(self, island: str) -> Member | None:
        for m in self.members:
            if m.island == island:
                return m
        return None


@dataclass(frozen=True)
class ColumnMatch:
    """How one column of a (user or island) column set reads in the system space."""

    column: int
    description: str
    feature: int | None  # system feature id, None when no feature accepts it
    alpha: float
    delta: float
    unit_map: str
    similarity: float
    shape_distance: float

    @property
    def confidence(self) -> float:
        """Description similarity discounted by the shape distance, in [0, 1]."""
        if self.feature is None:
            return 0.0
        return float(np.clip(self.similarity, 0.0, 1.0) * np.exp(-self.shape_distance))


@dataclass(frozen=True)
class SystemProjection:
    """A spec read in system units: ``points`` (K x len(features)), ``beta`` and the map
    version that made it."""

    features: tuple[int, ...]
    points: np.ndarray
    beta: np.ndarray
    map_version: int

    def restrict(self, features: Sequence[int]) -> np.ndarray:
        pos = {f: i for i, f in enumerate(self.features)}
        return self.points[:, [pos[f] for f in features]]


def _overlaps(f: SystemFeature, st: ColumnStats) -> bool:
    """Do the column's central 90% and the founder's (widened by one founder sd) overlap?"""
    return bool(st.quantiles[0] <= f.quantiles[-1] + f.scale
                and st.quantiles[-1] >= f.quantiles[0] - f.scale)


def accepts(sim: float, dist: float) -> bool:
    return any(sim >= s and dist <= d for s, d in ACCEPT)


class SystemSpace:
    """The versioned map from island columns to system features (see the module docstring)."""

    def __init__(self, embedder: ColumnEmbedder | None = None) -> None:
        self._embedder = embedder
        self.embedder_id: str | None = embedder.identity if embedder is not None else None
        self.features: list[SystemFeature] = []
        self.islands: dict[str, list[int]] = {}  # island -> feature id per column
        self.version = 0
        self._emb: dict[str, np.ndarray] = {}  # normalised description -> unit vector

    # ---------------------------------------------------------------- embeddings
    @property
    def embedder(self) -> ColumnEmbedder:
        if self._embedder is None:
            self._embedder = default_embedder()
            if self.embedder_id is None:
                self.embedder_id = self._embedder.identity
        if self.embedder_id is not None and self._embedder.identity != self.embedder_id:
            raise SpecError(f"this system space was built with {self.embedder_id}, not "
                            f"{self._embedder.identity}")
        return self._embedder

    def _embed(self, descriptions: Sequence[str]) -> np.ndarray:
        keys = [normalise_description(d) for d in descriptions]
        todo = [k for k in dict.fromkeys(keys) if k not in self._emb]
        if todo:
            for k, v in zip(todo, self.embedder.embed(todo), strict=True):
                # float32 precision, as stored by to_dict: a reloaded space decides the same
                self._emb[k] = np.asarray(v, np.float32).astype(np.float64)
        return np.stack([self._emb[k] for k in keys]) if keys else np.zeros((0, 1))

    # ---------------------------------------------------------------- matching
    def _scores(self, descriptions: Sequence[str], stats: Sequence[ColumnStats],
                exclude_island: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarity, shape distance), each (n_columns x n_features)."""
        n, m = len(descriptions), len(self.features)
        sim, dist = np.full((n, m), -1.0), np.full((n, m), np.inf)
        if m == 0 or n == 0:
            return sim, dist
        E = self._embed(descriptions)
        for f in self.features:
            if exclude_island is not None and f.member_of(exclude_island) is not None:
                continue
            M = self._embed([mb.description for mb in f.members])
            sim[:, f.id] = (E @ M.T).max(axis=1)
            shape = np.asarray(f.shape)
            for i, st in enumerate(stats):
                dist[i, f.id] = float(np.mean(np.abs(st.shape() - shape)))
        return sim, dist

    def scores(self, descriptions: Sequence[str], specs: Sequence[Any] | Any
               ) -> tuple[np.ndarray, np.ndarray, list[ColumnStats]]:
        """(description similarity, shape distance) of each column to each feature, and the
        columns' stats: what :meth:`match` decides on (for refinements that revisit it)."""
        descriptions = [str(d) for d in descriptions]
        specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
        stats = column_stats(specs, len(descriptions))
        sim, dist = self._scores(descriptions, stats)
        return sim, dist, stats

    def column_match(self, column: int, description: str, feature: int, stats: ColumnStats,
                     similarity: float, shape_distance: float) -> ColumnMatch:
        """A column read as ``feature`` (unit map decided as in :meth:`match`)."""
        um = self._unit_map(self.features[feature], stats, similarity)
        if um is None:
            raise SpecError(f"column {column} cannot be read as feature {feature}")
        alpha, delta, how = um
        return ColumnMatch(column, description, feature, alpha, delta, how, float(similarity),
                           float(shape_distance))

    def match(self, descriptions: Sequence[str], specs: Sequence[Any] | Any,
              *, exclude_island: str | None = None) -> list[ColumnMatch]:
        """Read a column set (descriptions + specs of its data) in the system space, without
        changing it. Columns are assigned to features one-to-one."""
        from scipy.optimize import linear_sum_assignment

        descriptions = [str(d) for d in descriptions]
        specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
        stats = column_stats(specs, len(descriptions))
        sim, dist = self._scores(descriptions, stats, exclude_island)
        out: list[ColumnMatch | None] = [None] * len(descriptions)
        if self.features:
            ok = np.vectorize(accepts)(sim, dist)
            for i, j in zip(*np.nonzero(ok), strict=True):
                if self._unit_map(self.features[j], stats[i], sim[i, j]) is None:
                    ok[i, j] = False
            score = np.where(ok, sim - SHAPE_WEIGHT * np.where(np.isfinite(dist), dist, 0), -1e6)
            rows, cols = linear_sum_assignment(-score)
            for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
                if not ok[i, j]:
                    continue
                f = self.features[j]
                um = self._unit_map(f, stats[i], sim[i, j])
                assert um is not None
                alpha, delta, how = um
                out[i] = ColumnMatch(i, descriptions[i], f.id, alpha, delta, how,
                                     float(sim[i, j]), float(dist[i, j]))
        for i, d in enumerate(descriptions):
            if out[i] is None:
                st = stats[i]
                out[i] = ColumnMatch(i, d, None, 1.0 / st.scale, -st.loc / st.scale, "own",
                                     0.0, 0.0)
        return [m for m in out if m is not None]

    @staticmethod
    def _unit_map(f: SystemFeature, st: ColumnStats, similarity: float
                  ) -> tuple[float, float, str] | None:
        """How a column's raw values become the feature's system units, or None (no match).

        1. ``rescaled``: location and spread both differ by one factor r (at least
           ``RESCALE_MIN``), as kilometres do from miles: ``x / r`` is in the founder's units
           (a real shift stays visible). Needs ``MOMENT_MIN_SIM`` description similarity.
        2. ``shared-units``: wording alike at least ``SAME_UNIT_SIM``, or spreads within a
           factor ``SAME_UNIT_SPREAD`` and value ranges that overlap (within one founder
           standard deviation): the founder's standardisation as it is, so a shift in location
           (a bigger state, a later season) stays visible to MMD. The range test keeps a
           loosely worded column of another encoding out ("month of the year", 10-12 for an
           autumn user, read as the sine of the day of year zeroed every search score of the
           islands that have that sine -- measured).
        3. ``moment-matched``: standardised by its own moments; only for columns described
           alike at least ``MOMENT_MIN_SIM`` -- another *encoding* of a quantity ("day of the
           year" vs its sine) must not pass for another unit."""
        r_sc = st.scale / f.scale
        close = similarity >= MOMENT_MIN_SIM
        if (close and abs(f.loc) > 0.1 * f.scale and abs(st.loc) > 0.1 * st.scale
                and f.loc * st.loc > 0):
            r_loc = st.loc / f.loc
            if (abs(np.log(r_loc / r_sc)) <= RESCALE_AGREEMENT
                    and abs(np.log(r_sc)) > np.log(RESCALE_MIN)):
                r = float(np.sqrt(r_loc * r_sc))
                return 1.0 / (r * f.scale), -f.loc / f.scale, "rescaled"
        if similarity >= SAME_UNIT_SIM or (abs(np.log(r_sc)) <= np.log(SAME_UNIT_SPREAD)
                                           and _overlaps(f, st)):
            return 1.0 / f.scale, -f.loc / f.scale, "shared-units"
        if close:
            return 1.0 / st.scale, -st.loc / st.scale, "moment-matched"
        return None

    # ---------------------------------------------------------------- updates
    def add_island(self, island_key: str, descriptions: Sequence[str],
                   specs: Sequence[Any] | Any) -> bool:
        """Add an island's columns (descriptions + the specs it holds so far).

        Returns True when the map changed (version bumped); re-adding a known island with the
        same descriptions returns False. Features and members are only ever appended."""
        descriptions = [str(d) for d in descriptions]
        if not descriptions:
            raise SpecError("an island needs at least one column description")
        if island_key in self.islands:
            known = [self._member(island_key, j).description
                     for j in range(len(self.islands[island_key]))]
            if known == descriptions:
                return False
            raise SpecError(f"island {island_key!r} is already in the system space with other "
                            "column descriptions; island keys name one feature schema")
        specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
        matches = self.match(descriptions, specs)
        stats = column_stats(specs, len(descriptions))
        ids = []
        for mt, st in zip(matches, stats, strict=True):
            if mt.feature is None:
                f = SystemFeature(len(self.features), st.loc, st.scale,
                                  tuple(float(v) for v in st.shape()), st.quantiles)
                self.features.append(f)
                f.members.append(Member(island_key, mt.column, mt.description, 1.0 / st.scale,
                                        -st.loc / st.scale, "founder", 1.0, 0.0, st))
            else:
                f = self.features[mt.feature]
                f.members.append(Member(island_key, mt.column, mt.description, mt.alpha,
                                        mt.delta, mt.unit_map, mt.similarity,
                                        mt.shape_distance, st))
            ids.append(f.id)
        self.islands[island_key] = ids
        self.version += 1
        return True

    def _member(self, island: str, column: int) -> Member:
        f = self.features[self.islands[island][column]]
        m = f.member_of(island)
        assert m is not None and m.column == column
        return m

    def members(self, island: str) -> list[Member]:
        if island not in self.islands:
            raise SpecError(f"island {island!r} is not in the system space (add_island first)")
        return [self._member(island, j) for j in range(len(self.islands[island]))]

    # ---------------------------------------------------------------- reading specs
    def project(self, island_key: str, spec: Any) -> SystemProjection:
        """A spec of ``island_key`` in system units (one coordinate per column)."""
        mem = self.members(island_key)
        z = np.asarray(spec.z, float)
        if z.shape[1] != len(mem):
            raise SpecError(f"spec has {z.shape[1]} columns; island {island_key!r} has "
                            f"{len(mem)}")
        pts = np.column_stack([m.to_units(z[:, m.column]) for m in mem])
        beta = np.asarray(spec.beta, float)
        return SystemProjection(tuple(self.islands[island_key]), pts, beta / beta.sum(),
                                self.version)

    def project_columns(self, matches: Sequence[ColumnMatch], spec: Any) -> SystemProjection:
        """A user's spec in system units, through its :meth:`match` (matched columns only)."""
        z = np.asarray(spec.z, float)
        used = [m for m in matches if m.feature is not None]
        pts = (np.column_stack([m.alpha * z[:, m.column] + m.delta for m in used]) if used
               else np.zeros((z.shape[0], 0)))
        beta = np.asarray(spec.beta, float)
        return SystemProjection(tuple(int(m.feature) for m in used), pts,  # type: ignore[arg-type]
                                beta / beta.sum(), self.version)

    # ---------------------------------------------------------------- bridges
    def bridge_columns(self, matches: Sequence[ColumnMatch], target_island: str,
                       source: str = "user") -> Any:
        """The :class:`~learndock.hetero.bridge.Bridge` from a matched column set to an island."""
        from learndock.hetero.bridge import Bridge, BridgePair

        pairs = []
        for mt in matches:
            if mt.feature is None:
                continue
            tm = self.features[mt.feature].member_of(target_island)
            if tm is None:
                continue
            # source -> u -> target: x_t = (alpha_s x_s + delta_s - delta_t) / alpha_t
            pairs.append(BridgePair(mt.column, tm.column, mt.feature, mt.alpha / tm.alpha,
                                    (mt.delta - tm.delta) / tm.alpha, mt.confidence))
        return Bridge(source, target_island, len(matches), len(self.members(target_island)),
                      tuple(sorted(pairs, key=lambda p: p.target)), self.version)

    def bridge(self, source_island: str, target_island: str) -> Any:
        """The bridge between two islands of the space."""
        mem = self.members(source_island)
        matches = [ColumnMatch(m.column, m.description, self.islands[source_island][m.column],
                               m.alpha, m.delta, m.unit_map, m.similarity, m.shape_distance)
                   for m in mem]
        return self.bridge_columns(matches, target_island, source=source_island)

    # ---------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        def member(m: Member) -> dict[str, Any]:
            d = asdict(m)
            d["stats"] = {"loc": m.stats.loc, "scale": m.stats.scale,
                          "quantiles": list(m.stats.quantiles)}
            return d

        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "version": self.version,
            "embedder": self.embedder_id,
            "features": [{"id": f.id, "loc": f.loc, "scale": f.scale, "shape": list(f.shape),
                          "quantiles": list(f.quantiles),
                          "members": [member(m) for m in f.members]} for f in self.features],
            "islands": {k: list(v) for k, v in self.islands.items()},
            "embeddings": {k: np.asarray(v, np.float32).tolist()
                           for k, v in sorted(self._emb.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], embedder: ColumnEmbedder | None = None
                  ) -> SystemSpace:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SpecError("not a learndock system space (missing format marker)")
        if int(data.get("format_version", 0)) != FORMAT_VERSION:
            raise SpecError(f"system space format {data.get('format_version')} is not "
                            f"supported (expected {FORMAT_VERSION})")
        space = cls(embedder)
        emb_id = data.get("embedder")
        if embedder is not None and emb_id is not None and embedder.identity != emb_id:
            raise SpecError(f"system space was built with {emb_id}, not {embedder.identity}")
        space.embedder_id = emb_id
        try:
            for fd in data["features"]:
                f = SystemFeature(int(fd["id"]), float(fd["loc"]), float(fd["scale"]),
                                  tuple(map(float, fd["shape"])),
                                  tuple(map(float, fd["quantiles"])))
                for md in fd["members"]:
                    st = md["stats"]
                    f.members.append(Member(
                        str(md["island"]), int(md["column"]), str(md["description"]),
                        float(md["alpha"]), float(md["delta"]), str(md["unit_map"]),
                        float(md["similarity"]), float(md["shape_distance"]),
                        ColumnStats(float(st["loc"]), float(st["scale"]),
                                    tuple(map(float, st["quantiles"])))))
                space.features.append(f)
            space.islands = {str(k): [int(i) for i in v] for k, v in data["islands"].items()}
            space.version = int(data["version"])
            space._emb = {str(k): np.asarray(v, float) for k, v in data["embeddings"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed system space: {exc}") from None
        return space

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, embedder: ColumnEmbedder | None = None) -> SystemSpace:
        return cls.from_dict(json.loads(text), embedder)

    def fingerprint(self) -> str:
        """SHA-256 of the map (embeddings excluded): equal maps, equal fingerprints."""
        d = self.to_dict()
        d.pop("embeddings")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def describe(self) -> list[dict[str, Any]]:
        """A readable table of the features: name, islands and how each member maps."""
        return [{"feature": f.id, "name": f.name,
                 "members": [(m.island, m.column, m.description, m.unit_map,
                              round(m.similarity, 3)) for m in f.members]}
                for f in self.features]
