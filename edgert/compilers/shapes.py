"""Fix a whole model's input shapes and fold its shape arithmetic before an engine imports it.

Exporters write shape computations as graph nodes (``Shape -> Gather -> Concat ->
Reshape``, ``Shape -> ConstantOfShape``, ``Range`` over a sequence length). ONNX Runtime
evaluates them at run time; TVM's ONNX importer cannot do arithmetic on symbolic shapes
and fails on them. Once every input dim is known (static in the file, or given with
``--shape NAME=SIZE``) those nodes are constants: this module writes the sizes into the
graph inputs and folds with ``edgert.dynamic.specialize`` (the pass that already types
bundle segments), so TVM imports a static graph. The engine's artifact is built from the
specialised graph; the user's file is never changed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from edgert.errors import InputError, UsageError


@dataclasses.dataclass(frozen=True)
class Fixed:
    model: Any  # onnx.ModelProto, inputs static where sizes were known
    dims: dict[str, int]  # the symbolic dims that were given a size
    open_dims: list[str]  # symbolic dims left open (no size given)
    folded: int  # nodes replaced by constants


def symbolic_dims(model: Any) -> list[str]:
    """Names of the symbolic dims of the graph inputs, in order of first use."""
    weights = {t.name for t in model.graph.initializer}
    names: list[str] = []
    for info in model.graph.input:
        if info.name in weights:
            continue
        for dim in info.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") and dim.dim_param and dim.dim_param not in names:
                names.append(dim.dim_param)
    return names


def fix_input_shapes(model: Any, dims: Mapping[str, int]) -> Fixed:
    """A copy of ``model`` with the input dims named in ``dims`` set and shape arithmetic folded.

    Dims without a size stay symbolic (``open_dims``); folding still removes what depends
    only on the known ones.
    """
    import onnx

    from edgert.dynamic.specialize import specialize

    known = symbolic_dims(model)
    unknown = sorted(set(dims) - set(known))
    if unknown:  # a typo would otherwise be ignored and the library built for other sizes
        raise UsageError(f"--shape {unknown[0]}: the model has no symbolic dimension {unknown[0]!r} "
                         f"(its symbolic dimensions: {', '.join(known) or 'none'})", dim=unknown[0])
    for name, size in dims.items():
        if int(size) < 1:
            raise InputError(f"--shape {name}={size}: a dimension needs a size of at least 1", dim=name)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    used: dict[str, int] = {}
    for info in copy.graph.input:
        for dim in info.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") and dim.dim_param in dims:
                used[dim.dim_param] = int(dims[dim.dim_param])
                dim.dim_value = used[dim.dim_param]  # clears dim_param (a oneof)
    open_dims = symbolic_dims(copy)
    special = specialize(copy.SerializeToString())
    return Fixed(special.model, used, open_dims, special.folded)
