#!/usr/bin/env python3
"""The reference for tools/bench: the same GEMM shapes through PyTorch's own kernels on the same GPU (cuBLASLt):
torch._scaled_mm (FP8 E4M3, row-wise scales, bf16 out), torch._int_mm (INT8, int32 out) and a bf16 matmul; and
the device copy bandwidth.

It runs beside tools/bench as a second process and answers one request a line, so that bench times each cell's
PyTorch kernel right after its own (both at the same clocks and temperature; timing all of one side and then all
of the other slanted the ratios by the GPU's warming), on the same bytes as bench's (built from the same hash:
an H100's clocks under full tensor-core load depend on the bits multiplied), timed from a CUDA graph. On start it prints {"torch": version, "device": name};
then, a line each:
    gemm DTYPE N K M   ->  {"dtype", "N", "K", "M", "tflops", "ms"}   (DTYPE: bf16, fp8 or int8; a case PyTorch
                           cannot run, e.g. _int_mm with M <= 16, has "tflops": null and an "error")
    copy               ->  {"copy_gbs"}   (1 GiB copy_, bytes read + written)
It exits at the end of its input. By hand: printf 'gemm fp8 4096 4096 4096\\n' | python3 tools/bench_torch.py"""
import json, sys

import torch

dev = "cuda"


def timed(fn, min_ms=30.0, graph=True):
    """ms a call of fn: the calls replayed from a CUDA graph (the kernels' time, not Python's launches, which would
    bound the small cells), repeated doubling until >= 30 ms as bench times its own; eagerly if capture fails."""
    fn()
    torch.cuda.synchronize()
    calls, run = 1, fn
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(GRAPH_CALLS):
                    fn()
            calls, run = GRAPH_CALLS, g.replay
            run()
        except Exception as ex:  # noqa: BLE001 - said, then timed eagerly
            print("bench_torch: no CUDA graph (%s); timing eagerly" % str(ex).split("\n")[0][:120], file=sys.stderr)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 1
    while True:
        s.record()
        for _ in range(reps):
            run()
        e.record()
        e.synchronize()
        ms = s.elapsed_time(e)
        if ms >= min_ms or reps >= 1 << 12:
            return ms / reps / calls
        reps *= 2


GRAPH_CALLS = 16
SALT_A, SALT_W = 0x1234567, 0x7654321   # as tools/bench.c
MASK32 = 0xFFFFFFFF


def mul32(x, c):   # x * c mod 2^32 for x < 2^32, in int64 without overflow
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & MASK32


def operand_bytes(rows, cols, dtype, salt):
    """bench.c's fill(): element i (row-major) from mix32(i ^ salt), so both sides multiply the same bytes"""
    x = torch.arange(rows * cols, device=dev, dtype=torch.int64) ^ salt
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    h = x ^ (x >> 16)
    if dtype == "bf16":
        v = 0x3C00 | (h & 0x80FF)
        return torch.where(v >= 0x8000, v - 0x10000, v).to(torch.int16).view(torch.bfloat16).view(rows, cols)
    b = (h & (0xB7 if dtype == "fp8" else 0xFF)).to(torch.uint8)
    return b.view(torch.float8_e4m3fn if dtype == "fp8" else torch.int8).view(rows, cols)


weights, acts = {}, {}   # the operands of the last shape asked for, kept while the next cells reuse them


def operand(cache, key, rows, cols, dtype):
    if key not in cache:
        cache.clear()
        torch.cuda.empty_cache()
        x = operand_bytes(rows, cols, dtype, SALT_W if cache is weights else SALT_A)
        scale = torch.full((1, rows) if cache is weights else (rows, 1), 1.0 / 64, device=dev, dtype=torch.float32)
        cache[key] = (x, scale)
        torch.cuda.empty_cache()
    return cache[key]


def gemm(dtype, N, K, M):
    rec = {"dtype": dtype, "N": N, "K": K, "M": M, "tflops": None}
    try:
        w, sw = operand(weights, (dtype, N, K), N, K, dtype)
        a, sa = operand(acts, (dtype, M, K), M, K, dtype)
        fn = {"fp8": lambda: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16),
              "int8": lambda: torch._int_mm(a, w.t()),
              "bf16": lambda: torch.matmul(a, w.t())}[dtype]
        ms = timed(fn)
        rec["tflops"] = 2.0 * M * N * K / (ms * 1e-3) / 1e12
        rec["ms"] = ms
    except Exception as ex:  # noqa: BLE001 - reported, not hidden
        rec["error"] = str(ex).split("\n")[0][:200]
    return rec


def copy():
    weights.clear()
    acts.clear()
    torch.cuda.empty_cache()
    n = 1 << 30
    src, dst = torch.empty(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)
    ms = timed(lambda: dst.copy_(src), graph=False)   # in a graph its copy ran at ~2,450 GB/s against ~3,000 eagerly (H100)
    return {"copy_gbs": 2.0 * n / (ms * 1e-3) / 1e9}


print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name()}), flush=True)
for line in sys.stdin:
    req = line.split()
    if req[:1] == ["gemm"] and len(req) == 5 and req[1] in ("bf16", "fp8", "int8") and all(x.isdigit() for x in req[2:]):
        out = gemm(req[1], *map(int, req[2:]))
    elif req == ["copy"]:
        out = copy()
    else:
        out = {"error": "unknown request %r" % line.strip()}
    print(json.dumps(out), flush=True)
