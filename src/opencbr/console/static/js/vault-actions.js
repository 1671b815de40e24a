// Vault operations (guide chapters 2, 3 and 5.6/5.7): create, perform backup, associate and dissociate
// resources, expand capacity, apply and remove a policy, delete.
import { api } from "./api.js";
import { listPolicies, listProtectables, policyOf, taskLink } from "./data.js";
import { describePatterns, describeRetention } from "./schedule.js";
import {
  GB, UserError, badge, clear, confirmDialog, field, fmtBytes, h, openDialog, randomSuffix, select, switchControl,
  table, toast,
} from "./ui.js";

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

function resourcePicker(items, { kind, preselect = [], disabledReason }) {
  const boxes = new Map();
  const summary = h("span.hint");
  const update = () => {
    const chosen = items.filter((it) => boxes.get(it.id)?.checked);
    const size = chosen.reduce((s, it) => s + (Number(it.size) || 0), 0);
    summary.textContent = `${chosen.length} selected${chosen.length ? ` · ${size} GB in total` : ""}`;
    picker.dispatchEvent(new Event("change"));
  };
  const rows = items.map((it) => {
    const reason = disabledReason ? disabledReason(it) : "";
    const cb = h("input", {
      type: "checkbox", value: it.id, checked: !reason && preselect.includes(it.id), disabled: !!reason,
      "aria-label": `Select ${it.name}`, onchange: update,
    });
    boxes.set(it.id, cb);
    return { ...it, cb, reason };
  });
  const t = table([
    { title: "", render: (r) => r.cb },
    { title: "Name/ID", render: (r) => h("div", r.name, h("span.sub", r.id)) },
    { title: "Status", render: (r) => badge(r.status) },
    { title: "Size", cls: "num", render: (r) => `${r.size ?? "--"} GB` },
    { title: "", render: (r) => (r.reason ? h("span.hint", r.reason) : "") },
  ], rows, { empty: `No ${kind.nouns} are registered. Register them on the Resources page.` });
  const picker = h("div.field", h("div.pick-list", t), summary);
  picker.selected = () => items.filter((it) => boxes.get(it.id)?.checked);
  update();
  return picker;
}

function protectableReason(p) {
  if (p.protectable && p.protectable.result) return "";
  const v = p.protectable && p.protectable.vault;
  if (v) return `in vault ${v.name}`;
  return (p.protectable && (p.protectable.reason || p.protectable.message)) || "cannot be associated";
}

// ------------------------------------------------------------------------------------------------ create
export async function createVault(kind) {
  const [protectables, policies] = await Promise.all([listProtectables(kind.rtype), listPolicies({ operation_type: "backup" })]);
  const protect = h("div.seg", { role: "radiogroup", "aria-label": "Protection type" },
    h("label", h("input", { type: "radio", name: "protect", value: "backup", checked: true }), "Backup"),
    kind.objectType !== "disk" ? h("label", h("input", { type: "radio", name: "protect", value: "replication" }), "Replication") : null);
  const appConsistent = switchControl(false, "Application-consistent backup (database servers)");
  const picker = resourcePicker(protectables, { kind, disabledReason: protectableReason });
  const capacity = h("input", { type: "number", name: "capacity", min: "1", step: "1", value: "100", inputmode: "numeric" });
  const autoSeg = h("div.seg", { role: "radiogroup", "aria-label": "Auto backup" },
    h("label", h("input", { type: "radio", name: "auto", value: "skip", checked: true }), "Skip"),
    h("label", h("input", { type: "radio", name: "auto", value: "configure", disabled: !policies.length }), "Configure"));
  const policySel = select(policies.map((p) => [p.id, `${p.name} — ${describePatterns(p.trigger.properties.pattern)}`]), "",
    { name: "policy", hidden: true, "aria-label": "Backup policy" });
  const name = h("input", { type: "text", name: "name", value: `vault_${randomSuffix()}`, maxlength: "64" });
  const encrypt = switchControl(true, "Encrypt backup data (AES-256-GCM)");
  const description = h("input", { type: "text", name: "description", maxlength: "255", placeholder: "optional" });
  const resRow = field(`${kind.Nouns} to associate`, picker,
    `Optional. ${kind.Nouns} already in a vault, or not in a state that can be backed up, cannot be selected.`);

  const body = h("div.form",
    kind.objectType !== "disk" ? field("Protection type", protect,
      "A backup vault stores backups; a replication vault stores replicas from another region.") : null,
    kind.objectType === "server" ? field("Specifications", appConsistent) : null,
    resRow,
    field("Capacity (GB)", capacity, "10 to 10,485,760 GB. Plan at least the size of what you back up."),
    field("Auto backup", h("div.inline", autoSeg, policySel),
      policies.length ? "Configure applies a backup policy to the new vault." : "No backup policy exists yet; create one on the Policies page."),
    field("Name", name, "1 to 64 letters, digits, underscores (_) or hyphens (-). A default name is suggested."),
    field("Encryption", encrypt),
    field("Description", description));

  const sync = () => {
    const repl = body.querySelector("input[name=protect]:checked")?.value === "replication";
    resRow.forEach((el) => { el.hidden = repl; });
    policySel.hidden = body.querySelector("input[name=auto]:checked").value !== "configure";
    const sel = picker.selected().reduce((s, it) => s + (Number(it.size) || 0), 0);
    if (sel > Number(capacity.value || 0) && !capacity.dataset.touched) capacity.value = String(Math.max(10, sel));
  };
  capacity.addEventListener("input", () => { capacity.dataset.touched = "1"; });
  body.addEventListener("change", sync);
  sync();

  return openDialog({
    title: `Create ${kind.vaultNoun}`, okText: "Create", wide: true, body,
    onOk: async () => {
      const size = Number(capacity.value);
      if (!capacity.value.trim() || !Number.isInteger(size)) throw new UserError("Enter the vault capacity in whole GB.");
      if (!NAME_RE.test(name.value.trim())) throw new UserError("The name must be 1 to 64 letters, digits, underscores (_) or hyphens (-).");
      const protectType = body.querySelector("input[name=protect]:checked")?.value || "backup";
      const billing = { object_type: kind.objectType, size, protect_type: protectType };
      if (kind.objectType === "server") billing.consistent_level = appConsistent.querySelector("input").checked ? "app_consistent" : "crash_consistent";
      const spec = {
        name: name.value.trim(), billing, encrypted: encrypt.querySelector("input").checked,
        resources: protectType === "replication" ? [] : picker.selected().map((r) => ({ id: r.id, type: kind.rtype })),
      };
      if (description.value.trim()) spec.description = description.value.trim();
      if (body.querySelector("input[name=auto]:checked").value === "configure" && policySel.value) spec.backup_policy_id = policySel.value;
      const out = await api.post("/vaults", { vault: spec });
      toast(`Vault ${out.vault.name} created.`, "ok", { link: { href: `#/vault/${out.vault.id}`, text: "Open" } });
      return out.vault;
    },
  });
}

// ------------------------------------------------------------------------------------------------ backup now
export async function performBackup(vault, kind, only = null) {
  const items = (vault.resources || []).map((r) => ({ ...r, status: r.protect_status }));
  if (!items.length) {
    toast(`Vault ${vault.name} has no associated ${kind.nouns}. Associate one first.`, "error");
    return null;
  }
  const preselect = only ? [only] : items.length === 1 ? [items[0].id] : [];
  const picker = resourcePicker(items, { kind, preselect });
  const name = h("input", { type: "text", name: "backup-name", value: `manualbk_${randomSuffix()}`, maxlength: "64" });
  const description = h("input", { type: "text", name: "backup-description", maxlength: "255", placeholder: "optional" });
  const full = switchControl(false, "Full backup (re-read and store every block)");
  const body = h("div.form",
    field(kind.Nouns, picker),
    field("Name", name, `1 to 64 letters, digits, _ or -. With several ${kind.nouns}, suffixes like -0001 are added.`),
    field("Description", description, "Up to 255 characters."),
    kind.objectType !== "turbo" ? field("Full backup", full, "Off: only what changed since the last backup is stored (incremental).") : null);
  return openDialog({
    title: `Perform Backup — ${vault.name}`, okText: "OK", wide: true, body,
    onOk: async () => {
      const chosen = picker.selected();
      if (!chosen.length) throw new UserError(`Select at least one ${kind.noun} to back up.`);
      const params = { resources: chosen.map((r) => r.id), name: name.value.trim() };
      if (description.value.trim()) params.description = description.value.trim();
      if (full.querySelector("input").checked) params.incremental = false;
      const out = await api.post("/checkpoints", { checkpoint: { vault_id: vault.id, parameters: params } });
      const skipped = out.checkpoint.vault.skipped_resources || [];
      toast(`Backup of ${chosen.length} ${chosen.length === 1 ? kind.noun : kind.nouns} started.` +
        (skipped.length ? ` Skipped: ${skipped.map((s) => `${s.name || s.id} (${s.reason || s.message || s.code})`).join(", ")}` : ""),
      "ok", { link: { href: `#/tasks?vault_id=${vault.id}`, text: "View tasks" } });
      return out.checkpoint;
    },
  });
}

// ------------------------------------------------------------------------------------------------ resources
export async function associateResources(vault, kind) {
  const protectables = await listProtectables(kind.rtype);
  const picker = resourcePicker(protectables, { kind, disabledReason: protectableReason });
  const used = (vault.resources || []).reduce((s, r) => s + (r.size || 0), 0);
  const body = h("div",
    h("p.hint", `Vault capacity ${vault.billing.size} GB; associated ${kind.nouns} ${used} GB. ` +
      "The total size of associated resources cannot exceed the vault capacity; a vault holds at most 256 resources."),
    picker);
  return openDialog({
    title: `Associate ${kind.Noun} — ${vault.name}`, okText: "OK", wide: true, body,
    onOk: async () => {
      const chosen = picker.selected();
      if (!chosen.length) throw new UserError(`Select at least one ${kind.noun}.`);
      await api.post(`/vaults/${vault.id}/addresources`, { resources: chosen.map((r) => ({ id: r.id, type: kind.rtype })) });
      toast(`${chosen.length} ${chosen.length === 1 ? kind.noun : kind.nouns} associated with ${vault.name}.`, "ok");
      return true;
    },
  });
}

export function dissociateResource(vault, resource, kind) {
  return confirmDialog({
    title: `Dissociate ${kind.Noun}`,
    message: [h("p", `Dissociate ${kind.noun} `, h("b", resource.name || resource.id), ` from vault `, h("b", vault.name), "?"),
      h("div.alert.warn", "The vault's policy will no longer back it up, and all its manual and automatic backups in this vault will be deleted. Deleted backups cannot be used to restore data.")],
    onOk: async () => {
      await api.post(`/vaults/${vault.id}/removeresources`, { resource_ids: [resource.id] });
      toast(`${resource.name || resource.id} dissociated.`, "ok");
    },
  });
}

// ------------------------------------------------------------------------------------------------ capacity
export function expandCapacity(vault) {
  const add = h("input", { type: "number", name: "add", min: "1", step: "1", value: "10" });
  const after = h("span.hint");
  const sync = () => { after.textContent = `New capacity: ${vault.billing.size + (Number(add.value) || 0)} GB`; };
  add.addEventListener("input", sync);
  sync();
  return openDialog({
    title: `Expand Capacity — ${vault.name}`, okText: "Submit",
    body: h("div.form",
      field("Current capacity", h("span", `${vault.billing.size} GB (used ${fmtBytes(vault.used_bytes)})`)),
      field("Capacity to add (GB)", add, "The minimum is 1 GB."), field("", after)),
    onOk: async () => {
      const n = Number(add.value);
      if (!Number.isInteger(n) || n < 1) throw new UserError("Enter the capacity to add: a whole number of GB, at least 1.");
      await api.put(`/vaults/${vault.id}`, { vault: { billing: { size: vault.billing.size + n } } });
      toast(`Vault ${vault.name} now has ${vault.billing.size + n} GB.`, "ok");
    },
  });
}

// ------------------------------------------------------------------------------------------------ tags
// One tag per line, KEY=VALUE; the dialog sends the difference (keys removed, tags added or changed).
export function editTags(vault) {
  const text = h("textarea", { name: "tags", rows: "6", "aria-label": "Tags", spellcheck: "false" },
    (vault.tags || []).map((t) => `${t.key}=${t.value}`).join("\n"));
  return openDialog({
    title: `Tags — ${vault.name}`, okText: "Save",
    body: h("div.form", field("Tags", text, "One per line as KEY=VALUE (at most 10). Keys: letters, digits, - and _, up to 36 characters; values may also hold a period, up to 43.")),
    onOk: async () => {
      const wanted = [];
      for (const line of text.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
        const at = line.indexOf("=");
        if (at < 1) throw new UserError(`Write each tag as KEY=VALUE: "${line}".`);
        wanted.push({ key: line.slice(0, at).trim(), value: line.slice(at + 1).trim() });
      }
      const gone = (vault.tags || []).filter((t) => !wanted.some((w) => w.key === t.key));
      if (gone.length) await api.post(`/vault/${vault.id}/tags/action`, { action: "delete", tags: gone.map((t) => ({ key: t.key })) });
      if (wanted.length) await api.post(`/vault/${vault.id}/tags/action`, { action: "create", tags: wanted });
      toast(`Tags of ${vault.name} saved.`, "ok");
    },
  });
}

// ------------------------------------------------------------------------------------------------ policies
export async function applyPolicy(vault) {
  const policies = await listPolicies({ operation_type: "backup" });
  const current = policyOf(vault, policies);
  if (!policies.length) {
    return openDialog({
      title: "Apply Backup Policy", noOk: true,
      body: h("div.empty", h("b", "No backup policy yet"), "Create one first: ", h("a", { href: "#/policies?create=1" }, "Create Policy")),
    });
  }
  const sel = select(policies.map((p) => [p.id, p.name]), current ? current.id : policies[0].id, { name: "policy" });
  const info = h("dl.kv");
  const sync = () => {
    const p = policies.find((x) => x.id === sel.value);
    clear(info,
      h("dt", "Status"), h("dd", badge(p.enabled ? "enabled" : "disabled")),
      h("dt", "Execution time"), h("dd", describePatterns(p.trigger.properties.pattern)),
      h("dt", "Retention"), h("dd", describeRetention(p.operation_definition)),
      h("dt", "Vaults"), h("dd", String((p.associated_vaults || []).length)));
  };
  sel.addEventListener("change", sync);
  sync();
  return openDialog({
    title: `Apply Backup Policy — ${vault.name}`, okText: "OK",
    body: h("div",
      current ? h("div.alert.info", `The vault has policy ${current.name}; choosing another one replaces it (a vault has one backup policy).`) : null,
      h("div.form", field("Backup policy", sel, h("a", { href: "#/policies?create=1" }, "Create a new policy")), field("", info))),
    onOk: async () => {
      if (current && current.id === sel.value) return true;
      if (current) await api.post(`/vaults/${vault.id}/dissociatepolicy`, { policy_id: current.id });
      await api.post(`/vaults/${vault.id}/associatepolicy`, { policy_id: sel.value });
      toast(`Policy ${policies.find((x) => x.id === sel.value).name} applied to ${vault.name}.`, "ok");
    },
  });
}

export function removePolicy(vault, policy) {
  return confirmDialog({
    title: "Remove Policy",
    message: [h("p", "Remove policy ", h("b", policy.name), " from vault ", h("b", vault.name), "?"),
      h("p.hint", "Automatic backups stop. Backups kept by time period still expire; backups kept by quantity are no longer deleted automatically.")],
    onOk: async () => {
      await api.post(`/vaults/${vault.id}/dissociatepolicy`, { policy_id: policy.id });
      toast(`Policy ${policy.name} removed from ${vault.name}.`, "ok");
    },
  });
}

// ------------------------------------------------------------------------------------------------ delete
export function deleteVault(vault) {
  return confirmDialog({
    title: "Delete Vault",
    message: [h("p", "Are you sure you want to delete vault ", h("b", vault.name), "?"),
      h("div.alert.warn", `All ${vault.resources?.length ? "associated resources are dissociated and all " : ""}backups stored in the vault will be deleted. This cannot be undone.`)],
    onOk: async () => {
      const out = await api.del(`/vaults/${vault.id}`);
      toast(`Vault ${vault.name} is being deleted.`, "ok", out.operation_log_id ? { link: taskLink(out.operation_log_id) } : {});
    },
  });
}

export const vaultUsedPct = (v) => (v.billing.size > 0 ? (v.used_bytes / (v.billing.size * GB)) * 100 : 0);

export { replicateVault } from "./replicas.js";
