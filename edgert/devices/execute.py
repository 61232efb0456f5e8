"""Run a model or bundle on input cases on a device (or here), for ``run`` and ``validate``."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgert.devices.address import DeviceAddress

CaseRunner = Callable[[list[dict[str, np.ndarray]]], list[dict[str, Any]]]


@contextlib.contextmanager
def case_runner(addr: DeviceAddress | None, model: Path, backend: str, target: str = "host"
                ) -> Iterator[tuple[CaseRunner, dict[str, Any]]]:
    """(a function running lists of input cases like ``edgert.execute.run_cases``, the device
    facts) for ``addr``; this machine when it is None or ``local``. A device session stays
    open inside the ``with`` block, so several calls upload the artifact once. An ONNX model
    for TVM or LiteRT is compiled or converted here first (``compilers.compile_for``)."""
    from edgert import device_facts
    from edgert.backends import BackendOptions
    from edgert.compilers import compile_for, compile_for_device
    from edgert.execute import run_cases

    options = BackendOptions(target=target)
    if addr is None or addr.scheme == "local":
        model = compile_for(backend, model, options).path
        facts = device_facts.collect("local")
        facts["emulated"] = False
        yield (lambda cases: run_cases(model, backend, cases, target=target)), facts
        return
    from edgert.devices.connect import open_client

    model = compile_for_device(backend, model, options)
    with open_client(addr) as client:
        facts = client.device_info()["device"]
        facts["emulated"] = bool(facts.get("emulated") or addr.emulated)
        yield (lambda cases: client.run_cases(model, backend, cases, target)), facts
