"""The reference engine's image and text RKMEs, stored as what they are.

The reference engine (PyPI ``learnware``) writes three RKME classes; table specs load as our
:class:`~learndock.spec.table.RKMETableSpec` (an RBF of the recorded gamma on raw features).
The other two live in spaces learndock cannot build specs in, so they are kept with an honest
description of that space in the spec's ``encoder`` record (which the market stores with the
island's kernel), never silently mapped into one of our encoders' spaces:

- ``RKMETextSpecification``: reduced set in the 384-d sentence embedding space of
  ``sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2`` (not normalised), RBF with the
  recorded gamma (0.1 by default). Stored as an :class:`~learndock.spec.RKMETextSpec` whose
  encoder id names that model: it is comparable with other reference text specs of the same
  encoder and gamma (same island), never with specs of learndock's encoder (a different
  island; the market says so). learndock cannot encode texts into that space, so a user spec
  built with learndock never reaches that island.
- ``RKMEImageSpecification``: reduced set in *pixel* space (``C x 32 x 32``, after the
  submitter's own per-channel standardisation and, for colour images, ZCA whitening -- so two
  submitters' specs are not even in the same space), compared by the reference under a
  CNN-GP (NNGP) kernel that learndock does not implement. Stored as an
  :class:`~learndock.spec.RKMEImageSpec` flagged ``comparable: false`` with an encoder id unique
  to the spec (its island holds it alone); the Gaussian kernel stored with it is a placeholder
  that only keeps the spec well-formed and is never used to compare it with another spec.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from learndock.errors import SpecError
from learndock.spec.embedding import RKMEImageSpec, RKMETextSpec
from learndock.spec.kernels import GaussianKernel
from learndock.spec.table import REFERENCE_TYPES, RKMETableSpec

REFERENCE_TEXT_TYPE = "RKMETextSpecification"
REFERENCE_IMAGE_TYPE = "RKMEImageSpecification"
#: Reference spec class name -> our spec type (the manifest's ``stat_specs[].type``).
REFERENCE_SPEC_KINDS = {
    **{t: "rkme-table" for t in REFERENCE_TYPES},
    REFERENCE_TEXT_TYPE: "rkme-text",
    REFERENCE_IMAGE_TYPE: "rkme-image",
}
#: The reference's sentence encoder (``learnware/specification/regular/text/rkme.py``).
REFERENCE_TEXT_ENCODER = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
REFERENCE_TEXT_DIM = 384
#: Languages kept from a reference text spec (langdetect codes).
_MAX_LANGUAGES = 64


def _languages(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        return []
    return [str(x)[:16] for x in raw[:_MAX_LANGUAGES] if isinstance(x, str)]


def from_reference_text_dict(d: dict[str, Any]) -> RKMETextSpec:
    """A reference ``RKMETextSpecification`` JSON as an ``rkme-text`` spec in the reference
    encoder's space (see the module docstring for what it is comparable with)."""
    base = RKMETableSpec.from_reference_dict({**d, "type": "RKMETableSpecification"})
    dim = base.dimension
    known = dim == REFERENCE_TEXT_DIM
    encoder = {
        "kind": "text",
        "name": f"reference:{REFERENCE_TEXT_ENCODER}" if known else "reference:unknown-text-encoder",
        "id": (f"reference:{REFERENCE_TEXT_ENCODER}" if known
               else f"reference:unknown-text-encoder-d{dim}"),
        "dimension": dim,
        "gamma": base.kernel.gamma,
        "normalised": False,
        "language": _languages(d.get("language")),
        "source": "reference engine (PyPI learnware) RKMETextSpecification",
        "comparable": True,
        "comparable_with": (
            "reference text specs built with the same sentence encoder and the same gamma "
            "(their island); never with specs of learndock's text encoder"
        ),
        "can_encode": False,
        "note": (
            f"RBF (gamma {base.kernel.gamma:g}) on raw {dim}-d embeddings of "
            + (REFERENCE_TEXT_ENCODER if known else "an unknown sentence encoder")
            + "; learndock cannot embed texts in this space, so searches with a learndock text "
            "spec never reach this island and reusers that embed texts cannot use this spec"
        ),
    }
    info = {"source": "reference", "reference_type": REFERENCE_TEXT_TYPE}
    return RKMETextSpec(base.z, base.beta, base.kernel, n_samples=base.n_samples, fit_info=info,
                        encoder=encoder)


def from_reference_image_dict(d: dict[str, Any]) -> RKMEImageSpec:
    """A reference ``RKMEImageSpecification`` JSON, kept as an ``rkme-image`` spec that is
    flagged as comparable with nothing (see the module docstring)."""
    try:
        z = np.asarray(d["z"], dtype=np.float64)
        beta = np.asarray(d["beta"], dtype=np.float64).reshape(-1)
    except KeyError as exc:
        raise SpecError(f"reference image spec JSON is missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(f"reference image spec JSON has malformed arrays: {exc}") from None
    if z.ndim < 2 or z.shape[0] == 0:
        raise SpecError(f"reference image spec z must be (K, C, H, W), got shape {z.shape}")
    sample_shape = [int(s) for s in z.shape[1:]]
    # Weights as the table loader takes them: simplex only, normalised.
    base = RKMETableSpec.from_reference_dict(
        {"z": z.reshape(z.shape[0], -1), "beta": beta, "gamma": 1.0, "num_points": 0}
    )
    dim = base.dimension
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(base.z, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(base.beta, dtype="<f8").tobytes())
    model_config = d.get("model_config") if isinstance(d.get("model_config"), dict) else {}
    encoder = {
        "kind": "image",
        "name": "reference:rkme-image-pixels",
        "id": f"reference-image:{digest.hexdigest()[:16]}",
        "dimension": dim,
        "sample_shape": sample_shape,
        "source": "reference engine (PyPI learnware) RKMEImageSpecification "
                  f"v{d.get('RKME_IMAGE_VERSION', '?')}",
        "reference_kernel": {
            "name": "CNN-GP (NNGP) kernel of a 3-layer ReLU conv net",
            "n_models": d.get("n_models") if isinstance(d.get("n_models"), int) else None,
            "model_config": {str(k)[:32]: v for k, v in list(model_config.items())[:16]
                             if isinstance(v, (int, float, str, type(None)))},
        },
        "space": (
            f"pixels ({'x'.join(map(str, sample_shape))}) after the submitter's own "
            "per-channel standardisation and, for colour images, ZCA whitening"
        ),
        "comparable": False,
        "comparable_with": "nothing in learndock (its island holds this spec alone)",
        "can_encode": False,
        "note": (
            "learndock has no CNN-GP kernel, and each submitter's whitening puts the reduced set "
            "in a space of its own, so this spec is kept for provenance and compared with "
            "nothing; the Gaussian kernel stored with it is a placeholder that only keeps the "
            "spec well-formed. Its reduced set is in pixel space and may resemble training "
            "images."
        ),
    }
    kernel = GaussianKernel(1.0 / dim, np.ones(dim))  # placeholder: see the encoder note
    info = {"source": "reference", "reference_type": REFERENCE_IMAGE_TYPE,
            "placeholder_kernel": True}
    return RKMEImageSpec(base.z, base.beta, kernel, n_samples=0, fit_info=info, encoder=encoder)


def is_comparable(spec: RKMETableSpec) -> bool:
    """False for specs kept only for provenance (reference image specs)."""
    encoder = getattr(spec, "encoder", None)
    return not (isinstance(encoder, dict) and encoder.get("comparable") is False)
