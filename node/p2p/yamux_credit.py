"""Yamux receive credit in 16 KiB steps instead of one window update per read.

py-libp2p 0.8.1 answers every read of a yamux stream with a WINDOW_UPDATE frame, whatever the
reader took (``YamuxStream._auto_tune_and_send_window_update``: its "partial slack" branch fires
whenever any credit is outstanding, and ``PY_YAMUX_RELEASE_ON_READ=0`` does not reach it). A
stream of small messages, such as tokens streamed from a generating peer, so costs the reader
one encrypted frame and one socket write per message, and the writer one more wake-up to read
it: on a machine whose cores are busy with the model, that is tokens per second lost.

:func:`install` replaces that method with one that gives credit back for what the reader has
consumed once at least :data:`MIN_CREDIT` bytes have arrived since the last update (buffered or
read; with the original's window auto-tuning). A stream of small messages then sends one update
per 16 KiB instead of one per message. A bulk transfer still gets credit, and its window grows,
from the first read of its first frame (up to 64 KiB): py-libp2p's writer polls every 10 ms
once its window is empty, so holding credit back longer (go-yamux's half window) made a 1 MiB
message several times slower.
"""

from __future__ import annotations

from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

_ORIGINAL = YamuxStream._auto_tune_and_send_window_update
#: Credit goes back in steps of at least this many consumed bytes.
MIN_CREDIT = 16 * 1024


async def _send_credit_in_steps(self: Any, *, bytes_read: int = 0) -> None:
    increment = 0
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        outstanding = self.target_recv_window - self.recv_window  # received since last credit
        consumed = outstanding - buffered  # ... and taken by the reader
        if consumed > 0 and outstanding >= MIN_CREDIT:
            increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
            self._pending_recv_release = 0
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def install() -> None:
    """Switch every yamux stream of this process to credit in MIN_CREDIT steps (idempotent)."""
    YamuxStream._auto_tune_and_send_window_update = _send_credit_in_steps  # type: ignore[method-assign]


def uninstall() -> None:
    """Back to py-libp2p's own rule (tests compare the two)."""
    YamuxStream._auto_tune_and_send_window_update = _ORIGINAL  # type: ignore[method-assign]
