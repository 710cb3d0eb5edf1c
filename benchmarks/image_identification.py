"""Fashion-MNIST image scenario: the two image encoders side by side (issue #15, image part).

    python -m benchmarks.scenarios.image                          # fmnist-cnn -> results/image/
    python -m benchmarks.scenarios.image --encoder random-conv    # -> results/image/random-conv/
    python -m benchmarks.image_identification                      # -> results/image/encoders.md

Reads both runs' ``results.json``, checks that they hold the same learnwares (the same ONNX
models, by hash) and the same users (the same images: identical per-learnware errors), and
writes one table: for each row (mean in market, oracle, spec top-1, + decision step, its
recommendation, averaging, job selector) error, hit@1, hit@5 and regret with bootstrap 95%
intervals over users, under each encoder. The intervals come from
``benchmarks.scenarios.image.decision_summary`` (``summarise`` of
``benchmarks/identification.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.identification import ci_cell
from benchmarks.scenarios.common import RESULTS_ROOT, markdown_table, write_json
from benchmarks.scenarios.image import DECISION_ROWS, ENCODERS, decision_summary

MAIN_ROWS = ["mean", "oracle", "spec", "auto", "agreement", "decision_recommended",
             "avg_mixture_uniform", "job_soft", "job_hard"]
SHORT = {"fmnist-cnn": "trained CNN (fmnist-cnn)", "random-conv": "random-conv"}


def load(folder: Path) -> dict[str, Any]:
    res = json.loads((folder / "results.json").read_text())
    if "decision" not in res and res["users"] and "decision_picks" in res["users"][0]:
        res["decision"] = decision_summary(res["users"])
    return res


def same_market_and_users(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Checks that the runs compare like with like; returns the sentences for the report."""
    a, b = (runs[k] for k in ENCODERS)
    notes = []
    ha = [lw.get("onnx_sha256") for lw in a["learnwares"]]
    hb = [lw.get("onnx_sha256") for lw in b["learnwares"]]
    if None in ha or None in hb:
        same_acc = ([lw["own_test_accuracy"] for lw in a["learnwares"]]
                    == [lw["own_test_accuracy"] for lw in b["learnwares"]])
        if not same_acc:
            raise SystemExit("the two runs hold different learnwares (own test accuracy)")
        notes.append(f"same {len(ha)} learnwares: identical own-class test accuracies (ONNX "
                     "hashes recorded by one run only; both markets take their models from the "
                     "shared models cache)")
    elif ha != hb:
        raise SystemExit("the two runs hold different learnwares (ONNX hashes differ)")
    else:
        notes.append(f"same {len(ha)} learnwares (identical ONNX files)")
    ua, ub = a["users"], b["users"]
    n = min(len(ua), len(ub))
    if len(ua) != len(ub):  # the user plan is seeded per user: the first n are the same
        notes.append(f"user counts differ ({len(ua)} vs {len(ub)}): the first {n} compared")
        for r in (a, b):
            r["users"] = r["users"][:n]
            r["decision"] = decision_summary(r["users"])
        ua, ub = a["users"], b["users"]
    if any(x["classes"] != y["classes"] or x["err"] != y["err"]
           for x, y in zip(ua, ub, strict=True)):
        raise SystemExit("the two runs' users differ (classes or per-learnware errors)")
    notes.append(f"same {n} users (identical classes and per-learnware errors on their images)")
    return notes


def table(runs: dict[str, dict[str, Any]], keys: list[str]) -> str:
    labels = dict(DECISION_ROWS)
    rows = []
    for key in keys:
        for enc in ENCODERS:
            d = runs[enc]["decision"].get(key)
            if d is None:
                continue
            rows.append([labels[key], SHORT[enc], ci_cell(d, "loss", 4), ci_cell(d, "hit1", 2),
                         ci_cell(d, "hit5", 2), ci_cell(d, "regret", 4)])
    return markdown_table(["setting", "encoder", "error [95% CI]", "hit@1 [95% CI]",
                           "hit@5 [95% CI]", "regret [95% CI]"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS_ROOT / "image",
                    help="folder holding the default encoder's results.json and "
                         "random-conv/results.json")
    ap.add_argument("--all-rows", action="store_true", help="every decision-step criterion")
    args = ap.parse_args(argv)
    runs = {enc: load(args.results if enc == "fmnist-cnn" else args.results / enc)
            for enc in ENCODERS}
    notes = same_market_and_users(runs)
    keys = [k for k, _ in DECISION_ROWS] if args.all_rows else MAIN_ROWS
    lines = ["## Fashion-MNIST: trained encoder vs random-conv, with and without the decision "
             "step", ""]
    for enc in ENCODERS:
        r = runs[enc]
        lines.append(f"- {enc}: `{r['command']}`, {r['machine']['date_utc']}, wall "
                     f"{r['wall_seconds']:.0f} s, 1-min load {r['load_start']} -> "
                     f"{r['load_end']}, {r['decision']['_users']} users; decision step "
                     f"recommends the ensemble for "
                     f"{r['decision']['_recommended_ensemble_share']:.0%}")
    lines += [f"- {n}" for n in notes]
    lines += ["", table(runs, keys), ""]
    text = "\n".join(lines)
    (args.results / "encoders.md").write_text(text + "\n")
    write_json(args.results / "encoders.json",
               {enc: {"command": runs[enc]["command"], "decision": runs[enc]["decision"],
                      "summary": runs[enc]["summary"]} for enc in ENCODERS})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
