"""The browser console: server-rendered pages (Jinja2, one template per page, shared partials) with htmx
and its SSE extension, vendored under static/ (no build step, no network at run time). Pages call the
same services as the API; they never query the database themselves."""

from vidfactory.web.pages import mount

__all__ = ["mount"]
