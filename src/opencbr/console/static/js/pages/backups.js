// Guide 4.1: the Backups tab — search by status, name, ID, vault, resource and creation date; the
// operations of each backup (restore, create a disk / file system, verify, browse files, delete).
import { api } from "../api.js";
import { listVaults } from "../data.js";
import {
  backupDetails, browseFiles, createDisk, deleteBackups, downloadBackup, replicable, replicateBackup, restoreBackup,
  shareBackup, verifyBackup,
} from "../backup-actions.js";
import {
  READONLY_REASON, badge, canWrite, clear, errorAlert, fmtBytes, h, icon, loading, localDayToUtc, moreMenu, select, table,
  timeCell, writeGuard, zoneName,
} from "../ui.js";
import { createImage } from "./images.js";
import { kindTabs } from "./vaults.js";

const STATUSES = [["", "All statuses"], ["available", "Available"], ["protecting", "Creating"], ["restoring", "Restoring"],
  ["deleting", "Deleting"], ["error", "Error"]];
const BUSY = new Set(["protecting", "restoring", "deleting", "waiting_protect", "waiting_delete", "waiting_restore"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PAGE = 50;

export function restoreLabel(kind) {
  return kind.objectType === "server" ? "Restore Server" : kind.objectType === "turbo" ? "Create File System" : "Restore Disk";
}

/**
 * The backup table with its operations, shared with the vault details page. opts: {kind, vaultNames,
 * onChange, selectable, selected (Set)}.
 */
export function backupTable(backups, { kind, vaultNames = {}, onChange, selected, empty }) {
  const after = (p) => Promise.resolve(p).then((ok) => { if (ok && onChange) onChange(); });
  const columns = [
    selected ? {
      title: h("span.sr-only", "Select"), render: (b) => h("input", {
        type: "checkbox", checked: selected.has(b.id), "aria-label": `Select ${b.name}`,
        onchange: (ev) => { ev.target.checked ? selected.add(b.id) : selected.delete(b.id); onChange && onChange("selection"); },
      }),
    } : null,
    { title: "Name/ID", render: (b) => h("div", h("button.link.backup-name", { type: "button", onclick: () => backupDetails(b, vaultNames[b.vault_id]) }, b.name), h("span.sub", b.id)) },
    { title: "Status", render: (b) => h("div", badge(b.status), b.error_info && b.error_info.message ? h("div.error-text", { title: b.error_info.message }, b.error_info.message.slice(0, 80)) : null) },
    { title: "Backup Type", render: (b) => h("div", (b.extend_info || {}).auto_trigger ? "Automatic" : "Manual", h("span.sub", b.incremental ? "Incremental" : "Full")) },
    { title: kind.Noun, render: (b) => h("div", b.resource_name || "--", h("span.sub", b.resource_id)) },
    { title: "Vault", render: (b) => h("a", { href: `#/vault/${b.vault_id}` }, vaultNames[b.vault_id] || b.vault_id.slice(0, 8)) },
    { title: "Size", cls: "num", tip: "Logical size of the backed-up data", render: (b) => h("div", fmtBytes(b.logical_bytes), h("span.sub", `of ${b.resource_size} GB`)) },
    { title: "Added", cls: "num", tip: "What this backup added to the vault (new data after deduplication and compression)", render: (b) => fmtBytes(b.added_bytes) },
    {
      title: "Created", cls: "nowrap", tip: `Times in ${zoneName()}`, render: (b) => h("div", timeCell(b.created_at),
        h("span.sub", b.expired_at ? ["expires ", timeCell(b.expired_at)] : "kept until deleted")),
    },
    {
      title: "Operation", render: (b) => {
        const ok = b.status === "available";
        const restore = writeGuard(h("button.link", { type: "button", disabled: !ok, title: ok ? undefined : "Only Available backups can be used", onclick: () => after(restoreBackup(b)) }, restoreLabel(kind)));
        const ro = !canWrite();
        const why = ro ? READONLY_REASON : ok ? undefined : "Only Available backups can be used";
        const second = kind.objectType === "disk"
          ? writeGuard(h("button.link", { type: "button", disabled: !ok, onclick: () => after(createDisk(b)) }, "Create Disk")) : null;
        const browsable = kind.objectType !== "server";
        return h("div.ops", restore, second, moreMenu([
          { label: "View Details", onClick: () => backupDetails(b, vaultNames[b.vault_id]) },
          browsable ? { label: "Browse Files", write: true, disabled: !ok, title: ok ? undefined : why, onClick: () => after(browseFiles(b)) } : null,
          { label: "Verify", write: true, disabled: ro || !ok, title: why, onClick: () => after(verifyBackup(b)) },
          kind.objectType === "disk" ? { label: "Download Image", write: true, disabled: !ok, onClick: () => downloadBackup(b) } : null,
          kind.objectType !== "turbo" ? { label: "Share", write: true, disabled: ro || !ok, title: why, onClick: () => after(shareBackup(b)) } : null,
          kind.objectType === "server" ? {
            label: "Create Image", write: true, disabled: ro || !ok || b.used_by_image || !(b.extend_info || {}).contain_system_disk,
            title: ro ? why : b.used_by_image ? "An image was already created from this backup" : !ok ? why : undefined,
            onClick: () => after(createImage(b)),
          } : null,
          { label: "Create Replica", write: true, disabled: ro || !replicable(b), title: ro ? why : replicable(b) ? undefined : "Available backups of backup vaults are replicated (not replicas)", onClick: () => after(replicateBackup(b)) },
          "-",
          { label: "Delete", danger: true, write: true, disabled: ro || !["available", "error"].includes(b.status) || b.used_by_image, title: ro ? why : b.used_by_image ? "An image was created from this backup: delete the image first" : "Available or Error backups can be deleted", onClick: () => after(deleteBackups([b])) },
        ]));
      },
    },
  ].filter(Boolean);
  return table(columns, backups, {
    caption: "Backups", empty: empty || h("div", h("b", "No backups found"), "Perform a backup from the Vaults tab, or change the search."),
    rowAttrs: (b) => ({ dataset: { backupId: b.id, backupName: b.name, status: b.status } }),
  });
}

export async function render(main, { kind, query }, ctx) {
  document.title = `${kind.title} · Backups · OpenCBR`;
  const status = select(STATUSES, query.get("status") || "", { "aria-label": "Backup status", name: "status" });
  const name = h("input", { type: "search", name: "name", placeholder: "Backup name", value: query.get("name") || "" });
  const bid = h("input", { type: "search", name: "id", placeholder: "Backup ID", value: query.get("id") || "" });
  const vaultSel = select([["", "All vaults"]], "", { name: "vault" });
  const resource = h("input", { type: "search", name: "resource", placeholder: `${kind.Noun} name or ID`, value: query.get("resource") || "" });
  const from = h("input", { type: "date", name: "from", value: query.get("from") || "" });
  const to = h("input", { type: "date", name: "to", value: query.get("to") || "" });
  const searchBtn = h("button.btn.primary", { type: "submit" }, "Search");
  const resetBtn = h("button.btn", { type: "button" }, "Reset");
  const delBtn = writeGuard(h("button.btn", { type: "button", disabled: true }, "Delete"));
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const lbl = (t, c) => h("label", t, c);
  const form = h("form.filters", { role: "search" },
    lbl("Status", status), lbl("Name", name), lbl("Backup ID", bid), lbl("Vault", vaultSel), lbl(kind.Noun, resource),
    lbl("Created from", from), lbl("to", to), searchBtn, resetBtn);
  const holder = h("div", loading());
  const pager = h("div.pager");
  clear(main,
    h("div.page-head", h("h1", kind.title)),
    kindTabs(kind, "backups"),
    form,
    h("div.toolbar", delBtn, h("span.spacer"), h("span.hint", `Times in ${zoneName()}`), refresh),
    holder);

  let vaultNames = {};
  let backups = [];
  let total = 0;
  let offset = 0;
  const selected = new Set();

  try {
    const vaults = await listVaults({ object_type: kind.objectType });
    vaultNames = Object.fromEntries(vaults.map((v) => [v.id, v.name]));
    vaults.forEach((v) => vaultSel.append(h("option", { value: v.id }, v.name)));
    vaultSel.value = query.get("vault_id") || "";
  } catch (e) {
    holder.before(errorAlert(e));
  }

  const params = () => {
    const p = { resource_type: kind.rtype, limit: PAGE, offset, status: status.value, name: name.value.trim(), vault_id: vaultSel.value, show_replication: "true" };
    if (bid.value.trim()) p.id = bid.value.trim();
    const r = resource.value.trim();
    if (r) p[UUID.test(r) ? "resource_id" : "resource_name"] = r;
    if (from.value) p.start_time = localDayToUtc(from.value);
    if (to.value) p.end_time = localDayToUtc(to.value, true);
    return p;
  };

  const draw = () => {
    const onChange = (why) => {
      delBtn.disabled = !selected.size || !!delBtn.dataset.readonly;
      delBtn.textContent = selected.size ? `Delete (${selected.size})` : "Delete";
      if (why !== "selection") reload();
    };
    clear(holder, backupTable(backups, { kind, vaultNames, onChange, selected }), pager);
    const last = Math.min(offset + PAGE, total);
    clear(pager, `${total ? offset + 1 : 0}–${last} of ${total}`,
      h("button.btn.small", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); reload(); } }, "‹ Previous"),
      h("button.btn.small", { type: "button", disabled: last >= total, onclick: () => { offset += PAGE; reload(); } }, "Next ›"));
    onChange("selection");
  };

  const load = async () => {
    try {
      const out = await api.get("/backups", params());
      if (!ctx.alive) return false;
      backups = out.backups || [];
      total = out.count || 0;
      const ids = new Set(backups.map((b) => b.id));
      [...selected].forEach((id) => { if (!ids.has(id)) selected.delete(id); });
      draw();
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
      return false;
    }
    return backups.some((b) => BUSY.has(b.status) || (b.children || []).some((k) => BUSY.has(k.status)));
  };
  const reload = ctx.live(load, 1500);

  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; reload(); });
  resetBtn.addEventListener("click", () => {
    [name, bid, resource, from, to].forEach((i) => { i.value = ""; });
    status.value = "";
    vaultSel.value = "";
    offset = 0;
    reload();
  });
  status.addEventListener("change", () => { offset = 0; reload(); });
  vaultSel.addEventListener("change", () => { offset = 0; reload(); });
  refresh.addEventListener("click", reload);
  delBtn.addEventListener("click", async () => {
    const list = backups.filter((b) => selected.has(b.id));
    if (list.length && await deleteBackups(list)) { selected.clear(); reload(); }
  });
  await reload();
}

