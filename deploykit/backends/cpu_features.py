"""What this CPU offers, as each runtime itself sees it: which kernels, and so which precisions, run.

A runtime picks its kernels by the CPU's features, so a precision that runs natively on one x86 CPU
(float16 with AVX512-FP16 or AMX-FP16) is replaced by another on the next.  What decides is the
runtime's own view, not a list kept here:
- OpenVINO: its CPU plugin's `OPTIMIZATION_CAPABILITIES` (FP16 and BF16 say whether its f16 and bf16
  inference precisions run), the same check the plugin makes when it accepts or replaces a hint;
- oneDNN's hand-written kernels (AMX among them, which the AMX-only repros need): the kernel's own
  flags in /proc/cpuinfo.
Backends use this to explain a precision the runtime did not apply; tests use it to skip, with the
reason, what a CPU cannot show, and to run and assert it where the CPU can.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: build precision -> (the OPTIMIZATION_CAPABILITIES entry OpenVINO lists when it runs it, its arithmetic)
OPENVINO_CAPABILITY = {"fp16": ("FP16", "float16"), "bf16": ("BF16", "bfloat16")}


@lru_cache(maxsize=1)
def x86_flags() -> frozenset[str]:
    """The CPU's flags as Linux lists them (e.g. "amx_bf16", "avx512_fp16"); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def openvino_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's CPU plugin's OPTIMIZATION_CAPABILITIES, or None without OpenVINO or its CPU device."""
    try:
        import openvino

        return tuple(str(item) for item in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - not installed, or no CPU plugin: nothing to say about this CPU
        return None


def openvino_lacks(precision: str, capabilities: tuple[str, ...] | None = None) -> str | None:
    """Why OpenVINO's CPU plugin does not run `precision` on this CPU, in its own terms, or None
    (it does, or the precision is not a reduced one, or OpenVINO cannot be asked)."""
    capabilities = openvino_capabilities() if capabilities is None else capabilities
    if precision not in OPENVINO_CAPABILITY or capabilities is None:
        return None
    capability, arithmetic = OPENVINO_CAPABILITY[precision]
    if capability in capabilities:
        return None
    return f"this CPU has no {arithmetic} arithmetic (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
