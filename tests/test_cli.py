"""The `vidfactory` CLI as scripts use it: real subprocesses, exit codes, --json on stdout, errors on
stderr without tracebacks. Most cases run on SQLite only (each process start costs time); `ledger
verify`, which must see what the live database holds, runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, text

from vidfactory.billing import ledger
from vidfactory.db.models import ApiKey, Plan, PriceBook
from vidfactory.db.session import make_engine, make_session_factory
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
    with sessions.begin() as session:
        session.execute(text("UPDATE accounts SET credits_posted = 507 WHERE tenant_id = :tenant"),
                        {"tenant": tenant.id})
    breach = f"account tenant:{tenant.id} credits_posted is 507, transfers say 500"
    found = cli("ledger", "verify")
    assert found.returncode == 1 and breach in found.stdout, (found.stdout, found.stderr)
    as_json = cli("ledger", "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "breaches": [breach]}


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
    match = re.search(r"API key \(shown once\):\s+(vf_\S+)", output)
    assert match, output
    return match[1]


def test_demo_is_repeatable_and_revokes_the_previous_key(cli, sqlite_url, sessions_for):
    first = demo_key(cli.ok("admin", "demo").stdout)
    second = demo_key(cli.ok("admin", "demo").stdout)
    assert first != second
    with sessions_for(sqlite_url)() as session:
        assert authenticate(session, first) is None
        caller = authenticate(session, second)
        assert caller is not None and caller.plan == "pro"
        assert ledger.balance(session, caller.tenant_id).available == 1_000_000  # credited once, not twice
