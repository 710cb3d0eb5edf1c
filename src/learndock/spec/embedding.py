"""RKME specs of images and texts: a table RKME in a fixed encoder's embedding space.

The reduced set lives in embedding space (unit-norm vectors), not in pixel or token space:
the spec never stores an image or a sentence, and one kernel -- the encoder followed by a
Gaussian with the encoder's fixed gamma -- is used both to build specs and to compare them.
The spec records the encoder's identity (name + weights hash); comparing specs built with
different encoders raises :class:`~learndock.errors.EncoderMismatchError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from learndock.errors import EncoderMismatchError, SpecError
from learndock.spec.encoders import Encoder, FashionCNNEncoder, MiniLMEncoder, encoder_from_info
from learndock.spec.kernels import DEFAULT_BATCH_ROWS, GaussianKernel
from learndock.spec.table import FORMAT_VERSION, RKMETableSpec, _data_terms, _jsonable

#: Default ``tol`` of image and text spec fits (the table default is 0.02; see ``fit``).
EMBEDDING_TOL = 0.002


def kernel_of(encoder: Encoder) -> GaussianKernel:
    """The fixed kernel every spec of ``encoder`` uses (unit scale, the encoder's gamma)."""
    return GaussianKernel(encoder.gamma, np.ones(encoder.dimension))


@dataclass(frozen=True, eq=False)
class RKMEEmbeddingSpec(RKMETableSpec):
    """Base of the image and text specs; ``encoder`` is the encoder's :meth:`info` dict."""

    encoder: dict[str, Any] = field(default_factory=dict)

    type_name: ClassVar[str] = "rkme-embedding"
    data_type: ClassVar[str] = ""
    privacy_guard_default: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.encoder, dict) or not self.encoder.get("id"):
            raise SpecError(f"{self.type_name} spec must record its encoder (name and id)")

    @property
    def encoder_id(self) -> str:
        return str(self.encoder["id"])

    @classmethod
    def default_encoder(cls, **kwargs: Any) -> Encoder:
        raise NotImplementedError

    @classmethod
    def fit(  # type: ignore[override]
        cls,
        X: Any,
        n_points: int = 100,
        *,
        encoder: Encoder | None = None,
        embeddings: np.ndarray | None = None,
        progress: bool | None = None,
        privacy_guard: bool | None = None,
        **kwargs: Any,
    ) -> RKMEEmbeddingSpec:
        """Encode ``X`` (or take precomputed ``embeddings`` of it from the same encoder) and
        fit the RKME under the encoder's fixed kernel. ``privacy_guard`` (default: on for
        images, off for texts, whose small corpora make every point near some article) drops
        reduced points that are near-copies of a training sample. Other keywords go to
        :meth:`RKMETableSpec.fit` (``random_state``, ``max_iter``, ``tol``, ...)."""
        if "kernel" in kwargs or "gamma" in kwargs or "scale" in kwargs:
            raise SpecError(f"the kernel of a {cls.type_name} spec is fixed by its encoder")
        encoder = encoder or cls.default_encoder()
        if encoder.kind != cls.data_type.lower():
            raise SpecError(f"a {encoder.kind} encoder cannot build a {cls.type_name} spec")
        E = encoder.encode(X, progress=progress) if embeddings is None else np.asarray(embeddings)
        if E.ndim != 2 or E.shape[1] != encoder.dimension:
            raise SpecError(f"embeddings must be (n, {encoder.dimension}), got {E.shape}")
        if embeddings is not None and len(X) != E.shape[0]:
            raise SpecError(f"{E.shape[0]} embeddings given for {len(X)} inputs")
        # Embedded samples are few and far apart (E k(x, x') ~ 0), so a spec fits them far below
        # the table fit's 1/m resolution rule; a tighter tol keeps optimising until the
        # reduced points have moved off the samples they started on (the privacy guard below
        # would otherwise drop them and lose accuracy).
        kwargs.setdefault("tol", EMBEDDING_TOL)
        base = RKMETableSpec.fit(E, n_points, kernel=kernel_of(encoder), progress=progress,
                                 **kwargs)
        guard = cls.privacy_guard_default if privacy_guard is None else privacy_guard
        z, beta, info = (_drop_near_copies(base, E) if guard
                         else (base.z, base.beta, dict(base.fit_info)))
        return cls(z, beta, base.kernel, n_samples=base.n_samples, fit_info=info,
                   encoder=encoder.info())

    def encode(self, X: Any, **kwargs: Any) -> np.ndarray:
        """Embed raw inputs with this spec's encoder (rebuilt once, verified by identity)."""
        if kwargs:
            return encoder_from_info(self.encoder, **kwargs).encode(X)
        return self._encoder.encode(X)

    @cached_property
    def _encoder(self) -> Encoder:
        return encoder_from_info(self.encoder)

    # ------------------------------------------------------------------ comparisons
    def _check(self, other: RKMETableSpec) -> None:
        if type(other).type_name != self.type_name:
            raise SpecError(f"cannot compare a {self.type_name} spec with a "
                            f"{type(other).type_name} spec")
        assert isinstance(other, RKMEEmbeddingSpec)
        if other.encoder_id != self.encoder_id:
            raise EncoderMismatchError(
                f"cannot compare {self.type_name} specs built with different encoders "
                f"({self.encoder_id} vs {other.encoder_id}); rebuild one with the other's encoder"
            )
        self.kernel.check_same(other.kernel)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["type"] = self.type_name
        d["encoder"] = _jsonable(self.encoder)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RKMEEmbeddingSpec:
        if not isinstance(d, dict):
            raise SpecError("spec JSON must be an object")
        if d.get("type") != cls.type_name:
            raise SpecError(f"not a {cls.type_name} spec: type is {d.get('type')!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise SpecError(f"unsupported {cls.type_name} format_version "
                            f"{d.get('format_version')!r}")
        if not isinstance(d.get("encoder"), dict):
            raise SpecError(f"{cls.type_name} spec JSON is missing its encoder")
        base = RKMETableSpec.from_dict({**d, "type": RKMETableSpec.type_name})
        return cls(base.z, base.beta, base.kernel, n_samples=base.n_samples,
                   fit_info=base.fit_info, encoder=dict(d["encoder"]))

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256((super().fingerprint() + self.encoder_id).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class RKMEImageSpec(RKMEEmbeddingSpec):
    """RKME of images; default encoder :class:`~learndock.spec.encoders.FashionCNNEncoder`
    (trained once on Fashion-MNIST; look-alike classes sit farther apart than under the
    random-conv net);
    pass ``encoder=RandomConvEncoder()`` for the old one. The encoder id is part of the spec
    and of its island key, so specs of the two encoders are never compared."""

    type_name: ClassVar[str] = "rkme-image"
    data_type: ClassVar[str] = "Image"
    privacy_guard_default: ClassVar[bool] = True  # pixel-like data: no near-copies published

    @classmethod
    def default_encoder(cls, **kwargs: Any) -> Encoder:
        return FashionCNNEncoder(**kwargs)


@dataclass(frozen=True, eq=False)
class RKMETextSpec(RKMEEmbeddingSpec):
    """RKME of texts under :class:`~learndock.spec.encoders.MiniLMEncoder`."""

    type_name: ClassVar[str] = "rkme-text"
    data_type: ClassVar[str] = "Text"

    @classmethod
    def default_encoder(cls, **kwargs: Any) -> Encoder:
        return MiniLMEncoder(**kwargs)


def _drop_near_copies(spec: RKMETableSpec, E: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                     dict[str, Any]]:
    """Privacy guard: a reduced point that sits closer to one training embedding than training
    samples sit to each other (ratio < NEAR_COPY_RATIO) is dropped and the weights re-solved
    on the rest, so a published spec holds no near-copy of a training sample."""
    from learndock.spec.privacy import NEAR_COPY_RATIO, near_copy_ratios
    from learndock.spec.qp import simplex_qp

    info = dict(spec.fit_info)
    ratios, _ = near_copy_ratios(np.asarray(spec.z), np.asarray(E, dtype=np.float64))
    keep = ratios >= NEAR_COPY_RATIO
    info["privacy_dropped"] = int((~keep).sum())
    if keep.all() or not keep.any():
        return np.asarray(spec.z), np.asarray(spec.beta), info
    z = np.asarray(spec.z)[keep]  # unit kernel scale: embeddings are the kernel's units
    c, _ = _data_terms(np.asarray(E, dtype=np.float64), z, spec.kernel.gamma, DEFAULT_BATCH_ROWS,
                       need_grad=False)
    beta = simplex_qp(spec.kernel.gram(z, z), c)
    beta = np.maximum(beta, 0.0)
    return z, beta / beta.sum(), info


def generate_image_spec(X: Any, n_points: int = 100, **kwargs: Any) -> RKMEImageSpec:
    """Functional alias of :meth:`RKMEImageSpec.fit`."""
    return RKMEImageSpec.fit(X, n_points, **kwargs)  # type: ignore[return-value]


def generate_text_spec(X: Any, n_points: int = 100, **kwargs: Any) -> RKMETextSpec:
    """Functional alias of :meth:`RKMETextSpec.fit`."""
    return RKMETextSpec.fit(X, n_points, **kwargs)  # type: ignore[return-value]
