"""Bring a database to a servable state: schema, default plans, operator accounts, price book v1."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import default_price_book
from vidfactory.db import migrate
from vidfactory.db.models import ServedModel
from vidfactory.db.session import SessionFactory, make_session_factory
from vidfactory.tenancy import ensure_plans

__all__ = ["register_models", "upgrade_and_seed"]


def upgrade_and_seed(engine: Engine) -> None:
    with migrate.schema_change_lock(engine):
        migrate.upgrade(engine)
        with make_session_factory(engine).begin() as session:
            ensure_plans(session)
            ledger.ensure_operator_accounts(session)
            pricebooks.ensure_default(session, default_price_book())


def register_models(sessions: SessionFactory, model_ids: list[str]) -> None:
    """Record when each configured model was first served; ids already known keep their date. Replicas
    starting together may insert the same id: the loser's transaction rolls back and finds it there."""
    for _ in range(2):
        try:
            with sessions.begin() as session:
                known = set(session.scalars(select(ServedModel.id).where(ServedModel.id.in_(model_ids))))
                session.add_all(ServedModel(id=model_id) for model_id in model_ids if model_id not in known)
            return
        except IntegrityError:
            continue
    raise AssertionError(f"models {model_ids} could not be registered")
