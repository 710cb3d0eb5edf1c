"""``learndock reuse``: predictions for your data from the learnwares that fit it.

Search (by your spec, or by a spec built here from ``--data`` with the island's kernel), load
the chosen learnwares from the local market or a dock (downloaded into the client's cache,
SHA-256 checked), reuse them with one of :mod:`learndock.reuse`'s estimators and write a CSV of
predictions. Your rows and labels never leave this process.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from learndock.cli import client_cmd
from learndock.cli.client_cmd import DbOpt, HomeOpt, JsonOpt, LocalOpt, UrlOpt, resolve_target
from learndock.cli.main import _split, app, check_output_path, console, emit_json, fail

#: --reuser values: what each does, and whether it needs labels.
REUSERS = {
    "auto": ("cross-validates all of them on your labels and keeps the best; without labels: "
             "the search's recommendation (mixture average or top-1)", False),
    "average": ("averages the learnwares (mixture weights when search recommends a mixture)",
                False),
    "top1": ("the best-matching learnware alone", False),
    "job-selector": ("routes each row to the learnware whose data it resembles", False),
    "ensemble-pruning": ("keeps the subset of learnwares that predicts your labels best", True),
    "feature-augment": ("trains on your labels with the learnwares' outputs as extra features",
                        True),
}


def _reuser_help() -> str:
    return "; ".join(f"{k}: {v[0]}" + (" (needs labels)" if v[1] else "")
                     for k, v in REUSERS.items()) + "."


def _read_labels(path: Path, n_rows: int) -> np.ndarray:
    """Labels for the first rows of --data: a one-column CSV (header optional) or a .npy."""
    from learndock.cli.data import _read_csv, load_npy

    if not path.is_file():
        fail(f"file not found: {path}")
    if path.suffix.lower() == ".npy":
        y = load_npy(path).reshape(-1)
    else:
        df = _read_csv(path)
        if df.shape[1] != 1:
            fail(f"{path.name}: give the labels as one column (it has {df.shape[1]}: "
                 f"{list(df.columns)[:6]})")
        col = df.iloc[:, 0]
        # A header-less file of numbers: its first label became the column name.
        with contextlib.suppress(ValueError):
            first = float(str(df.columns[0]))
            col = np.concatenate([[first], col.to_numpy()])
        y = np.asarray(col)
    if y.shape[0] == 0:
        fail(f"{path.name}: no labels")
    if y.shape[0] > n_rows:
        fail(f"{path.name} has {y.shape[0]} labels for {n_rows} data rows")
    return y


def _user_spec(args: dict[str, Any], X: np.ndarray, names: list[str], kernel_of: Any) -> Any:
    from learndock.spec import RKMETableSpec, load_stat_spec

    if args["spec"] is not None:
        return load_stat_spec(args["spec"], user=True)
    kernel = kernel_of(X.shape[1], names)
    if kernel is None:
        kernel = kernel_of(X.shape[1], None)
    if kernel is None:
        fail(f"no island of the market takes {X.shape[1]} features: no learnware can read "
             "this data")
    return RKMETableSpec.fit(X, min(100, max(1, X.shape[0] // 2)), kernel=kernel,
                             random_state=args["seed"])


def _pick(res: Any, ids: list[str], shortlist: int, reuser: str,
          ) -> tuple[list[str], Any, str]:
    """(learnware ids to load, mixture weights or None, what the search recommended)."""
    if ids:
        return ids, None, "the learnwares you named"
    if not res.single:
        fail("the search found no learnware for this data (see `learndock search` with the "
             "same options for why)")
    if shortlist > 1:
        return [s.learnware_id for s in res.single[:shortlist]], None, \
            f"the top {min(shortlist, len(res.single))} of the search"
    mx = res.mixture
    if mx is not None and mx.recommended and reuser != "top1":
        return list(mx.learnware_ids), list(mx.weights), (
            f"the recommended mixture ({mx.improvement:.0%} lower MMD^2 than the best single)")
    return [res.single[0].learnware_id], None, "the best single match"


def reuse(
    data: Annotated[Path, typer.Option(
        "--data", help="Your data (.csv/.tsv/.parquet/.npy), same columns as the learnwares' "
                       "inputs.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Predictions CSV to write (one row per data row).",
        show_default=False)],
    spec: Annotated[Path | None, typer.Option(
        help="Your RKME spec JSON (default: built here from --data with the island's kernel).",
        show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Labels for the first rows of --data (one-column CSV or .npy): lets --reuser "
             "auto compare reusers, and the label-using reusers learn.",
        show_default=False)] = None,
    reuser: Annotated[str, typer.Option(help=_reuser_help())] = "auto",
    decide: Annotated[bool, typer.Option(
        "--decide", help="Shortlist the top --shortlist matches and let their models' outputs "
                         "on your rows choose (learndock.reuse.DecisionStep; label-free, or "
                         "validated with --labels).")] = False,
    shortlist: Annotated[int, typer.Option(
        help="With --decide: how many matches to load and compare.")] = 5,
    learnware: Annotated[list[str] | None, typer.Option(
        "--learnware", help="Reuse these learnwares (ids; repeatable) instead of searching.",
        show_default=False)] = None,
    target: Annotated[str | None, typer.Option(
        help="A label column of --data: left out of the inputs, and its non-empty cells used "
             "as labels.", show_default=False)] = None,
    drop: Annotated[str | None, typer.Option(
        help="Comma-separated columns of --data that are not inputs.", show_default=False)] =
    None,
    text: Annotated[str | None, typer.Option(help="Free text for the search.",
                                             show_default=False)] = None,
    task_type: Annotated[str | None, typer.Option(help="Task filter for the search.",
                                                  show_default=False)] = None,
    proba: Annotated[bool, typer.Option(
        "--proba", help="Classification: add one probability column per class.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (spec, cross-validation).")] = 0,
    url: UrlOpt = None,
    local: LocalOpt = False,
    home: HomeOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict on your data with the learnwares that fit it (search, load, reuse, write CSV).

    Without labels, --reuser auto uses the search's recommendation: the mixture's weighted
    average when search recommends one, else the top match alone; the output says which.
    """
    import pandas as pd

    from learndock.cli.data import read_table
    from learndock.errors import LearndockError

    if reuser not in REUSERS:
        fail(f"--reuser must be one of {', '.join(REUSERS)}, not {reuser!r}")
    if decide and learnware:
        fail("--decide chooses among search results; --learnware names them: give one")
    if shortlist < 1:
        fail("--shortlist must be >= 1")
    check_output_path(output)
    if spec is not None and not spec.is_file():
        fail(f"file not found: {spec}")
    try:
        X, names = read_table(data, None, (_split(drop) + ([target] if target else [])) or None)
    except LearndockError as exc:
        fail(str(exc))
    y = None
    if labels is not None and target is not None:
        fail("give labels once: --labels FILE or --target COLUMN")
    if labels is not None:
        y = _read_labels(labels, X.shape[0])
    elif target is not None:
        y = _target_labels(data, target)
    n_lab = 0 if y is None else int(y.shape[0])
    if REUSERS[reuser][1] and y is None:
        fail(f"--reuser {reuser} learns from labels: give --labels (or use auto, average, "
             "top1 or job-selector)")

    target_ = resolve_target(url, local, home, database_url)
    args = {"spec": spec, "seed": seed}
    query = {k: v for k, v in {"text": text, "task_type": task_type}.items() if v}
    loaded: list[Any] = []
    with contextlib.ExitStack() as stack, client_cmd.dock_errors(target_):
        if target_.remote:
            source = stack.enter_context(target_.client(as_json))
            user_spec = None if learnware else _user_spec(args, X, names, source.kernel_for)
            res = None if learnware else source.search(query or None, spec=user_spec,
                                                       top_k=max(10, shortlist))
        else:
            source = target_.market()
            stack.callback(source.close)
            user_spec = None if learnware else _user_spec(args, X, names, source.kernel_for)
            res = None if learnware else source.search(query or None, spec=user_spec,
                                                       top_k=max(10, shortlist))
        ids, weights, why = _pick(res, list(learnware or []), shortlist if decide else 1,
                                  reuser)
        for lid in ids:
            lw = source.load(lid)
            stack.callback(lw.close)
            loaded.append(lw)
        names_used = [lw.name for lw in loaded]
        try:
            est, used, extra = _fit_reuser(reuser, decide, loaded, weights, res, ids, X, y, seed)
            pred = est.predict(X)
            table = {"prediction": pred}
            if proba and hasattr(est, "classes_") and hasattr(est, "predict_proba"):
                P = est.predict_proba(X)
                for j, c in enumerate(est.classes_):
                    table[f"proba_{c}"] = P[:, j]
        except (ValueError, TypeError) as exc:
            fail(f"reuse failed: {exc}")
    pd.DataFrame(table).to_csv(output, index=False)
    info = {
        "output": str(output), "rows": int(X.shape[0]), "labels": n_lab, "reuser": used,
        "selected_by": why,
        "learnwares": [{"learnware_id": i, "name": n,
                        "weight": None if weights is None else float(w)}
                       for i, n, w in zip(ids, names_used, weights or [None] * len(ids),
                                          strict=True)],
        "url": target_.url, **extra,
    }
    if as_json:
        emit_json(info)
        return
    console.print(f"wrote {output}: {info['rows']} predictions", highlight=False, markup=False)
    console.print(f"learnwares ({why}): " + ", ".join(
        f"{n} [{i}]" + ("" if weights is None else f" x{w:.2f}")
        for i, n, w in zip(ids, names_used, weights or [None] * len(ids), strict=True)),
        highlight=False, markup=False)
    console.print(f"reuser: {used}", highlight=False, markup=False)
    for name, r in (extra.get("cv_results") or {}).items():
        console.print(f"  cv {name}: {r['mean']:.4g} +- {r['std']:.2g}", highlight=False,
                      markup=False)


def _target_labels(data: Path, target: str) -> np.ndarray:
    """The non-empty cells of the label column, which must be the first rows."""
    from learndock.cli.data import read_table

    y, _ = read_table(data, [target], None) if data.suffix.lower() != ".npy" else (None, None)
    if y is None:
        fail("--target needs a table with named columns; give --labels for .npy data")
    col = y[:, 0]
    have = np.isfinite(col)
    n = int(have.sum())
    if n == 0:
        return None  # type: ignore[return-value]
    if not have[:n].all():
        fail(f"--target {target}: the labelled rows must come first (then empty cells)")
    return col[:n]


def _fit_reuser(name: str, decide: bool, lws: list[Any], weights: Any, res: Any,
                ids: list[str], X: np.ndarray, y: np.ndarray | None, seed: int,
                ) -> tuple[Any, str, dict[str, Any]]:
    """(fitted estimator, what was used in words, extra report fields)."""
    from learndock.reuse import (
        AutoReuser,
        AveragingReuser,
        EnsemblePruningReuser,
        FeatureAugmentReuser,
        JobSelectorReuser,
    )

    n = 0 if y is None else y.shape[0]
    if decide:
        from learndock.reuse import DecisionStep

        scores = None
        if res is not None and all(s.score is not None for s in res.single[: len(lws)]):
            scores = [s.score for s in res.single[: len(lws)]]
        step = DecisionStep(lws, scores=scores, ids=ids, random_state=seed)
        step.fit(X[:n] if n else X, y)
        est = step.reuser()
        if not n:
            est.fit(X)
        d = step.decision_
        used = (f"decision step ({d.criterion}): {d.recommendation} -> {d.choice}"
                + (f" [{', '.join(d.ensemble)}]" if d.recommendation == "ensemble" else ""))
        return est, used, {"decision": d.to_dict(), "cv_results": d.cv_results}
    if name == "auto" and n:
        est = AutoReuser(lws, weights=weights, random_state=seed).fit(X[:n], y)
        return est, f"auto: {est.choice_} (best of {len(est.cv_results_)} by {est.cv}-fold " \
                    f"cross-validation on {n} labels)", {"cv_results": est.cv_results_}
    if name == "auto":
        if len(lws) > 1:
            what = "weighted average (mixture weights)" if weights is not None else "average"
            return (AveragingReuser(lws, weights=weights).fit(X),
                    f"auto without labels: {what} of {len(lws)} learnwares", {})
        return AveragingReuser(lws).fit(X), "auto without labels: top1 (the best match alone)", {}
    if name == "average":
        return AveragingReuser(lws, weights=weights).fit(X), "average", {}
    if name == "top1":
        return AveragingReuser(lws[:1]).fit(X), "top1", {}
    if name == "job-selector":
        return JobSelectorReuser(lws, weights=weights, random_state=seed).fit(X), \
            "job-selector", {}
    cls = EnsemblePruningReuser if name == "ensemble-pruning" else FeatureAugmentReuser
    return cls(lws, random_state=seed).fit(X[:n], y), name, {}


app.command("reuse")(reuse)
