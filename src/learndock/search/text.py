"""Full-text ranking over learnware names and descriptions.

SQLite uses its FTS5 index (bm25), PostgreSQL its built-in full-text search (ts_rank over an
expression index). The user's words are OR-ed: a long task description should rank the
learnwares that share most of its words first, not require all of them.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

_WORD = re.compile(r"[A-Za-z0-9]+")
_STOP = {
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "with", "my", "i", "we", "our", "data",
}


def query_terms(q: str, limit: int = 32) -> list[str]:
    seen: dict[str, None] = {}
    for w in _WORD.findall(q.lower()):
        if w not in _STOP and len(w) > 1:
            seen.setdefault(w, None)
    return list(seen)[:limit]


def rank_text(conn: Connection, q: str, limit: int = 10_000) -> dict[str, float]:
    """learnware id -> relevance (higher is better; only matching learnwares appear)."""
    terms = query_terms(q)
    if not terms:
        return {}
    if conn.dialect.name == "sqlite":
        match = " OR ".join(f'"{t}"' for t in terms)
        rows = conn.execute(
            text(
                "SELECT learnware_id, bm25(learnware_fts, 10.0, 1.0) AS r FROM learnware_fts "
                "WHERE learnware_fts MATCH :m ORDER BY r LIMIT :lim"
            ),
            {"m": match, "lim": limit},
        ).all()
        return {r[0]: float(-r[1]) for r in rows}
    if conn.dialect.name == "postgresql":
        tsq = " | ".join(terms)
        rows = conn.execute(
            text(
                "SELECT id, ts_rank(to_tsvector('english', title || ' ' || description), "
                "to_tsquery('english', :q)) AS r FROM learnwares "
                "WHERE deleted_at IS NULL AND to_tsvector('english', title || ' ' || description)"
                " @@ to_tsquery('english', :q) ORDER BY r DESC LIMIT :lim"
            ),
            {"q": tsq, "lim": limit},
        ).all()
        return {r[0]: float(r[1]) for r in rows}
    # Other databases: a plain token-overlap ranking, computed in Python.
    rows = conn.execute(
        text("SELECT id, title, description FROM learnwares WHERE deleted_at IS NULL")
    ).all()
    out = {}
    for lid, title, desc in rows:
        words = set(_WORD.findall(f"{title} {desc}".lower()))
        hits = sum(1 for t in terms if t in words)
        if hits:
            out[lid] = float(hits)
    return out
