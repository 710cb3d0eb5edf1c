"""Train the default image encoder once, offline, and write its weights into the package.

    python -m benchmarks.train_image_encoder            # ~10 min on 2 busy shared cores

The encoder (:class:`learndock.spec.encoders.FashionCNNEncoder`) is a small CNN
(conv 3x3 x8 -> ReLU -> max-pool -> conv 3x3 x16 -> ReLU -> max-pool -> dense 64 -> ReLU)
whose 64-d hidden layer, L2-normalised, is the embedding an image spec is built in. It is trained
as a 10-class classifier **on the Fashion-MNIST training split only, with its labels** (the
test split is never read), seeded, on the CPU with torch; inference in the package is pure numpy
and is checked here against torch on held-out training images. The kernel's gamma is set from
the training embeddings alone (1 / median squared distance between two images of the same
class, so that same-class pairs sit near k = e^-1 and the kernel still resolves structure inside
a class).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "src" / "learndock" / "spec" / "weights" / "fashion_cnn_v1.npz"
SEED = 0
VALIDATION = 5_000  # held out from the training split to report accuracy


def build_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    import torch

    from learndock.datasets import fashion_mnist
    from learndock.spec.encoders import FashionCNNEncoder, gray_images

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(SEED)
    images, labels = fashion_mnist.load("train")  # never the test split
    x = gray_images(images)  # the encoder's own preprocessing: 28 x 28, standardised per image
    order = rng.permutation(x.shape[0])
    val, tr = order[:VALIDATION], order[VALIDATION:]
    xt = torch.from_numpy(x[tr][:, None])
    yt = torch.from_numpy(labels[tr])
    model = build_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(tr)))
        total = 0.0
        for i in range(0, len(tr), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            if (i // 128) % 100 == 99:
                print(f"  epoch {epoch + 1}: {i + 128} images ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(x[val][:, None])).argmax(1).numpy()
        acc = float((pred == labels[val]).mean())
        print(f"epoch {epoch + 1}: loss {total / len(tr):.4f}, validation accuracy {acc:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    weights = {
        "conv1_w": sd["0.weight"], "conv1_b": sd["0.bias"],
        "conv2_w": sd["3.weight"], "conv2_b": sd["3.bias"],
        "fc_w": sd["7.weight"], "fc_b": sd["7.bias"],
    }
    enc = FashionCNNEncoder(weights=weights, gamma=1.0)
    # numpy inference must reproduce torch's hidden layer
    with torch.no_grad():
        hidden = model[:9](torch.from_numpy(x[val[:500]][:, None])).numpy()
    ref = hidden / np.maximum(np.linalg.norm(hidden, axis=1, keepdims=True), 1e-12)
    mine = enc.encode(images[val[:500]])
    err = float(np.abs(mine - ref).max())
    print(f"numpy vs torch embedding: max abs difference {err:.2e}", file=sys.stderr)
    if err > 1e-4:
        raise SystemExit("numpy inference does not match torch")
    # gamma from training embeddings only: same-class pairs near k = e^-1
    E = enc.encode(images[val])
    yv = labels[val]
    same = []
    for c in range(10):
        Ec = E[yv == c][:300]
        d = ((Ec[:, None, :] - Ec[None, :, :]) ** 2).sum(-1)
        same.append(d[np.triu_indices(len(Ec), 1)])
    gamma = float(1.0 / np.median(np.concatenate(same)))
    meta = {
        "trained_on": "Fashion-MNIST training split (60,000 images; labels used; "
                      f"{VALIDATION} held out for validation); test split never read",
        "epochs": args.epochs, "seed": SEED, "optimizer": "Adam lr 1e-3, batch 128",
        "validation_accuracy": acc, "torch": torch.__version__,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "script": "benchmarks/train_image_encoder.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **weights, gamma=np.float64(gamma),
                        meta=np.array(json.dumps(meta, sort_keys=True)))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]
    print(f"gamma {gamma:.3f}; wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, "
          f"sha256 {digest})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
