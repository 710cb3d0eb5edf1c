"""Load any statistical spec from JSON by its ``type`` field (ours or the reference's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from learndock.errors import SpecError
from learndock.spec.embedding import RKMEImageSpec, RKMETextSpec
from learndock.spec.table import REFERENCE_TYPES, SPEC_TYPE, RKMETableSpec

#: Every statistical spec is an RKME in some vector space (image/text specs subclass the table
#: spec, in their encoder's embedding space).
StatSpec = RKMETableSpec

_LOADERS = {
    SPEC_TYPE: RKMETableSpec.from_dict,
    RKMEImageSpec.type_name: RKMEImageSpec.from_dict,
    RKMETextSpec.type_name: RKMETextSpec.from_dict,
}
for _t in REFERENCE_TYPES:
    _LOADERS[_t] = RKMETableSpec.from_reference_dict


def stat_spec_from_dict(d: Any) -> StatSpec:
    if not isinstance(d, dict):
        raise SpecError("a statistical spec must be a JSON object")
    t = d.get("type")
    loader = _LOADERS.get(t)
    if loader is None:
        raise SpecError(f"unknown statistical spec type {t!r}; known: {sorted(_LOADERS)}")
    return loader(d)


def load_stat_spec(path: str | Path) -> StatSpec:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"spec file {path.name} is not valid JSON: {exc}") from None
    return stat_spec_from_dict(data)
