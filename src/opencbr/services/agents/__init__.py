"""Agents: the ``opencbr-agent`` programs on protected hosts, as the service knows them.

- :mod:`.registry`: the CBR ``agents`` API (register, list, show, update, unregister, paths, check);
- :mod:`.enrolment`: enrolment tokens, enrolment, install commands;
- :mod:`.ca`: the installation's agent CA and the service's client certificate;
- :mod:`.poll`: the heartbeat (inventory), and what the data path asks (address, online);
- :mod:`.inventory`: an agent's host, disks and paths as protectable resources;
- :mod:`.state`: online / offline and the statuses of an unreachable agent's resources.
"""

from opencbr.services.agents.ca import authority, service_identity
from opencbr.services.agents.enrolment import ca_fingerprint, create_token, enrol, install_commands, proof
from opencbr.services.agents.poll import (
    AGENT_OFFLINE,
    address_of,
    exclude_paths,
    link_error,
    poll_agents,
    require_online,
)
from opencbr.services.agents.registry import (
    CURRENT_AGENT_VERSION,
    AgentView,
    add_agent_path,
    ca_certificate,
    check_agent,
    is_old,
    list_agents,
    notify_revoked,
    register_agent,
    remove_agent_path,
    show_agent,
    unregister_agent,
    update_agent,
    view,
)
from opencbr.services.agents.state import offline_after, poll_timeout

__all__ = [
    "AGENT_OFFLINE", "CURRENT_AGENT_VERSION", "AgentView", "add_agent_path", "address_of", "authority", "ca_certificate",
    "ca_fingerprint", "check_agent", "is_old",
    "create_token", "enrol", "exclude_paths", "install_commands", "link_error", "list_agents", "notify_revoked",
    "offline_after", "poll_agents", "poll_timeout", "proof", "register_agent", "remove_agent_path", "require_online", "service_identity", "show_agent",
    "unregister_agent", "update_agent", "view",
]
