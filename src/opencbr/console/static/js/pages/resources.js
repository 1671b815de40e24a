// The resource inventory of the local provider: register disks (image files or block devices), servers
// (a system disk and data disks) and file systems (directories); list them with their status.
import { api } from "../api.js";
import { listInventory, listVaults } from "../data.js";
import {
  UserError, badge, clear, confirmDialog, errorAlert, field, fmtBytes, h, icon, loading, select, switchControl, table,
  timeCell, toast, writeGuard, openDialog,
} from "../ui.js";

const TABS = {
  disks: { title: "Disks", noun: "Disk" },
  servers: { title: "Servers", noun: "Server" },
  "file-systems": { title: "File Systems", noun: "File System" },
};

async function registerDialog(kind) {
  const name = h("input", { type: "text", name: "res-name", maxlength: "64" });
  const description = h("input", { type: "text", name: "res-description", placeholder: "optional" });
  const az = h("input", { type: "text", name: "res-az", placeholder: "default" });
  let body;
  let build;
  if (kind === "disks") {
    const path = h("input", { type: "text", name: "res-path", placeholder: "/srv/images/data1.img or /dev/vdb", spellcheck: "false" });
    const encrypted = switchControl(false, "The disk is encrypted (its backups are encrypted too)");
    body = h("div.form", field("Name", name), field("Path", path, "A raw disk-image file or a block device on the OpenCBR machine; its size is read from it."),
      field("Encryption", encrypted), field("Availability zone", az), field("Description", description));
    build = () => {
      if (!path.value.trim().startsWith("/")) throw new UserError("Enter the disk path as an absolute path.");
      return { name: name.value.trim(), path: path.value.trim(), encrypted: encrypted.querySelector("input").checked };
    };
  } else if (kind === "file-systems") {
    const path = h("input", { type: "text", name: "res-path", placeholder: "/srv/share", spellcheck: "false" });
    body = h("div.form", field("Name", name), field("Directory", path, "A directory on the OpenCBR machine."), field("Availability zone", az), field("Description", description));
    build = () => {
      if (!path.value.trim().startsWith("/")) throw new UserError("Enter the directory as an absolute path.");
      return { name: name.value.trim(), path: path.value.trim() };
    };
  } else {
    const disks = (await listInventory("disks")).filter((d) => !d.server_id);
    const sys = select([["", "Choose the system disk"], ...disks.map((d) => [d.id, `${d.name} (${fmtBytes(d.size_bytes)})`])], "", { name: "system-disk" });
    const data = h("div.pick-list", table([
      { title: "", render: (d) => h("input", { type: "checkbox", name: "data-disk", value: d.id, "aria-label": `Data disk ${d.name}` }) },
      { title: "Disk", render: (d) => h("div", d.name, h("span.sub", d.path)) },
      { title: "Size", cls: "num", render: (d) => fmtBytes(d.size_bytes) },
    ], disks, { empty: "No free disk: register disks first." }));
    const status = select([["running", "Running"], ["stopped", "Stopped"]], "running", { name: "power" });
    body = h("div.form", field("Name", name), field("System disk", sys), field("Data disks", data, "Optional. Disks attached to a server become In-use."),
      field("Power state", status), field("Availability zone", az), field("Description", description));
    build = () => {
      if (!sys.value) throw new UserError("Choose the system disk of the server.");
      const dd = [...data.querySelectorAll("input:checked")].map((i) => i.value).filter((x) => x !== sys.value);
      return { name: name.value.trim(), system_disk: sys.value, data_disks: dd, status: status.value };
    };
  }
  return openDialog({
    title: `Register ${TABS[kind].noun}`, okText: "Register", wide: kind === "servers", body,
    onOk: async () => {
      if (!name.value.trim()) throw new UserError("Enter a name.");
      const spec = build();
      if (az.value.trim()) spec.availability_zone = az.value.trim();
      if (description.value.trim()) spec.description = description.value.trim();
      const out = await api.post(`/inventory/${kind}`, spec);
      const res = out.disk || out.server || out.file_system;
      toast(`${TABS[kind].noun} ${res.name} registered.`, "ok");
      return res;
    },
  });
}

export async function render(main, { sub }, ctx) {
  const kind = TABS[sub] ? sub : "disks";
  document.title = `Resources · ${TABS[kind].title} · OpenCBR`;
  const regBtn = writeGuard(h("button.btn.primary", { type: "button" }, icon("plus"), `Register ${TABS[kind].noun}`));
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const holder = h("div", loading());
  clear(main,
    h("div.page-head", h("h1", "Resources"), h("span.spacer"), regBtn),
    h("div.tabs", { role: "tablist" }, Object.entries(TABS).map(([k, t]) =>
      h("a", { href: `#/resources/${k}`, role: "tab", "aria-selected": String(k === kind) }, t.title))),
    h("div.toolbar", h("span.hint", "Resources on the machines that run OpenCBR and on the agents' hosts. Associate them with a vault to back them up."), h("span.spacer"), refresh),
    holder);

  let rows = [];
  let vaultNames = {};
  let serverVaults = {};
  let serverNames = {};
  const draw = () => {
    const after = (p) => p.then((ok) => { if (ok) load(); });
    const power = (r, status) => api.put(`/inventory/servers/${r.id}`, { status })
      .then(() => { toast(`Server ${r.name} is ${status}.`, "ok"); load(); }).catch((e) => toast(e.message, "error"));
    clear(holder, table([
      { title: "Name/ID", render: (r) => h("div", r.name, h("span.sub", r.id)) },
      // why a resource is in error (its agent unregistered or offline, its image gone): said, not only flagged
      { title: "Status", render: (r) => h("div", badge(r.status), r.status_reason && r.status !== "available" ? h("span.sub.error-text", r.status_reason) : null) },
      { title: "Size", cls: "num", render: (r) => fmtBytes(r.size_bytes) },
      kind === "servers"
        ? { title: "Disks", render: (r) => h("div", (r.disks || []).map((d) => h("div", `${d.name} `, h("span.hint", `${d.role || "data"} · ${fmtBytes(d.size_bytes)}`)))) }
        : { title: kind === "disks" ? "Path" : "Directory", render: (r) => h("span.mono", r.path) },
      kind === "disks" ? { title: "Attached to", render: (r) => (r.server_id ? h("span", r.role === "system" ? "system disk of " : "data disk of ", h("b", { title: r.server_id }, serverNames[r.server_id] || r.server_id.slice(0, 8))) : h("span.hint", "--")) } : null,
      {
        title: "Vault", cls: "nowrap", render: (r) => (r.vault_id
          ? h("span", h("a", { href: `#/vault/${r.vault_id}` }, vaultNames[r.vault_id] || r.vault_id.slice(0, 8)),
            // a disk of a protected server is protected through the server
            kind === "disks" && r.server_id && serverVaults[r.vault_id] ? h("span.sub", "through its server") : null)
          : h("span.hint", "Not protected")),
      },
      { title: "AZ", cls: "nowrap", render: (r) => r.availability_zone || "--" },
      { title: "Registered", cls: "nowrap", render: (r) => timeCell(r.created_at) },
      {
        title: "Operation", render: (r) => h("div.ops",
          kind === "servers" ? writeGuard(h("button.link", { type: "button", onclick: () => power(r, r.status === "running" ? "stopped" : "running") }, r.status === "running" ? "Stop" : "Start")) : null,
          writeGuard(h("button.link", {
            type: "button", onclick: () => after(confirmDialog({
              title: `Remove ${TABS[kind].noun}`,
              message: [h("p", "Remove ", h("b", r.name), " from the inventory?"),
                h("p.hint", "Only the registration is removed; the data on the machine stays. Its backups are kept.")],
              onOk: async () => { await api.del(`/inventory/${kind}/${r.id}`); toast(`${r.name} removed.`, "ok"); },
            })),
          }, "Remove"))),
      },
    ].filter(Boolean), rows, {
      caption: TABS[kind].title,
      empty: h("div", h("b", `No ${TABS[kind].title.toLowerCase()} registered`), `Register one to protect it.`),
      rowAttrs: (r) => ({ dataset: { resourceId: r.id, resourceName: r.name } }),
    }));
  };
  const load = async () => {
    try {
      const [r, v, srv] = await Promise.all([listInventory(kind), listVaults(), kind === "disks" ? listInventory("servers") : []]);
      if (!ctx.alive) return;
      rows = r;
      serverNames = Object.fromEntries(srv.map((x) => [x.id, x.name]));
      vaultNames = Object.fromEntries(v.map((x) => [x.id, x.name]));
      serverVaults = Object.fromEntries(v.map((x) => [x.id, x.billing.object_type === "server"]));
      draw();
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
  };
  regBtn.addEventListener("click", async () => { if (await registerDialog(kind)) load(); });
  refresh.addEventListener("click", load);
  await load();
}
