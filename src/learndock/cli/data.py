"""Reading user data files for spec generation (CSV, Parquet, .npy).

Every reader turns what a malformed file makes the parsers raise into a :class:`SpecError`
naming the file: a ``.npy`` header is checked against the file's size before an array is
allocated, CSV parser errors become one-line messages.
"""

from __future__ import annotations

import csv
import math
import struct
import tokenize
from pathlib import Path

import numpy as np

from learndock.errors import SpecError

#: What numpy's .npy reader raises on a malformed header or body.
_NPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError,
               RecursionError, tokenize.TokenError, UnicodeDecodeError, struct.error)


def _csv_errors() -> tuple[type[BaseException], ...]:
    import pandas as pd

    return (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError,
            OverflowError, csv.Error, TypeError, IndexError)


def load_npy(path: Path) -> np.ndarray:
    """A plain numeric ``.npy`` array; never unpickles, never allocates more than the file
    holds (the header's shape is checked against the bytes actually present)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise SpecError(f"{path.name}: unsupported .npy format version {version}")
            data_start = f.tell()
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
            raise SpecError(f"{path.name}: expected a plain numeric array, got dtype {dtype}")
        if not all(isinstance(s, int) and s >= 0 for s in shape):
            raise SpecError(f"{path.name}: invalid array shape {shape}")
        needed = math.prod(shape) * dtype.itemsize
        held = path.stat().st_size - data_start
        if needed > held:
            raise SpecError(
                f"{path.name}: the header promises {needed} bytes of data but the file holds "
                f"{held}; it is truncated or corrupt"
            )
        return np.load(path, allow_pickle=False)
    except SpecError:
        raise
    except _NPY_ERRORS as exc:
        raise SpecError(f"{path.name}: cannot read as a plain .npy array: {exc}") from None


def _drop_npy(path: Path, arr: np.ndarray, drop: list[str]) -> tuple[np.ndarray, list[str]]:
    """``.npy`` columns are named ``f0``, ``f1``, ...; ``drop`` takes those names or indices."""
    names = [f"f{i}" for i in range(arr.shape[1])]
    idx = set()
    for c in drop:
        i = int(c) if c.isdigit() else (names.index(c) if c in names else None)
        if i is None or not 0 <= i < arr.shape[1]:
            raise SpecError(f"{path.name}: no column {c!r} (columns are f0..f{arr.shape[1] - 1} "
                            "or their indices)")
        idx.add(i)
    keep = [i for i in range(arr.shape[1]) if i not in idx]
    return arr[:, keep], [names[i] for i in keep]


def read_table(path: str | Path, columns: list[str] | None = None,
               drop: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Load a numeric table; returns (array, feature names). Never unpickles anything.

    ``drop`` leaves columns out (the label, ids) before the numeric check, so a text label
    column does not stop a spec of the features."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise SpecError(f"{path.name} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = load_npy(path)
        if arr.ndim != 2:
            raise SpecError(f"{path.name}: expected a 2-D array, got shape {arr.shape}")
        arr, names = _drop_npy(path, arr, drop or [])
        if columns:
            missing = [c for c in columns if c not in names]
            if missing:
                raise SpecError(f"{path.name}: no columns {missing}")
            arr, names = arr[:, [names.index(c) for c in columns]], list(columns)
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise SpecError(f"{path.name}: no rows" if arr.shape[1] else f"{path.name}: no columns")
        return arr.astype(np.float64), names
    import pandas as pd

    if suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise SpecError("reading Parquet needs pyarrow: pip install 'learndock[parquet]'") from exc
        except (OSError, *_csv_errors()) as exc:
            raise SpecError(f"{path.name}: cannot read as Parquet: {exc}") from None
    elif suffix in (".csv", ".tsv", ".txt"):
        df = _read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise SpecError(f"{path.name}: unsupported data format {suffix!r} (csv, tsv, parquet, npy)")
    df.columns = [str(c) for c in df.columns]
    if drop:
        missing = [c for c in drop if c not in df.columns]
        if missing:
            raise SpecError(f"{path.name}: no columns {missing} to leave out (it has "
                            f"{list(df.columns)[:10]})")
        df = df.drop(columns=drop)
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise SpecError(f"{path.name}: no columns {missing}")
        df = df[columns]
    if df.shape[0] == 0:
        raise SpecError(f"{path.name}: no rows (only a header)" if df.shape[1]
                        else f"{path.name}: no columns")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise SpecError(
            f"{path.name}: non-numeric columns {bad[:10]}; encode them, leave them out with "
            "--drop (or --target for the label), or pick numeric columns with --columns"
        )
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise SpecError(f"{path.name}: no rows" if df.shape[1] else f"{path.name}: no columns")
    try:
        return df.to_numpy(dtype=np.float64), [str(c) for c in df.columns]
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(f"{path.name}: cannot convert the columns to numbers: {exc}") from None


#: Column names that usually hold what a model predicts rather than what it reads.
LABEL_NAMES = frozenset({"label", "labels", "target", "targets", "class", "classes", "y",
                         "outcome", "response", "category", "species"})
#: An integer column with at most this many distinct values looks like class labels.
LABEL_MAX_CLASSES = 20


def label_like_columns(X: np.ndarray, names: list[str]) -> list[tuple[str, str]]:
    """Columns that look like a label, with why: a spec that includes the label describes
    (features, label) pairs, which no user's unlabelled data will match.

    Any column named like a label counts; by its values only the last column does (where
    exports put the label), since integer features with few values (pixels, counts) are common.
    """
    out = []
    for name in names:
        if name.strip().lower() in LABEL_NAMES:
            out.append((name, "its name is a usual name for a label"))
    if X.shape[1] > 1 and X.shape[0] >= 2 * LABEL_MAX_CLASSES and names[-1] not in dict(out):
        col = X[:, -1]
        col = col[np.isfinite(col)]
        if col.size and np.all(col == np.round(col)):
            n = np.unique(col).size
            if 2 <= n <= LABEL_MAX_CLASSES:
                out.append((names[-1], f"the last column holds {n} distinct integers, like "
                                       "class labels"))
    return out


def _read_csv(path: Path, **kwargs: object):  # noqa: ANN202 -- a DataFrame
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except _csv_errors() as exc:
        msg = " ".join(str(exc).split())[:300]
        kind = "TSV" if kwargs.get("sep") == "\t" else "CSV"
        raise SpecError(f"{path.name}: cannot read as {kind}: {msg or type(exc).__name__}") from None


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_images(path: str | Path) -> np.ndarray:
    """Images from a ``.npy`` array ``(N, ...)`` or a folder of image files (sorted by name).

    Folder images are decoded with Pillow as RGB (gray stays gray when every file is gray); if
    their sizes differ, each is resized to the canonical 32x32 here, as the encoder would.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npy":
        arr = load_npy(path)
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
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
                SyntaxError, EOFError, struct.error, TypeError, IndexError) as exc:
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
        df = _read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str,
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
        texts = [t for t in df[column].tolist() if isinstance(t, str) and t.strip()]
    else:
        raw = path.read_bytes().decode("utf-8", errors="replace")
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise SpecError(f"{path.name}: no texts")
    return texts
