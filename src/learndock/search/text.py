"""Full-text ranking over learnware names and descriptions, in any language.

Both databases index the same document: title and description with every Han and kana
character set apart by spaces (Chinese and Japanese are written without spaces, so otherwise
a whole clause would be one "word" and "天气预报" would never find "天气预报模型"). SQLite
indexes it with FTS5's ``unicode61 remove_diacritics 2`` tokenizer (case- and accent-blind),
PostgreSQL with the ``simple`` configuration (lower-cased; no stemming and no stop-word list,
which are English-only and would mangle other languages). Neither stems English any more: a
word matches as written, whatever its language.

The user's words are OR-ed: a long task description should rank the learnwares that share
most of its words first, not require all of them. A run of Han/kana characters is searched as
the phrase of its characters. A query whose words match nothing finds nothing.
"""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy import text
from sqlalchemy.engine import Connection

#: Scripts written without spaces between words: kana, CJK ideographs (+ extension A and
#: compatibility ideographs). One pattern for Python's ``re`` and PostgreSQL's regexes.
CJK_CLASS = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_CJK = re.compile(f"({CJK_CLASS})")
#: The indexed document on PostgreSQL (an expression index of migration 0002 has exactly this
#: text; change it only together with a new migration).
PG_DOCUMENT = (
    "to_tsvector('simple', regexp_replace(title || ' ' || description, "
    f"'({CJK_CLASS})', ' \\1 ', 'g'))"
)
_STOP = {
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "with", "my", "i", "we", "our", "data",
}
#: Only this much of a query is read (a query is a few words, not a document).
_MAX_QUERY_CHARS = 4096


def fts_text(s: str) -> str:
    """The text the index holds for ``s``: Han/kana characters set apart (see the module doc)."""
    return _CJK.sub(r" \1 ", s)


def words(s: str) -> list[str]:
    """Words of any script: runs of letters, digits and combining marks.

    Like ``re.findall(r"\\w+")`` but keeping combining marks inside a word (Devanagari vowel
    signs, decomposed accents), which ``\\w`` splits on; ``_`` separates words, as it does for
    both databases' tokenizers.
    """
    s = unicodedata.normalize("NFC", s)
    return "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in s).split()


def query_terms(q: str, limit: int = 32) -> list[str]:
    """The distinct searchable terms of a query, lower-cased (plus a case-folded variant when it
    differs, e.g. ``straße`` and ``strasse``); a Han/kana run becomes the phrase of its
    characters. English stop words and single ASCII characters are not searched."""
    seen: dict[str, None] = {}
    for w in words(q[:_MAX_QUERY_CHARS]):
        low = w.lower()
        if low in _STOP or (len(low) == 1 and low.isascii()):
            continue
        for v in (low, w.casefold()):
            seen.setdefault(" ".join(fts_text(v).split()), None)
    return list(seen)[:limit]


def rank_text(conn: Connection, q: str, limit: int = 10_000) -> dict[str, float]:
    """learnware id -> relevance (higher is better; only matching, searchable learnwares)."""
    terms = query_terms(q)
    if not terms:
        return {}
    if conn.dialect.name == "sqlite":
        match = " OR ".join(f'"{t}"' for t in terms)  # terms hold no quotes: see words()
        rows = conn.execute(
            text(
                "SELECT learnware_id, bm25(learnware_fts, 10.0, 1.0) AS r FROM learnware_fts "
                "WHERE learnware_fts MATCH :m ORDER BY r LIMIT :lim"
            ),
            {"m": match, "lim": limit},
        ).all()
        return {r[0]: float(-r[1]) for r in rows}
    params: dict[str, object] = {f"t{i}": t for i, t in enumerate(terms)}
    params["lim"] = limit
    if conn.dialect.name == "postgresql":
        tsq = " || ".join(f"phraseto_tsquery('simple', :t{i})" for i in range(len(terms)))
        rows = conn.execute(
            text(
                f"SELECT id, ts_rank({PG_DOCUMENT}, ({tsq})) AS r FROM learnwares "
                "WHERE deleted_at IS NULL AND current_version_id IS NOT NULL "
                f"AND {PG_DOCUMENT} @@ ({tsq}) ORDER BY r DESC, id LIMIT :lim"
            ),
            params,
        ).all()
        return {r[0]: float(r[1]) for r in rows}
    # Other databases: term (or phrase) overlap, computed in Python.
    rows = conn.execute(
        text(
            "SELECT id, title, description FROM learnwares "
            "WHERE deleted_at IS NULL AND current_version_id IS NOT NULL"
        )
    ).all()
    out = {}
    for lid, title, desc in rows:
        doc = f" {' '.join(w.lower() for w in words(fts_text(f'{title} {desc}')))} "
        hits = sum(1 for t in terms if f" {t} " in doc)
        if hits:
            out[lid] = float(hits)
    return out
