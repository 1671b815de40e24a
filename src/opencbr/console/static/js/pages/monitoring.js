// Guide chapter 10: per-vault metrics used_vault_size (used capacity) and vault_util (capacity usage %),
// as a bar chart against each vault's capacity and alarm threshold.
import { api } from "../api.js";
import { listVaults } from "../data.js";
import { KINDS, byObjectType } from "../kinds.js";
import { GB, badge, clear, errorAlert, fmtBytes, h, icon, loading, select } from "../ui.js";

export async function render(main, { query }, ctx) {
  document.title = "Monitoring · OpenCBR";
  const typeSel = select([["", "All vault types"], ...Object.values(KINDS).map((k) => [k.objectType, k.title])], "", { "aria-label": "Vault type" });
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const stamp = h("span.hint");
  const cards = h("div.grid.cols-4");
  const chart = h("div.card", loading());
  clear(main,
    h("div.page-head", h("h1", "Monitoring"), h("span.spacer"), stamp, typeSel, refresh),
    cards, h("div", { style: { marginTop: "16px" } }, chart));
  const focus = query.get("vault");
  let vaults = [];
  let summary = null;

  const stat = (label, value, sub) => h("div.card.stat", h("span.label", label), h("span.value", value), sub ? h("span.sub", sub) : null);

  const draw = () => {
    const list = vaults.filter((v) => !typeSel.value || v.billing.object_type === typeSel.value)
      .map((v) => ({ v, pct: v.billing.size ? (v.used_bytes / (v.billing.size * GB)) * 100 : 0 }))
      .sort((a, b) => b.pct - a.pct);
    const totalCap = vaults.reduce((s, v) => s + v.billing.size, 0);
    const used = vaults.reduce((s, v) => s + v.used_bytes, 0);
    const over = vaults.filter((v) => v.billing.size && (v.used_bytes / (v.billing.size * GB)) * 100 >= (v.threshold || 80));
    clear(cards,
      stat("Vaults", String(vaults.length), Object.values(KINDS).map((k) => `${vaults.filter((v) => v.billing.object_type === k.objectType).length} ${k.key}`).join(" · ")),
      stat("Total capacity", `${totalCap} GB`, summary ? `summary: ${summary.size} GB` : ""),
      stat("Used capacity", fmtBytes(used), totalCap ? `${((used / (totalCap * GB)) * 100).toFixed(2)}% of the capacity` : ""),
      stat("Above alarm threshold", String(over.length), over.length ? over.map((v) => v.name).join(", ") : "every vault is below its threshold"));
    const row = ({ v, pct }) => {
      const cls = pct >= 100 ? "full" : pct >= (v.threshold || 80) ? "warn" : "";
      return h(`div.chart-row${v.id === focus ? ".focus" : ""}`, { dataset: { vaultId: v.id }, id: `m-${v.id}` },
        h("div.name", { title: v.id }, h("a", { href: `#/vault/${v.id}` }, v.name), " ", h("span.hint", byObjectType(v.billing.object_type).key)),
        h("div.track", { role: "img", "aria-label": `${v.name}: ${pct.toFixed(2)}% used` },
          h(`div.fill${cls ? "." + cls : ""}`, { style: { width: `${Math.min(100, pct)}%` } }),
          h("div.threshold", { title: `Alarm threshold ${v.threshold || 80}%`, style: { left: `${v.threshold || 80}%` } })),
        h("div.val", `${pct < 0.01 && pct > 0 ? "<0.01" : pct.toFixed(2)}% · ${fmtBytes(v.used_bytes)} / ${v.billing.size} GB`));
    };
    clear(chart, h("h2", "Capacity usage per vault"),
      list.length ? h("div.chart", h("div.axis", h("span"), h("div.ticks", ["0%", "25%", "50%", "75%", "100%"].map((t) => h("span", t))), h("span")), list.map(row))
        : h("div.empty", h("b", "No vaults"), "Create a vault to see its usage here."),
      h("p.footer-note", "Bars show used capacity against each vault's capacity; the dark mark is the vault's alarm threshold. Refreshed every 15 seconds."));
    if (focus) {
      const el = document.getElementById(`m-${focus}`);
      if (el) el.scrollIntoView({ block: "center" });
      const v = vaults.find((x) => x.id === focus);
      if (v && !chart.querySelector(".focus-card")) {
        chart.before(h("div.card.focus-card", { style: { marginBottom: "16px" } }, h("h2", `Vault ${v.name}`), h("dl.kv",
          h("dt", { title: "metric used_vault_size" }, "Used capacity"), h("dd", `${(v.used_bytes / GB).toFixed(3)} GB (${fmtBytes(v.used_bytes)})`),
          h("dt", { title: "metric vault_util" }, "Capacity usage"), h("dd", `${((v.used_bytes / (v.billing.size * GB)) * 100).toFixed(2)} %`),
          h("dt", "Capacity"), h("dd", `${v.billing.size} GB`), h("dt", "Status"), h("dd", badge(v.billing.status)))));
      }
    }
  };

  const load = async () => {
    try {
      [vaults, summary] = await Promise.all([listVaults(), api.get("/vaults/summary").catch(() => null)]);
      if (!ctx.alive) return false;
      stamp.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      draw();
    } catch (e) {
      if (ctx.alive) clear(chart, errorAlert(e));
    }
    return true;
  };
  typeSel.addEventListener("change", draw);
  refresh.addEventListener("click", load);
  await load();
  ctx.poll(load, 15000);
}
