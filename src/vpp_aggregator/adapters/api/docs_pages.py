"""/docs (Swagger UI) and /redoc with every file they load served by this service.

FastAPI's default pages load their scripts, style sheet, favicon and (ReDoc) fonts from public
CDNs, so they stay blank where only this service can be reached. The pages here are FastAPI's
own (`get_swagger_ui_html`, `get_redoc_html`), pointed at the Swagger UI and ReDoc files the
pinned `fastapi-offline` package ships, which are mounted under ASSETS_URL. The bundles
themselves may still reach out (ReDoc 2.5 fetches its footer logo from a CDN, and its <img>
hides itself when refused), so both pages tell the browser to load nothing from another origin.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_URL = "/docs/assets"
ASSETS = Path(str(files("fastapi_offline") / "static"))  # swagger-ui-bundle.js, .css, redoc
# Inline script and styles are the pages' own (FastAPI's start-up script, the styles ReDoc
# generates); blob: is ReDoc's search worker.
SAME_ORIGIN_ONLY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
    )
)


def install(app: FastAPI) -> None:
    """Serve the docs pages and their files; the app is built with docs_url=redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}" if redirect_url else None,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY
        return page

    if redirect_url:

        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = SAME_ORIGIN_ONLY
        return page


def _root(request: Request) -> str:
    """The prefix a reverse proxy mounts the service under (ASGI root_path), as FastAPI does."""
    return str(request.scope.get("root_path", "")).rstrip("/")
