"""The styles a request names (or its template's default style), resolved against the tenant's styles for
the model it asks for: what the job records, prices, caches and loads."""

from __future__ import annotations

from vidfactory.db.session import SessionFactory
from vidfactory.settings import Settings
from vidfactory.styles import catalog
from vidfactory.styles.catalog import JobStyle, StyleRef
from vidfactory.styles.errors import InvalidStyle

__all__ = ["requested", "resolve_styles"]


def requested(style: str | None, styles: list[StyleRef] | None,
              template_default: StyleRef | None) -> tuple[list[StyleRef], str]:
    """(the styles asked for, the request field that names them): the request's own, else the template's."""
    if style is not None:
        return [StyleRef(style)], "style"
    if styles is not None:
        return list(styles), "styles"
    if template_default is not None:
        return [template_default], "template"
    return [], "styles"


def resolve_styles(sessions: SessionFactory, settings: Settings, tenant_id: str, model_name: str,
                   refs: list[StyleRef], param: str) -> tuple[JobStyle, ...]:
    """InvalidStyle (400, naming `param`) for too many, an unknown one, one made for another base model or a
    scale out of range. An unknown model resolves to none: pricing reports it by name."""
    if not refs:
        return ()
    if len(refs) > settings.styles_per_job_max:
        raise InvalidStyle(param, f"a video takes at most {settings.styles_per_job_max} styles, got {len(refs)}")
    model = settings.resolve_model(model_name)
    if model is None:
        return ()
    with sessions() as session:
        return catalog.resolve(session, tenant_id, refs, catalog.base_of(model), scale_max=settings.style_scale_max,
                               param=param)
