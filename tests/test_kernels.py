"""The fused Triton kernel for gamma's chains (pathsgd/kernels.py) equals the torch path.

On the CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, read when the kernel is
defined, hence a subprocess); on CUDA it runs compiled. The fallback to the torch path is tested here too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pathsgd import kernels
from pathsgd.geometry import pow_matvecs

ROOT = Path(__file__).resolve().parents[1]
triton_missing = pytest.mark.skipif(kernels.triton is None, reason="Triton is not installed")

# Shapes cut across the 64 x 128 tiles in both directions (partial tiles at both edges), one wide
# layer, and weights spanning 1e-30..1e30 (the unbalanced init's range: w^2 overflows float32).
INTERPRETED_CHECK = textwrap.dedent(
    """
    import torch
    from pathsgd import kernels
    from pathsgd.geometry import pow_matvecs

    assert kernels.triton is not None
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for rows, cols in [(150, 300), (64, 128), (3, 700), (200, 5)]:
        w = torch.randn(rows, cols, generator=g)
        w *= 10.0 ** torch.randint(-30, 31, (rows, 1), generator=g).float()
        b = torch.randn(rows, generator=g) * 1e20
        fwd = torch.rand(cols, generator=g, dtype=torch.float64) * 1e-10
        bwd = torch.rand(rows, generator=g, dtype=torch.float64)
        for p in (1.0, 2.0):
            want = pow_matvecs(w, p, fwd=fwd, bwd=bwd, bias=b)  # the torch path (CPU tensors)
            for kw, got_idx in [(dict(fwd=fwd, bwd=bwd, bias=b), (0, 1)), (dict(fwd=fwd), (0,)),
                                (dict(bwd=bwd), (1,)), (dict(fwd=fwd, bias=b), (0,))]:
                got = kernels.fused_pow_matvecs(w, p, **kw)
                for i in (0, 1):
                    if i not in got_idx:
                        assert got[i] is None, (rows, cols, p, kw.keys(), i)
                        continue
                    ref = want[i] if i == 1 or "bias" in kw else pow_matvecs(w, p, fwd=fwd)[0]
                    assert got[i].dtype == torch.float64 and got[i].shape == ref.shape
                    err = ((got[i] - ref).abs() / ref.abs()).max().item()
                    worst = max(worst, err)
                    assert err < 1e-12, (rows, cols, p, list(kw), i, err)
        # a non-contiguous weight (a transposed view) is read correctly
        got = kernels.fused_pow_matvecs(w.t(), 2.0, fwd=bwd, bwd=fwd)
        want = pow_matvecs(w.t().contiguous(), 2.0, fwd=bwd, bwd=fwd)
        assert torch.allclose(got[0], want[0], rtol=1e-12, atol=0) and torch.allclose(got[1], want[1], rtol=1e-12, atol=0)

    # Through the chains of a whole MLP: route CPU tensors to the kernel, as CUDA ones are.
    from pathsgd import MLP
    from pathsgd.geometry import mlp_scale_factors

    linears = list(MLP(20, 10, [150, 140]).layers)
    want = mlp_scale_factors(linears, 2.0)
    launches, launch = [], kernels.fused_pow_matvecs
    kernels.fused_available = lambda w, p: float(p) in kernels.FUSED_P
    kernels.fused_pow_matvecs = lambda *a, **k: launches.append(1) or launch(*a, **k)
    got = mlp_scale_factors(linears, 2.0)
    assert len(launches) == 3, launches  # one pass per layer (the middle one serves both chains)
    for (o, i), (og, ig) in zip(want, got):
        assert torch.allclose(og, o, rtol=1e-12, atol=0) and torch.allclose(ig, i, rtol=1e-12, atol=0)
    print("worst relative error", worst)
    """
)


@pytest.mark.slow  # Triton's interpreter: seconds of CPU
@triton_missing
def test_interpreted_kernel_equals_the_torch_path():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", INTERPRETED_CHECK], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worst relative error" in done.stdout


def test_the_kernel_is_used_only_on_cuda_for_p_1_and_2(monkeypatch):
    monkeypatch.setattr(kernels, "_failed", False)
    w = torch.ones(3, 4)
    assert not kernels.fused_available(w, 2.0)  # a CPU tensor
    if kernels.triton is not None:
        meta = torch.empty(3, 4, device="meta")
        monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: t.device.type == "meta"))
        assert kernels.fused_available(meta, 2.0) and kernels.fused_available(meta, 1.0)
        assert not kernels.fused_available(meta, 3.0)
        monkeypatch.setenv("PATHSGD_FUSED_CHAINS", "0")
        assert not kernels.fused_available(meta, 2.0)


@triton_missing
def test_a_p_the_kernel_does_not_compute_is_an_error():
    with pytest.raises(ValueError, match=r"p=3.0 is not computed by the fused kernel"):
        kernels.fused_pow_matvecs(torch.ones(2, 2), 3.0, fwd=torch.ones(2, dtype=torch.float64))


def test_a_failing_kernel_falls_back_to_the_torch_path_once(monkeypatch):
    """If a launch raises (say Triton cannot compile on this GPU), pow_matvecs warns once and the
    numbers come from the torch path, for this call and the rest of the process."""
    monkeypatch.setattr(kernels, "_failed", False)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(kernels, "fused_available", lambda w, p: not kernels._failed)
    monkeypatch.setattr(kernels, "fused_pow_matvecs", broken)
    w = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    fwd, bwd = torch.rand(7, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    z = w.double() ** 2
    with pytest.warns(UserWarning, match="fused Triton kernel .* failed .*no compiler for this GPU"):
        out, out_t = pow_matvecs(w, 2.0, fwd=fwd, bwd=bwd)
    torch.testing.assert_close(out, z @ fwd, rtol=1e-14, atol=0)
    torch.testing.assert_close(out_t, z.T @ bwd, rtol=1e-14, atol=0)
    out2, _ = pow_matvecs(w, 2.0, fwd=fwd)  # no second attempt, no second warning
    torch.testing.assert_close(out2, z @ fwd, rtol=1e-14, atol=0)
    assert calls == [1] and kernels._failed


def compile_for_h100(has_fwd: bool, has_bwd: bool, has_bias: bool, p: int) -> str:
    """The kernel compiled ahead of time for sm_90 (no GPU needed); cuobjdump's resource line."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernels._pow_matvecs_kernel
    signature = {"w_ptr": "*fp32", "fwd_ptr": "*fp64", "bwd_ptr": "*fp64", "bias_ptr": "*fp32" if has_bias else "*fp64",
                 "row_part_ptr": "*fp64", "col_part_ptr": "*fp64", "rows": "i32", "cols": "i32", "stride": "i32"}
    constants = {"P": p, "HAS_FWD": has_fwd, "HAS_BWD": has_bwd, "HAS_BIAS": has_bias,
                 "BLOCK_R": kernels.BLOCK_ROWS, "BLOCK_C": kernels.BLOCK_COLS}
    signature |= {k: "constexpr" for k in constants}
    source = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": kernels.NUM_WARPS})
    cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"pathsgd-kernel-{os.getpid()}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    try:
        tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        dump = subprocess.run([str(tool), "--dump-resource-usage", str(cubin)], capture_output=True, text=True, check=True)
    finally:
        cubin.unlink()
    return next(line for line in dump.stdout.splitlines() if "REG:" in line)


@triton_missing
@pytest.mark.parametrize("has_fwd, has_bwd, has_bias", [(True, True, True), (True, False, True), (False, True, False)])
@pytest.mark.parametrize("p", [1, 2])
def test_the_kernel_compiles_for_an_h100_without_spilling(has_fwd, has_bwd, has_bias, p):
    """Compiled for sm_90 (Triton's own ptxas) with the launch's tiles and warps: no local memory, no
    spill stack. This is what the interpreter cannot show: that the kernel lowers for the GPU at all."""
    try:
        line = compile_for_h100(has_fwd, has_bwd, has_bias, p)
    except (ImportError, AttributeError, TypeError, FileNotFoundError) as err:  # another Triton's AOT API
        pytest.skip(f"ahead-of-time compilation is not available in this Triton: {type(err).__name__}: {err}")
    usage = dict(item.split(":") for item in line.split() if ":" in item)
    assert usage["STACK"] == "0" and usage["LOCAL"] == "0", line
    assert int(usage["REG"]) <= 128, line  # 16 warps x 32 threads x 128 registers: one block fits an SM


cuda = pytest.mark.skipif(not torch.cuda.is_available() or kernels.triton is None, reason="needs CUDA and Triton")


@cuda
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_cuda_kernel_equals_the_torch_path(monkeypatch, p):
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(4000, 784, device="cuda", generator=g)
    w[::7] *= 1e25
    b = torch.randn(4000, device="cuda", generator=g)
    fwd = torch.rand(784, device="cuda", dtype=torch.float64, generator=g)
    bwd = torch.rand(4000, device="cuda", dtype=torch.float64, generator=g)
    got = kernels.fused_pow_matvecs(w, p, fwd=fwd, bwd=bwd, bias=b)
    monkeypatch.setenv("PATHSGD_FUSED_CHAINS", "0")
    want = pow_matvecs(w, p, fwd=fwd, bwd=bwd, bias=b)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=0)
