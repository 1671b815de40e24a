// The vault lock card of the vault details page (docs/vault-lock.md): its state, and for administrators
// setting, extending and lifting it. The service decides who may weaken a lock; its refusal is shown.
import { api } from "./api.js";
import { UserError, badge, confirmDialog, field, fmtTime, h, isAdmin, openDialog, select, toast } from "./ui.js";

const MODES = [["governance", "Governance — vault lock governors may lift or shorten it"],
  ["compliance", "Compliance — nobody can lift or shorten it until it ends"]];

function wholeDays(input, what) {
  const n = Number(input.value);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`Enter ${what}: a whole number of days, at least 1.`);
  return n;
}

// The dialog that sets a lock or makes it stronger (``lock`` is the current one, or null).
export function setLock(vault, lock) {
  const mode = select(MODES, lock && lock.mode ? lock.mode : "governance", { name: "mode", disabled: !!(lock && lock.active && lock.mode === "compliance") });
  const keep = h("input", { type: "number", name: "retention_days", min: "1", step: "1", value: String(lock && lock.retention_days ? lock.retention_days : 30) });
  const days = h("input", { type: "number", name: "lock_days", min: "1", step: "1", value: "365" });
  return openDialog({
    title: `${lock && lock.active ? "Extend" : "Set"} Vault Lock — ${vault.name}`, okText: "Lock",
    body: h("div.form",
      field("Mode", mode),
      field("Keep each backup (days)", keep, "No backup is deleted, by anybody or by retention, before it is this old."),
      field("Lock ends in (days)", days, lock && lock.active ? `Now it ends ${fmtTime(lock.until)}.` : "The vault cannot be deleted before then.")),
    onOk: async () => {
      const body = { lock: { mode: mode.value, retention_days: wholeDays(keep, "how long backups are kept"), lock_days: wholeDays(days, "when the lock ends") } };
      await api.put(`/vaults/${vault.id}/lock`, body);
      toast(`Vault ${vault.name} is locked (${mode.value}).`, "ok");
    },
  });
}

export function liftLock(vault) {
  return confirmDialog({
    title: `Lift Vault Lock — ${vault.name}`,
    message: "Backups of this vault can then be deleted again. A governance lock needs the vault lock governor permission.",
    okText: "Lift", onOk: () => api.del(`/vaults/${vault.id}/lock`),
  });
}

// The card: ``lock`` is the API's answer (its fields null when the vault has none).
export function lockCard(vault, lock, reloadAfter) {
  const admin = isAdmin();
  const state = lock.active ? badge("locked", { label: `Locked · ${lock.mode}` }) : badge("available", { label: lock.mode ? "Lock ended" : "Not locked" });
  return h("div.card", { id: "vault-lock" }, h("h2", "Vault Lock (WORM)"),
    h("dl.kv",
      h("dt", "State"), h("dd", state),
      lock.mode ? [h("dt", "Keeps each backup"), h("dd", `${lock.retention_days} days`),
        h("dt", "Lock ends"), h("dd", fmtTime(lock.until)),
        h("dt", "Set by"), h("dd", lock.set_by || "--")] : null),
    h("div.ops", { style: { marginTop: "12px" } },
      h("button.link", { type: "button", disabled: !admin, title: admin ? undefined : "Administrators set vault locks.", onclick: () => reloadAfter(setLock(vault, lock)) },
        lock.active ? "Extend" : "Set Lock"),
      lock.mode ? h("button.link", { type: "button", disabled: !admin || (lock.active && lock.mode === "compliance"), onclick: () => reloadAfter(liftLock(vault)) }, "Lift") : null));
}
