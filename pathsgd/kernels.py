"""One fused pass for gamma's matvec chains on a GPU: ``|W|^p @ fwd`` and ``|W|^p.T @ bwd`` in float64.

Why: Path-SGD's scales (Algorithm 1) need, per weight matrix, ``|W|^p`` times a vector on one or both
sides, in float64 (under the paper's unbalanced init the path sums span 1e-60..1e60, beyond float32).
In plain torch on a GPU that is a float32 -> float64 copy of the whole matrix, its power, and one
float64 matrix-vector product per side: for the paper's 4000 x 4000 middle layer about 0.7 GB of memory
traffic per step, as much as the rest of the step. The Triton kernel here reads each float32 weight
once, raises it to p in float64 in registers, and reduces it against both vectors in the same pass
(64 MB for that layer). Rows and columns are cut into tiles; each tile writes its partial row sums and
partial column sums (float64; the bias's |b|^p joins the first tile's row sums), and one small
``sum(0)`` per side finishes them, so the result does not depend on scheduling (no atomics).

Used by :func:`pathsgd.geometry.pow_matvecs` for CUDA tensors when Triton is importable and p is 1 or 2
(the paper's p). Anything else, or any error launching the kernel (reported once as a warning), uses
the plain torch path; ``PATHSGD_FUSED_CHAINS=0`` turns the kernel off. The kernel's results equal the
torch path's to float64 rounding: tested on the CPU through Triton's interpreter, compiled for sm_90
there to check that it lowers without spilling (``tests/test_kernels.py``), and run on CUDA where a GPU
is present. NOT YET TIMED ON A GPU.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

try:  # Triton ships with CUDA builds of torch; without it the torch path is used
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["FUSED_P", "fused_available", "fused_pow_matvecs"]

FUSED_P = (1.0, 2.0)  # the powers the kernel computes exactly (|w| and w*w); others use torch
BLOCK_ROWS = 64
BLOCK_COLS = 128
# A 64 x 128 float64 tile with both chains needs 255 registers a thread and spills at 4 warps (compiled for
# sm_90 with Triton 3.8's ptxas); at 16 warps it needs 108 and does not spill.
NUM_WARPS = 16

_failed = False  # set when a launch raised: the process stays on the torch path (warned once)


def fused_available(weight: torch.Tensor, p: float) -> bool:
    """Whether :func:`fused_pow_matvecs` will be used for ``weight`` and ``p`` (CUDA, Triton, p 1 or 2)."""
    return (
        triton is not None
        and not _failed
        and weight.is_cuda
        and weight.dim() == 2
        and float(p) in FUSED_P
        and os.environ.get("PATHSGD_FUSED_CHAINS", "1") != "0"
    )


if triton is not None:

    @triton.jit
    def _pow_matvecs_kernel(
        w_ptr, fwd_ptr, bwd_ptr, bias_ptr, row_part_ptr, col_part_ptr, rows, cols, stride,
        P: tl.constexpr, HAS_FWD: tl.constexpr, HAS_BWD: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        tile_r = tl.program_id(0)
        tile_c = tl.program_id(1)
        r = tile_r * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tile_c * BLOCK_C + tl.arange(0, BLOCK_C)
        r_in = r < rows
        c_in = c < cols
        offsets = r.to(tl.int64)[:, None] * stride + c[None, :]  # int64: no overflow past 2^31 entries
        w = tl.load(w_ptr + offsets, mask=r_in[:, None] & c_in[None, :], other=0.0)
        z = tl.abs(w.to(tl.float64))  # the power is taken in float64: w^2 overflows float32 above 1.8e19
        if P == 2:
            z = z * z
        if HAS_FWD:  # this tile's share of (|W|^p @ fwd)[r]
            f = tl.load(fwd_ptr + c, mask=c_in, other=0.0)
            row_sum = tl.sum(z * f[None, :], axis=1)
            if HAS_BIAS:  # |b|^p joins the first column tile's share (the bias unit's paths)
                b = tl.abs(tl.load(bias_ptr + r, mask=r_in & (tile_c == 0), other=0.0).to(tl.float64))
                if P == 2:
                    b = b * b
                row_sum += b
            tl.store(row_part_ptr + tile_c * rows + r, row_sum, mask=r_in)
        if HAS_BWD:  # this tile's share of (|W|^p.T @ bwd)[c]
            b = tl.load(bwd_ptr + r, mask=r_in, other=0.0)
            tl.store(col_part_ptr + tile_r * cols + c, tl.sum(z * b[:, None], axis=0), mask=c_in)


def fused_pow_matvecs(
    weight: torch.Tensor,
    p: float,
    fwd: torch.Tensor | None = None,
    bwd: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(|W|^p @ fwd + |b|^p, |W|^p.T @ bwd)`` in float64, as :func:`pathsgd.geometry.pow_matvecs`,
    from one kernel reading ``weight`` once. ``fwd``/``bwd`` are float64 vectors (either may be None)."""
    if triton is None:
        raise RuntimeError("fused_pow_matvecs needs Triton, which is not installed")
    if float(p) not in FUSED_P:
        raise ValueError(f"p={p} is not computed by the fused kernel: it computes p in {FUSED_P}")
    if fwd is None and bwd is None:
        return None, None
    weight = weight.detach()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    rows, cols = weight.shape
    n_r, n_c = triton.cdiv(rows, BLOCK_ROWS), triton.cdiv(cols, BLOCK_COLS)
    f64, dev = torch.float64, weight.device
    row_part = torch.empty((n_c, rows), dtype=f64, device=dev) if fwd is not None else None
    col_part = torch.empty((n_r, cols), dtype=f64, device=dev) if bwd is not None else None
    # A pointer the kernel never reads stands in for an absent vector (HAS_FWD / HAS_BWD / HAS_BIAS off).
    anything = row_part if row_part is not None else col_part
    bias = bias.detach() if bias is not None and fwd is not None else None
    # Triton launches on the current CUDA device: make it the weight's (device=cuda:N).
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        _pow_matvecs_kernel[(n_r, n_c)](
            weight,
            fwd.contiguous() if fwd is not None else anything,
            bwd.contiguous() if bwd is not None else anything,
            bias if bias is not None else anything,
            row_part if row_part is not None else anything,
            col_part if col_part is not None else anything,
            rows, cols, weight.stride(0),
            P=int(p), HAS_FWD=fwd is not None, HAS_BWD=bwd is not None, HAS_BIAS=bias is not None,
            BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS, num_warps=NUM_WARPS,
        )
    out = row_part.sum(0) if row_part is not None else None
    out_t = col_part.sum(0) if col_part is not None else None
    return out, out_t


def disable_after(err: Exception) -> None:
    """Fall back to the torch path for the rest of the process, saying why (once)."""
    global _failed
    _failed = True
    warnings.warn(
        f"the fused Triton kernel for Path-SGD's scales failed ({type(err).__name__}: {err}); "
        "using the torch path (same numbers, more memory traffic)",
        stacklevel=3,
    )
