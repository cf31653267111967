"""Logging of the ``calinode`` command: calinode's own lines, libraries quiet by default.

Libraries talk a lot at INFO: onnxruntime's quantizer logs ~36 ``Quantization parameters``
lines through the *root* logger while the default embedding model is prepared on first start,
and py-libp2p, hypercorn, zeroconf log their internals. A user needs none of it: by default
only warnings and errors of those libraries are shown (``--verbose`` or ``--debug`` shows
them). onnxruntime's and llama.cpp's C++ logs are set to errors where the sessions are made
(``models/embedder.py``: ``log_severity_level``, ``models/generator.py``: ``verbose=False``);
:func:`configure_logging` also sets onnxruntime's process-wide default severity to errors
for ``start``.
"""

from __future__ import annotations

import logging
import sys

#: libraries whose INFO lines are chatter for a user (they still log warnings and errors)
NOISY_LOGGERS = ("libp2p", "multiaddr", "hypercorn", "zeroconf", "async_service",
                 "onnxruntime", "llama_cpp")

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class QuietRootFilter(logging.Filter):
    """Drop INFO and DEBUG records of the root logger: only libraries log there
    (``logging.info(...)``); calinode logs through named loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.WARNING


def configure_logging(level: str, *, verbose: bool = False, native: bool = False) -> None:
    """Log calinode's lines at ``level`` on stderr; library chatter only when ``verbose``;
    ``native``: also quiet onnxruntime's C++ logger (imports it: for ``start`` only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    if not verbose:
        handler.addFilter(QuietRootFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if native and not verbose:
        _quiet_onnxruntime()


def _quiet_onnxruntime() -> None:
    """onnxruntime's C++ default logger: errors only (when it is importable at all)."""
    try:
        import onnxruntime
    except ImportError:
        return
    onnxruntime.set_default_logger_severity(3)
