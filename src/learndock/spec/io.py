"""Load any statistical spec from JSON by its ``type`` field (ours or the reference's)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from learndock.config import ArchiveLimits
from learndock.errors import SpecError
from learndock.spec.embedding import RKMEImageSpec, RKMETextSpec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.reference import (
    REFERENCE_IMAGE_TYPE,
    REFERENCE_TEXT_TYPE,
    from_reference_image_dict,
    from_reference_text_dict,
)
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
# The reference's image and text RKMEs, kept in their own spaces (learndock.spec.reference).
_LOADERS[REFERENCE_TEXT_TYPE] = from_reference_text_dict
_LOADERS[REFERENCE_IMAGE_TYPE] = from_reference_image_dict


#: What building a spec from hostile JSON can raise besides SpecError (ragged or nested
#: arrays, numbers too large for an int, wrong container types).
_BUILD_ERRORS = (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError,
                 RecursionError)
#: Bytes per JSON number assumed by the spec file size cap (``-1.2345678901234567e-123,``
#: plus indentation).
_BYTES_PER_NUMBER = 32
#: Room for the kernel, fit diagnostics and encoder description beside z and beta.
_SLACK_VALUES = 4096


def _points_cap(limits: ArchiveLimits, user: bool) -> tuple[int, str]:
    if user:
        return limits.max_user_spec_points, "LEARNDOCK_ZIP_MAX_USER_SPEC_POINTS"
    return limits.max_spec_points, "LEARNDOCK_ZIP_MAX_SPEC_POINTS"


def _max_values(limits: ArchiveLimits, user: bool) -> int:
    """Most JSON values (numbers, arrays, objects) a spec within the caps can hold."""
    k, _ = _points_cap(limits, user)
    d = limits.max_spec_dimension
    return min(k * (d + 1), limits.max_spec_values + k) + d + _SLACK_VALUES


def max_spec_json_bytes(limits: ArchiveLimits | None = None, *, user: bool = False) -> int:
    """Largest spec JSON file read at all: what K and d at their caps need, plus 1 MiB."""
    return _BYTES_PER_NUMBER * _max_values(limits or ArchiveLimits(), user) + (1 << 20)


def _shape_of_first(x: Any) -> list[int]:
    """Lengths along the first elements of nested lists (cheap: no array is built)."""
    dims = []
    while isinstance(x, list) and len(dims) < 64:
        dims.append(len(x))
        if not x:
            break
        x = x[0]
    return dims


def check_spec_dict(d: Any, limits: ArchiveLimits | None = None, *, user: bool = False) -> None:
    """Cheap caps on raw spec JSON, *before* any array is built: the number of reduced points
    and weights, the dimension (of z's first point and of the kernel scale) and gamma."""
    limits = limits or ArchiveLimits()
    if not isinstance(d, dict):
        raise SpecError("a statistical spec must be a JSON object")
    cap, env = _points_cap(limits, user)
    for key in ("z", "beta"):
        v = d.get(key)
        if isinstance(v, list) and len(v) > cap:
            raise SpecError(
                f"spec has {len(v)} {'reduced points' if key == 'z' else 'weights'}; the limit "
                f"is {cap} ({env}) -- fit it with fewer points (n_points)"
            )
    dim_cap = limits.max_spec_dimension
    shape = _shape_of_first(d.get("z"))
    dim = math.prod(shape[1:]) if len(shape) > 1 else 0
    kernel = d.get("kernel")
    scale = kernel.get("scale") if isinstance(kernel, dict) else None
    if isinstance(scale, list):
        dim = max(dim, len(scale))
    if dim > dim_cap:
        raise SpecError(
            f"spec has dimension {dim}; the limit is {dim_cap} (LEARNDOCK_ZIP_MAX_SPEC_DIMENSION)"
        )
    _check_values(len(d["z"]) if isinstance(d.get("z"), list) else 0, dim, limits)
    gamma = kernel.get("gamma") if isinstance(kernel, dict) else d.get("gamma")
    if isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        g = float(gamma) if not isinstance(gamma, int) or abs(gamma) < 10**300 else math.inf
        if math.isfinite(g) and g > 0:  # otherwise the kernel itself says what is wrong
            _check_gamma(g, limits)


def _check_values(k: int, d: int, limits: ArchiveLimits) -> None:
    if k * d > limits.max_spec_values:
        raise SpecError(
            f"spec holds {k} x {d} = {k * d} numbers; the limit is {limits.max_spec_values} "
            "(LEARNDOCK_ZIP_MAX_SPEC_VALUES) -- fit it with fewer points (n_points)"
        )


def _check_gamma(gamma: float, limits: ArchiveLimits) -> None:
    if not (math.isfinite(gamma) and limits.min_gamma <= gamma <= limits.max_gamma):
        raise SpecError(
            f"kernel gamma {gamma:g} is outside the accepted range "
            f"[{limits.min_gamma:g}, {limits.max_gamma:g}] (LEARNDOCK_ZIP_MIN_GAMMA, "
            "LEARNDOCK_ZIP_MAX_GAMMA): every pair of points would look "
            + ("identical" if gamma < limits.min_gamma else "unrelated")
        )


def stat_spec_from_dict(
    d: Any,
    limits: ArchiveLimits | None = None,
    *,
    user: bool = False,
    default_type: str | None = None,
) -> StatSpec:
    """Build any statistical spec from its JSON dict (ours or the reference's), within
    ``limits`` (default caps; ``user=True`` for specs sent to search): raw sizes are checked
    before arrays are built, the built spec by :func:`validate_stat_spec`. ``default_type``
    is the type of a JSON without a ``type`` field (older reference specs carry none; their
    ``learnware.yaml`` names the class)."""
    limits = limits or ArchiveLimits()
    if not isinstance(d, dict):
        raise SpecError("a statistical spec must be a JSON object")
    if d.get("type") is None and default_type is not None:
        d = {**d, "type": default_type}
    t = d.get("type")
    loader = _LOADERS.get(t) if isinstance(t, str) else None
    if loader is None:
        shown = repr(t) if isinstance(t, str) and len(t) <= 100 else type(t).__name__
        raise SpecError(f"unknown statistical spec type {shown}; known: {sorted(_LOADERS)}")
    check_spec_dict(d, limits, user=user)
    try:
        spec = loader(d)
    except SpecError:
        raise
    except _BUILD_ERRORS as exc:
        raise SpecError(f"spec JSON is malformed: {type(exc).__name__}: {exc}") from None
    return validate_stat_spec(spec, limits, user=user)


def load_stat_spec(
    path: str | Path,
    limits: ArchiveLimits | None = None,
    *,
    user: bool = False,
    default_type: str | None = None,
) -> StatSpec:
    """Read a spec JSON file within ``limits``: its size and its count of JSON values are
    checked before it is parsed (so a file of a million empty arrays never becomes a million
    objects), the point count before arrays are built. ``default_type``: see
    :func:`stat_spec_from_dict`."""
    limits = limits or ArchiveLimits()
    path = Path(path)
    cap_bytes = max_spec_json_bytes(limits, user=user)
    try:
        size = path.stat().st_size
        if size > cap_bytes:
            raise SpecError(
                f"spec file {path.name} is {size} bytes; specs within the limits on points and "
                f"dimension (LEARNDOCK_ZIP_MAX_{'USER_' if user else ''}SPEC_POINTS, "
                f"LEARNDOCK_ZIP_MAX_SPEC_DIMENSION) are at most {cap_bytes} bytes"
            )
        with open(path, "rb") as f:
            raw = f.read(min(size, cap_bytes) + 1)  # read(n) allocates n bytes up front
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path.name}: {exc.strerror or exc}") from None
    if len(raw) > size:  # it grew while we looked
        raise SpecError(f"spec file {path.name} changed while it was read")
    values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > _max_values(limits, user):
        raise SpecError(
            f"spec file {path.name} holds about {values} JSON values; a spec within the limits "
            f"on points and dimension holds at most {_max_values(limits, user)}"
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"spec file {path.name} is not valid JSON: {exc}") from None
    except RecursionError:
        raise SpecError(f"spec file {path.name} is not valid JSON: nested too deeply") from None
    return stat_spec_from_dict(data, limits, user=user, default_type=default_type)


def validate_stat_spec(
    spec: StatSpec, limits: ArchiveLimits | None = None, *, user: bool = False
) -> StatSpec:
    """Refuse a spec whose size or numbers would make the dock do unbounded or meaningless work.

    Checked *before* any Gram matrix is built: the number of reduced points (``user=True``
    applies the search-side cap), the dimension, the magnitude of the coordinates after the
    kernel's per-feature scaling, and the kernel's gamma. Each message says what is wrong and
    which limit (``LEARNDOCK_ZIP_*``) governs it.
    """
    limits = limits or ArchiveLimits()
    k, d = spec.z.shape
    cap, env = _points_cap(limits, user)
    if k > cap:
        raise SpecError(
            f"spec has {k} reduced points; the limit is {cap} ({env}) "
            "-- fit it with fewer points (n_points)"
        )
    if d > limits.max_spec_dimension:
        raise SpecError(
            f"spec has dimension {d}; the limit is {limits.max_spec_dimension} "
            "(LEARNDOCK_ZIP_MAX_SPEC_DIMENSION)"
        )
    _check_values(k, d, limits)
    _check_gamma(spec.kernel.gamma, limits)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.abs(spec.z) / spec.kernel.scale
        worst = float(scaled.max()) if scaled.size else 0.0
    if not np.isfinite(worst) or worst > limits.max_abs_coordinate:
        raise SpecError(
            f"spec coordinates reach {worst:.3g} (after the kernel's scaling); the limit is "
            f"{limits.max_abs_coordinate:g} (LEARNDOCK_ZIP_MAX_ABS_COORDINATE) -- standardise "
            "the features or give the kernel a matching scale"
        )
    return spec


def load_kernel(path: str | Path, limits: ArchiveLimits | None = None) -> GaussianKernel:
    """The kernel in a file: an island's kernel file (``learndock market kernel ISLAND -o``,
    ``{"kernel": {...}, ...}``), a bare kernel (``{"gamma": ..., "scale": [...]}``) or any
    statistical spec JSON (its fitting kernel). Fit a spec with it to match an island
    sharply."""
    limits = limits or ArchiveLimits()
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_spec_json_bytes(limits, user=True):
            raise SpecError(f"kernel file {path.name} is {size} bytes: too large")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SpecError(f"kernel file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SpecError(f"kernel file {path.name} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise SpecError(f"cannot read kernel file {path.name}: {exc.strerror or exc}") from None
    if isinstance(data, dict) and isinstance(data.get("kernel"), dict) and "z" not in data:
        data = data["kernel"]
    if isinstance(data, dict) and "gamma" in data and "z" not in data:
        kernel = GaussianKernel.from_dict({k: v for k, v in data.items() if k != "encoder"})
        if kernel.dimension > limits.max_spec_dimension:
            raise SpecError(f"kernel dimension {kernel.dimension} exceeds "
                            f"LEARNDOCK_ZIP_MAX_SPEC_DIMENSION={limits.max_spec_dimension}")
        _check_gamma(kernel.gamma, limits)
        return kernel
    return stat_spec_from_dict(data, limits, user=True).kernel
