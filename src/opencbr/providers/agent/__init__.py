"""Resources on the hosts of enrolled agents: their data is read and written on those hosts, by the agent
running the engine, while the vault stays here (``capabilities.reads_on_host``). The worker drives each
task: it opens a channel to the agent (``link``), sends the task's request, and serves the agent's chunk
messages from the vault (:mod:`opencbr.engine.remote`) until the agent's answer."""

from .provider import AgentProvider, AgentTaskFailed

__all__ = ["AgentProvider", "AgentTaskFailed"]
