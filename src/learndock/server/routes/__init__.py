"""The API's routers (mounted under ``/api/v1`` by :func:`learndock.server.create_app`)."""
