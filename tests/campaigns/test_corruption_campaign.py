"""The corruption campaign's short run (tools/campaigns/corruption.py): twenty seeded single faults
(flipped bytes, truncations and deletions of packs, chunk records, tree catalog chunks, index objects
and manifests; changed fields of backup rows). Every fault a backup uses is reported by verify of that
backup, naming what is damaged; no restore returns wrong bytes; repaired, everything verifies clean.
The full run (200+ faults, either catalog) is ``python -m tools.campaigns.corruption``."""

from __future__ import annotations

from tools.campaigns.corruption import TARGETS, CorruptionCampaign, summary

FAULTS = 20


def test_corruption_campaign_short_run(tmp_path):
    results = CorruptionCampaign(str(tmp_path), "sqlite", 7, small=True).run(FAULTS, echo=lambda _line: None)
    report = summary(results)
    assert len(results) == FAULTS, report + "\n" + "\n".join(map(str, results[-1:]))
    assert {f.target for f in results} == set(TARGETS)
    assert sum(1 for f in results if f.used_by) >= FAULTS // 2, report  # most faults hit data in use
    failures = [(f.n, f.target, f.kind, f.where, f.violations) for f in results if f.violations]
    assert not failures, f"seed 7:\n{report}\n{failures}"
    assert not any(v == "WRONG BYTES" for f in results for v in f.restores.values())
