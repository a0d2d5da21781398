"""What paramiko and the fleet's threads say, kept instead of printed.

paramiko logs from its transport threads, tracebacks included ("Exception (client): ..." then
the stack), and where no handler is configured Python prints such records on stderr: over the
user's terminal, or over the TUI. So the ``paramiko`` and ``fractui.fleet`` loggers get one
handler that never writes to a terminal. Every record goes to the fleet's debug log
(``fleet.log`` in fractui's state dir, rotated at 1 MiB), and a record logged by a link's
transport thread also goes to that link's own tail, from which the host's error quotes what
paramiko said. If the debug log cannot be written, the tail still keeps what paramiko said and
the failure is remembered (``Keeper.failure``), never printed; the log is tried again every
RETRY_S, and the first record it takes after a failure is preceded by one saying what failed
(a disk full for a minute costs a minute of the log, not the rest of a long run).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import time
import weakref
from collections import deque
from typing import Deque, Optional, TextIO

from fractui.config import state_home
from fractui.state_files import open_append

LOGGERS = ("paramiko", "fractui.fleet")
LOG_FILE = "fleet.log"
MAX_BYTES = 1 << 20
RETRY_S = 60.0  # a debug log that could not be written is tried again this often


def debug_log_path() -> str:
    return os.path.join(state_home(), LOG_FILE)


class LinkLog:
    """The last things paramiko's threads said about one link."""

    def __init__(self) -> None:
        self.lines: Deque[str] = deque(maxlen=50)
        self._last: Optional[str] = None
        self._in_traceback = False

    def add(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.lines.append(message)
        if message.startswith("Traceback"):
            self._in_traceback = True
        elif self._in_traceback:
            # the stack's lines are indented; its last line (the exception) is not
            self._in_traceback = message[:1].isspace()
        elif record.levelno >= logging.WARNING:
            self._last = message

    def said(self) -> Optional[str]:
        """paramiko's last warning or error, without its stack."""
        return self._last


class Keeper(logging.handlers.RotatingFileHandler):
    """Writes records to the debug log, and those of a watched thread to its link's tail."""

    def __init__(self) -> None:
        super().__init__(debug_log_path(), maxBytes=MAX_BYTES, backupCount=1,
                         encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter(
            "%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
        self.links: "weakref.WeakKeyDictionary[threading.Thread, LinkLog]" = (
            weakref.WeakKeyDictionary())
        self.failure: Optional[str] = None
        self._retry_at = 0.0  # (time.monotonic) when a log that failed is tried again

    def emit(self, record: logging.LogRecord) -> None:
        link = self.links.get(threading.current_thread())
        if link is not None:
            link.add(record)
        path = debug_log_path()
        if path != self.baseFilename:  # the state dir moved (XDG_STATE_HOME changed)
            self.acquire()
            try:
                if self.stream is not None:
                    self.stream.close()
                    self.stream = None  # type: ignore[assignment]
                self.baseFilename, self.failure = path, None
            finally:
                self.release()
        failed = self.failure
        if failed is not None and time.monotonic() < self._retry_at:
            return
        self.failure = None
        if failed is not None:  # what the log lacks is said in it, once it takes records
            super().emit(logging.makeLogRecord({
                "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": "records were lost: the debug log could not be written (%s)" % failed}))
        if self.failure is None:
            super().emit(record)

    def _open(self) -> TextIO:
        """The log file, the admin's alone (0600) whatever the umask, a file made before
        included: it holds what hosts and paramiko said (state_files.open_append)."""
        fd = open_append(self.baseFilename, "fleet's debug log")
        try:
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def handleError(self, record: logging.LogRecord) -> None:
        """Never print (the default prints a traceback on stderr): remember why instead."""
        err = sys.exc_info()[1]
        self.failure = "%s: %s" % (self.baseFilename, err)
        self._retry_at = time.monotonic() + RETRY_S


_lock = threading.Lock()
_keeper: Optional[Keeper] = None


def keeper() -> Keeper:
    """The one handler, attached to paramiko's and the fleet's loggers on first use."""
    global _keeper
    with _lock:
        if _keeper is None:
            _keeper = Keeper()
            for name in LOGGERS:
                logger = logging.getLogger(name)
                logger.addHandler(_keeper)
                if logger.level == logging.NOTSET:
                    logger.setLevel(logging.INFO)
        return _keeper


def watch(thread: threading.Thread, link: LinkLog) -> None:
    """Records logged by ``thread`` (a paramiko Transport) also go to ``link``."""
    keeper().links[thread] = link
