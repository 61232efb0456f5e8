"""Walking ONNX (sub)graphs: the helpers normalize, carry, specialize and partition share (host only).

Kept apart from ``normalize`` so that ``carry`` and ``specialize``, which ``normalize`` calls,
do not import it back.
"""
from __future__ import annotations

from typing import Any, Iterator


def iter_graphs(graph: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ("node/attr", subgraph) for every subgraph, depth first."""
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
            for sub in subs:
                key = f"{prefix}{node.name}/{attr.name}"
                yield key, sub
                yield from iter_graphs(sub, key + "/")


def free_names(graph: Any) -> list[str]:
    """Names a (sub)graph reads that it does not define itself: its outer-scope captures."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    free: list[str] = []
    for node in graph.node:
        reads = list(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                reads += free_names(sub)
        for name in reads:
            if name and name not in defined and name not in free:
                free.append(name)
        defined.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in defined and out.name not in free:
            free.append(out.name)
    return free
