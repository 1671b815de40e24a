// Agents (guide chapter 7, "Agent Installation"): the commands that install opencbr-agent on a Linux host,
// enrolment tokens, and the agents of the project with their status, paths and last backup.
import { api } from "../api.js";
import {
  UserError, badge, clear, confirmDialog, copyable, errorAlert, field, h, icon, loading, openDialog, table, timeCell,
  backupGuard, toast, writeGuard,
} from "../ui.js";

const TONE = { online: "green", offline: "red", uninstalled: "plain" };

function commandsBox(cmds) {
  return h("div.install-commands",
    h("p.hint", "On the Linux host to protect:"), h("div", copyable(cmds.install)),
    h("p.hint", "or step by step:"),
    ["package", "register", "start"].map((k) => h("div", copyable(cmds[k]))),
    ["token_hint", "root_hint"].map((k) => (cmds[k] ? h("p.hint", cmds[k]) : null)));
}

function addPathDialog(agent) {
  const paths = h("textarea", { name: "agent-paths", rows: 3, placeholder: "/srv/www\n/var/lib/app", spellcheck: "false" });
  const excludes = h("textarea", { name: "agent-excludes", rows: 2, placeholder: "/srv/www/cache (optional)", spellcheck: "false" });
  const lines = (t) => t.value.split("\n").map((x) => x.trim()).filter(Boolean);
  return openDialog({
    title: `Add paths to ${agent.host_nickname || agent.host_name || agent.agent_id}`, okText: "Add",
    body: h("div.form", field("Directories", paths, "Absolute paths on the agent's host, one a line. Each becomes a file system you can put in a vault."),
      field("Leave out", excludes, "Directories inside them that backups skip, one a line.")),
    onOk: async () => {
      const add = lines(paths);
      if (!add.length || add.some((p) => !p.startsWith("/"))) throw new UserError("Enter absolute directories, one a line.");
      const owner = (x) => add.filter((p) => x.startsWith(p.replace(/\/$/, "") + "/")).sort((a, b) => b.length - a.length)[0];
      const ex = {};
      for (const x of lines(excludes)) {
        const p = owner(x);
        if (!p) throw new UserError(`${x} lies inside none of the directories.`);
        (ex[p] = ex[p] || []).push(x);
      }
      const out = await api.post(`/agents/${encodeURIComponent(agent.agent_id)}/add-path`, {
        add_path: add, exclude_path: Object.entries(ex).map(([path_name, exclude_path_name]) => ({ path_name, exclude_path_name })),
      });
      toast(`Added: ${out.added.join(", ") || "none"}${out.existed.length ? `; already there: ${out.existed.join(", ")}` : ""}.`, "ok");
      return out;
    },
  });
}

export async function render(main, _params, ctx) {
  document.title = "Agents · OpenCBR";
  const tokenBtn = backupGuard(h("button.btn.primary", { type: "button" }, icon("plus"), "Create enrolment token"));
  const refresh = h("button.btn", { type: "button", title: "Refresh", "aria-label": "Refresh" }, icon("refresh"));
  const install = h("div.card#agent-install", loading());
  const holder = h("div", loading());
  clear(main, h("div.page-head", h("h1", "Agents"), h("span.spacer"), tokenBtn, refresh),
    h("p.hint", "An agent protects the disks and directories of another Linux machine: install it there, enrol it with a token, and its host, disks and paths appear as resources."),
    install, holder);

  const showCommands = (cmds, token) => clear(install, h("h2", token ? "Install with this token" : "Agent installation"),
    cmds.address_warning ? h("div.alert.warn#agent-address-warning", { role: "alert" }, cmds.address_warning) : null,
    token ? h("div.alert.info", "The token enrols one host and expires at ", timeCell(token.expires_at), ". It is shown once.") : null,
    commandsBox(cmds));
  let agents = [];
  const draw = () => {
    const after = (p) => p.then((ok) => { if (ok) load(); });
    clear(holder, table([
      { title: "Host/ID", render: (a) => h("div", a.host_nickname || a.host_name || "--", h("span.sub", a.agent_id)) },
      { title: "IP", render: (a) => h("span.mono", a.host_ip || "--") },
      { title: "Status", render: (a) => h("div", badge(a.status, { tone: TONE[a.status] }), a.last_error ? h("span.sub.error-text", a.last_error) : null) },
      { title: "Version", render: (a) => a.agent_version || "--" },
      { title: "Last active", cls: "nowrap", render: (a) => (a.last_active_time ? timeCell(a.last_active_time) : h("span.hint", "never")) },
      {
        title: "Paths", render: (a) => h("div", a.paths.length ? a.paths.map((p) => h("div.agent-path", h("span.mono", p.dir_path),
          p.exclude_paths ? h("span.sub", `without ${p.exclude_paths}`) : null,
          // (a path the agent refuses is registered all the same: its file system says why)
          p.file_system_status === "error" ? h("span.sub.error-text", p.file_system_status_reason || "error") : null, " ",
          writeGuard(h("button.link", { type: "button", "aria-label": `Remove ${p.dir_path}`, onclick: () => after(confirmDialog({
            title: "Remove path", message: [h("p", "Stop protecting ", h("b.mono", p.dir_path), "?"), h("p.hint", "Its backups are kept.")],
            onOk: async () => { await api.post(`/agents/${encodeURIComponent(a.agent_id)}/remove-path`, { remove_path: [p.dir_path] }); toast(`${p.dir_path} removed.`, "ok"); },
          })) }, "Remove")))) : h("span.hint", "none")),
      },
      { title: "Last backup", cls: "nowrap", render: (a) => (a.last_backup_time ? timeCell(a.last_backup_time) : h("span.hint", "none yet")) },
      {
        title: "Operation", render: (a) => h("div.ops",
          writeGuard(h("button.link", { type: "button", onclick: () => after(addPathDialog(a)) }, "Add path")),
          writeGuard(h("button.link", { type: "button", onclick: () => after(confirmDialog({
            title: "Unregister agent",
            message: [h("p", "Unregister ", h("b", a.host_name || a.agent_id), "?"),
              h("p.hint", "The service stops talking to it at once. Its resources stay, in error, with their backups; to protect the host again, enrol it again.")],
            onOk: async () => { await api.del(`/agents/${encodeURIComponent(a.agent_id)}`); toast(`Agent ${a.agent_id} unregistered.`, "ok"); },
          })) }, "Unregister"))),
      },
    ], agents, {
      caption: "Agents",
      empty: h("div", h("b", "No agents yet"), "Create an enrolment token and run the commands above on the host to protect."),
      rowAttrs: (a) => ({ dataset: { agentId: a.agent_id } }),
    }));
  };
  const load = async () => {
    try {
      const out = await api.get("/agents", { limit: "1000" });
      if (!ctx.alive) return false;
      agents = out.agents || [];
      draw();
      return agents.some((a) => a.status !== "online" && a.status !== "uninstalled");
    } catch (e) {
      if (ctx.alive) clear(holder, errorAlert(e));
      return false;
    }
  };
  tokenBtn.addEventListener("click", async () => {
    try {
      const t = await api.post("/agents/tokens", {});
      showCommands(t.install_command, t);
    } catch (e) { toast(e.message, "error"); }
  });
  const live = ctx.live(load, 5000);
  refresh.addEventListener("click", live);
  api.get("/agents/install-command").then((o) => { if (ctx.alive) showCommands(o.install_command); })
    .catch((e) => { if (ctx.alive) clear(install, errorAlert(e)); });
  await live();
}
