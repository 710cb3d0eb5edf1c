"""The reference engine (PyPI ``learnware`` 0.4.0.post1) for compatibility tests.

It lives in its own test-only virtual environment, ``.venv-ref`` at the repository root
(git-ignored), so its dependency tree never touches ours; ``.ci/run`` builds it when missing:

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install torch==2.13.0
    .venv-ref/bin/pip install learnware==0.4.0.post1 fast_pytorch_kmeans==0.2.0.1 \
        torch-optimizer lightgbm "torch==2.13.0"

``LEARNDOCK_REFERENCE_PYTHON`` points at a reference interpreter elsewhere. Tests that need it
take the ``reference_python`` fixture (or call :func:`require_reference_python`), which skips
with a reason saying how to build it. Scripts run under the reference interpreter with a
private ``HOME`` (importing ``learnware`` creates ``~/.learnware``), offline, one thread, and
exchange data with learndock through ``.npy``/JSON files and zips only.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_VERSION = "0.4.0.post1"
INSTALL_HINT = (
    "python3 -m venv .venv-ref && .venv-ref/bin/pip install torch==2.13.0 && "
    f".venv-ref/bin/pip install learnware=={REFERENCE_VERSION} fast_pytorch_kmeans==0.2.0.1 "
    'torch-optimizer lightgbm "torch==2.13.0"  (.ci/run does this)'
)


def reference_python_path() -> Path:
    """Where the reference interpreter is expected (it may not exist)."""
    env = os.environ.get("LEARNDOCK_REFERENCE_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-ref" / "bin" / "python"


@functools.cache
def _probe(python: str) -> str | None:
    """None when ``python`` has learnware==REFERENCE_VERSION installed, else why not."""
    code = ("import importlib.metadata as m, sys; v = m.version('learnware'); "
            f"sys.exit(0 if v == {REFERENCE_VERSION!r} else 'learnware ' + v)")
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {python}: {exc}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"{python} has no learnware=={REFERENCE_VERSION} ({tail[0][:200]})"
    return None


def find_reference_python() -> tuple[Path | None, str]:
    """(interpreter, "") when the reference engine is installed, else (None, why not)."""
    python = reference_python_path()
    if not python.exists():
        return None, f"{python} does not exist"
    why = _probe(str(python))
    return (None, why) if why else (python, "")


def require_reference_python() -> Path:
    """The reference interpreter, or skip the calling test with a clear reason."""
    python, why = find_reference_python()
    if python is None:
        pytest.skip(f"reference engine (learnware=={REFERENCE_VERSION} in .venv-ref) not "
                    f"available: {why}; build it with: {INSTALL_HINT}")
    return python


def run_reference(python: Path, script: Path, args: list[str], home: Path,
                  timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``script args`` under the reference interpreter; raise with its output on failure."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    r = subprocess.run([str(python), str(script), *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=home, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError(f"reference script {script.name} {args[:1]} failed "
                             f"({r.returncode}):\n{r.stderr[-4000:]}\n{r.stdout[-2000:]}")
    return r


#: Runs under the REFERENCE interpreter (never imports learndock): writes learnware zips with
#: the reference's own template API and specs, and predicts with the reference's own loader.
REFERENCE_SCRIPT = r'''
import json, os, pickle, sys, tempfile, zipfile
from dataclasses import dataclass

import numpy as np


FLAT_MODEL = """
import os
import pickle

import numpy as np

from learnware.model import BaseModel


class FlatPickleModel(BaseModel):
    # An image classifier: a pickled scikit-learn model on flattened pixels.
    def __init__(self, input_shape, output_shape, pickle_filename="model.pkl", **kwargs):
        super().__init__(input_shape=input_shape, output_shape=output_shape)
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), pickle_filename)
        with open(path, "rb") as f:
            self.model = pickle.load(f)

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        return self.model.predict_proba(X.reshape(X.shape[0], -1))
"""


def stand_in_embedding(texts):
    # The reference's sentence encoder cannot be installed offline: a fixed hashed
    # bag-of-words in 384 dimensions stands in for it (the spec format is the reference's).
    import zlib
    W = np.random.default_rng(0).normal(size=(512, 384)) / 8.0
    out = np.zeros((len(texts), 384))
    for i, s in enumerate(texts):
        for w in str(s).lower().split():
            out[i] += W[zlib.crc32(w.encode()) % 512]
    return out


def build(out):
    from sklearn.datasets import load_digits
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline
    import torch

    from learnware.specification import (RKMEImageSpecification, RKMETextSpecification,
                                         generate_rkme_table_spec)
    from learnware.tests.templates import (LearnwareTemplate, PickleModelTemplate,
                                           StatSpecTemplate)
    from learnware.utils import setup_seed

    setup_seed(0)
    tmp = tempfile.mkdtemp(dir=out)
    X, y = load_digits(return_X_y=True)
    dists = {}

    # Table: raw digit pixels (0..16), the reference's own RKME with its default gamma 0.1.
    clf = LogisticRegression(max_iter=3000).fit(X[:1200], y[:1200])
    pkl = os.path.join(tmp, "table.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(clf, f)
    spec = generate_rkme_table_spec(X[:1200], gamma=0.1, reduced_set_size=50, cuda_idx=-1)
    spec_path = os.path.join(out, "table_stat.json")
    spec.save(spec_path)
    spec2 = generate_rkme_table_spec(X[1200:], gamma=0.1, reduced_set_size=30, cuda_idx=-1)
    spec2.save(os.path.join(out, "table_stat_b.json"))
    dists["table"] = float(spec.dist(spec2))
    LearnwareTemplate.generate_learnware_zipfile(
        os.path.join(out, "table.zip"),
        PickleModelTemplate(pickle_filepath=pkl, model_kwargs={
            "input_shape": (64,), "output_shape": (10,), "predict_method": "predict_proba"}),
        StatSpecTemplate(filepath=spec_path, type="RKMETableSpecification"),
        requirements=["scikit-learn==1.2.2", ("numpy", ">=", "1.20")],
    )

    # Text: a TF-IDF + naive Bayes pipeline and the reference's RKMETextSpecification.
    corpus = json.load(open(os.path.join(out, "texts.json")))
    texts, labels = corpus["texts"], np.asarray(corpus["labels"])
    pipe = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(texts, labels)
    pkl = os.path.join(tmp, "text.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(pipe, f)
    RKMETextSpecification.get_sentence_embedding = staticmethod(stand_in_embedding)
    tspec = RKMETextSpecification(cuda_idx=-1)
    tspec.generate_stat_spec_from_data(texts, K=10)
    spec_path = os.path.join(out, "text_stat.json")
    tspec.save(spec_path)
    tspec2 = RKMETextSpecification(cuda_idx=-1)
    tspec2.generate_stat_spec_from_data(texts[::-1][:20], K=8)
    tspec2.save(os.path.join(out, "text_stat_b.json"))
    dists["text"] = float(tspec.dist(tspec2))
    LearnwareTemplate.generate_learnware_zipfile(
        os.path.join(out, "text.zip"),
        PickleModelTemplate(pickle_filepath=pkl, model_kwargs={
            "input_shape": None, "output_shape": (2,), "predict_method": "predict_proba"}),
        StatSpecTemplate(filepath=spec_path, type="RKMETextSpecification"),
        requirements=["scikit-learn"],
    )

    # Image: a model file through the template API, and an RKMEImageSpecification written by
    # the reference's own save() (its generator needs torchvision, whose wheel here does not
    # load against the CPU torch; z and beta are set directly instead).
    imgs = (X / 16.0).reshape(-1, 1, 8, 8)
    iclf = LogisticRegression(max_iter=3000).fit(imgs[:1200].reshape(1200, -1), y[:1200])
    pkl = os.path.join(tmp, "image.pkl")
    with open(pkl, "wb") as f:
        pickle.dump(iclf, f)
    model_py = os.path.join(tmp, "flat_model.py")
    with open(model_py, "w") as f:
        f.write(FLAT_MODEL)

    class FlatTemplate(PickleModelTemplate):
        def __post_init__(self):
            super().__post_init__()
            self.class_name = "FlatPickleModel"
            self.template_path = model_py

    ispec = RKMEImageSpecification(cuda_idx=-1)
    z = np.kron(imgs[:12], np.ones((1, 1, 4, 4)))
    z = (z - z.mean()) / z.std()
    ispec.z = torch.from_numpy(z.astype(np.float32))
    ispec.beta = torch.full((12,), 1.0 / 12, dtype=torch.float64)
    spec_path = os.path.join(out, "image_stat.json")
    ispec.save(spec_path)
    LearnwareTemplate.generate_learnware_zipfile(
        os.path.join(out, "image.zip"),
        FlatTemplate(pickle_filepath=pkl, model_kwargs={
            "input_shape": (1, 8, 8), "output_shape": (10,)}),
        StatSpecTemplate(filepath=spec_path, type="RKMEImageSpecification"),
        requirements=["scikit-learn", "torch==2.13.0"],
    )
    json.dump(dists, open(os.path.join(out, "dists.json"), "w"))


def predict(zip_path, semantic_path, x_path, out_path):
    # The reference's own loader (what its market uses; LearnwareClient.load_learnware reads
    # learnware.yaml with yaml.safe_load, which refuses the template's !!python/tuple tags).
    from learnware.learnware import get_learnware_from_dirpath

    d = tempfile.mkdtemp()
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(d)
    semantic = json.load(open(semantic_path))
    lw = get_learnware_from_dirpath("ref-test", semantic, d, ignore_error=False)
    X = np.load(x_path, allow_pickle=False)
    if X.dtype.kind == "U":
        X = [str(s) for s in X]
    np.save(out_path, np.asarray(lw.predict(X), dtype=np.float64), allow_pickle=False)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "build":
        build(sys.argv[2])
    elif cmd == "predict":
        predict(*sys.argv[2:6])
    else:
        sys.exit(f"unknown command {cmd}")
'''


def write_reference_script(directory: Path) -> Path:
    path = directory / "reference_side.py"
    path.write_text(REFERENCE_SCRIPT, encoding="utf-8")
    return path


if __name__ == "__main__":  # `python tests/reference_env.py`: is the reference available?
    found, reason = find_reference_python()
    print(found or f"not available: {reason}")
    sys.exit(0 if found else 1)
