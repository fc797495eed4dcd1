"""The `vidfactory` CLI as scripts use it: real subprocesses, exit codes, --json on stdout, errors on
stderr without tracebacks. Most cases run on SQLite only (each process start costs time); `ledger
verify`, which must see what the live database holds, runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, text

from vidfactory.billing import ledger
from vidfactory.db.models import ApiKey, AuditEntry, Plan, PriceBook
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.jobs.maintenance import last_check, ledger_verify_check
from vidfactory.media.encode import probe_mp4
from vidfactory.tenancy import authenticate

from conftest import new_tenant
from fixtures_models import tiny_ti2v_dir  # noqa: F401  (fixture)

command_timeout_s = 60
generate_timeout_s = 180


class Cli:
    """Runs `python -m vidfactory.cli` with an environment that points at one database and data dir."""

    def __init__(self, tmp_path: Path, models_dir: Path, database_url: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDFACTORY_")}
        env.update({"VIDFACTORY_DATA_DIR": str(tmp_path / "var"), "VIDFACTORY_MODELS_PATH": str(models_dir),
                    "VIDFACTORY_ADMIN_TOKEN": "cli-admin"})
        if database_url is not None:  # None: the embedded default, a SQLite file under the data dir
            env["VIDFACTORY_DATABASE_URL"] = database_url
        self.env = env
        self.cwd = tmp_path

    def __call__(self, *args: str, timeout: float = command_timeout_s) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vidfactory.cli", *args], env=self.env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args, "--json").stdout)


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Non-zero exit, one clear line on stderr, nothing on stdout, no traceback."""
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", (result.stdout, result.stderr)


def test_the_api_and_the_commands_without_an_engine_start_without_torch(cli):
    """Importing the API and the CLI, migrating, creating a tenant, refusing a generation's bad size or
    unknown model: none loads torch, diffusers or transformers (seconds of CPU on every process start, and
    a mistyped option is told at once); only workers, engines and token counting do."""
    code = ("import sys\n"
            "import vidfactory.api.app\n"
            "from vidfactory.cli import app\n"
            "app(['db', 'upgrade'], standalone_mode=False)\n"
            "app(['admin', 'tenant', 'create', 'acme', '--json'], standalone_mode=False)\n"
            "for refused in (['generate', 'x', '--size', '64x50'], ['calibrate-magcache', 'wan-huge']):\n"
            "    assert app(refused, standalone_mode=False) == 2\n"
            "print(sorted(name for name in ('torch', 'diffusers', 'transformers') if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], env=cli.env, cwd=cli.cwd, capture_output=True, text=True,
                            timeout=command_timeout_s)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]", result.stdout


@pytest.fixture
def sessions_for():
    engines = []

    def open_sessions(url: str):
        engines.append(make_engine(url))
        return make_session_factory(engines[-1])

    yield open_sessions
    for engine in engines:
        engine.dispose()


@pytest.fixture
def cli(tmp_path, sqlite_url, models_dir) -> Cli:
    return Cli(tmp_path, models_dir, sqlite_url)


def test_db_upgrade_creates_then_is_idempotent(tmp_path, models_dir, sessions_for):
    cli = Cli(tmp_path, models_dir, database_url=None)
    for _ in range(2):
        assert "database is up to date" in cli.ok("db", "upgrade").stdout
    sessions = sessions_for(f"sqlite:///{tmp_path / 'var' / 'vidfactory.db'}")
    with sessions() as session:
        assert sorted(session.scalars(select(Plan.id))) == ["enterprise", "free", "pro"]
        assert list(session.scalars(select(PriceBook.version))) == [1]  # seeded once, not twice


def test_a_command_on_a_database_it_cannot_use_says_what_to_do(tmp_path, models_dir):
    cli = Cli(tmp_path, models_dir, database_url=None)  # the embedded default, never migrated
    assert_refused(cli("admin", "tenant", "list"),
                   "error: the database has no vidfactory schema yet: run `vidfactory db upgrade`")
    cli.ok("db", "upgrade")
    assert cli.json("admin", "tenant", "list") == {"data": []}
    with make_engine(f"sqlite:///{tmp_path / 'var' / 'vidfactory.db'}").begin() as connection:
        # An older release's database: a column this code reads is not there yet.
        connection.execute(text("UPDATE alembic_version SET version_num = '0001_initial'"))
        connection.execute(text("ALTER TABLE tenants DROP COLUMN suspended_reason"))
    assert_refused(cli("admin", "tenant", "list"), "error: the database's schema is at migration 0001_initial and")
    unreachable = Cli(tmp_path, models_dir, "postgresql://vidfactory:secret-password@127.0.0.1:1/vidfactory")
    refused = unreachable("admin", "tenant", "list")
    assert_refused(refused, "error: cannot reach the database: ")
    assert "secret-password" not in refused.stderr and len(refused.stderr.splitlines()) == 1, refused.stderr


def test_tenant_create(cli):
    created = cli.json("admin", "tenant", "create", "acme", "--plan", "pro")
    assert created["name"] == "acme" and created["plan"] == "pro" and created["id"].startswith("ten_")
    duplicate = cli("admin", "tenant", "create", "acme", "--plan", "pro")
    assert_refused(duplicate, "error: tenant 'acme' already exists")
    assert_refused(cli("admin", "tenant", "create", "globex", "--plan", "gold"), "error: unknown plan 'gold'")


def test_key_create_by_name_and_id_stores_only_the_digest(cli, sqlite_url, sessions_for):
    tenant = cli.json("admin", "tenant", "create", "acme")
    by_name = cli.json("admin", "key", "create", "acme")
    by_id = cli.json("admin", "key", "create", tenant["id"])
    assert_refused(cli("admin", "key", "create", "nobody"), "error: no tenant 'nobody'")
    sessions = sessions_for(sqlite_url)
    with sessions() as session:
        for created in (by_name, by_id):
            assert created["tenant_id"] == tenant["id"]
            caller = authenticate(session, created["key"])
            assert caller is not None
            assert (caller.tenant_id, caller.api_key_id) == (tenant["id"], created["id"])
        rows = {row.id: row for row in session.scalars(select(ApiKey))}
        stored = [json.dumps(list(r), default=str) for r in session.execute(text("SELECT * FROM api_keys"))]
    database_files = [Path(sqlite_url.removeprefix("sqlite:///"))]
    database_files += [p for p in (Path(f"{database_files[0]}-wal"),) if p.exists()]
    raw = b"".join(path.read_bytes() for path in database_files)
    for created in (by_name, by_id):
        assert rows[created["id"]].key_sha256 == hashlib.sha256(created["key"].encode()).hexdigest()
        assert not any(created["key"] in row for row in stored)  # no column holds the key
        assert created["key"].encode() not in raw  # nor does any other table, page or journal


def test_credit(cli, sqlite_url, sessions_for):
    tenant = cli.json("admin", "tenant", "create", "acme")
    credited = cli.json("admin", "credit", "acme", "1500")
    assert credited["tenant_id"] == tenant["id"] and credited["transfer_id"].startswith("tr_")
    assert credited["balance"] == {"available": 1500, "pending": 0, "posted": 1500}
    assert cli.json("admin", "credit", tenant["id"], "500")["balance"]["available"] == 2000
    assert_refused(cli("admin", "credit", "acme", "0"), "TOKENS must be between 1 and 10^12")
    assert_refused(cli("admin", "credit", "acme", "--", "-5"), "TOKENS must be between 1 and 10^12")
    assert_refused(cli("admin", "credit", "acme", "-5"), "-5")  # read as an option: refused all the same
    assert_refused(cli("admin", "credit", "nobody", "5"), "error: no tenant 'nobody'")
    with sessions_for(sqlite_url)() as session:
        assert ledger.balance(session, tenant["id"]).available == 2000


def test_ledger_verify_names_a_tampered_balance(tmp_path, database_url, models_dir, sessions_for):
    cli = Cli(tmp_path, models_dir, database_url)
    sessions = sessions_for(database_url)
    tenant = new_tenant(sessions, tokens=500)
    clean = cli.ok("ledger", "verify")
    assert "no breaches" in clean.stdout
    with sessions() as session:  # recorded for /metrics (vidfactory_ledger_verify_ok)
        assert last_check(session, ledger_verify_check).ok
    with sessions.begin() as session:
        session.execute(text("UPDATE accounts SET credits_posted = 507 WHERE tenant_id = :tenant"),
                        {"tenant": tenant.id})
    breach = f"account tenant:{tenant.id} credits_posted is 507, transfers say 500"
    found = cli("ledger", "verify")
    assert found.returncode == 1 and breach in found.stdout, (found.stdout, found.stderr)
    as_json = cli("ledger", "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "breaches": [breach]}
    with sessions() as session:
        check = last_check(session, ledger_verify_check)
        assert (check.ok, check.detail) == (False, breach)


def test_generate_writes_an_h264_mp4(cli, tmp_path):
    wrote = cli.ok("generate", "a paper boat on a river", "--out", "clip.mp4", "--size", "64x64",
                   "--seconds", "1", timeout=generate_timeout_s)
    assert "wrote clip.mp4 (64x64, 9 frames at 8 fps; content id clip_" in wrote.stdout
    probe = probe_mp4((tmp_path / "clip.mp4").read_bytes())
    assert (probe.codec, probe.width, probe.height, probe.frames) == ("h264", 64, 64, 9)
    refused = cli("generate", "a paper boat", "--out", "bad.mp4", "--size", "64x50",
                  timeout=generate_timeout_s)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: size: model wan-tiny supports sides that are multiples of 16" in refused.stderr
    assert not (tmp_path / "bad.mp4").exists()


def test_generate_starts_from_an_image_with_an_image_to_video_model(cli, tmp_path,
                                                                   tiny_ti2v_dir):  # noqa: F811
    cli.env["VIDFACTORY_MODELS"] = json.dumps([
        {"id": "wan-tiny", "engine": "wan-tiny"},
        {"id": "ti2v", "engine": "wan", "preset": "wan2.2-ti2v-5b", "path": str(tiny_ti2v_dir),
         "default_size": "128x128", "default_seconds": 1, "fps": 4, "steps": 2}])
    Image.new("RGB", (192, 128), "teal").save(tmp_path / "first.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    wrote = cli.ok("generate", "a lantern on a lake", "--model", "ti2v", "--image", "first.png", "--out",
                   "clip.mp4", timeout=generate_timeout_s)
    assert "wrote clip.mp4 (128x128, 5 frames at 4 fps; content id clip_" in wrote.stdout
    probe = probe_mp4((tmp_path / "clip.mp4").read_bytes())
    assert (probe.width, probe.height, probe.frames) == (128, 128, 5)
    text_only = cli("generate", "a lantern", "--image", "first.png", "--out", "no.mp4")
    assert_refused(text_only, "--image: model wan-tiny generates from text only")
    not_an_image = cli("generate", "a lantern", "--model", "ti2v", "--image", "notes.txt", "--out", "no.mp4")
    assert_refused(not_an_image, "not a PNG, JPEG or WebP image")
    assert not (tmp_path / "no.mp4").exists()


def test_calibrate_magcache_prints_ratios_to_configure(cli):
    printed = cli.ok("calibrate-magcache", "wan-tiny", "--size", "64x64", "--seconds", "1", "--steps", "4",
                     timeout=generate_timeout_s)
    calibration = json.loads(printed.stdout)
    assert calibration["model"] == "wan-tiny" and calibration["steps"] == 4
    ratios = calibration["step_cache_mag_ratios"]
    assert len(ratios) == 4 and ratios[0] == 1.0 and all(r > 0 for r in ratios)
    unknown = cli("calibrate-magcache", "wan-huge")
    assert unknown.returncode == 2 and "unknown model 'wan-huge'" in unknown.stderr


def demo_key(output: str) -> str:
    match = re.search(r"API key:\s+(vf_\S+)", output)
    assert match, output
    return match[1]


def test_demo_key_survives_restarts_and_is_kept_owner_only(cli, tmp_path, sqlite_url, sessions_for):
    first = demo_key(cli.ok("admin", "demo").stdout)
    second = demo_key(cli.ok("admin", "demo").stdout)
    assert first == second  # `make run` again: the key in the client's config still works
    stored = tmp_path / "var" / "demo_key"
    assert stored.read_text().strip() == first
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    other = cli.json("admin", "key", "create", "demo")["key"]
    assert other not in "".join(p.read_text(errors="replace") for p in (tmp_path / "var").iterdir() if p.is_file())
    with sessions_for(sqlite_url)() as session:
        caller = authenticate(session, first)
        assert caller is not None and caller.plan == "pro"
        assert ledger.balance(session, caller.tenant_id).available == 1_000_000  # credited once, not twice


def test_demo_mints_a_new_key_when_the_stored_one_no_longer_verifies(cli, tmp_path, sqlite_url, sessions_for):
    first = demo_key(cli.ok("admin", "demo").stdout)
    listed = cli.json("admin", "key", "list", "demo")["data"]
    cli.ok("admin", "key", "revoke", listed[0]["id"])
    second = demo_key(cli.ok("admin", "demo").stdout)
    assert second != first and (tmp_path / "var" / "demo_key").read_text().strip() == second
    (tmp_path / "var" / "demo_key").write_text("vf_edited")
    third = demo_key(cli.ok("admin", "demo").stdout)
    assert third not in (first, second, "vf_edited")
    with sessions_for(sqlite_url)() as session:
        assert authenticate(session, first) is None and authenticate(session, third) is not None
        assert authenticate(session, second) is None  # an older demo key is revoked when a new one is minted


def test_version():
    from importlib.metadata import version

    shown = subprocess.run([sys.executable, "-m", "vidfactory.cli", "--version"], capture_output=True, text=True,
                           timeout=command_timeout_s)
    assert shown.returncode == 0 and shown.stdout.strip() == f"vidfactory {version('vidfactory')}"


def test_tenant_list_show_and_set_plan(cli, sqlite_url, sessions_for):
    acme = cli.json("admin", "tenant", "create", "acme")
    globex = cli.json("admin", "tenant", "create", "globex", "--plan", "pro")
    cli.ok("admin", "credit", "acme", "700")
    assert [(t["name"], t["plan"]) for t in cli.json("admin", "tenant", "list")["data"]] == [
        ("acme", "free"), ("globex", "pro")]
    assert "globex\tpro" in cli.ok("admin", "tenant", "list").stdout
    shown = cli.json("admin", "tenant", "show", "acme")
    assert shown["id"] == acme["id"] and shown["balance"]["available"] == 700 and shown["keys_active"] == 0
    assert cli.json("admin", "tenant", "set-plan", "acme", "enterprise")["plan"] == "enterprise"
    assert cli.json("admin", "tenant", "show", acme["id"])["plan"] == "enterprise"
    assert_refused(cli("admin", "tenant", "set-plan", "acme", "gold"), "error: unknown plan 'gold'")
    assert_refused(cli("admin", "tenant", "show", "nobody"), "error: no tenant 'nobody'")
    key = cli.json("admin", "key", "create", "globex")["key"]
    with sessions_for(sqlite_url)() as session:
        assert authenticate(session, key).plan == "pro"
    cli.ok("admin", "tenant", "set-plan", globex["id"], "free")
    with sessions_for(sqlite_url)() as session:
        assert authenticate(session, key).plan == "free"  # the next request gets the new plan's limits
        changes = list(session.scalars(select(AuditEntry.data).where(AuditEntry.kind == "tenant.plan_changed")
                                       .order_by(AuditEntry.seq)))
    assert changes == [
        {"from": "free", "to": "enterprise"}, {"from": "pro", "to": "free"}]


def test_key_list_and_revoke(cli, sqlite_url, sessions_for):
    cli.json("admin", "tenant", "create", "acme")
    first, second = (cli.json("admin", "key", "create", "acme") for _ in range(2))
    listed = cli.json("admin", "key", "list", "acme")["data"]
    assert [(k["id"], k["prefix"], k["revoked_at"]) for k in listed] == [
        (first["id"], first["key"][:10], None), (second["id"], second["key"][:10], None)]
    assert first["key"] not in cli.ok("admin", "key", "list", "acme").stdout  # ids and prefixes, never a key
    revoked = cli.json("admin", "key", "revoke", first["id"])
    assert revoked["id"] == first["id"] and revoked["revoked_at"] is not None
    assert cli.json("admin", "tenant", "show", "acme")["keys_active"] == 1
    assert_refused(cli("admin", "key", "revoke", "key_missing"), "error: no api key 'key_missing'")
    with sessions_for(sqlite_url)() as session:
        assert authenticate(session, first["key"]) is None and authenticate(session, second["key"]) is not None


def test_templates_and_batches(tmp_path, database_url, models_dir, client, ctx):
    tenant = new_tenant(ctx.sessions, tokens=100_000, name="acme")
    saved = client.post("/v1/templates", headers=tenant.headers, json={
        "name": "tour", "body": "a walk through {{ city }} in {{ season }}", "defaults": {"season": "spring"}})
    assert saved.status_code == 201, saved.text
    batch = client.post("/v1/batches", headers=tenant.headers, json={
        "template": "tour", "variables": {"city": ["Hangzhou", "Chengdu"]}, "seconds": "1", "size": "64x64"}).json()
    cli = Cli(tmp_path, models_dir, database_url)
    templates = cli.json("admin", "template", "list", "acme")["data"]
    assert {"product_intro", "tour"} <= {t["name"] for t in templates}
    assert [t["source"] for t in templates if t["name"] == "tour"] == ["tenant"]
    tour = cli.json("admin", "template", "show", "acme", "tour")
    assert tour["variables"] == ["city"] and tour["defaults"] == {"season": "spring"}
    assert "{{ city }}" in cli.ok("admin", "template", "show", "acme", "tour").stdout
    assert_refused(cli("admin", "template", "show", "acme", "nope"), "no template 'nope'")
    listed = cli.json("admin", "batch", "list", "acme")["data"]
    assert [(b["id"], b["items_total"], b["counts"]["queued"]) for b in listed] == [(batch["id"], 2, 2)]
    shown = cli.json("admin", "batch", "show", "acme", batch["id"])
    assert [(i["video_id"], i["variables"]["city"]) for i in shown["items"]] == [
        (i["video_id"], i["variables"]["city"]) for i in batch["items"]]
    assert shown["quote"] == batch["quote"]
    other = new_tenant(ctx.sessions, name="globex")
    assert other.id and cli.json("admin", "batch", "list", "globex")["data"] == []
    assert_refused(cli("admin", "batch", "show", "globex", batch["id"]), f"globex has no batch '{batch['id']}'")


def test_every_command_that_reports_speaks_json(cli):
    assert cli.json("db", "upgrade")["ok"] is True
    demo = cli.json("admin", "demo")
    assert demo["key"].startswith("vf_") and demo["available"] == 1_000_000


def test_worker_refuses_an_unknown_model_and_a_model_that_cannot_load(cli, tmp_path):
    unknown = cli("worker", "--model", "unknown", "--once")
    assert_refused(unknown, "error: unknown model 'unknown'; configured: wan-tiny, wan-tiny-i2v")
    cli.env["VIDFACTORY_MODELS"] = json.dumps([{"id": "wan-tiny", "engine": "wan-tiny"},
                                               {"id": "big", "engine": "wan", "path": str(tmp_path / "nowhere")}])
    broken = cli("worker", "--once")
    assert_refused(broken, f"error: model 'big': path {tmp_path / 'nowhere'} is not a directory")
    assert len(broken.stderr.strip().splitlines()) == 1
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model_index.json").write_text('{"_class_name": "WanPipeline", "vae": '
                                                         '["diffusers", "AutoencoderKLWan"]}')
    cli.env["VIDFACTORY_MODELS"] = json.dumps([{"id": "half", "engine": "wan", "path": str(tmp_path / "half")}])
    assert_refused(cli("worker", "--once"), f"error: model 'half': {tmp_path / 'half'} lacks its vae/")
    del cli.env["VIDFACTORY_MODELS"]
    cli.ok("worker", "--once")  # nothing queued: checks its model, claims nothing, exits


def test_malformed_models_json_says_where(cli):
    cli.env["VIDFACTORY_MODELS"] = '[{"id": "x",\n  "engine": "wan",}]'
    for command in (("generate", "a cat"), ("worker", "--once"), ("admin", "tenant", "list")):
        assert_refused(cli(*command), "error: VIDFACTORY_MODELS is not valid JSON: Expecting property name "
                                      "enclosed in double quotes at line 2 column 19")
    cli.env["VIDFACTORY_MODELS"] = '[{"id": "x", "engine": "wann"}]'
    assert_refused(cli("generate", "a cat"), "error: VIDFACTORY_MODELS[0].engine: String should match pattern")


def test_plain_postgres_urls_work(tmp_path, postgres_url, models_dir):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    for url in (plain, plain.replace("postgresql://", "postgres://")):
        cli = Cli(tmp_path, models_dir, url)
        cli.ok("db", "upgrade")
        assert cli.json("admin", "tenant", "create", f"t-{url.split(':')[0]}")["plan"] == "free"
    assert [t["name"] for t in cli.json("admin", "tenant", "list")["data"]] == ["t-postgresql", "t-postgres"]


def test_doctor_reports_each_dependency_and_fails_on_any_failure(tmp_path, database_url, models_dir):
    cli = Cli(tmp_path, models_dir, database_url)
    healthy = cli.json("doctor")
    assert healthy["ok"] is True
    by_name = {c["name"]: c for c in healthy["checks"]}
    assert list(by_name) == ["configuration", "database", "redis", "storage", "model wan-tiny", "model wan-tiny-i2v",
                             "gpu"]
    assert by_name["database"]["status"] == "ok" and "at migration" in by_name["database"]["detail"]
    assert by_name["storage"]["status"] == "ok" and not list((tmp_path / "var" / "storage" / "_health").iterdir())
    cli.env.update({"VIDFACTORY_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0",
                    "VIDFACTORY_MODELS": json.dumps([{"id": "big", "engine": "wan", "path": str(tmp_path / "nowhere")}])})
    broken = cli("doctor")
    assert broken.returncode == 1, broken.stdout
    assert "hunter2" not in broken.stdout and "redis://:***@127.0.0.1:1/0 unreachable" in broken.stdout
    assert f"fail  model big        model 'big': path {tmp_path / 'nowhere'} is not a directory" in broken.stdout
    assert "ok    database" in broken.stdout
    fresh = Cli(tmp_path / "fresh", models_dir, None)
    (tmp_path / "fresh").mkdir()
    unmigrated = fresh("doctor")
    assert unmigrated.returncode == 1 and "never migrated: run `vidfactory db upgrade`" in unmigrated.stdout
    fresh.env["VIDFACTORY_MODELS"] = "[oops"
    unconfigured = fresh("doctor", "--json")
    assert unconfigured.returncode == 1
    assert json.loads(unconfigured.stdout)["checks"] == [{"name": "configuration", "status": "fail", "detail":
                                                          "VIDFACTORY_MODELS is not valid JSON: Expecting value at "
                                                          "line 1 column 2"}]


def test_suspend_blocks_new_keys_until_resumed(cli):
    cli.json("admin", "tenant", "create", "acme")
    suspended = cli.json("admin", "tenant", "suspend", "acme", "--reason", "unpaid invoice")
    assert suspended["suspended"] is True and suspended["reason"] == "unpaid invoice"
    assert_refused(cli("admin", "key", "create", "acme"), "is suspended (unpaid invoice)")
    assert_refused(cli("admin", "tenant", "suspend", "nobody", "--reason", "x"), "error: no tenant 'nobody'")
    assert cli.json("admin", "tenant", "resume", "acme")["suspended"] is False
    assert cli.json("admin", "key", "create", "acme")["key"].startswith("vf_")
