"""Images: Fashion-MNIST CNN learnwares on 4 classes each, found and reused by 6-class users.

    python -m benchmarks.scenarios.image [--quick] [--encoder fmnist-cnn|random-conv]
        [--users N] [--curve-users N] [--out DIR] [--cache DIR] [--no-progress]

**Market.** Fashion-MNIST (the Debian package ``dataset-fashion-mnist``, through
``learndock.datasets.fashion_mnist``). Each learnware is a small CNN (torch; conv 3x3 -> ReLU ->
max-pool, twice, then a linear layer; seeded; Adam) trained on training images of 4 random
classes in the ratio 0.4 : 0.4 : 0.1 : 0.1, exported to ONNX with the legacy exporter
(``dynamo=False``) behind a wrapper whose outputs are ``label`` (the class ids, gathered from a
constant tensor) and ``probabilities`` (softmax), with an ``RKMEImageSpec`` of its training
images under the chosen encoder (``--encoder``: ``fmnist-cnn`` = ``FashionCNNEncoder``, the
default, trained on the Fashion-MNIST *training* split with its labels, i.e. in-domain here;
``random-conv`` = ``RandomConvEncoder``, the earlier default); packed with ``write_package`` +
``pack`` and added with ``Market.add`` (which runs the package checks, model included, in its
sandbox). The trained models (ONNX) and their outputs on the users' images are cached apart
from the encoder, so runs with either encoder reuse *the same* learnwares; markets, specs and
embeddings are cached per encoder (the encoder id is part of their cache keys).

**Users.** Test images of 6 random classes in the ratio 0.3 : 0.3 : 0.1 : 0.1 : 0.1 : 0.1,
unlabeled. A user builds an image spec, searches, and reuses. Rows (error = 1 - accuracy,
averaged over users): mean in market, best in market (oracle: the best accuracy on the user's
images), top-1 reuse, job selector and averaging over the search's mixture (its top
``fallback_top`` learnwares when no mixture is recommended; the report says how often).
Identification: hit-rate@1/@5 of the oracle-best learnware (ties count), regret of the top-1.
**Decision step** (as ``benchmarks/identification.py``): ``learndock.reuse.DecisionStep`` re-ranks
the search's top ``top_k`` by what the models do on the user's unlabeled images (every
criterion is a row; ``auto`` is the default), its label-free recommendation, and averaging of
the search mixture (mixture / equal weights); hit@1 = within eps 0.01 error of the oracle
single learnware, hit@5, regret, bootstrap 95% intervals over users (``summarise`` from
``benchmarks/identification.py``).
Labeled-data curves on the first ``curve_users`` users: the user's own model (logistic regression
on the encoder's features, ``own_model(task, featurizer=...)``) vs ensemble pruning
(top 5 of the ranking) and feature augmentation (top 3), with the same n labels drawn from 70%
of the user's images and tested on the other 30%, mean ± std over repeats of the draw.

**Speed-ups that do not change results.** Every image the run touches is embedded once by the
encoder and kept (``--cache``); specs are fitted from those embeddings (``embeddings=``), which
is what ``RKMEImageSpec.fit`` computes itself -- the run checks that on the first learnware(s),
timing the spec end to end as well. Each learnware's ONNX outputs on the test images are
computed once through ``Learnware.predict``/``predict_proba`` (contract checks included) and
remembered; the reusers get learnwares that answer from that memo, and a spec whose ``encode``
answers from the embedding store, so reuse timings measure the reusers' own work.

**Reference.** Not run side by side: the reference engine's image spec (an RKME in pixel space
under its CNN-GP kernel) takes minutes per spec on this CPU, i.e. hours for this protocol; see
:data:`REFERENCE_NOTE`.

Trained learnwares, the market and the embeddings are cached (``--cache``); a rerun with the
same settings skips training. Results: ``report.md``, ``results.json``, a PNG and a
ready-to-paste ``BENCHMARKS-section.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import describe_machine, machine_info
from benchmarks.identification import CRITERIA, DEFAULT_CRITERION, bootstrap_ci, ci_cell
from benchmarks.identification import summarise as identification_summary
from benchmarks.scenarios.common import (
    REPO_ROOT,
    RESULTS_ROOT,
    Cache,
    Stopwatch,
    fmt,
    fmt_pm,
    fmt_seconds,
    load_average,
    markdown_table,
    mean_std,
    plot_bars,
    plot_curves,
    progress,
    results_dir,
    save_figure,
    single_thread,
    subplots,
    write_json,
)

SCENARIO = "image"
BUILD_VERSION = 1  # bump when the way learnwares are built changes (invalidates the cache)
QUERY = {"data_type": "Image", "task_type": "Classification"}
IMAGE_SHAPE = (28, 28)
REFERENCE_NOTE = (
    "The reference engine is not run side by side here. Its image specification is an RKME "
    "fitted in pixel space under a CNN-GP kernel, which takes minutes per spec on this CPU "
    "(measured by `python -m benchmarks.image_text_specs`); this protocol needs one per learnware and one per user (150 "
    "specs), i.e. hours. A side-by-side would plug in where `run_reference()` is for the "
    "tabular scenario: the same training/user image indices (`learnware_plan`, `user_plan`, "
    "seeded) are all it needs to rebuild this market in its own process."
)


@dataclass(frozen=True)
class Settings:
    quick: bool
    learnwares: int
    train_images: int  # per learnware
    users: int
    user_images: int  # per user
    epochs: int
    k: int  # RKME reduced-set size (learnwares and users)
    n_labels: tuple[int, ...]
    repeats: int
    curve_users: int  # labeled-data curves on the first this many users
    end_to_end_specs: int  # learnwares whose spec is also fitted end to end (encode + fit)
    widths: tuple[int, int] = (8, 16)  # CNN conv channels
    batch_size: int = 64
    lr: float = 2e-3
    lw_ratios: tuple[float, ...] = (0.4, 0.4, 0.1, 0.1)
    user_ratios: tuple[float, ...] = (0.3, 0.3, 0.1, 0.1, 0.1, 0.1)
    fallback_top: int = 3  # multiple rows when no mixture is recommended: the top this many
    # JobSelectorReuser herds about job_herding x (learnwares reused) points from the specs and
    # fits its router on them. Its default (300) costs 10-20 s per user here (herding is
    # superlinear in the points per learnware and the router sees 512-d embeddings; measured on
    # this box, one core: ~12 s at 300 vs ~3.5 s at 100 for a 5-learnware mixture).
    job_herding: int = 100
    top_prune: int = 5
    top_augment: int = 3
    max_mixture: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    encoder: str = "fmnist-cnn"  # ENCODERS key: the specs' (learnwares' and users') encoder
    top_k: int = 10  # the decision step's shortlist: the search's first top_k single matches


FULL = Settings(quick=False, learnwares=50, train_images=12_000, users=100, user_images=3000,
                epochs=3, k=50, n_labels=(10, 20, 50, 100, 200, 500, 1000), repeats=3,
                curve_users=20, end_to_end_specs=2)
QUICK = Settings(quick=True, learnwares=6, train_images=1200, users=6, user_images=300,
                 epochs=3, k=20, n_labels=(10, 50, 150), repeats=1, curve_users=3,
                 end_to_end_specs=1)

ENCODERS = ("fmnist-cnn", "random-conv")
ENCODER_LABELS = {
    "fmnist-cnn": "FashionCNNEncoder (`learndock-fmnist-cnn-v1`, 64-d; trained on the "
                  "Fashion-MNIST training images and their labels: in-domain here)",
    "random-conv": "RandomConvEncoder (`learndock-randconv-v1`, 512-d, fixed random weights)",
}


def make_encoder(key: str) -> Any:
    """The spec encoder of ``--encoder``: ``fmnist-cnn`` (the default) or ``random-conv``."""
    from learndock.spec import FashionCNNEncoder, RandomConvEncoder

    if key == "fmnist-cnn":
        return FashionCNNEncoder()
    if key == "random-conv":
        return RandomConvEncoder(device="cpu")
    raise ValueError(f"unknown encoder {key!r}; choose from {ENCODERS}")


ROWS = [
    ("mean", "Mean in market (single)"),
    ("oracle", "Best in market (single, oracle)"),
    ("top1", "Top-1 reuse (single)"),
    ("job", "Job selector (multiple)"),
    ("avg", "Average ensemble (multiple)"),
]


# ============================================================================ data
@dataclass
class Data:
    X_train: np.ndarray  # (60000, 28, 28) uint8
    y_train: np.ndarray
    X_test: np.ndarray  # (10000, 28, 28) uint8
    y_test: np.ndarray
    classes: list[str]

    def images(self, split: str, rows: np.ndarray) -> np.ndarray:
        """Model/encoder input: float32 pixels in [0, 1], (n, 28, 28)."""
        X = self.X_train if split == "train" else self.X_test
        return X[rows].astype(np.float32) / np.float32(255.0)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.X_train, self.y_train, self.X_test, self.y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def load_data() -> Data:
    from learndock.datasets import fashion_mnist

    Xtr, ytr = fashion_mnist.load("train")
    Xte, yte = fashion_mnist.load("test")
    return Data(Xtr, ytr, Xte, yte, list(fashion_mnist.CLASSES))


def _draw(y: np.ndarray, n_total: int, ratios: tuple[float, ...], n_classes: int,
          rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
    """Random classes (the first ones get the large ratios) and rows in those proportions."""
    classes = [int(c) for c in rng.permutation(10)[:n_classes]]
    counts = [int(round(r * n_total)) for r in ratios]
    rows = [rng.choice(np.flatnonzero(y == c), n, replace=False)
            for c, n in zip(classes, counts, strict=True)]
    return classes, np.sort(np.concatenate(rows))


def learnware_plan(data: Data, s: Settings) -> list[dict[str, Any]]:
    """Per learnware: its 4 classes (majority classes first) and its training rows."""
    out = []
    for i in range(s.learnwares):
        classes, rows = _draw(data.y_train, s.train_images, s.lw_ratios, len(s.lw_ratios),
                              np.random.default_rng([s.seed, 1, i]))
        out.append({"classes": classes, "rows": rows})
    return out


def user_plan(data: Data, s: Settings) -> list[dict[str, Any]]:
    """Per user: 6 classes (majority classes first) and test rows."""
    out = []
    for j in range(s.users):
        classes, rows = _draw(data.y_test, s.user_images, s.user_ratios, len(s.user_ratios),
                              np.random.default_rng([s.seed, 2, j]))
        out.append({"classes": classes, "rows": rows})
    return out


# ============================================================================ embeddings
class EmbeddingStore:
    """Embeddings of one split's images under the market's encoder, computed on demand.

    One matrix per split plus a mask of the rows done, saved in the cache: float32 for the
    random-conv encoder (it computes in float32, so storing float32 loses nothing), float64
    for the others (the trained CNN normalises in float64), so a spec fitted from stored
    embeddings is the spec ``RKMEImageSpec.fit`` builds end to end. ``encode_seconds`` and
    ``encoded`` count this run's work (for the per-image encode rate in the report).
    """

    def __init__(self, cache: Cache, split: str, data: Data, encoder: Any) -> None:
        self.split, self.data, self.encoder = split, data, encoder
        self.path = cache.path(f"embeddings-{split}.npy")
        self.mask_path = cache.path(f"embeddings-{split}-done.npy")
        n = (data.X_train if split == "train" else data.X_test).shape[0]
        self.dtype = np.float32 if encoder.name == "learndock-randconv-v1" else np.float64
        self.E = np.zeros((n, encoder.dimension), self.dtype)
        self.done = np.zeros(n, bool)
        if self.path.exists() and self.mask_path.exists():
            try:
                E, done = np.load(self.path), np.load(self.mask_path)
                if (E.shape == self.E.shape and E.dtype == self.dtype
                        and done.shape == self.done.shape):
                    self.E, self.done = E, done
            except (OSError, ValueError):
                pass  # a torn file: recompute
        self.encode_seconds = 0.0
        self.encoded = 0
        self.dirty = False

    def ensure(self, rows: np.ndarray, chunk: int = 4096) -> None:
        todo = np.unique(rows[~self.done[rows]])
        for start in range(0, todo.size, chunk):
            part = todo[start:start + chunk]
            with Stopwatch() as sw:
                E = self.encoder.encode(self.data.images(self.split, part))
            self.encode_seconds += sw.seconds
            self.encoded += part.size
            self.E[part] = E.astype(self.dtype)
            self.done[part] = True
            self.dirty = True

    def get(self, rows: np.ndarray) -> np.ndarray:
        self.ensure(rows)
        return self.E[rows].astype(np.float64)

    def save(self) -> None:
        if not self.dirty:
            return
        for arr, path in ((self.E, self.path), (self.done, self.mask_path)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, path)
        self.dirty = False


def _keys(X: Any) -> list[bytes]:
    arr = np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1))
    return [row.tobytes() for row in arr]


# ============================================================================ learnwares
def _torch() -> Any:
    import torch

    torch.set_num_threads(1)
    return torch


def make_net(widths: tuple[int, int], n_classes: int) -> Any:
    torch = _torch()
    nn = torch.nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, widths[0], 3, padding=1)
            self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
            self.fc = nn.Linear(widths[1] * (IMAGE_SHAPE[0] // 4) * (IMAGE_SHAPE[1] // 4),
                                n_classes)

        def forward(self, x: Any) -> Any:
            f = torch.nn.functional
            x = f.max_pool2d(f.relu(self.conv1(x)), 2)
            x = f.max_pool2d(f.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))

    return SmallCNN()


def train_cnn(X: np.ndarray, y_idx: np.ndarray, s: Settings, seed: int) -> Any:
    """Adam, cross-entropy, ``s.epochs`` passes over shuffled mini-batches; seeded."""
    torch = _torch()
    torch.manual_seed(seed)
    net = make_net(s.widths, int(y_idx.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    Xt = torch.from_numpy(np.ascontiguousarray(X[:, None]))
    yt = torch.from_numpy(y_idx.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(s.epochs):
        perm = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), s.batch_size):
            b = perm[start:start + s.batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Xt[b]), yt[b])
            loss.backward()
            opt.step()
    return net.eval()


def export_onnx(net: Any, class_ids: list[int]) -> bytes:
    """ONNX bytes with outputs ``label`` (class ids) and ``probabilities`` (softmax)."""
    torch = _torch()

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("ids", torch.tensor(class_ids, dtype=torch.int64))

        def forward(self, x: Any) -> Any:
            logits = self.net(x)
            return self.ids[torch.argmax(logits, dim=1)], torch.softmax(logits, dim=1)

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            Exported().eval(), torch.zeros(1, 1, *IMAGE_SHAPE), buf, input_names=["input"],
            output_names=["label", "probabilities"], dynamo=False,
            dynamic_axes={"input": {0: "n"}, "label": {0: "n"}, "probabilities": {0: "n"}})
    return buf.getvalue()


def _semantic(name: str, classes: list[int], names: list[str], s: Settings) -> dict[str, Any]:
    share = ", ".join(f"{names[c]} {r:.0%}" for c, r in zip(classes, s.lw_ratios, strict=True))
    return {
        "name": name,
        "description": f"Small CNN for 28x28 grey Fashion-MNIST images of 4 classes, trained "
                       f"on {s.train_images:,} images ({share}).",
        "data_type": "Image", "task_type": "Classification", "library_type": "PyTorch",
        "scenarios": ["Fashion"], "license": "MIT",
        "output": {"dimension": len(classes),
                   "descriptions": {i: names[c] for i, c in enumerate(classes)}},
    }


@dataclass
class Built:
    market: Any
    ids: list[str]
    info: dict[str, Any]


def build_config(data: Data, s: Settings, encoder: Any) -> dict[str, Any]:
    return {"build_version": BUILD_VERSION, "data": data.fingerprint(),
            "encoder": encoder.identity, "learnwares": s.learnwares,
            "train_images": s.train_images, "epochs": s.epochs, "k": s.k, "widths": s.widths,
            "batch_size": s.batch_size, "lr": s.lr, "ratios": s.lw_ratios, "seed": s.seed}


def model_config(data: Data, s: Settings) -> dict[str, Any]:
    """What the trained CNNs depend on (not the encoder: both encoders' markets share them)."""
    return {"build_version": BUILD_VERSION, "data": data.fingerprint(),
            "learnwares": s.learnwares, "train_images": s.train_images, "epochs": s.epochs,
            "widths": s.widths, "batch_size": s.batch_size, "lr": s.lr, "ratios": s.lw_ratios,
            "seed": s.seed}


def trained_model(i: int, X: np.ndarray, y_idx: np.ndarray, classes: list[int], s: Settings,
                  data: Data, models: Cache) -> tuple[bytes, dict[str, float]]:
    """Learnware i's ONNX bytes and its training figures: from ``models`` or trained now.

    The ONNX bytes are what the market's learnware runs, so a market built for another
    encoder from this cache holds the very same models."""
    onnx_path, meta_path = models.path(f"model-{i:02d}.onnx"), f"model-{i:02d}.json"
    meta = models.load_json(meta_path)
    if meta is not None and onnx_path.exists():
        return onnx_path.read_bytes(), {**meta, "cached": True}
    with Stopwatch() as sw_train:
        net = train_cnn(X, y_idx, s, seed=s.seed * 1000 + i)
    with Stopwatch() as sw_export:
        onnx_bytes = export_onnx(net, classes)
    test_rows = np.flatnonzero(np.isin(data.y_test, classes))
    torch = _torch()
    with torch.inference_mode():
        logits = net(torch.from_numpy(data.images("test", test_rows)[:, None]))
    pred = np.asarray(classes)[logits.argmax(1).numpy()]
    meta = {"train_seconds": sw_train.seconds, "export_seconds": sw_export.seconds,
            "own_test_accuracy": float(np.mean(pred == data.y_test[test_rows])),
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    tmp = onnx_path.with_name(f".{onnx_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(onnx_bytes)
    os.replace(tmp, onnx_path)
    models.save_json(meta_path, meta)
    return onnx_bytes, {**meta, "cached": False}


def build_market(data: Data, plan: list[dict[str, Any]], s: Settings, encoder: Any,
                 store: EmbeddingStore, cache: Cache, bar: Any, log: Any,
                 models: Cache) -> Built:
    from learndock.market import Market
    from learndock.package import pack, write_package
    from learndock.spec import RKMEImageSpec

    home = cache.path("market")
    done = cache.load_json("built.json")
    if done is not None and home.exists():
        market = Market(home)
        try:
            for i in done["ids"]:
                market.get(i)
            done["info"]["cached"] = True
            return Built(market, done["ids"], done["info"])
        except Exception:  # noqa: BLE001 -- anything amiss: rebuild from scratch
            market.close()
    t_build = time.perf_counter()
    shutil.rmtree(home, ignore_errors=True)
    market = Market(home)
    info: dict[str, Any] = {"train_seconds": [], "export_seconds": [], "spec_fit_seconds": [],
                            "add_seconds": [], "own_test_accuracy": [], "onnx_bytes": [],
                            "end_to_end_spec_seconds": [], "end_to_end_same_spec": [],
                            "end_to_end_mmd2": [], "onnx_sha256": [], "models_cached": [],
                            "encode_seconds": 0.0, "encoded_images": 0, "cached": False}
    with Stopwatch() as sw:
        # The first learnware's rows first, on their own: chunks of 4096 keep the encoder's
        # batches of 256 where a developer's own encode of these images puts them, so its
        # stored embeddings are bit-identical to theirs (the trained CNN's float32 matmuls
        # differ by ~1e-7 with a row's place in a batch) and the end-to-end check is exact.
        store.ensure(plan[0]["rows"])
        store.ensure(np.unique(np.concatenate([p["rows"] for p in plan])))
    info["encode_seconds"], info["encoded_images"] = store.encode_seconds, store.encoded
    store.save()
    log(f"embedded {store.encoded} training images in {sw.seconds:.1f} s")
    ids = []
    task = bar.add_task("image learnwares (train, spec, add)", total=len(plan))
    with tempfile.TemporaryDirectory(prefix="learndock-image-") as tmp:
        for i, p in enumerate(plan):
            rows, classes = p["rows"], p["classes"]
            X = data.images("train", rows)
            y_idx = np.array([classes.index(int(c)) for c in data.y_train[rows]])
            onnx_bytes, meta = trained_model(i, X, y_idx, classes, s, data, models)
            with Stopwatch() as sw_spec:
                spec = RKMEImageSpec.fit(X, s.k, encoder=encoder, embeddings=store.get(rows),
                                         random_state=s.seed)
            if i < s.end_to_end_specs:  # the spec as a developer builds it: encode + fit
                with Stopwatch() as sw_e2e:
                    full = RKMEImageSpec.fit(X, s.k, encoder=encoder, random_state=s.seed)
                info["end_to_end_spec_seconds"].append(sw_e2e.seconds)
                info["end_to_end_same_spec"].append(full.fingerprint() == spec.fingerprint())
                info["end_to_end_mmd2"].append(float(full.mmd2(spec)))
            name = f"fmnist-cnn-{i:02d}"
            with Stopwatch() as sw_add:
                d = Path(tmp) / name
                write_package(d, onnx_bytes, name=name, model_format="onnx", labels=classes,
                              input_shape=list(IMAGE_SHAPE), spec=spec,
                              semantic=_semantic(name, classes, data.classes, s))
                z = Path(tmp) / f"{name}.zip"
                pack(d, z)
                r = market.add(z, owner="bench")
                if not r.accepted:
                    raise RuntimeError(f"{name} was rejected:\n{r.report.text()}")
            ids.append(r.learnware_id)
            info["train_seconds"].append(meta["train_seconds"])
            info["export_seconds"].append(meta["export_seconds"])
            info["spec_fit_seconds"].append(sw_spec.seconds)
            info["add_seconds"].append(sw_add.seconds)
            info["onnx_bytes"].append(len(onnx_bytes))
            info["own_test_accuracy"].append(meta["own_test_accuracy"])
            info["onnx_sha256"].append(meta["onnx_sha256"])
            info["models_cached"].append(meta["cached"])
            bar.advance(task)
    bar.remove_task(task)
    info["build_wall_seconds"] = time.perf_counter() - t_build
    cache.save_json("built.json", {"ids": ids, "info": info})
    return Built(market, ids, info)


# ============================================================================ memo
class Memo:
    """Learnware outputs and embeddings of the test images the users hold, computed once.

    ``P[l]``: learnware l's probabilities over its own labels; ``L[l]``: its predicted labels
    (both from ``Learnware.predict_proba``/``predict``, i.e. ONNX + contract checks).
    """

    def __init__(self, data: Data, rows: np.ndarray, market: Any, ids: list[str],
                 store: EmbeddingStore, cache: Cache, chunk: int = 500,
                 onnx_sha256: list[str] | None = None) -> None:
        self.rows = rows
        self.encoder = store.encoder
        self.pos = {k: i for i, k in enumerate(_keys(data.images("test", rows)))}
        self.E = store.get(rows)
        h = hashlib.sha256(np.ascontiguousarray(rows, dtype="<i8").tobytes())
        for digest in onnx_sha256 or []:  # the very models (shared by both encoders' markets)
            h.update(digest.encode())
        key = h.hexdigest()[:12]
        path = cache.path(f"predictions-{key}.npz")
        loaded = None
        if path.exists():
            try:
                z = np.load(path)
                loaded = (z["P"], z["L"], float(z["seconds"]))
            except (OSError, ValueError, KeyError):
                loaded = None
        if loaded is None or loaded[0].shape[:2] != (len(ids), rows.size):
            X = data.images("test", rows)
            P, L = [], []
            with Stopwatch() as sw:
                for lid in ids:
                    # One learnware at a time, in chunks, closed after: an ONNX session keeps
                    # the peak memory of its largest call (onnxruntime's CPU arena).
                    with market.load(lid) as lw:
                        parts = [(lw.predict_proba(X[a:a + chunk]), lw.predict(X[a:a + chunk]))
                                 for a in range(0, rows.size, chunk)]
                    P.append(np.concatenate([p for p, _ in parts]))
                    L.append(np.concatenate([lab for _, lab in parts]))
            loaded = (np.stack(P), np.stack(L), sw.seconds)
            np.savez(path, P=P, L=L, seconds=sw.seconds)
        self.P, self.L, self.predict_seconds = loaded
        self.fallbacks = 0

    def lookup(self, X: Any) -> np.ndarray | None:
        idx = [self.pos.get(k) for k in _keys(X)]
        if any(i is None for i in idx):
            self.fallbacks += 1
            return None
        return np.asarray(idx, dtype=np.int64)

    def encode(self, X: Any) -> np.ndarray:
        """The encoder's embedding of test images (a featurizer for the reusers)."""
        idx = self.lookup(X)
        if idx is None:
            return self.encoder.encode(X)
        return self.E[idx]


def memo_learnwares(lws: list[Any], memo: Memo) -> list[Any]:
    """The learnwares, answering ``predict``/``predict_proba`` and their spec's ``encode``
    from ``memo`` (falling back to the real model on an image it has not seen)."""
    from learndock.package.learnware import Learnware
    from learndock.spec import RKMEImageSpec

    class MemoImageSpec(RKMEImageSpec):
        def encode(self, X: Any, **kwargs: Any) -> np.ndarray:
            return memo.encode(X)

    class MemoLearnware(Learnware):
        index: int

        def predict(self, X: Any) -> np.ndarray:
            idx = memo.lookup(X)
            return super().predict(X) if idx is None else memo.L[self.index][idx]

        def predict_proba(self, X: Any) -> np.ndarray:
            idx = memo.lookup(X)
            return super().predict_proba(X) if idx is None else memo.P[self.index][idx]

    out = []
    for i, lw in enumerate(lws):
        obj = MemoLearnware.__new__(MemoLearnware)
        obj.__dict__.update(lw.__dict__)
        obj._finalizer = None  # the original owns (and removes) the extracted files
        obj.index = i
        spec = lw.stat_spec
        obj.specs = {name: (MemoImageSpec(spec.z, spec.beta, spec.kernel,
                                          n_samples=spec.n_samples, fit_info=spec.fit_info,
                                          encoder=spec.encoder)
                            if sp is spec else sp) for name, sp in lw.specs.items()}
        out.append(obj)
    return out


# ============================================================================ evaluation
@dataclass
class Split:
    test: np.ndarray  # positions (within the user's images) held out for the curves
    pool: np.ndarray  # positions a user may label
    orders: list[np.ndarray]

    def labelled(self, n: int, repeat: int) -> np.ndarray:
        return self.pool[self.orders[repeat][: min(int(n), len(self.pool))]]


def make_split(n_rows: int, s: Settings, user: int) -> Split:
    perm = np.random.default_rng([s.seed, 5, user]).permutation(n_rows)
    n_test = int(round(s.test_fraction * n_rows))
    test, pool = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    orders = [np.random.default_rng([s.seed, 6, user, r]).permutation(len(pool))
              for r in range(s.repeats)]
    return Split(test, pool, orders)


def _error(y: np.ndarray, p: np.ndarray) -> float:
    return float(1.0 - np.mean(np.asarray(y) == np.asarray(p)))


def evaluate_user(j: int, u: dict[str, Any], data: Data, market: Any, built: Built,
                  lws: list[Any], memo: Memo, plan: list[dict[str, Any]], s: Settings,
                  encoder: Any) -> dict[str, Any]:
    from learndock.reuse import (
        AveragingReuser,
        EnsemblePruningReuser,
        FeatureAugmentReuser,
        JobSelectorReuser,
        own_model,
    )
    from learndock.spec import RKMEImageSpec

    rows = u["rows"]
    X, y = data.images("test", rows), data.y_test[rows]
    index = {lid: i for i, lid in enumerate(built.ids)}
    pos = memo.lookup(X)
    assert pos is not None
    out: dict[str, Any] = {"classes": u["classes"], "images": int(rows.size)}
    err = np.array([_error(y, memo.L[i][pos]) for i in range(len(lws))])
    E = memo.E[pos]
    with Stopwatch() as sw:
        spec = RKMEImageSpec.fit(X, s.k, encoder=encoder, embeddings=E, random_state=s.seed)
    out["spec_fit_seconds"] = sw.seconds
    if j == 0:  # the user's spec end to end (encode + fit), once
        with Stopwatch() as sw:
            RKMEImageSpec.fit(X, s.k, encoder=encoder, random_state=s.seed)
        out["end_to_end_spec_seconds"] = sw.seconds
    with Stopwatch() as sw:
        res = market.search(QUERY, spec=spec, top_k=len(lws), max_mixture=s.max_mixture)
    out["search_seconds"] = sw.seconds
    foreign = [m.learnware_id for m in res.single if m.learnware_id not in index]
    if foreign:
        raise RuntimeError(f"search returned learnwares of another market: {foreign}")
    ranking = [index[m.learnware_id] for m in res.single]
    mix = res.mixture
    recommended = bool(mix is not None and mix.recommended and len(mix.learnware_ids) >= 2)
    if recommended:
        assert mix is not None
        chosen_idx, weights = [index[i] for i in mix.learnware_ids], list(mix.weights)
    else:
        chosen_idx = ranking[: s.fallback_top]
        weights = [1.0 / len(chosen_idx)] * len(chosen_idx)
    chosen = [lws[i] for i in chosen_idx]
    with Stopwatch() as sw:
        job = JobSelectorReuser(chosen, weights=weights, n_herding=s.job_herding,
                                random_state=s.seed, routing="soft").fit(X)
        p_job = job.predict(X)
    out["job_seconds"] = sw.seconds
    job.routing = "hard"  # the same fitted selector, one learnware per image (the old default)
    p_job_hard = job.predict(X)
    out["job_separability"] = float(job.separability_)
    with Stopwatch() as sw:
        p_avg = AveragingReuser(chosen, weights=weights).fit(X).predict(X)
    out["avg_seconds"] = sw.seconds
    out.update(decision_rows(X, y, res, ranking, lws, index, s))
    majors = set(u["classes"][:2])
    out.update(
        err=err.tolist(), ranking=ranking, top1=ranking[0], mixture=chosen_idx,
        mixture_weights=weights, mixture_recommended=recommended,
        mixture_improvement=None if mix is None else float(mix.improvement),
        job_error=_error(y, p_job), job_hard_error=_error(y, p_job_hard),
        avg_error=_error(y, p_avg),
        top1_covers_majors=majors <= set(plan[ranking[0]]["classes"]),
        top1_shared_classes=len(set(u["classes"]) & set(plan[ranking[0]]["classes"])),
    )
    if j < s.curve_users:
        sp = make_split(rows.size, s, j)
        out["err_test"] = [_error(y[sp.test], memo.L[i][pos[sp.test]]) for i in range(len(lws))]
        top_p = [lws[i] for i in ranking[: s.top_prune]]
        top_a = [lws[i] for i in ranking[: s.top_augment]]
        curves: dict[str, dict[str, list[float]]] = {"own": {}, "pruning": {}, "augment": {}}
        seconds: dict[str, float] = {"own": 0.0, "pruning": 0.0, "augment": 0.0}
        Xt, yt = X[sp.test], y[sp.test]
        for r in range(s.repeats):
            for n in s.n_labels:
                lab = sp.labelled(n, r)
                Xl, yl = X[lab], y[lab]
                single_class = np.unique(yl).size < 2
                ests = {"own": own_model("classification", featurizer=memo.encode),
                        "pruning": EnsemblePruningReuser(top_p, random_state=s.seed),
                        "augment": FeatureAugmentReuser(top_a, random_state=s.seed,
                                                        featurizer=memo.encode)}
                for key, est in ests.items():
                    with Stopwatch() as sw, warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        if single_class and key != "pruning":
                            # one class among the labels: a model can only predict it
                            e = _error(yt, np.full(yt.shape, yl[0]))
                        else:
                            e = _error(yt, est.fit(Xl, yl).predict(Xt))
                    seconds[key] += sw.seconds
                    curves[key].setdefault(str(n), []).append(e)
        out["curves"] = curves
        out["curve_seconds"] = seconds
    return out


def decision_rows(X: np.ndarray, y: np.ndarray, res: Any, ranking: list[int], lws: list[Any],
                  index: dict[str, int], s: Settings) -> dict[str, Any]:
    """The decision step's rows, as ``benchmarks/identification.py`` computes them: each
    criterion's re-ranking of the search's first ``top_k`` (then the rest of the spec
    ranking), the label-free recommendation and averaging of the search mixture."""
    from learndock.reuse import AveragingReuser, DecisionStep

    top = ranking[: s.top_k]
    rest = ranking[s.top_k:]
    short = [lws[i] for i in top]
    scores = [m.score for m in res.single[: s.top_k]]
    mix = res.mixture
    members = ([lws[index[i]] for i in mix.learnware_ids]
               if mix is not None and len(mix.learnware_ids) >= 2 else None)
    mw = list(mix.weights) if members is not None else None
    picks: dict[str, list[int]] = {}
    default_step = None
    seconds = 0.0
    for crit in CRITERIA:
        with Stopwatch() as sw:
            step = DecisionStep(short, scores=scores, reference=members, reference_weights=mw,
                                criterion=crit).fit(X)
        if crit == DEFAULT_CRITERION:
            default_step, seconds = step, sw.seconds
        picks[crit] = [top[i] for i in step.order_] + rest
    step = DecisionStep(short, scores=scores).fit(X)
    picks["shortlist_ens"] = [top[i] for i in step.order_] + rest
    assert default_step is not None
    rec = default_step.reuser()
    single = members or short[:1]
    losses = {
        "decision_recommended": _error(y, rec.fit(X).predict(X)),
        "avg_mixture_uniform": _error(y, AveragingReuser(single).fit(X).predict(X)),
        "avg_mixture_weights": _error(y, AveragingReuser(single, weights=mw)
                                      .fit(X).predict(X)),
        "avg_shortlist_uniform": _error(y, AveragingReuser(short).fit(X).predict(X)),
    }
    return {"decision_picks": picks, "decision_losses": losses,
            "decision_recommendation": str(default_step.decision_.recommendation),
            "decision_seconds": seconds, "top_k": s.top_k}


# ============================================================================ summaries
def summarise(users: list[dict[str, Any]]) -> dict[str, Any]:
    mean_rows, oracle_rows, top1_rows, regrets, ranks, best5 = [], [], [], [], [], []
    hit1 = hit5 = 0
    for u in users:
        err = np.asarray(u["err"], float)
        best = set(np.flatnonzero(err <= err.min() + 1e-12).tolist())
        top1 = int(u["ranking"][0])
        ranks.append(min(u["ranking"].index(b) for b in best) + 1)
        best5.append(float(err[u["ranking"][:5]].min()))
        mean_rows.append(float(err.mean()))
        oracle_rows.append(float(err.min()))
        top1_rows.append(float(err[top1]))
        regrets.append(float(err[top1] - err.min()))
        hit1 += int(top1 in best)
        hit5 += int(bool(best & {int(i) for i in u["ranking"][:5]}))
    n = max(1, len(users))
    return {
        "users": len(users),
        "mean": float(np.mean(mean_rows)), "oracle": float(np.mean(oracle_rows)),
        "top1": float(np.mean(top1_rows)),
        "job": float(np.mean([u["job_error"] for u in users])),
        "avg": float(np.mean([u["avg_error"] for u in users])),
        "std": {"mean": mean_std(mean_rows)[1], "oracle": mean_std(oracle_rows)[1],
                "top1": mean_std(top1_rows)[1],
                "job": mean_std([u["job_error"] for u in users])[1],
                "avg": mean_std([u["avg_error"] for u in users])[1]},
        "hit1": hit1 / n, "hit5": hit5 / n,
        "regret": float(np.mean(regrets)), "regret_max": float(np.max(regrets)),
        "oracle_rank_median": float(np.median(ranks)), "best_of_top5": float(np.mean(best5)),
        "top1_covers_majors": float(np.mean([u["top1_covers_majors"] for u in users])),
        "top1_shared_classes": float(np.mean([u["top1_shared_classes"] for u in users])),
        "mixture_recommended": float(np.mean([u["mixture_recommended"] for u in users])),
        "mixture_size": float(np.mean([len(u["mixture"]) for u in users])),
    }


DECISION_ROWS = [
    # key, label; "mean" and "oracle" are computed apart
    ("mean", "Mean in market (single)"),
    ("oracle", "Best in market (single, oracle)"),
    ("spec", "Spec search top-1 (today)"),
    ("auto", "+ decision step (default `auto` = agreement with the mixture's ensemble)"),
    ("agreement", "+ decision step: agreement with the mixture's ensemble"),
    ("hard_agreement", "+ decision step: hard agreement"),
    ("confidence", "+ decision step: confidence"),
    ("coverage", "+ decision step: coverage"),
    ("shortlist_ens", "+ decision step: agreement with the top-k's equal-weight ensemble"),
    ("decision_recommended", "Decision step's label-free recommendation (single or ensemble)"),
    ("avg_mixture_uniform", "Averaging the search mixture, equal weights"),
    ("avg_mixture_weights", "Averaging the search mixture, mixture weights"),
    ("avg_shortlist_uniform", "Averaging the top-k, equal weights"),
    ("avg_old", "Average ensemble (multiple; old row: recommended mixture, its weights)"),
    ("job_soft", "Job selector, soft routing (now the default)"),
    ("job_hard", "Job selector, hard routing (old row)"),
]


def decision_summary(users: list[dict[str, Any]], eps: float = 0.01) -> dict[str, Any]:
    """hit@1 (within ``eps`` error of the oracle single), hit@5 and regret with bootstrap 95%
    intervals over users, for the spec ranking, every decision-step criterion and the
    multiple-learnware rows (``summarise`` of ``benchmarks/identification.py``)."""
    loss = np.array([u["err"] for u in users], dtype=np.float64)
    picks = {"spec": [list(u["ranking"]) for u in users]}
    for key in (*CRITERIA, "shortlist_ens"):
        picks[key] = [list(u["decision_picks"][key]) for u in users]
    extra = {k: np.array([u["decision_losses"][k] for u in users])
             for k in users[0]["decision_losses"]}
    extra["avg_old"] = np.array([u["avg_error"] for u in users])
    extra["job_soft"] = np.array([u["job_error"] for u in users])
    extra["job_hard"] = np.array([u["job_hard_error"] for u in users])
    out = identification_summary(loss, picks, False, eps, extra)
    best = loss.min(axis=1)
    mean = loss.mean(axis=1)
    out["mean"] = {"loss": float(mean.mean()), "loss_ci": bootstrap_ci(mean),
                   "regret": float((mean - best).mean()), "regret_ci": bootstrap_ci(mean - best),
                   "regret_max": float((mean - best).max())}
    out["oracle"] = {"loss": float(best.mean()), "loss_ci": bootstrap_ci(best), "regret": 0.0,
                     "hit1": 1.0, "hit5": 1.0}
    for key, vals in extra.items():
        out[key]["loss_ci"] = bootstrap_ci(vals)
    for key in picks:
        top1 = np.array([loss[u, r[0]] for u, r in enumerate(picks[key])])
        out[key]["loss_ci"] = bootstrap_ci(top1)
    out["_eps"] = eps
    out["_top_k"] = int(users[0].get("top_k", 10))
    out["_recommended_ensemble_share"] = float(np.mean(
        [u["decision_recommendation"] == "ensemble" for u in users]))
    out["_decide_seconds_median"] = float(np.median([u["decision_seconds"] for u in users]))
    out["_job_separability_median"] = float(np.median([u["job_separability"] for u in users]))
    return out


def decision_table(dec: dict[str, Any], keys: list[str] | None = None) -> str:
    rows = []
    for key, label in DECISION_ROWS:
        if key not in dec or (keys is not None and key not in keys):
            continue
        d = dec[key]
        rows.append([label, ci_cell(d, "loss", 4), ci_cell(d, "hit1", 2),
                     ci_cell(d, "hit5", 2), ci_cell(d, "regret", 4)])
    return markdown_table(["setting", "error [95% CI]", "hit@1 [95% CI]", "hit@5 [95% CI]",
                           "regret [95% CI]"], rows)


def curve_summary(users: list[dict[str, Any]], key: str, s: Settings) -> dict[str, list[float]]:
    """Per n: mean ± std over repeats of the user-averaged error."""
    cu = [u for u in users if "curves" in u]
    if not cu:  # --curve-users 0
        return {"mean": [math.nan] * len(s.n_labels), "std": [math.nan] * len(s.n_labels)}
    means, stds = [], []
    for n in s.n_labels:
        per_repeat = [float(np.mean([u["curves"][key][str(n)][r] for u in cu]))
                      for r in range(s.repeats)]
        m, sd = mean_std(per_repeat)
        means.append(m)
        stds.append(sd)
    return {"mean": means, "std": stds}


def build_seconds(info: dict[str, Any]) -> float:
    """Wall time of building the market: measured, or (older caches) the sum of its parts."""
    if "build_wall_seconds" in info:
        return float(info["build_wall_seconds"])
    return float(info["encode_seconds"] + sum(info["train_seconds"]) +
                 sum(info["export_seconds"]) + sum(info["spec_fit_seconds"]) +
                 sum(info["end_to_end_spec_seconds"]) + sum(info["add_seconds"]))


def timing_summary(users: list[dict[str, Any]], built: Built, memo: Memo,
                   stores: dict[str, EmbeddingStore]) -> dict[str, Any]:
    def med(v: list[float]) -> float:
        return float(np.median(v)) if v else math.nan

    info = built.info
    enc_s = info["encode_seconds"] + stores["test"].encode_seconds
    enc_n = info["encoded_images"] + stores["test"].encoded
    cu = [u for u in users if "curve_seconds" in u]
    return {
        "build_cached": bool(info.get("cached")),
        "build": build_seconds(info), "build_measured": "build_wall_seconds" in info,
        "train_median": med(info["train_seconds"]), "train_total": float(np.sum(
            info["train_seconds"])),
        "export_median": med(info["export_seconds"]),
        "learnware_spec_fit_median": med(info["spec_fit_seconds"]),
        "learnware_spec_fit_total": float(np.sum(info["spec_fit_seconds"])),
        "learnware_spec_end_to_end": info["end_to_end_spec_seconds"],
        "add_median": med(info["add_seconds"]),
        "encode_ms_per_image": (1e3 * enc_s / enc_n) if enc_n else math.nan,
        "encoded_images_this_run": enc_n,
        "user_spec_fit_median": med([u["spec_fit_seconds"] for u in users]),
        "user_spec_end_to_end": users[0].get("end_to_end_spec_seconds"),
        "search_median": med([u["search_seconds"] for u in users]),
        "search_first": float(users[0]["search_seconds"]),
        "search_max": float(np.max([u["search_seconds"] for u in users])),
        "job_median": med([u["job_seconds"] for u in users]),
        "avg_median": med([u["avg_seconds"] for u in users]),
        "predict_all_seconds": memo.predict_seconds,
        "curve_seconds_per_user": {k: med([u["curve_seconds"][k] for u in cu])
                                   for k in ("own", "pruning", "augment")} if cu else None,
    }


# ============================================================================ report
def render(res: dict[str, Any], s: Settings, cmd: str, machine: dict[str, Any]) -> str:
    summ, t, c = res["summary"], res["timings"], res["curves"]
    b = res["build"]
    enc = ENCODER_LABELS.get(s.encoder, s.encoder)
    n_lw, n_users = len(res["learnwares"]), summ["users"]
    acc = [x["own_test_accuracy"] for x in res["learnwares"]]
    lines = [
        "## Image scenario (Fashion-MNIST)", "",
        f"Command: `{cmd}`. Machine: {describe_machine(machine)}; 1-min load "
        f"{res['load_start']} at the start, {res['load_end']} at the end; torch, BLAS and "
        f"OpenMP limited to 1 thread. Wall time {res['wall_seconds']:.0f} s "
        f"(learnwares {'from the cache' if t['build_cached'] else 'trained in this run'}).", "",
        f"Protocol: {n_lw} learnwares, each a small CNN (conv 3x3 x{s.widths[0]} -> ReLU -> "
        f"max-pool -> conv 3x3 x{s.widths[1]} -> ReLU -> max-pool -> linear; Adam, lr {s.lr}, "
        f"batch {s.batch_size}, {s.epochs} epoch(s), seeded) trained on {s.train_images:,} "
        f"training images of 4 random classes at 0.4 : 0.4 : 0.1 : 0.1, exported to ONNX "
        f"(outputs `label`, `probabilities`), with an RKME image spec (K = {s.k}, "
        f"{enc}). On the test images of their own 4 classes the CNNs reach "
        f"{np.mean(acc):.3f} accuracy (median {np.median(acc):.3f}, min {np.min(acc):.3f}). "
        f"{n_users} users, each {s.user_images:,} test images of 6 random classes at 0.3 : 0.3 "
        f": 0.1 : 0.1 : 0.1 : 0.1, unlabeled. Error = 1 - accuracy, mean over users (± std "
        f"over users).", "",
    ]
    lines += [
        f"Sized for a shared 2-core CPU: the CNNs are small ({s.widths[0]}/{s.widths[1]} "
        f"channels) and train for {s.epochs} epochs on one thread "
        f"({fmt_seconds(t['train_median'])} per learnware, {fmt_seconds(t['train_total'])} for "
        "the market"
        + (", measured when the cache was built" if t["build_cached"] else "")
        + "); the numbers of learnwares, users and images are "
        + ("the quick smoke test's, not the protocol's." if s.quick else "the protocol's."),
        ""]
    rows = [[label, fmt_pm(summ[key], summ["std"][key])] for key, label in ROWS]
    lines += [markdown_table(["setting", "learndock (error)"], rows), ""]
    rec = summ["mixture_recommended"]
    lines += [
        f"Multiple rows: the search's mixture (its weights) for {rec:.0%} of users -- the "
        f"mixture is recommended when it cuts the MMD^2 of the best single learnware enough; "
        f"for the other {1 - rec:.0%} the top {s.fallback_top} of the single ranking, equal "
        f"weights. {summ['mixture_size']:.2f} learnwares reused on average. Job selector: "
        f"`JobSelectorReuser(n_herding={s.job_herding})` (kernel herding from the learnwares' "
        "specs, a gradient-boosting router in the encoder's space; the default n_herding=300 "
        "costs 10-20 s per user on this CPU, mostly herding); average ensemble: "
        "`AveragingReuser` with the same weights (probabilities aligned on the union of the "
        "label sets).", ""]
    id_rows = [["hit-rate@1 (top-1 = an oracle-best learnware)", fmt(summ["hit1"], 3)],
               ["hit-rate@5 (an oracle-best learnware in the top 5)", fmt(summ["hit5"], 3)],
               ["regret of top-1 (error, mean)", fmt(summ["regret"], 4)],
               ["regret of top-1 (error, worst user)", fmt(summ["regret_max"], 4)],
               ["rank of the oracle-best in the search's ranking (median, of "
                f"{n_lw})", fmt(summ.get("oracle_rank_median"), 1)],
               ["error of the best of the top 5 (mean)", fmt(summ.get("best_of_top5"), 4)],
               ["top-1 knows both of the user's majority classes",
                fmt(summ["top1_covers_majors"], 3)],
               ["classes the top-1 shares with the user (of 4)",
                fmt(summ["top1_shared_classes"], 2)]]
    lines += [markdown_table(["identification", "learndock"], id_rows), ""]
    dec = res.get("decision")
    if dec:
        rec_share = dec["_recommended_ensemble_share"]
        lines += [
            f"**Decision step** (as `benchmarks/identification.py`; {n_users} users, the same "
            f"searches): `DecisionStep` re-ranks the search's top {dec['_top_k']} by what the "
            "models do on the user's unlabeled images, agreeing with the search mixture's "
            "ensemble (equal weights); the recommendation is the top learnware alone when it "
            "knows every image's ensemble label, else the mixture's average (here the ensemble "
            f"for {rec_share:.0%} of users). hit@1: the pick's error within "
            f"{dec['_eps']} of the oracle single learnware's (for the multiple rows, what the "
            "user reuses is the pick); hit@5: one of the first five is; regret = error - "
            "oracle error. Brackets: bootstrap 95% intervals over users (2,000 resamples, "
            f"seed 0). Decision step (auto) median {dec['_decide_seconds_median'] * 1e3:.0f} ms "
            "per user; job selector separability (median) "
            f"{dec['_job_separability_median']:.2f}.", "",
            decision_table(dec), ""]
    e2e = t["learnware_spec_end_to_end"]
    same = ("identical fingerprint" if all(b["end_to_end_same_spec"])
            else "MMD^2 " + ", ".join(f"{m:.1e}" for m in b["end_to_end_mmd2"]))
    time_rows = [
        [f"build the market: encode the training images, train, export, spec, add ({n_lw} "
         "learnwares" + ("" if t.get("build_measured") else "; sum of the timed steps") + ")",
         fmt_seconds(t.get("build"))],
        ["train one CNN (median)", fmt_seconds(t["train_median"])],
        ["export to ONNX (median)", fmt_seconds(t["export_median"])],
        [f"encode 1,000 images ({s.encoder})",
         fmt_seconds(t["encode_ms_per_image"])],
        [f"learnware spec end to end, {s.train_images:,} images (encode + fit; first "
         f"{len(e2e)})", ", ".join(fmt_seconds(x) for x in e2e) or "n/a"],
        ["learnware spec fit from embeddings (median)",
         fmt_seconds(t["learnware_spec_fit_median"])],
        ["Market.add: write_package + pack + checks in the sandbox (median)",
         fmt_seconds(t["add_median"])],
        [f"user spec end to end, {s.user_images:,} images (first user)",
         fmt_seconds(t["user_spec_end_to_end"])],
        ["user spec fit from embeddings (median)", fmt_seconds(t["user_spec_fit_median"])],
        ["search (median over users)", fmt_seconds(t["search_median"])],
        ["search (first, cold / slowest)",
         f"{fmt_seconds(t['search_first'])} / {fmt_seconds(t['search_max'])}"],
        ["job selector fit + predict (median)", fmt_seconds(t["job_median"])],
        ["average ensemble fit + predict (median)", fmt_seconds(t["avg_median"])],
        [f"all learnwares' ONNX outputs on the users' {b['test_images']:,} distinct test "
         "images", fmt_seconds(t["predict_all_seconds"])],
    ]
    lines += [markdown_table(["time (wall, 1 thread)", "learndock"], time_rows),
              "",
              "Specs are fitted from embeddings computed once per image and cached; the "
              f"end-to-end spec (encode + fit, timed above) is the same spec ({same}). The "
              "learnwares' ONNX outputs on the users' images are computed once and remembered, so the reuse "
              "rows time the reusers' own work.", ""]
    xs = [str(n) for n in s.n_labels]
    crow = []
    for i, n in enumerate(xs):
        crow.append([n] + [fmt_pm(c[k]["mean"][i], c[k]["std"][i])
                           for k in ("own", "pruning", "augment")])
    n_curve = min(s.curve_users, n_users)
    if n_curve == 0:
        lines += ["Labeled-data curves: not run (`--curve-users 0`).", "",
                  "![Fashion-MNIST](fashion_mnist.png)", "", f"Reference: {REFERENCE_NOTE}", ""]
        return "\n".join(lines)
    lines += [
        f"Labeled data (error on the held-out {s.test_fraction:.0%} of each of the first "
        f"{n_curve} users' images; n labels drawn from the other "
        f"{1 - s.test_fraction:.0%}; mean ± std over {s.repeats} repeat(s) of the draw). Own "
        f"model: logistic regression on the {s.encoder} encoder's features "
        "(`own_model('classification', featurizer=...)`); ensemble pruning over the top "
        f"{s.top_prune} of the ranking, feature augmentation over the top {s.top_augment} "
        "(its features: the same encoder's). On the same held-out images, without labels: "
        f"top-1 reuse {fmt(res['test_lines']['top1'])}, oracle "
        f"{fmt(res['test_lines']['oracle'])}.", "",
        markdown_table(["labels n", "own model", "ensemble pruning", "feature augment"], crow),
        "", "![Fashion-MNIST](fashion_mnist.png)", "",
        f"Reference: {REFERENCE_NOTE}", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], s: Settings, out: Path) -> Path:
    fig, axes = subplots(1, 2, (13, 4.6))
    xs = np.arange(len(s.n_labels)) + 1.0
    c = res["curves"]
    series = {"own model (n labels, LR on encoder features)": (xs, c["own"]["mean"],
                                                              c["own"]["std"]),
              "ensemble pruning": (xs, c["pruning"]["mean"], c["pruning"]["std"]),
              "feature augment": (xs, c["augment"]["mean"], c["augment"]["std"])}
    hl = {k: v for k, v in res["test_lines"].items() if v is not None}
    plot_curves(out / "fashion_mnist.png", title="Fashion-MNIST: labeled data",
                xlabel="labels n", ylabel="error (1 - accuracy)", series=series,
                hlines={label: hl[k] for k, label in (("top1", "top-1 reuse (no labels)"),
                                                      ("oracle", "best in market (oracle)"))
                        if k in hl},
                logx=False, xticklabels=[str(n) for n in s.n_labels], ax=axes[0, 0])
    summ = res["summary"]
    plot_bars(out / "fashion_mnist.png", title="Fashion-MNIST: no labels (mean over users)",
              ylabel="error (1 - accuracy)", categories=[label for _, label in ROWS],
              series={"learndock": [summ[k] for k, _ in ROWS]}, ax=axes[0, 1])
    return save_figure(fig, out / "fashion_mnist.png")


def default_out(encoder: str, quick: bool = False) -> Path:
    """Where a run writes by default: the default encoder's in ``results/image/``, the other's
    in ``results/image/<encoder>/`` (quick runs in a ``quick/`` sub-folder)."""
    base = RESULTS_ROOT / SCENARIO
    if encoder != "fmnist-cnn":
        base = base / encoder
    return base / "quick" if quick else base


def benchmarks_section(report: str, out: Path, encoder: str = "fmnist-cnn") -> str:
    """The report as a BENCHMARKS.md section (one heading level down, image path fixed: the
    run's folder when it is in the repository, else the encoder's default folder)."""
    try:
        rel = out.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        rel = default_out(encoder).relative_to(REPO_ROOT).as_posix()
    body = report.replace("](fashion_mnist.png)", f"]({rel}/fashion_mnist.png)")
    return "\n".join(("#" + ln) if ln.startswith("#") else ln for ln in body.splitlines())


# ============================================================================ driver
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (~1 min)")
    ap.add_argument("--encoder", choices=ENCODERS, default="fmnist-cnn",
                    help="the specs' encoder (learnwares and users): fmnist-cnn = "
                         "FashionCNNEncoder, the default; random-conv = RandomConvEncoder")
    ap.add_argument("--users", type=int, default=None,
                    help="number of users (default: the protocol's 100; quick 6)")
    ap.add_argument("--curve-users", type=int, default=None,
                    help="labeled-data curves on the first this many users (default 20; "
                         "0 skips the curves)")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default benchmarks/results/image, and "
                         "benchmarks/results/image/random-conv for --encoder random-conv)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache folder (default benchmarks/results/cache/image)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render report.md, the BENCHMARKS section and the PNG from the "
                         "results.json already in --out (no computation)")
    args = ap.parse_args(argv)
    s = replace(QUICK if args.quick else FULL, encoder=args.encoder)
    if args.users is not None:
        s = replace(s, users=args.users)
    if args.curve_users is not None:
        s = replace(s, curve_users=args.curve_users)
    out = results_dir(SCENARIO, args.out or default_out(args.encoder, args.quick))
    if args.report_only:
        res = load_results(out)
        # summaries are pure functions of the per-user records: recompute them (new rows)
        res["summary"] = summarise(res["users"])
        if res["users"] and "decision_picks" in res["users"][0]:
            res["decision"] = decision_summary(res["users"])
        res["reference"] = {"run": False, "why": REFERENCE_NOTE}
        res["curves"] = {k: curve_summary(res["users"], k, settings_of(res))
                         for k in ("own", "pruning", "augment")}
        if "build" not in res["timings"]:  # results written before the build row existed
            built = Cache(SCENARIO, "market",
                          build_config(load_data(), s, make_encoder(settings_of(res).encoder)),
                          root=args.cache).load_json("built.json")
            if built is not None:
                res["timings"]["build"] = build_seconds(built["info"])
                res["timings"]["build_measured"] = "build_wall_seconds" in built["info"]
        write_json(out / "results.json", res)
        return write_outputs(out, res)
    t0 = time.perf_counter()
    machine, load0 = machine_info(), load_average()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    _torch()
    data = load_data()
    encoder = make_encoder(s.encoder)
    log(f"encoder {encoder.identity}; {s.users} users, curves on {s.curve_users}")
    emb_cache = Cache(SCENARIO, "embeddings", {"data": data.fingerprint(),
                                               "encoder": encoder.identity}, root=args.cache)
    stores = {k: EmbeddingStore(emb_cache, k, data, encoder) for k in ("train", "test")}
    plan = learnware_plan(data, s)
    uplan = user_plan(data, s)
    cache = Cache(SCENARIO, "market", build_config(data, s, encoder), root=args.cache)
    models = Cache(SCENARIO, "models", model_config(data, s), root=args.cache)
    with single_thread(), progress(disable=args.no_progress) as bar:
        with Stopwatch() as sw:
            built = build_market(data, plan, s, encoder, stores["train"], cache, bar, log,
                                 models)
        log(f"market of {len(built.ids)} learnwares "
            f"{'from cache' if built.info.get('cached') else 'built'} in {sw.seconds:.1f} s")
        market = built.market
        opened: list[Any] = []
        try:
            user_rows = np.unique(np.concatenate([u["rows"] for u in uplan]))
            with Stopwatch() as sw:
                memo = Memo(data, user_rows, market, built.ids, stores["test"], models,
                            onnx_sha256=built.info.get("onnx_sha256"))
            stores["test"].save()
            log(f"{user_rows.size} test images embedded and predicted by every learnware in "
                f"{sw.seconds:.1f} s")
            opened = [market.load(i) for i in built.ids]  # models load only on a memo miss
            lws = memo_learnwares(opened, memo)
            users = []
            task = bar.add_task("image users", total=len(uplan))
            with Stopwatch() as sw:
                for j, u in enumerate(uplan):
                    users.append(evaluate_user(j, u, data, market, built, lws, memo, plan, s,
                                               encoder))
                    bar.advance(task)
            bar.remove_task(task)
            log(f"{len(users)} users evaluated in {sw.seconds:.1f} s")
        finally:
            for lw in opened:
                lw.close()
            market.close()
    summary = summarise(users)
    decision = decision_summary(users)
    curves = {k: curve_summary(users, k, s) for k in ("own", "pruning", "augment")}
    cu = [u for u in users if "err_test" in u]
    test_lines = {"top1": float(np.mean([u["err_test"][u["top1"]] for u in cu])) if cu else None,
                  "oracle": float(np.mean([min(u["err_test"]) for u in cu])) if cu else None}
    wall = time.perf_counter() - t0
    cmd = ("python -m benchmarks.scenarios.image" + (" --quick" if args.quick else "")
           + f" --encoder {s.encoder}"
           + (f" --users {args.users}" if args.users is not None else "")
           + (f" --curve-users {args.curve_users}" if args.curve_users is not None else ""))
    res: dict[str, Any] = {
        "scenario": SCENARIO, "command": cmd, "settings": asdict(s), "machine": machine,
        "load_start": load0, "load_end": load_average(), "wall_seconds": wall,
        "summary": summary, "decision": decision, "curves": curves,
        "test_lines": test_lines, "encoder": encoder.info(),
        "timings": timing_summary(users, built, memo, stores),
        "build": {"cached": bool(built.info.get("cached")),
                  "end_to_end_same_spec": built.info["end_to_end_same_spec"],
                  "end_to_end_mmd2": built.info["end_to_end_mmd2"],
                  "test_images": int(user_rows.size), "memo_fallbacks": memo.fallbacks},
        "learnwares": [{"id": lid, "classes": p["classes"], "train_images": int(p["rows"].size),
                        "own_test_accuracy": a, "train_seconds": ts, "spec_fit_seconds": ss,
                        "onnx_sha256": h}
                       for lid, p, a, ts, ss, h in zip(
                           built.ids, plan, built.info["own_test_accuracy"],
                           built.info["train_seconds"], built.info["spec_fit_seconds"],
                           built.info.get("onnx_sha256") or [None] * len(built.ids),
                           strict=True)],
        "users": users,
        "reference": {"run": False, "why": REFERENCE_NOTE},
    }
    write_json(out / "results.json", res)
    write_outputs(out, res)
    log(f"done: {out / 'report.md'}")
    return 0


def load_results(out: Path) -> dict[str, Any]:
    import json

    return json.loads((out / "results.json").read_text())


def settings_of(res: dict[str, Any]) -> Settings:
    d = dict(res["settings"])
    d.setdefault("encoder", "random-conv")  # results written before --encoder existed
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def write_outputs(out: Path, res: dict[str, Any]) -> int:
    """report.md, BENCHMARKS-section.md and the PNG from a results dict (printed too)."""
    s = settings_of(res)
    report = render(res, s, res["command"], res["machine"])
    plot(res, s, out)
    (out / "report.md").write_text(report + "\n")
    (out / "BENCHMARKS-section.md").write_text(benchmarks_section(report, out, s.encoder)
                                               + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
