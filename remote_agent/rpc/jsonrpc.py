"""JSON-RPC 2.0, one object per line: parsing, validation and the error codes of the protocol.

Nothing a client sends may crash or hang the agent: every line gets a response (or, for a
notification, none), and a handler's unexpected exception becomes an internal error reported
to the client and logged with its traceback.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Protocol, Tuple, \
    Union

from remote_agent.text import noun_for, said_all

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
ANSWER_TOO_LARGE = 1017
HOST_FAILED = 1018
JOB_KEY_MISMATCH = 1019

# Limits of the protocol (docs/protocol.md, "Framing"): whatever a client sends, the agent's
# work and answers stay bounded.
MAX_LINE_BYTES = 1 << 20  # a request line
MAX_ANSWER_BYTES = 16 << 20  # an answer line: one answer, or all the answers of a batch
MAX_BATCH = 100  # requests in one batch
MAX_DEPTH = 32  # arrays and objects nested in a request
MAX_INT = (1 << 31) - 1  # an integer param, unless its method says otherwise
MAX_TEXT = 4096  # characters of a string param, unless its method says otherwise
MAX_ARG = 128 * 1024  # a job's argument or environment value (Linux's MAX_ARG_STRLEN)
MAX_ITEMS = 4096  # entries of a list or object param

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
    JOB_NOT_FOUND: REQUEST, START_FAILED: JOB, ANSWER_TOO_LARGE: REQUEST, HOST_FAILED: HOST,
    JOB_KEY_MISMATCH: REQUEST,
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


def text_problem(value: str, max_len: int) -> Optional[str]:
    """Why a string cannot be taken, or None: too long, a NUL (never in a path, an argument
    or a name), or a lone surrogate (not Unicode: no file, database or process could take it)."""
    if len(value) > max_len:
        return "at most %d characters long, got %d" % (max_len, len(value))
    if "\x00" in value:
        return "free of NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "valid Unicode (it holds a lone surrogate)"
    return None


def unprintable(value: str) -> Optional[str]:
    """Why a string that is shown (a name, a reason) or used as a path cannot be taken, or
    None: a character that is not printable (a control character, as an escape sequence or a
    line break, or another that str.isprintable refuses), which would move a terminal's
    cursor, forge a log line or hide a path's true name."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is None:
        return None
    return "free of control characters and other unprintable ones (%r at offset %d)" % (
        bad, value.index(bad))


class Params:
    """A request's named params, checked against what the method accepts.

    Unknown names are refused so a typo ("profil") is an error, not a silent default. Every
    value is checked for its type (a boolean is never a string or a number, an integer never a
    float) and its size; ``where`` names the method (or the param holding a nested object)."""

    def __init__(self, where: str, raw: Any, accepted: Iterable[str]):
        self.method = where
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RpcError(INVALID_PARAMS, "%s takes named params (a JSON object), not %s"
                           % (where, _json_type(raw)))
        accepted = tuple(accepted)
        unknown = sorted(set(raw) - set(accepted))
        if unknown:
            raise RpcError(INVALID_PARAMS, "%s does not take %s %s; it takes %s" % (
                where, noun_for(len(unknown), "param"), ", ".join(map(repr, unknown)),
                ", ".join(accepted) or "none"))
        self.raw = raw

    def _refuse(self, name: str, what: str, got: str) -> RpcError:
        return RpcError(INVALID_PARAMS, "%s param %r must be %s, got %s" % (
            self.method, name, what, got))

    def given(self, name: str) -> bool:
        """Whether the request holds the param (null counts as not given)."""
        return self.raw.get(name) is not None

    def get(self, name: str, types: Tuple[type, ...], what: str, default: Any = REQUIRED) -> Any:
        value = self.raw.get(name, REQUIRED)
        if value is REQUIRED or (value is None and default is not REQUIRED):
            if default is REQUIRED:
                raise RpcError(INVALID_PARAMS, "%s needs param %r (%s)" % (self.method, name, what))
            return default
        # bool is an int in Python, never in the protocol
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise self._refuse(name, what, _json_type(value))
        return value

    def text(self, name: str, default: Any = REQUIRED, max_len: int = MAX_TEXT,
             choices: Tuple[str, ...] = ()) -> Any:
        """A string that is shown or names something (a path, a job, a GPU, a reason): every
        character printable. The program's arguments and the environment's values, passed on
        as they are and never shown raw, are ``texts`` and ``text_map``."""
        value = self.get(name, (str,), "a string", default)
        if isinstance(value, str):
            problem = text_problem(value, max_len) or unprintable(value)
            if problem:
                raise self._refuse(name, "a string " + problem, repr(value[:40]))
            if choices and value not in choices:
                raise self._refuse(name, "one of " + ", ".join(choices), repr(value[:40]))
        return value

    def integer(self, name: str, default: Any = REQUIRED, minimum: Optional[int] = None,
                maximum: int = MAX_INT) -> Any:
        value = self.get(name, (int,), "an integer", default)
        if isinstance(value, int) and not isinstance(value, bool):
            low = -MAX_INT if minimum is None else minimum
            if not low <= value <= maximum:
                raise self._refuse(name, "an integer from %d to %d" % (low, maximum),
                                   _short_number(value))
        return value

    def flag(self, name: str, default: Any = REQUIRED) -> Any:
        return self.get(name, (bool,), "true or false", default)

    def gpu(self, name: str = "gpu") -> Union[int, str]:
        """A GPU named by index (int) or uuid (string), as everywhere in the protocol."""
        return self._gpu_ref(name, self.get(name, (int, str), "a GPU index or a GPU uuid"))

    def _gpu_ref(self, name: str, value: Any) -> Union[int, str]:
        what = "a GPU index (0 to %d) or a GPU uuid" % MAX_INT
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self._refuse(name, what, _json_type(value))
        if isinstance(value, int) and not 0 <= value <= MAX_INT:
            raise self._refuse(name, what, _short_number(value))
        problem = isinstance(value, str) and (text_problem(value, MAX_TEXT) or
                                              unprintable(value))
        if problem:
            raise self._refuse(name, "%s, a string %s" % (what, problem), repr(value[:40]))
        return value

    def gpus(self, name: str = "gpus") -> List[Union[int, str]]:
        """A non-empty list of GPUs, each named as ``gpu`` names one."""
        values = self.get(name, (list,), "a non-empty list of GPU indexes or uuids")
        if not values or len(values) > MAX_ITEMS:
            raise self._refuse(name, "a list of 1 to %d GPU indexes or uuids" % MAX_ITEMS,
                               "%d items" % len(values))
        return [self._gpu_ref(name, v) for v in values]

    def texts(self, name: str, what: str, default: Any = REQUIRED, max_len: int = MAX_TEXT,
              max_items: int = MAX_ITEMS) -> Any:
        """A list of strings (``what`` says what they are for), each checked as ``text``."""
        values = self.get(name, (list,), what, default)
        if values is default:
            return values
        if len(values) > max_items:
            raise self._refuse(name, what + " (at most %d)" % max_items, "%d" % len(values))
        for v in values:
            problem = text_problem(v, max_len) if isinstance(v, str) else "strings only"
            if problem:
                raise self._refuse(name, "%s: %s" % (what, problem), _json_type(v) if not
                                   isinstance(v, str) else repr(v[:40]))
        return values

    def text_map(self, name: str, what: str, default: Any = REQUIRED, max_len: int = MAX_TEXT,
                 max_items: int = MAX_ITEMS) -> Any:
        """An object of string values (``what`` says what it is for): keys checked as
        ``text`` (names, shown), values as each of ``texts``."""
        values = self.get(name, (dict,), what, default)
        if values is default:
            return values
        if len(values) > max_items:
            raise self._refuse(name, what + " (at most %d entries)" % max_items,
                               "%d" % len(values))
        for key, v in values.items():
            problem = text_problem(key, MAX_TEXT) or unprintable(key)
            if problem:
                raise self._refuse(name, "%s, its keys each a string %s" % (what, problem),
                                   repr(key[:40]))
            problem = text_problem(v, max_len) if isinstance(v, str) else "strings only"
            if problem:
                raise self._refuse(name, "%s: %s" % (what, problem), "%r: %s" % (
                    key[:40], _json_type(v)))
        return values

    def nested(self, name: str, accepted: Iterable[str], what: str,
               default: Any = REQUIRED) -> Any:
        """A param that is itself an object of named params, checked the same way."""
        value = self.get(name, (dict,), what, default)
        if value is default:
            return value
        return Params("%s param %r" % (self.method, name), value, accepted)


Handler = Callable[[Params], Any]


@dataclass(frozen=True)
class Method:
    handler: Handler
    params: Tuple[str, ...] = ()


REQUEST_MEMBERS = ("jsonrpc", "id", "method", "params")
MAX_ID = 256  # characters of a string id
# room kept in a batch's answer line for the short refusals of requests not carried out
_REFUSAL_ROOM = MAX_BATCH * (MAX_ID + 768)


def parse(line: Union[bytes, str]) -> Any:
    """One request line as JSON, strictly: UTF-8, no NaN or Infinity, no number too big for a
    double, no key twice in one object, no deeper nesting than MAX_DEPTH."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        message = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                             object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _too_deep() from None
    except (UnicodeDecodeError, ValueError) as err:
        raise RpcError(PARSE_ERROR, "not valid JSON: %s" % err) from err
    if _deeper_than(message, MAX_DEPTH):
        raise _too_deep()
    return message


def _no_constant(name: str) -> Any:
    raise RpcError(PARSE_ERROR, "not valid JSON: %s is not a JSON number" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise RpcError(PARSE_ERROR, "not valid JSON: the number %s is out of range" % text[:40])
    return value


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    obj: Dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RpcError(INVALID_REQUEST, "the key %r appears twice in one object; say each "
                           "name once" % key[:40])
        obj[key] = value
    return obj


def _too_deep() -> RpcError:
    return RpcError(INVALID_REQUEST, "the request nests arrays and objects deeper than %d "
                    "levels" % MAX_DEPTH)


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class Said(Protocol):
    """What says a dispatcher's failures once while they last (``remote_agent.failing``'s
    ``Failures``, which sits above this module: it names RpcError among the host's own)."""

    def failed(self, name: Hashable, said: str, level: Optional[int] = None,
               trace: bool = False, same: Optional[str] = None,
               cap: Optional[int] = None) -> None: ...

    def worked(self, name: Hashable, said: str) -> None: ...


class Dispatcher:
    """Turns request lines into response lines using a table of methods. ``failures`` maps
    exception types that are the host's own failures, not bugs (a full disk, a file another
    hand changed), to the code they answer; any other exception is an internal error. A method
    that fails is logged (its traceback only where it is a bug) by ``said`` (the daemon's, for
    all its connections), once while it fails the same way and once when it works again: a
    client that retries each pass (the scheduler's launch on a full disk) logged it each call."""

    def __init__(self, methods: Dict[str, Method], said: "Said",
                 failures: Optional[Dict[type, int]] = None):
        self.methods = methods
        self.failures = failures or {}
        self.said = said

    def handle_line(self, line: Union[bytes, str]) -> Optional[str]:
        """The response line for one request line, or None when nothing is owed (notifications)."""
        try:
            message = parse(line)
        except RpcError as err:
            return dump(error_response(None, err))
        if isinstance(message, list):
            return self._batch(message)
        return self._answer(message, MAX_ANSWER_BYTES, "the limit of an answer line")[0]

    def _batch(self, batch: List[Any]) -> Optional[str]:
        """One line of answers for a batch, within MAX_ANSWER_BYTES. An answer that does not fit
        is withheld (its request was carried out) and the requests after it are not carried
        out; each says so. Notifications are carried out all the same: they owe no answer."""
        if not batch or len(batch) > MAX_BATCH:
            return dump(error_response(None, RpcError(INVALID_REQUEST, (
                "a batch holds at most %d requests, not %d" % (MAX_BATCH, len(batch))
                if batch else "an empty batch is not a request"))))
        parts: List[str] = []
        room = MAX_ANSWER_BYTES - _REFUSAL_ROOM
        full = False
        for message in batch:
            if full and isinstance(message, dict) and "id" in message:
                parts.append(dump(error_response(_reply_id(message), RpcError(
                    ANSWER_TOO_LARGE, "not carried out: the answers before it fill this batch's "
                    "answer line (%d bytes at most); send it again, in a smaller batch" %
                    MAX_ANSWER_BYTES, {"carried_out": False, "limit": MAX_ANSWER_BYTES}))))
                continue
            part, withheld = self._answer(message, room, "what this batch's answer line has "
                                          "left")
            full = full or withheld
            if part is not None:
                parts.append(part)
                room -= len(part) + 1
        return "[" + ",".join(parts) + "]" if parts else None

    def _answer(self, message: Any, room: int, what: str) -> Tuple[Optional[str], bool]:
        """The answer line to one request (None for a notification), and whether its result
        was withheld for not fitting in ``room`` bytes."""
        reply = self._handle(message)
        if reply is None:
            return None, False
        method = message["method"] if "result" in reply else None  # (a method's, carried out)
        try:
            text = dump(reply)
        except ValueError as err:  # a result that is not JSON (NaN): a bug of ours
            self.said.failed(("answer", method), "the answer to %s is not valid JSON: %s; said "
                             "once until it is again" % (method, err), trace=True)
            return dump(error_response(reply["id"], RpcError(
                INTERNAL_ERROR, "the agent's answer is not valid JSON: %s" % err))), False
        if method is not None:
            self.said.worked(("answer", method), "the answer to %s is valid JSON again" % method)
        if len(text) <= room:
            return text, False
        return dump(error_response(reply["id"], RpcError(ANSWER_TOO_LARGE, (
            "the answer to %s would be %d bytes, over %s (%d bytes); the request was carried "
            "out and its answer withheld: ask for less (e.g. fewer job.logs lines, a job.list "
            "state filter)" % (str(message.get("method"))[:64], len(text), what, room)),
            {"carried_out": True, "size": len(text), "limit": MAX_ANSWER_BYTES}))), True

    def _handle(self, message: Any) -> Optional[Dict[str, Any]]:
        if not isinstance(message, dict):
            return error_response(None, RpcError(
                INVALID_REQUEST, "a request must be a JSON object, not %s" % _json_type(message)))
        is_notification = "id" not in message
        req_id = _reply_id(message)
        if req_id is None and message.get("id") is not None:
            return error_response(None, RpcError(INVALID_REQUEST, (
                "id must be a string of at most %d characters, an integer or null" % MAX_ID)))
        unknown = sorted(set(message) - set(REQUEST_MEMBERS))
        if unknown:
            return error_response(req_id, RpcError(INVALID_REQUEST, (
                "a request has only the members %s, not %s" % (
                    ", ".join(REQUEST_MEMBERS), ", ".join(repr(k[:40]) for k in unknown[:5])))))
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
                method[:64], ", ".join(sorted(self.methods))))
        try:
            result = entry.handler(Params(method, params, entry.params))
        except RpcError:
            raise
        except Exception as err:  # tell the client; the trace is in the log
            code = next((c for kind, c in self.failures.items() if isinstance(err, kind)), None)
            self.said.failed(("method", method), "method %s failed: %s: %s; said once until "
                             "it is carried out again" % (method, type(err).__name__, err),
                             trace=code is None, same=_failed_the_same(err))
            if code is not None:
                raise RpcError(code, "%s could not be carried out on this host: %s" % (
                    method, err)) from err
            raise RpcError(INTERNAL_ERROR, "%s failed inside the agent: %s: %s" % (
                method, type(err).__name__, err)) from err
        self.said.worked(("method", method), "method %s is carried out again" % method)
        return result


def _failed_the_same(err: Exception) -> str:
    """What two failures of a method must share to be one: the error's kind and, for a system
    call's, its errno, not the file it names (a launch tried again is a new job, and its
    directory's name is new at each call); any other error's words too."""
    if isinstance(err, OSError) and err.errno is not None:
        return "%s [Errno %d]" % (type(err).__name__, err.errno)
    return "%s: %s" % (type(err).__name__, err)


def _reply_id(message: Dict[str, Any]) -> Union[str, int, None]:
    """The request's id if it is one the protocol takes, else None."""
    req_id = message.get("id")
    if isinstance(req_id, str) and len(req_id) <= MAX_ID and not text_problem(req_id, MAX_ID):
        return req_id
    if isinstance(req_id, int) and not isinstance(req_id, bool) and abs(req_id) < 1 << 63:
        return req_id
    return None


def error_response(req_id: Any, err: RpcError) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": err.to_json()}


def dump(obj: Union[Dict[str, Any], List[Dict[str, Any]]]) -> str:
    """One line of JSON (ASCII, so its length is its size in bytes; never NaN), its text
    Unicode: a lone surrogate (a byte of a path or a name that is no UTF-8) reads U+FFFD
    (``text.said``), as the agent refuses one in a request."""
    line = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    if "\\ud" in line:  # an escaped surrogate: of a pair (an emoji, kept), or a lone one
        line = json.dumps(said_all(obj), separators=(",", ":"), allow_nan=False)
    return line


def _short_number(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else "%s... (%d digits)" % (text[:12], len(text))


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
