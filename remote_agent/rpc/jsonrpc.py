"""JSON-RPC 2.0, one object per line: parsing, validation and the error codes of the protocol.

Nothing a client sends may crash or hang the agent: every line gets a response (or, for a
notification, none), and a handler's unexpected exception becomes an internal error reported
to the client and logged with its traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

log = logging.getLogger("remote_agent.rpc")

# JSON-RPC 2.0's own codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# The agent's application codes: stable, documented in docs/protocol.md.
GPU_NOT_FOUND = 1001
NOT_MIG = 1002
UNKNOWN_PROFILE = 1003
NO_ROOM = 1004
INSTANCE_BUSY = 1005
STALE_LAYOUT = 1006
INSTANCE_NOT_FOUND = 1007
NVML_FAILED = 1008
PROTOCOL_MISMATCH = 1009
NOT_PERMITTED = 1010
GPU_IN_USE = 1011
NEEDS_DESTROY = 1012
NOT_SUPPORTED = 1013
BACKEND_UNAVAILABLE = 1014
JOB_NOT_FOUND = 1015
START_FAILED = 1016

MAX_LINE_BYTES = 1 << 20

# What an error says a client should do next (docs/protocol.md, "Error classes"). One table,
# beside the codes, so the agent and every client read a refusal the same way.
JOB = "job"            # the job as given can never start: fail it with the agent's words
CAPACITY = "capacity"  # this GPU cannot take it now: place it elsewhere or later
HOST = "host"          # the host itself is failing (NVML, privileges, a bug): try another host
REQUEST = "request"    # the request is malformed or names nothing there: do not retry it

ERROR_CLASSES = {
    PARSE_ERROR: REQUEST, INVALID_REQUEST: REQUEST, METHOD_NOT_FOUND: REQUEST,
    INVALID_PARAMS: REQUEST, INTERNAL_ERROR: HOST,
    GPU_NOT_FOUND: HOST, NOT_MIG: CAPACITY, UNKNOWN_PROFILE: CAPACITY, NO_ROOM: CAPACITY,
    INSTANCE_BUSY: CAPACITY, STALE_LAYOUT: CAPACITY, INSTANCE_NOT_FOUND: REQUEST,
    NVML_FAILED: HOST, PROTOCOL_MISMATCH: HOST, NOT_PERMITTED: HOST, GPU_IN_USE: CAPACITY,
    NEEDS_DESTROY: CAPACITY, NOT_SUPPORTED: CAPACITY, BACKEND_UNAVAILABLE: HOST,
    JOB_NOT_FOUND: REQUEST, START_FAILED: JOB,
}


def error_class(code: Any) -> str:
    """The class of an error code; codes this table does not know count as the host's."""
    return ERROR_CLASSES.get(code, HOST) if isinstance(code, int) else HOST


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> Dict[str, Any]:
        """The error object of an answer; its data always carries the code's class, so a
        client knows what to do next without a table of its own."""
        data = dict(self.data or {})
        data["class"] = error_class(self.code)
        return {"code": self.code, "message": self.message, "data": data}


REQUIRED = object()  # the default of a param that must be given


class Params:
    """A request's named params, checked against what the method accepts.

    Unknown names are refused so a typo ("profil") is an error, not a silent default."""

    def __init__(self, method: str, raw: Any, accepted: Iterable[str]):
        self.method = method
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RpcError(INVALID_PARAMS, "%s takes named params (a JSON object), not %s"
                           % (method, _json_type(raw)))
        accepted = tuple(accepted)
        unknown = sorted(set(raw) - set(accepted))
        if unknown:
            raise RpcError(INVALID_PARAMS, "%s does not take param(s) %s; it takes %s" % (
                method, ", ".join(map(repr, unknown)), ", ".join(accepted) or "none"))
        self.raw = raw

    def get(self, name: str, types: Tuple[type, ...], what: str, default: Any = REQUIRED) -> Any:
        value = self.raw.get(name, REQUIRED)
        if value is REQUIRED or (value is None and default is not REQUIRED):
            if default is REQUIRED:
                raise RpcError(INVALID_PARAMS, "%s needs param %r (%s)" % (self.method, name, what))
            return default
        # bool is an int in Python, never in the protocol
        if isinstance(value, bool) and bool not in types:
            raise RpcError(INVALID_PARAMS, "%s param %r must be %s, got %s" % (
                self.method, name, what, _json_type(value)))
        if not isinstance(value, types):
            raise RpcError(INVALID_PARAMS, "%s param %r must be %s, got %s" % (
                self.method, name, what, _json_type(value)))
        return value

    def text(self, name: str, default: Any = REQUIRED) -> Any:
        return self.get(name, (str,), "a string", default)

    def integer(self, name: str, default: Any = REQUIRED, minimum: Optional[int] = None) -> Any:
        value = self.get(name, (int,), "an integer", default)
        if minimum is not None and value is not None and value < minimum:
            raise RpcError(INVALID_PARAMS, "%s param %r must be >= %d, got %d" % (
                self.method, name, minimum, value))
        return value

    def flag(self, name: str, default: Any = REQUIRED) -> Any:
        return self.get(name, (bool,), "true or false", default)

    def gpu(self, name: str = "gpu") -> Union[int, str]:
        """A GPU named by index (int) or uuid (string), as everywhere in the protocol."""
        value = self.get(name, (int, str), "a GPU index or a GPU uuid", REQUIRED)
        if isinstance(value, int) and value < 0:
            raise RpcError(INVALID_PARAMS, "%s param %r must be a GPU index >= 0, got %d" % (
                self.method, name, value))
        return value


Handler = Callable[[Params], Any]


@dataclass(frozen=True)
class Method:
    handler: Handler
    params: Tuple[str, ...] = ()


class Dispatcher:
    """Turns request lines into response lines using a table of methods."""

    def __init__(self, methods: Dict[str, Method]):
        self.methods = methods

    def handle_line(self, line: Union[bytes, str]) -> Optional[str]:
        """The response line for one request line, or None when nothing is owed (notifications)."""
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            message = json.loads(text)
        except (UnicodeDecodeError, ValueError) as err:
            return dump(error_response(None, RpcError(PARSE_ERROR, "not valid JSON: %s" % err)))
        if isinstance(message, list):
            if not message:
                return dump(error_response(None, RpcError(
                    INVALID_REQUEST, "an empty batch is not a request")))
            replies = [r for r in (self._handle(m) for m in message) if r is not None]
            return dump(replies) if replies else None
        reply = self._handle(message)
        return None if reply is None else dump(reply)

    def _handle(self, message: Any) -> Optional[Dict[str, Any]]:
        if not isinstance(message, dict):
            return error_response(None, RpcError(
                INVALID_REQUEST, "a request must be a JSON object, not %s" % _json_type(message)))
        is_notification = "id" not in message
        req_id = message.get("id")
        if not isinstance(req_id, (str, int, type(None))) or isinstance(req_id, bool):
            return error_response(None, RpcError(
                INVALID_REQUEST, "id must be a string, a number or null"))
        method = message.get("method")
        if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return error_response(req_id, RpcError(
                INVALID_REQUEST, 'a request needs "jsonrpc": "2.0" and a string "method"'))
        try:
            result = self.call(method, message.get("params"))
        except RpcError as err:
            return None if is_notification else error_response(req_id, err)
        return None if is_notification else {"jsonrpc": "2.0", "id": req_id, "result": result}

    def call(self, method: str, params: Any) -> Any:
        entry = self.methods.get(method)
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, "no method %r; methods: %s" % (
                method, ", ".join(sorted(self.methods))))
        try:
            return entry.handler(Params(method, params, entry.params))
        except RpcError:
            raise
        except Exception as err:  # a bug of ours: tell the client, keep the trace in the log
            log.exception("method %s failed", method)
            raise RpcError(INTERNAL_ERROR, "%s failed inside the agent: %s: %s" % (
                method, type(err).__name__, err)) from err


def error_response(req_id: Any, err: RpcError) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": err.to_json()}


def dump(obj: Union[Dict[str, Any], List[Dict[str, Any]]]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
