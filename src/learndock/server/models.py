"""Request and response models of the HTTP API (its OpenAPI schema is built from these).

Pure pydantic: the client imports them without FastAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learndock.market.types import ACCEPTED

#: A version's state as the API shows it (``published`` is the market's ``accepted``).
State = Literal["queued", "verifying", "published", "rejected", "failed"]
ID_PATTERN = r"^[0-9A-Za-z]{1,32}$"


def api_state(status: str) -> str:
    return "published" if status == ACCEPTED else status


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------- errors
class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found")
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------------- accounts
class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class UserOut(_Out):
    id: str
    email: str
    role: Literal["user", "admin"]
    created_at: float
    last_login_at: float | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100)
    expires_in_days: float | None = Field(None, gt=0, le=3650)


class TokenOut(_Out):
    id: str
    name: str
    kind: Literal["api", "login"]
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: float
    expires_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None


class NewTokenOut(TokenOut):
    token: str = Field(description="the secret: shown this once, stored only as a hash")


class LoginOut(_Out):
    token: str
    token_id: str
    expires_at: float
    user: UserOut


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "admin"]


class UserPage(_Out):
    items: list[UserOut]
    total: int
    page: int
    page_size: int


# ---------------------------------------------------------------------- learnwares
class LearnwareOut(_Out):
    id: str
    name: str
    owner: str | None
    state: State = Field(description="published once a version passed its checks; else the "
                                     "state of its latest version")
    current_version: int | None
    latest_version: int
    semantic: dict[str, Any] | None
    island: str | None
    download_count: int
    created_at: float
    updated_at: float


class LearnwarePage(_Out):
    items: list[LearnwareOut]
    total: int
    page: int
    page_size: int


class JobOut(_Out):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    attempts: int
    max_attempts: int
    worker: str | None = None
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    created_at: float
    finished_at: float | None = None
    last_error: str | None = None


class VersionOut(_Out):
    number: int
    semver: str
    state: State
    current: bool
    package_sha256: str
    size_bytes: int
    created_at: float
    verified_at: float | None = None
    available: bool
    report: dict[str, Any] | None = Field(None, description="the check log (owner and admins)")
    job: JobOut | None = Field(None, description="its verification job (owner and admins)")


class SubmissionOut(_Out):
    learnware_id: str
    version: int
    state: State
    job_id: str
    package_sha256: str
    report: dict[str, Any]


class StatusOut(_Out):
    learnware_id: str
    state: State
    current_version: int | None
    latest_version: int
    versions: list[VersionOut]


# ---------------------------------------------------------------------- search
class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: dict[str, Any] | None = Field(
        None, description="semantic query: data_type, task_type, library_type, scenarios, "
                          "license (values or lists), text, input_dimension, output_dimension; "
                          "input_descriptions (what each column of your table spec is, in "
                          "order: learnwares of other feature spaces are then ranked too, in "
                          "cross_island) and target_description (what you want predicted)")
    spec: dict[str, Any] | None = Field(
        None, description="the user's statistical spec (RKME JSON, as `learndock spec` writes)")
    top_k: int = Field(10, ge=1, le=100)
    max_mixture: int = Field(5, ge=0, le=16)


class SingleMatchOut(_Out):
    learnware_id: str
    name: str
    version: int
    score: float | None = None
    mmd: float | None = None
    text_rank: float | None = None
    island: str | None = None


class MixtureOut(_Out):
    learnware_ids: list[str]
    names: list[str]
    weights: list[float]
    mmd: float
    score: float
    best_single_mmd: float
    improvement: float
    recommended: bool
    island: str | None = None


class BridgePairOut(_Out):
    source: int = Field(description="your column (0-based)")
    target: int = Field(description="the learnware's input column it feeds")
    feature: int = Field(description="the system feature both read as")
    scale: float = Field(description="x_target = scale * x_source + shift")
    shift: float
    confidence: float


class BridgeOut(_Out):
    source: str
    target: str = Field(description="the learnware's island")
    source_dimension: int
    target_dimension: int
    map_version: int
    pairs: list[BridgePairOut]


class CrossIslandOut(_Out):
    learnware_id: str
    name: str
    version: int
    island: str
    score: float = Field(description="in [0, 1], one absolute scale for every island: "
                                     "similarity x coverage x task agreement")
    verdict: Literal["good match", "fair match", "poor match"]
    similarity: float = Field(description="the specs' similarity on the shared system features")
    coverage: float = Field(description="share of the learnware's inputs your columns supply")
    shared_features: int = Field(description="the learnware's inputs bridged from your columns")
    input_dimension: int = Field(description="the learnware's number of inputs")
    map_version: int = Field(description="the system-space version that made the bridge")
    bridge: BridgeOut
    notes: list[str] = []
    cross_island: bool = True


class SearchResponse(_Out):
    single: list[SingleMatchOut]
    mixture: MixtureOut | None = None
    cross_island: list[CrossIslandOut] = Field(
        default_factory=list, description="learnwares of other feature spaces (islands), ranked "
        "in the system space; only with input_descriptions and a table spec")
    explanation: list[str]
    timings_ms: dict[str, float]
    learnware_ids: list[str] = Field(description="what to reuse: the recommended mixture, "
                                                 "else the best single learnware")


class IslandOut(_Out):
    key: str
    data_type: str
    dimension: int
    feature_names: list[str]
    kernel: dict[str, Any]
    n_learnwares: int
    encoder: str | None = None
    kernel_version: int = 1


class IslandKernelOut(_Out):
    """An island's kernel file: fit your spec with ``kernel`` for the sharpest match
    (``learndock spec table --kernel-from FILE``)."""

    island: str
    kernel_version: int
    kernel: dict[str, Any]
    encoder: dict[str, Any] | None = None
    history: list[dict[str, Any]]


class KernelRevisionOut(_Out):
    """The outcome of a kernel revision: the island's kernel now, and why."""

    island: str
    kernel_version: int
    kernel: dict[str, Any]
    changed: bool
    reason: str
    n_specs: int
    current: dict[str, Any] | None = None
    best: dict[str, Any] | None = None


# ---------------------------------------------------------------------- operations
class HealthOut(_Out):
    status: Literal["ok", "degraded"]
    version: str
    database: dict[str, Any]
    blob_store: dict[str, Any] | None = None
    queue: dict[str, Any]
    jail: dict[str, Any]
    demo: dict[str, Any] | None = None


class MetricsOut(_Out):
    uptime_s: float
    learnwares: dict[str, int]
    versions: dict[str, int]
    queue: dict[str, Any]
    users: dict[str, int]
    downloads: int


class StatsOut(_Out):
    learnwares_by_state: dict[str, int]
    versions_by_state: dict[str, int]
    published_by_data_type: dict[str, int]
    published_by_task_type: dict[str, int]
    uploads_by_day: dict[str, int]
    users: dict[str, int]
    queue: dict[str, int]
    downloads: int


class QueueOut(_Out):
    items: list[dict[str, Any]]
    counts: dict[str, int]
