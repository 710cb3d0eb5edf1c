"""Reading user data files for spec generation (CSV, Parquet, .npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from learndock.errors import SpecError


def read_table(path: str | Path, columns: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Load a numeric table; returns (array, feature names). Never unpickles anything."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise SpecError(f"{path.name}: cannot read as a plain .npy array: {exc}") from None
        if arr.ndim != 2:
            raise SpecError(f"{path.name}: expected a 2-D array, got shape {arr.shape}")
        return arr.astype(np.float64), [f"f{i}" for i in range(arr.shape[1])]
    import pandas as pd

    if suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise SpecError("reading Parquet needs pyarrow: pip install 'learndock[parquet]'") from exc
    elif suffix in (".csv", ".tsv", ".txt"):
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise SpecError(f"{path.name}: unsupported data format {suffix!r} (csv, tsv, parquet, npy)")
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise SpecError(f"{path.name}: no columns {missing}")
        df = df[columns]
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise SpecError(
            f"{path.name}: non-numeric columns {bad[:10]}; encode them or pick numeric columns "
            "with --columns"
        )
    if df.shape[0] == 0:
        raise SpecError(f"{path.name}: no rows")
    return df.to_numpy(dtype=np.float64), [str(c) for c in df.columns]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_images(path: str | Path) -> np.ndarray:
    """Images from a ``.npy`` array ``(N, ...)`` or a folder of image files (sorted by name).

    Folder images are decoded with Pillow as RGB (gray stays gray when every file is gray); if
    their sizes differ, each is resized to the canonical 32x32 here, as the encoder would.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise SpecError(f"{path.name}: cannot read as a plain .npy array: {exc}") from None
        if arr.ndim < 2:
            raise SpecError(f"{path.name}: expected (N, H, W[, C]) images, got shape {arr.shape}")
        return arr
    if not path.is_dir():
        raise SpecError(f"{path}: give a folder of images or a .npy array")
    from PIL import Image, UnidentifiedImageError

    from learndock.spec.encoders import CANONICAL_SIZE

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SpecError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise SpecError(f"{f.name}: not a readable image: {exc}") from None
    gray = all(im.mode == "L" for im in images)
    images = [im if gray else im.convert("RGB") for im in images]
    if len({im.size for im in images}) > 1:
        side = (CANONICAL_SIZE, CANONICAL_SIZE)
        images = [im.resize(side, Image.Resampling.BILINEAR) for im in images]
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return arr if gray else arr.transpose(0, 3, 1, 2)


def read_texts(path: str | Path, column: str | None = None) -> list[str]:
    """Texts from a ``.txt`` file (one per non-empty line), a CSV/TSV column (``column``, else
    ``text``, else the only text column) or a folder of ``.txt`` files (one text per file)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise SpecError(f"{path}: no .txt files")
        return [f.read_bytes().decode("utf-8", errors="replace") for f in files]
    if not path.is_file():
        raise SpecError(f"text file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import pandas as pd

        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                         keep_default_na=False)
        if column is None:
            if "text" in df.columns:
                column = "text"
            elif df.shape[1] == 1:
                column = str(df.columns[0])
            else:
                raise SpecError(f"{path.name}: several columns {list(df.columns)[:8]}; pick one "
                                "with --column")
        if column not in df.columns:
            raise SpecError(f"{path.name}: no column {column!r}")
        texts = [t for t in df[column].tolist() if t.strip()]
    else:
        raw = path.read_bytes().decode("utf-8", errors="replace")
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise SpecError(f"{path.name}: no texts")
    return texts
