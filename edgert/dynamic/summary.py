"""What ``edgert compile`` says about the bundle it wrote, read back from its manifest (host only)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgert.device_facts import describe


def manifest_lines(path: Path, manifest: dict[str, Any]) -> list[str]:
    """Segments and engines, then what the compiler decided and why: folded segments, ORT
    fallbacks, tuned kernels, the guarded program, where candidates were timed, auto's choice."""
    engines = sorted({s["engine"] for s in manifest["segments"]})
    lines = [f"{path}: {len(manifest['segments'])} segments on {', '.join(engines) or 'host only'}, "
             f"target {manifest['target']}"]
    if manifest.get("host_folded"):
        lines.append(f"  {len(manifest['host_folded'])} segment(s) folded into the host program "
                     f"(kernel-less, or in a branch a constant If never takes)")
    for seg in manifest["segments"]:
        if seg["choice"].get("fallback_from"):
            lines.append(f"  {seg['id']} runs on ORT: {seg['choice']['fallback_from']} could not build it "
                         f"({seg['choice']['failed'][0]})")
        if "tuning" in seg:
            tuned = seg["tuning"]
            lines.append(f"  {seg['id']}: {len(tuned['tuned_functions'] or [])}/"
                         f"{tuned['functions'] or '?'} TVM kernels tuned"
                         + (" (records timed under emulation)" if tuned.get("emulated") else ""))
    if "guarded" in manifest:
        lines.append(f"  guarded program (segments g_*, all TVM) runs when "
                     f"{', '.join(manifest['guarded']['guard'])} equal the samples' values")
    elif "guard_skipped" in manifest:
        lines.append(f"  no guarded program: {manifest['guard_skipped']}")
    if "timed_on" in manifest:
        lines.append(f"  candidates timed on {describe(manifest['timed_on'])}")
    auto = manifest.get("auto")
    if auto:
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(auto.get("measured_ms", {}).items()))
        lines.append(f"  auto kept the {auto['chosen'].replace('_', ' ')} bundle"
                     f"{f' ({times})' if times else ''}: {auto['reason']}")
    return lines
