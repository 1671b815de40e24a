// Guide chapter 9: tasks, filtered by type, status, task ID, resource, vault and time; progress bars that
// move while tasks run (polled every second); the failure cause; cancelling a running backup.
import { api, parseTime } from "../api.js";
import { CONSISTENCY } from "../backup-actions.js";
import { listVaults } from "../data.js";
import {
  badge, clear, confirmDialog, errorAlert, fmtBytes, fmtDuration, h, icon, loading, localDayToUtc, progress, select,
  table, timeCell, toast, writeGuard, zoneName,
} from "../ui.js";

export const TASK_TYPES = {
  backup: "Backup", restore: "Restore", delete: "Delete backup", vault_delete: "Delete vault",
  remove_resource: "Dissociate resource", retention: "Retention (expired backups)", verify: "Verify backup",
  export: "Export", create_disk: "Create disk", create_fs: "Create file system", restore_files: "Restore files",
  copy: "Copy", replication: "Replication", sync: "Sync", gc: "Garbage collection",
  restore_test: "Restore test",
};
const STATUSES = [["", "All statuses"], ["running", "Running"], ["waiting", "Waiting"], ["success", "Successful"],
  ["failed", "Failed"], ["skipped", "Skipped"], ["timeout", "Timed out"]];
const ACTIVE = new Set(["running", "waiting"]);
const CANCELLABLE = new Set(["backup"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PAGE = 50;

function duration(t) {
  const s = parseTime(t.started_at);
  if (!s) return "--";
  const e = parseTime(t.ended_at) || new Date();
  return fmtDuration(e - s);
}

function resourceOf(t) {
  const r = (t.extra_info || {}).resource || {};
  return { id: r.id || "", name: r.name || "" };
}

function summary(t) {
  const x = t.extra_info || {};
  const items = [];
  if (x.backup) {
    const b = x.backup;
    items.push(["Backup", `${b.backup_name || ""} (${b.backup_id || ""})`]);
    if (b.logical_bytes !== undefined) items.push(["Backed-up data", fmtBytes(b.logical_bytes)]);
    if (b.added_bytes !== undefined) items.push(["Added to the vault", fmtBytes(b.added_bytes)]);
    if (b.incremental !== undefined) items.push(["Kind", b.incremental ? "Incremental" : "Full"]);
    if (b.consistency) items.push(["Consistency", CONSISTENCY[b.consistency] || String(b.consistency)]);
    if (b.warnings && b.warnings.length) items.push(["Warnings", b.warnings.map((w) => (typeof w === "string" ? w : `${w.path || ""}: ${w.message || JSON.stringify(w)}`)).join("; ")]);
  }
  if (x.verify) {
    for (const d of x.verify.disks || []) {
      const bad = (d.damaged || []).length, missing = (d.missing || []).length;
      items.push([`Verified ${d.disk || d.backup_id}`, `${d.chunks_checked ?? "?"} chunks (${fmtBytes(d.bytes_checked)}): ${d.ok ? "intact" : `${bad} damaged, ${missing} missing`}`]);
      for (const c of [...(d.damaged || []), ...(d.missing || [])].slice(0, 5)) {
        items.push(["", h("span.error-text", `${c.reason || "missing"}${c.offsets && c.offsets.length ? ` (at byte ${c.offsets.slice(0, 3).join(", ")})` : ""}`)]);
      }
    }
  }
  if (x.restore) items.push(["Restored from", `${x.restore.backup_name || ""} (${x.restore.backup_id || ""})`], ["Target", x.restore.target_resource_name || x.restore.target_resource_id || "--"]);
  return items;
}

export async function render(main, { query }, ctx) {
  document.title = "Tasks · OpenCBR";
  const type = select([["", "All task types"], ...Object.entries(TASK_TYPES)], query.get("operation_type") || "", { "aria-label": "Task type", name: "type" });
  const status = select(STATUSES, query.get("status") || "", { "aria-label": "Task status", name: "status" });
  const vaultSel = select([["", "All vaults"]], "", { "aria-label": "Vault", name: "vault" });
  const taskId = h("input", { type: "search", name: "task", placeholder: "Task ID", value: query.get("task_id") || "" });
  const resource = h("input", { type: "search", name: "resource", placeholder: "Resource name or ID", value: query.get("resource") || "" });
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const lbl = (t, c) => h("label", t, c);
  const form = h("form.filters", { role: "search" }, lbl("Type", type), lbl("Status", status), lbl("Vault", vaultSel),
    lbl("Task ID", taskId), lbl("Resource", resource), lbl("From", from), lbl("To", to),
    h("button.btn.primary", { type: "submit" }, "Search"),
    h("button.btn", { type: "button", onclick: () => { form.reset(); taskId.value = ""; resource.value = ""; offset = 0; reload(); } }, "Reset"));
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const live = h("span.hint", { "aria-live": "polite" });
  const holder = h("div", loading());
  clear(main,
    h("div.page-head", h("h1", "Tasks"), h("span.spacer"), live, refresh),
    h("p.hint", `Backups, restorations, deletions and other long operations of the last 30 days. Times in ${zoneName()}.`),
    form, holder);

  let tasks = [];
  let total = 0;
  let offset = 0;
  const expanded = new Set(query.get("task_id") ? [query.get("task_id")] : []);

  try {
    const vaults = await listVaults();
    vaults.forEach((v) => vaultSel.append(h("option", { value: v.id }, v.name)));
    vaultSel.value = query.get("vault_id") || "";
  } catch (e) {
    holder.before(errorAlert(e));
  }

  const params = () => {
    const p = { limit: PAGE, offset, operation_type: type.value, status: status.value, vault_id: vaultSel.value, task_id: taskId.value.trim() };
    const r = resource.value.trim();
    if (r) p[UUID.test(r) ? "resource_id" : "resource_name"] = r;
    if (from.value) p.start_time = localDayToUtc(from.value);
    if (to.value) p.end_time = localDayToUtc(to.value, true);
    return p;
  };

  const cancel = (t) => confirmDialog({
    title: "Cancel Task", okText: "Cancel Task", message: h("p", `Stop the ${TASK_TYPES[t.operation_type] || t.operation_type} task of ${resourceOf(t).name || t.vault_name}? The partial backup is discarded.`),
    onOk: async () => { await api.post(`/operation-logs/${t.id}/cancel`); toast("Cancellation requested.", "ok"); },
  }).then((ok) => { if (ok) reload(); });

  const detailRow = (t) => {
    const e = t.error_info || {};
    const pairs = [
      ["Task ID", h("span.mono", t.id)], ["Type", TASK_TYPES[t.operation_type] || t.operation_type],
      ["Created", timeCell(t.created_at)], ["Started", timeCell(t.started_at)], ["Ended", timeCell(t.ended_at)],
      ["Vault", t.vault_id ? h("a", { href: `#/vault/${t.vault_id}` }, t.vault_name || t.vault_id) : "--"],
      ["Resource", `${resourceOf(t).name} ${resourceOf(t).id}`.trim() || "--"],
      t.policy_id ? ["Policy", h("a", { href: `#/policies?id=${t.policy_id}` }, t.policy_id)] : null,
      t.checkpoint_id ? ["Checkpoint", h("span.mono", t.checkpoint_id)] : null,
      ...summary(t),
    ].filter(Boolean);
    return h("tr.detail-row", { dataset: { detailFor: t.id } }, h("td", { colSpan: 9 },
      e.message ? h("div.alert.error", h("div", h("b", "Failure cause: "), e.message, e.code ? h("span.code", e.code) : null)) : null,
      h("dl.kv", pairs.map(([k, v]) => [h("dt", k), h("dd", v)])),
      h("details", { style: { marginTop: "8px" } }, h("summary", "Raw task"), h("pre.json", JSON.stringify(t, null, 2)))));
  };

  const draw = () => {
    const rows = tasks.map((t) => ({ ...t, __detail: expanded.has(t.id) ? detailRow(t) : null }));
    clear(holder, table([
      {
        title: h("span.sr-only", "Details"), render: (t) => h("button.expander", {
          type: "button", "aria-expanded": String(expanded.has(t.id)), "aria-label": `Details of task ${t.id}`,
          onclick: () => { expanded.has(t.id) ? expanded.delete(t.id) : expanded.add(t.id); draw(); },
        }, icon("chevron")),
      },
      { title: "Task Type", render: (t) => h("div", TASK_TYPES[t.operation_type] || t.operation_type, h("span.sub", t.id)) },
      {
        title: "Status", render: (t) => h("div", badge(t.status),
          t.error_info && t.error_info.message ? h("div.error-text.failure-cause", { title: t.error_info.message }, t.error_info.message.length > 90 ? `${t.error_info.message.slice(0, 90)}…` : t.error_info.message) : null),
      },
      { title: "Progress", render: (t) => progress((t.extra_info && t.extra_info.common && t.extra_info.common.progress) ?? 0, t.status) },
      { title: "Resource", render: (t) => { const r = resourceOf(t); return r.id ? h("div", r.name || "--", h("span.sub", r.id)) : "--"; } },
      { title: "Vault", render: (t) => (t.vault_id ? h("a", { href: `#/vault/${t.vault_id}` }, t.vault_name || t.vault_id.slice(0, 8)) : "--") },
      { title: "Created", cls: "nowrap", render: (t) => timeCell(t.created_at) },
      { title: "Duration", cls: "nowrap", render: (t) => duration(t) },
      {
        title: "Operation", render: (t) => (CANCELLABLE.has(t.operation_type) && ACTIVE.has(t.status)
          ? writeGuard(h("button.link", { type: "button", onclick: () => cancel(t) }, "Cancel")) : h("span.hint", "--")),
      },
    ], rows, {
      caption: "Tasks", empty: h("div", h("b", "No tasks found"), "Tasks appear here when you back up, restore or delete."),
      rowAttrs: (t) => ({ dataset: { taskId: t.id, status: t.status, type: t.operation_type } }),
    }), h("div.pager", `${total ? offset + 1 : 0}–${Math.min(offset + PAGE, total)} of ${total}`,
      h("button.btn.small", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); reload(); } }, "‹ Previous"),
      h("button.btn.small", { type: "button", disabled: offset + PAGE >= total, onclick: () => { offset += PAGE; reload(); } }, "Next ›")));
  };

  let running = false;
  const load = async () => {
    try {
      const out = await api.get("/operation-logs", params());
      if (!ctx.alive) return false;
      tasks = out.operation_logs || [];
      total = out.count || 0;
      running = tasks.some((t) => ACTIVE.has(t.status));
      live.textContent = running ? `${tasks.filter((t) => ACTIVE.has(t.status)).length} running · refreshing every second` : "";
      draw();
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
    return running;
  };
  const reload = load;
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; reload(); });
  [type, status, vaultSel].forEach((s) => s.addEventListener("change", () => { offset = 0; reload(); }));
  refresh.addEventListener("click", reload);
  await load();
  // Every second while something runs (guide 9: progress bars), every 5 s otherwise to pick up new tasks.
  ctx.poll(async () => { await load(); return true; }, () => (running ? 1000 : 5000));
}
