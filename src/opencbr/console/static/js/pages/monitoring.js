// Guide chapter 10: per-vault metrics used_vault_size (used capacity) and vault_util (capacity usage %),
// as a bar chart against each vault's capacity and alarm threshold, and over time (the scheduler samples
// every 15 minutes; GET /vaults/{id}/metrics) as an inline SVG line chart.
import { api } from "../api.js";
import { listVaults } from "../data.js";
import { KINDS, byObjectType } from "../kinds.js";
import { GB, badge, clear, confirmDialog, copyable, errorAlert, field, fmtBytes, h, icon, isAdmin, loading, openDialog, select, table, timeCell, toast } from "../ui.js";

export async function render(main, { query }, ctx) {
  document.title = "Monitoring · OpenCBR";
  const typeSel = select([["", "All vault types"], ...Object.values(KINDS).map((k) => [k.objectType, k.title])], "", { "aria-label": "Vault type" });
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const stamp = h("span.hint");
  const cards = h("div.grid.cols-4");
  const chart = h("div.card", loading());
  const history = h("div.card#metric-history");
  const targets = h("div.card#alarm-targets");
  clear(main,
    h("div.page-head", h("h1", "Monitoring"), h("span.spacer"), stamp, typeSel, refresh),
    cards, h("div", { style: { marginTop: "16px" } }, history), h("div", { style: { marginTop: "16px" } }, chart),
    isAdmin() ? h("div", { style: { marginTop: "16px" } }, targets) : null);
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
  const over = usageOverTime(history, () => vaults, focus);
  typeSel.addEventListener("change", draw);
  refresh.addEventListener("click", async () => { await load(); over.reload(); });
  await load();
  over.reload();
  if (isAdmin()) alarmTargets(targets);
  ctx.poll(load, 15000);
}

// ------------------------------------------------------------------------------ usage over time
const METRICS = [["used_vault_size", "Used Vault Size (GB)"], ["vault_util", "Vault Usage (%)"]];
// Each range asks for the resolution the service keeps long enough (raw 15 min for a week, hours for a
// month, days for a year: docs/monitoring.md).
const RANGES = [["1d", "Last 24 hours", 86400e3, 900], ["7d", "Last 7 days", 7 * 86400e3, 3600],
  ["30d", "Last 30 days", 30 * 86400e3, 3600], ["1y", "Last year", 365 * 86400e3, 86400]];
const FILTERS = [["average", "Average"], ["max", "Maximum"], ["min", "Minimum"]];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function lineChart(points, { key, unit, from, to, maxValue, threshold }) {
  const W = 900, H = 260, L = 56, R = 12, T = 12, B = 28;
  const top = maxValue ?? niceMax(Math.max(0, ...points.map((p) => p[key])) * 1.1);
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", class: "metric-chart",
    "aria-label": `${points.length} points` });
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#ddd" }),
      svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#666" }, `${+v.toFixed(2)} ${unit}`));
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    const d = new Date(t);
    const label = to - from > 2 * 86400e3 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    chart.append(svg("text", { x: x(t), y: H - 8, "text-anchor": anchor, "font-size": 11, fill: "#666" }, label));
  }
  if (threshold !== undefined) {
    chart.append(svg("line", { x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), stroke: "#7a4b00", "stroke-dasharray": "6 4" },
      svg("title", {}, `Alarm threshold ${threshold}%`)));
  }
  if (points.length) {
    const path = points.map((p, i) => `${i ? "L" : "M"}${x(p.timestamp).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    chart.append(svg("path", { d: path, fill: "none", stroke: "var(--primary, #1a73e8)", "stroke-width": 2 }));
    for (const p of points) {
      const dot = svg("circle", { cx: x(p.timestamp), cy: y(p[key]), r: points.length > 200 ? 1.2 : 2.5, fill: "var(--primary, #1a73e8)" });
      dot.append(svg("title", {}, `${new Date(p.timestamp).toLocaleString()}: ${p[key]} ${unit}`));
      chart.append(dot);
    }
  }
  return chart;
}

function usageOverTime(card, vaultsNow, focus) {
  const vaultSel = select([], "", { "aria-label": "Vault", id: "metric-vault" });
  const metricSel = select(METRICS, "used_vault_size", { "aria-label": "Metric", id: "metric-name" });
  const rangeSel = select(RANGES.map(([k, label]) => [k, label]), "1d", { "aria-label": "Time range", id: "metric-range" });
  const filterSel = select(FILTERS, "average", { "aria-label": "Aggregation", id: "metric-filter" });
  const body = h("div.metric-body", loading());
  clear(card, h("div.page-head", h("h2", "Usage over time"), h("span.spacer"), vaultSel, metricSel, rangeSel, filterSel), body);
  let chosen = focus || "";

  const reload = async () => {
    const vaults = vaultsNow();
    if (!vaults.length) {
      clear(body, h("div.empty", h("b", "No vaults"), "Create a vault; its usage is sampled every 15 minutes."));
      return;
    }
    if (!vaults.some((v) => v.id === chosen)) chosen = vaults[0].id;
    clear(vaultSel, ...vaults.map((v) => h("option", { value: v.id }, v.name)));
    vaultSel.value = chosen;
    const [, , span, period] = RANGES.find((r) => r[0] === rangeSel.value);
    const to = Date.now(), from = to - span;
    const metric = metricSel.value, filter = filterSel.value;
    try {
      const answer = await api.get(`/vaults/${chosen}/metrics`, { metric_name: metric, period, filter, from, to });
      const m = answer.metric;
      const points = answer.datapoints;
      const last = points.length ? points[points.length - 1][filter] : null;
      clear(body,
        h("p.hint", { title: `metric ${m.metric_name}` }, `${m.display_name} of vault ${vaultSel.selectedOptions[0].textContent}, `,
          `${FILTERS.find((f) => f[0] === filter)[1].toLowerCase()} per ${period / 60} minutes`,
          last === null ? "" : ` · latest ${last} ${m.unit}`),
        points.length ? lineChart(points, { key: filter, unit: m.unit, from, to, maxValue: metric === "vault_util" ? 100 : undefined,
          threshold: metric === "vault_util" ? (vaults.find((v) => v.id === chosen) || {}).threshold : undefined })
          : h("div.empty", h("b", "No data yet"), "The scheduler samples every vault every 15 minutes."));
    } catch (e) {
      clear(body, errorAlert(e));
    }
  };
  vaultSel.addEventListener("change", () => { chosen = vaultSel.value; reload(); });
  for (const s of [metricSel, rangeSel, filterSel]) s.addEventListener("change", reload);
  return { reload };
}

// ------------------------------------------------------------------------------ alarm targets
// Where the project's alarms go (a vault above its threshold, a failed backup, replication, verify or
// restore test): webhooks with a signed body, email addresses (docs/monitoring.md). Admins only.
function alarmTargets(card) {
  const list = h("div", loading());
  const add = h("button.btn.primary#alarm-target-add", { type: "button" }, "Add target");
  clear(card, h("div.page-head", h("h2", "Alarm targets"), h("span.spacer"), add),
    h("p.hint", "Alarms: a vault's usage crossing its threshold (once per crossing; vaults with notification off send none) and failed backup, replication, verify and restore-test tasks."),
    list);
  const reload = async () => {
    try {
      const [{ alarm_targets: rows }, { alarm_deliveries: sent }] = await Promise.all([
        api.get("/alarm-targets"), api.get("/alarm-deliveries", { limit: 10 })]);
      clear(list, table([
        { title: "Kind", render: (t) => t.kind },
        { title: "Address", render: (t) => t.address },
        { title: "Description", render: (t) => t.description },
        { title: "Created", render: (t) => timeCell(t.created_at) },
        { title: "", render: (t) => h("button.btn", { type: "button", "aria-label": `Delete target ${t.address}`, onclick: () => remove(t) }, "Delete") },
      ], rows, { empty: "No targets: alarms are recorded but sent nowhere." }),
      h("h3", "Latest deliveries"),
      table([
        { title: "Alarm", render: (d) => d.event === "vault_threshold" ? `vault ${d.payload.vault_name} at ${d.payload.vault_util}%` : `${d.payload.operation_type} failed: ${d.payload.resource_name || d.payload.vault_name || ""}` },
        { title: "Status", render: (d) => badge(d.status) },
        { title: "Tries", render: (d) => String(d.attempts) },
        { title: "Last error", render: (d) => d.last_error },
        { title: "Created", render: (d) => timeCell(d.created_at) },
      ], sent, { empty: "Nothing sent yet." }));
    } catch (e) {
      clear(list, errorAlert(e));
    }
  };
  const remove = (t) => confirmDialog({
    title: "Delete alarm target", message: `Stop sending alarms to ${t.address}?`, okText: "Delete",
    onOk: async () => { await api.del(`/alarm-targets/${t.id}`); await reload(); },
  });
  add.addEventListener("click", async () => {
    const kind = select([["webhook", "Webhook (signed HTTP POST)"], ["email", "Email"]], "webhook", { id: "alarm-kind" });
    const address = h("input#alarm-address", { type: "text", placeholder: "https://hooks.example.com/cbr", required: true });
    const note = h("input#alarm-description", { type: "text", maxLength: 255 });
    kind.addEventListener("change", () => { address.placeholder = kind.value === "email" ? "ops@example.com" : "https://hooks.example.com/cbr"; });
    const made = await openDialog({
      title: "Add alarm target", okText: "Add",
      body: h("div.form", field("Kind", kind), field("Address", address), field("Description", note)),
      onOk: async () => (await api.post("/alarm-targets", { alarm_target: { kind: kind.value, address: address.value.trim(), description: note.value } })).alarm_target,
    });
    if (!made) return;
    await reload();
    if (made.secret) {
      await openDialog({ title: "Webhook signing secret", noOk: true,
        body: h("div", h("p", "Shown once. The receiver verifies the X-OpenCBR-Signature header with it (docs/monitoring.md)."), copyable(made.secret)) });
    } else {
      toast(`Alarms will be sent to ${made.address}.`, "success");
    }
  });
  reload();
}
