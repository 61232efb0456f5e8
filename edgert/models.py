"""Turn a MODEL argument into a file: a path, or ``zoo:NAME`` for a bundled model."""
from __future__ import annotations

from pathlib import Path

from edgert.errors import ModelError

ZOO_PREFIX = "zoo:"


def resolve_model(spec: str) -> Path:
    """``zoo:resnet`` -> the bundled file; anything else must be an existing file."""
    if spec.startswith(ZOO_PREFIX):
        from edgert.zoo import resolve

        return resolve(spec[len(ZOO_PREFIX):])
    path = Path(spec)
    if not path.is_file():
        raise ModelError(f"no such model file: {spec}", path=spec)
    return path
