// Vault details (guide 3.1 step 4, 3.3, 5.1, 5.4, 5.7): basic information, capacity, the policy, the
// associated resources with their backup counts, and the vault's backups.
import { api } from "../api.js";
import { listPolicies, policyOf } from "../data.js";
import { byObjectType } from "../kinds.js";
import { describePatterns, describeRetention } from "../schedule.js";
import {
  GB, READONLY_REASON, backupGuard, badge, canWrite, clear, errorAlert, fmtBytes, fmtTime, h, loading, markNav, meter,
  moreMenu, openDialog, table, writeGuard,
} from "../ui.js";
import {
  applyPolicy, associateResources, deleteVault, dissociateResource, editTags, expandCapacity, performBackup, removePolicy,
} from "../vault-actions.js";
import { lockCard } from "../vault-lock.js";
import { checksCard } from "../vault-checks.js";
import { backupTable } from "./backups.js";

const BUSY = new Set(["protecting", "restoring", "deleting", "waiting_protect", "waiting_delete", "waiting_restore"]);

function retentionDryRun(policy, vault) {
  const body = h("div", loading());
  api.get(`/policies/${policy.id}/retention-preview`, { vault_id: vault.id }).then((out) => {
    const rows = (out.resources || []).flatMap((r) => r.backups.map((b) => ({ ...b, resource_name: r.resource_name })));
    clear(body,
      h("p", out.prune_count ? `${out.prune_count} backup(s) would be deleted by the retention rule now.` : "No backup would be deleted by the retention rule now."),
      table([
        { title: "Backup", render: (b) => h("div", b.backup_name, h("span.sub", b.backup_id)) },
        { title: "Resource", render: (b) => b.resource_name },
        { title: "Created", render: (b) => fmtTime(b.created_at) },
        { title: "Kind", render: (b) => (b.automatic ? "Automatic" : "Manual") },
        { title: "Verdict", render: (b) => badge(b.prune ? "deleting" : "available", { label: b.prune ? "Would be deleted" : "Kept" }) },
        { title: "Why", render: (b) => h("span.hint", b.explain || (b.reasons || []).map((x) => x.text).join("; ")) },
      ], rows, { empty: "The vault has no backups." }));
  }).catch((e) => clear(body, errorAlert(e)));
  return openDialog({ title: `Retention dry run — ${policy.name}`, body, noOk: true, wide: true });
}

export async function render(main, { id, tab }, ctx) {
  const holder = h("div", loading());
  clear(main, holder);
  let vault = null;
  let policies = [];
  let backups = [];
  let lock = {};
  let active = tab === "backups" ? "backups" : "resources";
  let checks = null;  // verify and restore-test policies (vault-checks.js), loaded once per visit

  const draw = () => {
    const kind = byObjectType(vault.billing.object_type);
    document.title = `${vault.name} · Vault · OpenCBR`;
    markNav(`#/${kind.path}/vaults`);
    sessionStorage.setItem("opencbr.last-kind", kind.key);
    const pol = policyOf(vault, policies);
    const busy = vault.billing.status === "deleting";
    const repl = vault.billing.protect_type === "replication";
    const reloadAfter = (p) => Promise.resolve(p).then((ok) => { if (ok) reload(); });
    const backupBtn = backupGuard(h("button.btn.primary", { type: "button", disabled: busy || repl, onclick: () => reloadAfter(performBackup(vault, kind)) }, "Perform Backup"));
    const assocBtn = writeGuard(h("button.btn", { type: "button", disabled: busy || repl, onclick: () => reloadAfter(associateResources(vault, kind)) }, `Associate ${kind.Noun}`));
    const ro = !canWrite();
    const why = ro ? READONLY_REASON : undefined;
    const assocSize = (vault.resources || []).reduce((s, r) => s + (r.size || 0), 0);
    const totalBackups = (vault.resources || []).reduce((s, r) => s + (r.backup_count || 0), 0);

    const head = h("div.page-head",
      h("div", h("a.crumb", { href: `#/${kind.path}/vaults` }, `‹ ${kind.title}`),
        h("div.inline", h("h1", vault.name), badge(vault.billing.status))),
      h("span.spacer"), backupBtn, assocBtn,
      moreMenu([
        { label: "Expand Capacity", write: true, disabled: ro || busy, title: why, onClick: () => reloadAfter(expandCapacity(vault)) },
        { label: "Edit Tags", write: true, disabled: ro || busy, title: why, onClick: () => reloadAfter(editTags(vault)) },
        { label: pol ? "Change Backup Policy" : "Apply Backup Policy", write: true, disabled: ro || busy || repl, title: why, onClick: () => reloadAfter(applyPolicy(vault)) },
        { label: "View Monitoring Data", onClick: () => ctx.navigate(`#/monitoring?vault=${vault.id}`) },
        { label: "View Tasks", onClick: () => ctx.navigate(`#/tasks?vault_id=${vault.id}`) },
        "-",
        { label: "Delete", danger: true, write: true, disabled: ro || busy, title: why, onClick: async () => { if (await deleteVault(vault)) ctx.navigate(`#/${kind.path}/vaults`); } },
      ]));

    const info = h("div.card", h("h2", "Basic Information"), h("dl.kv",
      h("dt", "ID"), h("dd.mono", vault.id),
      h("dt", "Type"), h("dd", `${kind.title.replace(/s$/, "")} vault · ${repl ? "Replication" : "Backup"}`),
      kind.objectType === "server" ? [h("dt", "Specifications"), h("dd", vault.billing.consistent_level === "app_consistent" ? "Application-consistent backup" : "Server backup")] : null,
      h("dt", "Encryption"), h("dd", vault.encrypted ? "Encrypted (AES-256-GCM)" : "Not encrypted"),
      h("dt", "Created"), h("dd", fmtTime(vault.created_at)),
      h("dt", "Tags"), h("dd", (vault.tags || []).length ? (vault.tags || []).map((t) => h("span.tag", `${t.key}=${t.value}`)) : "--"),
      vault.description ? [h("dt", "Description"), h("dd", vault.description)] : null));

    const cap = h("div.card", h("h2", "Capacity"),
      meter(vault.used_bytes, vault.billing.size * GB, { totalText: `${vault.billing.size} GB`, threshold: vault.threshold }),
      h("dl.kv", { style: { marginTop: "12px" } },
        h("dt", "Used"), h("dd", fmtBytes(vault.used_bytes)),
        h("dt", "Vault capacity"), h("dd", `${vault.billing.size} GB`),
        h("dt", `Associated ${kind.nouns}`), h("dd", `${(vault.resources || []).length} · ${assocSize} GB`),
        h("dt", "Backups"), h("dd", String(totalBackups))));

    const polCard = h("div.card", h("h2", "Policies"),
      pol ? [
        h("dl.kv",
          h("dt", "Backup policy"), h("dd", h("a", { href: `#/policies?id=${pol.id}` }, pol.name)),
          h("dt", "Status"), h("dd", badge(pol.enabled ? "enabled" : "disabled")),
          h("dt", "Execution time"), h("dd", describePatterns(pol.trigger.properties.pattern)),
          h("dt", "Retention"), h("dd", describeRetention(pol.operation_definition))),
        h("div.ops", { style: { marginTop: "12px" } },
          h("a", { href: `#/policies?edit=${pol.id}` }, "Edit"),
          writeGuard(h("button.link", { type: "button", disabled: busy, onclick: () => reloadAfter(removePolicy(vault, pol)) }, "Remove Policy")),
          h("button.link", { type: "button", onclick: () => retentionDryRun(pol, vault) }, "Retention dry run")),
      ] : [
        h("p.hint", "No backup policy: associated resources are backed up only when you perform a backup."),
        writeGuard(h("button.btn", { type: "button", disabled: busy || repl, onclick: () => reloadAfter(applyPolicy(vault)) }, "Apply Backup Policy")),
      ]);

    const tabs = h("div.tabs", { role: "tablist" },
      h("button", { type: "button", role: "tab", "aria-selected": String(active === "resources"), onclick: () => { active = "resources"; draw(); } },
        `Associated ${kind.Nouns} (${(vault.resources || []).length})`),
      h("button", { type: "button", role: "tab", "aria-selected": String(active === "backups"), onclick: () => { active = "backups"; draw(); } },
        `Backups (${backups.length})`));

    let panel;
    if (active === "resources") {
      panel = table([
        { title: "Name/ID", render: (r) => h("div", r.name || "--", h("span.sub", r.id)) },
        { title: "Status", render: (r) => badge(r.protect_status) },
        { title: "Size", cls: "num", render: (r) => `${r.size} GB` },
        { title: "Backups", cls: "num", render: (r) => String(r.backup_count) },
        { title: "Backup size", cls: "num", tip: "Rounded to whole GB, as the API reports it", render: (r) => `${r.backup_size} GB` },
        {
          title: "Operation", render: (r) => h("div.ops",
            backupGuard(h("button.link", { type: "button", disabled: busy, onclick: () => reloadAfter(performBackup(vault, kind, r.id)) }, "Perform Backup")),
            h("button.link", { type: "button", onclick: () => { active = "backups"; draw(); } }, "View Backups"),
            writeGuard(h("button.link", { type: "button", disabled: busy, onclick: () => reloadAfter(dissociateResource(vault, r, kind)) }, "Dissociate"))),
        },
      ], vault.resources || [], { empty: h("div", h("b", `No ${kind.nouns} associated`), `Associate ${kind.nouns} to back them up.`) });
    } else {
      panel = backupTable(backups, { kind, vaultNames: { [vault.id]: vault.name }, onChange: () => reload(), empty: "This vault has no backups yet." });
    }
    const lockBox = lockCard(vault, lock, reloadAfter);
    checks = checks || checksCard(vault);
    clear(main, head, h("div.grid.cols-3", info, cap, polCard), h("div.grid.cols-3", { style: { marginTop: "20px" } }, lockBox),
      h("div", { style: { marginTop: "20px" } }, checks),
      h("div", { style: { marginTop: "20px" } }, tabs, panel));
  };

  const load = async () => {
    try {
      const [v, p, b, l] = await Promise.all([
        api.get(`/vaults/${id}`), listPolicies(), api.get("/backups", { vault_id: id, limit: 1000 }),
        api.get(`/vaults/${id}/lock`)]);
      if (!ctx.alive) return false;
      lock = l.lock;
      vault = v.vault;
      policies = p;
      backups = b.backups || [];
      draw();
    } catch (e) {
      if (ctx.alive) clear(main, h("div.page-head", h("a.crumb", { href: "#/" }, "‹ Vaults")), errorAlert(e));
      return false;
    }
    return vault.billing.status === "deleting" || backups.some((x) => BUSY.has(x.status));
  };
  const reload = ctx.live(load, 1500);
  await reload();
}
