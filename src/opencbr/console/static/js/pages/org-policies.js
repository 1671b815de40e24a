// Organization policies (CBR v3 API 6.9, docs/organization-policies.md): the operator's backup and
// replication policies deployed to every project of chosen accounts. Operator only: list, create, modify,
// delete, and where each one is deployed (per project, with the reason of a failed deployment).
// Execution times are entered in the browser's local time and sent as UTC RRULEs, as on the Policies page.
import { api, session } from "../api.js";
import { DAY_NAMES, browserOffset, describePatterns, describeRetention, localToUtcPatterns, utcPatternsToLocal } from "../schedule.js";
import {
  UserError, badge, clear, confirmDialog, errorAlert, field, h, icon, loading, openDialog, randomSuffix, select,
  switchControl, table, timeCell, toast, utcOffsetText, zoneName,
} from "../ui.js";

const NAME_RE = /^[A-Za-z0-9_\-\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{1,64}$/;
const isOperator = () => !!(session.get() || {}).is_operator;

/** The fields of the create / modify dialog, filled from an existing organization policy. */
function formOf(existing) {
  const od = existing ? existing.policy_operation_definition : {};
  const local = existing ? utcPatternsToLocal(existing.policy_trigger.properties.pattern) : null;
  const week = local && local.mode === "week" ? local : { days: [0, 1, 2, 3, 4, 5, 6], times: ["02:00"] };
  const f = {
    name: h("input", { type: "text", name: "org-name", maxlength: "64", value: existing ? existing.name : `org_policy_${randomSuffix()}` }),
    type: select([["backup", "Backup"], ["replication", "Replication"]], existing ? existing.operation_type : "backup",
      { name: "org-type", disabled: !!existing, "aria-label": "Operation type" }),
    policyName: h("input", { type: "text", name: "org-policy-name", maxlength: "64", value: existing ? existing.policy_name : `org_backup_${randomSuffix()}` }),
    enabled: switchControl(existing ? existing.policy_enabled : true, "Enabled", { name: "org-enabled" }),
    days: h("div.days", DAY_NAMES.map((d, i) => h("label", h("input", { type: "checkbox", name: "org-day", value: String(i), checked: week.days.includes(i) }), d))),
    time: h("input", { type: "time", name: "org-time", value: week.times[0] || "02:00" }),
    keep: h("input", { type: "number", name: "org-keep", min: "2", max: "99999", step: "1", value: (od.max_backups ?? -1) > 0 ? String(od.max_backups) : existing ? "" : "7", placeholder: "permanent" }),
    scope: h("input", { type: "text", name: "org-scope", value: existing ? existing.effective_scope : "all" }),
    description: h("input", { type: "text", name: "org-description", maxlength: "255", value: existing ? existing.description || "" : "" }),
    destRegion: h("input", { type: "text", name: "org-dest-region", value: od.destination_region || "" }),
    destProject: h("input", { type: "text", name: "org-dest-project", value: od.destination_project_id || "" }),
  };
  f.keep.style.width = "120px";
  f.unchanged = existing && !(local && local.mode === "week" && local.times.length === 1);  // keep its RRULEs
  return f;
}

/** The API body of the form (``policy_*`` is the policy every target project receives). */
function bodyOf(f, existing) {
  if (!NAME_RE.test(f.name.value.trim())) throw new UserError("The name must be 1 to 64 letters, digits, underscores (_) or hyphens (-).");
  if (!NAME_RE.test(f.policyName.value.trim())) throw new UserError("The policy name must be 1 to 64 letters, digits, underscores (_) or hyphens (-).");
  const def = { timezone: utcOffsetText() };
  const keep = f.keep.value.trim();
  if (keep === "") Object.assign(def, { max_backups: -1, retention_duration_days: -1 });
  else if (!/^\d+$/.test(keep) || +keep < 2 || +keep > 99999) throw new UserError("Keep 2 to 99999 backups, or leave it empty to keep them all.");
  else def.max_backups = Number(keep);
  const opType = existing ? existing.operation_type : f.type.value;
  if (opType === "replication") {
    def.destination_region = f.destRegion.value.trim();
    def.destination_project_id = f.destProject.value.trim();
  }
  const body = { name: f.name.value.trim(), policy_name: f.policyName.value.trim(), description: f.description.value,
    policy_enabled: f.enabled.querySelector("input").checked, policy_operation_definition: def,
    effective_scope: f.scope.value.trim() || "all" };
  const days = [...f.days.querySelectorAll("input:checked")].map((i) => Number(i.value));
  if (!f.unchanged || f.touched) {
    if (!days.length) throw new UserError("Select at least one day of the week.");
    if (!f.time.value) throw new UserError("Choose an execution time.");
    body.policy_trigger = { properties: { pattern: localToUtcPatterns({ times: [f.time.value], weekdays: days, offset: browserOffset() }) } };
  }
  if (!existing) body.operation_type = opType;
  return body;
}

function policyDialog(existing = null) {
  const f = formOf(existing);
  const replicationRows = h("div", field("Destination region", f.destRegion), field("Destination project ID", f.destProject));
  const body = h("div.form",
    field("Name", f.name, "The organization policy's own name."),
    field("Operation type", f.type),
    field("Policy name", f.policyName, "The name of the policy each target project receives."),
    field("Status", f.enabled),
    field("Execution time", h("div", f.days, h("div.inline", { style: { marginTop: "8px" } }, f.time)),
      f.unchanged ? "Its execution times are kept unless you change them here." : `Local time of this browser (${zoneName()}, ${utcOffsetText()}).`),
    field("Backups to keep", f.keep, "The most recent automatic backups per resource; empty: keep them all."),
    field("Accounts", f.scope, "all, or account names or ids separated by commas: every project of those accounts receives the policy."),
    field("Description", f.description),
    replicationRows);
  const sync = () => { replicationRows.hidden = (existing ? existing.operation_type : f.type.value) !== "replication"; };
  f.days.addEventListener("change", () => { f.touched = true; });
  f.time.addEventListener("change", () => { f.touched = true; });
  f.type.addEventListener("change", sync);
  sync();
  return openDialog({
    title: existing ? `Modify Organization Policy — ${existing.name}` : "Create Organization Policy",
    okText: "OK", wide: true, body,
    onOk: async () => {
      const policy = bodyOf(f, existing);
      const out = existing ? await api.put(`/organization-policies/${existing.id}`, { policy })
        : await api.post("/organization-policies", { policy });
      toast(`Organization policy ${out.policy.name} ${existing ? "saved" : "created"}: ${out.policy.status === "success" ? "deployed to every target project" : "some projects could not take it (see Projects)"}.`,
        out.policy.status === "success" ? "ok" : "error");
      return out.policy;
    },
  });
}

/** Where the policy is deployed: one row per project. */
function projectsDialog(org) {
  const body = h("div", loading());
  api.get(`/organization-policies/${org.id}/policy-detail`).then((out) => clear(body, table([
    { title: "Project", render: (d) => h("span.mono", d.project_id) },
    { title: "Account", render: (d) => h("span.mono", d.domain_id) },
    { title: "Status", render: (d) => badge(d.status) },
    { title: "Deployed policy / reason", render: (d) => (d.status === "success" ? h("span.mono", d.policy_id) : h("span", d.fail_reason || "")) },
    { title: "Updated", cls: "nowrap", render: (d) => timeCell(d.updated_at) },
  ], out.policies, { caption: "Deployments", empty: "No project in its scope yet.", rowAttrs: (d) => ({ dataset: { deployProject: d.project_id } }) })))
    .catch((e) => clear(body, errorAlert(e)));
  return openDialog({ title: `Projects — ${org.name}`, body, noOk: true, wide: true });
}

export async function render(main, _params, ctx) {
  document.title = "Organization Policies · OpenCBR";
  const createBtn = h("button.btn.primary", { type: "button" }, icon("plus"), "Create Organization Policy");
  const holder = h("div", loading());
  clear(main, h("div.page-head", h("h1", "Organization Policies"), h("span.spacer"), isOperator() ? createBtn : null), holder);
  if (!isOperator()) {
    clear(holder, h("div.card.empty", h("b", "Operator only"),
      "Organization policies are managed by the operator of this installation; the policies deployed to your project are on the Policies page."));
    return;
  }
  const load = async () => {
    try {
      const out = await api.get("/organization-policies");
      if (!ctx.alive) return;
      clear(holder, table([
        { title: "Name/ID", render: (o) => h("div", h("b", o.name), h("span.sub", o.id)) },
        { title: "Type", render: (o) => o.operation_type },
        { title: "Policy", render: (o) => h("div", o.policy_name, " ", badge(o.policy_enabled ? "enabled" : "disabled")) },
        { title: "Execution Time", render: (o) => describePatterns(o.policy_trigger.properties.pattern) },
        { title: "Retention Rule", render: (o) => describeRetention(o.policy_operation_definition) },
        { title: "Accounts", render: (o) => (o.effective_scope === "all" ? "All accounts" : h("span.mono", o.effective_scope)) },
        { title: "Deployment", render: (o) => badge(o.status) },
        { title: "Created", cls: "nowrap", render: (o) => timeCell(o.created_at) },
        {
          title: "Operation", render: (o) => h("div.ops",
            h("button.link", { type: "button", onclick: () => projectsDialog(o) }, "Projects"),
            h("button.link", { type: "button", onclick: async () => { if (await policyDialog(o)) load(); } }, "Modify"),
            h("button.link", {
              type: "button", onclick: () => confirmDialog({
                title: "Delete Organization Policy",
                message: [h("p", "Delete organization policy ", h("b", o.name), "?"),
                  h("p.hint", "The policy it deployed is deleted from every project and removed from their vaults. No backup is deleted.")],
                onOk: async () => { await api.del(`/organization-policies/${o.id}`); toast(`Organization policy ${o.name} deleted.`, "ok"); },
              }).then((ok) => { if (ok) load(); }),
            }, "Delete")),
        },
      ], out.policies, {
        caption: "Organization policies",
        empty: h("div", h("b", "No organization policies"), "An organization policy is a backup or replication policy deployed to every project of the accounts you choose."),
        rowAttrs: (o) => ({ dataset: { orgPolicy: o.name } }),
      }), h("p.footer-note", `Execution times are shown in your time zone (${zoneName()}); the API stores them in UTC.`));
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
  };
  createBtn.addEventListener("click", async () => { if (await policyDialog()) load(); });
  await load();
}
