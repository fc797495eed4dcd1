"""The circuit breaker's state machine on SQLite and PostgreSQL, including racing workers: every failure
is counted exactly once and exactly one worker wins the half-open probe."""

from __future__ import annotations

import threading
from datetime import timedelta

from vidfactory.db.types import utcnow
from vidfactory.jobs import breaker
from vidfactory.notify.alerts import recent_alerts

policy = breaker.BreakerPolicy(failures_max=3, cooldown_s=60, probe_s=30)


def fail(sessions, now, model="m"):
    with sessions.begin() as s:
        return breaker.record_failure(s, model, "HostedUnavailable: HTTP 503", now=now, policy=policy)


def admits(sessions, worker, now, model="m"):
    with sessions.begin() as s:
        return breaker.admits(s, model, worker_id=worker, now=now, policy=policy)


def test_closed_until_consecutive_failures_reach_the_limit_and_a_success_resets(sessions):
    now = utcnow()
    assert admits(sessions, "w", now)  # no row yet: closed
    assert not fail(sessions, now) and not fail(sessions, now)
    with sessions.begin() as s:
        breaker.record_success(s, "m")
    assert not fail(sessions, now) and not fail(sessions, now)  # counting starts again
    assert fail(sessions, now)  # third in a row: open
    assert not admits(sessions, "w", now + timedelta(seconds=59))
    with sessions() as s:
        assert len(recent_alerts(s, 10, kind="engine_breaker_open")) == 1
        assert breaker.state_of(s, "m").last_error == "HostedUnavailable: HTTP 503"


def test_half_open_lets_one_probe_through_and_a_lost_probe_expires(sessions):
    now = utcnow()
    for _ in range(3):
        fail(sessions, now)
    later = now + timedelta(seconds=60)
    assert admits(sessions, "a", later)
    assert not admits(sessions, "b", later) and admits(sessions, "a", later)  # a keeps its probe
    assert admits(sessions, "b", later + timedelta(seconds=30))  # a vanished: b probes
    assert fail(sessions, later + timedelta(seconds=31))  # the probe failed: open again
    assert not admits(sessions, "a", later + timedelta(seconds=32))
    with sessions() as s:
        assert len(recent_alerts(s, 10, kind="engine_breaker_open")) == 1  # one alert per outage


def test_racing_workers_count_every_failure_once_and_share_one_probe(sessions):
    now = utcnow()
    threads = [threading.Thread(target=fail, args=(sessions, now, "race")) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with sessions() as s:
        row = breaker.state_of(s, "race")
        assert (row.state, row.failures) == ("open", 8)
    wins = []
    later = now + timedelta(seconds=61)
    racers = [threading.Thread(target=lambda w=w: wins.append(admits(sessions, w, later, "race")))
              for w in ("w1", "w2", "w3", "w4")]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert sorted(wins) == [False, False, False, True]


def test_a_live_probe_is_extended_only_by_its_owner(sessions):
    now = utcnow()
    for _ in range(3):
        fail(sessions, now)
    later = now + timedelta(seconds=60)
    assert admits(sessions, "a", later)
    with sessions.begin() as s:
        breaker.extend_probe(s, "m", worker_id="b", until=later + timedelta(seconds=999))  # not b's probe
        breaker.extend_probe(s, "m", worker_id="a", until=later + timedelta(seconds=100))
    assert not admits(sessions, "b", later + timedelta(seconds=99))  # a heartbeats: still a's
    assert admits(sessions, "b", later + timedelta(seconds=100))
