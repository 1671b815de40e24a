"""Talking to the remote chunk service as a (compromised) agent would: raw messages over a channel pair."""

from __future__ import annotations

import threading

from opencbr.agentlink.channel import RemoteError, channel_pair
from opencbr.engine.remote import serve_backup


def converse_raw(repo, scope, messages, serve=serve_backup):
    """Send ``messages`` ((header, payload) pairs) to ``serve(repo, channel, scope)``; returns (the answers'
    payloads, or the RemoteError that ended them; what the service returned or raised)."""
    svc, agent = channel_pair(timeout=10)
    answers, raised = [], {}

    def run():
        try:
            raised["final"] = serve(repo, svc, scope)
        except BaseException as e:  # noqa: BLE001
            raised["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    for header, payload in messages:
        try:
            answers.append(agent.request(header, payload)[1])
        except RemoteError as e:
            answers.append(e)
            break
    else:
        agent.send({"ok": True, "result": {}})
    t.join(10)
    return answers, raised
