// Guide chapter 11: the audit trail of key operations (admins).
import { api } from "../api.js";
import { clear, errorAlert, h, icon, isAdmin, loading, localDayToUtc, select, table, timeCell, badge, zoneName } from "../ui.js";

const TRACES = ["createVault", "updateVault", "deleteVault", "addResources", "removeResources", "createPolicy", "updatePolicy",
  "deletePolicy", "associatePolicy", "dissociatePolicy", "createVaultBackup", "createBackup", "deleteBackup", "restoreBackup",
  "createAccount", "createProject", "createUser", "createCredential", "deleteCredential", "updateTracker"];
const PAGE = 50;

export async function render(main, { query }, ctx) {
  document.title = "Audit · OpenCBR";
  if (!isAdmin()) {
    clear(main, h("div.page-head", h("h1", "Audit")),
      h("div.alert.info", "The audit trail is for administrators: your role cannot read it."));
    return;
  }
  const trace = select([["", "All operations"], ...TRACES.map((t) => [t, t])], query.get("trace") || "", { "aria-label": "Operation", name: "trace" });
  const outcome = select([["", "All outcomes"], ["success", "Success"], ["failure", "Failure"]], "", { "aria-label": "Outcome", name: "outcome" });
  const user = h("input", { type: "search", name: "user", placeholder: "User name" });
  const resource = h("input", { type: "search", name: "resource", placeholder: "Resource ID" });
  const from = h("input", { type: "date", name: "from" });
  const to = h("input", { type: "date", name: "to" });
  const lbl = (t, c) => h("label", t, c);
  const form = h("form.filters", { role: "search" }, lbl("Operation", trace), lbl("Outcome", outcome), lbl("User", user),
    lbl("Resource", resource), lbl("From", from), lbl("To", to), h("button.btn.primary", { type: "submit" }, "Search"));
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const holder = h("div", loading());
  clear(main, h("div.page-head", h("h1", "Audit"), h("span.spacer"), refresh),
    h("p.hint", `Who did what, when, from where, and how it ended. Times in ${zoneName()}.`), form, holder);
  let offset = 0;
  const open = new Set();
  let events = [];
  let total = 0;

  const draw = () => {
    const rows = events.map((e) => ({
      ...e, __detail: open.has(e.id) ? h("tr.detail-row", h("td", { colSpan: 8 },
        h("dl.kv", h("dt", "Request ID"), h("dd.mono", e.request_id || "--"), h("dt", "Access key"), h("dd.mono", e.access_key || "--"),
          h("dt", "Project"), h("dd.mono", e.project_id || "--"), e.error_msg ? [h("dt", "Error"), h("dd", `${e.error_code} ${e.error_msg}`)] : null),
        h("pre.json", JSON.stringify(e.request || {}, null, 2)))) : null,
    }));
    clear(holder, table([
      { title: h("span.sr-only", "Details"), render: (e) => h("button.expander", { type: "button", "aria-expanded": String(open.has(e.id)), "aria-label": "Details", onclick: () => { open.has(e.id) ? open.delete(e.id) : open.add(e.id); draw(); } }, icon("chevron")) },
      { title: "Time", cls: "nowrap", render: (e) => timeCell(e.time) },
      { title: "Operation", render: (e) => h("b", e.trace_name) },
      { title: "Resource", render: (e) => h("div", e.resource_name || "--", h("span.sub", `${e.resource_type || ""} ${e.resource_id || ""}`)) },
      { title: "User", render: (e) => e.user_name || "--" },
      { title: "Source IP", render: (e) => h("span.mono", e.source_ip || "--") },
      { title: "Outcome", render: (e) => badge(e.outcome, { tone: e.outcome === "success" ? "green" : "red", label: `${e.outcome === "success" ? "Success" : "Failure"} · ${e.http_status}` }) },
      { title: "Error", render: (e) => (e.error_msg ? h("span.error-text", e.error_msg) : "") },
    ], rows, { caption: "Audit events", empty: "No audit events match." }),
    h("div.pager", `${total ? offset + 1 : 0}–${Math.min(offset + PAGE, total)} of ${total}`,
      h("button.btn.small", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "‹ Previous"),
      h("button.btn.small", { type: "button", disabled: offset + PAGE >= total, onclick: () => { offset += PAGE; load(); } }, "Next ›")));
  };
  const load = async () => {
    try {
      const out = await api.get("/iam/audit-events", {
        limit: PAGE, offset, trace_name: trace.value, outcome: outcome.value, user_name: user.value.trim(),
        resource_id: resource.value.trim(), start_time: localDayToUtc(from.value), end_time: localDayToUtc(to.value, true),
      });
      if (!ctx.alive) return;
      events = out.events || [];
      total = out.count || 0;
      draw();
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; load(); });
  [trace, outcome].forEach((s) => s.addEventListener("change", () => { offset = 0; load(); }));
  refresh.addEventListener("click", load);
  await load();
}
