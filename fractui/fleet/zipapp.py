"""The host agent as one reproducible zipapp: ``remote_agent`` plus nvidia-ml-py's ``pynvml.py``.

Hosts get nothing installed: fractui copies this single file to a path named by its content hash
and runs ``python3 agent-<hash>.pyz serve --stdio ...``. Entries are sorted and carry fixed
metadata, so the bytes (and the hash, and the file name) change only when the content does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Optional

import remote_agent
from remote_agent.daemon.paths import code_files

_MAIN = b"import sys\n\nfrom remote_agent.cli import main\n\nsys.exit(main())\n"
_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class AgentArchive:
    data: bytes
    sha256: str
    name: str  # agent-<first 16 hex digits of sha256>.pyz


def _pynvml_source() -> bytes:
    """nvidia-ml-py's single-module ``pynvml.py``; anything else would not run from the zip."""
    spec = importlib.util.find_spec("pynvml")
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(".py"):
        raise RuntimeError("cannot vendor pynvml into the agent zipapp: nvidia-ml-py's pure-Python "
                           "pynvml.py is not importable here (found %r); pip install nvidia-ml-py"
                           % origin)
    if os.path.basename(origin) == "__init__.py":
        raise RuntimeError("cannot vendor pynvml into the agent zipapp: %s is a package (the "
                           "old 'pynvml' distribution?), not nvidia-ml-py's single pynvml.py"
                           % os.path.dirname(origin))
    with open(origin, "rb") as f:
        return f.read()


def build_agent_archive(package_dir: Optional[str] = None) -> AgentArchive:
    """Build the zipapp in memory from ``package_dir`` (default: the installed remote_agent).

    Rebuilt on every call rather than cached: it takes milliseconds, and a cache would have to
    notice source edits to stay correct.
    """
    if package_dir is None:
        package_dir = os.path.dirname(os.path.abspath(remote_agent.__file__))
    files = code_files(package_dir)
    files["__main__.py"] = _MAIN
    files["pynvml.py"] = _pynvml_source()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # unix, whatever the building OS
            zf.writestr(info, files[name])
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    return AgentArchive(data=data, sha256=digest, name="agent-%s.pyz" % digest[:16])


def write_archive(archive: AgentArchive, directory: str, name: Optional[str] = None) -> str:
    """Write the archive into ``directory`` under its own name (or ``name``: an image's fixed
    agent.pyz), atomically: an agent starting from that path never sees a half-written file."""
    os.makedirs(directory, exist_ok=True)
    name = name or archive.name
    path = os.path.join(directory, name)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(archive.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
