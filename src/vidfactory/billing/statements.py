"""Monthly statements and usage, computed from the ledger's transfers (and the jobs they name).

A statement reconciles to the token: for the paid account, opening + top-ups − charges = closing; for
the voucher account, opening + granted − spent − expired = closing (posted balances; holds still
pending at the close are shown beside them). Money appears only here: tokens × the unit price of the
price book each job pinned, rounded once per line. A month that has ended is generated once and stored;
later requests serve the stored statement unchanged.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vidfactory.billing import ledger, pricebooks
from vidfactory.billing.pricebook import model_price, money
from vidfactory.db.models import Job, Statement, Transfer
from vidfactory.db.types import utcnow

__all__ = ["StatementError", "StatementFile", "month_bounds", "statement", "statement_csv", "statement_file",
           "statement_pdf", "usage"]

month_pattern = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
posted_kinds = ("credit", "post", "grant", "expire")
usage_groupings = ("day", "model", "key", "template", "batch")
usage_days_max = 366


class StatementError(ValueError):
    """A month or range that cannot have a statement (malformed, not started yet)."""


def month_bounds(month: str) -> tuple[datetime, datetime]:
    match = month_pattern.fullmatch(month)
    if match is None:
        raise StatementError(f"month must be YYYY-MM, not {month!r}")
    year, number = int(match[1]), int(match[2])
    if year < 1970:
        raise StatementError("month must not be before 1970")
    if (year, number) == (9999, 12):  # its end, 10000-01-01, is past the last date Python represents
        raise StatementError("month must be before 9999-12")
    start = datetime(year, number, 1, tzinfo=UTC)
    return start, start + timedelta(days=calendar.monthrange(year, number)[1])


def _effect(transfer: Transfer, account_id: str) -> int:
    """What a posted transfer did to an account's posted balance."""
    if transfer.kind not in posted_kinds:
        return 0
    if transfer.credit_account_id == account_id:
        return transfer.amount
    if transfer.debit_account_id == account_id:
        return -transfer.amount
    return 0


def _tenant_transfers(session: Session, tenant_id: str, end: datetime) -> list[Transfer]:
    return list(session.scalars(select(Transfer).where(Transfer.tenant_id == tenant_id, Transfer.created_at < end)
                                .order_by(Transfer.seq)))


def _charges(session: Session, posts: list[Transfer], voucher_account: str) -> list[dict[str, Any]]:
    job_ids = {t.job_id for t in posts if t.job_id}
    jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(job_ids)))} if job_ids else {}
    lines: dict[tuple[str, int], dict[str, Any]] = {}
    for t in posts:
        job = jobs.get(t.job_id or "")
        key = (job.model if job else "unknown", job.price_book_version if job else 0)
        line = lines.setdefault(key, {"model": key[0], "price_book_version": key[1], "jobs": set(), "tokens": 0,
                                      "paid_tokens": 0, "voucher_tokens": 0, "cache_hit_tokens": 0})
        line["jobs"].add(t.job_id)
        line["tokens"] += t.amount
        line["voucher_tokens" if t.debit_account_id == voucher_account else "paid_tokens"] += t.amount
        if job is not None and job.cache_hit_job_id is not None:
            line["cache_hit_tokens"] += t.amount
    result = []
    for (model, version), line in sorted(lines.items()):
        line["jobs"] = len(line["jobs"])
        if version:
            book = pricebooks.get(session, version)
            line["amount"] = {"currency": book.currency, "value": str(money(book, line["tokens"]))}
            line["price"] = model_price(book, version, model)
        else:
            line["amount"] = line["price"] = None
        result.append(line)
    return result


def _compute(session: Session, tenant_id: str, month: str, start: datetime, end: datetime,
             final: bool) -> dict[str, Any]:
    paid, vouchers = ledger.tenant_account_id(tenant_id), ledger.voucher_account_id(tenant_id)
    transfers = _tenant_transfers(session, tenant_id, end)
    before = [t for t in transfers if t.created_at < start]
    during = [t for t in transfers if t.created_at >= start]
    opening = {a: sum(_effect(t, a) for t in before) for a in (paid, vouchers)}
    closing = {a: sum(_effect(t, a) for t in transfers) for a in (paid, vouchers)}
    top_ups = sum(t.amount for t in during if t.kind == "credit")
    posts = [t for t in during if t.kind == "post"]
    charged_paid = sum(t.amount for t in posts if t.debit_account_id == paid)
    spent_vouchers = sum(t.amount for t in posts if t.debit_account_id == vouchers)
    granted = sum(t.amount for t in during if t.kind == "grant")
    expired = sum(t.amount for t in during if t.kind == "expire")
    holds = {t.id: t for t in transfers if t.kind == "hold"}
    resolutions = [t for t in during if t.kind in ("post", "void")]
    released = sum(holds[t.pending_id].amount - t.amount if t.kind == "post" else t.amount
                   for t in resolutions if t.pending_id in holds)
    resolved_by_end = {t.pending_id for t in transfers if t.kind in ("post", "void")}
    pending_at_close = sum(h.amount for h in holds.values() if h.id not in resolved_by_end)
    # The statement is the ledger: these are its two balance equations, asserted before anyone reads it.
    assert opening[paid] + top_ups - charged_paid == closing[paid], "paid account does not reconcile"
    assert opening[vouchers] + granted - spent_vouchers - expired == closing[vouchers], "vouchers do not reconcile"
    return {
        "object": "statement", "tenant_id": tenant_id, "month": month, "final": final,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "opening_balance": opening[paid],
        "top_ups": top_ups,
        "charges": {"tokens": charged_paid + spent_vouchers, "paid_tokens": charged_paid,
                    "voucher_tokens": spent_vouchers, "lines": _charges(session, posts, vouchers)},
        "refunds": {"released_tokens": released,
                    "voided_holds": sum(1 for t in resolutions if t.kind == "void")},
        "vouchers": {"opening_balance": opening[vouchers], "granted": granted, "spent": spent_vouchers,
                     "expired": expired, "closing_balance": closing[vouchers]},
        "closing_balance": closing[paid],
        "pending_at_close": pending_at_close,
        "transfers": len(during),
        "reconciled": True,
        "generated_at": utcnow().isoformat(),
    }


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def statement(session: Session, tenant_id: str, month: str, now: datetime | None = None) -> dict[str, Any]:
    """The tenant's statement for `month` (YYYY-MM). An ended month is stored the first time it is asked
    for and served from storage ever after; the current month is computed live (`final` false)."""
    now = now or utcnow()
    start, end = month_bounds(month)
    if start > now:
        raise StatementError(f"{month} has not started")
    stored = session.get(Statement, (tenant_id, month))
    if stored is not None:
        return stored.body
    final = end <= now
    body = _compute(session, tenant_id, month, start, end, final)
    if not final:
        return body
    try:
        with session.begin_nested():
            session.add(Statement(tenant_id=tenant_id, month=month, body=body, body_sha256=_digest(body)))
    except IntegrityError:
        # Another request stored it first: that one is the statement.
        return session.get(Statement, (tenant_id, month), populate_existing=True).body
    return body


def statement_csv(body: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "item", "model", "price_book_version", "model_price", "tokens", "currency",
                     "amount"])
    writer.writerow(["balance", "opening", "", "", "", body["opening_balance"], "", ""])
    writer.writerow(["top_ups", "credits", "", "", "", body["top_ups"], "", ""])
    for line in body["charges"]["lines"]:
        amount = line["amount"] or {"currency": "", "value": ""}
        source = line["price"]["source"] if line.get("price") else ""  # statements stored before it: none
        writer.writerow(["charges", "jobs", line["model"], line["price_book_version"], source, line["tokens"],
                         amount["currency"], amount["value"]])
    writer.writerow(["charges", "paid", "", "", "", body["charges"]["paid_tokens"], "", ""])
    writer.writerow(["charges", "vouchers", "", "", "", body["charges"]["voucher_tokens"], "", ""])
    writer.writerow(["refunds", "released", "", "", "", body["refunds"]["released_tokens"], "", ""])
    for item in ("opening_balance", "granted", "spent", "expired", "closing_balance"):
        writer.writerow(["vouchers", item, "", "", "", body["vouchers"][item], "", ""])
    writer.writerow(["balance", "closing", "", "", "", body["closing_balance"], "", ""])
    writer.writerow(["balance", "pending_at_close", "", "", "", body["pending_at_close"], "", ""])
    return out.getvalue()


def _latin1(text: object) -> str:
    # The PDF's core font covers Latin-1 only; ids and numbers are all it prints.
    return str(text).encode("latin-1", "replace").decode("latin-1")


def statement_pdf(body: dict[str, Any]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, _latin1(f"Statement {body['month']} - tenant {body['tenant_id']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    status = "final" if body["final"] else "provisional (month not ended)"
    pdf.cell(0, 6, _latin1(f"{body['period']['start']} to {body['period']['end']}, {status}"),
             new_x="LMARGIN", new_y="NEXT")
    rows = list(csv.reader(io.StringIO(statement_csv(body))))
    widths = (22, 24, 34, 24, 20, 24, 18, 24)
    for index, row in enumerate(rows):
        pdf.set_font("Helvetica", "B" if index == 0 else "", 9)
        for width, value in zip(widths, row, strict=True):
            pdf.cell(width, 6, _latin1(value), border=1)
        pdf.ln()
    return bytes(pdf.output())


@dataclass(frozen=True)
class StatementFile:
    content: bytes
    media_type: str
    filename: str


def statement_file(body: dict[str, Any], fmt: str) -> StatementFile:
    """The statement as a download ("csv" or "pdf"), named the same wherever it is fetched from."""
    filename = f"statement-{body['tenant_id']}-{body['month']}.{fmt}"
    if fmt == "csv":
        return StatementFile(statement_csv(body).encode(), "text/csv", filename)
    assert fmt == "pdf", f"unknown statement format {fmt!r}"
    return StatementFile(statement_pdf(body), "application/pdf", filename)


def _parse_day(value: str, param: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise StatementError(f"{param} must be a date, YYYY-MM-DD") from exc
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def usage(session: Session, tenant_id: str, *, start: str | None, end: str | None,
          group_by: str) -> dict[str, Any]:
    """Charges in [start, end) (dates, UTC; default: the last 30 days), grouped by day, model, API key,
    template or batch ("" groups jobs without one):
    jobs, tokens quoted and tokens charged (posted), cache hits."""
    assert group_by in usage_groupings, f"unknown grouping {group_by!r}"
    today = utcnow().date()
    tomorrow = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    end_at = _parse_day(end, "to") if end else tomorrow
    start_at = _parse_day(start, "from") if start else end_at - timedelta(days=30)
    if not start_at < end_at:
        raise StatementError("from must be before to")
    if end_at - start_at > timedelta(days=usage_days_max):
        raise StatementError(f"a usage range spans at most {usage_days_max} days")
    rows = session.execute(
        select(Transfer.amount, Transfer.created_at, Job.id, Job.model, Job.api_key_id, Job.input_tokens,
               Job.output_tokens, Job.cache_hit_job_id, Job.template, Job.batch_id)
        .join(Job, Job.id == Transfer.job_id)
        .where(Transfer.tenant_id == tenant_id, Transfer.kind == "post", Transfer.created_at >= start_at,
               Transfer.created_at < end_at)).all()
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {"jobs": set(), "input_tokens": 0, "output_tokens": 0,
                                                             "charged_tokens": 0, "cache_hits": set()})
    counted: set[str] = set()
    for row in rows:
        key = {"day": row.created_at.date().isoformat(), "model": row.model, "key": row.api_key_id or "",
               "template": row.template or "", "batch": row.batch_id or ""}[group_by]
        group = groups[key]
        group["jobs"].add(row.id)
        group["charged_tokens"] += row.amount
        if row.id not in counted:  # a split hold posts two legs: count the job's tokens once
            counted.add(row.id)
            group["input_tokens"] += row.input_tokens
            group["output_tokens"] += row.output_tokens
        if row.cache_hit_job_id is not None:
            group["cache_hits"].add(row.id)
    data = [{"group": key, "jobs": len(g["jobs"]), "input_tokens": g["input_tokens"],
             "output_tokens": g["output_tokens"], "charged_tokens": g["charged_tokens"],
             "cache_hits": len(g["cache_hits"])} for key, g in sorted(groups.items())]
    return {"object": "usage", "from": start_at.date().isoformat(), "to": end_at.date().isoformat(),
            "group_by": group_by, "data": data,
            "total_charged_tokens": sum(g["charged_tokens"] for g in data)}
