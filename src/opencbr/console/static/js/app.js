// The console shell: sign-in, the top bar, the left navigation and a small hash router.
import { health, session, setUnauthorizedHandler, signIn } from "./api.js";
import { clear, errorAlert, h, icon, isAdmin, role } from "./ui.js";
import { KINDS } from "./kinds.js";

const PAGES = {
  vaults: () => import("./pages/vaults.js"),
  backups: () => import("./pages/backups.js"),
  vault: () => import("./pages/vault-detail.js"),
  policies: () => import("./pages/policies.js"),
  tasks: () => import("./pages/tasks.js"),
  resources: () => import("./pages/resources.js"),
  agents: () => import("./pages/agents.js"),
  monitoring: () => import("./pages/monitoring.js"),
  audit: () => import("./pages/audit.js"),
  shared: () => import("./pages/shared.js"),
  quotas: () => import("./pages/quotas.js"),
  images: () => import("./pages/images.js"),
  "org-policies": () => import("./pages/org-policies.js"),
};
const DEFAULT = "#/servers/vaults";
const app = document.getElementById("app");
let region = null;
let generation = 0;
let timers = [];
let leaveHooks = [];
let loginNotice = null;

/** The current location: {parts: ["disks", "vaults"], query: URLSearchParams}. */
export function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(qs || "") };
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function stopPage() {
  generation++;
  timers.forEach(clearTimeout);
  timers = [];
  leaveHooks.forEach((f) => { try { f(); } catch { /* ignore */ } });
  leaveHooks = [];
}

/** What a page gets: timers that stop when the user leaves it. */
function pageContext() {
  const gen = generation;
  const ctx = {
    get alive() { return gen === generation; },
    /** Run fn after ms, again and again while it returns true (polling); stops on navigation. */
    poll(fn, ms) {
      const tick = async () => {
        if (gen !== generation) return;
        let again = false;
        try { again = await fn(); } catch { again = true; }
        if (again && gen === generation) timers.push(setTimeout(tick, typeof ms === "function" ? ms() : ms));
      };
      timers.push(setTimeout(tick, typeof ms === "function" ? ms() : ms));
    },
    /** load() returns whether something is still changing; while it does, it runs again every ms. */
    live(load, ms) {
      let polling = false;
      return async () => {
        let busy = false;
        try { busy = await load(); } catch { busy = false; }
        if (busy && !polling && gen === generation) {
          polling = true;
          ctx.poll(async () => {
            const more = await load();
            if (!more) polling = false;
            return more;
          }, ms);
        }
        return busy;
      };
    },
    onLeave(f) { leaveHooks.push(f); },
    navigate,
  };
  return ctx;
}

// ------------------------------------------------------------------------------------------------ sign in
function renderLogin(notice) {
  stopPage();
  document.title = "Sign in · OpenCBR";
  const err = h("div", { "aria-live": "assertive" }, notice ? h("div.alert.info", notice) : null);
  const ak = h("input#ak", { name: "access_key", autocomplete: "username", required: true, spellcheck: "false" });
  const sk = h("input#sk", { name: "secret_key", type: "password", autocomplete: "current-password", required: true });
  const pid = h("input#project", { name: "project_id", placeholder: "default: your account's first project", spellcheck: "false" });
  const btn = h("button.btn.primary", { type: "submit" }, "Sign in");
  const form = h("form.login-card", { novalidate: true },
    h("div.brand", h("img", { src: "favicon.svg", alt: "" }), "OpenCBR"),
    h("p.lead", "Cloud Backup and Recovery console"),
    err,
    h("label", { for: "ak" }, "Access key ID (AK)"), ak,
    h("label", { for: "sk" }, "Secret access key (SK)"), sk,
    h("details", h("summary", "Project"), h("label", { for: "project" }, "Project ID (optional)"), pid),
    btn,
    h("p.foot", "Use the AK/SK printed by ", h("code", "opencbr serve"), " or created with ",
      h("code", "cbr admin credential create"), ". The session lasts 8 hours and ends when you close the tab."));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(err);
    if (!ak.value.trim() || !sk.value) {
      clear(err, errorAlert(new Error("Enter both the access key ID and the secret access key.")));
      return;
    }
    btn.disabled = true;
    btn.textContent = "Signing in…";
    try {
      await signIn(ak.value.trim(), sk.value, pid.value.trim());
      loginNotice = null;
      const back = sessionStorage.getItem("opencbr.after-login");
      sessionStorage.removeItem("opencbr.after-login");
      if (back && back !== location.hash) location.hash = back;
      else route();
    } catch (e) {
      clear(err, errorAlert(e));
      sk.select();
    } finally {
      btn.disabled = false;
      btn.textContent = "Sign in";
    }
  });
  clear(app, h("main.login-page", form));
  ak.focus();
}

export function signOut(notice) {
  session.clear();
  loginNotice = notice || null;
  if (currentRoute().parts[0] !== "login") location.hash = "#/login";
  else renderLogin(loginNotice);
}

setUnauthorizedHandler((msg) => {
  if (currentRoute().parts[0] !== "login") {
    sessionStorage.setItem("opencbr.after-login", location.hash);
    signOut(msg && /expired|ended/i.test(msg) ? msg : `You were signed out: ${msg}`);
  }
});

// ------------------------------------------------------------------------------------------------ shell
function navLink(href, iconName, text, active) {
  return h("a", { href, "aria-current": active ? "page" : undefined }, icon(iconName), h("span", text));
}

function renderShell(parts) {
  const s = session.get();
  const section = parts[0];
  const kindKey = Object.keys(KINDS).find((k) => KINDS[k].path === section);
  const activeKind = kindKey || (section === "vault" ? sessionStorage.getItem("opencbr.last-kind") : null);
  const nav = h("nav.sidenav", { "aria-label": "Console sections" },
    h("h2", "Backup"),
    Object.values(KINDS).map((k) => navLink(`#/${k.path}/vaults`, k.icon, k.title, activeKind === k.key)),
    h("h2", "Management"),
    navLink("#/policies", "policy", "Policies", section === "policies"),
    navLink("#/shared", "resources", "Shared with Me", section === "shared"),
    navLink("#/tasks", "tasks", "Tasks", section === "tasks"),
    navLink("#/resources", "resources", "Resources", section === "resources"),
    navLink("#/agents", "server", "Agents", section === "agents"),
    navLink("#/monitoring", "chart", "Monitoring", section === "monitoring"),
    isAdmin() ? navLink("#/audit", "audit", "Audit", section === "audit") : null,
    navLink("#/images", "file", "Images", section === "images"),
    navLink("#/quotas", "chart", "Quotas", section === "quotas"),
    s.is_operator ? navLink("#/org-policies", "policy", "Organization Policies", section === "org-policies") : null);
  const top = h("header.topbar",
    h("a.brand", { href: DEFAULT }, h("img", { src: "favicon.svg", alt: "" }), "OpenCBR",
      h("small", "Cloud Backup and Recovery")),
    h("span.spacer"),
    region ? h("span.chip", { title: "Region of this installation" }, "Region ", h("b", region)) : null,
    h("span.chip", { title: `Project ${s.project_id}` }, "Project ", h("b.mono", s.project_id.slice(0, 8))),
    h(`span.chip${role() === "readonly" ? ".role-readonly" : ""}`, { id: "whoami", title: `Account ${s.account_id}` },
      h("b", s.user_name), ` · ${role()}`),
    h("button.link", { type: "button", onclick: () => signOut("You signed out.") }, "Sign out"));
  const main = h("main.main#main", { tabindex: "-1" });
  clear(app, h("div.shell", top, nav, main));
  return main;
}

async function route() {
  const r = currentRoute();
  if (r.parts[0] === "login") {
    if (session.get()) { location.hash = DEFAULT; return; }
    renderLogin(loginNotice);
    return;
  }
  if (!session.get()) {
    if (location.hash && location.hash !== "#/login") sessionStorage.setItem("opencbr.after-login", location.hash);
    location.hash = "#/login";
    return;
  }
  if (!r.parts.length) { location.hash = DEFAULT; return; }
  stopPage();
  const [section, sub] = r.parts;
  let page = null;
  let params = {};
  const kind = Object.values(KINDS).find((k) => k.path === section);
  if (kind) {
    sessionStorage.setItem("opencbr.last-kind", kind.key);
    page = sub === "backups" ? "backups" : "vaults";
    params = { kind };
  } else if (section === "vault" && sub) {
    page = "vault";
    params = { id: sub, tab: r.parts[2] || "resources" };
  } else if (PAGES[section]) {
    page = section;
    params = { sub };
  }
  const main = renderShell(r.parts);
  if (!page) {
    clear(main, h("div.card.empty", h("b", "Page not found"), h("a", { href: DEFAULT }, "Go to the vaults")));
    return;
  }
  const ctx = pageContext();
  try {
    const mod = await PAGES[page]();
    if (!ctx.alive) return;
    await mod.render(main, { ...params, query: r.query }, ctx);
  } catch (e) {
    if (ctx.alive) clear(main, errorAlert(e));
    console.error(e);
  }
}

window.addEventListener("hashchange", route);
health().then((hl) => { region = hl && hl.region; }).finally(route);
