"""Which provider holds a resource: the one named by its ``provider`` column (``local`` by default).

The kinds of provider are listed here, explicitly (none registers itself by being imported); a
:class:`Registry` of configured providers is made per service context from its settings
(:func:`installed`).
"""

from __future__ import annotations

from typing import Protocol

from opencbr.providers.agent.provider import AgentProvider
from opencbr.providers.base import Provider
from opencbr.providers.local.provider import LocalProvider

#: Every kind of provider, by the name a resource's ``provider`` column holds.
KINDS: dict[str, type] = {LocalProvider.name: LocalProvider, AgentProvider.name: AgentProvider}


class HeldResource(Protocol):
    """What the registry reads of a resource (a catalog row)."""

    provider: str
    type: str
    path: str


class Registry:
    """The configured providers of an installation by name; ``default`` holds the paths a request
    names without saying which provider they belong to."""

    def __init__(self, providers: list[Provider], *, default: str):
        self._by_name = {p.name: p for p in providers}
        self.default = self._by_name[default]

    def get(self, name: str) -> Provider:
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(f"no resource provider {name!r} is installed here "
                              f"(installed: {', '.join(sorted(self._by_name))})") from None

    def for_resource(self, resource: HeldResource) -> Provider:
        return self.get(resource.provider)


def installed(*, resource_roots: tuple[str, ...]) -> Registry:
    """The providers this installation has: the machines' own disks and directories (``local``), and
    those of the hosts its agents run on (``agent``)."""
    return Registry([LocalProvider(roots=resource_roots), AgentProvider()], default=LocalProvider.name)


def present(resource: HeldResource) -> bool:
    """For a resource's live status, computed on every listing: the cheap look of its kind of provider,
    which needs no configuration (``Provider.present``)."""
    return present_at(resource.provider, resource.type, resource.path)


def present_at(provider: str, rtype: str, path: str) -> bool:
    """``present`` of a resource's columns (lists of thousands read them as plain values)."""
    return KINDS[provider].present(rtype, path)
