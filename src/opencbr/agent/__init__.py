"""The agent that runs on a protected host (docs/agents.md)."""
