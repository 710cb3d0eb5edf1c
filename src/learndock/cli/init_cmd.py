"""``learndock init``: a package folder from a model file and a sample of its training data.

The developer's first step: it writes ``learnware.yaml`` (every field explained in comments),
the model in a code-free format, and the statistical spec of the sample, so that ``learndock
check`` and ``learndock pack`` work on the result as it is. Interactive on a terminal (asks
for what the flags did not give), flag-driven otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from learndock.cli import vocab
from learndock.cli.main import _split, app, console, emit_json, fail, warn
from learndock.errors import LearndockError

MODEL_SUFFIXES = (".skops", ".joblib", ".pkl", ".pickle", ".onnx")


def _load_model(path: Path, trust_pickle: bool) -> Any:
    """The developer's own model: skops (only its trusted types unless listed), a pickle or
    joblib file (only with --trust-pickle: loading one runs code), or ONNX bytes as they are."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path.read_bytes()
    if suffix == ".skops":
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=path)
        except Exception as exc:  # noqa: BLE001 -- skops raises many types on a bad file
            fail(f"{path.name}: not a readable skops file: {exc}")
        if untrusted and not trust_pickle:
            fail(f"{path.name} holds types skops does not trust by default: {untrusted[:5]}; "
                 "if it is your own file, add --trust-model to load it")
        return sio.load(path, trusted=untrusted)
    if suffix in (".joblib", ".pkl", ".pickle"):
        if not trust_pickle:
            fail(f"{path.name}: loading a pickle/joblib file runs code; if it is your own "
                 "model, add --trust-model (the package stores it as skops, which does not)")
        import joblib

        try:
            return joblib.load(path)
        except Exception as exc:  # noqa: BLE001
            fail(f"{path.name}: cannot load: {type(exc).__name__}: {exc}")
    fail(f"{path.name}: unsupported model file (give one of {', '.join(MODEL_SUFFIXES)})")
    return None


def _on_terminal() -> bool:
    return sys.stdin.isatty()


def _task_of(model: Any, y: np.ndarray | None) -> str | None:
    if isinstance(model, bytes):  # ONNX: the label column says it
        if y is None:
            return None
        integer = np.all(np.isfinite(y)) and np.all(y == np.round(y))
        return "Classification" if integer and np.unique(y).size <= 50 else "Regression"
    if getattr(model, "classes_", None) is not None:
        return "Classification"
    return "Regression" if callable(getattr(model, "predict", None)) else None


def _ask(value: Any, question: str, default: Any, interactive: bool,
         choices: list[str] | None = None) -> Any:
    if value is not None or not interactive:
        return value if value is not None else default
    hint = f" ({', '.join(choices)})" if choices else ""
    while True:
        answer = typer.prompt(f"{question}{hint}", default=default)
        if choices is None or all(a.strip() in choices for a in str(answer).split(",")):
            return answer
        console.print(f"choose from: {', '.join(choices)}", highlight=False)


def _check_choice(tag: str, value: str) -> None:
    allowed = vocab.values(tag)
    if value not in allowed:
        fail(f"{value!r} is not a {tag} value; one of: {', '.join(allowed)}")


@app.command("init")
def init(
    model: Annotated[Path, typer.Argument(
        help=f"Your fitted model ({', '.join(MODEL_SUFFIXES)}).", show_default=False)],
    data: Annotated[Path, typer.Option(
        "--data", help="A sample of the training data (.csv/.tsv/.parquet/.npy): the spec is "
                       "built from it, the column names become the feature names.",
        show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Package folder to write [default: the model file's name].",
        show_default=False)] = None,
    target: Annotated[str | None, typer.Option(
        help="The label column of --data (left out of the features).", show_default=False)] =
    None,
    drop: Annotated[str | None, typer.Option(
        help="Comma-separated columns of --data that are not model inputs.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        help="Package name [default: the model file's name].", show_default=False)] = None,
    description: Annotated[str | None, typer.Option(
        help="What the model does, in a sentence or two (searched by users).",
        show_default=False)] = None,
    task: Annotated[str | None, typer.Option(
        help=vocab.choices("task_type", "[default: from the model]"), show_default=False)] =
    None,
    scenario: Annotated[list[str] | None, typer.Option(
        help=vocab.choices("scenarios", "Repeatable."), show_default=False)] = None,
    license: Annotated[str | None, typer.Option(
        help=vocab.choices("license"), show_default=False)] = None,
    library: Annotated[str | None, typer.Option(
        help=vocab.choices("library_type", "[default: Scikit-learn, or Others for ONNX]"),
        show_default=False)] = None,
    version: Annotated[str, typer.Option(help="Package version (MAJOR.MINOR.PATCH).")] = "1.0.0",
    model_format: Annotated[str, typer.Option(
        "--format", help="How to store a scikit-learn model: skops or onnx (needs skl2onnx).")] =
    "skops",
    n_points: Annotated[int, typer.Option("--n-points", "-k", help="Spec reduced set size K.")] =
    100,
    kernel_from: Annotated[Path | None, typer.Option(
        help="Build the spec with this spec JSON's kernel (to join its island).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the spec.")] = 0,
    trust_model: Annotated[bool, typer.Option(
        "--trust-model", help="Load a pickle/joblib model, or skops types outside its trusted "
                              "defaults (only for your own files: loading them runs code).")] =
    False,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder.")] =
    False,
    no_input: Annotated[bool, typer.Option(
        "--no-input", help="Never ask; use the flags and defaults (automatic off a terminal).")] =
    False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Make a package folder (learnware.yaml explained field by field, model, spec) from a
    model file and a sample of its training data; then `learndock check` and `pack` it."""
    from learndock.cli.data import read_table
    from learndock.package import write_package
    from learndock.spec import RKMETableSpec, load_stat_spec

    if not model.is_file():
        fail(f"file not found: {model}")
    if not data.is_file():
        fail(f"file not found: {data}")
    if model_format not in ("skops", "onnx"):
        fail(f"--format must be skops or onnx, not {model_format!r}")
    out = output or Path(model.stem)
    if out.exists() and not out.is_dir():
        fail(f"{out} is a file; give a folder for the package with -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        fail(f"{out} is not empty; give another folder with -o, or --force to write into it")
    interactive = _on_terminal() and not no_input and not as_json

    fitted = _load_model(model, trust_model)
    left_out = _split(drop) + ([target] if target else [])
    y = None
    try:
        X, names = read_table(data, None, left_out or None)
        if target is not None and model.suffix.lower() == ".onnx":  # its label set
            y = _target_column(data, target)
    except LearndockError as exc:
        fail(str(exc))
    is_onnx = isinstance(fitted, bytes)
    trained_on = getattr(fitted, "feature_names_in_", None)
    if trained_on is not None and [str(c) for c in trained_on] != names:
        fail(f"the model was trained on columns {list(trained_on)[:8]}... but {data.name} "
             f"gives {names[:8]}...: the inputs must be the same columns in the same order")
    d = getattr(fitted, "n_features_in_", None)
    if d is not None and int(d) != X.shape[1]:
        fail(f"the model takes {d} features but {data.name} has {X.shape[1]} after leaving out "
             f"{left_out or 'nothing'} (columns: {names[:12]}); use --target/--drop")

    task = _ask(task, "task", _task_of(fitted, y), interactive, vocab.values("task_type"))
    if task is None:
        fail("cannot tell the task from an ONNX model: give --task (or --target)")
    _check_choice("task_type", task)
    name = _ask(name, "package name", model.stem.replace(" ", "-"), interactive)
    description = _ask(description, "description (what it does, for search)", None,
                       interactive)
    if not description:
        fail("give --description: one or two sentences on what the model does (users search "
             "them)")
    scenarios = scenario or _split(_ask(None, "scenarios, comma-separated", "Others",
                                        interactive, vocab.values("scenarios")))
    for s in scenarios:
        _check_choice("scenarios", s)
    license = _ask(license, "license", "Others", interactive, vocab.values("license"))
    _check_choice("license", license)
    library = library or ("Others" if is_onnx else "Scikit-learn")
    _check_choice("library_type", library)

    labels = None
    if task == "Classification" and is_onnx:
        if y is None:
            fail("an ONNX classifier needs its label set: give --target (the label column)")
        labels = [int(v) if float(v).is_integer() else v for v in np.unique(y).tolist()]
    try:
        kernel = load_stat_spec(kernel_from, user=True).kernel if kernel_from else None
        spec = RKMETableSpec.fit(X, n_points, kernel=kernel, random_state=seed)
        manifest = write_package(
            out, fitted, name=name, version=version,
            semantic={"description": description, "data_type": "Table", "task_type": task,
                      "library_type": library, "scenarios": scenarios, "license": license},
            spec=spec, model_format="onnx" if is_onnx else model_format,
            feature_names=names, labels=labels)
    except LearndockError as exc:
        fail(str(exc))
    except ValueError as exc:  # skl2onnx / the estimator refusing
        fail(f"cannot write the model as {model_format}: {exc}")
    info = {"output": str(out), "name": manifest.name, "version": manifest.version,
            "task_type": task, "features": len(names), "labels": manifest.output.labels,
            "spec_rows": spec.n_samples, "files": sorted(p.name for p in out.iterdir())}
    if as_json:
        emit_json(info)
        return
    console.print(f"wrote {out}/ ({', '.join(info['files'])})", highlight=False, markup=False)
    console.print(f"  {len(names)} features: {', '.join(names[:8])}"
                  f"{', ...' if len(names) > 8 else ''}", highlight=False, markup=False)
    if target is None and y is None:
        from learndock.cli.data import label_like_columns

        for col, why in label_like_columns(X, names):
            warn(f"column {col!r} became a feature but may be the label ({why}); if so, run "
                 f"again with --target {col}")
    console.print(f"next: edit the descriptions in {out}/learnware.yaml, then\n"
                  f"  learndock check {out}\n  learndock pack {out} -o {manifest.name}.zip",
                  highlight=False, markup=False)


def _target_column(data: Path, target: str) -> np.ndarray:
    from learndock.cli.data import read_table

    y, _ = read_table(data, [target])
    return y[:, 0]
