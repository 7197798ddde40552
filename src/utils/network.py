"""Bounded network access: a machine without internet fails in seconds instead of hanging."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation (connect, each read): torchvision's downloads set no timeout."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)
