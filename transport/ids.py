"""Fresh identifiers for messages: random (version 4) UUIDs of RFC 9562 §5.4.

Every SOAP call carries several (the WS-Addressing ``MessageID``, the VIHF assertion's ``ID``, the
HL7 message and query ids, the téléservices' context). :func:`uuid.uuid4` reads 16 bytes from the
operating system for each, and each read lets go of the GIL: with threads waiting for it (a
client calling from many threads), every identifier then costs a context switch. The same
operating-system randomness is drawn here 4 KiB at a time, per thread.
"""

from __future__ import annotations

import os
import threading
import uuid

_DRAW = 4096
"""Bytes of operating-system randomness drawn at a time (256 identifiers)."""


class _Pool(threading.local):
    """This thread's random bytes not yet used, and where the next identifier's start."""

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0


_pool = _Pool()


def _forget_in_child() -> None:
    # A forked child must not hand out the identifiers its parent will hand out too.
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_in_child)


def uuid4() -> str:
    """A fresh random UUID (RFC 9562 §5.4: 122 random bits from :func:`os.urandom`, version 4,
    variant 10) in its 36-character hexadecimal form, as ``str(uuid.uuid4())`` writes it."""
    pool = _pool
    offset = pool.offset
    if offset + 16 > len(pool.buffer):
        pool.buffer, offset = os.urandom(_DRAW), 0
    pool.offset = offset + 16
    return str(uuid.UUID(bytes=pool.buffer[offset : offset + 16], version=4))
