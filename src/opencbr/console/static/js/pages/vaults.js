// Guide 3.1: the Vaults tab of a backup type — list, search by name or ID, filter by status, and the
// operations of each vault.
import { listPolicies, listVaults, policyOf } from "../data.js";
import {
  GB, READONLY_REASON, backupGuard, badge, canWrite, clear, debounce, errorAlert, fmtBytes, h, icon, loading, meter,
  moreMenu, select, table, writeGuard,
} from "../ui.js";
import {
  applyPolicy, associateResources, createVault, deleteVault, expandCapacity, performBackup, removePolicy, replicateVault,
} from "../vault-actions.js";

export function kindTabs(kind, active) {
  return h("div.tabs", { role: "tablist" },
    h("a", { href: `#/${kind.path}/vaults`, role: "tab", "aria-selected": String(active === "vaults") }, "Vaults"),
    h("a", { href: `#/${kind.path}/backups`, role: "tab", "aria-selected": String(active === "backups") }, "Backups"));
}

const STATUSES = [["", "All statuses"], ["available", "Available"], ["locked", "Locked"], ["deleting", "Deleting"], ["error", "Error"]];

export async function render(main, { kind, query }, ctx) {
  document.title = `${kind.title} · OpenCBR`;
  const createBtn = writeGuard(h("button.btn.primary", { type: "button" }, icon("plus"), `Create ${kind.vaultNoun}`));
  const search = h("input.search", { type: "search", placeholder: "Search by name or ID", "aria-label": "Search vaults by name or ID", value: query.get("q") || "" });
  const status = select(STATUSES, query.get("status") || "", { "aria-label": "Vault status" });
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const holder = h("div", loading());
  clear(main,
    h("div.page-head", h("h1", kind.title), h("span.spacer"), createBtn),
    kindTabs(kind, "vaults"),
    h("div.toolbar", search, status, h("span.spacer"), refresh),
    holder);

  let vaults = [];
  let policies = [];

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const rows = vaults.filter((v) => (!status.value || v.billing.status === status.value) &&
      (!q || v.name.toLowerCase().includes(q) || v.id.toLowerCase().includes(q)));
    const after = (p) => p.then((ok) => { if (ok) reload(); });
    clear(holder, table([
      { title: "Name/ID", render: (v) => h("div", h("a.vault-name", { href: `#/vault/${v.id}` }, v.name), h("span.sub", v.id)) },
      { title: "Status", render: (v) => badge(v.billing.status) },
      { title: "Type", render: (v) => h("div", v.billing.protect_type === "replication" ? "Replication" : "Backup",
        kind.objectType === "server" ? h("span.sub", v.billing.consistent_level === "app_consistent" ? "Application-consistent" : "Server backup") : null) },
      { title: "Vault Capacity", render: (v) => meter(v.used_bytes, v.billing.size * GB, { totalText: `${v.billing.size} GB`, threshold: v.threshold }) },
      { title: `Associated ${kind.Nouns}`, cls: "num", render: (v) => h("a", { href: `#/vault/${v.id}/resources`, title: `Associated ${kind.nouns}: ${(v.resources || []).reduce((s, r) => s + (r.size || 0), 0)} GB` }, String((v.resources || []).length)) },
      { title: "Policy", render: (v) => { const p = policyOf(v, policies); return p ? h("a", { href: `#/policies?id=${p.id}` }, p.name) : h("span.hint", "--"); } },
      { title: "Encryption", render: (v) => h("span.tag", v.encrypted ? [icon("lock"), "Encrypted"] : "Not encrypted") },
      {
        title: "Operation", render: (v) => {
          const busy = ["deleting"].includes(v.billing.status);
          const repl = v.billing.protect_type === "replication";
          const pol = policyOf(v, policies);
          const backupBtn = backupGuard(h("button.link", { type: "button", disabled: busy || repl, onclick: () => after(performBackup(v, kind)) }, "Perform Backup"));
          const assocBtn = writeGuard(h("button.link", { type: "button", disabled: busy || repl, onclick: () => after(associateResources(v, kind)) }, `Associate ${kind.Noun}`));
          const ro = !canWrite();
          const why = ro ? READONLY_REASON : undefined;
          return h("div.ops", backupBtn, assocBtn, moreMenu([
            { label: "Expand Capacity", write: true, disabled: ro || busy || v.billing.status === "locked", title: why, onClick: () => after(expandCapacity(v)) },
            { label: pol ? "Change Backup Policy" : "Apply Backup Policy", write: true, disabled: ro || busy || repl, title: why, onClick: () => after(applyPolicy(v)) },
            pol ? { label: "Remove Policy", write: true, disabled: ro || busy, title: why, onClick: () => after(removePolicy(v, pol)) } : null,
            { label: "Create Replica", write: true, disabled: ro || busy || repl, title: why, onClick: () => after(replicateVault(v)) },
            { label: "View Monitoring Data", onClick: () => ctx.navigate(`#/monitoring?vault=${v.id}`) },
            { label: "View Backups", onClick: () => ctx.navigate(`#/${kind.path}/backups?vault_id=${v.id}`) },
            "-",
            { label: "Delete", danger: true, write: true, disabled: ro || busy, title: why, onClick: () => after(deleteVault(v)) },
          ]));
        },
      },
    ], rows, {
      caption: `${kind.title} vaults`,
      empty: vaults.length ? "No vault matches the search."
        : h("div", h("b", "No vaults yet"), `Create a ${kind.vaultNoun.toLowerCase()} to start protecting ${kind.nouns}.`),
      rowAttrs: (v) => ({ dataset: { vaultId: v.id, vaultName: v.name } }),
    }));
  };

  const load = async () => {
    try {
      [vaults, policies] = await Promise.all([listVaults({ object_type: kind.objectType }), listPolicies()]);
      if (!ctx.alive) return false;
      draw();
      holder.append(h("p.footer-note", `${vaults.length} vault${vaults.length === 1 ? "" : "s"} · capacity in GB = 1024³ bytes · used ${fmtBytes(vaults.reduce((s, v) => s + v.used_bytes, 0))} in total`));
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
    return vaults.some((v) => ["deleting", "locked"].includes(v.billing.status));
  };

  const reload = ctx.live(load, 2000);
  createBtn.addEventListener("click", async () => { if (await createVault(kind)) reload(); });
  search.addEventListener("input", debounce(draw, 150));
  status.addEventListener("change", draw);
  refresh.addEventListener("click", reload);
  await reload();
}
