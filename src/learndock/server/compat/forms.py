"""The reference client's request bodies, read with caps while they stream.

The client sends three kinds of bodies: JSON (``requests.post(json=...)``), multipart forms
with one file part (``files=`` plus ``data=``) and, when it has no file to send,
``application/x-www-form-urlencoded`` forms (``requests`` only builds a multipart body when a
file part is present). :func:`read_form` accepts both form encodings: the one named file part
is streamed to a temp file under the dock's home (a random name; the client's file name is never
used), the other fields are kept in memory, and every part is counted against its cap as it
arrives -- a declared ``Content-Length`` over the total cap is refused before a byte is read.

These routes are exempt from the app's JSON body cap (they stream), so :func:`read_json` caps
JSON bodies itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from learndock.server.errors import BadRequestError, PayloadTooLargeError

#: Text fields of a form (a semantic specification with many feature descriptions fits).
MAX_FIELDS_BYTES = 4 * 1024 * 1024
#: Room for multipart boundaries and part headers beyond the capped contents.
OVERHEAD_BYTES = 64 * 1024
MAX_FIELDS = 32


def _too_large(what: str, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{what} is larger than this dock accepts ({limit} bytes)",
                                details={"limit": limit})


def _check_declared(request: Request, limit: int, what: str) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        n = int(declared)
    except ValueError:
        raise BadRequestError("Content-Length is not a number") from None
    if n > limit:
        raise _too_large(what, limit)


async def read_body(request: Request, limit: int, what: str = "the request body") -> bytes:
    """The whole body, refused past ``limit`` bytes (declared or received)."""
    _check_declared(request, limit, what)
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise _too_large(what, limit)
    except ClientDisconnect:
        raise BadRequestError("the client disconnected during the request") from None
    return bytes(buf)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object")
    return data


@dataclass
class Form:
    """A parsed form: text fields, and the file part (if one came) in a temp file."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    file_size: int = 0

    def discard(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.unlink()
            self.file = None


class _Parts:
    """Push-parser callbacks: the file part into ``out``, other fields in memory."""

    def __init__(self, out: Any, file_field: str | None, max_file: int) -> None:
        self.out, self.file_field, self.max_file = out, file_field, max_file
        self.form = Form()
        self.files = 0
        self.field_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._name, self._value = b"", b""
        self._target: str | None = None
        self._is_file = False
        self._buf = bytearray()

    def on_part_begin(self) -> None:
        self._headers, self._target, self._is_file, self._buf = {}, None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        kind, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            raise BadRequestError("a multipart part without a form-data name")
        if name == self.file_field:
            self.files += 1
            if self.files > 1:
                raise BadRequestError(f"form field {name!r} given twice")
            self._is_file = True
        elif len(self.form.fields) >= MAX_FIELDS:
            raise BadRequestError(f"more than {MAX_FIELDS} form fields")
        self._target = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.form.file_size += len(chunk)
            if self.form.file_size > self.max_file:
                raise _too_large(f"form field {self.file_field!r}", self.max_file)
            self.out.write(chunk)
        elif self._target is not None:
            self.field_bytes += len(chunk)
            if self.field_bytes > MAX_FIELDS_BYTES:
                raise _too_large("the form's text fields", MAX_FIELDS_BYTES)
            self._buf += chunk

    def on_part_end(self) -> None:
        if self._target is not None and not self._is_file:
            self.form.fields[self._target] = bytes(self._buf).decode("utf-8", "replace")
        self._target, self._is_file = None, False

    def callbacks(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_part_data", "on_part_end")}


async def read_form(request: Request, tmp_dir: Path, *, file_field: str | None,
                    max_file_bytes: int) -> Form:
    """Read a multipart or url-encoded form (an empty body is an empty form). The caller
    deletes the temp file: :meth:`Form.discard`."""
    total_cap = max_file_bytes + MAX_FIELDS_BYTES + OVERHEAD_BYTES
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    media = ctype.decode("latin-1").lower()
    if media != "multipart/form-data":
        raw = await read_body(request, MAX_FIELDS_BYTES, "the form")
        if raw.strip() and media not in ("application/x-www-form-urlencoded", ""):
            raise BadRequestError("send the form as multipart/form-data or "
                                  "application/x-www-form-urlencoded",
                                  details={"content_type": media[:100]})
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                              max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequestError(f"malformed form: {exc}") from None
        return Form(fields=dict(pairs))
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequestError("multipart/form-data without a valid boundary")
    _check_declared(request, total_cap, "the form")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="bmw-form-", suffix=".part", dir=tmp_dir)
    path = Path(name)
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            parts = _Parts(out, file_field, max_file_bytes)
            parser = MultipartParser(boundary, parts.callbacks())  # type: ignore[arg-type]
            try:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > total_cap:
                        raise _too_large("the form", total_cap)
                    parser.write(chunk)
                parser.finalize()
            except MultipartParseError as exc:
                raise BadRequestError(f"malformed multipart body: {exc}") from None
        form = parts.form
        if parts.files:
            form.file = path
        else:
            path.unlink(missing_ok=True)
        return form
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise BadRequestError("the client disconnected during the upload") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
