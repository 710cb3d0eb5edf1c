"""Uploads streamed to a temp file, their size capped while they stream.

A package arrives as ``multipart/form-data`` (field ``file``; optional field ``semantic``: the
semantic spec JSON for reference-format zips that carry none) or as a raw ``application/zip``
body. The body is parsed as it arrives (python-multipart's push parser), the file part written
to a temp file under the dock's home, and the bytes counted: past ``max_bytes`` the request is
refused with 413 at once -- a declared ``Content-Length`` over the cap before a byte is read.
The client's file name is never used for anything: the temp file gets a random name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from learndock.server.errors import (
    ApiError,
    BadRequestError,
    PayloadTooLargeError,
    ValidationFailedError,
)

RAW_TYPES = {"application/zip", "application/octet-stream", "application/x-zip-compressed"}
MAX_FIELD_BYTES = 256 * 1024


class UnsupportedMediaTypeError(ApiError):
    status, code = 415, "unsupported_media_type"


@dataclass
class Upload:
    path: Path
    size: int  # bytes of the file itself
    semantic: Any = None
    fields: dict[str, bytes] = field(default_factory=dict)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the upload is larger than this dock accepts ({limit} bytes; "
        "LEARNDOCK_SERVER_MAX_UPLOAD_BYTES)", details={"limit": limit})


class _Form:
    """Callbacks for the push parser: the ``file`` part into ``out``, small fields in memory."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.file_size = 0
        self.files = 0
        self.fields: dict[str, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._target: str | None = None
        self._buf = bytearray()

    def on_part_begin(self) -> None:
        self._headers, self._target, self._buf = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        disp = self._headers.get(b"content-disposition", b"")
        kind, params = parse_options_header(disp)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            raise ValidationFailedError("a multipart part without a form-data name")
        if name == "file":
            self.files += 1
            if self.files > 1:
                raise ValidationFailedError("one file per upload")
        elif name not in ("semantic",):
            raise ValidationFailedError(f"unexpected form field {name[:40]!r}; expected 'file' "
                                        "(and optionally 'semantic')")
        elif name in self.fields:
            raise ValidationFailedError(f"form field {name!r} given twice")
        self._target = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._target == "file":
            self.out.write(chunk)
            self.file_size += len(chunk)
        elif self._target is not None:
            self._buf += chunk
            if len(self._buf) > MAX_FIELD_BYTES:
                raise PayloadTooLargeError(f"form field {self._target!r} is over "
                                           f"{MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._target is not None and self._target != "file":
            self.fields[self._target] = bytes(self._buf)
        self._target = None

    def callbacks(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_part_data", "on_part_end")}


async def receive_upload(request: Request, tmp_dir: Path, max_bytes: int) -> Upload:
    """Stream the request's package into a temp file (the caller deletes it: ``discard``)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise BadRequestError("Content-Length is not a number") from None
        if n > max_bytes:
            raise _too_large(max_bytes)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    media = ctype.decode("latin-1").lower()
    if media != "multipart/form-data" and media not in RAW_TYPES:
        raise UnsupportedMediaTypeError(
            "send the package as multipart/form-data (field 'file') or as application/zip",
            details={"content_type": media[:100]})
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=tmp_dir)
    path = Path(name)
    received = 0
    try:
        with os.fdopen(fd, "wb") as out:
            form: _Form | None = None
            parser: MultipartParser | None = None
            if media == "multipart/form-data":
                boundary = params.get(b"boundary")
                if not boundary or len(boundary) > 200:
                    raise BadRequestError("multipart/form-data without a valid boundary")
                form = _Form(out)
                parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
            async for chunk in request.stream():
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes)
                if parser is not None:
                    try:
                        parser.write(chunk)
                    except MultipartParseError as exc:
                        raise BadRequestError(f"malformed multipart body: {exc}") from None
                else:
                    out.write(chunk)
            if parser is not None:
                try:
                    parser.finalize()
                except MultipartParseError as exc:
                    raise BadRequestError(f"malformed multipart body: {exc}") from None
        if form is None:
            return Upload(path, received)
        if form.files != 1:
            raise ValidationFailedError("no 'file' part in the multipart body")
        semantic = None
        if "semantic" in form.fields and form.fields["semantic"].strip():
            try:
                semantic = json.loads(form.fields["semantic"])
            except (ValueError, RecursionError) as exc:
                raise ValidationFailedError(f"field 'semantic' is not valid JSON: {exc}") \
                    from None
        return Upload(path, form.file_size, semantic, form.fields)
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise BadRequestError("the client disconnected during the upload") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
