"""The ``opencbr-agent`` command: register, run, status, unregister-local (docs/agents.md).

Only the standard library and the agent's own modules are imported here (argparse, urllib): the agent
runs on hosts that have none of the service's dependencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys

from opencbr.agent import VERSION
from opencbr.agent import config as agent_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opencbr-agent", description="The OpenCBR agent: lets an OpenCBR service back up "
                                "and restore this host's disks and directories (see docs/agents.md).")
    p.add_argument("--version", action="version", version=f"opencbr-agent {VERSION}")
    p.add_argument("--config", default=agent_config.DEFAULT_PATH, help="the agent's configuration file "
                   f"(default {agent_config.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True)
    # --config is also taken after the command (opencbr-agent register --config F ...): the install
    # script passes its arguments to register
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    r = sub.add_parser("register", parents=[after], help="enrol this host with an OpenCBR service (token, or AK/SK)")
    r.add_argument("--endpoint", required=True, help="the API's URL, e.g. http://backup.example:8080")
    r.add_argument("--token", help="an enrolment token (cbr agent token): valid one hour, once")
    r.add_argument("--project-id", help="with --ak/--sk: the project the agent belongs to")
    r.add_argument("--ak", help="the project's access key (instead of a token)")
    r.add_argument("--sk", help="the project's secret key (instead of a token); '-' reads it from standard input, "
                   "and without --sk it is taken from $OPENCBR_AGENT_SK (either keeps it out of the process list "
                   "and the shell's history; it is never written on this host)")
    r.add_argument("--ca-fingerprint", default="", help="with --ak/--sk: the service CA's sha256:... "
                   "(cbr agent install-command shows it); without it the CA is trusted on first use")
    r.add_argument("--agent-id", default="", help="with --ak/--sk: enrol an agent registered before (register_agent)")
    r.add_argument("--listen", default=agent_config.DEFAULT_LISTEN, help="address:port to listen on "
                   f"(default {agent_config.DEFAULT_LISTEN})")
    r.add_argument("--advertise", default="", help="host:port the service connects to (default: this host's "
                   "address towards the API, and the listen port)")
    r.add_argument("--root", action="append", default=[], help="a directory the service may back up and restore "
                   "into (repeat for several); nothing outside the roots is opened, except block devices")
    r.add_argument("--device", action="append", default=[], help="block devices the service may read and write, "
                   "as patterns (repeat; default /dev/*: every block device of the host)")
    r.add_argument("--bandwidth-limit", type=int, default=0, help="bytes per second the agent sends at most (0: none)")
    r.add_argument("--max-tasks", type=int, default=2, help="data operations at once (default 2)")
    r.add_argument("--state-dir", default=agent_config.DEFAULT_STATE_DIR, help="where the agent records the "
                   f"snapshots it has in flight (default {agent_config.DEFAULT_STATE_DIR})")
    r.add_argument("--nickname", default="", help="a name for this host in the console")
    r.add_argument("--force", action="store_true", help="replace an existing enrolment")

    sub.add_parser("run", parents=[after], help="serve the service's requests (the systemd unit runs this)")
    sub.add_parser("status", parents=[after], help="the configuration, the certificate's expiry, whether the service is reachable")
    sub.add_parser("unregister-local", parents=[after], help="forget this agent's configuration and key (the service keeps its record: "
                   "unregister it there too)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return {"register": _register, "run": _run, "status": _status,
                "unregister-local": _unregister_local}[args.command](args)
    except agent_config.ConfigError as e:
        print(f"opencbr-agent: {e}", file=sys.stderr)
        return 2


def _register(args) -> int:
    from opencbr.agent import register
    from opencbr.agent.confinement import PathSwapped, normal_path
    from opencbr.agent.inventory import primary_ip

    try:
        current = agent_config.load(args.config)
        if current.enrolled and not args.force:
            print(f"opencbr-agent: this host is enrolled already (agent {current.agent_id}); --force replaces it",
                  file=sys.stderr)
            return 2
    except agent_config.ConfigError:
        pass
    try:
        roots = [normal_path(r) for r in args.root]
        host, port = agent_config.parse_host_port(args.listen)
    except (PathSwapped, ValueError) as e:
        print(f"opencbr-agent: {e}", file=sys.stderr)
        return 2
    for r in roots:
        if not os.path.isdir(r):
            print(f"opencbr-agent: warning: the root {r} is not a directory (yet)", file=sys.stderr)
    from urllib.parse import urlsplit

    advertise = args.advertise or f"{primary_ip(urlsplit(args.endpoint).hostname or '192.0.2.1')}:{port}"
    sk = _secret_key(args.sk)
    try:
        if args.token:
            cfg = register.with_token(args.endpoint, args.token, advertise=advertise, nickname=args.nickname)
        elif args.sk == "-" and not sk:
            print("opencbr-agent: --sk -: no secret key on standard input (the install script gives none: use "
                  "$OPENCBR_AGENT_SK, or a token)", file=sys.stderr)
            return 2
        elif args.ak and sk and args.project_id:
            cfg = register.with_keys(args.endpoint, args.project_id, args.ak, sk, advertise=advertise,
                                     ca_fingerprint=args.ca_fingerprint, nickname=args.nickname, agent_id=args.agent_id)
        else:
            print("opencbr-agent: give --token, or --project-id with --ak and --sk", file=sys.stderr)
            return 2
    except register.EnrolError as e:
        print(f"opencbr-agent: enrolment failed: {e}", file=sys.stderr)
        return 1
    cfg.listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cfg.roots, cfg.devices = roots, args.device or list(agent_config.DEFAULT_DEVICES)
    cfg.bandwidth_limit, cfg.max_tasks, cfg.state_dir = args.bandwidth_limit, args.max_tasks, args.state_dir
    agent_config.save(cfg, args.config)
    print(f"enrolled: agent {cfg.agent_id} in project {cfg.project_id}; the service will connect to {advertise}")
    # `run` reads the default configuration unless told otherwise (and so does the packaged unit)
    default = args.config == agent_config.DEFAULT_PATH
    start = f"opencbr-agent{'' if default else ' --config ' + shlex.quote(args.config)} run"
    print(f"configuration written to {args.config}; start the agent with: {start}"
          + (" (or systemctl enable --now opencbr-agent)" if default else ""))
    if not roots:
        # an agent without roots opens no path at all (confinement): directories and image files the
        # user then adds in the service are refused until the host's operator gives roots
        print("opencbr-agent: note: no --root given: the service can protect this host's block devices and the "
              "host as a whole, but no directory and no image file. To allow some, list them under \"roots\" in "
              f"{args.config} and restart the agent (or register again with --force and --root DIR, repeated)",
              file=sys.stderr)
    return 0


def _secret_key(given: str | None) -> str:
    """The SK for an AK/SK enrolment: given, read from standard input (``-``), or from the environment."""
    if given == "-":
        return sys.stdin.readline().strip()
    return given or os.environ.get("OPENCBR_AGENT_SK", "")


def _run(args) -> int:
    from opencbr.agent import serve

    return serve.serve(args.config)


def _status(args) -> int:
    cfg = agent_config.load(args.config)
    shown = cfg.summary()
    if cfg.cert_pem:
        from opencbr.agentlink import certs

        shown["certificate_expires"] = certs.not_after(cfg.cert_pem).isoformat()
        shown["ca_fingerprint"] = certs.fingerprint(cfg.ca_pem) if cfg.ca_pem else ""
    shown["service_reachable"], shown["service"] = _reachable(cfg.api_endpoint)
    from opencbr.agent.inventory import access

    shown["access"] = access()
    shown["tree_readers"] = _tree_readers()
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0 if cfg.enrolled else 1


def _tree_readers() -> str:
    """Whether this host lists and reads trees with the engine's C extensions (the package carries them
    as the service built them) or with its Python code: the same results, the latter 30-50 % slower on
    trees of small files."""
    from opencbr.engine.tree.sources import native_reading
    from opencbr.engine.tree.walker import native_listing

    missing = [name for name, module in (("listing", native_listing()), ("small-file reader", native_reading()))
               if module is None]
    if not missing:
        return "C extensions (listing, small-file reader)"
    return (f"Python for the {' and '.join(missing)}: the C extensions did not load on this host (another Python "
            "version or architecture, an older glibc) or were ruled out (OPENCBR_LISTING / OPENCBR_READING=python)")


def _reachable(endpoint: str) -> tuple[bool, str]:
    from opencbr.agent.register import EnrolError, http_json

    try:
        health = http_json("GET", endpoint.rstrip("/") + "/health", None, timeout=5)
        return True, f"{health.get('status', '?')} (version {health.get('version', '?')})"
    except EnrolError as e:
        return False, str(e)


def _unregister_local(args) -> int:
    if agent_config.forget(args.config):
        print(f"forgot {args.config} (the key and certificates are gone); unregister the agent in the service too")
    else:
        print(f"{args.config} did not exist")
    return 0
