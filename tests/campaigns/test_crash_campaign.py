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

