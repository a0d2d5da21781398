"""``transport = "ssh"`` (the default): the host reached over an SSH link (fractui.fleet.link),
hop by hop with host keys checked, the agent uploaded over SFTP."""

from __future__ import annotations

import io
import posixpath
import re
import socket
import stat
import uuid
from typing import Optional, Sequence, Tuple

import paramiko

from fractui.config import HostConfig, SshSettings
from fractui.fleet.hostkeys import KnownHosts
from fractui.fleet.link import SshLink, seconds
from fractui.fleet.sshconfig import resolve
from fractui.fleet.transport.base import (RUN_TIMEOUT_S, AgentProcessError, Ran,
                                          RemoteTransport, Stream, said_partial)
from fractui.fleet.zipapp import AgentArchive


# An agent being uploaded (``zipapp``'s name, then our own suffix): renamed into place once
# whole, left behind where the upload was cut short (a timeout, a link that dropped)
PARTIAL = "%s.part-%s"
PARTIAL_NAME = re.compile(r"agent-[0-9a-f]{16}\.pyz\.part-[0-9a-f]{8}")


def remote_path(path: str) -> str:
    """Remote paths are relative to the remote home (where an SSH command starts)."""
    return path[2:] if path.startswith("~/") else path


class SshTransport(RemoteTransport):

    def __init__(self, cfg: HostConfig, ssh: SshSettings):
        super().__init__(cfg)
        self.ssh = ssh
        self.link: Optional[SshLink] = None

    def open(self) -> None:
        route = resolve(self.cfg, self.ssh.config_file)
        self.link = SshLink(route, KnownHosts(self.ssh.known_hosts), self.ssh.connect_timeout)
        self.link.connect()

    def _link(self) -> SshLink:
        assert self.link is not None, "open() first"
        return self.link

    @property
    def state_dir(self) -> str:
        return remote_path(self.cfg.state_dir)

    def run(self, words: Sequence[str], stdin: bytes = b"",
            timeout_s: float = RUN_TIMEOUT_S) -> Ran:
        assert not stdin, "SSH puts files over SFTP"
        return self._link().run(words, timeout_s)

    def start(self, words: Sequence[str]) -> Stream:
        channel = self._link().exec(words)
        return Stream(channel.makefile("rb"), channel.sendall, channel.makefile_stderr("rb"),
                      channel.close)

    def deploy(self, archive: AgentArchive) -> Tuple[str, bool]:
        cfg = self.cfg
        cache = remote_path(cfg.agent_cache)
        remote = posixpath.join(cache, archive.name)
        if self.has_agent(remote, archive):
            return remote, False
        sftp = self._link().sftp()
        try:
            path = ""
            for part in cache.split("/"):
                path = posixpath.join(path, part) if path else (part or "/")
                try:
                    sftp.stat(path)
                except FileNotFoundError:
                    sftp.mkdir(path, 0o700)
            partial = PARTIAL % (remote, uuid.uuid4().hex[:8])
            sftp.putfo(io.BytesIO(archive.data), partial)
            self._remove_partials(sftp, cache, partial)
            sftp.posix_rename(partial, remote)  # atomic: never a half-written agent
        except socket.timeout:  # (the SFTP channel's, per answer: SshLink.sftp)
            raise AgentProcessError("cannot put the agent in %s on %s: no answer from SFTP "
                                    "within %s" % (cache, cfg.name, seconds(
                                        self.ssh.connect_timeout))) from None
        except paramiko.SFTPError as err:  # (an answer that is no SFTP: not the folder's)
            raise AgentProcessError("cannot put the agent in %s on %s: the SFTP server's "
                                    "answer was no SFTP (%s)" % (cache, cfg.name, err)) from err
        except (OSError, paramiko.SSHException, EOFError) as err:
            raise AgentProcessError("cannot put the agent in %s on %s: %s" % (
                cache, cfg.name, self._upload_cut(sftp, err))) from err
        finally:
            sftp.close()
        self.check_upload(remote, archive)
        return remote, True

    def _upload_cut(self, sftp: paramiko.SFTPClient, err: BaseException) -> str:
        """Why the upload failed, said as its cause: the link stalled or dropped (the channel
        closed with no end from the server: the transport closes its channels as its
        connection ends, before it reads as not active), the SFTP server ended (its channel's
        end received, the link alive), or else the folder's answer."""
        said = str(err).strip(" :") or type(err).__name__
        link = self._link()
        if link.stalled:
            return link.stalled
        channel = sftp.get_channel()
        if channel is not None and channel.eof_received and link.alive:
            return ("the host's SFTP server ended during the upload (%s): the host's sshd log "
                    "says why (journalctl -u ssh, or /var/log/auth.log); the upload is tried "
                    "again at the next connect" % said)
        if not link.alive or (channel is not None and channel.closed):
            return ("the SSH link dropped during the upload (%s); the next connect makes a new "
                    "link and tries the upload again" % said)
        return "%s (set agent_cache to a writable directory)" % said

    def _remove_partials(self, sftp: paramiko.SFTPClient, cache: str, ours: str) -> None:
        """Removes the agents left half uploaded in ``cache`` by uploads cut short, which
        nothing else would ever remove (a link that drops often would fill the folder): each
        file named as our partials are (``PARTIAL_NAME``) and owned by the login user (as the
        one just written, ``ours``, is), said in the log; one that cannot be removed is said and
        left, never failing the upload. Never the agent, nor another's."""
        uid = sftp.stat(ours).st_uid
        for entry in sftp.listdir_attr(cache):
            path = posixpath.join(cache, entry.filename)
            if (path != ours and PARTIAL_NAME.fullmatch(entry.filename) and entry.st_uid == uid
                    and stat.S_ISREG(entry.st_mode or 0)):
                try:
                    sftp.remove(path)
                except OSError as err:  # (an immutable file, say) left: the upload goes on
                    said_partial(self.cfg.name, path, str(err))
                    continue
                said_partial(self.cfg.name, path)

    def said(self) -> Optional[str]:
        said = self.link.said() if self.link is not None else None
        return "ssh: %s" % said if said else None

    def ended(self) -> Optional[str]:
        return self.link.stalled if self.link is not None else None

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
