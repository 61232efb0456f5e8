"""Accuracy of a configuration for ``edgert search``: a user's evaluation, the digits task, or a proxy.

An *evaluation* is ``fn(model: VariantModel) -> float`` (higher is better), called with the
configuration already selected, so it only runs ``model.run(feeds)`` on its own data. Given
on the command line as ``module:function`` (imported by name) or ``digits``, the packaged
task: the held-out split of scikit-learn's digits exactly as ``tools/train_digits_aio.py``
makes it (25%, stratified, seed 0), so a file trained there is scored on images it never saw.

Without one, ``proxy`` scores the weight mass a configuration keeps. Channels of a group are
stored in descending importance (BN scale |gamma| where a BatchNormalization follows, else
the producing weights' norm; ``prune.importance``), and a channel's removal costs about its
importance (Network Slimming's argument for |gamma|). So a group keeping ``k`` channels keeps
the fraction ``m_g(k)`` of its importance mass, and the proxy is the mean of ``log m_g(k)``
over groups: 0 for the full model, more negative the more mass is cut, and cutting the same
mass hurts more in a group with little to spare. It ranks widths only; it is no accuracy.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from edgert.errors import EdgertError, UsageError
from edgert.finite import is_finite_number

from . import config as C
from .ranges import group_offsets
from .runtime import VariantModel

Evaluation = Callable[[VariantModel], float]


def resolve(spec: str) -> Evaluation:
    """``digits`` or ``package.module:function`` -> the evaluation callable."""
    if spec == "digits":
        return digits
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise UsageError(f"--accuracy {spec!r}: give 'digits', 'proxy' or MODULE:FUNCTION")
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # the user's module: any error while importing it (or a relative name)
        raise UsageError(f"--accuracy {spec!r}: cannot import {module}: {type(exc).__name__}: {exc}") from exc
    try:
        fn = getattr(imported, name)
    except AttributeError:
        raise UsageError(f"--accuracy {spec!r}: {module} has no {name!r}") from None
    if not callable(fn):
        raise UsageError(f"--accuracy {spec!r} is not callable")
    return fn


def checked_score(fn: Evaluation, model: VariantModel, name: str) -> float:
    """``fn(model)`` as a finite float; a user's evaluation that raises or returns anything else
    (a string, None, NaN, a bool) is one UsageError line naming it and the configuration."""
    where = f"--accuracy {name} on configuration {model.config}"
    try:
        value = fn(model)
    except EdgertError:
        raise
    except Exception as exc:
        raise UsageError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    if not is_finite_number(value):
        raise UsageError(f"{where} returned {value!r}: an accuracy is a finite number (higher is better)")
    return float(value)


_DIGITS: tuple[np.ndarray, np.ndarray] | None = None


def digits_split(seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, x_test, y_train, y_test) as ``tools/train_digits_aio.py`` splits them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return tuple(train_test_split(x, data.target.astype(np.int64), test_size=0.25, random_state=seed,
                                  stratify=data.target))


def digits(model: VariantModel) -> float:
    """Held-out accuracy on scikit-learn digits (the model's input is ``N x 1 x 8 x 8``)."""
    global _DIGITS
    if _DIGITS is None:
        _, x_test, _, y_test = digits_split()
        _DIGITS = (x_test, y_test)
    x, y = _DIGITS
    spec = model.inputs[0]
    if len(model.inputs) != 1 or list(spec.shape[1:]) != [1, 8, 8]:
        raise UsageError(f"--accuracy digits needs a model with one N x 1 x 8 x 8 input; {model.path} has "
                         + ", ".join(f"{s.name} {s.shape}" for s in model.inputs))
    logits = model.run({spec.name: x})[0]
    return float((np.asarray(logits).argmax(1) == y).mean())


def importance_mass(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Per prunable group, the cumulative fraction of its importance kept at each width
    (index k-1: keeping the first k channels)."""
    sizes = C.prunable(meta)
    bn: dict[int, np.ndarray] = {}
    norms: dict[int, np.ndarray] = {}
    for p in meta["template"]["param_axes"]:
        value = np.asarray(tensors[p["init"]], dtype=np.float64)
        if p["role"] == "bn_scale":
            target, score = bn, np.abs(value)
        elif p["role"] == "producer":
            target = norms
            score = np.sqrt((np.moveaxis(value, p["axis"], 0).reshape(value.shape[p["axis"]], -1) ** 2).sum(1))
        else:
            continue
        repeat = int(p.get("repeat", 1))  # shuffled channels: ``repeat`` entries each
        for g, start, n in group_offsets(tuple(map(tuple, p["segments"])), repeat):
            if g in sizes:
                target[g] = target.get(g, np.zeros(n // repeat)) + score[start:start + n].reshape(-1, repeat).sum(1)
    out = {}
    for g, n in sizes.items():
        score = bn.get(g, norms.get(g, np.ones(n)))
        total = score.sum()
        out[g] = np.cumsum(score) / total if total > 0 else np.arange(1, n + 1) / n
    return out


def proxy_score(mass: dict[int, np.ndarray], config: C.Config) -> float:
    """Mean log kept importance mass over groups (module docstring)."""
    return float(np.mean([np.log(max(mass[g][k - 1], 1e-12)) for g, k in config.kept]))
