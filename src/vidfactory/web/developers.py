"""The Developers page (owners): the tenant's API keys (a new key's secret is shown once, on the answer to
its creation, and never again) and webhook endpoints with their recent deliveries and a test event. It
calls the services the API and the operator's routes call (`tenancy` keys, `notify` endpoints)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from vidfactory.api.errors import ApiError, id_pattern, validation_message
from vidfactory.api.render import delivery_object
from vidfactory.api.routes.webhook_endpoints import checked_target
from vidfactory.api.body import validated
from vidfactory.api.schemas import KeyCreate, WebhookEndpointCreate
from vidfactory.notify import endpoints
from vidfactory.notify.events import record_test_event
from vidfactory.tenancy import TenantSuspended, create_key, list_keys, revoke_key
from vidfactory.web.console import Console
from vidfactory.web.errors import field_error
from vidfactory.web.forms import opened, posted

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
page_name = "developers"
deliveries_shown_max = 5  # per endpoint; the API's delivery log has the rest
webhook_fields = ("url", "description")
time_format = "%Y-%m-%d %H:%M:%S"  # UTC, as stored


def _keys(page: Console) -> list[dict[str, Any]]:
    with page.ctx.sessions() as session:
        return [{"id": key.id, "prefix": key.prefix, "label": key.label, "created_at": key.created_at,
                 "last_used_at": key.last_used_at, "revoked": key.revoked_at is not None} for key in list_keys(session, page.principal.tenant_id)]


def _deliveries(session, tenant_id: str, endpoint_id: str) -> list[dict[str, Any]]:
    return [delivery_object(row, event_type) | {"when": row.created_at.strftime(time_format)} for row, event_type in
            endpoints.deliveries(session, tenant_id, limit=deliveries_shown_max, endpoint_id=endpoint_id)]


def _endpoints(page: Console) -> list[dict[str, Any]]:
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        return [{"id": row.id, "url": row.url, "description": row.description, "status": row.status,
                 "disabled_reason": row.disabled_reason, "deliveries": _deliveries(session, tenant_id, row.id)}
                for row in endpoints.list_endpoints(session, tenant_id)]


def _render(page: Console, status_code: int = 200, **shown: Any) -> Response:
    """The whole page; `shown` carries what one answer adds: a new secret, or an error next to its field."""
    values = {"new_key": None, "new_secret": None, "key_error": None, "webhook_error": None, "form": {}, **shown}
    return page.render("developers.html", status_code=status_code, keys=_keys(page), endpoints=_endpoints(page),
                       **values)


@router.get("/developers")
def developers(request: Request) -> Response:
    page = opened(request, page_name)
    return _render(page) if isinstance(page, Console) else page


@router.post("/developers/keys")
async def create_api_key(request: Request) -> Response:
    outcome = await posted(request, page_name)
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    try:
        body: KeyCreate = validated(KeyCreate, {"label": form.get("label", "").strip()})
        with page.ctx.sessions.begin() as session:
            row, plaintext = create_key(session, page.principal.tenant_id, body.label, actor=page.principal.actor)
    except (ApiError, TenantSuspended) as exc:
        error = field_error(page.locale, exc, fields=("label",))
        return _render(page, error.status, key_error=error, form=form)
    return _render(page, 201, new_key={"id": row.id, "prefix": row.prefix, "secret": plaintext})


@router.post("/developers/keys/{key_id}/revoke")
async def revoke_api_key(request: Request, key_id: str) -> Response:
    outcome = await posted(request, page_name)
    if isinstance(outcome, Response):
        return outcome
    page, _ = outcome
    if id_pattern.fullmatch(key_id) is None:
        return page.error(404, "error.not_found")
    with page.ctx.sessions.begin() as session:
        revoked = revoke_key(session, key_id, actor=page.principal.actor, tenant_id=page.principal.tenant_id)
    if revoked is None:
        return page.error(404, "error.not_found")
    return RedirectResponse("/developers#keys", status_code=303)


@router.post("/developers/webhooks")
async def add_endpoint(request: Request) -> Response:
    outcome = await posted(request, page_name)
    if isinstance(outcome, Response):
        return outcome
    page, form = outcome
    try:  # the API's own request schema and target check, so the page refuses what the API refuses
        body = WebhookEndpointCreate(url=form.get("url", "").strip(), description=form.get("description", "").strip())
        url = checked_target(page.ctx.settings, body.url)
        with page.ctx.sessions.begin() as session:
            row = endpoints.create_endpoint(session, page.principal.tenant_id, url, body.description, [])
            created = {"id": row.id, "secret": row.secret}
    except ValidationError as exc:
        first = exc.errors()[0]
        error = field_error(page.locale, ApiError(400, "invalid_value", validation_message(first),
                                                  param=str(first["loc"][0])), webhook_fields)
    except endpoints.TooManyEndpoints as exc:
        error = field_error(page.locale, ApiError(400, "too_many_endpoints", str(exc)), webhook_fields)
    except ApiError as exc:
        error = field_error(page.locale, exc, webhook_fields)
    else:
        return _render(page, 201, new_secret=created)
    return _render(page, error.status, webhook_error=error, form=form)


async def _owned_endpoint_action(request: Request, endpoint_id: str, action) -> Response:
    """Runs `action(session, endpoint)` on one of this tenant's endpoints; another's answers 404."""
    outcome = await posted(request, page_name)
    if isinstance(outcome, Response):
        return outcome
    page, _ = outcome
    if id_pattern.fullmatch(endpoint_id) is None:
        return page.error(404, "error.not_found")
    with page.ctx.sessions.begin() as session:
        endpoint = endpoints.owned_endpoint(session, page.principal.tenant_id, endpoint_id)
        if endpoint is None:
            return page.error(404, "error.not_found")
        action(session, endpoint)
    return RedirectResponse(f"/developers#{endpoint_id}", status_code=303)


@router.post("/developers/webhooks/{endpoint_id}/delete")
async def remove_endpoint(request: Request, endpoint_id: str) -> Response:
    return await _owned_endpoint_action(request, endpoint_id, lambda _, endpoint: endpoints.remove_endpoint(endpoint))


@router.post("/developers/webhooks/{endpoint_id}/test")
async def send_test_event(request: Request, endpoint_id: str) -> Response:
    return await _owned_endpoint_action(request, endpoint_id, record_test_event)


@router.get("/developers/webhooks/{endpoint_id}/deliveries")
def endpoint_deliveries(request: Request, endpoint_id: str) -> Response:
    """One endpoint's recent deliveries alone: htmx polls it while one is pending."""
    page = opened(request, page_name)
    if not isinstance(page, Console):
        return page
    tenant_id = page.principal.tenant_id
    with page.ctx.sessions() as session:
        if id_pattern.fullmatch(endpoint_id) is None or endpoints.owned_endpoint(session, tenant_id, endpoint_id) is None:
            return page.error(404, "error.not_found")
        shown = {"id": endpoint_id, "deliveries": _deliveries(session, tenant_id, endpoint_id)}
    return page.render("partials/deliveries.html", endpoint=shown)
