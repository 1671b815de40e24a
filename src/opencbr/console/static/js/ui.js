// Small DOM helpers: element builder, formatters, badges, bars, dialogs, menus, toasts.
import { ApiError, parseTime, session } from "./api.js";

/** h("div.card#id", {attrs}, ...children): a DOM element. */
export function h(spec, attrs, ...children) {
  if (attrs instanceof Node || typeof attrs !== "object" || attrs === null || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || "div");
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k === "class") el.className = [el.className, v].filter(Boolean).join(" ");
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string" && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---------------------------------------------------------------------------------------- icons
const ICONS = {
  server: "M3 4h18v6H3zM3 14h18v6H3zM7 7h.01M7 17h.01",
  disk: "M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3v12c0 1.7-3.6 3-8 3s-8-1.3-8-3zM4 6c0 1.7 3.6 3 8 3s8-1.3 8-3",
  folder: "M3 6a1 1 0 0 1 1-1h5l2 2h9a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1z",
  policy: "M12 3 4 6v6c0 4.5 3.4 8.3 8 9 4.6-.7 8-4.5 8-9V6zM9 12l2 2 4-4",
  tasks: "M9 6h11M9 12h11M9 18h11M4 6l1 1 2-2M4 12l1 1 2-2M4 18l1 1 2-2",
  resources: "M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z",
  chart: "M4 20V10M10 20V4M16 20v-7M22 20H2",
  audit: "M6 3h9l4 4v14H6zM14 3v5h5M9 13h7M9 17h5",
  chevron: "M9 6l6 6-6 6",
  refresh: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
  plus: "M12 5v14M5 12h14",
  file: "M6 3h8l4 4v14H6zM14 3v4h4",
  lock: "M6 11h12v10H6zM8 11V7a4 4 0 0 1 8 0v4",
  link: "M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1",
};

export function icon(name, cls = "icon") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("fill", "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "2");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", cls);
  const p = document.createElementNS(ns, "path");
  p.setAttribute("d", ICONS[name] || "");
  svg.append(p);
  return svg;
}

// ---------------------------------------------------------------------------------------- formats
const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];

/** Human size, 1024-based like the vault capacities (GB). */
export function fmtBytes(n) {
  if (n === null || n === undefined || n === "" || isNaN(n)) return "--";
  n = Number(n);
  if (n < 1024) return `${n} B`;
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : Math.round(n)} ${UNITS[i]}`;
}

export const GB = 1024 ** 3;

const pad = (x) => String(x).padStart(2, "0");

/** A time in the browser's zone: 2026-01-31 14:05:09. */
export function fmtTime(value, { seconds = true } = {}) {
  const d = parseTime(value);
  if (!d) return "--";
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${s}:${pad(d.getSeconds())}` : s;
}

export function timeCell(value) {
  const d = parseTime(value);
  if (!d) return "--";
  return h("time", { datetime: d.toISOString(), title: `${d.toISOString().replace(".000", "")} (UTC)` }, fmtTime(d));
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || isNaN(ms) || ms < 0) return "--";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The browser's current UTC offset as the API writes zones: UTC+08:00. */
export function utcOffsetText(minutes = -new Date().getTimezoneOffset()) {
  const sign = minutes < 0 ? "-" : "+";
  const m = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(m / 60))}:${pad(m % 60)}`;
}

export function zoneName() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || utcOffsetText(); } catch { return utcOffsetText(); }
}

/** A local date input value (YYYY-MM-DD) as a UTC API time: start or end of that local day. */
export function localDayToUtc(value, endOfDay = false) {
  if (!value) return "";
  const [y, m, d] = value.split("-").map(Number);
  const dt = endOfDay ? new Date(y, m - 1, d, 23, 59, 59) : new Date(y, m - 1, d, 0, 0, 0);
  return dt.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function randomSuffix(n = 4) {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return Array.from(a, (x) => "0123456789abcdef"[x % 16]).join("");
}

export function nameId(name, id, href) {
  return h("div", href ? h("a", { href }, name || id) : h("span", name || "--"), h("span.sub", id || ""));
}

// ---------------------------------------------------------------------------------------- status
const TONES = {
  available: "green", success: "green", running: "green", enabled: "green", "in-use": "blue",
  creating: "blue", restoring: "blue", protecting: "blue", waiting: "plain", locked: "orange",
  deleting: "orange", stopped: "plain", skipped: "plain", disabled: "plain", error: "red", failed: "red",
  faulty: "red", timeout: "red", failure: "red", ACTIVE: "green", SHUTOFF: "plain", ERROR: "red",
};
const LABELS = {
  success: "Successful", "in-use": "In-use", timeout: "Timed out", waiting: "Waiting", failure: "Failed",
  protecting: "Creating", waiting_protect: "Waiting to back up", waiting_delete: "Waiting to delete",
  waiting_restore: "Waiting to restore", ACTIVE: "Running", SHUTOFF: "Stopped", ERROR: "Faulty",
};
const ACTIVE = new Set(["creating", "restoring", "running", "deleting", "protecting"]);

export function statusLabel(s) {
  if (!s) return "--";
  return LABELS[s] || s.charAt(0).toUpperCase() + s.slice(1).replace(/_/g, " ");
}

export function badge(status, { label, tone } = {}) {
  let t = tone || TONES[status] || "plain";
  if (!tone && ACTIVE.has(status) && status !== "running" && status !== "deleting") t = "blue";
  if (!tone && status === "running") t = "blue";
  return h(`span.badge.${t}`, { dataset: { status: status || "" } }, label || statusLabel(status));
}

/** A used/total meter: bar plus "used / total". */
export function meter(used, total, { usedText, totalText, threshold } = {}) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const cls = pct >= 100 ? "full" : threshold && pct >= threshold ? "warn" : "";
  return h("div.meter",
    h(`div.bar${cls ? "." + cls : ""}`, {
      role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": pct.toFixed(1),
      "aria-label": `${pct.toFixed(1)}% used`,
    }, h("span", { style: { width: `${pct}%` } })),
    h("div.legend", h("span", `${usedText ?? fmtBytes(used)} / ${totalText ?? fmtBytes(total)}`),
      h("span", `${pct < 1 && pct > 0 ? "<1" : Math.round(pct)}%`)));
}

/** A task progress bar (0-100) with its percentage. */
export function progress(pct, status) {
  pct = Math.max(0, Math.min(100, Number(pct) || 0));
  const cls = status === "success" ? "done" : ["failed", "timeout"].includes(status) ? "fail"
    : status === "running" ? "striped" : "";
  return h("div.meter",
    h(`div.bar${cls ? "." + cls : ""}`, {
      role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct),
      "aria-label": `progress ${pct}%`,
    }, h("span", { style: { width: `${pct}%` } })),
    h("div.legend", h("span.pct", `${pct}%`)));
}

// ---------------------------------------------------------------------------------------- roles
export function role() { return (session.get() || {}).role || ""; }
export function canWrite() { return ["admin", "member"].includes(role()); }
export function isAdmin() { return role() === "admin"; }
/** The backup-only role (docs/roles.md): may back up and make enrolment tokens, nothing else that changes,
 * restores or reads data. Its console shows no button it may not use (hidden, not disabled). */
export function backupOnly() { return role() === "backup"; }
export function canBackup() { return canWrite() || backupOnly(); }
export const READONLY_REASON =
  "Your role is read-only: you can view everything but not change it. Ask an administrator for the member role.";

function refuse(el) {
  el.disabled = true;
  el.title = READONLY_REASON;
  el.setAttribute("aria-disabled", "true");
  el.dataset.readonly = "1";
  return el;
}

/** A write action (change, delete, restore, read data): disabled for read-only users, saying why;
 * not shown at all to the backup-only role. */
export function writeGuard(el) {
  if (!canWrite()) {
    refuse(el);
    if (backupOnly()) el.hidden = true;
  }
  return el;
}

/** A backup action (Perform Backup, an enrolment token): every role but read-only. */
export function backupGuard(el) {
  return canBackup() ? el : refuse(el);
}

// ---------------------------------------------------------------------------------------- toasts
export function toast(message, kind = "info", { link, timeout = 6000 } = {}) {
  const box = document.getElementById("toasts");
  const t = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" },
    h("div", message, link ? [" ", h("a", { href: link.href }, link.text)] : null),
    h("button", { type: "button", "aria-label": "Dismiss", onclick: () => t.remove() }, "×"));
  box.append(t);
  if (timeout) setTimeout(() => t.remove(), kind === "error" ? Math.max(timeout, 10000) : timeout);
  return t;
}

export function errorText(e) {
  if (e instanceof ApiError) return e.message;
  return e && e.message ? e.message : String(e);
}

export function errorAlert(e) {
  const code = e instanceof ApiError && e.code ? h("span.code", e.code) : null;
  return h("div.alert.error", { role: "alert" }, h("div", h("b", "Error: "), errorText(e), code));
}

export function toastError(e) { toast(errorText(e), "error"); }

export class UserError extends Error {}

// ---------------------------------------------------------------------------------------- dialogs
/**
 * A modal dialog. onOk(dialog) may throw (ApiError or UserError): the message is shown in the dialog,
 * which stays open. Resolves with onOk's result, or null when cancelled.
 */
export function openDialog({ title, body, okText = "OK", okClass = "primary", cancelText = "Cancel", wide = false,
  onOk, noOk = false, okDisabled = false } = {}) {
  return new Promise((resolve) => {
    const errorBox = h("div.dialog-error", { "aria-live": "assertive" });
    const okBtn = noOk ? null : h(`button.btn.${okClass}`, { type: "submit", disabled: okDisabled }, okText);
    const cancelBtn = h("button.btn", { type: "button", onclick: () => close(null) }, noOk ? "Close" : cancelText);
    const titleId = `dlg-${randomSuffix(6)}`;
    const form = h("form", { method: "dialog", novalidate: true },
      h("header", h("h2", { id: titleId }, title),
        h("button.close", { type: "button", "aria-label": "Close", onclick: () => close(null) }, "×")),
      h("div.body", errorBox, body),
      h("footer", cancelBtn, okBtn));
    const dlg = h(`dialog${wide ? ".wide" : ""}`, { "aria-labelledby": titleId }, form);
    let done = false;
    const onLeave = () => close(null);  // following a link in the dialog, or Back, leaves the page
    window.addEventListener("hashchange", onLeave);
    const close = (value) => {
      if (done) return;
      done = true;
      window.removeEventListener("hashchange", onLeave);
      dlg.close();
      dlg.remove();
      resolve(value);
    };
    dlg.addEventListener("cancel", (ev) => { ev.preventDefault(); close(null); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!okBtn || okBtn.disabled) return;
      clear(errorBox);
      okBtn.disabled = true;
      const label = okBtn.textContent;
      okBtn.textContent = "Working…";
      try {
        const result = onOk ? await onOk(dlg) : true;
        if (result !== false) close(result === undefined ? true : result);
      } catch (e) {
        clear(errorBox, errorAlert(e));
        errorBox.scrollIntoView({ block: "nearest" });
      } finally {
        if (!done) { okBtn.disabled = false; okBtn.textContent = label; }
      }
    });
    dlg.setOk = (enabled) => { if (okBtn) okBtn.disabled = !enabled; };
    dlg.showError = (e) => clear(errorBox, e ? errorAlert(e) : null);
    document.body.append(dlg);
    dlg.showModal();
    const first = dlg.querySelector(".body input:not([type=hidden]):not([disabled]), .body select, .body textarea");
    (first || okBtn || cancelBtn).focus();
  });
}

export function confirmDialog({ title, message, okText = "Yes", danger = true, onOk }) {
  return openDialog({
    title, okText, okClass: danger ? "danger" : "primary", cancelText: "No",
    body: h("div", Array.isArray(message) ? message : [message]), onOk,
  });
}

// ---------------------------------------------------------------------------------------- menus
let openMenu = null;

function closeMenu() {
  if (openMenu) {
    openMenu.menu.remove();
    openMenu.button.setAttribute("aria-expanded", "false");
    openMenu = null;
  }
}

document.addEventListener("click", (ev) => {
  if (openMenu && !openMenu.menu.contains(ev.target) && !openMenu.button.contains(ev.target)) closeMenu();
});
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeMenu(); });
// The menu follows its button when something scrolls; it closes when the button leaves the view.
window.addEventListener("scroll", () => { if (openMenu) placeMenu(openMenu.menu, openMenu.button); }, true);
window.addEventListener("resize", closeMenu);

function placeMenu(menu, button) {
  const r = button.getBoundingClientRect();
  if (!button.isConnected || r.bottom < 0 || r.top > window.innerHeight || r.right < 0 || r.left > window.innerWidth) {
    closeMenu();
    return;
  }
  const mw = menu.offsetWidth, mh = menu.offsetHeight;
  menu.style.left = `${Math.max(8, Math.min(r.left, window.innerWidth - mw - 8))}px`;
  menu.style.top = `${r.bottom + mh + 4 > window.innerHeight ? Math.max(8, r.top - mh - 4) : r.bottom + 4}px`;
}
window.addEventListener("hashchange", closeMenu);

/** A "More ▾" button with a pop-up menu: items [{label, onClick, disabled, danger, title}] or "-". */
export function moreMenu(items, label = "More") {
  // (items marked ``write`` are write actions: the backup-only role does not see them)
  const shown = items.filter((x) => x && !(x.write && backupOnly()));
  const button = h("button.link", { type: "button", "aria-haspopup": "menu", "aria-expanded": "false" }, `${label} ▾`);
  if (!shown.some((x) => x !== "-")) button.hidden = true;
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();
    if (openMenu && openMenu.button === button) { closeMenu(); return; }
    closeMenu();
    const menu = h("div.menu", { role: "menu" });
    for (const it of shown) {
      if (it === "-") { menu.append(h("hr")); continue; }
      const b = h(`button${it.danger ? ".danger" : ""}`, {
        type: "button", role: "menuitem", disabled: !!it.disabled, title: it.title || undefined,
        onclick: () => { closeMenu(); it.onClick(); },
      }, it.label);
      menu.append(b);
    }
    menu.addEventListener("keydown", (e) => {
      const items = [...menu.querySelectorAll("button:not(:disabled)")];
      const i = items.indexOf(document.activeElement);
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const next = items[(i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length];
        if (next) next.focus();
      } else if (e.key === "Escape" || e.key === "Tab") {
        closeMenu();
        button.focus();
      }
    });
    document.body.append(menu);
    button.setAttribute("aria-expanded", "true");
    openMenu = { menu, button };
    placeMenu(menu, button);
    const first = menu.querySelector("button:not(:disabled)");
    if (first) first.focus();
  });
  return button;
}

// ---------------------------------------------------------------------------------------- tables
/**
 * A table: columns [{title, render(row) -> Node|string, cls}], rows. empty: a node or text when no rows.
 */
export function table(columns, rows, { empty = "No data.", rowAttrs, caption } = {}) {
  const thead = h("thead", h("tr", columns.map((c) => h("th", { scope: "col", class: c.cls || undefined, title: c.tip }, c.title))));
  const tbody = h("tbody");
  if (!rows.length) {
    tbody.append(h("tr", h("td.empty", { colSpan: columns.length }, empty)));
  }
  for (const row of rows) {
    const tr = h("tr", rowAttrs ? rowAttrs(row) : {});
    // data-label names the column when narrow windows show each row as a card (console.css)
    for (const c of columns) {
      tr.append(h("td", { class: c.cls || undefined, dataset: { label: typeof c.title === "string" ? c.title : "" } }, c.render(row)));
    }
    tbody.append(tr);
    if (row.__detail) tbody.append(row.__detail);
  }
  return h("div.table-wrap", h("table", caption ? h("caption.sr-only", caption) : null, thead, tbody));
}

export function field(labelText, control, hint) {
  const id = control.id || `f-${randomSuffix(6)}`;
  const target = control.matches && control.matches("input,select,textarea") ? control
    : control.querySelector && control.querySelector("input,select,textarea");
  if (target && !target.id) target.id = id;
  return [
    h("label", { for: target ? target.id : undefined }, labelText),
    h("div.field", control, hint ? h("span.hint", hint) : null),
  ];
}

export function switchControl(checked, labelText, attrs = {}) {
  const input = h("input", { type: "checkbox", role: "switch", checked, ...attrs });
  return h("label.switch", input, h("span.track"), h("span", labelText));
}

export function select(options, value, attrs = {}) {
  return h("select", attrs, options.map(([v, t]) => h("option", { value: v, selected: String(v) === String(value) }, t)));
}

export function loading(text = "Loading…") {
  return h("div.empty", { "aria-busy": "true" }, text);
}

/** Debounce a function (search boxes). */
export function debounce(fn, ms = 250) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

export function copyable(text) {
  return h("span.mono", { title: "Click to copy", style: { cursor: "copy" },
    onclick: () => navigator.clipboard && navigator.clipboard.writeText(text).then(() => toast("Copied", "ok", { timeout: 1500 })) }, text);
}

/** Highlight the navigation entry of a page reached through another address (vault details). */
export function markNav(href) {
  document.querySelectorAll(".sidenav a").forEach((a) => {
    if (a.getAttribute("href") === href) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
}
