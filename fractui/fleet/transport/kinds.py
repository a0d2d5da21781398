"""Which transport a host entry names: one new Transport of its kind per connection."""

from __future__ import annotations

from fractui.config import HostConfig, SshSettings
from fractui.fleet.transport.base import Transport
from fractui.fleet.transport.exec import ExecTransport
from fractui.fleet.transport.local import LocalTransport


def transport_for(cfg: HostConfig, ssh: SshSettings) -> Transport:
    """A new, unopened transport of the host's kind (one per connection)."""
    if cfg.transport == "local":
        return LocalTransport(cfg)
    if cfg.transport == "exec":
        return ExecTransport(cfg, ssh)
    # only now the SSH stack (paramiko, 0.2 s to import): a fleet of local and exec hosts
    # never loads it
    from fractui.fleet.transport.ssh import SshTransport
    return SshTransport(cfg, ssh)
