// A vault's scheduled checks (docs/verification.md): its verify policy (re-read a share of the backups every
// N days) and its restore-test policy (restore one backup to a scratch place and check it), with the last
// result of each, run now, set up, change or remove. The custom check command is the operator's (the API
// refuses it to tenants), so the console does not offer it.
import { api } from "./api.js";
import {
  UserError, badge, clear, confirmDialog, errorAlert, field, fmtTime, h, loading, openDialog, select, switchControl,
  toast, toastError, writeGuard,
} from "./ui.js";

const KINDS = {
  verify: { title: "Verification", what: "verify" },
  restore_test: { title: "Restore test", what: "restore test" },
};

function lastResult(c) {
  const last = c.last || {};
  if (!last.status) return h("span.hint", "Not run yet");
  return h("div", badge(last.status === "skipped" ? "waiting" : last.status, { label: last.status === "skipped" ? "Skipped" : undefined }),
    " ", fmtTime(last.finished_at || last.started_at),
    last.message ? h("span.sub", last.message) : null,
    last.task_id ? h("span.sub", h("a", { href: `#/tasks?task_id=${last.task_id}` }, "View task")) : null);
}

function editDialog(vault, kind, c) {
  const every = h("input", { type: "number", name: "interval_days", min: "1", max: "366", step: "1", value: String(c ? c.interval_days : 7) });
  const enabled = switchControl(c ? c.enabled : true, "Run on schedule", { name: "enabled" });
  const share = h("input", { type: "number", name: "share_percent", min: "1", max: "100", step: "1", value: String(c && c.share_percent ? c.share_percent : 100) });
  const rule = select([["latest", "The latest backup"], ["oldest", "The oldest backup"]], c ? c.backup_rule : "latest", { name: "backup_rule" });
  return openDialog({
    title: `${c ? "Change" : "Set Up"} ${KINDS[kind].title} — ${vault.name}`, okText: "Save",
    body: h("div.form",
      field("Every (days)", every, "The first run is due now; later runs every this many days."),
      kind === "verify"
        ? field("Share of backups (%)", share, "Each run re-reads this share of the backups, those verified longest ago first; damaged ones always.")
        : field("Backup to restore", rule, "Restored to a scratch place on a worker, checked, then removed."),
      field("", enabled)),
    onOk: async () => {
      const days = Number(every.value);
      if (!Number.isInteger(days) || days < 1 || days > 366) throw new UserError("Enter the days between runs: a whole number from 1 to 366.");
      const spec = { interval_days: days, enabled: enabled.querySelector("input").checked };
      if (kind === "verify") {
        const pct = Number(share.value);
        if (!Number.isInteger(pct) || pct < 1 || pct > 100) throw new UserError("Enter the share of backups: a whole number from 1 to 100.");
        spec.share_percent = pct;
      } else {
        spec.backup_rule = rule.value;
      }
      await api.put(`/vaults/${vault.id}/checks/${kind}`, { check: spec });
      toast(`${KINDS[kind].title} policy of ${vault.name} saved.`, "ok");
    },
  });
}

function row(vault, kind, c, reload) {
  const info = KINDS[kind];
  const run = async () => {
    try {
      const out = await api.post(`/vaults/${vault.id}/checks/${kind}/run`);
      if (out.task_id) toast(`${info.title} started.`, "ok", { link: `#/tasks?task_id=${out.task_id}` });
      else toast(out.reason, "info");
      reload(out.task_id);
    } catch (e) { toastError(e); }
  };
  const remove = () => confirmDialog({
    title: `Remove ${info.title} Policy`, message: `The ${info.what} of vault ${vault.name} will no longer run. Past tasks stay in the task list.`,
    okText: "Remove", onOk: async () => { await api.del(`/vaults/${vault.id}/checks/${kind}`); },
  }).then((ok) => { if (ok) reload(); });
  const edit = () => editDialog(vault, kind, c).then((ok) => { if (ok) reload(); });
  if (!c) {
    return [h("dt", info.title), h("dd", h("span.hint", "Not set up "),
      writeGuard(h("button.link", { type: "button", onclick: edit }, "Set Up")))];
  }
  const what = kind === "verify" ? `${c.share_percent}% of the backups` : `the ${c.backup_rule} backup`;
  const recovery = kind === "restore_test" && c.last && c.last.recovery_seconds != null
    ? h("span.sub", `Recovery time ${c.last.recovery_seconds.toFixed(1)} s`) : null;
  return [
    h("dt", info.title),
    h("dd", { dataset: { check: kind } },
      h("div", badge(c.enabled ? "enabled" : "disabled"), ` every ${c.interval_days} day(s), ${what}; next ${fmtTime(c.next_run_at)}`),
      lastResult(c), recovery,
      h("div.ops",
        writeGuard(h("button.link", { type: "button", onclick: run }, "Run Now")),
        writeGuard(h("button.link", { type: "button", onclick: edit }, "Change")),
        writeGuard(h("button.link", { type: "button", onclick: remove }, "Remove")))),
  ];
}

const FINISHED = new Set(["success", "failed", "skipped"]);
const POLL_MS = 1500;

/** The "Checks" card of a vault's page. While a run started here has not finished, it looks again. */
export function checksCard(vault) {
  const card = h("div.card", { dataset: { card: "checks" } }, h("h2", "Verification and Restore Tests"), loading());
  const pending = new Set();
  const reload = async (taskId) => {
    if (taskId) pending.add(taskId);
    try {
      const checks = (await api.get(`/vaults/${vault.id}/checks`)).checks || [];
      const byKind = Object.fromEntries(checks.map((c) => [c.kind, c]));
      checks.forEach((c) => { if (FINISHED.has((c.last || {}).status)) pending.delete(c.last.task_id); });
      clear(card, h("h2", "Verification and Restore Tests"),
        h("dl.kv", Object.keys(KINDS).map((k) => row(vault, k, byKind[k], reload))));
    } catch (e) {
      clear(card, h("h2", "Verification and Restore Tests"), errorAlert(e));
    }
    if (pending.size && card.isConnected) setTimeout(() => reload(), POLL_MS);
  };
  reload();
  return card;
}
