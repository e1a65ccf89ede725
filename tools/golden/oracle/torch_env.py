"""torch as a float64 reference: the pinned environment, and transformers' float32 requests run in
float64."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import OracleError

# Before torch computes anything (it may already be imported: mlx-vlm imports transformers).
# MKL reads MKL_CBWR at its first call and ATen its capability at first dispatch.
ENVIRONMENT = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
for _key, _value in ENVIRONMENT.items():
    os.environ[_key] = _value
THREADS = 1
REQUIREMENTS = "tools/requirements-torch.txt"


def versions() -> dict:
    v = importlib.metadata.version
    try:
        return {"torch": v("torch"), "transformers": v("transformers")}
    except importlib.metadata.PackageNotFoundError as exc:
        raise OracleError(f"{exc.name} is not installed: pip install -r {REQUIREMENTS} "
                          f"(or make_golden.py --oracle off)") from exc


def import_torch():
    """torch and transformers, with the pinned environment checked."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise OracleError(f"{exc}. The oracle needs torch and transformers: pip install -r "
                          f"{REQUIREMENTS} (or make_golden.py --oracle off)") from exc
    for package in ("fla", "causal_conv1d"):
        # transformers would call these instead of its torch reference functions.
        if importlib.util.find_spec(package) is not None:
            raise OracleError(f"the package {package} is installed: transformers would use its kernels "
                              f"instead of its float64-capable torch functions; uninstall it")
    torch.set_num_threads(THREADS)
    # Its notes that the torch reference functions run (checked above) are expected here.
    transformers.utils.logging.set_verbosity_error()
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        raise OracleError("torch already chose its CPU kernels before ATEN_CPU_CAPABILITY=default "
                          "was set; import golden.oracle before running anything in torch")
    return torch


# ---------------------------------------------------------------------------------------------
# float64 everywhere


def float64_mode(torch):
    """A TorchFunctionMode that runs transformers' float32 requests in float64 and refuses any op
    whose result is a float32 (or narrower) tensor. `promoted` counts the sites by source line."""
    from torch.overrides import TorchFunctionMode

    narrow = {torch.float32, torch.float16, torch.bfloat16}

    def site() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if "transformers" in name and "torch" not in Path(name).parts:
                parts = Path(name).parts
                short = "/".join(parts[parts.index("transformers"):])
                return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
            frame = frame.f_back
        return "(outside transformers)"

    class Float64(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.promoted: Counter = Counter()

        def swap(self, value):
            if isinstance(value, torch.dtype) and value in narrow:
                self.promoted[site()] += 1
                return torch.float64
            if isinstance(value, (list, tuple)):
                return type(value)(self.swap(v) for v in value)
            return value

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.Tensor.float:
                self.promoted[site()] += 1
                return args[0].to(torch.float64)
            args = tuple(self.swap(a) for a in args)
            kwargs = {k: self.swap(v) for k, v in kwargs.items()}
            out = func(*args, **kwargs)
            for t in (out if isinstance(out, (list, tuple)) else (out,)):
                if isinstance(t, torch.Tensor) and t.dtype in narrow:
                    raise OracleError(f"{getattr(func, '__name__', func)} returned {t.dtype} at {site()}")
            return out

    return Float64()


@contextmanager
def precision(torch, mode):
    """float64 with the mode (the oracle), or mode None: transformers as it is, in float32 (the
    float32 yardstick, see float32_error)."""
    if mode is None:
        with torch.no_grad():
            yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with mode, torch.no_grad():
            yield
    finally:
        torch.set_default_dtype(previous)


def np_dtype(mode):
    return np.float64 if mode is not None else np.float32

