// Guide chapter 5: backup and replication policies — list, create, modify, delete, and the next
// execution times. Execution times are entered in the browser's local time and sent as UTC RRULEs.
import { api } from "../api.js";
import { listPolicies, listVaults } from "../data.js";
import {
  DAY_NAMES, browserOffset, describePatterns, describeRetention, localToUtcPatterns, utcPatternsToLocal,
} from "../schedule.js";
import {
  UserError, badge, clear, confirmDialog, errorAlert, field, fmtTime, h, icon, loading, openDialog, randomSuffix, select,
  switchControl, table, timeCell, toast, utcOffsetText, writeGuard, zoneName,
} from "../ui.js";

const MONTHS = [["1", "1 month"], ["3", "3 months"], ["6", "6 months"], ["12", "1 year"], ["days", "Custom (days)"]];
const NAME_RE = /^[A-Za-z0-9_\-\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{1,64}$/;

function seg(name, options, value) {
  return h("div.seg", { role: "radiogroup" }, options.map(([v, t]) =>
    h("label", h("input", { type: "radio", name, value: v, checked: v === value }), t)));
}

const numInput = (name, value, min, max, attrs = {}) =>
  h("input", { type: "number", name, min: String(min), max: String(max), step: "1", value: value === undefined || value === null ? "" : String(value), ...attrs });

/** The create / edit dialog. */
export async function policyDialog(opType = "backup", existing = null) {
  const od = existing ? existing.operation_definition : {};
  const patterns = existing ? existing.trigger.properties.pattern : [];
  const local = existing ? utcPatternsToLocal(patterns) : { mode: "week", days: [0, 1, 2, 3, 4, 5, 6], times: ["02:00"] };
  const wholeHours = local && local.times.every((t) => t.endsWith(":00"));
  const cycleMode = !local || !wholeHours ? "rrule" : local.mode;

  const name = h("input", { type: "text", name: "policy-name", maxlength: "64", value: existing ? existing.name : `${opType}_policy_${randomSuffix()}` });
  const enabled = switchControl(existing ? existing.enabled : true, "Enabled", { name: "enabled" });
  const cycle = seg("cycle", [["week", "Week-based"], ["days", "Custom cycle"], ["rrule", "RRULE (UTC)"]], cycleMode);
  const days = h("div.days", DAY_NAMES.map((d, i) => h("label", h("input", { type: "checkbox", name: "day", value: String(i), checked: !!(local && local.mode === "week" && local.days.includes(i)) || (!existing && true) }), d)));
  const every = numInput("every", local && local.mode === "days" ? local.every : 1, 1, 30);
  const hours = h("div.hours", Array.from({ length: 24 }, (_, hr) => {
    const t = `${String(hr).padStart(2, "0")}:00`;
    return h("label", h("input", { type: "checkbox", name: "hour", value: t, checked: !!(local && local.times.includes(t)) }), t);
  }));
  const rrules = h("textarea", { name: "rrule", rows: "3", spellcheck: "false", placeholder: "FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=2;BYMINUTE=00" }, patterns.join("\n"));
  const utcNote = h("span.hint.utc-preview");

  const retMode = (od.max_backups ?? -1) > 0 ? "count" : od.retention_duration_months || (od.retention_duration_days ?? -1) > 0 ? "period" : existing ? "permanent" : "count";
  const retention = seg("retention", [["period", "Time period"], ["count", "Backup quantity"], ["permanent", "Permanent"]], retMode);
  const monthSel = select(MONTHS, od.retention_duration_months ? String(od.retention_duration_months) : (od.retention_duration_days ?? -1) > 0 ? "days" : "1", { name: "period", "aria-label": "Retention period" });
  const daysInput = numInput("retention-days", (od.retention_duration_days ?? -1) > 0 && !od.retention_duration_months ? od.retention_duration_days : 30, 2, 99999, { "aria-label": "Retention days" });
  const count = numInput("max-backups", (od.max_backups ?? -1) > 0 ? od.max_backups : 7, 2, 99999, { "aria-label": "Backups to keep" });
  const lt = {
    day_backups: numInput("day_backups", od.day_backups || "", 0, 100, { placeholder: "0", "aria-label": "Daily backups" }),
    week_backups: numInput("week_backups", od.week_backups || "", 0, 100, { placeholder: "0", "aria-label": "Weekly backups" }),
    month_backups: numInput("month_backups", od.month_backups || "", 0, 100, { placeholder: "0", "aria-label": "Monthly backups" }),
    year_backups: numInput("year_backups", od.year_backups || "", 0, 100, { placeholder: "0", "aria-label": "Yearly backups" }),
  };
  const full = numInput("full-interval", od.full_backup_interval ?? "", -1, 100, { placeholder: "-1 (never)" });
  const destRegion = h("input", { type: "text", name: "dest-region", value: od.destination_region || "" });
  const destProject = h("input", { type: "text", name: "dest-project", value: od.destination_project_id || "" });

  const periodRow = h("div.inline.ret-period", monthSel, daysInput, h("span.hint", "days"));
  const countRow = h("div.ret-count", h("div.inline", count, h("span.hint", "most recent automatic backups per resource")),
    h("details", { open: !!(od.day_backups || od.week_backups || od.month_backups || od.year_backups), style: { marginTop: "8px" } },
      h("summary", "Long-term retention"),
      h("div.inline", { style: { marginTop: "6px" } }, "Also keep the newest backup of each of the last",
        lt.day_backups, "days,", lt.week_backups, "weeks,", lt.month_backups, "months,", lt.year_backups, "years")));
  Object.values(lt).forEach((i) => { i.style.width = "70px"; });
  count.style.width = "120px";
  daysInput.style.width = "110px";
  every.style.width = "90px";

  const weekRow = h("div.cyc-week", days);
  const daysRow = h("div.inline.cyc-days", "Every", every, "days");
  const body = h("div.form",
    field("Name", name, "1 to 64 letters, digits, underscores (_) or hyphens (-)."),
    field("Status", enabled, "Only an enabled policy applied to a vault backs it up and deletes expired backups."),
    field(opType === "backup" ? "Backup cycle" : "Replication frequency", h("div", cycle, h("div", { style: { marginTop: "8px" } }, weekRow, daysRow))),
    field("Execution time", h("div", hours, rrules), h("span", `Local time of this browser (${zoneName()}, ${utcOffsetText()}). `, utcNote)),
    field("Retention rule", h("div", retention, h("div", { style: { marginTop: "8px" } }, periodRow, countRow)),
      "Retention applies to automatic backups only; manual backups are kept until you delete them."),
    opType === "backup" ? field("Full backup", h("div.inline", "Every", full, "incremental backups"), "Optional: force a full backup after N incremental ones (-1 or empty: never).") : null,
    opType === "replication" ? field("Destination region", destRegion) : null,
    opType === "replication" ? field("Destination project ID", destProject) : null);

  const read = () => {
    const mode = body.querySelector("input[name=cycle]:checked").value;
    if (mode === "rrule") {
      const list = rrules.value.split(/\n|;\s*(?=FREQ=)/).map((s) => s.trim()).filter(Boolean);
      if (!list.length) throw new UserError("Enter at least one RRULE pattern, one per line.");
      return list;
    }
    const times = [...hours.querySelectorAll("input:checked")].map((i) => i.value);
    if (!times.length) throw new UserError("Select at least one execution time.");
    if (mode === "week") {
      const wd = [...days.querySelectorAll("input:checked")].map((i) => Number(i.value));
      if (!wd.length) throw new UserError("Select at least one day of the week.");
      return localToUtcPatterns({ times, weekdays: wd, offset: browserOffset() });
    }
    const n = Number(every.value);
    if (!Number.isInteger(n) || n < 1 || n > 30) throw new UserError("The custom cycle runs every 1 to 30 days.");
    return localToUtcPatterns({ times, every: n, offset: browserOffset() });
  };

  const sync = () => {
    const mode = body.querySelector("input[name=cycle]:checked").value;
    weekRow.hidden = mode !== "week";
    daysRow.hidden = mode !== "days";
    hours.hidden = mode === "rrule";
    rrules.hidden = mode !== "rrule";
    const rm = body.querySelector("input[name=retention]:checked").value;
    periodRow.hidden = rm !== "period";
    countRow.hidden = rm !== "count";
    daysInput.hidden = monthSel.value !== "days";
    daysInput.nextSibling.hidden = monthSel.value !== "days";
    try {
      const p = read();
      utcNote.textContent = mode === "rrule" ? `Shown as: ${describePatterns(p)}.` : `Sent to the API in UTC: ${p.join(" | ")}`;
    } catch (e) {
      utcNote.textContent = "";
    }
  };
  body.addEventListener("change", sync);
  body.addEventListener("input", sync);
  sync();

  return openDialog({
    title: existing ? `Modify Policy — ${existing.name}` : `Create ${opType === "backup" ? "Backup" : "Replication"} Policy`,
    okText: "OK", wide: true, body,
    onOk: async () => {
      if (!NAME_RE.test(name.value.trim())) throw new UserError("The policy name must be 1 to 64 letters, digits, underscores (_) or hyphens (-).");
      const pattern = read();
      const def = { timezone: utcOffsetText() };
      const rm = body.querySelector("input[name=retention]:checked").value;
      if (rm === "permanent") Object.assign(def, { max_backups: -1, retention_duration_days: -1 });
      else if (rm === "period") {
        if (monthSel.value === "days") {
          const d = Number(daysInput.value);
          if (!Number.isInteger(d) || d < 2 || d > 99999) throw new UserError("Keep backups for 2 to 99999 days.");
          def.retention_duration_days = d;
        } else def.retention_duration_months = Number(monthSel.value);
      } else {
        const c = Number(count.value);
        if (!Number.isInteger(c) || c < 2 || c > 99999) throw new UserError("Keep 2 to 99999 backups.");
        def.max_backups = c;
        for (const [k, input] of Object.entries(lt)) def[k] = input.value === "" ? 0 : Number(input.value);
      }
      if (rm !== "count") for (const k of Object.keys(lt)) def[k] = 0;
      if (opType === "backup" && full.value !== "") def.full_backup_interval = Number(full.value);
      if (opType === "replication") {
        def.destination_region = destRegion.value.trim();
        def.destination_project_id = destProject.value.trim();
      }
      const policy = { name: name.value.trim(), enabled: enabled.querySelector("input").checked, trigger: { properties: { pattern } }, operation_definition: def };
      if (existing) {
        const out = await api.put(`/policies/${existing.id}`, { policy });
        toast(`Policy ${out.policy.name} saved.`, "ok");
        return out.policy;
      }
      const out = await api.post("/policies", { policy: { ...policy, operation_type: opType } });
      toast(`Policy ${out.policy.name} created. Apply it to a vault from the vault list (More › Apply Backup Policy).`, "ok");
      return out.policy;
    },
  });
}

function previewDialog(p) {
  const body = h("div", loading());
  api.get(`/policies/${p.id}/preview`, { next: 10 }).then((out) => {
    clear(body,
      h("p", describePatterns(p.trigger.properties.pattern), p.enabled ? "" : h("b", " — the policy is disabled: nothing runs until it is enabled.")),
      table([
        { title: "#", cls: "num", render: (r) => String(r.i) },
        { title: `Your time (${zoneName()})`, render: (r) => h("span", fmtTime(r.scheduled_at, { seconds: false }), " ", h("span.hint", new Date(r.scheduled_at).toLocaleDateString(undefined, { weekday: "short" }))) },
        { title: "UTC", render: (r) => h("span.mono", r.scheduled_at) },
      ], (out.executions || []).map((r, i) => ({ ...r, i: i + 1 })), { empty: "No upcoming execution." }));
  }).catch((e) => clear(body, errorAlert(e)));
  return openDialog({ title: `Next executions — ${p.name}`, body, noOk: true });
}

export async function render(main, { query }, ctx) {
  document.title = "Policies · OpenCBR";
  let opType = query.get("type") === "replication" ? "replication" : "backup";
  const createBtn = writeGuard(h("button.btn.primary", { type: "button" }, icon("plus"), "Create Policy"));
  const tabs = h("div.tabs", { role: "tablist" });
  const holder = h("div", loading());
  clear(main, h("div.page-head", h("h1", "Policies"), h("span.spacer"), createBtn), tabs, holder);
  let policies = [];
  let vaultNames = {};

  const drawTabs = () => clear(tabs,
    h("button", { type: "button", role: "tab", "aria-selected": String(opType === "backup"), onclick: () => { opType = "backup"; drawTabs(); draw(); } }, "Backup Policies"),
    h("button", { type: "button", role: "tab", "aria-selected": String(opType === "replication"), onclick: () => { opType = "replication"; drawTabs(); draw(); } }, "Replication Policies"));

  const draw = () => {
    const rows = policies.filter((p) => p.operation_type === opType);
    const focus = query.get("id");
    clear(holder, table([
      { title: "Name/ID", render: (p) => h("div", h("b", p.name), h("span.sub", p.id)) },
      { title: "Status", render: (p) => badge(p.enabled ? "enabled" : "disabled") },
      { title: "Execution Time", render: (p) => h("span", { title: p.trigger.properties.pattern.join("\n") + "\n(UTC)" }, describePatterns(p.trigger.properties.pattern)) },
      { title: "Retention Rule", render: (p) => describeRetention(p.operation_definition) },
      opType === "replication" ? { title: "Destination", render: (p) => `${p.operation_definition.destination_region || "--"} / ${(p.operation_definition.destination_project_id || "").slice(0, 8)}` } : null,
      { title: "Vaults", render: (p) => (p.associated_vaults || []).length ? h("div", p.associated_vaults.map((v) => h("div", h("a", { href: `#/vault/${v.vault_id}` }, vaultNames[v.vault_id] || v.vault_id.slice(0, 8))))) : h("span.hint", "--") },
      { title: "Created", cls: "nowrap", render: (p) => timeCell(p.created_at) },
      {
        title: "Operation", render: (p) => h("div.ops",
          writeGuard(h("button.link", { type: "button", onclick: async () => { if (await policyDialog(p.operation_type, p)) load(); } }, "Modify")),
          h("button.link", { type: "button", onclick: () => previewDialog(p) }, "Next Runs"),
          writeGuard(h("button.link", {
            type: "button", onclick: () => confirmDialog({
              title: "Delete Policy",
              message: [h("p", "Delete policy ", h("b", p.name), "?"),
                h("p.hint", "It is removed from its vaults. Backups made by the policy are kept; delete them manually if you no longer need them.")],
              onOk: async () => { await api.del(`/policies/${p.id}`); toast(`Policy ${p.name} deleted.`, "ok"); },
            }).then((ok) => { if (ok) load(); }),
          }, "Delete"))),
      },
    ].filter(Boolean), rows, {
      caption: "Policies",
      empty: h("div", h("b", `No ${opType} policies`), opType === "backup" ? "A backup policy backs up the resources of its vaults at set times and deletes expired backups." : "A replication policy copies backups to another region at set times."),
      rowAttrs: (p) => ({ dataset: { policyId: p.id, policyName: p.name }, class: p.id === focus ? "focus" : undefined }),
    }), h("p.footer-note", `Execution times are shown in your time zone (${zoneName()}); the API stores them in UTC.`));
  };

  const load = async () => {
    try {
      const [p, v] = await Promise.all([listPolicies(), listVaults()]);
      if (!ctx.alive) return;
      policies = p;
      vaultNames = Object.fromEntries(v.map((x) => [x.id, x.name]));
      draw();
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
  };
  createBtn.addEventListener("click", async () => { if (await policyDialog(opType)) load(); });
  drawTabs();
  await load();
  if (query.get("create") && !createBtn.disabled) createBtn.click();
  const edit = query.get("edit") && policies.find((p) => p.id === query.get("edit"));
  if (edit) {
    if (edit.operation_type !== opType) { opType = edit.operation_type; drawTabs(); draw(); }
    if (await policyDialog(edit.operation_type, edit)) load();
  }
}
