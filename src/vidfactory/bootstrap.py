"""Bring a database to a servable state: schema, default plans, operator accounts, price book v1."""

from __future__ import annotations

from sqlalchemy import Engine

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import default_price_book
from vidfactory.db import migrate
from vidfactory.db.session import make_session_factory
from vidfactory.tenancy import ensure_plans

__all__ = ["upgrade_and_seed"]


def upgrade_and_seed(engine: Engine) -> None:
    migrate.upgrade(engine)
    with make_session_factory(engine).begin() as session:
        ensure_plans(session)
        ledger.ensure_operator_accounts(session)
        pricebooks.ensure_default(session, default_price_book())
