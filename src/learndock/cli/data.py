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
