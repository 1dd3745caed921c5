"""
The Airflow plugin of the Gravity view, registered through the ``airflow.plugins`` entry point.

Every Airflow process loads plugins (the scheduler, workers, the dag-processor), so importing this module stays
cheap: the FastAPI app is built on its first request, in the api-server, the only process that serves it.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/gravity"


class LazyGravityApp:
    """An ASGI app that builds :func:`~airflow_provider_gravity.plugins.app.create_app` on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_gravity.plugins.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class GravityViewPlugin(AirflowPlugin):
    """Serves the Gravity view under ``/gravity`` and links it from the Airflow UI's navigation (Browse)."""

    name = "gravity"
    fastapi_apps = [{"app": LazyGravityApp(), "url_prefix": URL_PREFIX, "name": "Gravity view"}]
    external_views = [
        {
            "name": "Gravity",
            "href": f"{URL_PREFIX}/",
            # Shown inside the Airflow UI at /plugin/gravity, the page in an iframe.
            "url_route": "gravity",
            "destination": "nav",
            "category": "browse",
            "icon": f"{URL_PREFIX}/static/gravity-icon.svg",
        }
    ]
