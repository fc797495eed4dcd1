"""/v1/webhook_endpoints: where a tenant's events go, their secrets, and each endpoint's delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from vidfactory.api.deps import CallerDep, ContextDep, SessionDep
from vidfactory.api.errors import ApiError, checked_id, not_found
from vidfactory.api.render import delivery_object, timestamp
from vidfactory.api.schemas import WebhookEndpointCreate, WebhookEndpointUpdate
from vidfactory.db.models import WebhookEndpoint
from vidfactory.notify import endpoints
from vidfactory.notify.events import record_test_event, rotate, test_event_type
from vidfactory.notify.targets import RefusedTarget, parse_networks, resolve_target
from vidfactory.settings import Settings

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])

page_size_max = 100


def endpoint_object(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """The secret only at creation and rotation."""
    body = {"id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
            "description": endpoint.description, "event_types": list(endpoint.event_types),
            "status": endpoint.status, "disabled_reason": endpoint.disabled_reason,
            "consecutive_failures": endpoint.consecutive_failures, "created_at": timestamp(endpoint.created_at),
            "previous_secret_expires_at": timestamp(endpoint.previous_secret_expires_at)}
    if secret is not None:
        body["secret"] = secret
    return body


def checked_target(settings: Settings, url: str) -> str:
    try:
        resolve_target(url, parse_networks(settings.webhook_allowed_networks))
    except RefusedTarget as exc:
        raise ApiError(400, "webhook_url_refused", str(exc), param="url") from exc
    return url


def _owned(session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    checked_id("webhook endpoint", endpoint_id)
    endpoint = endpoints.owned_endpoint(session, tenant_id, endpoint_id)
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return endpoint


@router.post("", status_code=201)
def create_endpoint(body: WebhookEndpointCreate, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    url = checked_target(ctx.settings, body.url)
    try:
        with ctx.sessions.begin() as session:
            endpoint = endpoints.create_endpoint(session, caller.tenant_id, url, body.description, body.event_types)
            return endpoint_object(endpoint, secret=endpoint.secret)
    except endpoints.TooManyEndpoints as exc:
        raise ApiError(400, "too_many_endpoints", str(exc)) from exc


@router.get("")
def list_endpoints(session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": [endpoint_object(e) for e in endpoints.list_endpoints(session, caller.tenant_id)]}


@router.get("/{endpoint_id}")
def retrieve_endpoint(endpoint_id: str, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    return endpoint_object(_owned(session, caller.tenant_id, endpoint_id))


@router.patch("/{endpoint_id}")
def update_endpoint(endpoint_id: str, body: WebhookEndpointUpdate, ctx: ContextDep,
                    caller: CallerDep) -> dict[str, Any]:
    url = None if body.url is None else checked_target(ctx.settings, body.url)
    with ctx.sessions.begin() as session:
        endpoint = _owned(session, caller.tenant_id, endpoint_id)
        if url is not None:
            endpoint.url = url
        if body.description is not None:
            endpoint.description = body.description
        if body.event_types is not None:
            endpoint.event_types = sorted(set(body.event_types))
        if body.enabled is True:
            endpoint.status, endpoint.disabled_reason, endpoint.consecutive_failures = "enabled", None, 0
        elif body.enabled is False:
            endpoint.status, endpoint.disabled_reason = "disabled", "disabled by the tenant"
        return endpoint_object(endpoint)


@router.delete("/{endpoint_id}")
def delete_endpoint(endpoint_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        endpoints.remove_endpoint(_owned(session, caller.tenant_id, endpoint_id))
    return {"id": endpoint_id, "object": "webhook_endpoint.deleted", "deleted": True}


@router.post("/{endpoint_id}/rotate_secret")
def rotate_secret(endpoint_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """A new secret; the old one also signs for `webhook_secret_overlap_s` (both signatures are sent)."""
    with ctx.sessions.begin() as session:
        endpoint = _owned(session, caller.tenant_id, endpoint_id)
        secret = rotate(endpoint, ctx.settings.webhook_secret_overlap_s)
        return endpoint_object(endpoint, secret=secret)


@router.post("/{endpoint_id}/test", status_code=201)
def send_test_event(endpoint_id: str, ctx: ContextDep, caller: CallerDep) -> dict[str, Any]:
    """Send this endpoint a `webhook.test` event now (signed like every event); answers its delivery,
    pending until sent: follow it in the endpoint's delivery log."""
    with ctx.sessions.begin() as session:
        delivery = record_test_event(session, _owned(session, caller.tenant_id, endpoint_id))
        return delivery_object(delivery, test_event_type)


@router.get("/{endpoint_id}/deliveries")
def list_endpoint_deliveries(
    endpoint_id: str, session: SessionDep, caller: CallerDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=page_size_max)] = 20,
) -> dict[str, Any]:
    """This endpoint's delivery log, newest first."""
    endpoint = _owned(session, caller.tenant_id, endpoint_id)
    rows = endpoints.deliveries(session, caller.tenant_id, limit=limit, endpoint_id=endpoint.id, status=status)
    return {"object": "list", "data": [delivery_object(row, event_type) for row, event_type in rows]}
