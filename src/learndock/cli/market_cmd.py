"""``learndock market ...`` (filled in by the market layer)."""

from __future__ import annotations
