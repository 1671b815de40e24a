// Guide 4.2 (recipient): "Backups Shared with Me" — the server and disk backups other projects shared
// with this one, with this project's answer. Accept one into a vault of the same kind with enough free
// space (it counts against it), reject it, and create disks from an accepted one.
import { api, session } from "../api.js";
import { createDisk } from "../backup-actions.js";
import { listVaults } from "../data.js";
import {
  GB, UserError, badge, clear, errorAlert, field, fmtBytes, h, icon, loading, moreMenu, openDialog, select, table, timeCell,
  toast, writeGuard,
} from "../ui.js";

const ANSWERS = [["", "All"], ["pending", "Pending"], ["accepted", "Accepted"], ["rejected", "Rejected"]];
const OBJECT_TYPE = { "OS::Nova::Server": "server", "OS::Cinder::Volume": "disk" };

async function accept(b, me) {
  const vaults = (await listVaults({ object_type: OBJECT_TYPE[b.resource_type] })).filter((v) => v.billing.protect_type === "backup");
  if (!vaults.length) throw new UserError(`You need a ${OBJECT_TYPE[b.resource_type]} backup vault to accept this backup: create one first.`);
  const free = (v) => v.billing.size * GB - v.used_bytes;
  const vaultSel = select(vaults.map((v) => [v.id, `${v.name} — ${fmtBytes(Math.max(0, free(v)))} free of ${v.billing.size} GB`]), vaults[0].id,
    { name: "accept-vault", "aria-label": "Vault" });
  return openDialog({
    title: "Accept Shared Backup", okText: "Accept",
    body: h("div",
      h("p", "Accept backup ", h("b", b.name), ` of ${b.resource_name} (${fmtBytes(b.logical_bytes)}) into one of your vaults.`),
      h("div.form", field("Vault", vaultSel, "Its remaining space must be greater than the size of the backup, which then counts against it."))),
    onOk: async () => {
      await api.put(`/backups/${b.id}/members/${me}`, { status: "accepted", vault_id: vaultSel.value });
      toast(`Backup ${b.name} accepted.`, "ok");
    },
  });
}

async function reject(b, me) {
  try {
    await api.put(`/backups/${b.id}/members/${me}`, { status: "rejected" });
    toast(`Backup ${b.name} rejected.`, "ok");
    return true;
  } catch (e) {
    toast(e.message, "error");
    return false;
  }
}

export async function render(main, { query }, ctx) {
  document.title = "Shared with Me · OpenCBR";
  const me = (session.get() || {}).project_id || "";
  const answer = select(ANSWERS, query.get("member_status") || "", { "aria-label": "Your answer", name: "member_status" });
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const holder = h("div", loading());
  clear(main,
    h("div.page-head", h("h1", "Backups Shared with Me")),
    h("p.hint", "Backups other projects shared with this one. Accept one into a vault to create disks from it; the sharer can " +
      "cancel sharing or delete the backup at any time (disks you made from it stay)."),
    h("div.toolbar", h("label", "Your answer ", answer), h("span.spacer"), refresh),
    holder);
  let vaultNames = {};
  const load = async () => {
    try {
      const [list, vaults] = await Promise.all([
        api.get("/backups", { own_type: "shared", member_status: answer.value, limit: 1000 }),
        listVaults().catch(() => []),
      ]);
      if (!ctx.alive) return;
      vaultNames = Object.fromEntries(vaults.map((v) => [v.id, v.name]));
      clear(holder, table([
        { title: "Name/ID", render: (b) => h("div", b.name, h("span.sub", b.id)) },
        { title: "Resource", render: (b) => h("div", b.resource_name || "--", h("span.sub", b.resource_type === "OS::Nova::Server" ? "Server" : "Disk")) },
        { title: "Status", render: (b) => badge(b.status) },
        { title: "Your answer", render: (b) => badge(b.member_status) },
        { title: "In vault", render: (b) => (b.vault_id ? h("a", { href: `#/vault/${b.vault_id}` }, vaultNames[b.vault_id] || b.vault_id.slice(0, 8)) : "--") },
        { title: "Size", cls: "num", render: (b) => fmtBytes(b.logical_bytes) },
        { title: "Shared by project", render: (b) => h("span.mono", (b.project_id || "").slice(0, 8)) },
        { title: "Created", cls: "nowrap", render: (b) => timeCell(b.created_at) },
        { title: "Operation", render: (b) => operations(b) },
      ], list.backups || [], {
        caption: "Backups shared with me", empty: h("div", h("b", "No backups are shared with you"), "Backups other projects share with this one appear here."),
        rowAttrs: (b) => ({ dataset: { backupId: b.id, backupName: b.name, memberStatus: b.member_status } }),
      }));
    } catch (e) {
      clear(holder, errorAlert(e));
    }
  };
  const after = (p) => Promise.resolve(p).then((ok) => { if (ok) load(); });
  const operations = (b) => {
    const usable = b.member_status === "accepted" && b.status === "available";
    const disks = b.resource_type === "OS::Nova::Server" ? (b.children || []) : [b];
    return h("div.ops",
      writeGuard(h("button.link", { type: "button", disabled: b.member_status === "accepted" || b.status !== "available", onclick: () => after(accept(b, me).catch((e) => toast(e.message, "error"))) }, "Accept")),
      writeGuard(h("button.link", { type: "button", disabled: b.member_status === "rejected", onclick: () => after(reject(b, me)) }, "Reject")),
      moreMenu([
        { label: "Accept into another vault", write: true, disabled: b.member_status !== "accepted", onClick: () => after(accept(b, me).catch((e) => toast(e.message, "error"))) },
        ...disks.map((d) => ({ write: true, label: `Create Disk${disks.length > 1 || d !== b ? ` from ${d.resource_name}` : ""}`, disabled: !usable,
          title: usable ? undefined : "Accept the backup first", onClick: () => createDisk({ ...d, name: d === b ? b.name : `${b.name}/${d.resource_name}` }) })),
      ]));
  };
  answer.addEventListener("change", load);
  refresh.addEventListener("click", load);
  await load();
}
