// Cross-region replication in the console (guide 3.6, 4.4): the "Create Replica" dialogs (one backup;
// a vault's backups) and where a replica came from / where a backup was replicated to, for the details.
import { api } from "./api.js";
import { UserError, badge, field, fmtBytes, fmtTime, h, openDialog, select, table, toast } from "./ui.js";

// Server, disk and SFS Turbo backups of backup vaults are replicated (guide 3.6, 4.4); replicas are not.
export const replicable = (b, vaultProtectType) =>
  b.status === "available" && b.image_type !== "replication" && vaultProtectType !== "replication";

async function destinations() {
  const caps = await api.get("/replication-capabilities");
  return ((caps.regions || [])[0] || {}).replication_destinations || [];
}

// The destination's region, project and replication vault: the ids the destination's console shows.
function targetFields(regions) {
  const region = select(regions.map((r) => [r, r]), regions[0] || "", { name: "destination-region" });
  const project = h("input", { type: "text", name: "destination-project", spellcheck: "false", placeholder: "Project ID in the destination region" });
  const vault = h("input", { type: "text", name: "destination-vault", spellcheck: "false", placeholder: "Replication vault ID in the destination region" });
  const rows = [
    ...field("Destination region", region, regions.length ? "A region linked by the operator (cbr admin region add)." : "No region is linked: the operator links one with cbr admin region add."),
    ...field("Destination project", project, "A project of your account in the destination region."),
    ...field("Destination vault", vault, "A replication vault of the same kind (server, disk or SFS Turbo) with room, in that project."),
  ];
  const value = () => {
    if (!region.value) throw new UserError("No destination region is linked to this region.");
    if (!project.value.trim()) throw new UserError("Enter the destination project ID.");
    if (!vault.value.trim()) throw new UserError("Enter the destination replication vault ID.");
    return { destination_region: region.value, destination_project_id: project.value.trim(), destination_vault_id: vault.value.trim() };
  };
  return { rows, value };
}

export async function replicateBackup(b) {
  const target = targetFields(await destinations());
  const name = h("input", { type: "text", name: "replica-name", value: `${(b.name || "replica").slice(0, 56)}-replica`, maxlength: "64" });
  const description = h("input", { type: "text", name: "replica-description", maxlength: "255" });
  return openDialog({
    title: "Create Replica", okText: "OK", wide: true,
    body: h("div",
      h("p", "Replicate backup ", h("b", b.name), ` of ${b.resource_name} (${fmtTime(b.created_at)}, ${fmtBytes(b.logical_bytes)}) to another region.`),
      h("div.form", field("Replica name", name), target.rows, field("Description", description)),
      h("p.hint", "Only what the destination vault lacks is sent. A backup has at most one replica per region; replicate it again after deleting its replica there.")),
    onOk: async () => {
      if (!name.value.trim()) throw new UserError("Enter a name for the replica.");
      const replicate = { ...target.value(), name: name.value.trim(), description: description.value.trim() };
      const out = await api.post(`/backups/${b.id}/replicate`, { replicate });
      toast(`Replication of ${b.name} to ${out.replication.destination_region} started.`, "ok");
    },
  });
}

export async function replicateVault(vault) {
  const target = targetFields(await destinations());
  return openDialog({
    title: `Create Replica — ${vault.name}`, okText: "OK", wide: true,
    body: h("div",
      h("p", "Replicate the Available backups of vault ", h("b", vault.name), " that have no replica in the destination region yet (failed replications are tried again)."),
      h("div.form", target.rows)),
    onOk: async () => {
      const out = await api.post("/checkpoints/replicate", { replicate: { ...target.value(), vault_id: vault.id } });
      const n = (out.replication.backups || []).length;
      toast(n ? `Replication of ${n} backup${n === 1 ? "" : "s"} to ${out.replication.destination_region} started.`
        : "Every backup of the vault has a replica in that region already.", "ok");
    },
  });
}

// Details of a backup: a replica's source; a backup's replicas (its replication records).
export function replicaSourceRows(b) {
  const src = b.replication_source;
  if (!src) return [];
  return [["Replicated from", h("span.replica-source", `${src.source_region} · ${src.source_backup_name || ""}`,
    h("span.sub", `backup ${src.source_backup_id} · project ${src.source_project_id}`))]];
}

export function replicationRecords(b) {
  const recs = b.replication_records || [];
  if (!recs.length) return null;
  return [h("h3", { style: { marginTop: "16px" } }, "Replicas in other regions"), table([
    { title: "Region", render: (r) => r.destination_region },
    { title: "Status", render: (r) => h("div", badge(r.status), r.extra_info && r.extra_info.fail_reason ? h("div.error-text", r.extra_info.fail_reason) : null) },
    { title: "Replica", render: (r) => h("span.mono", r.destination_backup_id || "--") },
    { title: "Vault", render: (r) => h("span.mono", r.destination_vault_id) },
    { title: "Sent", cls: "num", render: (r) => (r.wire_bytes ? fmtBytes(r.wire_bytes) : "--") },
    { title: "Started", render: (r) => fmtTime(r.created_at) },
  ], recs, { caption: "Replication records" })];
}
