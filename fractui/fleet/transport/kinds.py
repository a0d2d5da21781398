"""Which transport a host entry names: one new Transport of its kind per connection."""

from __future__ import annotations

from fractui.config import HostConfig, SshSettings
from fractui.fleet.transport.base import Transport
from fractui.fleet.transport.exec import ExecTransport
from fractui.fleet.transport.local import LocalTransport
from fractui.fleet.transport.ssh import SshTransport


def transport_for(cfg: HostConfig, ssh: SshSettings) -> Transport:
    """A new, unopened transport of the host's kind (one per connection)."""
    if cfg.transport == "local":
        return LocalTransport(cfg)
    if cfg.transport == "exec":
        return ExecTransport(cfg, ssh)
    return SshTransport(cfg, ssh)
