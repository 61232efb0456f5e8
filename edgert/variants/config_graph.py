"""Build the ONNX graph of a per-layer width configuration, on the host.

A configuration's graph is the file's level-0 graph with each external weight declared at
the configuration's shape (dims and byte length) and each depthwise or grouped conv's
``group`` set to its kept channels or blocks (``config.depthwise_groups``); the weights stay external, supplied by the runtime from the file. The
runtime does not write ONNX (a board has no onnx): ``edgert search`` stores the graphs of
the configurations a device will run (``store_graphs``), and host code passes ``build`` as
``VariantModel(graph_builder=...)`` for any other configuration.

Host-only: imports onnx.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import config as C
from .prune import rewrite_shapes
from .ranges import shape_values


def redeclare(graph: bytes, shapes: Mapping[str, list[int]], depthwise: Mapping[str, int]) -> bytes:
    """``graph`` with its external initializers re-declared at ``shapes`` and its depthwise and
    grouped convs' ``group`` set from ``depthwise`` (the weights stay external)."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(graph)
    for t in model.graph.initializer:
        if t.name not in shapes or t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        del t.dims[:]
        t.dims.extend(shapes[t.name])
        nbytes = int(np.prod(shapes[t.name], dtype=np.int64)) * \
            np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        for entry in t.external_data:
            if entry.key == "length":
                entry.value = str(nbytes)
    for node in model.graph.node:
        if node.name in depthwise:
            for a in node.attribute:
                if a.name == "group":
                    a.i = depthwise[node.name]
    return model.SerializeToString()


def build(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], config: C.Config) -> bytes:
    """The configuration's graph from the file's level-0 graph (a ``config.GraphBuilder``)."""
    graph = redeclare(bytes(tensors[meta["levels"][0]["graph"]]), C.weight_shapes(meta, config),
                      C.depthwise_groups(meta, config))
    return rewrite_shapes(graph, shape_values(meta["template"].get("reshapes", {}), config.as_dict()))  # heads


def graphs_to_store(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                    configs: Iterable[C.Config]) -> dict[str, bytes]:
    """``{tensor name: graph}`` for the configurations the file does not already hold as levels."""
    levels = {C.of_level(meta, i) for i in range(len(meta["levels"]))}
    return {C.CONFIG_GRAPH.format(c.key): build(meta, tensors, c) for c in configs if c not in levels}
