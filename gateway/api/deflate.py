"""permessage-deflate (RFC 7692) for the gateway's WebSockets: one compression per event, not
one per connection, and no zlib object kept by an idle socket.

Why not wsproto's `PerMessageDeflate`, which hypercorn negotiates on its own for every socket:
it keeps a compressor and a decompressor per connection with context takeover (a 32 KB window
and ~256 KB of deflate state each once used: issue 16 measured 145 KB per idle browser
subscriber against 45 KB without compression) and compresses every event once per connection
(48 µs per delivered message against 34 µs). Here:

- `negotiate` is the app's answer to the client's offers (`GATEWAY_WS_COMPRESSION=shared`, the
  default; `off` declines them all). It always asks for `server_no_context_takeover` and
  `client_no_context_takeover` (a server may, §7.1.1), so every message in either direction is
  compressed on its own and neither side keeps a window between messages. The app names the
  accepted extension in its `websocket.accept` headers; `gateway.api.hypercorn_patches` (patch 5)
  builds the socket's wsproto connection from it with `server_connection`.
- Outbound: a shared subscription's payload (one str object handed to every member of a group,
  `gateway.api.shared_subscriptions`) is compressed once (`shared_frame`, a one-entry cache
  keyed by that object) and each connection only adds its own compressed envelope prefix (made
  once per operation) and a constant suffix: three independent DEFLATE block runs, each ended by
  a sync flush, are one valid DEFLATE stream, and none refers back across the joins. The frame
  (a `PreparedText`) goes to the socket as is (`DeflateConnection.send`). Any other message
  (acks, pongs, query results) is compressed alone by `MessageDeflate.frame_outbound` with a
  fresh, small compressor. Messages under `COMPRESS_FROM` bytes go uncompressed (RSV1 clear, as
  §6 allows): a 200-byte tick frame compressed in three parts is 196 bytes.
- Inbound: a decompressor exists only while a compressed message is being read, and inflates at
  most the socket's `websocket_max_message_size`; a message that would inflate past it (a
  decompression bomb) is refused and the socket closed with 1009 (`DeflateConnection.events`
  makes hypercorn send the close frame for every frame wsproto refuses; hypercorn would
  otherwise drop the TCP connection without one).

Must never: keep a zlib object between messages, inflate more than the limit, compress the same
shared payload twice in a row, send a frame with a window larger than the client allowed, or do
I/O (it is sans-I/O: the patch and the connection's task move the bytes).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = [
    "COMPRESS_FROM",
    "MODES",
    "DeflateConnection",
    "Deflation",
    "MessageDeflate",
    "PreparedText",
    "deflate_part",
    "negotiate",
    "server_connection",
    "shared_frame",
]

NAME: Final = "permessage-deflate"
MODES: Final = ("shared", "off")

# Messages shorter than this many bytes are sent uncompressed. Measured (a priceTicks `next`
# with a graphql-ws UUID id): 200 bytes -> 196 compressed in three parts as `shared_frame` does
# (161 alone), 305 -> 208, 515 -> 219, 3461 -> 355: below this a shared frame saves nothing, and
# the client would pay an inflate for it.
COMPRESS_FROM: Final = 256

# zlib's level and memory for one message: a fresh compressor with the default memLevel 8 and a
# 32 KB window costs 35 µs to set up; sized to the message it costs 4 µs for the same output.
_LEVEL: Final = 6
_MEM_LEVEL: Final = 4
_SYNC_TAIL: Final = b"\x00\x00\xff\xff"  # what a sync flush ends with; §7.2.1 strips it


@dataclass(frozen=True, slots=True)
class Deflation:
    """What was agreed for one socket: the response header's value and the largest window the
    client lets the server compress with (`server_max_window_bits`, 15 when not offered)."""

    header: bytes
    server_bits: int = 15

    def fits(self, length: int) -> bool:
        """True when a message of `length` bytes compressed alone stays within the window: no
        back reference can reach further than the message itself."""
        return length <= 1 << self.server_bits


def negotiate(headers: Iterable[tuple[bytes, bytes]], mode: str) -> Deflation | None:
    """The permessage-deflate the gateway accepts from a handshake's request headers, or None.

    The first offer the gateway can honour wins (§5.1); an offer with an unknown, repeated or
    malformed parameter, or with `server_max_window_bits=8` (zlib cannot compress within a
    256-byte window), is passed over.
    """
    if mode == "off":
        return None
    for name, value in headers:
        if name.lower() != b"sec-websocket-extensions":
            continue
        for offer in value.decode("latin-1").split(","):
            accepted = _accept(offer)
            if accepted is not None:
                return accepted
    return None


def _accept(offer: str) -> Deflation | None:
    name, *parameters = (part.strip() for part in offer.split(";"))
    if name.lower() != NAME:
        return None
    seen: set[str] = set()
    server_bits: int | None = None
    for parameter in parameters:
        key, has_value, raw = (part.strip() for part in parameter.partition("="))
        key = key.lower()
        value = raw.strip('"')
        if key in seen:
            return None
        seen.add(key)
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if has_value:
                return None
        elif key == "server_max_window_bits":
            if not (value.isdigit() and 9 <= int(value) <= 15):
                return None
            server_bits = int(value)
        elif key == "client_max_window_bits":
            # Any client window suits us: messages are inflated with a 32 KB window.
            if has_value and not (value.isdigit() and 8 <= int(value) <= 15):
                return None
        else:
            return None
    header = f"{NAME}; server_no_context_takeover; client_no_context_takeover"
    if server_bits is None:
        return Deflation(header.encode())
    return Deflation(f"{header}; server_max_window_bits={server_bits}".encode(), server_bits)


def _window_bits(length: int, most: int) -> int:
    return max(9, min(most, length.bit_length()))


def deflate_part(data: bytes, *, last: bool = False, most_bits: int = 15) -> bytes:
    """`data` compressed alone and ended by a sync flush, so more parts may follow it; with
    `last`, the §7.2.1 tail removed, ready to end a message."""
    compressor = zlib.compressobj(
        _LEVEL, zlib.DEFLATED, -_window_bits(len(data), most_bits), _MEM_LEVEL
    )
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if last else out


_SUFFIX: Final = deflate_part(b"}", last=True)  # ends every subscription payload's envelope


class PreparedText(str):
    """A text message whose frame payload is already made: `wire` (compressed when `rsv1`).

    A str, so hypercorn passes it on; its value is the message's text, for anything that reads
    it. Only a `DeflateConnection` sends `wire` (any other connection sends the text).
    """

    wire: bytes
    rsv1: bool

    def __new__(cls, text: str, wire: bytes, rsv1: bool) -> PreparedText:
        prepared = super().__new__(cls, text)
        prepared.wire = wire
        prepared.rsv1 = rsv1
        return prepared


# The last shared payload compressed, and its compressed form: the hub hands the same str object
# to every member of a group in one synchronous loop, so one entry means one compression per
# event. Holding the object keeps its id from being reused while it is cached.
_last_shared: tuple[str, bytes] | None = None


def shared_frame(deflation: Deflation | None, prefix: bytes, payload: str, text: str) -> str:
    """The frame of `text` (= envelope prefix + `payload` + "}") for one socket.

    `prefix` is the envelope prefix compressed with `deflate_part` (once per operation; unused
    without `deflation`). Returns a `PreparedText`, uncompressed without deflation or under
    `COMPRESS_FROM` (which also spares wsproto's framing: 1.4 µs a frame here against its 2.6);
    or `text` itself when its message is too large for the socket's window, so that
    `MessageDeflate` compresses it for this socket alone.
    """
    global _last_shared
    if deflation is None or len(text) < COMPRESS_FROM:
        return PreparedText(text, text.encode(), False)
    if not deflation.fits(len(text)):
        return text
    cached = _last_shared
    if cached is not None and cached[0] is payload:
        body = cached[1]
    else:
        body = deflate_part(payload.encode())
        _last_shared = (payload, body)
    return PreparedText(text, prefix + body + _SUFFIX, True)


class MessageDeflate(Extension):
    """wsproto's side of one deflate socket: each message compressed or inflated alone.

    Holds no zlib object between messages. `limit` bounds a message's inflated size: past it,
    the message is refused with 1009 (MESSAGE_TOO_BIG).
    """

    name = NAME

    __slots__ = ("_compressed", "_frame_compressible", "_inflated", "_inflater", "_limit", "bits")

    def __init__(self, limit: int, server_bits: int = 15) -> None:
        self._limit = limit
        self.bits = server_bits
        self._inflater: zlib._Decompress | None = None
        self._inflated = 0
        self._compressed: bool | None = None  # the message being read: None between messages
        self._frame_compressible = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False  # server side only: the gateway never offers

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            return CloseReason.PROTOCOL_ERROR
        self._frame_compressible = opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION)
        if self._compressed is None and self._frame_compressible:
            self._compressed = rsv.rsv1
            if rsv.rsv1:
                self._inflater = zlib.decompressobj(-15)
                self._inflated = 0
        return RsvBits(True, False, False)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        inflater = self._inflater
        if inflater is None:  # already refused
            return CloseReason.MESSAGE_TOO_BIG
        try:
            out = inflater.decompress(data, self._limit - self._inflated + 1)
        except zlib.error:
            self._end_message()
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._limit or inflater.unconsumed_tail:
            self._end_message()
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def _end_message(self) -> None:
        self._inflater = None
        self._compressed = None

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._compressed and self._frame_compressible):
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not (fin and self._frame_compressible):
            return None
        if not self._compressed:
            self._compressed = None
            return None
        result = self._inflate(_SYNC_TAIL)
        self._end_message()  # client_no_context_takeover: nothing is kept for the next one
        return result

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        # A fragmented message (hypercorn sends none) goes uncompressed: RSV1 would have to be
        # set on its first frame before its last one is known.
        if opcode not in (Opcode.TEXT, Opcode.BINARY) or not fin or len(data) < COMPRESS_FROM:
            return rsv, data
        return RsvBits(True, rsv.rsv2, rsv.rsv3), deflate_part(data, last=True, most_bits=self.bits)


class _Events(list[Event]):
    """wsproto's queue of received events, as a list: it is nearly always empty, and an empty
    deque costs every socket 624 bytes (a list 56)."""

    __slots__ = ()

    def popleft(self) -> Event:
        return self.pop(0)


class DeflateConnection(Connection):
    """A server-side wsproto connection that sends a `PreparedText` as it was prepared, and
    answers every frame wsproto refuses with a close frame carrying the reason's code."""

    def __init__(
        self,
        connection_type: ConnectionType,
        extensions: list[Extension] | None = None,
        trailing_data: bytes = b"",
    ) -> None:
        super().__init__(connection_type, extensions, trailing_data)
        self._events = _Events()  # type: ignore[assignment]

    def send(self, event: Event) -> bytes:
        if (
            type(event) is TextMessage
            and isinstance(event.data, PreparedText)
            and event.message_finished
            and self.state is ConnectionState.OPEN
        ):
            wire = event.data.wire
            return _header(len(wire), event.data.rsv1) + wire
        return super().send(event)

    def events(self):  # type: ignore[no-untyped-def]  # wsproto's own signature
        for event in super().events():
            if isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN:
                # wsproto refused a frame (ParseFailed): the close is ours to send. hypercorn
                # answers a close only while the connection is REMOTE_CLOSING, so say so; it then
                # sends this code (1009 for a message over the limit) and ends the stream.
                self._state = ConnectionState.REMOTE_CLOSING
            yield event


def _header(length: int, rsv1: bool) -> bytes:
    first = 0xC1 if rsv1 else 0x81  # FIN, RSV1 when compressed, opcode TEXT; never masked
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def server_connection(accepted: Iterable[bytes], limit: int) -> DeflateConnection:
    """The wsproto connection of a socket whose app accepted `accepted` (the values of its
    `sec-websocket-extensions` response headers): with `MessageDeflate` when one is ours."""
    extensions: list[Extension] = []
    for value in accepted:
        deflation = _accept(value.decode("latin-1"))
        if deflation is not None:
            extensions = [MessageDeflate(limit, deflation.server_bits)]
            break
    return DeflateConnection(ConnectionType.SERVER, extensions)
