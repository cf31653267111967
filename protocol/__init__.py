"""calinode.protocol: the wire protocol, sans I/O (no trio, no libp2p, no sockets).

Bytes in, events out; messages in, bytes out (h11 style).  Module map, bottom-up:

- ``class CalinodeError``, ``ErrorCode`` (errors.py): the one exception tree and the stable
  error codes that travel on the wire; ``LocalProtocolError`` (we broke the protocol) and
  ``RemoteProtocolError`` (the peer did).
- ``PROTOCOL_VERSION``, ``JOB_PROTOCOL``, ``META_PROTOCOL`` (ids.py): libp2p protocol ids.
- ``class Limits``, ``DEFAULT_LIMITS`` (limits.py): every bound on what a peer may send.
- ``encode_frame``, ``class FrameDecoder``, ``NEED_DATA`` (framing.py): 4-byte big-endian length
  prefix, then the payload; oversized prefixes refused before buffering.
- ``pack``, ``unpack``, ``scan`` (codec.py): msgpack with limits; a bounded pre-scan refuses
  hostile payloads before msgpack builds a single object.
- ``encode_vectors``, ``decode_vectors`` (vectors.py): numpy float32 arrays as raw bytes + shape.
- ``check_*``, ``from_peer`` (validation.py): field checks shared by the message types.
- ``class CapabilityRecord``, ``class Load``, ``class PeerExchange`` (records.py): the meta
  protocol: signed node self-descriptions and the heartbeat that spreads them.
- ``class JobRequest``, ``JobResponse``, ``StreamChunk``, ``ErrorReply``, ``parse_message``,
  ``encode_message``, ``class MessageDecoder`` (messages.py): the job protocol, and messages to
  frames and back.
- Typed, bounded views of what peers send (each ``from_wire`` refuses what does not fit):
  ``Capabilities`` (capabilities.py), ``CollectionDef`` (collections.py), the params of the
  ping, echo, embed and generate jobs (job_params.py, with the shared checks and limits) and
  of the ``shard.*`` jobs (shard_params.py), a document on the wire (wire_docs.py), the replies
  of the inference jobs (job_replies.py), of the ``shard.*`` jobs (shard_replies.py) and of
  ``shard.changes`` (sync_replies.py), of ``ping`` and ``echo`` (builtin_replies.py); the
  tools a ``generate`` offers and the calls it answers (``ToolSpec``, ``ToolCall``: tools.py).
- ``rank_key`` (ranking.py): the one tie order of hits; ``SearchBudget`` (search_budget.py):
  how much one ``shard.search`` may cost and answer.

Typical use, on either side of a stream::

    stream.send_all(encode_message(JobRequest(id="r1", kind="embed", deadline_ms=5_000,
                                              params={"texts": ["hello"]})))
    decoder = MessageDecoder()
    decoder.feed(await stream.receive_some())
    while (message := decoder.next_message()) is not NEED_DATA:
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import ScanResult, pack, scan, unpack
from .errors import (
    ApiError,
    CalinodeError,
    ConfigError,
    ErrorCode,
    IdentityError,
    JobError,
    LocalProtocolError,
    ProtocolError,
    RecordError,
    RemoteProtocolError,
)
from .framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from .ids import JOB_PROTOCOL, META_PROTOCOL, PROTOCOL_VERSION
from .limits import DEFAULT_LIMITS, Limits
from .messages import (
    ErrorReply,
    JobRequest,
    JobResponse,
    Message,
    MessageDecoder,
    StreamChunk,
    encode_message,
    parse_message,
)
from .records import CapabilityRecord, Load, PeerExchange

if TYPE_CHECKING:
    from .vectors import VECTOR_DTYPE, decode_vectors, encode_vectors

#: Imported on first use (PEP 562): the vector codec needs numpy, which costs a CLI command
#: that never touches a vector ~0.1 s and starts OpenBLAS's threads.
_LAZY = {"VECTOR_DTYPE", "decode_vectors", "encode_vectors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import vectors

        return getattr(vectors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_LIMITS",
    "JOB_PROTOCOL",
    "META_PROTOCOL",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "VECTOR_DTYPE",
    "ApiError",
    "CalinodeError",
    "CapabilityRecord",
    "ConfigError",
    "ErrorCode",
    "ErrorReply",
    "FrameDecoder",
    "IdentityError",
    "JobError",
    "JobRequest",
    "JobResponse",
    "Limits",
    "Load",
    "LocalProtocolError",
    "Message",
    "MessageDecoder",
    "NeedData",
    "PeerExchange",
    "ProtocolError",
    "RecordError",
    "RemoteProtocolError",
    "ScanResult",
    "StreamChunk",
    "decode_vectors",
    "encode_frame",
    "encode_message",
    "encode_vectors",
    "pack",
    "parse_message",
    "scan",
    "unpack",
]
