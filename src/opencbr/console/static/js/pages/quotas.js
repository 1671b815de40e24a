// Guide chapter 12: the project's quotas, used against the limit the operator set (no self-service:
// the operator raises them with `cbr admin quota set`).
import { api } from "../api.js";
import { clear, errorAlert, h, loading, meter, table } from "../ui.js";

const NAMES = { vault: "Vaults", backup: "Backups", capacity: "Vault capacity", policy: "Policies" };

const limitText = (q) => (q.quota < 0 ? "No limit" : `${q.quota}${q.unit === "GB" ? " GB" : ""}`);
const usedText = (q) => `${q.used}${q.unit === "GB" ? " GB" : ""}`;

export async function render(main) {
  document.title = "Quotas · OpenCBR";
  const body = h("div.card", loading());
  clear(main, h("div.page-head", h("h1", "Quotas")), body);
  try {
    const rows = (await api.get("/quotas")).quotas.resources;
    clear(body, h("h2", "Service quotas of this project"),
      table([
        { title: "Quota", render: (q) => NAMES[q.type] || q.type },
        { title: "Used", render: usedText },
        { title: "Limit", render: limitText },
        { title: "Usage", render: (q) => (q.quota < 0 ? "—" : meter(q.used, q.quota, { usedText: usedText(q), totalText: limitText(q) })) },
      ], rows, { caption: "Quotas", rowAttrs: (q) => ({ dataset: { quota: q.type } }) }),
      h("p.footer-note", "Quotas cannot be changed here: ask the operator of this installation for a higher quota."));
  } catch (e) {
    clear(body, errorAlert(e));
  }
}
