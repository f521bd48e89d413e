#!/usr/bin/env python3
"""The reference for tools/bench: the same GEMM shapes through PyTorch's own kernels on the same GPU (cuBLASLt):
torch._scaled_mm (FP8 E4M3, row-wise scales, bf16 out), torch._int_mm (INT8, int32 out) and a bf16 matmul; and
the device copy bandwidth. Prints JSON: {"torch": version, "gemm": [{"dtype", "N", "K", "M", "tflops"}], "copy_gbs"}.
A case PyTorch cannot run (e.g. _int_mm needs M > 16) has "tflops": null and an "error".

usage: bench_torch.py SPEC_JSON   ({"shapes": [[N, K], ...], "ms": [M, ...]}, optionally "types": a subset of
["bf16", "fp8", "int8"], the dtypes to time; all three without it)"""
import json, sys

import torch

spec = json.loads(sys.argv[1])
dev = "cuda"
out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "gemm": []}


def timed(fn, min_ms=50.0):
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 1
    while True:
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        e.synchronize()
        ms = s.elapsed_time(e)
        if ms >= min_ms or reps >= 1 << 14:
            return ms / reps
        reps *= 2


for N, K in spec["shapes"]:
    w16 = (torch.randn(N, K, device=dev) * 0.05).to(torch.bfloat16)
    w8 = w16.to(torch.float8_e4m3fn)
    wi = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
    sw = torch.rand(1, N, device=dev, dtype=torch.float32) + 0.01
    for M in spec["ms"]:
        a16 = torch.randn(M, K, device=dev).to(torch.bfloat16)
        a8 = a16.to(torch.float8_e4m3fn)
        ai = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
        sa = torch.rand(M, 1, device=dev, dtype=torch.float32) + 0.01
        cases = {
            "fp8": lambda: torch._scaled_mm(a8, w8.t(), scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16),
            "int8": lambda: torch._int_mm(ai, wi.t()),
            "bf16": lambda: torch.matmul(a16, w16.t()),
        }
        for dtype, fn in cases.items():
            if dtype not in spec.get("types", cases):
                continue
            rec = {"dtype": dtype, "N": N, "K": K, "M": M, "tflops": None}
            try:
                ms = timed(fn)
                rec["tflops"] = 2.0 * M * N * K / (ms * 1e-3) / 1e12
                rec["ms"] = ms
            except Exception as ex:  # noqa: BLE001 - reported, not hidden
                rec["error"] = str(ex).split("\n")[0][:200]
            out["gemm"].append(rec)
        del a16, a8, ai, sa
    del w16, w8, wi, sw
    torch.cuda.empty_cache()

n = 1 << 30
src, dst = torch.empty(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)
ms = timed(lambda: dst.copy_(src))
out["copy_gbs"] = 2.0 * n / (ms * 1e-3) / 1e9   # bytes read + written
print(json.dumps(out))
