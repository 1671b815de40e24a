// Loading lists from the API (all pages of them) for the pages and dialogs.
import { api } from "./api.js";

/** Every protectable resource of a type (the API pages by 50). */
export async function listProtectables(rtype) {
  const out = [];
  for (let offset = 0; offset < 5000; offset += 50) {
    const page = (await api.get(`/protectables/${rtype}/instances`, { limit: 50, offset })).instances || [];
    out.push(...page);
    if (page.length < 50) break;
  }
  return out;
}

export async function listVaults(params = {}) {
  return (await api.get("/vaults", { limit: 1000, ...params })).vaults || [];
}

export async function listPolicies(params = {}) {
  return (await api.get("/policies", params)).policies || [];
}

export async function listInventory(kind, params = {}) {
  return (await api.get(`/inventory/${kind}`, { limit: 1000, ...params })).resources || [];
}

export function policyOf(vault, policies) {
  const ids = vault.policy_ids || [];
  return policies.find((p) => ids.includes(p.id) && p.operation_type === "backup") ||
    policies.find((p) => ids.includes(p.id)) || null;
}

export function taskLink(id) {
  return { href: `#/tasks?task_id=${encodeURIComponent(id)}`, text: "View task" };
}
