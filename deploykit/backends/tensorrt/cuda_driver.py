"""The CUDA device a TensorRT engine is built for, asked of the NVIDIA driver itself.

An engine is valid only for the GPU model and compute capability it was built on, so both are part
of the engine cache's key.  They come from the driver API (`libcuda.so.1`, present wherever an
NVIDIA driver is) through ctypes: no torch, no cuda-python, and device 0 is the device CUDA
programs see, after CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER, which `nvidia-smi` ignores.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

DRIVER_LIBRARY = "libcuda.so.1"
#: CUdevice_attribute values (cuda.h): CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


@dataclass(frozen=True)
class CudaDevice:
    name: str
    compute_capability: str  # "9.0"


class NoCudaDevice(Exception):
    """No usable CUDA device; the message says why in one line."""


def _error_name(driver: ctypes.CDLL, status: int) -> str:
    name = ctypes.c_char_p()
    if driver.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value:
        return name.value.decode()
    return f"CUDA driver error {status}"


def _check(driver: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        raise NoCudaDevice(f"{what} failed: {_error_name(driver, status)}")


@functools.lru_cache(maxsize=1)
def visible_device() -> CudaDevice:
    """CUDA device 0 as the driver reports it; raises NoCudaDevice with the reason otherwise."""
    try:
        driver = ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        raise NoCudaDevice(f"no NVIDIA driver ({DRIVER_LIBRARY} cannot be loaded)") from None
    _check(driver, driver.cuInit(0), "cuInit")
    count = ctypes.c_int(0)
    _check(driver, driver.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if count.value < 1:
        raise NoCudaDevice("the NVIDIA driver sees no CUDA device")
    device = ctypes.c_int(0)
    _check(driver, driver.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    _check(driver, driver.cuDeviceGetName(name, len(name), device), "cuDeviceGetName")
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    for value, attribute in ((major, _COMPUTE_CAPABILITY_MAJOR), (minor, _COMPUTE_CAPABILITY_MINOR)):
        _check(driver, driver.cuDeviceGetAttribute(ctypes.byref(value), attribute, device), "cuDeviceGetAttribute")
    return CudaDevice(name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}")


def missing_reason() -> str | None:
    """None when a CUDA device is visible, else why not (one line)."""
    try:
        visible_device()
    except NoCudaDevice as error:
        return str(error)
    return None
