"""The heartbeat's readiness answer: checked in the background with real connections (a role without the
backup functions cannot quiesce, and the answer says which privilege is missing), never waited for, and
not checked again before the TTL."""

from __future__ import annotations

import time

from opencbr.agent.hooks.readiness import Readiness


def _settled(r: Readiness, config: dict, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while (answer := r.answer(config))["state"] == "checking" and time.monotonic() < end:
        time.sleep(0.05)
    return answer


def test_readiness_is_checked_in_the_background_with_real_connections(pg):
    pg.sql("DO $$ BEGIN CREATE ROLE ocbr_weak LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    config = {"discover": False, "postgresql": [pg.target(), pg.target(name="weak", user="ocbr_weak")]}
    r = Readiness(ttl=3600)
    started = time.monotonic()
    assert r.answer(config) == {"state": "checking"}  # answered at once, the check runs meanwhile
    assert time.monotonic() - started < 1
    answer = _settled(r, config)
    assert answer["state"] == "checked" and answer["checked_at"]
    by_name = {h["name"]: h for h in answer["hooks"]}
    assert by_name[pg.target()["name"]]["ok"] is True
    assert by_name["weak"]["ok"] is False and "missing EXECUTE on backup_start" in by_name["weak"]["message"]
    pg.sql("DROP ROLE ocbr_weak")
    assert r.answer(config) == answer  # within the TTL: the same result, no new check


def test_a_bad_configuration_is_said_not_raised():
    r = Readiness()
    answer = _settled(r, {"discover": False, "postgresql": [{"no_such_field": 1}]})
    assert answer["hooks"] == [] and "not usable" in answer["error"], answer
