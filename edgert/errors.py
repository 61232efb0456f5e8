"""The one exception tree of edgert.

The CLI turns any ``EdgertError`` into one line on stderr and its ``exit_code``;
everything else is a bug and gets a traceback.

    EdgertError
    ├── UsageError            bad option values, unknown backend names
    ├── ModelError            missing file, not ONNX/TFLite, unsupported operator
    │   └── InputError        wrong input name, shape or dtype
    ├── EngineMissingError    an inference engine is not installed (carries the pip hint)
    ├── BackendError          an engine failed to compile or run a model
    ├── BundleError           corrupt, tampered or incompatible bundle/weight file
    ├── DeviceError           a device could not be reached or refused a request
    │   ├── TransportError    the byte stream broke (timeout, closed, CRC)
    │   └── ProtocolError     the peer spoke an unexpected frame or version
    ├── SysfsError            a sysfs read/write failed or was not allowed
    └── InternalError         an invariant of edgert itself broke
"""
from __future__ import annotations

from typing import Any


class EdgertError(Exception):
    """Base class; ``fields`` carries structured context for machines (JSON, wire errors)."""

    exit_code = 1
    code = "edgert"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fields": self.fields}


class UsageError(EdgertError):
    exit_code = 2
    code = "usage"


class ModelError(EdgertError):
    code = "model"


class InputError(ModelError):
    code = "input"


class EngineMissingError(EdgertError):
    code = "engine_missing"

    def __init__(self, engine: str, extra: str, missing: str) -> None:
        super().__init__(
            f"the {engine} engine is not installed ({missing}); "
            f"install it with: pip install 'edgert[{extra}]'",
            engine=engine,
            extra=extra,
        )


class BackendError(EdgertError):
    code = "backend"


class BundleError(EdgertError):
    code = "bundle"


class DeviceError(EdgertError):
    code = "device"


class TransportError(DeviceError):
    code = "transport"


class ProtocolError(DeviceError):
    code = "protocol"


class SysfsError(EdgertError):
    code = "sysfs"


class InternalError(EdgertError):
    code = "internal"


_BY_CODE = {cls.code: cls for cls in (
    EdgertError, UsageError, ModelError, InputError, BackendError, BundleError,
    DeviceError, TransportError, ProtocolError, SysfsError, InternalError,
)}


def from_dict(data: dict[str, Any]) -> EdgertError:
    """Rebuild an error that crossed the wire (the agent sends ``to_dict()``)."""
    cls = _BY_CODE.get(data.get("code", ""), EdgertError)
    return cls(str(data.get("message", "unknown error")), **dict(data.get("fields") or {}))
