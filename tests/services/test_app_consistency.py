"""check_agent's application-consistency message from the agent's readiness answer, which is bounded
before the catalog keeps it (an agent is not trusted with our memory)."""

from __future__ import annotations

from opencbr.services.app_consistency import check_message, readiness, summary


def test_the_message_says_what_can_and_cannot_be_quiesced_and_what_discovery_noted():
    ready = readiness({"state": "checked", "checked_at": "2026-12-03T22:00:00+00:00", "hooks": [
        {"name": "postgresql:/srv/pg", "kind": "postgresql", "ok": True, "message": "can be quiesced (pg_backup_start)"},
        {"name": "mysql:/var/lib/mysql", "kind": "mysql", "ok": False, "message": "opencbr lacks RELOAD"},
        {"name": "discovery", "kind": "note", "ok": True, "message": "postgres pid 7: cannot read its postmaster.pid"}]})
    said = check_message(ready)
    assert "postgresql:/srv/pg can be quiesced" in said
    assert "mysql:/var/lib/mysql cannot be quiesced: opencbr lacks RELOAD" in said
    assert "noted: postgres pid 7" in said


def test_nothing_found_says_the_backups_will_be_crash_consistent():
    said = check_message(readiness({"state": "checked", "hooks": [
        {"name": "discovery", "kind": "note", "ok": True, "message": "discovery is off (hooks.discover false)"}]}))
    assert "no database or script to quiesce was found or configured" in said and "crash-consistent" in said
    assert "discovery is off" in said


def test_states_before_a_result():
    assert "checking" in check_message(readiness({"state": "checking"}))
    assert "does not check" in check_message(readiness(None))
    assert "does not check" in check_message(None)
    assert "not usable" in check_message(readiness({"state": "checked", "hooks": [], "error": "not usable: x"}))


def test_an_answer_is_bounded():
    ready = readiness({"state": "checked", "hooks": [{"name": "n" * 5000, "kind": "postgresql", "ok": "yes",
                                                      "message": 7}] * 1000 + ["junk"], "error": ["x"]})
    assert len(ready["hooks"]) == 32 and len(ready["hooks"][0]["name"]) == 300
    assert ready["hooks"][0]["ok"] is False and ready["hooks"][0]["message"] == "" and "error" not in ready


def test_the_summary_drops_the_wal_only():
    record = {"achieved": "app_consistent", "reason": "", "hooks": [
        {"name": "pg", "kind": "postgresql", "details": {"backup_label": "START WAL", "wal": [{"file": "x"}]}}]}
    assert summary(record)["hooks"][0]["details"] == {"backup_label": "START WAL"}
    assert record["hooks"][0]["details"]["wal"]  # the record itself is untouched
