"""Serving the protocol over a byte stream: stdin/stdout for ``serve --stdio`` (an SSH channel
or a local pipe), one request line in, one response line out."""

from __future__ import annotations

from typing import BinaryIO

from remote_agent.rpc.jsonrpc import MAX_LINE_BYTES, PARSE_ERROR, Dispatcher, RpcError, dump, \
    error_response


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
            reply = dispatcher.handle_line(line)
        if reply is not None:
            writer.write(reply.encode("utf-8") + b"\n")
            writer.flush()
