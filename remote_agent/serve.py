"""Serving the protocol over a byte stream (a daemon's connection from a bridge): one request
line in, one answer line out, and the stream lives on whatever a line holds."""

from __future__ import annotations

import logging
from typing import BinaryIO

from remote_agent.rpc.jsonrpc import INTERNAL_ERROR, MAX_LINE_BYTES, PARSE_ERROR, Dispatcher, \
    RpcError, dump, error_response

log = logging.getLogger("remote_agent.rpc")


def serve_stream(dispatcher: Dispatcher, reader: BinaryIO, writer: BinaryIO) -> None:
    """Answer every line until the reader ends. A line longer than MAX_LINE_BYTES is refused
    and skipped to its end, so a runaway client can neither exhaust memory nor desync the stream."""
    while True:
        line = reader.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = reader.readline(MAX_LINE_BYTES)
            reply = dump(error_response(None, RpcError(
                PARSE_ERROR, "request line longer than %d bytes" % MAX_LINE_BYTES)))
        elif not line.strip():
            continue
        else:
            try:
                reply = dispatcher.handle_line(line)
            except Exception as err:  # a bug of ours must not end the connection: say so
                log.exception("answering a request line failed")
                reply = dump(error_response(None, RpcError(
                    INTERNAL_ERROR, "the agent failed to answer: %s: %s" % (
                        type(err).__name__, err))))
        if reply is not None:
            writer.write(reply.encode("utf-8") + b"\n")
            writer.flush()
