"""The dock over HTTP: search requests per second and latency against the same search
in-process, and upload-to-published time for skops and python-format learnwares.

What is measured, per market size N (default 1,000 and 10,000 learnwares):

* **search latency**, p50 / p95 / mean, of the same queries two ways, side by side in one run:
  ``Market.search`` in this process, and ``Client.search`` through the dock's HTTP API (a
  ``learndock serve`` subprocess on loopback: JSON encoding of the spec, the request, the
  server's parsing and cap checks of the spec, the search, the response, the client's
  parsing). Each request runs both ways back to back (which goes first alternates), so the
  load of a shared machine hits both alike; the ratio is of medians of the same run and the
  overhead the median of the paired differences. Three
  workloads: a statistical search (the user's RKME spec, ``top_k=10``); a text search that
  one learnware matches (the number in its name; no spec: about the fixed cost of a request);
  and a text search whose words every description holds (``"digits number <i>"``: full text
  ranks all N);
* **requests per second**: sequential (one client, back to back) and with ``--concurrency``
  clients in threads (the server is one uvicorn process);
* **upload to published**: ``Client.upload`` of a skops and of a python-format learnware
  (the same digits classifier; the python one runs in the jail), then status polled every
  20 ms until the version is published; split into the upload request, the wait in the queue
  and the checks (from the job's server-side timestamps). The first upload of each format is
  reported apart: the dock's worker imports that model runtime or builds its first jail then.

The markets are built as ``benchmarks/search_speed.py`` builds them (two real packages through
``Market.add``, the rest bulk-inserted with the market's own row code; see its docstring), from
the same fitted specs and their cache. The dock serves that home with one verification worker,
rate limits off (``LEARNDOCK_SERVER_*_PER_MIN=0``), one BLAS thread (as this process is).

Run from the repo root::

    python -m benchmarks.server_speed              # N = 1,000 and 10,000 (about 6 minutes)
    python -m benchmarks.server_speed --quick      # N = 300, few queries (CI smoke, ~1 min)

Results: ``benchmarks/results/server_speed/results.json`` and ``latency.png`` (``quick/``
below it with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

try:
    from benchmarks import search_speed as ss
    from benchmarks.common import describe_machine, machine_info
except ImportError:  # pragma: no cover - run as a plain script
    import search_speed as ss  # type: ignore[no-redef]
    from common import describe_machine, machine_info  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "server_speed"
TOP_K = 10
POLL_S = 0.02
console = Console(stderr=True, highlight=False)

PYTHON_MODEL = '''\
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class Model:
    def __init__(self):
        self.W = np.load(HERE / "W.npy", allow_pickle=False)
        self.b = np.load(HERE / "b.npy", allow_pickle=False)

    def predict(self, X):
        return np.argmax(np.asarray(X, dtype=np.float64) @ self.W + self.b, axis=1)
'''


# ---------------------------------------------------------------------------- packages
def python_package(skops_dir: Path, out_dir: Path, Xa: np.ndarray, ya: np.ndarray) -> Path:
    """The template classifier as a ``python``-format package (a numpy linear model with the
    same manifest, spec and input contract)."""
    from sklearn.linear_model import LogisticRegression

    from learndock.package.manifest import Manifest

    manifest = Manifest.load(skops_dir).to_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in manifest["stat_specs"]:
        shutil.copyfile(skops_dir / spec["file"], out_dir / spec["file"])
    clf = LogisticRegression(max_iter=300).fit(Xa, ya)
    np.save(out_dir / "W.npy", clf.coef_.T.copy(), allow_pickle=False)
    np.save(out_dir / "b.npy", clf.intercept_.copy(), allow_pickle=False)
    (out_dir / "model.py").write_text(PYTHON_MODEL)
    manifest["name"] = "digits-classifier-python"
    manifest["semantic"]["name"] = "digits-classifier-python"
    manifest["model"] = {"format": "python", "module": "model.py", "class_name": "Model"}
    Manifest.parse(manifest).save(out_dir)
    return out_dir


# ---------------------------------------------------------------------------- the dock
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dock(home: Path) -> Iterator[str]:
    """``learndock serve`` on the home, in a subprocess; yields its URL."""
    import httpx

    port = _free_port()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "LEARNDOCK_SERVER_SEARCH_PER_MIN": "0",
           "LEARNDOCK_SERVER_UPLOAD_PER_MIN": "0", "LEARNDOCK_SERVER_LOGIN_PER_MIN": "0",
           "LEARNDOCK_SERVER_POLL_S": "0.5"}
    log = open(home / "serve.log", "w")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(
        [sys.executable, "-c", "from learndock.cli.main import main; main()", "serve",
         "--home", str(home), "--port", str(port), "--workers", "1", "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dock exited: {(home / 'serve.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the dock did not start within 120 s")
            time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def api_token(home: Path) -> str:
    """An account and API token in the dock's database (as `learndock users/tokens create`)."""
    from learndock.market import Market
    from learndock.server.accounts import AccountStore
    from learndock.server.security import Passwords

    with Market(home) as m:
        accounts = AccountStore(m.engine, Passwords(1, 1024, 1))
        user = accounts.create_user("bench@example.org", "benchmark password", "user")
        return accounts.create_token(user.id, "bench", kind="api").secret


# ---------------------------------------------------------------------------- measurements
def _stats(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)),
            "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean()),
            "min_ms": float(a.min()), "max_ms": float(a.max()),
            "rps_sequential": float(1e3 / a.mean()), "samples_ms": [round(x, 3) for x in ms]}


def side_by_side(market: Any, client: Any, requests: list[dict[str, Any]], repeats: int
                 ) -> dict[str, Any]:
    """The same requests in-process and over HTTP, request by request: each request runs both
    ways back to back (the order alternating), so the load of a shared machine hits both
    alike; ``overhead_p50_ms`` is the median of the paired differences."""
    def local(r: dict[str, Any]) -> Any:
        return market.search(r.get("query"), r.get("spec"), top_k=TOP_K)

    def remote(r: dict[str, Any]) -> Any:
        return client.search(r.get("query"), spec=r.get("spec"), top_k=TOP_K)

    local(requests[0])  # warm-up: island index, connections, statement caches
    remote(requests[0])
    times: dict[str, list[float]] = {"in_process": [], "http": []}
    stages: dict[str, list[dict[str, float]]] = {"in_process": [], "http": []}
    agree = []
    for rep in range(repeats):
        for i, r in enumerate(requests):
            pair = [("in_process", local), ("http", remote)]
            if (rep + i) % 2:
                pair.reverse()
            got = {}
            for name, fn in pair:
                t0 = time.perf_counter()
                got[name] = fn(r)
                times[name].append((time.perf_counter() - t0) * 1e3)
                stages[name].append(dict(got[name].timings_ms))
            a, b = got["in_process"], got["http"]
            agree.append(a.learnware_ids == b.learnware_ids and [
                s.learnware_id for s in a.single] == [s.learnware_id for s in b.single])
    out: dict[str, Any] = {k: _stats(v) for k, v in times.items()}
    for k, st in stages.items():  # the pipeline's own timings (over HTTP: the server's)
        out[k]["stages_p50_ms"] = {
            stage: float(np.median([t[stage] for t in st if stage in t]))
            for stage in ("semantic", "statistical", "mixture", "total")
            if any(stage in t for t in st)}
    out["ratio_p50"] = out["http"]["p50_ms"] / out["in_process"]["p50_ms"]
    out["overhead_p50_ms"] = float(np.median(np.subtract(times["http"], times["in_process"])))
    out["same_results"] = float(np.mean(agree))
    return out


def concurrent_rps(url: str, requests: list[dict[str, Any]], clients: int, total: int
                   ) -> dict[str, Any]:
    """``total`` searches from ``clients`` threads (one Client each) against the dock."""
    from learndock.client import Client

    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    errors: list[str] = []

    def work() -> None:
        with Client(url, progress=False, home=tempfile.gettempdir()) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                r = requests[i % len(requests)]
                t0 = time.perf_counter()
                try:
                    c.search(r.get("query"), spec=r.get("spec"), top_k=TOP_K)
                except Exception as exc:  # noqa: BLE001 -- counted, reported
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.asarray(latencies)
    return {"clients": clients, "requests": total, "errors": len(errors),
            "first_error": errors[0] if errors else None, "wall_s": wall,
            "rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(a, 50)) if a.size else None,
            "p95_ms": float(np.percentile(a, 95)) if a.size else None}


def upload_to_published(client: Any, zip_path: Path, count: int, timeout: float = 300.0
                        ) -> dict[str, Any]:
    """Upload ``count`` times; per upload the request time, then the time until published."""
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        sub = client.upload(zip_path)
        t_up = time.perf_counter()
        while True:
            st = client.status(sub.learnware_id)
            v = next(v for v in st.versions if v.number == sub.version)
            if v.state in ("published", "rejected", "failed"):
                break
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{zip_path.name}: still {v.state} after {timeout} s")
            time.sleep(POLL_S)
        t_done = time.perf_counter()
        job = v.job
        samples.append({
            "learnware_id": sub.learnware_id, "state": v.state,
            "upload_ms": (t_up - t0) * 1e3, "total_ms": (t_done - t0) * 1e3,
            "queue_wait_ms": ((job.claimed_at - job.created_at) * 1e3
                              if job and job.claimed_at else None),
            "checks_ms": ((job.finished_at - job.claimed_at) * 1e3
                          if job and job.finished_at and job.claimed_at else None),
            "report": v.report if len(samples) == 0 else None,
        })
    ok = [s for s in samples if s["state"] == "published"]
    # The first upload of a format is cold: the dock's worker imports that model runtime
    # (skops + scikit-learn) or builds its first jail. Reported apart; medians are of the rest.
    warm = ok[1:] if len(ok) > 1 else ok

    def med(key: str) -> float | None:
        vals = [s[key] for s in warm if s[key] is not None]
        return float(np.median(vals)) if vals else None

    return {"package": zip_path.name, "size_bytes": zip_path.stat().st_size,
            "uploads": count, "published": len(ok),
            "states": sorted({s["state"] for s in samples}),
            "first_total_ms": samples[0]["total_ms"] if samples else None,
            "total_p50_ms": med("total_ms"), "upload_p50_ms": med("upload_ms"),
            "queue_wait_p50_ms": med("queue_wait_ms"), "checks_p50_ms": med("checks_ms"),
            "samples": samples}


# ---------------------------------------------------------------------------- one size
def bench_size(tmp: Path, n: int, templates: dict[str, Path], bulk: list[Any],
               queries: list[Any], repeats: int, clients: int, uploads: int,
               zips: dict[str, Path] | None) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from learndock.client import Client
    from learndock.market import Market

    console.rule(f"N = {n:,}")
    home = tmp / f"home-{n}"
    with threadpool_limits(limits=1, user_api="blas"):
        market, build = ss.build_market(home, _default_rff(), templates, bulk[: n - 2],
                                        ss.SEED)
    market.close()
    console.log(f"built: {build}")
    token = api_token(home)
    rng = np.random.default_rng(ss.SEED + n)
    spec_requests = [{"spec": q} for q in queries]
    picks = rng.integers(0, n - 2, size=len(queries))
    # One learnware's number (a token of its name only): full text finds one learnware.
    named_requests = [{"query": {"text": f"{int(i):05d}"}} for i in picks]
    # Words every description holds: full text ranks all N.
    broad_requests = [{"query": {"text": f"digits number {int(i)}"}} for i in picks]
    res: dict[str, Any] = {"n": n, "build": build}
    with dock(home) as url, Market(home) as market, threadpool_limits(limits=1,
                                                                      user_api="blas"), \
            Client(url, token, progress=False, home=tmp / "client") as client:
        # This process holds the benchmark's own data (every spec of the largest market): keep
        # the garbage collector from walking it during the in-process searches.
        gc.collect()
        gc.freeze()
        res["gc_frozen_objects"] = gc.get_freeze_count()
        load0 = os.getloadavg()[0]
        res["spec_search"] = side_by_side(market, client, spec_requests, repeats)
        res["text_search"] = side_by_side(market, client, named_requests, repeats)
        res["broad_text_search"] = side_by_side(market, client, broad_requests, repeats)
        res["concurrent_spec_search"] = concurrent_rps(url, spec_requests, clients,
                                                       max(len(queries) * repeats, clients * 4))
        res["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        sp, tx = res["spec_search"], res["text_search"]
        console.log(
            f"spec search p50: in-process {sp['in_process']['p50_ms']:.1f} ms, HTTP "
            f"{sp['http']['p50_ms']:.1f} ms (x{sp['ratio_p50']:.2f}); text search p50: "
            f"{tx['in_process']['p50_ms']:.1f} / {tx['http']['p50_ms']:.1f} ms; "
            f"{clients} clients: {res['concurrent_spec_search']['rps']:.1f} req/s")
        if zips is not None:
            res["upload_to_published"] = {}
            for fmt, z in zips.items():
                u = upload_to_published(client, z, uploads)
                res["upload_to_published"][fmt] = u
                console.log(f"upload -> published ({fmt}): p50 {u['total_p50_ms']:.0f} ms, "
                            f"first {u['first_total_ms']:.0f} ms (states {u['states']})")
    gc.unfreeze()
    shutil.rmtree(home, ignore_errors=True)
    return res


def _default_rff() -> int:
    from learndock.market.islands import RFF_DIM

    return RFF_DIM


# ---------------------------------------------------------------------------- reporting
WORKLOADS = (("spec_search", "statistical search (user spec)"),
             ("text_search", "text search, 1 match"),
             ("broad_text_search", "text search, all N match"))


def markdown(payload: dict[str, Any]) -> str:
    rows = [
        "| N | workload | in-process p50 / p95 | HTTP p50 / p95 | HTTP / in-process (p50) | "
        "HTTP overhead p50 (paired) | server's own search p50 | req/s sequential: in-process "
        f"/ HTTP | req/s over HTTP, {payload['config']['clients']} clients | same results |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        for key, label in WORKLOADS:
            s = r[key]
            conc = (f"{r['concurrent_spec_search']['rps']:.1f}" if key == "spec_search"
                    else "")
            rows.append(
                f"| {r['n']:,} | {label} | {s['in_process']['p50_ms']:.1f} / "
                f"{s['in_process']['p95_ms']:.1f} ms | **{s['http']['p50_ms']:.1f}** / "
                f"{s['http']['p95_ms']:.1f} ms | x{s['ratio_p50']:.2f} | "
                f"{s['overhead_p50_ms']:.1f} ms | "
                f"{s['http'].get('stages_p50_ms', {}).get('total', float('nan')):.1f} ms | "
                f"{s['in_process']['rps_sequential']:.1f} / "
                f"{s['http']['rps_sequential']:.1f} | {conc} | {s['same_results']:.0%} |")
    up = next((r["upload_to_published"] for r in payload["results"]
               if "upload_to_published" in r), None)
    if up:
        rows += ["", "| format | package | uploads published | upload-to-published p50 "
                 "(warm) | upload request p50 | queue wait p50 | checks p50 | first upload "
                 "(cold worker) |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for fmt, u in up.items():
            def f(x: float | None) -> str:
                return "-" if x is None else f"{x:.0f} ms"
            rows.append(f"| {fmt} | {u['size_bytes'] / 1024:.0f} KiB | {u['published']}/"
                        f"{u['uploads']} | **{f(u['total_p50_ms'])}** | {f(u['upload_p50_ms'])}"
                        f" | {f(u['queue_wait_p50_ms'])} | {f(u['checks_p50_ms'])} | "
                        f"{f(u['first_total_ms'])} |")
    return "\n".join(rows) + "\n"


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    results = payload["results"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 5),
                             gridspec_kw={"width_ratios": [2, 2, 2, 1.3]})
    for ax, (key, title) in zip(axes[:3], WORKLOADS, strict=True):
        data, labels, colors = [], [], []
        for r in results:
            for where, c in (("in_process", "tab:blue"), ("http", "tab:orange")):
                data.append(r[key][where]["samples_ms"])
                labels.append(f"N={r['n']:,}\n{'in-process' if where == 'in_process' else 'HTTP'}")
                colors.append(c)
        parts = ax.violinplot(data, showmedians=True, showextrema=False)
        for body, c in zip(parts["bodies"], colors, strict=True):
            body.set_facecolor(c)
            body.set_alpha(0.5)
        for i, d in enumerate(data, 1):
            ax.text(i, np.percentile(d, 95), f"p95 {np.percentile(d, 95):.0f}", ha="center",
                    va="bottom", fontsize=7)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set(ylabel="latency per request (ms)", title=title, yscale="log")
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    ax = axes[3]
    up = next((r["upload_to_published"] for r in results if "upload_to_published" in r), None)
    if up:
        names = list(up)
        parts_ms = {k: [up[f][k] or 0.0 for f in names] for k in
                    ("upload_p50_ms", "queue_wait_p50_ms", "checks_p50_ms")}
        other = [max((up[f]["total_p50_ms"] or 0.0) - sum(parts_ms[k][i] for k in parts_ms), 0)
                 for i, f in enumerate(names)]
        bottom = np.zeros(len(names))
        for (k, vals), c in zip(list(parts_ms.items()) + [("poll + publish", other)],
                                ("tab:orange", "tab:gray", "tab:green", "tab:purple"),
                                strict=True):
            ax.bar(names, vals, bottom=bottom, color=c,
                   label=k.replace("_p50_ms", "").replace("_", " "))
            bottom += np.asarray(vals)
        ax.set(ylabel="ms (median of warm uploads)", title="upload -> published (N = "
               f"{results[0]['n']:,})")
        ax.legend(fontsize=7)
    fig.suptitle(f"learndock dock over HTTP vs in-process -- {payload['machine_description']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(
        "# Dock over HTTP vs in-process\n\n"
        f"Command: `{payload['command']}`  \nMachine: {payload['machine_description']}\n\n"
        + markdown(payload))
    if payload["results"]:
        plot(payload, out / "latency.png")


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=None,
                        help="market sizes (default 1000 10000; 300 with --quick)")
    parser.add_argument("--queries", type=int, default=None,
                        help="user specs / text queries (default 40; 8 with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="passes over the queries (default 3; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="client threads for the throughput pass (default 4)")
    parser.add_argument("--uploads", type=int, default=None,
                        help="uploads per format (default 5; 2 with --quick)")
    parser.add_argument("--base", type=int, default=None,
                        help="fitted base specs (default 200, as search_speed; 8 with --quick)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run")
    parser.add_argument("--no-cache", action="store_true", help="refit the base/query specs")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results.md and latency.png from results.json, no run")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; "
                        "its quick/ subfolder with --quick)")
    args = parser.parse_args(argv)
    q = args.quick
    out = args.out or (DEFAULT_OUT / "quick" if q else DEFAULT_OUT)
    if args.report_only:
        payload = json.loads((out / "results.json").read_text())
        write_outputs(out, payload)
        sys.stdout.write(markdown(payload))
        return 0
    sizes = sorted(args.n or ([300] if q else [1000, 10_000]))
    n_queries = args.queries or (8 if q else 40)
    repeats = args.repeats or (1 if q else 3)
    uploads = args.uploads or (2 if q else 5)
    n_base = min(args.base or (8 if q else 200), max(sizes))
    fit_iter = 3 if q else 5
    if min(sizes) < 4:
        parser.error("--n must be >= 4")
    command = "python -m benchmarks.server_speed " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    machine = machine_info()
    console.log(f"machine: {describe_machine(machine)}")
    t_start = time.perf_counter()

    from threadpoolctl import threadpool_limits

    from learndock.package import pack

    Xa, ya, Xb, yb = ss.digits_split()
    with threadpool_limits(limits=1, user_api="blas"):
        base, _ = ss.fit_specs("base", Xa, ya, n_base, ss.SEED, fit_iter, (150, 400),
                               not args.no_cache)
        queries, _ = ss.fit_specs("query", Xb, yb, n_queries, ss.SEED + 1000, fit_iter,
                                  (100, 300), not args.no_cache)
    derived = ss.derive_specs(base, max(sizes) - n_base, ss.SEED)
    bulk = [(s, "fitted") for s in base[2:]] + derived

    payload: dict[str, Any] = {
        "benchmark": "server-speed",
        "command": command,
        "machine": machine,
        "machine_description": describe_machine(machine),
        "config": {"sizes": sizes, "queries": n_queries, "repeats": repeats, "top_k": TOP_K,
                   "clients": args.concurrency, "uploads_per_format": uploads,
                   "base_specs_fitted": n_base, "rff_dim": _default_rff(),
                   "server": "learndock serve subprocess, 1 uvicorn process, 1 verification "
                             "worker, rate limits off, OPENBLAS_NUM_THREADS=1",
                   "client": "learndock.client.Client (httpx), loopback",
                   "status_poll_s": POLL_S},
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="learndock-server-speed-") as tmp_name:
        tmp = Path(tmp_name)
        templates = ss.write_templates(tmp / "templates", Xa, ya, base)
        zips = {"skops": tmp / "digits-classifier-skops.zip",
                "python": tmp / "digits-classifier-python.zip"}
        pack(templates["classifier"], zips["skops"])
        pack(python_package(templates["classifier"], tmp / "python-pkg", Xa, ya),
             zips["python"])
        for i, n in enumerate(sizes):
            payload["results"].append(bench_size(
                tmp, n, templates, bulk, queries, repeats, args.concurrency, uploads,
                zips if i == 0 else None))
            write_outputs(out, payload)
    payload["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_outputs(out, payload)
    sys.stdout.write(markdown(payload))
    console.log(f"done in {payload['total_seconds']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
