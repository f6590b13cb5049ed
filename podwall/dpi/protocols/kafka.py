"""Apache Kafka: detection by a plausible request header, and a parser of requests and responses.

Every message is `size (int32) | body`. A request body starts with the header `api_key
(int16), api_version (int16), correlation_id (int32), client_id (nullable string)`, and,
from the first flexible version of its API, tagged fields; a response body starts with the
correlation id of its request, so responses are matched through a bounded map. Topic names
are read from Produce, Fetch and Metadata requests, old and flexible (compact) versions;
reading them is best effort: a body that does not parse leaves `topics` empty and never
fails the flow. Captures often start mid-connection, so the detector walks the first
buffered messages and decides on any request among them, in either direction, and the
parser finds which direction sends the requests the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any, ClassVar

from podwall.core.errors import ProtocolError
from podwall.core.limits import DEFAULT_LIMITS, Limits
from podwall.core.types import PROTO_TCP, Direction
from podwall.dpi.base import DetectContext, Detection, L7Event
from podwall.dpi.wire import FramedStream

__all__ = ["API_NAMES", "KafkaDetector", "KafkaParser", "parse_request_header", "request_topics"]

APP = "kafka"
MAX_MESSAGE = 100 * 1024 * 1024  # the broker's default socket.request.max.bytes
MAX_CLIENT_ID = 256  # longer client ids exist in theory, not in practice: a sanity bound for detection
MAX_TOPICS = 64  # topic names kept per request
MAX_PENDING = 1024  # correlation ids remembered while waiting for their responses
DETECT_MESSAGES = 8  # messages the detector walks looking for a request
MAX_UNSEEN_RESPONSE = 1024 * 1024  # a message this large that is not a request: not worth waiting for

# api_key: (name, highest version known today, first flexible version or None)
APIS: dict[int, tuple[str, int, int | None]] = {
    0: ("Produce", 12, 9), 1: ("Fetch", 17, 12), 2: ("ListOffsets", 10, 6), 3: ("Metadata", 13, 9),
    4: ("LeaderAndIsr", 7, 4), 5: ("StopReplica", 4, 2), 6: ("UpdateMetadata", 8, 6),
    7: ("ControlledShutdown", 3, 3), 8: ("OffsetCommit", 9, 8), 9: ("OffsetFetch", 9, 6),
    10: ("FindCoordinator", 6, 3), 11: ("JoinGroup", 9, 6), 12: ("Heartbeat", 4, 4), 13: ("LeaveGroup", 5, 4),
    14: ("SyncGroup", 5, 4), 15: ("DescribeGroups", 6, 5), 16: ("ListGroups", 5, 3), 17: ("SaslHandshake", 1, None),
    18: ("ApiVersions", 4, 3), 19: ("CreateTopics", 7, 5), 20: ("DeleteTopics", 6, 4), 21: ("DeleteRecords", 2, 2),
    22: ("InitProducerId", 5, 2), 23: ("OffsetForLeaderEpoch", 4, 4), 24: ("AddPartitionsToTxn", 5, 3),
    25: ("AddOffsetsToTxn", 4, 3), 26: ("EndTxn", 5, 3), 27: ("WriteTxnMarkers", 1, 1),
    28: ("TxnOffsetCommit", 5, 3), 29: ("DescribeAcls", 3, 2), 30: ("CreateAcls", 3, 2), 31: ("DeleteAcls", 3, 2),
    32: ("DescribeConfigs", 4, 4), 33: ("AlterConfigs", 2, 2), 34: ("AlterReplicaLogDirs", 2, 2),
    35: ("DescribeLogDirs", 4, 2), 36: ("SaslAuthenticate", 2, 2), 37: ("CreatePartitions", 3, 2),
    38: ("CreateDelegationToken", 3, 2), 39: ("RenewDelegationToken", 2, 2), 40: ("ExpireDelegationToken", 2, 2),
    41: ("DescribeDelegationToken", 3, 2), 42: ("DeleteGroups", 2, 2), 43: ("ElectLeaders", 2, 2),
    44: ("IncrementalAlterConfigs", 1, 1), 45: ("AlterPartitionReassignments", 0, 0),
    46: ("ListPartitionReassignments", 0, 0), 47: ("OffsetDelete", 0, None), 48: ("DescribeClientQuotas", 1, 1),
    49: ("AlterClientQuotas", 1, 1), 50: ("DescribeUserScramCredentials", 0, 0),
    51: ("AlterUserScramCredentials", 0, 0), 52: ("Vote", 1, 0), 53: ("BeginQuorumEpoch", 1, 0),
    54: ("EndQuorumEpoch", 1, 0), 55: ("DescribeQuorum", 2, 0), 56: ("AlterPartition", 3, 0),
    57: ("UpdateFeatures", 1, 0), 58: ("Envelope", 0, 0), 59: ("FetchSnapshot", 1, 0), 60: ("DescribeCluster", 1, 0),
    61: ("DescribeProducers", 0, 0), 62: ("BrokerRegistration", 4, 0), 63: ("BrokerHeartbeat", 1, 0),
    64: ("UnregisterBroker", 0, 0), 65: ("DescribeTransactions", 0, 0), 66: ("ListTransactions", 1, 0),
    67: ("AllocateProducerIds", 0, 0), 68: ("ConsumerGroupHeartbeat", 0, 0), 69: ("ConsumerGroupDescribe", 0, 0),
    70: ("ControllerRegistration", 0, 0), 71: ("GetTelemetrySubscriptions", 0, 0), 72: ("PushTelemetry", 0, 0),
    73: ("AssignReplicasToDirs", 0, 0), 74: ("ListClientMetricsResources", 0, 0),
    75: ("DescribeTopicPartitions", 0, 0),
}  # fmt: skip
API_NAMES = {key: name for key, (name, _, _) in APIS.items()}
VERSION_SLACK = 4  # versions newer than we know of, still plausible from a newer client
_PRINTABLE_TEXT = re.compile(rb"[\x20-\x7e]*")


class _Cut(Exception):
    """A body ended before a field: best-effort topic reading stops there."""


class _Body:
    """A cursor over a request body for best-effort reading (any overrun raises `_Cut`)."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | bytearray, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise _Cut
        self.pos = start + n
        return start

    def signed(self, n: int) -> int:
        start = self.take(n)
        return int.from_bytes(self.data[start : start + n], "big", signed=True)

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.data[self.take(1)]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise _Cut

    def string(self, compact: bool) -> str | None:
        n = self.uvarint() - 1 if compact else self.signed(2)
        if n < 0:
            return None
        start = self.take(n)
        return bytes(self.data[start : start + n]).decode("utf-8", "backslashreplace")

    def array(self, compact: bool) -> int:
        n = self.uvarint() - 1 if compact else self.signed(4)
        if n > self.end:  # each element takes at least a byte: a count beyond that is garbage
            raise _Cut
        return n

    def bytes_(self, compact: bool) -> None:
        n = self.uvarint() - 1 if compact else self.signed(4)
        if n > 0:
            self.take(n)

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _produce(body: _Body, version: int, flexible: bool, topics: list[str]) -> None:
    if version >= 3:
        body.string(flexible)  # transactional_id
    body.take(2 + 4)  # acks, timeout
    for _ in range(body.array(flexible)):
        name = body.string(flexible)
        if name is not None:
            topics.append(name)
        if len(topics) >= MAX_TOPICS:
            return
        for _ in range(body.array(flexible)):
            body.take(4)
            body.bytes_(flexible)
            if flexible:
                body.tags()
        if flexible:
            body.tags()


def _fetch_partition_size(version: int) -> int:
    size = 4 + 8 + 4  # partition, fetch_offset, partition_max_bytes
    if version >= 5:
        size += 8  # log_start_offset
    if version >= 9:
        size += 4  # current_leader_epoch
    if version >= 12:
        size += 4  # last_fetched_epoch
    return size


def _fetch(body: _Body, version: int, flexible: bool, topics: list[str]) -> None:
    if version >= 13:
        return  # topics are named by id from v13 on: nothing to report by name
    skip = 4 + 4 + 4  # replica_id, max_wait_ms, min_bytes
    if version >= 3:
        skip += 4
    if version >= 4:
        skip += 1
    if version >= 7:
        skip += 8
    body.take(skip)
    partition = _fetch_partition_size(version)
    for _ in range(body.array(flexible)):
        name = body.string(flexible)
        if name is not None:
            topics.append(name)
        if len(topics) >= MAX_TOPICS:
            return
        for _ in range(body.array(flexible)):
            body.take(partition)
            if flexible:
                body.tags()
        if flexible:
            body.tags()


def _metadata(body: _Body, version: int, flexible: bool, topics: list[str]) -> None:
    count = body.array(flexible)
    for _ in range(max(count, 0)):
        if version >= 10:
            body.take(16)  # topic_id
        name = body.string(flexible)
        if name is not None:
            topics.append(name)
        if len(topics) >= MAX_TOPICS:
            return
        if flexible:
            body.tags()


_TOPIC_READERS: dict[int, Callable[[_Body, int, bool, list[str]], None]] = {0: _produce, 1: _fetch, 3: _metadata}


def request_topics(api_key: int, version: int, data: bytes | bytearray, pos: int) -> list[str]:
    """Topic names of a Produce, Fetch or Metadata request body at `pos`: as many as parse, maybe none."""
    reader = _TOPIC_READERS.get(api_key)
    topics: list[str] = []
    if reader is None:
        return topics
    flexible = _is_flexible(api_key, version)
    with contextlib.suppress(_Cut):
        reader(_Body(data, pos), version, flexible, topics)
    return topics


def _is_flexible(api_key: int, version: int) -> bool:
    first = APIS[api_key][2]
    return first is not None and version >= first


def parse_request_header(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int, int, str | None, int] | None:
    """(api_key, api_version, correlation_id, client_id, body offset) of a plausible request header at `pos`.

    None when the bytes at `pos..end` (a message body without its size) are not one: unknown
    API, implausible version, or a client id that is not short printable text.
    """
    if end - pos < 10:
        return None
    api_key = int.from_bytes(data[pos : pos + 2], "big", signed=True)
    api = APIS.get(api_key)
    if api is None:
        return None
    version = int.from_bytes(data[pos + 2 : pos + 4], "big", signed=True)
    if not 0 <= version <= api[1] + VERSION_SLACK:
        return None
    correlation = int.from_bytes(data[pos + 4 : pos + 8], "big", signed=True)
    n = int.from_bytes(data[pos + 8 : pos + 10], "big", signed=True)
    body = pos + 10
    client_id: str | None = None
    if n == -1:
        pass
    elif 1 <= n <= MAX_CLIENT_ID and body + n <= end and _PRINTABLE_TEXT.fullmatch(data, body, body + n):
        client_id = bytes(data[body : body + n]).decode("ascii")
        body += n
    else:
        return None
    if _is_flexible(api_key, version):  # request header v2: tagged fields follow the client id
        tags = _Body(data, body)
        tags.end = end
        try:
            tags.tags()
        except _Cut:
            return None
        body = tags.pos
    return api_key, version, correlation, client_id, body


class KafkaParser:
    """Sans-IO Kafka parser for one connection: `request` and `response` events."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        cap = max(limits.parser_buffer, 64)
        self._sides = (FramedStream(cap, "Kafka message"), FramedStream(cap, "Kafka message"))
        self._pending: dict[int, int] = {}  # correlation_id -> api_key, oldest first
        self._requests: Direction | None = None  # the direction that sends requests, once seen

    def server_name(self) -> str | None:
        return None

    def feed(self, direction: Direction, data: bytes) -> list[L7Event]:
        out: list[L7Event] = []
        side = self._sides[direction]
        stream = side.stream
        stream.append(data)
        buf = stream.buf
        while (pos := side.next_frame(4)) >= 0:
            size = int.from_bytes(buf[pos : pos + 4], "big", signed=True)
            if not 4 <= size <= MAX_MESSAGE:
                raise ProtocolError(f"Kafka: message size {size} outside 4..{MAX_MESSAGE}")
            body = side.take_frame(size + 4, 4)
            if body is None:
                break
            self._message(direction, body, out)
        stream.compact()
        return out

    def _message(self, direction: Direction, body: bytes | bytearray, out: list[L7Event]) -> None:
        header = None
        if self._requests is None or self._requests == direction:
            header = parse_request_header(body, 0, len(body))
            if self._requests is None:
                self._requests = direction if header is not None else direction.other
        if self._requests == direction:
            if header is None:
                raise ProtocolError("Kafka: request with an unknown API key, version or a bad client id")
            api_key, version, correlation, client_id, at = header
            if len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            self._pending[correlation] = api_key
            fields: dict[str, Any] = {
                "api_key": api_key,
                "api_name": API_NAMES[api_key],
                "api_version": version,
                "correlation_id": correlation,
                "client_id": client_id,
                "topics": request_topics(api_key, version, body, at),
            }
            out.append(L7Event(APP, "request", direction, fields))
            return
        correlation = int.from_bytes(body[:4], "big", signed=True)
        answered = self._pending.pop(correlation, None)
        out.append(
            L7Event(
                APP,
                "response",
                direction,
                {
                    "correlation_id": correlation,
                    "api_key": answered,
                    "api_name": None if answered is None else API_NAMES[answered],
                },
            )
        )


def _plausible_api(data: bytes, pos: int, end: int) -> bool:
    """False once the API key and version at `pos` are there and name no request podwall knows."""
    if end - pos < 4:
        return True
    api = APIS.get(int.from_bytes(data[pos : pos + 2], "big", signed=True))
    version = int.from_bytes(data[pos + 2 : pos + 4], "big", signed=True)
    return api is not None and 0 <= version <= api[1] + VERSION_SLACK


def detect_messages(data: bytes, from_client: bool = False, max_unseen: int = MAX_UNSEEN_RESPONSE) -> Detection:
    """MATCH when one of the first messages is a plausible request; the others only need a sane size.

    A message still incomplete is judged by its request header when it has one; otherwise it
    may be a response (the capture began mid-connection), which keeps the candidate only when
    it is small enough (`max_unseen`: what the caller can still buffer) to be seen whole.
    From the client, the first message must be a request once its header is there: clients
    send nothing else.
    """
    pos = 0
    n = len(data)
    for _ in range(DETECT_MESSAGES):
        if n - pos < 4:
            return Detection.NEED_MORE
        size = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        if not 4 <= size <= MAX_MESSAGE:
            return Detection.NO
        end = pos + 4 + size
        if parse_request_header(data, pos + 4, min(end, n)) is not None:
            return Detection.MATCH
        if from_client and pos == 0 and (end <= n or not _plausible_api(data, pos + 4, min(end, n))):
            return Detection.NO
        if end > n:
            return Detection.NEED_MORE if size <= max_unseen else Detection.NO
        pos = end
    return Detection.NO


class KafkaDetector:
    """Names a flow `kafka` from a plausible request header among its first messages, either direction."""

    name: ClassVar[str] = APP
    transports: ClassVar[frozenset[int]] = frozenset({PROTO_TCP})
    ports: ClassVar[frozenset[int]] = frozenset({9092, 9093, 9094})

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def detect(self, direction: Direction, data: bytes, ctx: DetectContext) -> Detection:
        if not data:
            return Detection.NEED_MORE
        return detect_messages(data, direction == Direction.C2S, min(MAX_UNSEEN_RESPONSE, self._limits.dpi_buffer))

    def parser(self, ctx: DetectContext) -> KafkaParser:
        return KafkaParser(self._limits)
