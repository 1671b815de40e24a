"""The crash campaign's short run (tools/campaigns/crash.py): ten seeded SIGKILLs, five on each
catalog, of the service or of a separate ``cbr worker`` in the middle of backups, restores,
create-disks, deletes, GCs and verifies; after each, recovery is complete (nothing left running), the
store holds no orphan after the next GC, used capacity is exact, and every available backup restores
bit-exact. The full run (100+ trials) is ``python -m tools.campaigns.crash``."""

from __future__ import annotations

import pytest

from tests.support.databases import pg_unavailable_reason
from tools.campaigns.crash import CrashCampaign, summary

# Five trials per catalog, between them every operation; the service is killed in the first half of
# each run, a worker process in the second.
PLAN = {"sqlite": (11, ["backup", "restore", "create_disk", "gc", "verify"]),
        "postgresql": (12, ["delete", "backup", "gc", "restore", "create_disk"])}


@pytest.mark.parametrize("catalog", sorted(PLAN))
def test_crash_campaign_short_run(tmp_path, catalog):
    if catalog == "postgresql" and pg_unavailable_reason():
        pytest.skip(f"PostgreSQL is unreachable ({pg_unavailable_reason()}); PG catalog tests NOT RUN")
    seed, operations = PLAN[catalog]
    results = CrashCampaign(str(tmp_path), catalog, seed, small=True, targeted=0).run(
        len(operations), echo=lambda _line: None, operations=operations, halves=True)
    report = summary(results)
    assert len(results) == len(operations), report + "\n" + "\n".join(map(str, results[-1:]))
    assert [t.operation for t in results] == operations
    assert {t.victim for t in results} == {"server", "worker"}, report
    failures = [(t.n, t.operation, t.kind, t.mode, t.violations) for t in results if t.violations]
    assert not failures, f"seed {seed}:\n{report}\n{failures}"


def test_backup_killed_between_its_manifest_and_the_catalog_leaves_nothing(tmp_path):
    """The narrowest window of the crash ordering: the manifest is stored, the catalog does not yet say
    Available. Known bug (the interrupted-task recovery of issue 11 item 18 owns it): the backup turns
    error and keeps its manifest, so its chunks are never collected and used_bytes counts them (and a
    retry under the same id would find the manifest taken). Reported as an expected failure while
    that is all that is wrong; any other violation fails the test."""
    campaign = CrashCampaign(str(tmp_path), "sqlite", 31, small=True, targeted=1.0)
    (t,) = campaign.run(1, echo=lambda _line: None, operations=["backup"], halves=True)
    if "manifest stored, backup protecting" not in t.state_at_kill:
        pytest.skip(f"the kill missed the window between manifest and catalog ({t.state_at_kill})")
    known = [v for v in t.violations if "belongs to no available backup" in v or "used_bytes" in v]
    if known and len(known) == len(t.violations):
        pytest.xfail("known bug (issue 11 item 18, interrupted-backup recovery): " + "; ".join(known))
    assert not t.violations, t.violations
