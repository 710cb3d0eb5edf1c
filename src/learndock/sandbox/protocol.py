"""The worker protocol: JSON lines that carry data only, parsed strictly on the dock's side.

Requests (dock -> worker)::

    {"op": "load", "module": "model.py", "class_name": "Model", "kwargs": {...}}
    {"op": "call", "method": "predict", "inputs": ["in1.npy"]}
    {"op": "exit"}

Replies (worker -> dock), one line each, exactly these keys and types::

    {"ok": true, "ready": true}                 # once, when the worker has started
    {"ok": true, "methods": ["predict", ...]}     # after "load"
    {"ok": true, "output": true|false}            # after "call": out.npy written or not
    {"ok": true}                                  # after "exit"
    {"ok": false, "error": "..."}                 # any failure

No reply names a file: inputs are read from the jail's read-only ``/in`` under names the dock
chose, and the output is always ``OUTPUT_NAME`` in the scratch directory, which the dock opens
itself (no symlinks, regular files only, size-bounded). Error texts are truncated and reduced
to printable characters before they reach a check report.

Only the standard library is imported here: the worker loads this module inside the jail.
"""

from __future__ import annotations

import json
import re
from typing import Any

METHODS = ("predict", "predict_proba", "fit", "finetune", "partial_fit")
OUTPUT_NAME = "out.npy"
INPUT_NAME = re.compile(r"in[0-9]{1,9}\.npy")
#: Longest reply line the dock reads (bytes, newline included).
MAX_LINE = 64 * 1024
#: Longest error text kept from the worker (characters, after sanitising).
MAX_ERROR_CHARS = 500

_REPLY_SHAPES: dict[str, dict[str, type]] = {
    "ready": {"ok": bool, "ready": bool},
    "load": {"ok": bool, "methods": list},
    "call": {"ok": bool, "output": bool},
    "exit": {"ok": bool},
}


class ProtocolError(ValueError):
    """The worker sent something outside the protocol (treated as hostile: the jail is
    stopped)."""


def sanitize(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """Printable characters only (controls, escapes, bidi marks become spaces), whitespace
    collapsed, at most ``limit`` characters."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text))
    s = " ".join(s.split())
    if len(s) > limit:
        s = s[: max(0, limit - 15)].rstrip() + " ...(truncated)"
    return s


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ProtocolError(f"duplicate key {sanitize(k, 40)!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-standard JSON constant {name}")


def parse_reply(line: bytes, expect: str) -> dict[str, Any]:
    """Parse one reply line for request kind ``expect`` ("ready", "load", "call", "exit").

    Returns the reply; ``{"ok": False, "error": <sanitised text>}`` for a worker-side failure.
    Raises :class:`ProtocolError` for anything else.
    """
    if len(line) > MAX_LINE:
        raise ProtocolError(f"reply longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(
            line.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"reply is not JSON: {sanitize(exc, 120)}") from None
    if not isinstance(obj, dict) or type(obj.get("ok")) is not bool:
        raise ProtocolError("reply is not an object with a boolean 'ok'")
    if obj["ok"] is False:
        if set(obj) != {"ok", "error"} or not isinstance(obj["error"], str):
            raise ProtocolError(f"malformed error reply (keys {sorted(map(str, obj))[:6]})")
        return {"ok": False, "error": sanitize(obj["error"])}
    shape = _REPLY_SHAPES[expect]
    if set(obj) != set(shape):
        raise ProtocolError(
            f"unexpected keys in the {expect} reply: {sanitize(sorted(map(str, obj))[:6], 120)}"
        )
    for key, typ in shape.items():
        if type(obj[key]) is not typ:
            raise ProtocolError(f"reply field {key!r} must be a {typ.__name__}")
    if expect == "ready" and obj["ready"] is not True:
        raise ProtocolError("the worker did not say it is ready")
    if expect == "load":
        methods = obj["methods"]
        if len(methods) > len(METHODS) or not all(m in METHODS for m in methods):
            raise ProtocolError("the worker named methods outside the protocol")
        obj["methods"] = list(dict.fromkeys(methods))
    return obj
