"""`vidfactory serve | worker | generate | calibrate-magcache | verify | db | admin | ledger`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from vidfactory.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
admin_app = typer.Typer(no_args_is_help=True, help="Tenants, keys and credits.")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants.")
key_app = typer.Typer(no_args_is_help=True, help="API keys.")
ledger_app = typer.Typer(no_args_is_help=True, help="The token ledger.")
lexicon_app = typer.Typer(no_args_is_help=True, help="A tenant's own prompt-screening terms.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(tenant_app, name="tenant")
admin_app.add_typer(key_app, name="key")
admin_app.add_typer(lexicon_app, name="lexicon")
app.add_typer(ledger_app, name="ledger")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
demo_tenant_name = "demo"
demo_credit_tokens = 1_000_000
cli_actor = "cli"
steps_max = 200
cli_clip_prefix = "clip_"  # a CLI clip's content ID: never a job's (those start with video_)
cli_clip_owner = "local"  # no tenant: the file is written where --out says, not to storage
cli_watermark_bytes = 4  # the watermark's 32-bit payload


def _engine():
    from vidfactory.db.session import make_engine

    return make_engine(Settings().resolved_database_url)


def _sessions():
    from vidfactory.db.session import make_session_factory

    return make_session_factory(_engine())


def _emit(as_json: bool, payload: dict, text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema and seed plans, operator accounts and price book v1."""
    from vidfactory.bootstrap import upgrade_and_seed

    upgrade_and_seed(_engine())
    typer.echo("database is up to date")


@tenant_app.command("create")
def tenant_create(name: str, plan: Annotated[str, typer.Option()] = "free", as_json: JsonFlag = False) -> None:
    from vidfactory.tenancy import TenancyError, create_tenant

    try:
        with _sessions().begin() as session:
            tenant = create_tenant(session, name, plan, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": tenant.id, "name": tenant.name, "plan": tenant.plan_id},
          f"created tenant {tenant.name} ({tenant.id}) on plan {tenant.plan_id}")


@key_app.command("create")
def key_create(tenant: str, as_json: JsonFlag = False) -> None:
    """Create an API key for TENANT (id or name). The key is shown once."""
    from vidfactory.tenancy import TenancyError, create_key, find_tenant

    try:
        with _sessions().begin() as session:
            row, plaintext = create_key(session, find_tenant(session, tenant).id, actor=cli_actor)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"id": row.id, "tenant_id": row.tenant_id, "key": plaintext}, plaintext)


@admin_app.command("credit")
def admin_credit(tenant: str, tokens: int, as_json: JsonFlag = False) -> None:
    """Top up TENANT (id or name) by TOKENS."""
    from vidfactory.billing import ledger
    from vidfactory.tenancy import TenancyError, find_tenant

    if not 0 < tokens <= 10**12:
        _fail("TOKENS must be between 1 and 10^12")
    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            transfer = ledger.credit(session, found.id, tokens, actor=cli_actor)
            current = ledger.balance(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"transfer_id": transfer.id, "tenant_id": found.id, "balance": vars(current)},
          f"credited {tokens} tokens to {found.name}; available {current.available}")


@admin_app.command("voucher")
def admin_voucher(tenant: str, tokens: int, reason: Annotated[str, typer.Option(help="Why (kept in the ledger).")],
                  days: Annotated[int, typer.Option(help="Days until it expires.")] = 30,
                  as_json: JsonFlag = False) -> None:
    """Grant TENANT (id or name) a voucher of TOKENS, spent before paid balance, expiring after --days."""
    from datetime import timedelta

    from vidfactory.billing import ledger
    from vidfactory.db.types import utcnow
    from vidfactory.notify.events import voucher_event
    from vidfactory.tenancy import TenancyError, find_tenant

    if not 0 < tokens <= 10**12:
        _fail("TOKENS must be between 1 and 10^12")
    if not 1 <= days <= 3650:
        _fail("--days must be between 1 and 3650")
    if not reason.strip() or len(reason) > 200:
        _fail("--reason must be 1–200 characters")
    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            transfer = ledger.grant_voucher(session, found.id, tokens, utcnow() + timedelta(days=days), reason,
                                            actor=cli_actor)
            voucher_event(session, transfer)
            current = ledger.voucher_balance(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"transfer_id": transfer.id, "tenant_id": found.id, "vouchers": vars(current)},
          f"granted a {tokens}-token voucher to {found.name}; vouchers available {current.available}")


@ledger_app.command("expire-vouchers")
def ledger_expire_vouchers(as_json: JsonFlag = False) -> None:
    """Expire every voucher grant past its expiry now (workers also do this every few seconds)."""
    from vidfactory.db.types import utcnow
    from vidfactory.jobs.maintenance import expire_vouchers

    expired = expire_vouchers(_sessions(), utcnow())
    _emit(as_json, {"expired": expired}, f"expired {expired} voucher grants")


@lexicon_app.command("add")
def lexicon_add(tenant: str, term: str, category: Annotated[str, typer.Option()],
                action: Annotated[str, typer.Option(help="block | review | allow")] = "block",
                as_json: JsonFlag = False) -> None:
    """Add TERM to TENANT's lexicon (or change its category and action)."""
    from vidfactory.jobs import screening
    from vidfactory.safety.lexicon import Entry, LexiconError
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        entry = Entry(term.strip(), category, action)
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            if not screening.add_entry(session, found.id, entry):
                _fail(f"a tenant lexicon holds at most {screening.tenant_lexicon_entries_max} terms")
    except (LexiconError, TenancyError) as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "term": entry.term, "category": entry.category, "action": entry.action},
          f"{found.name}: {entry.term!r} → {entry.category} ({entry.action})")


@lexicon_app.command("remove")
def lexicon_remove(tenant: str, term: str, as_json: JsonFlag = False) -> None:
    """Remove TERM from TENANT's lexicon."""
    from vidfactory.jobs import screening
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions().begin() as session:
            found = find_tenant(session, tenant)
            removed = screening.remove_entry(session, found.id, term.strip())
    except TenancyError as exc:
        _fail(str(exc))
    if not removed:
        _fail(f"{found.name} has no lexicon term {term.strip()!r}")
    _emit(as_json, {"tenant_id": found.id, "term": term.strip(), "deleted": True}, f"{found.name}: removed {term.strip()!r}")


@lexicon_app.command("list")
def lexicon_list(tenant: str, as_json: JsonFlag = False) -> None:
    """TENANT's own terms (the platform lexicon is the file in VIDFACTORY_LEXICON_PATH or the default)."""
    from vidfactory.jobs import screening
    from vidfactory.tenancy import TenancyError, find_tenant

    try:
        with _sessions()() as session:
            found = find_tenant(session, tenant)
            entries = screening.list_entries(session, found.id)
    except TenancyError as exc:
        _fail(str(exc))
    _emit(as_json, {"tenant_id": found.id, "data": [vars(e) for e in entries]},
          "\n".join(f"{e.term}\t{e.category}\t{e.action}" for e in entries) or f"{found.name}: no terms")


@admin_app.command("demo")
def admin_demo(port: int = 8000) -> None:
    """Create the demo tenant (once, with a balance) and print a fresh API key for it."""
    from sqlalchemy import select

    from vidfactory.billing import ledger
    from vidfactory.db.models import Tenant
    from vidfactory.tenancy import create_key, create_tenant, ensure_admin_token, revoke_keys

    settings = Settings()
    with _sessions().begin() as session:
        tenant = session.scalar(select(Tenant).where(Tenant.name == demo_tenant_name))
        if tenant is None:
            tenant = create_tenant(session, demo_tenant_name, plan="pro")
            ledger.credit(session, tenant.id, demo_credit_tokens, memo="demo balance")
        revoke_keys(session, tenant.id, label="demo")
        _, plaintext = create_key(session, tenant.id, label="demo")
        available = ledger.balance(session, tenant.id).available
    ensure_admin_token(settings)
    base = f"http://127.0.0.1:{port}/v1"
    typer.echo(f"""
  vidfactory demo tenant: {available} tokens available
  API key (shown once):  {plaintext}
  Base URL:              {base}
  Admin token:           in {settings.data_dir / 'admin_token'}

  curl -s {base}/videos -H "Authorization: Bearer {plaintext}" \\
       -H "Content-Type: application/json" -d '{{"prompt": "a red fox running through snow"}}'
""")


@ledger_app.command("verify")
def ledger_verify(as_json: JsonFlag = False) -> None:
    """Check every ledger invariant and the audit log's hash chain on the live database; exit 1 on any
    breach (a broken chain is reported at its first broken link)."""
    from vidfactory.billing.verify import verify

    with _sessions()() as session:
        breaches = verify(session)
    _emit(as_json, {"ok": not breaches, "breaches": breaches},
          "\n".join(breaches) if breaches else "ledger verified: no breaches")
    raise typer.Exit(1 if breaches else 0)


@app.command()
def serve(host: str = "127.0.0.1", port: int = 8000,
          workers: Annotated[int | None, typer.Option(help="In-process worker threads.")] = None) -> None:
    """Serve the API (and, by default, one in-process worker)."""
    import uvicorn

    from vidfactory.api.app import create_app
    from vidfactory.observability.requests import configure_request_log

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_request_log()
    # The request log (one JSON line per request, with its request id and tenant) replaces the access log.
    uvicorn.run(create_app(Settings(), workers=workers), host=host, port=port, log_level="info", access_log=False)


@app.command()
def worker(model: Annotated[list[str] | None, typer.Option(help="Serve only these models.")] = None,
           once: Annotated[bool, typer.Option(help="Process at most one job, then exit.")] = False) -> None:
    """Run a worker: claims jobs, keeps its pipeline loaded, settles each job."""
    from vidfactory.bootstrap import upgrade_and_seed
    from vidfactory.db.session import make_engine, make_session_factory
    from vidfactory.jobs.worker import Worker
    from vidfactory.notify.delivery import start_dispatcher
    from vidfactory.storage.local import LocalStorage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    engine = make_engine(settings.resolved_database_url)
    upgrade_and_seed(engine)
    sessions = make_session_factory(engine)
    loop = Worker(settings, sessions, LocalStorage(settings.resolved_storage_dir), models=model)
    if once:
        loop.maintain(force=True)
        loop.run_once()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatchers = start_dispatcher(settings, sessions, stop)  # the outbox is drained by workers too
    loop.run(stop)
    for thread in dispatchers:
        thread.join(settings.webhook_timeout_s + 5)


def _request_for(config, prompt: str, size: str | None, seconds: int | None, seed: int, steps: int | None):
    """The GenerationRequest a CLI command runs for `config`, or exit with the option to fix."""
    from vidfactory.engines.base import GenerationRequest
    from vidfactory.jobs.spec import InvalidRequest, shape_for

    try:
        shape = shape_for(config, size, seconds)
    except InvalidRequest as exc:
        _fail(f"{exc.param}: {exc}")
    if steps is not None and not 1 <= steps <= steps_max:
        _fail(f"--steps must be between 1 and {steps_max}")
    return GenerationRequest(prompt=prompt, negative_prompt="", width=shape.width, height=shape.height,
                             num_frames=shape.num_frames, fps=shape.fps,
                             num_inference_steps=config.steps if steps is None else steps,
                             guidance_scale=config.guidance_scale, seed=seed,
                             guidance_scale_2=config.guidance_scale_2)


def _first_frame(config, path: Path, width: int, height: int):
    """The image as the worker gives it to the engine: checked, upright RGB, cropped to the clip's shape."""
    from vidfactory.media.reference import ReferenceRefused, center_crop, decode_rgb, read_reference

    if not config.takes_reference_image:
        _fail(f"--image: model {config.id} generates from text only (image-to-video: the wan2.2-ti2v-5b "
              "preset)")
    try:
        data = read_reference(path.read_bytes()).data
    except (OSError, ReferenceRefused) as exc:
        _fail(f"--image: {path}: {exc}")
    return center_crop(decode_rgb(data), width, height)


def _configured_model(settings: Settings, model: str):
    config = settings.model(model)
    if config is None:
        _fail(f"unknown model {model!r}; configured: {', '.join(m.id for m in settings.models)}")
    return config


@app.command()
def generate(
    prompt: str,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("clip.mp4"),
    model: str = "wan-tiny",
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seconds: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    image: Annotated[Path | None, typer.Option(help="the first frame (PNG, JPEG or WebP): image-to-video, "
                                                    "for the wan2.2-ti2v-5b preset")] = None,
) -> None:
    """One-shot generation with no server and no ledger: prompt in (and a first frame), MP4 out, through
    the server's output pipeline (visible label, watermark, AIGC tag, C2PA manifest) under its own
    `clip_` content ID, so `vidfactory verify` vouches for it."""
    from tqdm import tqdm

    from vidfactory.engines.base import EngineError
    from vidfactory.engines.registry import load_engine
    from vidfactory.jobs.worker import speed_settings

    settings = Settings()
    config = _configured_model(settings, model)
    request = _request_for(config, prompt, size, seconds, seed, steps)
    if image is not None:
        request = replace(request, image=_first_frame(config, image, request.width, request.height))
    if not out.parent.is_dir():
        _fail(f"--out: directory {out.parent} does not exist")
    try:
        engine = load_engine(config, settings.models_dir, speed_settings(settings))
        with tqdm(total=request.num_inference_steps, unit="step", file=sys.stderr) as bar:
            video = engine.generate(request, lambda done, total: bar.update(done - bar.n), lambda: False)
    except EngineError as exc:
        _fail(f"{exc.error_type}: {exc}")
    clip, mp4 = _labelled_clip(settings, video.frames, video.fps)
    out.write_bytes(mp4)
    typer.echo(f"wrote {out} ({request.width}x{request.height}, {len(video.frames)} frames at {video.fps} fps; "
               f"content id {clip.job_id}, watermark {clip.watermark_id})")


def _labelled_clip(settings: Settings, frames, fps: int):
    """(identity, MP4 bytes) of frames rendered by the output pipeline under a new `clip_` content ID."""
    import secrets
    import uuid

    from vidfactory.jobs import output
    from vidfactory.media.errors import MediaError

    clip = output.ClipIdentity(job_id=f"{cli_clip_prefix}{uuid.uuid4().hex}", tenant_id=cli_clip_owner,
                               watermark_id=secrets.token_hex(cli_watermark_bytes))
    try:
        rendition = output.render(frames, fps, clip, output.load_provenance(settings),
                                  steps=output.frame_steps(settings))
    except MediaError as exc:
        _fail(str(exc))
    [video_file] = [file for file in rendition.files if file.variant == "video"]
    return clip, video_file.data


@app.command("calibrate-magcache")
def calibrate_magcache(
    model: str,
    prompt: str = "A red fox runs through a snowy forest at dawn, cinematic lighting",
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT")] = None,
    seconds: int | None = None,
    seed: int = 0,
    steps: int | None = None,
) -> None:
    """Measure MODEL's MagCache ratios on one generation and print them as JSON: set them as the
    model's `step_cache_mag_ratios` to let `VIDFACTORY_STEP_CACHE=mag` skip steps for it."""
    from vidfactory.engines.base import EngineError
    from vidfactory.engines.calibrate import mag_ratios
    from vidfactory.engines.registry import load_engine
    from vidfactory.engines.wan import WanEngine
    from vidfactory.jobs.worker import speed_settings

    settings = Settings()
    config = _configured_model(settings, model)
    if config.is_hosted:
        _fail(f"model {model!r} runs on a hosted service ({config.engine}): no local transformer to calibrate")
    request = _request_for(config, prompt, size, seconds, seed, steps)
    try:
        engine = load_engine(config, settings.models_dir, speed_settings(settings))
        assert isinstance(engine, WanEngine)
        ratios = mag_ratios(engine, request)
    except EngineError as exc:
        _fail(f"{exc.error_type}: {exc}")
    typer.echo(json.dumps({"model": model, "steps": request.num_inference_steps,
                           "step_cache_mag_ratios": [round(r, 6) for r in ratios]}))


@app.command()
def verify(file: Path, as_json: JsonFlag = False) -> None:
    """Which video FILE is and whether it was altered (as the operator: every tenant's videos).
    Exits 0 when it is a stored file unchanged, 1 when altered or unknown."""
    from vidfactory.jobs.output import load_provenance
    from vidfactory.jobs.verification import Scope, verify_file
    from vidfactory.media.errors import MediaError

    settings = Settings()
    if not file.is_file():
        _fail(f"{file} is not a file")
    if file.stat().st_size > settings.verify_upload_bytes_max:
        _fail(f"{file} is over {settings.verify_upload_bytes_max} bytes")
    try:
        anchors = load_provenance(settings).anchors_pem
    except MediaError as exc:
        _fail(str(exc))
    with _sessions()() as session:
        report = verify_file(session, file.read_bytes(), Scope(tenant_id=None), anchors_pem=anchors,
                             watermark_step=settings.watermark_step)
    lines = [f"video:     {report['video_id'] or 'unknown'}",
             f"altered:   {'unknown' if report['altered'] is None else 'yes' if report['altered'] else 'no'}",
             f"sha256:    {report['hashes']['sha256']} ({'stored' if report['hashes']['matches_stored'] else 'not stored'})",
             f"c2pa:      {report['c2pa']['state']} {' '.join(report['c2pa']['failures'])}".rstrip(),
             f"aigc:      {'present' if report['aigc'] else 'absent'}",
             f"watermark: {'found' if report['watermark']['found'] else 'not found'}"]
    _emit(as_json, report, "\n".join(lines))
    raise typer.Exit(0 if report["altered"] is False else 1)


if __name__ == "__main__":
    app()
