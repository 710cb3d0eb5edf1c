"""Geometry for the inline SVG pictures (the templates draw them, autoescaped).

The projection shows where a learnware's reduced set lies among the other learnwares of its
island: all reduced points, divided by the kernel's per-feature scale (the space the kernel
measures distances in), go through one weighted PCA (numpy SVD); each learnware's points keep their RKME weights
as marker areas. Two learnwares whose clouds overlap describe similar data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, PAD = 640, 400, 48


@dataclass
class Dot:
    x: float
    y: float
    r: float
    own: bool
    label: str
    clipped: bool = False  # outside the frame's range: drawn on its edge


@dataclass
class Projection:
    dots: list[Dot]
    x_label: str
    y_label: str
    n_others: int
    n_clipped: int = 0
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def projection(own: tuple[np.ndarray, np.ndarray], others: list[tuple[str, np.ndarray,
               np.ndarray]], scale: np.ndarray | None, own_label: str) -> Projection | None:
    """``own`` and ``others`` are (z, beta) reduced sets of one island (``others`` named);
    None when there is nothing to project (fewer than 2 dimensions or points).

    The PCA is weighted: each point by its RKME weight, each learnware's weights summing to 1,
    so the axes follow where the embeddings' mass is (not a few light outlying points) and a
    learnware with many points does not dominate."""
    sets = [(own_label, own[0], own[1], True)] + [(n, z, b, False) for n, z, b in others]
    sets = [(n, np.asarray(z, float).reshape(len(z), -1), np.clip(np.asarray(b, float), 0, None),
             o) for n, z, b, o in sets if len(z)]
    if not sets:
        return None
    pts = np.vstack([z for _, z, _, _ in sets])
    if pts.shape[0] < 2 or pts.shape[1] < 2:
        return None
    if scale is not None and np.size(scale) in (1, pts.shape[1]):
        s = np.asarray(scale, float)
        pts = pts / np.where(s > 0, s, 1.0)
    w = np.concatenate([b / b.sum() if b.sum() > 0 else np.full(len(b), 1 / len(b))
                        for _, _, b, _ in sets])
    w = w / w.sum()
    mean = w @ pts
    centred = pts - mean
    _, sing, vt = np.linalg.svd(centred * np.sqrt(w)[:, None], full_matrices=False)
    var = sing**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    xy = centred @ vt[:2].T
    # The frame fits the points with at least 20% of their set's top weight; light far-off ones
    # (a reduced set has some) would squeeze the rest into a corner. They sit on the edge.
    rel_all = np.concatenate([b / b.max() if b.max() > 0 else np.ones(len(b))
                              for _, _, b, _ in sets])
    heavy = xy[rel_all >= 0.2] if np.count_nonzero(rel_all >= 0.2) >= 3 else xy
    lo, hi = heavy.min(axis=0), heavy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    uv = np.clip((xy - lo) / span, 0.0, 1.0)
    outside = np.any((xy < lo) | (xy > hi), axis=1)
    inner = 10  # px between the frame and the outermost dot centres
    dots: list[Dot] = []
    i = 0
    for name, z, beta, own_set in sets:
        rel = beta / beta.max() if beta.max() > 0 else np.ones_like(beta)
        for j in range(len(z)):
            x = PAD + inner + uv[i, 0] * (WIDTH - 2 * PAD - 2 * inner)
            y = HEIGHT - PAD - inner - uv[i, 1] * (HEIGHT - 2 * PAD - 2 * inner)
            dots.append(Dot(round(float(x), 1), round(float(y), 1),
                            round(2.0 + 5.0 * float(np.sqrt(rel[j])), 1), own_set, name,
                            bool(outside[i])))
            i += 1
    dots.sort(key=lambda d: d.own)  # this learnware's points drawn last, on top
    return Projection(
        dots,
        f"PC 1 ({ratio[0]:.0%} of variance)",
        f"PC 2 ({ratio[1]:.0%} of variance)",
        len(others), int(outside.sum()))


@dataclass
class Bar:
    label: str
    value: int
    y: float
    width: float


@dataclass
class BarChart:
    title: str
    bars: list[Bar]
    height: int
    width: int = 380
    label_w: int = 130


def bar_chart(title: str, counts: dict[str, int], *, width: int = 380) -> BarChart:
    """Horizontal bars, one per key, lengths proportional to the counts (drawn about as wide
    as the page shows it, so its 13-px labels stay readable)."""
    items = list(counts.items())
    top = max([v for _, v in items] + [1])
    row = 26
    room = width - 130 - 40
    bars = [Bar(str(k), int(v), 10 + i * row, max(1.0, room * v / top) if v else 0.0)
            for i, (k, v) in enumerate(items)]
    return BarChart(title, bars, 20 + row * max(1, len(bars)), width)
