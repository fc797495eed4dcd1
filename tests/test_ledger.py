"""The ledger invariants of DESIGN.md, on SQLite and PostgreSQL."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import PriceBookBody
from vidfactory.billing.verify import verify
from vidfactory.db.models import PriceBook
from vidfactory.db.types import utcnow

from conftest import assert_ledger_clean, new_tenant


def later():
    return utcnow() + timedelta(hours=1)


def test_hold_post_release(sessions):
    tenant = new_tenant(sessions, tokens=1000)
    with sessions.begin() as s:
        hold = ledger.hold(s, tenant_id=tenant.id, amount=600, job_id="video_a", expires_at=later())
        assert vars(ledger.balance(s, tenant.id)) == {"available": 400, "pending": 600, "posted": 1000}
    with sessions.begin() as s:
        post = ledger.post(s, hold.id, 120)
        assert post.kind == "post" and post.pending_id == hold.id
        assert vars(ledger.balance(s, tenant.id)) == {"available": 880, "pending": 0, "posted": 880}


def test_void_refunds_everything(sessions):
    tenant = new_tenant(sessions, tokens=500)
    with sessions.begin() as s:
        hold = ledger.hold(s, tenant_id=tenant.id, amount=500, job_id="video_b", expires_at=later())
        ledger.void(s, hold.id)
        assert ledger.balance(s, tenant.id).available == 500


def test_insufficient_balance_writes_nothing(sessions):
    tenant = new_tenant(sessions, tokens=100)
    with pytest.raises(ledger.InsufficientBalance) as caught, sessions.begin() as s:
        ledger.hold(s, tenant_id=tenant.id, amount=101, job_id="video_c", expires_at=later())
    assert (caught.value.needed, caught.value.available) == (101, 100)
    assert "needs 101 tokens; 100 are available" in str(caught.value)
    with sessions() as s:
        assert ledger.transfers_page(s, tenant.id, after_seq=0, limit=10)[-1].kind == "credit"
        assert ledger.balance(s, tenant.id).pending == 0


@pytest.mark.parametrize("second", ["post", "void"])
def test_a_hold_resolves_exactly_once(sessions, second):
    tenant = new_tenant(sessions, tokens=100)
    with sessions.begin() as s:
        hold = ledger.hold(s, tenant_id=tenant.id, amount=50, job_id="video_d", expires_at=later())
    with sessions.begin() as s:
        ledger.post(s, hold.id, 50)
    with pytest.raises(ledger.HoldAlreadyResolved), sessions.begin() as s:
        ledger.post(s, hold.id, 10) if second == "post" else ledger.void(s, hold.id)
    with sessions() as s:
        assert vars(ledger.balance(s, tenant.id)) == {"available": 50, "pending": 0, "posted": 50}


def test_post_cannot_exceed_the_hold(sessions):
    tenant = new_tenant(sessions, tokens=100)
    with sessions.begin() as s:
        hold = ledger.hold(s, tenant_id=tenant.id, amount=50, job_id="video_e", expires_at=later())
    with pytest.raises(AssertionError), sessions.begin() as s:
        ledger.post(s, hold.id, 51)


def test_concurrent_holds_never_overdraw(sessions):
    """50 threads race for a balance that covers 7 holds: exactly 7 win, on either backend."""
    tenant = new_tenant(sessions, tokens=7 * 100)
    results: list[str] = []
    barrier = threading.Barrier(50)

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            with sessions.begin() as s:
                ledger.hold(s, tenant_id=tenant.id, amount=100, job_id=f"video_{n}", expires_at=later())
            results.append("held")
        except ledger.InsufficientBalance:
            results.append("refused")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("held") == 7 and results.count("refused") == 43
    with sessions() as s:
        assert vars(ledger.balance(s, tenant.id)) == {"available": 0, "pending": 700, "posted": 700}


def test_verify_finds_a_tampered_balance(sessions):
    tenant = new_tenant(sessions, tokens=100)
    assert_ledger_clean(sessions)
    with sessions.begin() as s:
        s.execute(update(ledger.Account).where(ledger.Account.id == ledger.tenant_account_id(tenant.id))
                  .values(credits_posted=1_000_000))
    with sessions() as s:
        breaches = verify(s)
    assert any("credits_posted is 1000000, transfers say 100" in b for b in breaches)


def test_verify_finds_a_changed_price_book(sessions):
    with sessions.begin() as s:
        version = pricebooks.publish(s, PriceBookBody(method="table"))
    assert_ledger_clean(sessions)
    with sessions.begin() as s:
        row = s.get(PriceBook, version)
        s.execute(update(PriceBook).where(PriceBook.version == version)
                  .values(body={**row.body, "unit_price": "0.0001"}))
    with sessions() as s:
        assert f"price book v{version} changed after it was published" in verify(s)


def test_verify_finds_a_hold_without_its_job(sessions):
    tenant = new_tenant(sessions, tokens=100)
    with sessions.begin() as s:
        ledger.hold(s, tenant_id=tenant.id, amount=10, job_id="video_missing", expires_at=later())
    with sessions() as s:
        assert "holds name job video_missing, which does not exist" in verify(s)


def test_transfers_are_scoped_to_their_tenant(sessions):
    a = new_tenant(sessions, tokens=10)
    b = new_tenant(sessions, tokens=20)
    with sessions() as s:
        assert [t.amount for t in ledger.transfers_page(s, a.id, after_seq=0, limit=10)] == [10]
        assert [t.amount for t in ledger.transfers_page(s, b.id, after_seq=0, limit=10)] == [20]


def test_database_refuses_an_overdraft_even_without_the_guard(sessions):
    tenant = new_tenant(sessions, tokens=10)
    with pytest.raises(Exception, match="(?i)tenant_no_overdraft|check constraint"), sessions.begin() as s:
        s.execute(text("UPDATE accounts SET debits_pending = 11 WHERE id = :id"),
                  {"id": ledger.tenant_account_id(tenant.id)})
