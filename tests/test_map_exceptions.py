"""map_exceptions: one translation of library errors for every transport."""
from __future__ import annotations

import pytest

from edgert.device_agents.transports import (READ_ERRORS, WRITE_ERRORS, TransportClosed, TransportTimeout,
                                             map_exceptions)
from edgert.errors import TransportError


def test_the_first_matching_entry_wins_and_keeps_the_cause() -> None:
    cause = TimeoutError("timed out")  # an OSError too: the timeout entry must come first
    with pytest.raises(TransportTimeout) as info:
        with map_exceptions("tcp h:1", WRITE_ERRORS, timeout_s=2.0, size=10):
            raise cause
    assert info.value.message == "tcp h:1: could not send 10 bytes within 2 s"
    assert info.value.fields == {"reason": "timeout", "timeout_s": 2.0}
    assert info.value.__cause__ is cause


def test_closed_names_the_library_error() -> None:
    with pytest.raises(TransportClosed, match=r"^pipe: read failed: \[Errno 5\] EIO$"):
        with map_exceptions("pipe", READ_ERRORS, timeout_s=None):
            raise OSError(5, "EIO")


def test_edgert_errors_and_unmapped_exceptions_pass_through() -> None:
    own = TransportClosed("serial: closed by peer")
    with pytest.raises(TransportClosed) as info:
        with map_exceptions("serial", READ_ERRORS):
            raise own
    assert info.value is own
    with pytest.raises(KeyError):
        with map_exceptions("serial", READ_ERRORS):
            raise KeyError("not a transport problem")
    with map_exceptions("serial", {ValueError: (TransportError, "bad: {exc}")}):
        pass  # nothing raised: nothing translated
