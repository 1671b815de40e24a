// Guide 6.2, 13.1.4, 13.7.3: full-server images made from server backups, and servers made from them.
// createImage is the "Create Image" action of a server backup (pages/backups.js).
import { api } from "../api.js";
import { taskLink } from "../data.js";
import {
  UserError, badge, clear, confirmDialog, errorAlert, field, fmtBytes, fmtTime, h, icon, loading, moreMenu, openDialog,
  switchControl, table, timeCell, toast, writeGuard, zoneName,
} from "../ui.js";

const NAME_RE = /^[A-Za-z0-9_.\- ]{1,128}$/;

/** The "Create Image" dialog of a server backup (or replica) that holds the system disk. */
export function createImage(b) {
  const name = h("input", { type: "text", name: "image-name", value: `${(b.resource_name || "server").replace(/[^A-Za-z0-9_.\- ]/g, "-").slice(0, 100)}-image`, maxlength: "128" });
  const description = h("input", { type: "text", name: "image-description", maxlength: "255" });
  return openDialog({
    title: "Create Image", okText: "Create",
    body: h("div",
      h("p", "Create a full-server image from backup ", h("b", b.name), ` of ${b.resource_name} (${fmtTime(b.created_at)}).`),
      h("div.alert.info", "One image per backup. While the image exists the backup cannot be deleted, and retention neither deletes nor counts it."),
      h("div.form", field("Name", name, "1 to 128 letters, digits, spaces, _ - or ."), field("Description", description))),
    onOk: async () => {
      const n = name.value.trim();
      if (!NAME_RE.test(n)) throw new UserError("An image name has 1 to 128 letters, digits, spaces, _ - or .");
      const out = await api.post("/images", { image: { backup_id: b.id, name: n, description: description.value } });
      toast(`Image ${out.image.name} created.`, "ok", { link: { href: "#/images", text: "View images" } });
    },
  });
}

/** The "Create Server" dialog: the new disks go into a directory, or at one path per disk. */
export function createServer(image) {
  const name = h("input", { type: "text", name: "server-name", value: `${image.source_resource_name || "server"}-new`.slice(0, 64), maxlength: "255" });
  const directory = h("input", { type: "text", name: "server-directory", placeholder: "/srv/vms", spellcheck: "false" });
  const paths = image.disks.map((d, i) => h("input", { type: "text", name: `server-path-${i}`, spellcheck: "false",
    placeholder: `/srv/vms/new-${i + 1}.img`, "aria-label": `Path of the ${d.disk_role} disk` }));
  const mode = h("div.seg", { role: "radiogroup", "aria-label": "Where the disks go" },
    h("label", h("input", { type: "radio", name: "diskmode", value: "dir", checked: true }), "Into a directory"),
    h("label", h("input", { type: "radio", name: "diskmode", value: "paths" }), "One path per disk"));
  const powerOn = switchControl(false, "Register the server as running");
  const dirRows = field("Directory", directory, "An absolute directory on the OpenCBR machine; the disks are written there as <name>-1.img (system), <name>-2.img, …");
  const pathRows = image.disks.flatMap((d, i) => field(`${d.disk_role === "system" ? "System" : "Data"} disk (${fmtBytes(d.size_bytes)})`, paths[i]));
  const body = h("div",
    h("p", "Create a new server from image ", h("b", image.name), `: ${image.disks.length} new disk${image.disks.length === 1 ? "" : "s"}, ${fmtBytes(image.size_bytes)} in all.`),
    h("div.form", field("Server name", name), field("Disks", mode), dirRows, pathRows, field("Power", powerOn)));
  const sync = () => {
    const byDir = body.querySelector("input[name=diskmode]:checked").value === "dir";
    dirRows.forEach((el) => { el.hidden = !byDir; });
    pathRows.forEach((el) => { el.hidden = byDir; });
  };
  body.addEventListener("change", sync);
  sync();
  return openDialog({
    title: "Create Server", okText: "Create Now", wide: true, body,
    onOk: async () => {
      const server = { name: name.value.trim(), power_on: powerOn.querySelector("input").checked };
      if (!server.name) throw new UserError("Enter a name for the new server.");
      if (body.querySelector("input[name=diskmode]:checked").value === "dir") {
        if (!directory.value.trim().startsWith("/")) throw new UserError("Enter the directory as an absolute path, e.g. /srv/vms.");
        server.directory = directory.value.trim();
      } else {
        server.paths = paths.map((p) => p.value.trim());
        if (!server.paths.every((p) => p.startsWith("/"))) throw new UserError("Enter every disk's path as an absolute path.");
      }
      const out = await api.post(`/images/${image.id}/servers`, { server });
      toast(`Server ${server.name} is being created.`, "ok", { link: taskLink(out.operation_log_id) });
    },
  });
}

function deleteImage(image) {
  return confirmDialog({
    title: "Delete Image",
    message: [h("p", "Are you sure you want to delete image ", h("b", image.name), "?"),
      h("div.alert.warn", "Servers made from the image stay. Its backup can then be deleted, and retention treats it like any other backup.")],
    onOk: async () => {
      await api.del(`/images/${image.id}`);
      toast(`Image ${image.name} deleted.`, "ok");
    },
  });
}

export async function render(main, _params, ctx) {
  document.title = "Images · OpenCBR";
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const search = h("input", { type: "search", name: "name", placeholder: "Image name" });
  const form = h("form.filters", { role: "search" }, h("label", "Name", search), h("button.btn.primary", { type: "submit" }, "Search"));
  const holder = h("div", loading());
  clear(main, h("div.page-head", h("h1", "Images"), h("span.spacer"), refresh),
    h("p.hint", `Full-server images made from server backups (Backups tab, More › Create Image). Any number of servers can be made from one image. Times in ${zoneName()}.`),
    form, holder);
  const after = (p) => Promise.resolve(p).then((ok) => { if (ok) load(); });
  const load = async () => {
    try {
      const out = await api.get("/images", { name: search.value.trim() });
      if (!ctx.alive) return;
      clear(holder, table([
        { title: "Name/ID", render: (i) => h("div", h("b", i.name), h("span.sub", i.id)) },
        { title: "Status", render: (i) => badge(i.status === "active" ? "available" : i.status, { label: i.status === "active" ? "Active" : i.status }) },
        { title: "Made from", render: (i) => h("div", i.source_resource_name || "--", h("span.sub", `${i.source_image_type === "replication" ? "replica" : "backup"} ${i.backup_id}`)) },
        { title: "Disks", render: (i) => i.disks.map((d) => `${d.disk_role} ${fmtBytes(d.size_bytes)}`).join(", ") },
        { title: "Size", cls: "num", render: (i) => fmtBytes(i.size_bytes) },
        { title: "Servers", cls: "num", tip: "Servers made from this image", render: (i) => String(i.servers_created) },
        { title: "Created", cls: "nowrap", render: (i) => timeCell(i.created_at) },
        { title: "Operation", render: (i) => h("div.ops",
          writeGuard(h("button.link", { type: "button", onclick: () => after(createServer(i)) }, "Create Server")),
          moreMenu([{ label: "Delete", danger: true, write: true, onClick: () => after(deleteImage(i)) }])) },
      ], out.images || [], {
        caption: "Images",
        empty: h("div", h("b", "No images"), "Create one from a server backup: Backups tab, More › Create Image."),
        rowAttrs: (i) => ({ dataset: { imageId: i.id, imageName: i.name } }),
      }));
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  refresh.addEventListener("click", load);
  await load();
}
