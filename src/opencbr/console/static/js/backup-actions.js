// Backup operations (guide 4.3 and chapter 6): restore, create a disk or a file system, verify, browse
// files and restore some of them, download, delete; and the details of a backup.
import { api } from "./api.js";
import { listInventory, taskLink } from "./data.js";
import { byResourceType } from "./kinds.js";
import { replicaSourceRows, replicationRecords } from "./replicas.js";
import {
  GB, UserError, badge, clear, confirmDialog, errorAlert, field, fmtBytes, fmtTime, h, loading, openDialog, select,
  switchControl, table, toast, writeGuard,
} from "./ui.js";

// How a backup's point in time was taken, in the words the vaults use for consistency (the CLI says the same).
export const CONSISTENCY = {
  stopped: "Consistent (taken while stopped)",
  "reflink-snapshot": "Crash-consistent (all disks cloned at one moment)",
  live: "Read live: consistent per block only",
  "live-tree": "Read live: consistent per file only",
};

const started = (what, out) => toast(`${what} started.`, "ok", out && out.operation_log_id ? { link: taskLink(out.operation_log_id) } : {});

// ------------------------------------------------------------------------------------------------ restore
export async function restoreBackup(b) {
  if (b.resource_type === "OS::Nova::Server") return restoreServer(b);
  if (b.resource_type === "OS::Sfs::Turbo") return createFileSystem(b);
  return confirmDialog({
    title: "Restore Disk",
    message: [
      h("p", "Restore disk ", h("b", b.resource_name || b.resource_id), " from backup ", h("b", b.name), ` (${fmtTime(b.created_at)})?`),
      h("div.alert.warn", "The backup data will overwrite the current disk data, and the restoration cannot be undone. " +
        "Stop the server that uses the disk first, and start it again when the restoration is complete."),
    ],
    okText: "Restore",
    onOk: async () => started("Restoration", await api.post(`/backups/${b.id}/restore`, { restore: { volume_id: b.resource_id } })),
  });
}

async function restoreServer(b) {
  let disks = [];
  let loadError = null;
  try {
    disks = (await api.get(`/inventory/servers/${b.resource_id}`)).resource.disks || [];
  } catch (e) {
    loadError = e;
  }
  const powerOn = switchControl(true, "Start the server immediately after restoration");
  const selects = new Map();
  const kids = b.children || [];
  const rows = kids.map((k) => {
    const sel = select(disks.map((d) => [d.id, `${d.name} (${d.role || "data"}, ${fmtBytes(d.size_bytes)})`]), k.resource_id,
      { "aria-label": `Destination disk for ${k.resource_name}` });
    selects.set(k.id, { sel, orig: k.resource_id });
    return { k, sel };
  });
  const body = h("div",
    loadError ? errorAlert(loadError) : null,
    h("div.alert.warn", "The current server data will be overwritten by the data captured at the time of backup. " +
      "The restoration cannot be undone. The server is shut down during restoration."),
    h("div.form", field("Server", h("span", b.resource_name, h("span.sub", b.resource_id))), field("Power", powerOn)),
    kids.length ? h("h3", "Destination disks") : null,
    kids.length ? table([
      { title: "Disk backup", render: (r) => h("div", r.k.resource_name, h("span.sub", `${r.k.disk_role || "data"} disk · ${r.k.resource_size} GB`)) },
      { title: "Destination disk", render: (r) => r.sel },
    ], rows) : null,
    h("p.hint", "A data disk backup cannot be restored to the system disk; a different destination must be at least as large as the original."));
  return openDialog({
    title: "Restore Server", okText: "Restore", wide: true, body,
    onOk: async () => {
      const restore = { server_id: b.resource_id, power_on: powerOn.querySelector("input").checked };
      const changed = [...selects.values()].some((s) => s.sel.value && s.sel.value !== s.orig);
      if (changed) restore.mappings = [...selects.entries()].map(([bid, s]) => ({ backup_id: bid, volume_id: s.sel.value }));
      started("Restoration", await api.post(`/backups/${b.id}/restore`, { restore }));
    },
  });
}

// Where a new disk or file system is made: the OpenCBR machine, or an enrolled agent's host (13.4.8). A backup
// an agent read is restored onto that agent's host by default: without agent_id the API makes the path on
// the service's own machine, which for a host's backup is rarely what the user means.
async function hostChoice(b, kind) {
  let agents = [];
  let source = null;
  try { agents = ((await api.get("/agents", { limit: "1000" })).agents || []).filter((a) => a.enrolled); } catch { /* optional */ }
  if (!agents.length) return null;
  try { source = (await api.get(`/inventory/${kind}/${b.resource_id}`)).resource.agent_id || null; } catch { /* another project's */ }
  const options = [["", "The OpenCBR machine"], ...agents.map((a) => [a.agent_id, `${a.host_nickname || a.host_name} (agent ${a.agent_id.slice(0, 8)})`])];
  return select(options, agents.some((a) => a.agent_id === source) ? source : "", { name: "target-host" });
}

export async function createFileSystem(b) {
  let fsList = [];
  try { fsList = await listInventory("file-systems"); } catch { /* the list is optional */ }
  const empties = fsList.filter((f) => !f.vault_id && f.status === "available");
  const mode = h("div.seg", { role: "radiogroup", "aria-label": "Destination" },
    h("label", h("input", { type: "radio", name: "fsmode", value: "new", checked: true }), "New file system"),
    h("label", h("input", { type: "radio", name: "fsmode", value: "existing", disabled: !empties.length }), "Existing empty file system"));
  const name = h("input", { type: "text", name: "fs-name", value: `${(b.resource_name || "fs").slice(0, 40)}-restored`, maxlength: "64" });
  const path = h("input", { type: "text", name: "fs-path", placeholder: "/srv/restore/fs1", spellcheck: "false" });
  const existing = select(empties.map((f) => [f.id, `${f.name} — ${f.path}`]), "", { name: "fs-existing" });
  const host = await hostChoice(b, "file-systems");
  const newRows = [...(host ? field("Host", host, "The OpenCBR machine, or an agent's host (the directory must lie below the agent's roots).") : []),
    ...field("Name", name), ...field("Directory", path, host ? "An absolute path on that host: a new or empty directory. It becomes a registered file system." : "An absolute path on the OpenCBR machine: a new or empty directory. It becomes a registered file system.")];
  const oldRows = field("File system", existing, "Registered, not in a vault, and empty.");
  const body = h("div",
    h("p", "Create a new file system with the data of backup ", h("b", b.name), ` of ${b.resource_name} (${fmtTime(b.created_at)}).`),
    h("div.form", field("Destination", mode), newRows, oldRows));
  const sync = () => {
    const isNew = body.querySelector("input[name=fsmode]:checked").value === "new";
    newRows.forEach((el) => { el.hidden = !isNew; });
    oldRows.forEach((el) => { el.hidden = isNew; });
  };
  body.addEventListener("change", sync);
  sync();
  return openDialog({
    title: "Create File System", okText: "Create Now", wide: true, body,
    onOk: async () => {
      if (body.querySelector("input[name=fsmode]:checked").value === "existing") {
        return started("Restoration", await api.post(`/backups/${b.id}/restore`, { restore: { resource_id: existing.value } }));
      }
      if (!name.value.trim()) throw new UserError("Enter a name for the new file system.");
      if (!path.value.trim().startsWith("/")) throw new UserError("Enter the directory as an absolute path, e.g. /srv/restore/fs1.");
      const req = { name: name.value.trim(), path: path.value.trim() };
      if (host && host.value) req.agent_id = host.value;
      const out = await api.post(`/backups/${b.id}/create-file-system`, req);
      started(`File system ${name.value.trim()} is being created; restoration`, out);
    },
  });
}

export async function createDisk(b) {
  const name = h("input", { type: "text", name: "disk-name", value: `${(b.resource_name || "disk").slice(0, 40)}-restored`, maxlength: "64" });
  const path = h("input", { type: "text", name: "disk-path", placeholder: "/srv/images/new-disk.img", spellcheck: "false" });
  const size = h("input", { type: "number", name: "disk-size", min: String(b.resource_size || 1), step: "1", placeholder: `${b.resource_size} (same as the source)` });
  const host = await hostChoice(b, "disks");
  return openDialog({
    title: "Create Disk", okText: "Next",
    body: h("div",
      h("p", "Create a new disk with the data of backup ", h("b", b.name), ` of ${b.resource_name}.`),
      h("div.form",
        host ? field("Host", host, "The OpenCBR machine, or an agent's host (the image must lie below the agent's roots).") : null,
        field("Name", name),
        field("Image file", path, host ? "An absolute path on that host where the new disk image is written (.img or .raw); it must not exist yet." : "An absolute path on the OpenCBR machine where the new disk image is written; it must not exist yet."),
        field("Size (GB)", size, `Optional; at least the source disk (${b.resource_size} GB).`))),
    onOk: async () => {
      if (!name.value.trim()) throw new UserError("Enter a name for the new disk.");
      if (!path.value.trim().startsWith("/")) throw new UserError("Enter the image file as an absolute path, e.g. /srv/images/new-disk.img.");
      const body = { name: name.value.trim(), path: path.value.trim() };
      if (size.value) body.size_bytes = Number(size.value) * GB;
      if (host && host.value) body.agent_id = host.value;
      const out = await api.post(`/backups/${b.id}/create-disk`, body);
      started(`Disk ${body.name} is being created`, out);
    },
  });
}

export async function verifyBackup(b) {
  try {
    started(`Verification of ${b.name}`, await api.post(`/backups/${b.id}/verify`));
  } catch (e) {
    toast(e.message, "error");
  }
}

export function deleteBackups(list) {
  const one = list.length === 1;
  return confirmDialog({
    title: one ? "Delete Backup" : `Delete ${list.length} Backups`,
    message: [
      h("p", one ? ["Are you sure you want to delete backup ", h("b", list[0].name), "?"] : `Are you sure you want to delete these ${list.length} backups?`),
      one ? null : h("ul", list.slice(0, 10).map((b) => h("li", b.name)), list.length > 10 ? h("li", `and ${list.length - 10} more`) : null),
      h("div.alert.warn", "Deleted backups cannot be used to restore data. Other backups stay restorable."),
    ],
    onOk: async () => {
      const errors = [];
      for (const b of list) {
        try { await api.del(`/backups/${b.id}`); } catch (e) { errors.push(`${b.name}: ${e.message}`); }
      }
      if (errors.length) throw new UserError(errors.join("; "));
      toast(one ? `Backup ${list[0].name} is being deleted.` : `${list.length} backups are being deleted.`, "ok");
    },
  });
}

export async function downloadBackup(b) {
  if (b.logical_bytes > 2 * GB) {
    const go = await confirmDialog({
      title: "Download Image", okText: "Download anyway", danger: false,
      message: [h("p", `The image is ${fmtBytes(b.logical_bytes)}. The browser keeps the whole download in memory before saving it.`),
        h("p", "For large disks use the command line, which writes a sparse file as it downloads: ", h("code", `cbr backup export ${b.id} --output ${b.name}.img`))],
    });
    if (!go) return;
  }
  const t = toast(`Preparing ${b.name}.img (${fmtBytes(b.logical_bytes)})…`, "info", { timeout: 0 });
  try {
    const resp = await api.raw(`/backups/${b.id}/export`);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `${b.name || b.id}.img` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    toast(e.message, "error");
  } finally {
    t.remove();
  }
}

// ------------------------------------------------------------------------------------------------ files
export function browseFiles(b) {
  let path = "/";
  const picked = new Set();
  const crumbs = h("nav.crumbs", { "aria-label": "Path" });
  const listing = h("div", loading());
  const count = h("span.hint");
  const dest = h("input", { type: "text", name: "destination", placeholder: "/srv/restore", spellcheck: "false" });
  const draw = (entries) => {
    const parts = path.split("/").filter(Boolean);
    clear(crumbs, h("button.link", { type: "button", onclick: () => go("/") }, "/"),
      parts.map((p, i) => [h("span", i ? "/" : ""), h("button.link", { type: "button", onclick: () => go(`/${parts.slice(0, i + 1).join("/")}`) }, p)]));
    const rows = [...entries].sort((a, c) => (a.type === "dir") === (c.type === "dir") ? a.name.localeCompare(c.name) : a.type === "dir" ? -1 : 1);
    if (path !== "/") rows.unshift({ name: "..", path: `/${parts.slice(0, -1).join("/")}`, type: "up" });
    clear(listing, table([
      { title: "", render: (e) => e.type === "up" ? "" : h("input", { type: "checkbox", checked: picked.has(e.path), "aria-label": `Select ${e.name}`,
        onchange: (ev) => { ev.target.checked ? picked.add(e.path) : picked.delete(e.path); sync(); } }) },
      { title: "Name", render: (e) => (e.type === "dir" || e.type === "up" || e.type === "partition")
        ? h("button.link.entry", { type: "button", onclick: () => go(e.path) }, h("span.file-icon", "▸"), e.name)
        : h("span.entry", h("span.file-icon", e.type === "symlink" ? "↪" : "·"), e.name, e.link_target ? h("span.hint", ` → ${e.link_target}`) : null) },
      { title: "Type", render: (e) => (e.type === "up" ? "" : e.type) },
      { title: "Size", cls: "num", render: (e) => (e.type === "file" ? fmtBytes(e.size) : "") },
      { title: "Modified", render: (e) => (e.mtime ? fmtTime(new Date(e.mtime * 1000)) : "") },
    ], rows, { empty: "This directory is empty." }));
  };
  const go = async (p) => {
    path = p || "/";
    clear(listing, loading());
    try {
      draw((await api.get(`/backups/${b.id}/files`, { path })).entries || []);
    } catch (e) {
      clear(listing, errorAlert(e));
    }
  };
  const sync = () => { count.textContent = picked.size ? `${picked.size} selected: ${[...picked].slice(0, 3).join(", ")}${picked.size > 3 ? ", …" : ""}` : "Nothing selected"; };
  sync();
  go("/");
  return openDialog({
    title: `Files in ${b.name}`, okText: "Restore Selected", wide: true,
    body: h("div",
      h("p.hint", `${b.resource_name} · backed up ${fmtTime(b.created_at)}. Select files or directories to restore them into a directory; the original ${b.resource_type === "OS::Sfs::Turbo" ? "file system" : "disk"} is left alone.`),
      crumbs, listing,
      h("div.form", { style: { marginTop: "14px" } },
        field("Selection", count),
        field("Restore to directory", dest, "An absolute directory on the OpenCBR machine; each item is restored as <directory>/<name>. Nothing is overwritten."))),
    onOk: async () => {
      if (!picked.size) throw new UserError("Select at least one file or directory to restore.");
      if (!dest.value.trim().startsWith("/")) throw new UserError("Enter the destination as an absolute directory path, e.g. /srv/restore.");
      started(`Restoration of ${picked.size} item${picked.size === 1 ? "" : "s"}`,
        await api.post(`/backups/${b.id}/restore-files`, { paths: [...picked], destination_path: dest.value.trim() }));
    },
  });
}

// ------------------------------------------------------------------------------------------------ details
export function backupDetails(b, vaultName) {
  const kind = byResourceType(b.resource_type);
  const ei = b.extend_info || {};
  const kv = (pairs) => h("dl.kv", pairs.filter(Boolean).map(([k, v]) => [h("dt", k), h("dd", v ?? "--")]));
  return openDialog({
    title: `Backup ${b.name}`, noOk: true, wide: true,
    body: h("div",
      b.error_info && b.error_info.message ? h("div.alert.error", h("b", "Failure cause: "), b.error_info.message) : null,
      kv([
        ["Name", b.name], ["ID", h("span.mono", b.id)], ["Status", badge(b.status)],
        ["Type", `${ei.auto_trigger ? "Automatic" : "Manual"} · ${b.incremental ? "Incremental" : "Full"}${b.full ? " (full requested)" : ""}`],
        [kind.Noun, h("span", b.resource_name, h("span.sub", b.resource_id))],
        ["Vault", h("a", { href: `#/vault/${b.vault_id}` }, vaultName || b.vault_id)],
        ["Source size", `${b.resource_size} GB`], ["Backup size (logical)", fmtBytes(b.logical_bytes)],
        ["Added to the vault", fmtBytes(b.added_bytes)], ["Encrypted", ei.encrypted ? "Yes" : "No"],
        ["Consistency", b.consistency ? `${CONSISTENCY[b.consistency.method] || b.consistency.method || ""}${b.consistency.note ? ` — ${b.consistency.note}` : ""}` : "--"],
        ["Created", fmtTime(b.created_at)], ["Completed", fmtTime(b.protected_at)],
        ["Expires", b.expired_at ? fmtTime(b.expired_at) : "Never (kept until deleted)"],
        ["Description", b.description || "--"], ["Availability zone", b.resource_az || "--"],
        b.task_id ? ["Task", h("a", { href: `#/tasks?task_id=${b.task_id}` }, b.task_id)] : null,
        ...replicaSourceRows(b),
      ]),
      replicationRecords(b),
      b.children && b.children.length ? [h("h3", { style: { marginTop: "16px" } }, "Disks in this server backup"), table([
        { title: "Disk", render: (k) => h("div", k.resource_name, h("span.sub", k.resource_id)) },
        { title: "Role", render: (k) => k.disk_role || "data" },
        { title: "Size", cls: "num", render: (k) => `${k.resource_size} GB` },
        { title: "Logical", cls: "num", render: (k) => fmtBytes(k.logical_bytes) },
        { title: "Added", cls: "num", render: (k) => fmtBytes(k.added_bytes) },
        { title: "Status", render: (k) => badge(k.status) },
        { title: "", render: (k) => writeGuard(h("button.link", { type: "button", disabled: k.status !== "available", onclick: () => createDisk({ ...k, name: `${b.name}/${k.resource_name}` }) }, "Create Disk")) },
      ], b.children)] : null),
  });
}

// ------------------------------------------------------------------------------------------------ sharing
// Guide 4.2 (sharer): share a server or disk backup with other projects of the region (at most 10), see
// their answers, cancel sharing. The recipients answer on their "Shared with Me" page (pages/shared.js).
export function shareBackup(b) {
  const list = h("div", loading());
  const projects = h("textarea", { name: "share-projects", rows: "2", spellcheck: "false", placeholder: "Project IDs, one per line" });
  const draw = async () => {
    try {
      const members = (await api.get(`/backups/${b.id}/members`)).members || [];
      clear(list, table([
        { title: "Project", render: (m) => h("span.mono", m.dest_project_id) },
        { title: "Status", render: (m) => badge(m.status) },
        { title: "Shared", render: (m) => fmtTime(m.created_at) },
        { title: "", render: (m) => writeGuard(h("button.link", { type: "button", onclick: () => unshare(m) }, "Cancel Sharing")) },
      ], members, { empty: "Not shared with any project yet.", rowAttrs: (m) => ({ dataset: { memberId: m.dest_project_id } }) }));
    } catch (e) {
      clear(list, errorAlert(e));
    }
  };
  const unshare = async (m) => {
    try {
      await api.del(`/backups/${b.id}/members/${m.dest_project_id}`);
      toast(`Sharing with project ${m.dest_project_id.slice(0, 8)} cancelled.`, "ok");
    } catch (e) {
      toast(e.message, "error");
    }
    draw();
  };
  draw();
  return openDialog({
    title: `Share Backup ${b.name}`, okText: "Share", wide: true,
    body: h("div",
      h("p.hint", `${b.resource_name} · backup ${b.id}. Each project accepts the backup into one of its vaults (where it counts ` +
        "against the capacity) or rejects it; it can then create disks from it. A backup is shared with at most 10 projects; " +
        "encrypted backups cannot be shared. Deleting the backup removes it from their accounts too; disks they made stay."),
      h("h3", "Shared with"), list,
      h("div.form", field("Add projects", projects, "The IDs of projects of this region, one per line."))),
    onOk: async () => {
      const ids = projects.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
      if (!ids.length) throw new UserError("Enter the ID of at least one project.");
      await api.post(`/backups/${b.id}/members`, { members: ids });
      toast(`Backup ${b.name} shared with ${ids.length} project${ids.length === 1 ? "" : "s"}.`, "ok");
    },
  });
}
export { replicable, replicateBackup } from "./replicas.js";
