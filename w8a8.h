/* w8a8.h — a single-file LLM inference engine for NVIDIA GPUs with 8-bit weights and activations.
 *
 * Drop w8a8.h, w8a8.c and kernels.cu.inc into your program and build with `cc -c w8a8.c`. Link with
 * `-lm -ldl` (and `-lpthread` on old glibc). No CUDA headers or libraries are needed at build time: the
 * CUDA driver (libcuda.so.1) and NVRTC are opened with dlopen at run time, and where there is no GPU the
 * engine runs its CPU reference (the same quantized math, in plain C).
 *
 * Every function returns W8A8_OK (0) or a negative error code; w8a8_error() then says, in words, what went
 * wrong in this thread. The library never exits, aborts or prints unless asked (options.verbose).
 *
 * Example (compiled and run as a test, see test/example.c):
 *
 *     #include "w8a8.h"
 *     #include <stdio.h>
 *     int main(int argc, char **argv) {
 *         w8a8_model *m; w8a8_options opt = w8a8_default_options();
 *         if (argc < 2) { fprintf(stderr, "usage: example MODEL\n"); return 2; }
 *         if (w8a8_open(&m, argv[1], &opt)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
 *         int ids[256], n, seq, tok;
 *         if (w8a8_tokenize(m, "Once upon a time", 1, ids, 256, &n) || w8a8_seq_start(m, &seq) ||
 *             w8a8_feed(m, seq, ids, n)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
 *         w8a8_sampler smp = { .temperature = 0.0f, .top_p = 0.9f, .seed = 42 };
 *         w8a8_decoder dec = {0};
 *         for (int i = 0; i < 32; i++) {
 *             if (w8a8_sample(m, seq, &smp, &tok) || tok == w8a8_config_of(m)->eos_id) break;
 *             char text[64]; int len;
 *             w8a8_decode(m, &dec, tok, text, sizeof text, &len);
 *             fwrite(text, 1, len, stdout);
 *             if (w8a8_feed(m, seq, &tok, 1)) break;
 *         }
 *         w8a8_close(m);
 *         return 0;
 *     }
 *
 * Sequences: a model holds up to options.max_batch sequences, each with its own KV cache of
 * options.max_context positions. w8a8_feed() appends tokens to one sequence (a whole prompt in one call),
 * w8a8_feed_batch() to several at once (their prompts packed into the same forward passes);
 * w8a8_step() appends one token to each of several sequences in a single batched forward pass. After
 * either, the logits of each sequence's last position are available to w8a8_logits() and w8a8_sample().
 */
#ifndef W8A8_H
#define W8A8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------------------
 * Error codes
 * ------------------------------------------------------------------------------------------------------- */
enum {
    W8A8_OK = 0,
    W8A8_ERR_ARG = -1,      /* a bad argument: NULL, out of range, wrong state */
    W8A8_ERR_IO = -2,       /* a file could not be opened, read, mapped or written */
    W8A8_ERR_FORMAT = -3,   /* a model file is malformed: bad magic, version, checksum, sizes, offsets */
    W8A8_ERR_NOMEM = -4,    /* out of host or GPU memory */
    W8A8_ERR_GPU = -5,      /* no usable GPU, driver or NVRTC failure, kernel compile or launch failure */
    W8A8_ERR_CONTEXT = -6,  /* a sequence would grow past max_context */
    W8A8_ERR_TOKEN = -7,    /* a token id is out of range */
};

/* The last error of this thread, in words a user can act on. Never NULL. */
const char *w8a8_error(void);

/* ---------------------------------------------------------------------------------------------------------
 * The model file (all little-endian; see README.md, "The model file")
 *
 *   [header 256 B] [tokenizer section] [tensor table] [tensor data, each tensor 256-byte aligned]
 *
 * The checksum (FNV-1a 64) covers the header (with the checksum field zeroed), the tokenizer section and
 * the tensor table. Linear weights are stored [out][in] (rows of `in` contiguous, as tensor cores read
 * them); a quantized linear `X` has an fp32 tensor `X.scale` [out] (one scale per output channel) and may
 * have `X.in_scale` [1] (a static per-tensor activation scale). With an fp8 KV cache, each layer has
 * `blk.N.k_scale` and `blk.N.v_scale` [1]: the cache holds e4m3(k / k_scale) and e4m3(v / v_scale).
 * ------------------------------------------------------------------------------------------------------- */
#define W8A8_MAGIC "W8A8MODL"
#define W8A8_VERSION 1
#define W8A8_ALIGN 256
#define W8A8_NAME_MAX 48

enum w8a8_scheme { W8A8_F32 = 0, W8A8_BF16 = 1, W8A8_FP8 = 2, W8A8_INT8 = 3 };
enum w8a8_dtype { W8A8_DT_F32 = 0, W8A8_DT_BF16 = 1, W8A8_DT_F16 = 2, W8A8_DT_E4M3 = 3, W8A8_DT_I8 = 4 };
enum w8a8_act_scales { W8A8_ACT_DYNAMIC = 0, W8A8_ACT_STATIC = 1 };
enum w8a8_flags { W8A8_TIED_EMBEDDINGS = 1, W8A8_QKV_BIAS = 2, W8A8_QK_NORM = 4 };
enum w8a8_rope_scaling { W8A8_ROPE_NONE = 0, W8A8_ROPE_LLAMA3 = 1 };
enum w8a8_kv_dtype { W8A8_KV_16 = 0 /* bf16 (f32 in the f32 scheme) */, W8A8_KV_FP8 = 1 /* e4m3, per-layer scales */ };

typedef struct {
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_context;
    float rope_theta;
    uint32_t rope_scaling;            /* enum w8a8_rope_scaling */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    uint32_t rope_original_context;
    float norm_eps;
    uint32_t flags;                   /* enum w8a8_flags */
    int32_t bos_id, eos_id, eot_id;   /* -1 where the model has none */
    uint32_t scheme;                  /* enum w8a8_scheme */
    uint32_t act_scales;              /* enum w8a8_act_scales */
    uint32_t kv_dtype;                /* enum w8a8_kv_dtype */
} w8a8_config;

typedef struct {
    char magic[8];                    /* "W8A8MODL" */
    uint32_t version;                 /* W8A8_VERSION */
    uint32_t header_bytes;            /* sizeof(w8a8_header) == 256 */
    uint64_t file_bytes;              /* the whole file */
    w8a8_config config;
    uint64_t tokenizer_offset, tokenizer_bytes;
    uint64_t table_offset;
    uint32_t n_tensors, reserved0;
    uint64_t data_offset, data_bytes;
    uint64_t checksum;
    uint8_t pad[256 - 8 - 4 - 4 - 8 - sizeof(w8a8_config) - 6 * 8 - 2 * 4];
} w8a8_header;

typedef struct {
    char name[W8A8_NAME_MAX];         /* NUL-terminated, e.g. "blk.3.wqkv" */
    uint32_t dtype;                   /* enum w8a8_dtype */
    uint32_t ndim;                    /* 1 or 2 */
    uint64_t shape[2];                /* [rows][cols]; cols contiguous */
    uint64_t offset;                  /* from the start of the file, W8A8_ALIGN-aligned */
    uint64_t bytes;                   /* == rows * cols * dtype size */
} w8a8_tensor_entry;

/* The tokenizer section: w8a8_tokenizer_header, then
 *   float    scores[n_tokens]
 *   uint8_t  types[n_tokens]            (enum w8a8_token_type), padded to 4 bytes
 *   uint32_t text_offsets[n_tokens + 1] (into the text blob)
 *   uint8_t  text[]                     (each token's bytes as printed: "▁" is stored as " "), padded to 4
 *   int32_t  merges[n_merges][2]        (left id, right id), highest priority first
 *   char     chat_template[template_bytes]                                                              */
enum w8a8_tokenizer_kind {
    W8A8_TOK_SPM = 1,        /* SentencePiece BPE: merge the pair whose joined piece has the highest score */
    W8A8_TOK_BPE = 2,        /* BPE over UTF-8 characters with merge ranks (HF tokenizer.json, "▁" style) */
    W8A8_TOK_BYTE_BPE = 3,   /* byte-level BPE with merge ranks after a pre-tokenizer regex (GPT-2 style) */
};
enum w8a8_pretokenizer {
    W8A8_PRE_NONE = 0, W8A8_PRE_LLAMA3 = 1, W8A8_PRE_QWEN2 = 2,
    W8A8_PRE_GPT2 = 3,       /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    W8A8_PRE_SMOLLM = 4,     /* every digit alone, then GPT-2's */
};
enum w8a8_tokenizer_flags {
    W8A8_TOKF_DUMMY_PREFIX = 1,   /* prepend " " to non-empty text */
    W8A8_TOKF_BYTE_FALLBACK = 2,  /* characters not in the vocabulary become <0xXX> byte tokens */
    W8A8_TOKF_IGNORE_MERGES = 4,  /* a pre-token that is itself in the vocabulary is one token */
    W8A8_TOKF_ADD_BOS = 8,        /* the model expects BOS at the start of a prompt */
};
enum w8a8_token_type {
    W8A8_TT_NORMAL = 1, W8A8_TT_BYTE = 2, W8A8_TT_CONTROL = 3, /* control: never matched in text */
    W8A8_TT_SPECIAL = 4,          /* added special token: matched verbatim in text, not printed */
    W8A8_TT_UNUSED = 5,
    W8A8_TT_USER = 6,             /* added user-defined token: matched verbatim in text, printed */
};
typedef struct {
    uint32_t kind, pretokenizer, flags, n_tokens, n_merges, template_bytes, text_bytes, reserved;
} w8a8_tokenizer_header;

/* ---------------------------------------------------------------------------------------------------------
 * Opening a model
 * ------------------------------------------------------------------------------------------------------- */
typedef struct w8a8_model w8a8_model;

typedef struct {
    int force_cpu;      /* 1: never use the GPU (the CPU reference) */
    int require_gpu;    /* 1: fail rather than fall back to the CPU */
    int device;         /* CUDA device ordinal; -1: $W8A8_DEVICE or 0 */
    int max_context;    /* positions per sequence; 0: the model's max_context, at most 4096 */
    int max_batch;      /* sequences held at once; 0: 1 */
    int verbose;        /* 1: print what the engine does on stderr (device, memory, compile time) */
    int exact_fp8;      /* 1 (or $W8A8_FP8_EXACT=1): on Hopper, FP8 GEMMs of 5 rows and more on the mma.sync path, whose
                         * fp32 sums match the CPU reference's; by default they run on the ~3x faster wgmma path, whose
                         * FP8 tensor cores keep ~14 bits of each 32-product sum (as cuBLASLt's do: see README) */
} w8a8_options;

w8a8_options w8a8_default_options(void);
int w8a8_open(w8a8_model **out, const char *path, const w8a8_options *opt);
/* The same from a model image in memory (e.g. linked into the program); it must stay valid until close and be
 * 8-byte aligned (256 keeps the tensors aligned). */
int w8a8_open_memory(w8a8_model **out, const void *data, size_t n, const w8a8_options *opt);
void w8a8_close(w8a8_model *m);   /* NULL, or a handle already closed, is ignored */

const w8a8_config *w8a8_config_of(const w8a8_model *m);   /* NULL if m is NULL */
int w8a8_context_of(const w8a8_model *m);                   /* positions each sequence holds */
int w8a8_on_gpu(const w8a8_model *m);                       /* 1 if the GPU backend runs this model */
const char *w8a8_device_name(const w8a8_model *m);          /* "CPU reference" or the GPU's name */
const char *w8a8_fallback_reason(const w8a8_model *m);      /* why the CPU runs it; "" on the GPU */
const char *w8a8_backend_info(const w8a8_model *m);         /* GPU: how the kernels were obtained (compiled/cached) */
const char *w8a8_scheme_name(uint32_t scheme);              /* "f32", "bf16", "fp8", "int8" */
const char *w8a8_chat_template(const w8a8_model *m);       /* "" where the model has none */

/* ---------------------------------------------------------------------------------------------------------
 * Tokenizer
 * ------------------------------------------------------------------------------------------------------- */
/* Encodes UTF-8 text (special tokens written in the text are recognised). add_bos: 1 prepends BOS if the
 * model has one. Writes at most max_ids ids; *n_ids is the full count (an error if it did not fit). */
int w8a8_tokenize(w8a8_model *m, const char *text, int add_bos, int *ids, int max_ids, int *n_ids);

/* Streaming decode: bytes of a character split over several tokens are held back until the character is
 * whole, so every call writes only complete UTF-8 (or, for bytes that never form one, U+FFFD). */
typedef struct { int started; int n_pending; unsigned char pending[8]; } w8a8_decoder;   /* zero it to start */
int w8a8_decode(w8a8_model *m, w8a8_decoder *d, int id, char *out, int cap, int *len);
/* The raw bytes of one token (no streaming); *len is set, the bytes are not NUL-terminated. */
int w8a8_token_bytes(w8a8_model *m, int id, const char **bytes, int *len);

/* ---------------------------------------------------------------------------------------------------------
 * Sequences and the forward pass
 * ------------------------------------------------------------------------------------------------------- */
int w8a8_seq_start(w8a8_model *m, int *seq);          /* a free sequence slot, empty */
int w8a8_seq_reset(w8a8_model *m, int seq);           /* forget its tokens, keep the slot */
int w8a8_seq_end(w8a8_model *m, int seq);             /* give the slot back */
int w8a8_seq_length(w8a8_model *m, int seq, int *n);  /* positions filled */

int w8a8_feed(w8a8_model *m, int seq, const int *ids, int n);                    /* append n tokens */
/* Appends n[i] tokens ids[i][..] to sequence seqs[i], for n_seqs distinct sequences at once: the prompts'
 * rows share forward passes (up to 2048 rows a pass on the GPU), so many short prompts run as fast as one
 * long one. The same as w8a8_feed on each, in results. */
int w8a8_feed_batch(w8a8_model *m, int n_seqs, const int *seqs, const int *const *ids, const int *n);
int w8a8_step(w8a8_model *m, int n_seqs, const int *seqs, const int *ids);      /* one token to each */
/* The logits (vocab_size floats) of the sequence's last fed position; valid until the next feed/step. */
int w8a8_logits(w8a8_model *m, int seq, const float **logits);

/* Perplexity helper: feeds ids[0..n) to a fresh sequence and sums -log p(ids[i+1] | ids[..i]). */
int w8a8_score(w8a8_model *m, int seq, const int *ids, int n, double *nll_sum, int *n_scored);

/* Calibration (what `convert --calib` runs): while on, every forward pass also records, for each layer, the
 * per-channel absolute maximum of the input of each of its four linears and of the keys and values written
 * to the cache. The statistics are floats, layer after layer, each layer
 *   [dim] qkv input | [n_heads head_dim] o input | [dim] gate/up input | [hidden] down input |
 *   [n_kv_heads head_dim] keys (after RoPE) | [n_kv_heads head_dim] values
 * w8a8_calibrate(m, 1) clears them and starts; (m, 0) stops and drops them. w8a8_calib_stats copies them out
 * (n_floats must be at least w8a8_calib_size(m)). Runs on the GPU for the bf16 scheme, on the CPU for any. */
int w8a8_calibrate(w8a8_model *m, int on);
/* Where statistic `what` of layer `layer` starts (layer = n_layers, what = 0: the total), for a config alone
 * (convert uses it on statistics saved earlier). */
enum w8a8_calib_part { W8A8_CAL_QKV, W8A8_CAL_O, W8A8_CAL_W13, W8A8_CAL_W2, W8A8_CAL_K, W8A8_CAL_V, W8A8_CAL_PARTS };
size_t w8a8_calib_offset(const w8a8_config *c, uint32_t layer, int what);
size_t w8a8_calib_size(const w8a8_model *m);
int w8a8_calib_stats(w8a8_model *m, float *out, size_t n_floats);

/* ---------------------------------------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------------------------------------- */
typedef struct {
    float temperature;  /* 0: greedy (argmax; on the GPU without copying the logits back) */
    float top_p;        /* nucleus sampling; 1 or 0: off */
    uint64_t seed;      /* the random state; advanced by each draw (0 is replaced by a fixed constant) */
} w8a8_sampler;
int w8a8_sample(w8a8_model *m, int seq, w8a8_sampler *s, int *token);
/* Greedy (argmax) tokens of several sequences at once (after w8a8_step): on the GPU one launch and n ints back. */
int w8a8_sample_greedy(w8a8_model *m, int n_seqs, const int *seqs, int *tokens);
/* The same on a plain logits array (for callers that post-process logits). */
int w8a8_sample_logits(const float *logits, int n, w8a8_sampler *s, int *token);

/* ---------------------------------------------------------------------------------------------------------
 * Number formats (the exact conversions the engine uses; also used by the converter and the tests)
 * ------------------------------------------------------------------------------------------------------- */
uint8_t w8a8_fp8_from_float(float x);      /* E4M3, round to nearest even, saturate to ±448 (satfinite) */
float w8a8_fp8_to_float(uint8_t v);
int8_t w8a8_int8_from_float(float x);      /* round half to even, clamp to ±127 */
uint16_t w8a8_bf16_from_float(float x);    /* round to nearest even */
float w8a8_bf16_to_float(uint16_t v);
float w8a8_f16_to_float(uint16_t v);
uint64_t w8a8_fnv1a(uint64_t h, const void *p, size_t n);   /* h = 0xcbf29ce484222325 to start */
int w8a8_dtype_size(uint32_t dtype);                        /* bytes per element; 0 if unknown */

/* Compiles kernels.cu.inc with NVRTC for a target ("sm_80", "sm_89", "sm_90a") without needing a GPU; the
 * error message holds NVRTC's log on failure. */
int w8a8_compile_check(const char *target, size_t *cubin_bytes);

#ifdef __cplusplus
}
#endif
#endif
