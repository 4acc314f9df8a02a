"""The compiled CPU selective scan (``mamba_backend="cpu"``, and ``"auto"`` on CPU): build on first use, load, call.

``csrc/selective_scan_cpu.c`` is compiled with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into
a per-user cache (``$POLSESS_HF_KERNEL_CACHE``, else ``~/.cache/polsess_hf/kernels``), keyed by the source, the
compiler and the CPU's instruction-set flags (the build uses ``-march=native``), and loaded with ctypes. It is plain
C with no Python or PyTorch headers, so a build takes about a second. The library is written to a temporary file
and renamed into place, so processes building at once (DDP ranks) never load a half-written file.

If there is no compiler, or the build fails, :func:`load_kernel` returns ``None`` after one warning and
``mamba_backend="auto"`` uses the pure-PyTorch scan (same results, slower). ``POLSESS_HF_NATIVE_SCAN=0`` turns
the compiled scan off.

Why not ``torch.utils.cpp_extension``: it needs ninja and PyTorch's C++ headers (a build of a minute or more);
the kernel needs neither (it reads and writes raw float32 buffers), and a ctypes call releases the GIL, so the
caller's worker threads run batch tiles in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["load_kernel", "kernel_status", "block_width", "rows_stride", "conv_silu_forward", "conv_silu_backward", "mixer_scan_forward", "mixer_scan_backward"]

SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.c"
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast", "-fPIC", "-shared"]

_LOCK = threading.Lock()
_KERNEL = None
_TRIED = False
_STATUS = "not built yet"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("POLSESS_HF_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "polsess_hf" / "kernels"


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        b"\0".join(x.encode() for x in (SOURCE.read_text(), " ".join(FLAGS), version, _cpu_flags(), sys.platform))
    ).hexdigest()[:16]
    target = _cache_dir() / f"selective_scan_cpu-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(f"{target.parent} is not writable")
    except OSError:  # read-only home (some CI and cluster setups): a per-user temporary cache instead
        target = Path(tempfile.gettempdir()) / f"polsess_hf_kernels_{os.getuid()}" / target.name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{compiler} {' '.join(FLAGS)} {SOURCE}` failed:\n{result.stderr.strip()[-2000:]}")
        os.replace(partial, target)  # atomic: a concurrent builder's file is as good as ours
    return target


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    p, i = ctypes.c_void_p, ctypes.c_int64
    library.selective_scan_cpu_block_width.restype = ctypes.c_int
    # fused mixer core (see the C source): pointers, strides and sizes in declaration order
    signatures = {
        "mamba_conv_silu_forward": "p i p p p i i i i i i i",
        "mamba_conv_silu_backward": "p i p p p p p p i i i i i i",
        "mamba_scan_forward": "p p p p p p i p p i p p i i i i i i i i p p i",
        "mamba_scan_backward": "p p p p p p p i p p i p p p p p p p p p p i i i i i i i",
    }
    for name, signature in signatures.items():
        function = getattr(library, name)
        function.argtypes = [p if kind == "p" else i for kind in signature.split()]
        function.restype = ctypes.c_int if name != "mamba_conv_silu_forward" else None
    return library


def load_kernel():
    """The compiled kernel library (ctypes), or ``None`` where it cannot be built (warns once per process)."""
    global _KERNEL, _TRIED, _STATUS
    with _LOCK:
        if _TRIED:
            return _KERNEL
        _TRIED = True
        if os.environ.get("POLSESS_HF_NATIVE_SCAN", "1").strip().lower() in ("0", "false", "no", "off"):
            _STATUS = "disabled by POLSESS_HF_NATIVE_SCAN"
            return None
        compiler = _compiler()
        try:
            if not SOURCE.exists():  # e.g. Hub code copied without the package's csrc/
                raise RuntimeError(f"kernel source {SOURCE} not found")
            if compiler is None:
                raise RuntimeError("no C compiler found ($CC, cc, gcc, clang)")
            _KERNEL = _declare(ctypes.CDLL(str(_build(compiler))))
            _STATUS = f"built with {compiler}"
        except Exception as error:  # noqa: BLE001 - any failure means "use the PyTorch scan"
            _STATUS = f"unavailable: {error}"
            warnings.warn(
                f"SPMamba: the compiled CPU selective scan is unavailable ({error}); using the pure-PyTorch scan "
                "instead (same results, several times slower). Install a C compiler (gcc) to enable it, or set "
                "POLSESS_HF_NATIVE_SCAN=0 to silence this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _KERNEL


def kernel_status() -> str:
    """A line saying whether the compiled scan is built, disabled or unavailable (and why)."""
    return _STATUS


def block_width() -> int:
    """Channels per vector block: ``d_inner`` must be a multiple of it for the compiled scan."""
    kernel = load_kernel()
    return 0 if kernel is None else int(kernel.selective_scan_cpu_block_width())


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def rows_stride(tensor: torch.Tensor) -> int | None:
    """The row stride if ``tensor`` ``(seq_len, batch, width)`` is float32 rows ``r = t·batch + b`` at a uniform
    stride with contiguous channels (e.g. a column slice of a contiguous matrix), else None."""
    if tensor.dtype != torch.float32 or tensor.dim() != 3 or tensor.stride(2) != 1:
        return None
    seq_len, batch, width = tensor.shape
    stride = tensor.stride(1) if batch > 1 else (tensor.stride(0) if seq_len > 1 else width)
    if seq_len > 1 and tensor.stride(0) != batch * stride:
        return None
    return stride


def conv_silu_forward(xin, sx: int, weight_t, bias, out, rows: slice, reverse: bool = False) -> None:
    """``weight_t``: the depthwise weight transposed, ``(K, d_inner)``. ``reverse``: the causal convolution of the
    time-reversed sequences, written in the original time order (no flip in or out)."""
    seq_len, batch, d_inner = out.shape
    load_kernel().mamba_conv_silu_forward(_ptr(xin), sx, _ptr(weight_t), _ptr(bias), _ptr(out), seq_len, batch,
                                          d_inner, weight_t.shape[0], rows.start, rows.stop, int(reverse))  # fmt: skip


def conv_silu_backward(xin, sx: int, weight_t, bias, grad_out, grad_x, grad_wt, grad_b, rows: slice) -> None:
    seq_len, batch, d_inner = grad_x.shape
    status = load_kernel().mamba_conv_silu_backward(
        _ptr(xin), sx, _ptr(weight_t), _ptr(bias), _ptr(grad_out), _ptr(grad_x), _ptr(grad_wt), _ptr(grad_b),
        seq_len, batch, d_inner, weight_t.shape[0], rows.start, rows.stop,
    )  # fmt: skip
    if status != 0:
        raise MemoryError("mamba_conv_silu_backward could not allocate its work buffer")


def mixer_scan_forward(u, delta, dt_bias, A2t, B, C, sbc: int, D, z, sz: int, out, chunk_states, chunk_size: int,
                       rows: slice, reverse: bool = False, dt_in=None, dt_weight_t=None) -> None:  # fmt: skip
    """``reverse``: scan every sequence from its last step to its first (inference only: no ``chunk_states``).
    ``delta=None`` with ``dt_in`` (rows at stride ``sbc``, like B and C) and ``dt_weight_t`` ``(dt_rank, d_inner)``:
    the Δ projection ``delta = dt_in · dt_weight_t`` is computed in the kernel, row by row."""
    if reverse and chunk_states is not None:
        raise ValueError("mixer_scan_forward: reverse=True is inference only; chunk_states must be None")
    if (delta is None) == (dt_weight_t is None) or (delta is None and dt_in is None):
        raise ValueError("mixer_scan_forward: pass either delta, or dt_in and dt_weight_t")
    seq_len, batch, d_inner = u.shape
    dt_rank = 0 if dt_weight_t is None else dt_weight_t.shape[0]
    status = load_kernel().mamba_scan_forward(
        _ptr(u), _ptr(delta), _ptr(dt_bias), _ptr(A2t), _ptr(B), _ptr(C), sbc, _ptr(D), _ptr(z), sz, _ptr(out),
        _ptr(chunk_states), seq_len, batch, d_inner, A2t.shape[0], chunk_size, rows.start, rows.stop, int(reverse),
        _ptr(dt_in), _ptr(dt_weight_t), dt_rank,
    )  # fmt: skip
    if status != 0:
        raise MemoryError("mamba_scan_forward could not allocate its state buffer")


def mixer_scan_backward(u, delta, dt_bias, A2t, At, B, C, sbc: int, D, z, sz: int, chunk_states, grad_out, grad_u,
                        grad_delta, grad_z, grad_B, grad_C, grad_At, grad_D, grad_bias, chunk_size: int,
                        rows: slice) -> None:  # fmt: skip
    seq_len, batch, d_inner = u.shape
    status = load_kernel().mamba_scan_backward(
        _ptr(u), _ptr(delta), _ptr(dt_bias), _ptr(A2t), _ptr(At), _ptr(B), _ptr(C), sbc, _ptr(D), _ptr(z), sz,
        _ptr(chunk_states), _ptr(grad_out), _ptr(grad_u), _ptr(grad_delta), _ptr(grad_z), _ptr(grad_B),
        _ptr(grad_C), _ptr(grad_At), _ptr(grad_D), _ptr(grad_bias),
        seq_len, batch, d_inner, A2t.shape[0], chunk_size, rows.start, rows.stop,
    )  # fmt: skip
    if status != 0:
        raise MemoryError("mamba_scan_backward could not allocate its work buffer")
