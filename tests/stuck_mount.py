"""A FUSE filesystem that answers its mount and then never anything: a process that looks into
it waits in the kernel for an answer, and a SIGKILL does not end it (as a process stuck in a
driver's call) until the filesystem's server ends. Stdlib only: the FUSE protocol is spoken
straight to /dev/fuse.

Run as ``python -m tests.stuck_mount DIR``: prints ``ready`` once mounted, ``held`` once it has
taken a request it will not answer, and ends (letting the stuck process go) when its stdin
closes."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

FUSE_INIT = 26
IN_HEADER = "<IIQ"  # the request's length, opcode and id (the rest is not needed here)
OUT_HEADER = "<IiQ"  # the answer's length, error and the request's id
INIT_OUT = "<IIIIHHIIHHI28x"  # protocol 7.31: major, minor, readahead, flags, ... (64 bytes)


def serve(mount_dir: str) -> None:
    fd = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = b"fd=%d,rootmode=40000,user_id=0,group_id=0" % fd
    if libc.mount(b"stuck", mount_dir.encode(), b"fuse", 0, opts) != 0:
        sys.exit("mounting %s: %s" % (mount_dir, os.strerror(ctypes.get_errno())))
    request = os.read(fd, 1 << 20)
    _, opcode, unique = struct.unpack_from(IN_HEADER, request)
    if opcode != FUSE_INIT:
        sys.exit("the kernel's first request was %d, not FUSE_INIT" % opcode)
    init = struct.pack(INIT_OUT, 7, 31, 0, 0, 1, 1, 4096, 1, 1, 0, 0)
    os.write(fd, struct.pack(OUT_HEADER, 16 + len(init), 0, unique) + init)
    print("ready", flush=True)
    os.read(fd, 1 << 20)  # taken, never answered: its process waits for good
    print("held", flush=True)
    sys.stdin.read()


@contextmanager
def stuck_mount(mount_dir: str) -> Iterator[subprocess.Popen]:
    """The mount at ``mount_dir`` while the block runs; its server's ``held`` line is left to
    read. Its end lets every process stuck in it go (its requests fail), then unmounts it."""
    if not os.path.exists("/dev/fuse"):  # (a container without the device: nothing to mount)
        pytest.skip("a process stuck in the kernel is made with FUSE, and /dev/fuse is missing")
    os.makedirs(mount_dir, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "tests.stuck_mount", mount_dir],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        yield server
    finally:
        server.kill()
        server.wait()
        subprocess.run(["umount", "-l", mount_dir], check=False)


if __name__ == "__main__":
    serve(sys.argv[1])
