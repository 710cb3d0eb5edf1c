"""The dock server: a FastAPI app over the market (``learndock serve``).

``create_app(settings)`` builds the app; :mod:`learndock.server.errors` and
:mod:`learndock.server.models` are plain Python/pydantic (the client imports them without
FastAPI). Imports are lazy so ``import learndock.server.errors`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learndock.server.app import create_app
    from learndock.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from learndock.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from learndock.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(name)
