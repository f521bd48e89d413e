#!/usr/bin/env python3
"""Dequantizes GGUF tensors with the `gguf` package from PyPI (an independent reader) for the test suite.

  gguf_reference.py dump FILE.gguf TENSOR OUT.f32     raw fp32, in the file's element order
  gguf_reference.py make OUT.gguf                     a small GGUF with F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K
                                                      tensors of random blocks (valid scales), for the types
                                                      SmolLM2's file lacks
"""
import sys
import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as Q
from gguf.quants import dequantize

if sys.argv[1] == "dump":
    r = GGUFReader(sys.argv[2])
    t = next(t for t in r.tensors if t.name == sys.argv[3])
    dequantize(t.data, t.tensor_type).astype(np.float32).tofile(sys.argv[4])
elif sys.argv[1] == "make":
    rng = np.random.default_rng(7)
    w = GGUFWriter(sys.argv[2], "llama")
    rows, cols = 8, 512
    def blocks(qtype, nbytes_per_block, scale_offsets):
        n_blocks = rows * cols // gguf.GGML_QUANT_SIZES[qtype][0]
        raw = rng.integers(0, 256, size=(n_blocks, nbytes_per_block), dtype=np.uint8)
        for off in scale_offsets:   # f16 scales: small and finite
            raw[:, off:off + 2] = np.frombuffer(np.float16(rng.uniform(-0.05, 0.05, n_blocks)).tobytes(), np.uint8).reshape(n_blocks, 2)
        return raw.reshape(rows, -1)
    w.add_tensor("t_f32", rng.standard_normal((rows, cols)).astype(np.float32))
    w.add_tensor("t_f16", rng.standard_normal((rows, cols)).astype(np.float16))
    bf = (rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("t_bf16", bf.view(np.uint8).reshape(rows, -1), raw_dtype=Q.BF16)
    w.add_tensor("t_q8_0", blocks(Q.Q8_0, 34, [0]), raw_dtype=Q.Q8_0)
    w.add_tensor("t_q4_0", blocks(Q.Q4_0, 18, [0]), raw_dtype=Q.Q4_0)
    w.add_tensor("t_q4_1", blocks(Q.Q4_1, 20, [0, 2]), raw_dtype=Q.Q4_1)
    w.add_tensor("t_q6_k", blocks(Q.Q6_K, 210, [208]), raw_dtype=Q.Q6_K)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
