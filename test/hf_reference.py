#!/usr/bin/env python3
"""An independent reference: a NumPy forward pass of a Hugging Face Llama checkpoint exactly as HF computes
it (rotate-half RoPE on the stored q/k layout, float64), and HF's own `tokenizers` on its tokenizer.json.
Prints JSON: {"ids": [...], "logits": [[...] per position]} for a prompt. Used by the test suite when
numpy/safetensors/tokenizers are installed (pip install numpy safetensors tokenizers); skipped otherwise.

With --stats it prints instead {"ids": [...], "stats": [...]}: calibration statistics in the engine's layout
(w8a8_calib_stats: per layer the per-channel max |x| of the inputs of qkv, o, gate/up and down, then of the
keys after RoPE and the values; keys in the engine's adjacent-pair channel order).

usage: hf_reference.py MODEL_DIR "prompt" [--bos] [--stats]"""
import json, sys
import numpy as np
from safetensors.numpy import load_file

d, prompt = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{d}/config.json"))
W = {k: v.astype(np.float64) for k, v in load_file(f"{d}/model.safetensors").items()}
try:
    from tokenizers import Tokenizer
    ids = Tokenizer.from_file(f"{d}/tokenizer.json").encode(prompt, add_special_tokens=False).ids
except Exception:
    ids = [int(x) for x in prompt.split()]   # no tokenizer.json: the prompt is ids
if "--bos" in sys.argv:
    ids = [cfg["bos_token_id"]] + ids
D, L, nh = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
nkv = cfg.get("num_key_value_heads", nh)
hd = cfg.get("head_dim", D // nh)
eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
emb = W.get("model.embed_tokens.weight", W.get("lm_head.weight"))
head = W.get("lm_head.weight", emb)
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
T = len(ids)
x = emb[ids]
inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
ang = np.outer(np.arange(T), inv)
cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
def rope(v):  # v: [T, heads, hd], rotate-half as HF does
    h = hd // 2
    rot = np.concatenate([-v[..., h:], v[..., :h]], -1)
    return v * cos[:, None] + rot * sin[:, None]
stats = []
def amax(v): return np.abs(v.reshape(T, -1)).max(0)
pair = np.array([(i % 2) * (hd // 2) + i // 2 for i in range(hd)])   # engine channel 2p+c is HF channel c*hd/2+p
for l in range(L):
    p = f"model.layers.{l}."
    h = rms(x, W[p + "input_layernorm.weight"])
    st = [amax(h)]
    q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
    k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
    v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
    q, k = rope(q), rope(k)
    st_kv = [amax(k[:, :, pair]), amax(v)]
    k, v = np.repeat(k, nh // nkv, 1), np.repeat(v, nh // nkv, 1)
    s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
    s = s + np.triu(np.full((T, T), -np.inf), 1)
    a = np.exp(s - s.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
    o = np.einsum("hqk,khd->qhd", a, v).reshape(T, nh * hd)
    st.append(amax(o))
    x = x + o @ W[p + "self_attn.o_proj.weight"].T
    h = rms(x, W[p + "post_attention_layernorm.weight"])
    st.append(amax(h))
    g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
    m = g / (1 + np.exp(-g)) * u
    st.append(amax(m))
    stats += [float(a) for a in np.concatenate(st + st_kv)]
    x = x + m @ W[p + "mlp.down_proj.weight"].T
logits = rms(x, W["model.norm.weight"]) @ head.T
if "--stats" in sys.argv:
    print(json.dumps({"ids": ids, "stats": stats}))
else:
    print(json.dumps({"ids": ids, "logits": logits.tolist()}))
