"""The web console at /ui/ (issue 16): server-rendered pages (Jinja2, htmx, SVG charts)
over the admin API, every asset shipped in the package. `ROUTES` are its handlers."""

from router.console.ui import keys_page, pages

ROUTES = [*pages.ROUTES, *keys_page.ROUTES]

__all__ = ["ROUTES"]
