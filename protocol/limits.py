"""Hard limits on what a peer may send us, in one frozen dataclass.

Every decoding step takes a :class:`Limits` (default :data:`DEFAULT_LIMITS`), and every limit is
enforced *before* the corresponding memory is allocated:

- :class:`~calinode.protocol.framing.FrameDecoder` rejects a length prefix over ``max_frame`` as
  soon as the four prefix bytes arrive, so a peer cannot make us buffer toward a 4 GiB frame;
- :func:`~calinode.protocol.codec.scan` walks a payload without building any object and rejects
  it when it breaks ``max_objects``, ``max_depth``, ``max_str``, ``max_bin``, ``max_array`` or
  ``max_map``, or when the objects it would build exceed the memory budget
  ``max_expansion * len(payload) + expansion_slack`` (see below);
- messages check identifiers against ``max_id_len``; job kinds check list parameters (texts to
  embed, documents to ingest) against ``max_batch``.

The memory budget makes "a frame of N bytes never costs far more than N bytes of memory" hold for
every N, not only for the largest frames: without it, 200 000 one-byte empty arrays (a 200 KB
frame) would still cost about 13 MB of Python lists.  The scan estimates the Python heap cost of
each object from conservative per-type constants (an empty list is one byte on the wire but
about 64 bytes in memory), so legitimate messages, whose bulk is strings, binary data and
numbers, stay far below the budget (capability records and peer exchanges estimate at 5-8
bytes per byte, text batches at 1-2).  A payload made mostly of tiny maps or small numbers may
be refused: send numeric arrays as bin (:mod:`calinode.protocol.vectors`), or raise
``max_expansion``.

Limits are symmetric: :func:`~calinode.protocol.messages.encode_message` runs the same checks on
what we send, so we never send a frame a peer with the same limits would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import ConfigError

__all__ = ["DEFAULT_LIMITS", "MAX_FRAME_PREFIX", "Limits"]

#: The largest length a four-byte big-endian prefix can express.
MAX_FRAME_PREFIX = 0xFFFF_FFFF

_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Upper bounds on one frame and on the msgpack objects inside it.

    All sizes are in bytes except where the name says otherwise.  Every value must be a positive
    ``int``; a bad value raises :class:`~calinode.protocol.errors.ConfigError`.
    """

    #: Largest frame payload (the length prefix not included). 32 MiB: one ``shard.write`` or
    #: ``shard.changes`` page must carry a whole document of the largest size ingest accepts
    #: (8 million characters: about 10 000 chunks, 15 MiB of 384-d vectors plus their texts).
    max_frame: int = 32 * _MIB
    #: Total msgpack objects in one frame: every container, key and value counts as one.
    max_objects: int = 200_000
    #: Deepest container nesting; the top-level map is depth 1.
    max_depth: int = 32
    #: Longest str, in UTF-8 bytes.
    max_str: int = 4 * _MIB
    #: Longest bin (for example the raw float32 bytes of a vector batch).
    max_bin: int = 16 * _MIB
    #: Most items in one array.
    max_array: int = 100_000
    #: Most entries in one map.
    max_map: int = 1_000
    #: Most items in a list parameter of a job (texts, documents); enforced by the job kinds.
    max_batch: int = 2048
    #: Longest request id, in characters.
    max_id_len: int = 64
    #: Decoded objects may cost at most ``max_expansion`` bytes of memory per frame byte ...
    max_expansion: int = 10
    #: ... plus this many bytes, so that small messages are never refused for their overhead.
    expansion_slack: int = 512 * 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int or value <= 0:
                raise ConfigError(f"limit {field.name} must be a positive int, got {value!r}")
        if self.max_frame > MAX_FRAME_PREFIX:
            raise ConfigError(
                f"limit max_frame must fit a 4-byte length prefix (<= {MAX_FRAME_PREFIX}), "
                f"got {self.max_frame}"
            )


#: The limits every calinode node uses unless configured otherwise.
DEFAULT_LIMITS = Limits()
