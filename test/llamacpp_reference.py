#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python from PyPI) as an independent reference on the same GGUF file.

  llamacpp_reference.py MODEL.gguf tokenize < texts.jsonl    one JSON id list per input line ({"text": ...})
  llamacpp_reference.py MODEL.gguf generate PROMPT N OUT.f32  greedy N tokens; prints {"prompt": ids, "ids": ids}
                                                              and writes each step's logits (N x vocab fp32)
Install: pip install llama-cpp-python (it builds llama.cpp for the CPU, a few minutes). Tests skip without it."""
import json, sys
import numpy as np
from llama_cpp import Llama

path, mode = sys.argv[1], sys.argv[2]
if mode == "tokenize":
    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    for line in sys.stdin:
        print(json.dumps(llm.tokenize(json.loads(line)["text"].encode(), add_bos=False, special=False)))
else:
    prompt, n, out = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    llm = Llama(model_path=path, n_ctx=512, logits_all=True, verbose=False, n_threads=2, seed=0)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    llm.eval(ids)
    gen, steps = [], []
    for _ in range(n):
        lg = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        steps.append(lg)
        gen.append(int(lg.argmax()))
        llm.eval([gen[-1]])
    np.stack(steps).tofile(out)
    print(json.dumps({"prompt": ids, "ids": gen}))
