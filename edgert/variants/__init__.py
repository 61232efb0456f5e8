"""All-in-One pruned variants: one shared weight file, physically smaller levels, adaptive selection.

Device side: ``open`` / ``VariantModel`` and ``AdaptiveModel`` (numpy + onnxruntime);
per-layer width configurations (``Config``, ``ConfigAdaptiveModel``).
Host side: ``prune`` (onnx), ``calibrate`` (through the sweep machinery, here or on a
device), ``accuracy`` (the levels' accuracy stored in the file), ``lut`` and ``search``
(latency tables and Pareto sets, stored in the file with their configurations' graphs)
and ``config_graph`` (builds a configuration's graph: pass ``config_graph.build`` as
``open(..., graph_builder=...)`` to run configurations the file does not store).
"""
from __future__ import annotations

from .adaptive import AdaptiveModel, Decision, Policy
from .adaptive_configs import Choice, ConfigAdaptiveModel
from .config import Config
from .runtime import Level, VariantModel, open

__all__ = ["AdaptiveModel", "Choice", "Config", "ConfigAdaptiveModel", "Decision", "Level", "Policy",
           "VariantModel", "open"]
