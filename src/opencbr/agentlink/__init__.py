"""How the service and its agents talk: certificates of the installation's own authority, mutual TLS,
and framed messages over one connection (see ``channel``). Transport only: what the messages mean is
the business of the agent (``opencbr.agent``) and of the engine's remote chunk service."""
