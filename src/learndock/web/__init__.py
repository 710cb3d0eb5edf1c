"""The dock's web UI: server-rendered pages (Jinja2, autoescaped) over the API's own functions.

``mount_web(app)`` adds the pages at ``/``, the static files at ``/static`` and the security
headers; :data:`UPLOAD_PATHS` are the pages whose bodies stream like API uploads.
"""

from learndock.web.app import UPLOAD_PATHS, mount_web

__all__ = ["UPLOAD_PATHS", "mount_web"]
