"""One island per feature space, with a market-owned, versioned kernel.

Before: an island was (data type, dimension, feature schema, *kernel*), so developers of one
feature space who fitted with different kernels landed in different islands. After: the island
key drops the kernel; each island has a current kernel (``islands.kernel_version``, history in
``island_kernels``) under which every spec row's ``self_inner`` and ``rff`` are computed, and
each spec row keeps the kernel it was fitted with (``specs.fit_kernel_json``) as metadata.

Upgrade merges the old islands of a feature space into one. Its kernel is the one of the old
island that held the most spec rows; the other rows are rescored under it (their reduced sets
are stored, so nothing is lost). Downgrade splits them again by fitting kernel.

Revision ID: 0004
Revises: 0003
"""

import hashlib
import json
import time
from collections import defaultdict

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_islands = sa.table(
    "islands", sa.column("key", sa.String), sa.column("data_type", sa.String),
    sa.column("dimension", sa.Integer), sa.column("schema_hash", sa.String),
    sa.column("kernel_key", sa.String), sa.column("kernel_json", sa.Text),
    sa.column("feature_names_json", sa.Text), sa.column("rff_seed", sa.BigInteger),
    sa.column("rff_dim", sa.Integer), sa.column("generation", sa.Integer),
    sa.column("created_at", sa.Float), sa.column("kernel_version", sa.Integer),
)
_specs = sa.table(
    "specs", sa.column("id", sa.Integer), sa.column("version_id", sa.String),
    sa.column("island_key", sa.String), sa.column("n_points", sa.Integer),
    sa.column("dimension", sa.Integer), sa.column("self_inner", sa.Float),
    sa.column("z", sa.LargeBinary), sa.column("beta", sa.LargeBinary),
    sa.column("rff", sa.LargeBinary), sa.column("kernel_version", sa.Integer),
    sa.column("fit_kernel_json", sa.Text),
)
_learnwares = sa.table("learnwares", sa.column("id", sa.String),
                       sa.column("island_key", sa.String),
                       sa.column("current_version_id", sa.String))
_island_kernels = sa.table(
    "island_kernels", sa.column("island_key", sa.String), sa.column("version", sa.Integer),
    sa.column("kernel_key", sa.String), sa.column("kernel_json", sa.Text),
    sa.column("reason", sa.Text), sa.column("n_specs", sa.Integer),
    sa.column("created_at", sa.Float),
)


def _seed(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def _rescore(conn: sa.Connection, spec_ids: list[int], kernel_doc: dict, rff_dim: int,
             seed: int, island_key: str, version: int) -> None:
    """Recompute the rows' self inner product and random features under ``kernel_doc``."""
    from learndock.market.kernels import spec_vectors
    from learndock.spec.kernels import GaussianKernel

    kernel = GaussianKernel.from_dict({k: v for k, v in kernel_doc.items() if k != "encoder"})
    for sid, k, d, z, beta in conn.execute(
        sa.select(_specs.c.id, _specs.c.n_points, _specs.c.dimension, _specs.c.z,
                  _specs.c.beta).where(_specs.c.id.in_(spec_ids))
    ).all():
        zz = np.frombuffer(z, dtype="<f8").reshape(int(k), int(d))
        bb = np.frombuffer(beta, dtype="<f8")
        si, rff = spec_vectors(zz, bb, kernel, int(rff_dim), seed)
        conn.execute(sa.update(_specs).where(_specs.c.id == sid).values(
            self_inner=si, rff=rff, island_key=island_key, kernel_version=version))


def upgrade() -> None:
    op.add_column("islands", sa.Column("kernel_version", sa.Integer, nullable=False,
                                       server_default="1"))
    op.add_column("islands", sa.Column("kernel_checked_n", sa.Integer, nullable=False,
                                       server_default="0"))
    op.add_column("specs", sa.Column("kernel_version", sa.Integer, nullable=False,
                                     server_default="1"))
    op.add_column("specs", sa.Column("fit_kernel_json", sa.Text, nullable=True))
    op.create_table(
        "island_kernels",
        sa.Column("island_key", sa.String(200), sa.ForeignKey("islands.key"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("kernel_key", sa.String(64), nullable=False),
        sa.Column("kernel_json", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("n_specs", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    conn = op.get_bind()
    old = conn.execute(sa.select(_islands)).mappings().all()
    counts = dict(conn.execute(sa.select(_specs.c.island_key, sa.func.count())
                               .group_by(_specs.c.island_key)).all())
    groups: dict[str, list] = defaultdict(list)
    for r in old:
        groups[":".join(r["key"].split(":")[:3])].append(r)
    now = time.time()
    for new_key, members in groups.items():
        holder = max(members, key=lambda r: (counts.get(r["key"], 0), r["key"]))
        conn.execute(sa.insert(_islands).values(
            key=new_key, data_type=holder["data_type"], dimension=holder["dimension"],
            schema_hash=holder["schema_hash"], kernel_key=holder["kernel_key"],
            kernel_json=holder["kernel_json"], feature_names_json=holder["feature_names_json"],
            rff_seed=_seed(new_key), rff_dim=holder["rff_dim"],
            generation=max(int(m["generation"]) for m in members) + 1,
            created_at=min(float(m["created_at"]) for m in members), kernel_version=1))
        conn.execute(sa.insert(_island_kernels).values(
            island_key=new_key, version=1, kernel_key=holder["kernel_key"],
            kernel_json=holder["kernel_json"], n_specs=sum(counts.get(m["key"], 0)
                                                           for m in members),
            reason="migration 0004: the kernel of the largest former island of this feature "
                   "space", created_at=now))
        for m in members:
            fit_doc = json.loads(m["kernel_json"])
            fit_doc.pop("encoder", None)
            conn.execute(sa.update(_specs).where(_specs.c.island_key == m["key"])
                         .values(fit_kernel_json=json.dumps(fit_doc)))
            ids = list(conn.execute(sa.select(_specs.c.id)
                                    .where(_specs.c.island_key == m["key"])).scalars())
            _rescore(conn, ids, json.loads(holder["kernel_json"]), holder["rff_dim"],
                     _seed(new_key), new_key, 1)
            conn.execute(sa.update(_learnwares).where(_learnwares.c.island_key == m["key"])
                         .values(island_key=new_key))
            conn.execute(sa.delete(_islands).where(_islands.c.key == m["key"]))


def downgrade() -> None:
    conn = op.get_bind()
    now = time.time()
    islands = conn.execute(sa.select(_islands)).mappings().all()
    for isl in islands:
        key = isl["key"]
        island_doc = json.loads(isl["kernel_json"])
        rows = conn.execute(sa.select(_specs.c.id, _specs.c.fit_kernel_json)
                            .where(_specs.c.island_key == key)).all()
        by_kernel: dict[str, list[int]] = defaultdict(list)
        for sid, fit in rows:
            by_kernel[fit or json.dumps({k: v for k, v in island_doc.items() if k != "encoder"})
                      ].append(sid)
        for fit_json, ids in sorted(by_kernel.items()):
            from learndock.spec.kernels import GaussianKernel

            doc = json.loads(fit_json)
            kkey = GaussianKernel.from_dict(doc).key()
            old_key = f"{key}:{kkey}"
            if "encoder" in island_doc:
                doc["encoder"] = island_doc["encoder"]
            conn.execute(sa.insert(_islands).values(
                key=old_key, data_type=isl["data_type"], dimension=isl["dimension"],
                schema_hash=isl["schema_hash"], kernel_key=kkey, kernel_json=json.dumps(doc),
                feature_names_json=isl["feature_names_json"], rff_seed=_seed(old_key),
                rff_dim=isl["rff_dim"], generation=int(isl["generation"]) + 1, created_at=now,
                kernel_version=1))
            _rescore(conn, ids, doc, isl["rff_dim"], _seed(old_key), old_key, 1)
        # each learnware goes with its current version's (first) spec
        for lid, vid in conn.execute(sa.select(_learnwares.c.id, _learnwares.c.current_version_id)
                                     .where(_learnwares.c.island_key == key)).all():
            new = conn.execute(sa.select(_specs.c.island_key).where(_specs.c.version_id == vid)
                               .order_by(_specs.c.id)).scalars().first()
            conn.execute(sa.update(_learnwares).where(_learnwares.c.id == lid)
                         .values(island_key=new))
    op.drop_table("island_kernels")
    for isl in islands:
        conn.execute(sa.delete(_islands).where(_islands.c.key == isl["key"]))
    for table, column in (("specs", "fit_kernel_json"), ("specs", "kernel_version"),
                          ("islands", "kernel_version"), ("islands", "kernel_checked_n")):
        if conn.dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
