/* w8a8.c — the whole engine: see w8a8.h for the API and README.md for the file format and the math.
 *
 * Sections, in the order data flows:
 *   1. errors and number formats      4. CPU reference (the oracle for the GPU)
 *   2. the model file and loading     5. GPU backend (driver API, NVRTC, memory, kernels.cu.inc)
 *   3. tokenizer                      6. forward pass, 7. sampling, 8. public API
 */
#define _GNU_SOURCE
#include "w8a8.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* No fused multiply-add: the CPU reference rounds after every operation, as the GPU kernels do (they are
 * compiled with --fmad=false), so both produce the same bits. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

_Static_assert(sizeof(w8a8_header) == 256, "the header is 256 bytes");
_Static_assert(sizeof(w8a8_tensor_entry) == 88, "a tensor table entry is 88 bytes");
_Static_assert(sizeof(w8a8_tokenizer_header) == 32, "the tokenizer header is 32 bytes");

/* =========================================================================================================
 * 1. Errors and number formats
 * ======================================================================================================= */
static _Thread_local char g_error[1024] = "no error";

const char *w8a8_error(void) { return g_error; }

static int fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return code;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* BF16 is the top half of an fp32; rounding to nearest even is adding 0x7fff plus the lowest kept bit. */
uint16_t w8a8_bf16_from_float(float x) {
    uint32_t u = f2u(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
float w8a8_bf16_to_float(uint16_t v) { return u2f((uint32_t)v << 16); }
static float round_bf16(float x) { return w8a8_bf16_to_float(w8a8_bf16_from_float(x)); }

float w8a8_f16_to_float(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023;
    if (e == 31) return u2f(s | 0x7f800000u | (m << 13));
    if (e == 0) return (s ? -1.0f : 1.0f) * ldexpf((float)m, -24);
    return u2f(s | ((e + 112) << 23) | (m << 13));
}

/* E4M3 (OCP FP8): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, no infinities, S.1111.111 is NaN.
 * The largest finite value is 448, the smallest normal 2^-6, subnormals are multiples of 2^-9.
 * This is what `cvt.rn.satfinite.e4m3x2.f32` does: round to nearest even, saturate finite values (and
 * infinities) to ±448, NaN stays NaN. Scaling by powers of two is exact, so rintf (round-half-even in the
 * default rounding mode) on the scaled value is the hardware rounding. */
uint8_t w8a8_fp8_from_float(float x) {
    uint8_t sign = (f2u(x) >> 24) & 0x80;
    float a = fabsf(x);
    if (isnan(x)) return 0x7f;
    if (a >= 464.0f) return sign | 0x7e;                      /* would round past 448: saturate */
    if (a < 0.015625f) return sign | (uint8_t)rintf(a * 512.0f);   /* subnormal; 8 becomes 2^-6 */
    int e;
    frexpf(a, &e);                                             /* a = f * 2^e, f in [0.5, 1) */
    e -= 1;                                                    /* a = 1.m * 2^e */
    int m = (int)rintf(ldexpf(a, 3 - e));                      /* 8..16 */
    if (m == 16) { m = 8; e++; }
    if (e > 8) return sign | 0x7e;
    return sign | (uint8_t)(((e + 7) << 3) | (m - 8));
}

float w8a8_fp8_to_float(uint8_t v) {
    int e = (v >> 3) & 15, m = v & 7;
    float s = (v & 0x80) ? -1.0f : 1.0f;
    if (e == 15 && m == 7) return NAN;
    if (e == 0) return s * ldexpf((float)m, -9);
    return s * ldexpf((float)(8 + m), e - 10);
}

int8_t w8a8_int8_from_float(float x) {
    if (isnan(x)) return 0;
    float r = rintf(x);                                        /* half to even */
    return (int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r);
}

uint64_t w8a8_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int w8a8_dtype_size(uint32_t dtype) {
    switch (dtype) {
    case W8A8_DT_F32: return 4;
    case W8A8_DT_BF16: case W8A8_DT_F16: return 2;
    case W8A8_DT_E4M3: case W8A8_DT_I8: return 1;
    default: return 0;
    }
}

const char *w8a8_scheme_name(uint32_t s) {
    static const char *names[] = {"f32", "bf16", "fp8", "int8"};
    return s < 4 ? names[s] : "unknown";
}

/* A whole file, NUL-terminated (an empty file is ""); NULL if it cannot be read. */
static char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *b = len >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc(len + 1) : NULL;
    if (b && fread(b, 1, len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    if (b) b[len] = 0;
    if (n) *n = b ? (size_t)len : 0;
    return b;
}

/* A decoded E4M3 table: the CPU reference multiplies decoded values, which is exact in fp32. */
static float g_fp8_lut[256];
static void init_tables(void) {
    static int done;
    if (done) return;
    for (int i = 0; i < 256; i++) g_fp8_lut[i] = w8a8_fp8_to_float((uint8_t)i);
    done = 1;
}

/* =========================================================================================================
 * 2. The model file and loading
 * ======================================================================================================= */
typedef struct {
    const void *w;          /* [rows][cols] in dtype */
    const float *scale;     /* [rows] per-channel weight scale (fp8/int8), else NULL */
    const float *bias;      /* [rows] or NULL */
    float in_scale;         /* static per-tensor activation scale; 0: dynamic per token */
    uint32_t dtype;
    int rows, cols;
} linear;

typedef struct {
    const float *attn_norm, *ffn_norm, *q_norm, *k_norm;
    linear qkv;   /* [(n_heads + 2 n_kv_heads) head_dim][dim]: q rows, then k, then v */
    linear o;     /* [dim][n_heads head_dim] */
    linear w13;   /* [2 hidden][dim]: gate rows, then up rows */
    linear w2;    /* [dim][hidden] */
    float k_scale, v_scale;   /* fp8 KV cache: the cache holds e4m3(k / k_scale); 0 for a 16-bit cache */
} layer;

typedef struct tokenizer {
    uint32_t kind, pre, flags;
    int n_tokens, n_merges;
    const float *scores;
    const uint8_t *types;
    const uint32_t *offs;
    const uint8_t *text;
    const int32_t *merges;
    const char *chat_template;
    int template_bytes;
    /* built at open */
    int *vocab_slots; uint32_t vocab_mask;            /* open addressing: bytes -> id (normal tokens) */
    uint64_t *merge_keys; int *merge_ranks; uint32_t merge_mask;   /* (left, right) -> rank */
    int byte_token[256];                               /* <0xXX> tokens, or the single-byte token */
    int *specials; int n_specials;                     /* matched in text, longest first */
    uint8_t special_first[256];                        /* 1 if some special token starts with this byte */
} tokenizer;

typedef struct cpu_state cpu_state;
typedef struct gpu_state gpu_state;

struct w8a8_model {
    w8a8_options opt;
    int fd;
    unsigned char *map;
    size_t map_bytes;
    const w8a8_header *hdr;
    w8a8_config cfg;
    const w8a8_tensor_entry *table;
    tokenizer tok;

    const void *tok_embd; uint32_t embd_dtype;
    const float *out_norm;
    linear lm_head;
    layer *layers;
    float *rope_cos, *rope_sin;   /* [max_ctx][head_dim/2], shared by CPU and GPU so both rotate alike */

    int max_ctx, max_batch;
    int *seq_len;                 /* -1: slot free */
    float *logits;                /* [max_batch][vocab]: each sequence's last logits */
    int *logits_ready;            /* 1 if logits[seq] is current on the host */
    cpu_state *cpu;
    gpu_state *gpu;
    char fallback[1024];          /* why the CPU runs this model */
    char *chat_tmpl;              /* the chat template, NUL-terminated */
    int borrowed;                 /* the image is the caller's (w8a8_open_memory): not unmapped at close */
    float *calib;                 /* calibration statistics (w8a8_calibrate), NULL when off */
};

static int check_range(uint64_t off, uint64_t n, uint64_t size) { return off <= size && n <= size - off; }

static const w8a8_tensor_entry *find_tensor(const w8a8_model *m, const char *name) {
    for (uint32_t i = 0; i < m->hdr->n_tensors; i++)
        if (strncmp(m->table[i].name, name, W8A8_NAME_MAX) == 0) return &m->table[i];
    return NULL;
}

/* Looks a tensor up and checks it has the dtype and shape the config implies: no size from the file is
 * trusted before this. cols == 0 asks for a 1-D tensor. */
static int get_tensor(const w8a8_model *m, const char *name, int dtype_a, int dtype_b, uint64_t rows,
                      uint64_t cols, const void **out) {
    const w8a8_tensor_entry *t = find_tensor(m, name);
    if (!t) return fail(W8A8_ERR_FORMAT, "model file: tensor '%s' is missing", name);
    if ((int)t->dtype != dtype_a && (int)t->dtype != dtype_b)
        return fail(W8A8_ERR_FORMAT, "model file: tensor '%s' has dtype %u, expected %d", name, t->dtype, dtype_a);
    uint64_t want_r = cols ? rows : 1, want_c = cols ? cols : rows;
    uint64_t r = t->ndim == 2 ? t->shape[0] : 1, c = t->ndim == 2 ? t->shape[1] : t->shape[0];
    if ((t->ndim != 1 && t->ndim != 2) || r != want_r || c != want_c || (cols && t->ndim != 2))
        return fail(W8A8_ERR_FORMAT, "model file: tensor '%s' has shape [%llu x %llu], expected [%llu x %llu]", name,
                    (unsigned long long)r, (unsigned long long)c, (unsigned long long)want_r,
                    (unsigned long long)want_c);
    *out = m->map + t->offset;
    return W8A8_OK;
}

static int get_linear(const w8a8_model *m, const char *name, int rows, int cols, int bias, linear *l) {
    char buf[W8A8_NAME_MAX + 16];
    uint32_t sch = m->cfg.scheme;
    int dt = sch == W8A8_F32 ? W8A8_DT_F32 : sch == W8A8_BF16 ? W8A8_DT_BF16 : sch == W8A8_FP8 ? W8A8_DT_E4M3 : W8A8_DT_I8;
    int rc = get_tensor(m, name, dt, dt, rows, cols, &l->w);
    if (rc) return rc;
    l->dtype = dt; l->rows = rows; l->cols = cols; l->scale = NULL; l->bias = NULL; l->in_scale = 0;
    if (sch == W8A8_FP8 || sch == W8A8_INT8) {
        snprintf(buf, sizeof buf, "%s.scale", name);
        if ((rc = get_tensor(m, buf, W8A8_DT_F32, W8A8_DT_F32, rows, 0, (const void **)&l->scale))) return rc;
        if (m->cfg.act_scales == W8A8_ACT_STATIC) {
            const float *s;
            snprintf(buf, sizeof buf, "%s.in_scale", name);
            if ((rc = get_tensor(m, buf, W8A8_DT_F32, W8A8_DT_F32, 1, 0, (const void **)&s))) return rc;
            if (!(*s > 0 && isfinite(*s))) return fail(W8A8_ERR_FORMAT, "model file: '%s' is not a positive number", buf);
            l->in_scale = *s;
        }
    }
    if (bias) {
        snprintf(buf, sizeof buf, "%s.bias", name);
        if ((rc = get_tensor(m, buf, W8A8_DT_F32, W8A8_DT_F32, rows, 0, (const void **)&l->bias))) return rc;
    }
    return W8A8_OK;
}

static int validate_config(const w8a8_config *c) {
#define REQUIRE(cond, ...) do { if (!(cond)) return fail(W8A8_ERR_FORMAT, "model file: " __VA_ARGS__); } while (0)
    REQUIRE(c->dim >= 1 && c->dim <= 65536, "dim %u is out of range", c->dim);
    REQUIRE(c->hidden_dim >= 1 && c->hidden_dim <= 262144, "hidden_dim %u is out of range", c->hidden_dim);
    REQUIRE(c->n_layers >= 1 && c->n_layers <= 1024, "n_layers %u is out of range", c->n_layers);
    REQUIRE(c->n_heads >= 1 && c->n_heads <= 1024, "n_heads %u is out of range", c->n_heads);
    REQUIRE(c->n_kv_heads >= 1 && c->n_heads % c->n_kv_heads == 0, "n_kv_heads %u does not divide n_heads %u",
            c->n_kv_heads, c->n_heads);
    REQUIRE(c->head_dim >= 2 && c->head_dim <= 1024 && c->head_dim % 2 == 0, "head_dim %u is out of range", c->head_dim);
    REQUIRE(c->vocab_size >= 1 && c->vocab_size <= (1u << 24), "vocab_size %u is out of range", c->vocab_size);
    REQUIRE(c->max_context >= 1 && c->max_context <= (1u << 24), "max_context %u is out of range", c->max_context);
    REQUIRE(c->scheme <= W8A8_INT8, "unknown scheme %u", c->scheme);
    REQUIRE(c->act_scales <= W8A8_ACT_STATIC, "unknown activation-scale mode %u", c->act_scales);
    REQUIRE(c->kv_dtype <= W8A8_KV_FP8, "unsupported KV-cache dtype %u", c->kv_dtype);
    REQUIRE(c->rope_scaling <= W8A8_ROPE_LLAMA3, "unknown rope scaling %u", c->rope_scaling);
    REQUIRE(isfinite(c->rope_theta) && c->rope_theta > 0, "rope_theta is not a positive number");
    REQUIRE(isfinite(c->norm_eps) && c->norm_eps > 0 && c->norm_eps < 1, "norm_eps is out of range");
    REQUIRE((c->flags & ~7u) == 0, "unknown flags 0x%x", c->flags);
    REQUIRE(c->bos_id < (int32_t)c->vocab_size && c->eos_id < (int32_t)c->vocab_size &&
            c->eot_id < (int32_t)c->vocab_size && c->bos_id >= -1 && c->eos_id >= -1 && c->eot_id >= -1,
            "a special token id (bos %d, eos %d, eot %d) is outside the vocabulary of %u", c->bos_id, c->eos_id,
            c->eot_id, c->vocab_size);
    if (c->rope_scaling == W8A8_ROPE_LLAMA3)
        REQUIRE(c->rope_factor >= 1 && c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
                c->rope_original_context >= 1, "Llama 3.1 rope scaling parameters are out of range");
    return W8A8_OK;
}

static int tokenizer_load(tokenizer *t, const unsigned char *p, uint64_t n, uint32_t vocab);
static void tokenizer_free(tokenizer *t);

/* Maps a file; check_image then checks it. */
static int map_file(w8a8_model *m, const char *path) {
    struct stat st;
    m->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (m->fd < 0) return fail(W8A8_ERR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    if (fstat(m->fd, &st) != 0) return fail(W8A8_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(W8A8_ERR_IO, "'%s' is not a regular file", path);
    if ((uint64_t)st.st_size < sizeof(w8a8_header))
        return fail(W8A8_ERR_FORMAT, "'%s' is too small to be a w8a8 model (%llu bytes; truncated?)", path,
                    (unsigned long long)st.st_size);
    m->map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, m->fd, 0);
    if (m->map == MAP_FAILED) { m->map = NULL; return fail(W8A8_ERR_IO, "cannot map '%s': %s", path, strerror(errno)); }
    m->map_bytes = st.st_size;
    return W8A8_OK;
}

/* Checks everything about a model image that can be checked without running it: nothing in it is used
 * before this passes. `path` names it in messages. */
static int check_image(w8a8_model *m, const char *path) {
    uint64_t size = m->map_bytes;
    if (size < sizeof(w8a8_header))
        return fail(W8A8_ERR_FORMAT, "'%s' is too small to be a w8a8 model (%llu bytes; truncated?)", path, (unsigned long long)size);
    const w8a8_header *h = m->hdr = (const w8a8_header *)m->map;
    if (memcmp(h->magic, W8A8_MAGIC, 8) != 0)
        return fail(W8A8_ERR_FORMAT, "'%s' is not a w8a8 model file (bad magic); convert it with ./convert", path);
    if (h->version != W8A8_VERSION)
        return fail(W8A8_ERR_FORMAT, "'%s' has format version %u, this engine reads version %d; reconvert it", path,
                    h->version, W8A8_VERSION);
    if (h->header_bytes != sizeof(w8a8_header)) return fail(W8A8_ERR_FORMAT, "'%s': bad header size", path);
    if (h->file_bytes != size)
        return fail(W8A8_ERR_FORMAT, "'%s' is %llu bytes but its header says %llu (truncated or appended to)", path,
                    (unsigned long long)size, (unsigned long long)h->file_bytes);
    if (!check_range(h->tokenizer_offset, h->tokenizer_bytes, size) || h->n_tensors > 100000 ||
        !check_range(h->table_offset, (uint64_t)h->n_tensors * sizeof(w8a8_tensor_entry), size) ||
        !check_range(h->data_offset, h->data_bytes, size) || h->tokenizer_offset % 4 || h->table_offset % 8)
        return fail(W8A8_ERR_FORMAT, "'%s': a section lies outside the file", path);
    /* the checksum covers header, tokenizer and table: every size used below is protected by it */
    w8a8_header copy = *h;
    copy.checksum = 0;
    uint64_t sum = w8a8_fnv1a(0xcbf29ce484222325ull, &copy, sizeof copy);
    sum = w8a8_fnv1a(sum, m->map + h->tokenizer_offset, h->tokenizer_bytes);
    sum = w8a8_fnv1a(sum, m->map + h->table_offset, (size_t)h->n_tensors * sizeof(w8a8_tensor_entry));
    if (sum != h->checksum)
        return fail(W8A8_ERR_FORMAT, "'%s': checksum mismatch (the file is corrupted or was changed after conversion)", path);
    m->cfg = h->config;
    int rc = validate_config(&m->cfg);
    if (rc) return rc;
    m->table = (const w8a8_tensor_entry *)(m->map + h->table_offset);
    for (uint32_t i = 0; i < h->n_tensors; i++) {
        const w8a8_tensor_entry *t = &m->table[i];
        uint64_t elems, bytes;
        int es = w8a8_dtype_size(t->dtype);
        if (memchr(t->name, 0, W8A8_NAME_MAX) == NULL) return fail(W8A8_ERR_FORMAT, "'%s': tensor %u has no name", path, i);
        if (!es || t->ndim < 1 || t->ndim > 2) return fail(W8A8_ERR_FORMAT, "'%s': tensor '%s' has a bad dtype or rank", path, t->name);
        if (__builtin_mul_overflow(t->shape[0], t->ndim == 2 ? t->shape[1] : 1, &elems) ||
            __builtin_mul_overflow(elems, (uint64_t)es, &bytes) || bytes != t->bytes)
            return fail(W8A8_ERR_FORMAT, "'%s': tensor '%s' has a shape whose size overflows or disagrees with its bytes", path, t->name);
        if (t->offset % W8A8_ALIGN || t->offset < h->data_offset || !check_range(t->offset, t->bytes, size))
            return fail(W8A8_ERR_FORMAT, "'%s': tensor '%s' lies outside the file's data", path, t->name);
    }
    return tokenizer_load(&m->tok, m->map + h->tokenizer_offset, h->tokenizer_bytes, m->cfg.vocab_size);
}

/* Binds every tensor the architecture needs. */
static int bind_weights(w8a8_model *m) {
    const w8a8_config *c = &m->cfg;
    char nm[W8A8_NAME_MAX];
    int rc, e16 = c->scheme == W8A8_F32 ? W8A8_DT_F32 : W8A8_DT_BF16;
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    if ((rc = get_tensor(m, "tok_embd", e16, e16, c->vocab_size, c->dim, &m->tok_embd))) return rc;
    m->embd_dtype = e16;
    if ((rc = get_tensor(m, "out_norm", W8A8_DT_F32, W8A8_DT_F32, c->dim, 0, (const void **)&m->out_norm))) return rc;
    m->lm_head = (linear){.w = m->tok_embd, .dtype = e16, .rows = c->vocab_size, .cols = c->dim};
    if (!(c->flags & W8A8_TIED_EMBEDDINGS) &&
        (rc = get_tensor(m, "output", e16, e16, c->vocab_size, c->dim, &m->lm_head.w))) return rc;
    m->layers = calloc(c->n_layers, sizeof(layer));
    if (!m->layers) return fail(W8A8_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < c->n_layers; i++) {
        layer *L = &m->layers[i];
#define T1(field, name, n) (snprintf(nm, sizeof nm, "blk.%u." name, i), \
                            get_tensor(m, nm, W8A8_DT_F32, W8A8_DT_F32, n, 0, (const void **)&L->field))
#define LIN(field, name, r, cc, b) (snprintf(nm, sizeof nm, "blk.%u." name, i), get_linear(m, nm, r, cc, b, &L->field))
        if ((rc = T1(attn_norm, "attn_norm", c->dim)) || (rc = T1(ffn_norm, "ffn_norm", c->dim)) ||
            (rc = LIN(qkv, "wqkv", qd + 2 * kvd, c->dim, (c->flags & W8A8_QKV_BIAS) != 0)) ||
            (rc = LIN(o, "wo", c->dim, qd, 0)) || (rc = LIN(w13, "w13", 2 * c->hidden_dim, c->dim, 0)) ||
            (rc = LIN(w2, "w2", c->dim, c->hidden_dim, 0)))
            return rc;
        if ((c->flags & W8A8_QK_NORM) &&
            ((rc = T1(q_norm, "q_norm", c->head_dim)) || (rc = T1(k_norm, "k_norm", c->head_dim))))
            return rc;
        if (c->kv_dtype == W8A8_KV_FP8) {   /* the cache's per-layer scales */
            const float *ks, *vs;
            snprintf(nm, sizeof nm, "blk.%u.k_scale", i);
            if ((rc = get_tensor(m, nm, W8A8_DT_F32, W8A8_DT_F32, 1, 0, (const void **)&ks))) return rc;
            snprintf(nm, sizeof nm, "blk.%u.v_scale", i);
            if ((rc = get_tensor(m, nm, W8A8_DT_F32, W8A8_DT_F32, 1, 0, (const void **)&vs))) return rc;
            if (!(*ks > 0 && isfinite(*ks) && *vs > 0 && isfinite(*vs)))
                return fail(W8A8_ERR_FORMAT, "model file: blk.%u.k_scale or v_scale is not a positive number", i);
            L->k_scale = *ks;
            L->v_scale = *vs;
        }
#undef T1
#undef LIN
    }
    return W8A8_OK;
}

/* RoPE tables, with Llama 3.1's frequency scaling. Computed once on the host in the order llama2.c uses
 * (freq = 1 / theta^(2i/d), angle = pos * freq in fp32) so the f32 scheme reproduces it bit for bit. */
static int build_rope(w8a8_model *m) {
    const w8a8_config *c = &m->cfg;
    int half = c->head_dim / 2;
    size_t n = (size_t)m->max_ctx * half;
    m->rope_cos = malloc(n * sizeof(float));
    m->rope_sin = malloc(n * sizeof(float));
    if (!m->rope_cos || !m->rope_sin) return fail(W8A8_ERR_NOMEM, "out of memory for RoPE tables (%zu bytes)", 2 * n * 4);
    for (int i = 0; i < half; i++) {
        float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        if (c->rope_scaling == W8A8_ROPE_LLAMA3) {
            float wavelen = 2.0f * (float)M_PI / freq, orig = (float)c->rope_original_context;
            float lo_wl = orig / c->rope_low_freq_factor, hi_wl = orig / c->rope_high_freq_factor;
            if (wavelen > lo_wl) freq = freq / c->rope_factor;
            else if (wavelen >= hi_wl) {
                float smooth = (orig / wavelen - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
                freq = (1 - smooth) * freq / c->rope_factor + smooth * freq;
            }
        }
        for (int p = 0; p < m->max_ctx; p++) {
            float a = (float)p * freq;
            m->rope_cos[(size_t)p * half + i] = cosf(a);
            m->rope_sin[(size_t)p * half + i] = sinf(a);
        }
    }
    return W8A8_OK;
}

/* =========================================================================================================
 * 3. Tokenizer
 *
 * Three kinds share one merge loop: SentencePiece BPE (merge the adjacent pair whose joined piece has the
 * best score), BPE over characters with merge ranks (HF tokenizer.json of the "▁" kind), and byte-level BPE
 * (GPT-2 style: pre-tokenize with the model's regex, then merge bytes by rank). Every token is stored as the
 * bytes it prints, so "▁" is " " and byte-level "Ġ" is " ".
 * ======================================================================================================= */
static uint32_t hash_bytes(const unsigned char *p, size_t n) { return (uint32_t)w8a8_fnv1a(0xcbf29ce484222325ull, p, n); }
static uint32_t hash_u64(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdull; k ^= k >> 33; return (uint32_t)k; }

static const unsigned char *tok_text(const tokenizer *t, int id, int *len) {
    *len = (int)(t->offs[id + 1] - t->offs[id]);
    return t->text + t->offs[id];
}

/* The id of a normal token with exactly these bytes, or -1. */
static int vocab_find(const tokenizer *t, const unsigned char *p, int n) {
    for (uint32_t h = hash_bytes(p, n) & t->vocab_mask;; h = (h + 1) & t->vocab_mask) {
        int id = t->vocab_slots[h], len;
        if (id < 0) return -1;
        const unsigned char *s = tok_text(t, id, &len);
        if (len == n && memcmp(s, p, n) == 0) return id;
    }
}

/* The rank of the merge (left, right), or -1. */
static int merge_find(const tokenizer *t, int left, int right) {
    if (!t->merge_keys) return -1;
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    for (uint32_t h = hash_u64(key) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        if (t->merge_ranks[h] < 0) return -1;
        if (t->merge_keys[h] == key) return t->merge_ranks[h];
    }
}

static uint32_t pow2_above(uint64_t n) { uint32_t c = 16; while (c < 2 * n) c <<= 1; return c; }

static int cmp_special_len(const void *a, const void *b, void *t_) {
    const tokenizer *t = t_;
    int la, lb;
    tok_text(t, *(const int *)a, &la);
    tok_text(t, *(const int *)b, &lb);
    return lb - la;
}

static int tokenizer_load(tokenizer *t, const unsigned char *p, uint64_t n, uint32_t vocab) {
    w8a8_tokenizer_header th;
    if (n < sizeof th) return fail(W8A8_ERR_FORMAT, "model file: the tokenizer section is truncated");
    memcpy(&th, p, sizeof th);
    if (th.kind < W8A8_TOK_SPM || th.kind > W8A8_TOK_BYTE_BPE || th.pretokenizer > W8A8_PRE_SMOLLM || th.flags & ~15u)
        return fail(W8A8_ERR_FORMAT, "model file: unknown tokenizer kind %u / pre-tokenizer %u", th.kind, th.pretokenizer);
    if (th.n_tokens != vocab)
        return fail(W8A8_ERR_FORMAT, "model file: the tokenizer has %u tokens but the model's vocabulary is %u", th.n_tokens, vocab);
    uint64_t nt = th.n_tokens, off = sizeof th;
    uint64_t o_scores = off, o_types = o_scores + 4 * nt, o_offs = o_types + ((nt + 3) & ~3ull);
    uint64_t o_text = o_offs + 4 * (nt + 1), o_merges = o_text + (((uint64_t)th.text_bytes + 3) & ~3ull);
    uint64_t o_tmpl = o_merges + 8 * (uint64_t)th.n_merges, end = o_tmpl + th.template_bytes;
    if (th.n_merges > (1u << 26) || end != n)
        return fail(W8A8_ERR_FORMAT, "model file: the tokenizer section's sizes disagree (%llu bytes, expected %llu)",
                    (unsigned long long)n, (unsigned long long)end);
    memset(t, 0, sizeof *t);
    t->kind = th.kind; t->pre = th.pretokenizer; t->flags = th.flags;
    t->n_tokens = (int)nt; t->n_merges = (int)th.n_merges;
    t->scores = (const float *)(p + o_scores);
    t->types = p + o_types;
    t->offs = (const uint32_t *)(p + o_offs);
    t->text = p + o_text;
    t->merges = (const int32_t *)(p + o_merges);
    t->chat_template = (const char *)(p + o_tmpl);
    t->template_bytes = (int)th.template_bytes;
    if (t->offs[0] != 0 || t->offs[nt] != th.text_bytes)
        return fail(W8A8_ERR_FORMAT, "model file: the tokenizer's text offsets are inconsistent");
    for (uint64_t i = 0; i < nt; i++) {
        if (t->offs[i + 1] < t->offs[i] || t->offs[i + 1] - t->offs[i] > 4096)
            return fail(W8A8_ERR_FORMAT, "model file: token %llu has a bad text offset", (unsigned long long)i);
        if (t->types[i] < W8A8_TT_NORMAL || t->types[i] > W8A8_TT_USER)
            return fail(W8A8_ERR_FORMAT, "model file: token %llu has an unknown type %u", (unsigned long long)i, t->types[i]);
        if (t->types[i] == W8A8_TT_BYTE && t->offs[i + 1] - t->offs[i] != 1)
            return fail(W8A8_ERR_FORMAT, "model file: byte token %llu is not one byte", (unsigned long long)i);
    }
    for (int i = 0; i < t->n_merges * 2; i++)
        if (t->merges[i] < 0 || t->merges[i] >= (int)nt)
            return fail(W8A8_ERR_FORMAT, "model file: merge %d names token %d, outside the vocabulary", i / 2, t->merges[i]);

    t->vocab_mask = pow2_above(nt) - 1;
    t->vocab_slots = malloc(sizeof(int) * (t->vocab_mask + 1));
    t->specials = malloc(sizeof(int) * (nt + 1));
    if (!t->vocab_slots || !t->specials) return fail(W8A8_ERR_NOMEM, "out of memory for the tokenizer");
    memset(t->vocab_slots, 0xff, sizeof(int) * (t->vocab_mask + 1));
    for (int i = 0; i < 256; i++) t->byte_token[i] = -1;
    for (int id = 0; id < (int)nt; id++) {
        int len;
        const unsigned char *s = tok_text(t, id, &len);
        if (t->types[id] == W8A8_TT_BYTE) { if (t->byte_token[s[0]] < 0) t->byte_token[s[0]] = id; continue; }
        if ((t->types[id] == W8A8_TT_SPECIAL || t->types[id] == W8A8_TT_USER) && len > 0) { t->specials[t->n_specials++] = id; t->special_first[s[0]] = 1; continue; }
        if (t->types[id] != W8A8_TT_NORMAL || vocab_find(t, s, len) >= 0) continue;   /* first one wins */
        uint32_t h = hash_bytes(s, len) & t->vocab_mask;
        while (t->vocab_slots[h] >= 0) h = (h + 1) & t->vocab_mask;
        t->vocab_slots[h] = id;
        if (t->kind == W8A8_TOK_BYTE_BPE && len == 1) t->byte_token[s[0]] = id;
    }
    qsort_r(t->specials, t->n_specials, sizeof(int), cmp_special_len, t);
    if (t->n_merges) {
        t->merge_mask = pow2_above(t->n_merges) - 1;
        t->merge_keys = malloc(sizeof(uint64_t) * (t->merge_mask + 1));
        t->merge_ranks = malloc(sizeof(int) * (t->merge_mask + 1));
        if (!t->merge_keys || !t->merge_ranks) return fail(W8A8_ERR_NOMEM, "out of memory for the tokenizer's merges");
        memset(t->merge_ranks, 0xff, sizeof(int) * (t->merge_mask + 1));
        for (int r = 0; r < t->n_merges; r++) {
            uint64_t key = ((uint64_t)(uint32_t)t->merges[2 * r] << 32) | (uint32_t)t->merges[2 * r + 1];
            if (merge_find(t, t->merges[2 * r], t->merges[2 * r + 1]) >= 0) continue;
            uint32_t h = hash_u64(key) & t->merge_mask;
            while (t->merge_ranks[h] >= 0) h = (h + 1) & t->merge_mask;
            t->merge_keys[h] = key;
            t->merge_ranks[h] = r;
        }
    }
    return W8A8_OK;
}

static void tokenizer_free(tokenizer *t) {
    free(t->vocab_slots); free(t->specials); free(t->merge_keys); free(t->merge_ranks);
    memset(t, 0, sizeof *t);
}

/* --- a growable list of ids --- */
typedef struct { int *v; int n, cap; int oom; } ivec;
static void ivec_push(ivec *a, int x) {
    if (a->n == a->cap) {
        int nc = a->cap ? 2 * a->cap : 64;
        int *nv = realloc(a->v, sizeof(int) * nc);
        if (!nv) { a->oom = 1; return; }
        a->v = nv; a->cap = nc;
    }
    a->v[a->n++] = x;
}

/* --- the merge loop: symbols in a linked list, candidate pairs in a binary heap (O(n log n)) --- */
typedef struct { int start, len, id, prev, next, frozen; } sym;
typedef struct { float pri; int left, len; } cand;   /* lower pri first, then leftmost */

typedef struct { cand *v; int n, cap; } heap;
static int cand_less(const cand *a, const cand *b) { return a->pri < b->pri || (a->pri == b->pri && a->left < b->left); }
static int heap_push(heap *h, cand c) {
    if (h->n == h->cap) {
        int nc = h->cap ? 2 * h->cap : 64;
        cand *nv = realloc(h->v, sizeof(cand) * nc);
        if (!nv) return -1;
        h->v = nv; h->cap = nc;
    }
    int i = h->n++;
    while (i > 0 && cand_less(&c, &h->v[(i - 1) / 2])) { h->v[i] = h->v[(i - 1) / 2]; i = (i - 1) / 2; }
    h->v[i] = c;
    return 0;
}
static cand heap_pop(heap *h) {
    cand top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && cand_less(&h->v[c + 1], &h->v[c])) c++;
        if (!cand_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c]; i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* The merge a pair would make: its priority and result id, or 0 if these two never merge. */
static int pair_merge(const tokenizer *t, const unsigned char *text, const sym *a, const sym *b, float *pri, int *id) {
    if (a->frozen || b->frozen) return 0;
    if (t->kind == W8A8_TOK_SPM) {
        int r = vocab_find(t, text + a->start, a->len + b->len);
        if (r < 0) return 0;
        *pri = -t->scores[r]; *id = r;
        return 1;
    }
    int rank = merge_find(t, a->id, b->id);
    if (rank < 0) return 0;
    int r = vocab_find(t, text + a->start, a->len + b->len);
    if (r < 0) return 0;
    *pri = (float)rank; *id = r;
    return 1;
}

static void try_pair(const tokenizer *t, const unsigned char *text, sym *s, int left, heap *h, int *oom) {
    float pri; int id;
    if (left < 0 || s[left].next < 0) return;
    if (pair_merge(t, text, &s[left], &s[s[left].next], &pri, &id))
        if (heap_push(h, (cand){pri, left, s[left].len + s[s[left].next].len})) *oom = 1;
}

static int bpe_merge(const tokenizer *t, const unsigned char *text, sym *s, int ns, ivec *out) {
    heap h = {0};
    int oom = 0;
    for (int i = 0; i < ns; i++) { s[i].prev = i - 1; s[i].next = i + 1 < ns ? i + 1 : -1; }
    for (int i = 0; i + 1 < ns; i++) try_pair(t, text, s, i, &h, &oom);
    while (h.n && !oom) {
        cand c = heap_pop(&h);
        sym *a = &s[c.left];
        if (a->len == 0 || a->next < 0 || a->len + s[a->next].len != c.len) continue;   /* stale */
        sym *b = &s[a->next];
        float pri; int id;
        if (!pair_merge(t, text, a, b, &pri, &id)) continue;
        a->id = id; a->len += b->len; b->len = 0;
        a->next = b->next;
        if (b->next >= 0) s[b->next].prev = c.left;
        try_pair(t, text, s, a->prev, &h, &oom);
        try_pair(t, text, s, c.left, &h, &oom);
    }
    free(h.v);
    if (oom) return fail(W8A8_ERR_NOMEM, "out of memory while tokenizing");
    for (int i = 0; i >= 0 && ns > 0; i = s[i].next) ivec_push(out, s[i].id);
    return W8A8_OK;
}

static int utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1; }

/* Decodes one UTF-8 character; invalid or truncated bytes are one character of their own (cp = -1). */
static int utf8_next(const unsigned char *p, size_t n, int *cp) {
    int len = utf8_len(p[0]);
    if (len == 1) { *cp = p[0] < 0x80 ? p[0] : -1; return 1; }
    if ((size_t)len > n) { *cp = -1; return 1; }
    int v = p[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) { *cp = -1; return 1; }
        v = (v << 6) | (p[i] & 0x3f);
    }
    *cp = v;
    return len;
}

/* Characters (SPM/BPE kinds): one symbol per UTF-8 character, bytes where the character is unknown. */
static int encode_chars(const tokenizer *t, const unsigned char *text, int n, ivec *out) {
    sym *s = malloc(sizeof(sym) * (n ? n : 1));
    if (!s) return fail(W8A8_ERR_NOMEM, "out of memory while tokenizing");
    int ns = 0;
    for (int i = 0; i < n;) {
        int cp, len = utf8_next(text + i, n - i, &cp);
        int id = vocab_find(t, text + i, len);
        if (id >= 0) s[ns++] = (sym){i, len, id, 0, 0, 0};
        else
            for (int k = 0; k < len; k++) {
                int b = t->flags & W8A8_TOKF_BYTE_FALLBACK ? t->byte_token[text[i + k]] : -1;
                /* no byte token: the unknown token (id 0 by SentencePiece's convention) */
                s[ns++] = (sym){i + k, 1, b >= 0 ? b : 0, 0, 0, 1};
                if (b < 0) break;
            }
        i += len;
    }
    int rc = bpe_merge(t, text, s, ns, out);
    free(s);
    return rc;
}

/* --- the pre-tokenizer regexes of Llama 3 and Qwen2/3, written out by hand:
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * (Qwen2 has \p{N} where Llama 3 has \p{N}{1,3}.) --- */
/* Unicode 14 general categories L* and N* as code-point ranges (from Python's unicodedata). */
static const uint32_t uni_letter[][2] = {
{0x41,0x5A},{0x61,0x7A},{0xAA,0xAA},{0xB5,0xB5},{0xBA,0xBA},{0xC0,0xD6},{0xD8,0xF6},{0xF8,0x2C1},{0x2C6,0x2D1},
{0x2E0,0x2E4},{0x2EC,0x2EC},{0x2EE,0x2EE},{0x370,0x374},{0x376,0x377},{0x37A,0x37D},{0x37F,0x37F},{0x386,0x386},
{0x388,0x38A},{0x38C,0x38C},{0x38E,0x3A1},{0x3A3,0x3F5},{0x3F7,0x481},{0x48A,0x52F},{0x531,0x556},{0x559,0x559},
{0x560,0x588},{0x5D0,0x5EA},{0x5EF,0x5F2},{0x620,0x64A},{0x66E,0x66F},{0x671,0x6D3},{0x6D5,0x6D5},{0x6E5,0x6E6},
{0x6EE,0x6EF},{0x6FA,0x6FC},{0x6FF,0x6FF},{0x710,0x710},{0x712,0x72F},{0x74D,0x7A5},{0x7B1,0x7B1},{0x7CA,0x7EA},
{0x7F4,0x7F5},{0x7FA,0x7FA},{0x800,0x815},{0x81A,0x81A},{0x824,0x824},{0x828,0x828},{0x840,0x858},{0x860,0x86A},
{0x870,0x887},{0x889,0x88E},{0x8A0,0x8C9},{0x904,0x939},{0x93D,0x93D},{0x950,0x950},{0x958,0x961},{0x971,0x980},
{0x985,0x98C},{0x98F,0x990},{0x993,0x9A8},{0x9AA,0x9B0},{0x9B2,0x9B2},{0x9B6,0x9B9},{0x9BD,0x9BD},{0x9CE,0x9CE},
{0x9DC,0x9DD},{0x9DF,0x9E1},{0x9F0,0x9F1},{0x9FC,0x9FC},{0xA05,0xA0A},{0xA0F,0xA10},{0xA13,0xA28},{0xA2A,0xA30},
{0xA32,0xA33},{0xA35,0xA36},{0xA38,0xA39},{0xA59,0xA5C},{0xA5E,0xA5E},{0xA72,0xA74},{0xA85,0xA8D},{0xA8F,0xA91},
{0xA93,0xAA8},{0xAAA,0xAB0},{0xAB2,0xAB3},{0xAB5,0xAB9},{0xABD,0xABD},{0xAD0,0xAD0},{0xAE0,0xAE1},{0xAF9,0xAF9},
{0xB05,0xB0C},{0xB0F,0xB10},{0xB13,0xB28},{0xB2A,0xB30},{0xB32,0xB33},{0xB35,0xB39},{0xB3D,0xB3D},{0xB5C,0xB5D},
{0xB5F,0xB61},{0xB71,0xB71},{0xB83,0xB83},{0xB85,0xB8A},{0xB8E,0xB90},{0xB92,0xB95},{0xB99,0xB9A},{0xB9C,0xB9C},
{0xB9E,0xB9F},{0xBA3,0xBA4},{0xBA8,0xBAA},{0xBAE,0xBB9},{0xBD0,0xBD0},{0xC05,0xC0C},{0xC0E,0xC10},{0xC12,0xC28},
{0xC2A,0xC39},{0xC3D,0xC3D},{0xC58,0xC5A},{0xC5D,0xC5D},{0xC60,0xC61},{0xC80,0xC80},{0xC85,0xC8C},{0xC8E,0xC90},
{0xC92,0xCA8},{0xCAA,0xCB3},{0xCB5,0xCB9},{0xCBD,0xCBD},{0xCDD,0xCDE},{0xCE0,0xCE1},{0xCF1,0xCF2},{0xD04,0xD0C},
{0xD0E,0xD10},{0xD12,0xD3A},{0xD3D,0xD3D},{0xD4E,0xD4E},{0xD54,0xD56},{0xD5F,0xD61},{0xD7A,0xD7F},{0xD85,0xD96},
{0xD9A,0xDB1},{0xDB3,0xDBB},{0xDBD,0xDBD},{0xDC0,0xDC6},{0xE01,0xE30},{0xE32,0xE33},{0xE40,0xE46},{0xE81,0xE82},
{0xE84,0xE84},{0xE86,0xE8A},{0xE8C,0xEA3},{0xEA5,0xEA5},{0xEA7,0xEB0},{0xEB2,0xEB3},{0xEBD,0xEBD},{0xEC0,0xEC4},
{0xEC6,0xEC6},{0xEDC,0xEDF},{0xF00,0xF00},{0xF40,0xF47},{0xF49,0xF6C},{0xF88,0xF8C},{0x1000,0x102A},{0x103F,0x103F},
{0x1050,0x1055},{0x105A,0x105D},{0x1061,0x1061},{0x1065,0x1066},{0x106E,0x1070},{0x1075,0x1081},{0x108E,0x108E},
{0x10A0,0x10C5},{0x10C7,0x10C7},{0x10CD,0x10CD},{0x10D0,0x10FA},{0x10FC,0x1248},{0x124A,0x124D},{0x1250,0x1256},
{0x1258,0x1258},{0x125A,0x125D},{0x1260,0x1288},{0x128A,0x128D},{0x1290,0x12B0},{0x12B2,0x12B5},{0x12B8,0x12BE},
{0x12C0,0x12C0},{0x12C2,0x12C5},{0x12C8,0x12D6},{0x12D8,0x1310},{0x1312,0x1315},{0x1318,0x135A},{0x1380,0x138F},
{0x13A0,0x13F5},{0x13F8,0x13FD},{0x1401,0x166C},{0x166F,0x167F},{0x1681,0x169A},{0x16A0,0x16EA},{0x16F1,0x16F8},
{0x1700,0x1711},{0x171F,0x1731},{0x1740,0x1751},{0x1760,0x176C},{0x176E,0x1770},{0x1780,0x17B3},{0x17D7,0x17D7},
{0x17DC,0x17DC},{0x1820,0x1878},{0x1880,0x1884},{0x1887,0x18A8},{0x18AA,0x18AA},{0x18B0,0x18F5},{0x1900,0x191E},
{0x1950,0x196D},{0x1970,0x1974},{0x1980,0x19AB},{0x19B0,0x19C9},{0x1A00,0x1A16},{0x1A20,0x1A54},{0x1AA7,0x1AA7},
{0x1B05,0x1B33},{0x1B45,0x1B4C},{0x1B83,0x1BA0},{0x1BAE,0x1BAF},{0x1BBA,0x1BE5},{0x1C00,0x1C23},{0x1C4D,0x1C4F},
{0x1C5A,0x1C7D},{0x1C80,0x1C88},{0x1C90,0x1CBA},{0x1CBD,0x1CBF},{0x1CE9,0x1CEC},{0x1CEE,0x1CF3},{0x1CF5,0x1CF6},
{0x1CFA,0x1CFA},{0x1D00,0x1DBF},{0x1E00,0x1F15},{0x1F18,0x1F1D},{0x1F20,0x1F45},{0x1F48,0x1F4D},{0x1F50,0x1F57},
{0x1F59,0x1F59},{0x1F5B,0x1F5B},{0x1F5D,0x1F5D},{0x1F5F,0x1F7D},{0x1F80,0x1FB4},{0x1FB6,0x1FBC},{0x1FBE,0x1FBE},
{0x1FC2,0x1FC4},{0x1FC6,0x1FCC},{0x1FD0,0x1FD3},{0x1FD6,0x1FDB},{0x1FE0,0x1FEC},{0x1FF2,0x1FF4},{0x1FF6,0x1FFC},
{0x2071,0x2071},{0x207F,0x207F},{0x2090,0x209C},{0x2102,0x2102},{0x2107,0x2107},{0x210A,0x2113},{0x2115,0x2115},
{0x2119,0x211D},{0x2124,0x2124},{0x2126,0x2126},{0x2128,0x2128},{0x212A,0x212D},{0x212F,0x2139},{0x213C,0x213F},
{0x2145,0x2149},{0x214E,0x214E},{0x2183,0x2184},{0x2C00,0x2CE4},{0x2CEB,0x2CEE},{0x2CF2,0x2CF3},{0x2D00,0x2D25},
{0x2D27,0x2D27},{0x2D2D,0x2D2D},{0x2D30,0x2D67},{0x2D6F,0x2D6F},{0x2D80,0x2D96},{0x2DA0,0x2DA6},{0x2DA8,0x2DAE},
{0x2DB0,0x2DB6},{0x2DB8,0x2DBE},{0x2DC0,0x2DC6},{0x2DC8,0x2DCE},{0x2DD0,0x2DD6},{0x2DD8,0x2DDE},{0x2E2F,0x2E2F},
{0x3005,0x3006},{0x3031,0x3035},{0x303B,0x303C},{0x3041,0x3096},{0x309D,0x309F},{0x30A1,0x30FA},{0x30FC,0x30FF},
{0x3105,0x312F},{0x3131,0x318E},{0x31A0,0x31BF},{0x31F0,0x31FF},{0x3400,0x4DBF},{0x4E00,0xA48C},{0xA4D0,0xA4FD},
{0xA500,0xA60C},{0xA610,0xA61F},{0xA62A,0xA62B},{0xA640,0xA66E},{0xA67F,0xA69D},{0xA6A0,0xA6E5},{0xA717,0xA71F},
{0xA722,0xA788},{0xA78B,0xA7CA},{0xA7D0,0xA7D1},{0xA7D3,0xA7D3},{0xA7D5,0xA7D9},{0xA7F2,0xA801},{0xA803,0xA805},
{0xA807,0xA80A},{0xA80C,0xA822},{0xA840,0xA873},{0xA882,0xA8B3},{0xA8F2,0xA8F7},{0xA8FB,0xA8FB},{0xA8FD,0xA8FE},
{0xA90A,0xA925},{0xA930,0xA946},{0xA960,0xA97C},{0xA984,0xA9B2},{0xA9CF,0xA9CF},{0xA9E0,0xA9E4},{0xA9E6,0xA9EF},
{0xA9FA,0xA9FE},{0xAA00,0xAA28},{0xAA40,0xAA42},{0xAA44,0xAA4B},{0xAA60,0xAA76},{0xAA7A,0xAA7A},{0xAA7E,0xAAAF},
{0xAAB1,0xAAB1},{0xAAB5,0xAAB6},{0xAAB9,0xAABD},{0xAAC0,0xAAC0},{0xAAC2,0xAAC2},{0xAADB,0xAADD},{0xAAE0,0xAAEA},
{0xAAF2,0xAAF4},{0xAB01,0xAB06},{0xAB09,0xAB0E},{0xAB11,0xAB16},{0xAB20,0xAB26},{0xAB28,0xAB2E},{0xAB30,0xAB5A},
{0xAB5C,0xAB69},{0xAB70,0xABE2},{0xAC00,0xD7A3},{0xD7B0,0xD7C6},{0xD7CB,0xD7FB},{0xF900,0xFA6D},{0xFA70,0xFAD9},
{0xFB00,0xFB06},{0xFB13,0xFB17},{0xFB1D,0xFB1D},{0xFB1F,0xFB28},{0xFB2A,0xFB36},{0xFB38,0xFB3C},{0xFB3E,0xFB3E},
{0xFB40,0xFB41},{0xFB43,0xFB44},{0xFB46,0xFBB1},{0xFBD3,0xFD3D},{0xFD50,0xFD8F},{0xFD92,0xFDC7},{0xFDF0,0xFDFB},
{0xFE70,0xFE74},{0xFE76,0xFEFC},{0xFF21,0xFF3A},{0xFF41,0xFF5A},{0xFF66,0xFFBE},{0xFFC2,0xFFC7},{0xFFCA,0xFFCF},
{0xFFD2,0xFFD7},{0xFFDA,0xFFDC},{0x10000,0x1000B},{0x1000D,0x10026},{0x10028,0x1003A},{0x1003C,0x1003D},
{0x1003F,0x1004D},{0x10050,0x1005D},{0x10080,0x100FA},{0x10280,0x1029C},{0x102A0,0x102D0},{0x10300,0x1031F},
{0x1032D,0x10340},{0x10342,0x10349},{0x10350,0x10375},{0x10380,0x1039D},{0x103A0,0x103C3},{0x103C8,0x103CF},
{0x10400,0x1049D},{0x104B0,0x104D3},{0x104D8,0x104FB},{0x10500,0x10527},{0x10530,0x10563},{0x10570,0x1057A},
{0x1057C,0x1058A},{0x1058C,0x10592},{0x10594,0x10595},{0x10597,0x105A1},{0x105A3,0x105B1},{0x105B3,0x105B9},
{0x105BB,0x105BC},{0x10600,0x10736},{0x10740,0x10755},{0x10760,0x10767},{0x10780,0x10785},{0x10787,0x107B0},
{0x107B2,0x107BA},{0x10800,0x10805},{0x10808,0x10808},{0x1080A,0x10835},{0x10837,0x10838},{0x1083C,0x1083C},
{0x1083F,0x10855},{0x10860,0x10876},{0x10880,0x1089E},{0x108E0,0x108F2},{0x108F4,0x108F5},{0x10900,0x10915},
{0x10920,0x10939},{0x10980,0x109B7},{0x109BE,0x109BF},{0x10A00,0x10A00},{0x10A10,0x10A13},{0x10A15,0x10A17},
{0x10A19,0x10A35},{0x10A60,0x10A7C},{0x10A80,0x10A9C},{0x10AC0,0x10AC7},{0x10AC9,0x10AE4},{0x10B00,0x10B35},
{0x10B40,0x10B55},{0x10B60,0x10B72},{0x10B80,0x10B91},{0x10C00,0x10C48},{0x10C80,0x10CB2},{0x10CC0,0x10CF2},
{0x10D00,0x10D23},{0x10E80,0x10EA9},{0x10EB0,0x10EB1},{0x10F00,0x10F1C},{0x10F27,0x10F27},{0x10F30,0x10F45},
{0x10F70,0x10F81},{0x10FB0,0x10FC4},{0x10FE0,0x10FF6},{0x11003,0x11037},{0x11071,0x11072},{0x11075,0x11075},
{0x11083,0x110AF},{0x110D0,0x110E8},{0x11103,0x11126},{0x11144,0x11144},{0x11147,0x11147},{0x11150,0x11172},
{0x11176,0x11176},{0x11183,0x111B2},{0x111C1,0x111C4},{0x111DA,0x111DA},{0x111DC,0x111DC},{0x11200,0x11211},
{0x11213,0x1122B},{0x11280,0x11286},{0x11288,0x11288},{0x1128A,0x1128D},{0x1128F,0x1129D},{0x1129F,0x112A8},
{0x112B0,0x112DE},{0x11305,0x1130C},{0x1130F,0x11310},{0x11313,0x11328},{0x1132A,0x11330},{0x11332,0x11333},
{0x11335,0x11339},{0x1133D,0x1133D},{0x11350,0x11350},{0x1135D,0x11361},{0x11400,0x11434},{0x11447,0x1144A},
{0x1145F,0x11461},{0x11480,0x114AF},{0x114C4,0x114C5},{0x114C7,0x114C7},{0x11580,0x115AE},{0x115D8,0x115DB},
{0x11600,0x1162F},{0x11644,0x11644},{0x11680,0x116AA},{0x116B8,0x116B8},{0x11700,0x1171A},{0x11740,0x11746},
{0x11800,0x1182B},{0x118A0,0x118DF},{0x118FF,0x11906},{0x11909,0x11909},{0x1190C,0x11913},{0x11915,0x11916},
{0x11918,0x1192F},{0x1193F,0x1193F},{0x11941,0x11941},{0x119A0,0x119A7},{0x119AA,0x119D0},{0x119E1,0x119E1},
{0x119E3,0x119E3},{0x11A00,0x11A00},{0x11A0B,0x11A32},{0x11A3A,0x11A3A},{0x11A50,0x11A50},{0x11A5C,0x11A89},
{0x11A9D,0x11A9D},{0x11AB0,0x11AF8},{0x11C00,0x11C08},{0x11C0A,0x11C2E},{0x11C40,0x11C40},{0x11C72,0x11C8F},
{0x11D00,0x11D06},{0x11D08,0x11D09},{0x11D0B,0x11D30},{0x11D46,0x11D46},{0x11D60,0x11D65},{0x11D67,0x11D68},
{0x11D6A,0x11D89},{0x11D98,0x11D98},{0x11EE0,0x11EF2},{0x11FB0,0x11FB0},{0x12000,0x12399},{0x12480,0x12543},
{0x12F90,0x12FF0},{0x13000,0x1342E},{0x14400,0x14646},{0x16800,0x16A38},{0x16A40,0x16A5E},{0x16A70,0x16ABE},
{0x16AD0,0x16AED},{0x16B00,0x16B2F},{0x16B40,0x16B43},{0x16B63,0x16B77},{0x16B7D,0x16B8F},{0x16E40,0x16E7F},
{0x16F00,0x16F4A},{0x16F50,0x16F50},{0x16F93,0x16F9F},{0x16FE0,0x16FE1},{0x16FE3,0x16FE3},{0x17000,0x187F7},
{0x18800,0x18CD5},{0x18D00,0x18D08},{0x1AFF0,0x1AFF3},{0x1AFF5,0x1AFFB},{0x1AFFD,0x1AFFE},{0x1B000,0x1B122},
{0x1B150,0x1B152},{0x1B164,0x1B167},{0x1B170,0x1B2FB},{0x1BC00,0x1BC6A},{0x1BC70,0x1BC7C},{0x1BC80,0x1BC88},
{0x1BC90,0x1BC99},{0x1D400,0x1D454},{0x1D456,0x1D49C},{0x1D49E,0x1D49F},{0x1D4A2,0x1D4A2},{0x1D4A5,0x1D4A6},
{0x1D4A9,0x1D4AC},{0x1D4AE,0x1D4B9},{0x1D4BB,0x1D4BB},{0x1D4BD,0x1D4C3},{0x1D4C5,0x1D505},{0x1D507,0x1D50A},
{0x1D50D,0x1D514},{0x1D516,0x1D51C},{0x1D51E,0x1D539},{0x1D53B,0x1D53E},{0x1D540,0x1D544},{0x1D546,0x1D546},
{0x1D54A,0x1D550},{0x1D552,0x1D6A5},{0x1D6A8,0x1D6C0},{0x1D6C2,0x1D6DA},{0x1D6DC,0x1D6FA},{0x1D6FC,0x1D714},
{0x1D716,0x1D734},{0x1D736,0x1D74E},{0x1D750,0x1D76E},{0x1D770,0x1D788},{0x1D78A,0x1D7A8},{0x1D7AA,0x1D7C2},
{0x1D7C4,0x1D7CB},{0x1DF00,0x1DF1E},{0x1E100,0x1E12C},{0x1E137,0x1E13D},{0x1E14E,0x1E14E},{0x1E290,0x1E2AD},
{0x1E2C0,0x1E2EB},{0x1E7E0,0x1E7E6},{0x1E7E8,0x1E7EB},{0x1E7ED,0x1E7EE},{0x1E7F0,0x1E7FE},{0x1E800,0x1E8C4},
{0x1E900,0x1E943},{0x1E94B,0x1E94B},{0x1EE00,0x1EE03},{0x1EE05,0x1EE1F},{0x1EE21,0x1EE22},{0x1EE24,0x1EE24},
{0x1EE27,0x1EE27},{0x1EE29,0x1EE32},{0x1EE34,0x1EE37},{0x1EE39,0x1EE39},{0x1EE3B,0x1EE3B},{0x1EE42,0x1EE42},
{0x1EE47,0x1EE47},{0x1EE49,0x1EE49},{0x1EE4B,0x1EE4B},{0x1EE4D,0x1EE4F},{0x1EE51,0x1EE52},{0x1EE54,0x1EE54},
{0x1EE57,0x1EE57},{0x1EE59,0x1EE59},{0x1EE5B,0x1EE5B},{0x1EE5D,0x1EE5D},{0x1EE5F,0x1EE5F},{0x1EE61,0x1EE62},
{0x1EE64,0x1EE64},{0x1EE67,0x1EE6A},{0x1EE6C,0x1EE72},{0x1EE74,0x1EE77},{0x1EE79,0x1EE7C},{0x1EE7E,0x1EE7E},
{0x1EE80,0x1EE89},{0x1EE8B,0x1EE9B},{0x1EEA1,0x1EEA3},{0x1EEA5,0x1EEA9},{0x1EEAB,0x1EEBB},{0x20000,0x2A6DF},
{0x2A700,0x2B738},{0x2B740,0x2B81D},{0x2B820,0x2CEA1},{0x2CEB0,0x2EBE0},{0x2F800,0x2FA1D},{0x30000,0x3134A},
};
static const uint32_t uni_number[][2] = {
{0x30,0x39},{0xB2,0xB3},{0xB9,0xB9},{0xBC,0xBE},{0x660,0x669},{0x6F0,0x6F9},{0x7C0,0x7C9},{0x966,0x96F},{0x9E6,0x9EF},
{0x9F4,0x9F9},{0xA66,0xA6F},{0xAE6,0xAEF},{0xB66,0xB6F},{0xB72,0xB77},{0xBE6,0xBF2},{0xC66,0xC6F},{0xC78,0xC7E},
{0xCE6,0xCEF},{0xD58,0xD5E},{0xD66,0xD78},{0xDE6,0xDEF},{0xE50,0xE59},{0xED0,0xED9},{0xF20,0xF33},{0x1040,0x1049},
{0x1090,0x1099},{0x1369,0x137C},{0x16EE,0x16F0},{0x17E0,0x17E9},{0x17F0,0x17F9},{0x1810,0x1819},{0x1946,0x194F},
{0x19D0,0x19DA},{0x1A80,0x1A89},{0x1A90,0x1A99},{0x1B50,0x1B59},{0x1BB0,0x1BB9},{0x1C40,0x1C49},{0x1C50,0x1C59},
{0x2070,0x2070},{0x2074,0x2079},{0x2080,0x2089},{0x2150,0x2182},{0x2185,0x2189},{0x2460,0x249B},{0x24EA,0x24FF},
{0x2776,0x2793},{0x2CFD,0x2CFD},{0x3007,0x3007},{0x3021,0x3029},{0x3038,0x303A},{0x3192,0x3195},{0x3220,0x3229},
{0x3248,0x324F},{0x3251,0x325F},{0x3280,0x3289},{0x32B1,0x32BF},{0xA620,0xA629},{0xA6E6,0xA6EF},{0xA830,0xA835},
{0xA8D0,0xA8D9},{0xA900,0xA909},{0xA9D0,0xA9D9},{0xA9F0,0xA9F9},{0xAA50,0xAA59},{0xABF0,0xABF9},{0xFF10,0xFF19},
{0x10107,0x10133},{0x10140,0x10178},{0x1018A,0x1018B},{0x102E1,0x102FB},{0x10320,0x10323},{0x10341,0x10341},
{0x1034A,0x1034A},{0x103D1,0x103D5},{0x104A0,0x104A9},{0x10858,0x1085F},{0x10879,0x1087F},{0x108A7,0x108AF},
{0x108FB,0x108FF},{0x10916,0x1091B},{0x109BC,0x109BD},{0x109C0,0x109CF},{0x109D2,0x109FF},{0x10A40,0x10A48},
{0x10A7D,0x10A7E},{0x10A9D,0x10A9F},{0x10AEB,0x10AEF},{0x10B58,0x10B5F},{0x10B78,0x10B7F},{0x10BA9,0x10BAF},
{0x10CFA,0x10CFF},{0x10D30,0x10D39},{0x10E60,0x10E7E},{0x10F1D,0x10F26},{0x10F51,0x10F54},{0x10FC5,0x10FCB},
{0x11052,0x1106F},{0x110F0,0x110F9},{0x11136,0x1113F},{0x111D0,0x111D9},{0x111E1,0x111F4},{0x112F0,0x112F9},
{0x11450,0x11459},{0x114D0,0x114D9},{0x11650,0x11659},{0x116C0,0x116C9},{0x11730,0x1173B},{0x118E0,0x118F2},
{0x11950,0x11959},{0x11C50,0x11C6C},{0x11D50,0x11D59},{0x11DA0,0x11DA9},{0x11FC0,0x11FD4},{0x12400,0x1246E},
{0x16A60,0x16A69},{0x16AC0,0x16AC9},{0x16B50,0x16B59},{0x16B5B,0x16B61},{0x16E80,0x16E96},{0x1D2E0,0x1D2F3},
{0x1D360,0x1D378},{0x1D7CE,0x1D7FF},{0x1E140,0x1E149},{0x1E2F0,0x1E2F9},{0x1E8C7,0x1E8CF},{0x1E950,0x1E959},
{0x1EC71,0x1ECAB},{0x1ECAD,0x1ECAF},{0x1ECB1,0x1ECB4},{0x1ED01,0x1ED2D},{0x1ED2F,0x1ED3D},{0x1F100,0x1F10C},
{0x1FBF0,0x1FBF9},
};
#define n_uni_letter ((int)(sizeof uni_letter / sizeof uni_letter[0]))
#define n_uni_number ((int)(sizeof uni_number / sizeof uni_number[0]))

static int in_ranges(const uint32_t (*r)[2], int n, int cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if ((uint32_t)cp < r[mid][0]) hi = mid - 1;
        else if ((uint32_t)cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}
static int is_letter(int cp) { return cp >= 0 && (cp < 128 ? ((cp | 32) >= 'a' && (cp | 32) <= 'z') : in_ranges(uni_letter, n_uni_letter, cp)); }
static int is_number(int cp) { return cp >= 0 && (cp < 128 ? (cp >= '0' && cp <= '9') : in_ranges(uni_number, n_uni_number, cp)); }
static int is_space(int cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}
static int is_newline(int cp) { return cp == '\r' || cp == '\n'; }

/* The end (in characters) of the piece that starts at character i. cps holds code points. */
static int pretok_piece(const int *c, int n, int i, int max_digits) {
    /* contractions */
    if (c[i] == '\'' && i + 1 < n) {
        int a = c[i + 1] | 32, b = i + 2 < n ? c[i + 2] | 32 : 0;
        if (c[i + 1] < 128 && (a == 's' || a == 't' || a == 'm' || a == 'd')) return i + 2;
        if (c[i + 1] < 128 && b && c[i + 2] < 128 && ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))) return i + 3;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    int j = i;
    if (!is_letter(c[j]) && !is_newline(c[j]) && !is_number(c[j]) && j + 1 < n && is_letter(c[j + 1])) j++;
    if (is_letter(c[j])) { while (j < n && is_letter(c[j])) j++; return j; }
    /* \p{N}{1,3} */
    if (is_number(c[i])) { j = i; while (j < n && j - i < max_digits && is_number(c[j])) j++; return j; }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    j = i + (c[i] == ' ');
    if (j < n && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) {
        while (j < n && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) j++;
        while (j < n && is_newline(c[j])) j++;
        return j;
    }
    /* whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+ */
    int end = i;
    while (end < n && is_space(c[end])) end++;
    for (int k = end - 1; k >= i; k--) if (is_newline(c[k])) return k + 1;
    if (end == n || end - i == 1) return end;
    return end - 1;   /* leave one space to lead the next word */
}

/* GPT-2's regex: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ (over c[i..n)) */
static int pretok_gpt2(const int *c, int n, int i) {
    if (c[i] == '\'' && i + 1 < n) {
        int a = c[i + 1], b = i + 2 < n ? c[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
    int j = i + (c[i] == ' ');
    if (j < n) {
        int (*cls)(int) = is_letter(c[j]) ? is_letter : is_number(c[j]) ? is_number : NULL;
        if (cls) { while (j < n && cls(c[j])) j++; return j; }
        if (!is_space(c[j])) {
            while (j < n && !is_space(c[j]) && !is_letter(c[j]) && !is_number(c[j])) j++;
            return j;
        }
    }
    int end = i;
    while (end < n && is_space(c[end])) end++;
    return end == n || end - i == 1 ? end : end - 1;
}

/* The end of the pre-token that starts at character i. */
static int pretok_next(const tokenizer *t, const int *c, int n, int i) {
    switch (t->pre) {
    case W8A8_PRE_LLAMA3: return pretok_piece(c, n, i, 3);
    case W8A8_PRE_QWEN2: return pretok_piece(c, n, i, 1);
    case W8A8_PRE_GPT2: return pretok_gpt2(c, n, i);
    case W8A8_PRE_SMOLLM: {   /* digits one by one; GPT-2's regex within the text between them */
        if (is_number(c[i])) return i + 1;
        int e = i;
        while (e < n && !is_number(c[e])) e++;
        return pretok_gpt2(c, e, i);
    }
    default: return n;
    }
}

static int encode_byte_bpe(const tokenizer *t, const unsigned char *text, int n, ivec *out) {
    int *cps = malloc(sizeof(int) * (n + 1)), *at = malloc(sizeof(int) * (n + 1));
    sym *s = malloc(sizeof(sym) * (n + 1));
    int nc = 0, rc = W8A8_OK;
    if (!cps || !at || !s) { rc = fail(W8A8_ERR_NOMEM, "out of memory while tokenizing"); goto done; }
    for (int i = 0; i < n;) { at[nc] = i; i += utf8_next(text + i, n - i, &cps[nc]); nc++; }
    at[nc] = n;
    for (int i = 0; i < nc && rc == W8A8_OK;) {
        int j = pretok_next(t, cps, nc, i);
        const unsigned char *p = text + at[i];
        int len = at[j] - at[i], id;
        if ((t->flags & W8A8_TOKF_IGNORE_MERGES) && (id = vocab_find(t, p, len)) >= 0) ivec_push(out, id);
        else {
            int ns = 0;
            for (int k = 0; k < len; k++) {
                int b = t->byte_token[p[k]];
                s[ns++] = (sym){k, 1, b >= 0 ? b : 0, 0, 0, b < 0};
            }
            rc = bpe_merge(t, p, s, ns, out);
        }
        i = j;
    }
done:
    free(cps); free(at); free(s);
    return rc;
}

/* Splits out special tokens written in the text, then encodes the pieces between them. */
static int tokenize(const tokenizer *t, const char *text_, size_t n, ivec *out) {
    const unsigned char *text = (const unsigned char *)text_;
    unsigned char *buf = NULL;
    int rc = W8A8_OK;
    if (n > (size_t)INT_MAX / 8) return fail(W8A8_ERR_ARG, "text too long to tokenize (%zu bytes)", n);
    size_t seg = 0;
    for (size_t i = 0; i <= n && rc == W8A8_OK; ) {
        int hit = -1, hit_len = 0;
        if (i < n && t->special_first[text[i]])
            for (int k = 0; k < t->n_specials; k++) {
                int len;
                const unsigned char *s = tok_text(t, t->specials[k], &len);
                if (s[0] == text[i] && (size_t)len <= n - i && memcmp(s, text + i, len) == 0) { hit = t->specials[k]; hit_len = len; break; }
            }
        if (hit < 0 && i < n) { i++; continue; }
        if (i > seg) {   /* the text between specials */
            const unsigned char *p = text + seg;
            int len = (int)(i - seg);
            if (t->kind == W8A8_TOK_BYTE_BPE) rc = encode_byte_bpe(t, p, len, out);
            else {
                int pre = (t->flags & W8A8_TOKF_DUMMY_PREFIX) && seg == 0;
                unsigned char *nb = realloc(buf, len + 1);
                if (!nb) { rc = fail(W8A8_ERR_NOMEM, "out of memory while tokenizing"); break; }
                buf = nb;
                if (pre) buf[0] = ' ';
                memcpy(buf + pre, p, len);
                rc = encode_chars(t, buf, len + pre, out);
            }
        }
        if (hit >= 0) ivec_push(out, hit);
        i += hit >= 0 ? (size_t)hit_len : 1;
        seg = i;
    }
    free(buf);
    if (rc == W8A8_OK && out->oom) rc = fail(W8A8_ERR_NOMEM, "out of memory while tokenizing");
    return rc;
}

/* Streaming decode: hold back the bytes of an unfinished UTF-8 character. */
static int decode_stream(const tokenizer *t, w8a8_decoder *d, int id, char *out, int cap, int *outlen) {
    int len, n = 0;
    const unsigned char *s = tok_text(t, id, &len);
    *outlen = 0;
    if (t->types[id] == W8A8_TT_CONTROL || t->types[id] == W8A8_TT_SPECIAL || t->types[id] == W8A8_TT_UNUSED) return W8A8_OK;
    /* the space SentencePiece put before the text comes off the first printable token */
    if (!d->started && (t->flags & W8A8_TOKF_DUMMY_PREFIX) && len > 0 && s[0] == ' ') { s++; len--; }
    d->started = 1;
    if (d->n_pending < 0 || d->n_pending > 4) d->n_pending = 0;
    unsigned char tmp[4096 + 8];
    char res[3 * (4096 + 8)];
    int m = d->n_pending;
    memcpy(tmp, d->pending, m);
    memcpy(tmp + m, s, len);
    m += len;
    int i = 0;
    while (i < m) {
        int need = utf8_len(tmp[i]), cp;
        if (tmp[i] >= 0x80 && need > 1 && i + need > m) {   /* unfinished: wait, unless it is already broken */
            int ok = 1;
            for (int k = i + 1; k < m; k++) if ((tmp[k] & 0xc0) != 0x80) ok = 0;
            if (ok) break;
        }
        int l = utf8_next(tmp + i, m - i, &cp);
        if (cp < 0) { memcpy(res + n, "\xef\xbf\xbd", 3); n += 3; }   /* U+FFFD for a broken byte */
        else { memcpy(res + n, tmp + i, l); n += l; }
        i += l;
    }
    if (n > cap) return fail(W8A8_ERR_ARG, "w8a8_decode: the output buffer (%d bytes) is too small for %d bytes", cap, n);
    memcpy(out, res, n);
    d->n_pending = m - i;
    memcpy(d->pending, tmp + i, d->n_pending);
    *outlen = n;
    return W8A8_OK;
}

/* =========================================================================================================
 * 4. CPU reference
 *
 * Plain C, one pass of the transformer over a batch of (token, sequence, position) rows. In the f32 scheme
 * it is llama2.c's run.c operation for operation. In the quantized schemes it rounds where the GPU rounds:
 *   - a linear's input is quantized per row: fp8 s = absmax/448, q = e4m3(x / s); int8 s = absmax/127,
 *     q = rint(x / s) clamped to ±127; bf16 q = bf16(x) (s = 1). A static scale replaces absmax/448.
 *   - y = (acc * s_x) * s_w[out] (+ bias), acc the exact dot product of the quantized values;
 *   - outputs that are not added to the residual (q, k, v, gate, up) are stored in bf16, as is the KV cache;
 *   - the residual stream, norms, RoPE, softmax and attention are fp32; the LM head reads bf16(x).
 * ======================================================================================================= */
struct cpu_state {
    float *k_cache, *v_cache;   /* [layer][seq][pos][kv_dim] */
    float *out;                 /* logits of the rows asked for, [rows][vocab] */
    int out_cap;
};

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) ss += x[j] * x[j];
    ss /= n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) o[j] = w[j] * (ss * x[j]);
}

/* --- The GPU's order of operations, which the quantized schemes' reference follows exactly ---
 * A sum over a block of `threads` threads: thread t adds elements t, t + threads, ... in turn; the 32 lanes of
 * a warp are combined by an xor butterfly (offsets 16, 8, 4, 2, 1: every lane ends with the same bits); the
 * warps' totals, padded with zeros to 32, are combined the same way. */
static float butterfly32(float *p) {
    for (int o = 16; o > 0; o >>= 1) {
        float q[32];
        for (int i = 0; i < 32; i++) q[i] = p[i] + p[i ^ o];
        memcpy(p, q, sizeof q);
    }
    return p[0];
}
static float block_sum_sq(const float *x, int n, int threads) {
    float part[1024], warps[32] = {0};
    for (int t = 0; t < threads; t++) {
        part[t] = 0.0f;
        for (int j = t; j < n; j += threads) part[t] += x[j] * x[j];
    }
    for (int w = 0; w < threads / 32; w++) warps[w] = butterfly32(part + 32 * w);
    return butterfly32(warps);
}
/* a warp's dot product: lane l adds elements l, l + 32, ... */
static float warp_dot(const float *a, const float *b, int n) {
    float part[32];
    for (int l = 0; l < 32; l++) {
        part[l] = 0.0f;
        for (int j = l; j < n; j += 32) part[l] += a[j] * b[j];
    }
    return butterfly32(part);
}
#define NORM_THREADS 1024   /* the threads of rmsnorm_quant's summation order (kernels.cu.inc) */
#define NORM_BLOCK 256      /* its block, each thread playing four of them */

/* RMSNorm as the GPU sums it (the f32 scheme keeps llama2.c's order: rmsnorm above). */
static void rmsnorm_gpu_order(float *o, const float *x, const float *w, int n, float eps) {
    float inv = 1.0f / sqrtf(block_sum_sq(x, n, NORM_THREADS) / (float)n + eps);
    for (int j = 0; j < n; j++) o[j] = w[j] * (inv * x[j]);
}
static void head_norm_gpu_order(float *v, const float *w, int hd, float eps) {   /* q/k norm: one warp a head */
    float inv = 1.0f / sqrtf(warp_dot(v, v, hd) / (float)hd + eps);
    for (int j = 0; j < hd; j++) v[j] = w[j] * (inv * v[j]);
}

/* exp from +, *, rint and the exponent bits alone, so the CPU and the GPU get the same bits (the libraries'
 * expf differ by an ulp now and then). Cody-Waite reduction by ln 2, then a degree-6 polynomial; within 2 ulp. */
static float exp_w8a8(float x) {
    if (x != x) return x;
    if (x > 88.0f) return INFINITY;
    if (x < -87.0f) return 0.0f;
    float n = rintf(x * 1.44269504f);
    float r = x - n * 0.693145752f;   /* ln 2, high part: n * it is exact */
    r = r - n * 1.42860677e-6f;        /* ln 2, low part */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f + r * 0.00138888892f)))));
    return p * u2f((uint32_t)((int)n + 127) << 23);
}

/* Per-row activation quantization; q holds the quantized values as floats, s the row scales. */
static void quantize_rows(uint32_t scheme, float in_scale, const float *x, int rows, int cols, float *q, float *s) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *qr = q + (size_t)r * cols;
        if (scheme == W8A8_F32 || scheme == W8A8_BF16) {
            for (int j = 0; j < cols; j++) qr[j] = scheme == W8A8_F32 ? xr[j] : round_bf16(xr[j]);
            s[r] = 1.0f;
            continue;
        }
        float qmax = scheme == W8A8_FP8 ? 448.0f : 127.0f, amax = 0.0f;
        for (int j = 0; j < cols; j++) amax = fmaxf(amax, fabsf(xr[j]));
        float sc = in_scale > 0 ? in_scale : amax > 0 ? amax / qmax : 1.0f;
        for (int j = 0; j < cols; j++)
            qr[j] = scheme == W8A8_FP8 ? g_fp8_lut[w8a8_fp8_from_float(xr[j] / sc)] : (float)w8a8_int8_from_float(xr[j] / sc);
        s[r] = sc;
    }
}

static void weight_row(const linear *l, int o, float *w) {
    size_t base = (size_t)o * l->cols;
    switch (l->dtype) {
    case W8A8_DT_F32: memcpy(w, (const float *)l->w + base, sizeof(float) * l->cols); break;
    case W8A8_DT_BF16: for (int j = 0; j < l->cols; j++) w[j] = w8a8_bf16_to_float(((const uint16_t *)l->w)[base + j]); break;
    case W8A8_DT_E4M3: for (int j = 0; j < l->cols; j++) w[j] = g_fp8_lut[((const uint8_t *)l->w)[base + j]]; break;
    case W8A8_DT_I8: for (int j = 0; j < l->cols; j++) w[j] = ((const int8_t *)l->w)[base + j]; break;
    }
}

/* y[rows][l->rows] = linear(x[rows][l->cols]). wbuf holds one decoded weight row. */
static void linear_forward(uint32_t scheme, const linear *l, const float *x, int rows, float *y, float *q, float *s, float *wbuf) {
    int K = l->cols, N = l->rows;
    quantize_rows(scheme, l->in_scale, x, rows, K, q, s);
    for (int o = 0; o < N; o++) {
        weight_row(l, o, wbuf);
        for (int r = 0; r < rows; r++) {
            const float *qr = q + (size_t)r * K;
            float v;
            if (scheme == W8A8_F32) {            /* llama2.c's matmul: fp32, in order */
                v = 0.0f;
                for (int j = 0; j < K; j++) v += wbuf[j] * qr[j];
            } else if (scheme == W8A8_INT8) {    /* int32 accumulation is exact */
                int64_t acc = 0;
                for (int j = 0; j < K; j++) acc += (int32_t)wbuf[j] * (int32_t)qr[j];
                v = (float)acc;
            } else {                             /* products of fp8/bf16 values are exact; sum them exactly */
                double acc = 0.0;
                for (int j = 0; j < K; j++) acc += (double)wbuf[j] * qr[j];
                v = (float)acc;
            }
            if (l->scale) v = v * s[r] * l->scale[o];
            if (l->bias) v += l->bias[o];
            y[(size_t)r * N + o] = v;
        }
    }
}

static void rope_rotate(float *v, int n_heads, int head_dim, const float *cs, const float *sn) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < head_dim / 2; i++) {
            float *p = v + h * head_dim + 2 * i, v0 = p[0], v1 = p[1];
            p[0] = v0 * cs[i] - v1 * sn[i];
            p[1] = v0 * sn[i] + v1 * cs[i];
        }
}

static float silu(float x) { return x * (1.0f / (1.0f + expf(-x))); }            /* llama2.c's */
static float silu_gpu_order(float x) { return x * (1.0f / (1.0f + exp_w8a8(-x))); }

/* Attention of one query head over positions 0..p, as the GPU computes it: in chunks of ATT_CHUNK positions,
 * each with its own max m of the scores s = (q . k summed over the dimensions in order) / sqrt(d) and
 * e = exp(s - m); in a chunk, l = sum e and o = sum e v are summed over G contiguous runs of S positions, each
 * in order (G = ATT_THREADS / (d / 2), S = ATT_CHUNK / G rounded up), and the runs' sums added in run order;
 * then the chunks are merged in order: M = max m, L = sum l exp(m - M), out = (sum o exp(m - M)) / L. */
#define ATT_CHUNK 256
#define ATT_THREADS 256
#define ATT_HEADS 4    /* query heads of one kv head an attention block takes */
/* ... at decode: fewer, for more blocks (each reads its chunk's keys and values once for the heads it takes).
 * Two: one wave of blocks on an H100 at 2048 positions (8B: 8 kv heads x 2 x 9 chunks = 144), where one head a
 * block made 288, two waves (4-layer 8B decode step, H100 run53: 0.880-0.903 ms with two, 0.922-0.941 one,
 * 0.913 four) */
#define ATT_DECODE_HEADS 2
#define ROPE_WARPS 4   /* heads a rope_kv block takes */
#define TC_ROWS 64     /* attention_tc: rows a block, its threads, the shortest run of a sequence's rows it takes, shared memory */
#define TC_THREADS 128
#define TC_MIN_RUN 16
#define TC_SMEM (2 * 2 * 64 * (2 * 128 + 16))
#define ATT_SCRATCH(ctx, hd) (ATT_CHUNK + ((size_t)(ctx) / ATT_CHUNK + 1) * ((hd) + 2) + 2 * ATT_THREADS + 2 * (size_t)(hd))
static void attention_head_gpu_order(float *out, const float *q, const float *kb, const float *vb, size_t stride, int p, int hd,
                                     float *scratch /* ATT_SCRATCH(p + 1, hd) floats */) {
    int n_chunks = p / ATT_CHUNK + 1, G = hd / 2 <= ATT_THREADS ? ATT_THREADS / (hd / 2) : 1, S = (ATT_CHUNK + G - 1) / G;
    float *e = scratch, *ms = e + ATT_CHUNK, *ls = ms + n_chunks, *os = ls + n_chunks, *og = os + (size_t)n_chunks * hd;
    for (int c = 0; c < n_chunks; c++) {
        int start = c * ATT_CHUNK, end = p + 1 < start + ATT_CHUNK ? p + 1 : start + ATT_CHUNK, n = end - start;
        float m = -INFINITY, l = 0.0f, *o = os + (size_t)c * hd;
        for (int t = 0; t < n; t++) {
            const float *k = kb + (size_t)(start + t) * stride;
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += q[d] * k[d];
            e[t] = s / sqrtf((float)hd);
            m = fmaxf(m, e[t]);
        }
        for (int t = 0; t < n; t++) e[t] = exp_w8a8(e[t] - m);
        for (int g = 0; g < G; g++) {
            float lg = 0.0f;
            memset(og, 0, sizeof(float) * hd);
            for (int t = g * S; t < n && t < (g + 1) * S; t++) {
                const float *v = vb + (size_t)(start + t) * stride;
                lg += e[t];
                for (int d = 0; d < hd; d++) og[d] += e[t] * v[d];
            }
            if (g == 0) { l = lg; memcpy(o, og, sizeof(float) * hd); }
            else { l += lg; for (int d = 0; d < hd; d++) o[d] += og[d]; }
        }
        ms[c] = m; ls[c] = l;
    }
    float M = -INFINITY, L = 0.0f;
    for (int c = 0; c < n_chunks; c++) M = fmaxf(M, ms[c]);
    for (int c = 0; c < n_chunks; c++) L += ls[c] * exp_w8a8(ms[c] - M);
    for (int d = 0; d < hd; d++) {
        float acc = 0.0f;
        for (int c = 0; c < n_chunks; c++) acc += os[(size_t)c * hd + d] * exp_w8a8(ms[c] - M);
        out[d] = acc / L;
    }
}

/* Calibration: where each statistic of layer l starts (see w8a8_calib_stats in w8a8.h). */
size_t w8a8_calib_offset(const w8a8_config *c, uint32_t l, int what) {
    size_t D = c->dim, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t len[W8A8_CAL_PARTS] = {D, qd, D, c->hidden_dim, kvd, kvd}, off = 0, per_layer = 0;
    for (int i = 0; i < W8A8_CAL_PARTS; i++) { if (i < what) off += len[i]; per_layer += len[i]; }
    return l * per_layer + off;
}
static void calib_absmax(float *dst, const float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) dst[j] = fmaxf(dst[j], fabsf(x[(size_t)r * cols + j]));
}

/* The fp8 KV cache as the CPU holds it: the value the GPU reads back, e4m3(x / s) * s. */
static float kv_round(float x, float s) { return s > 0 ? g_fp8_lut[w8a8_fp8_from_float(x / s)] * s : x; }

static int cpu_init(w8a8_model *m) {
    const w8a8_config *c = &m->cfg;
    size_t kv = (size_t)c->n_layers * m->max_batch * m->max_ctx * c->n_kv_heads * c->head_dim;
    m->cpu = calloc(1, sizeof(cpu_state));
    if (!m->cpu) return fail(W8A8_ERR_NOMEM, "out of memory");
    m->cpu->k_cache = calloc(kv, sizeof(float));
    m->cpu->v_cache = calloc(kv, sizeof(float));
    if (!m->cpu->k_cache || !m->cpu->v_cache)
        return fail(W8A8_ERR_NOMEM, "out of memory for the KV cache (%.1f MiB); lower max_context or max_batch",
                    2.0 * kv * sizeof(float) / 1048576.0);
    return W8A8_OK;
}

static void cpu_free(cpu_state *s) {
    if (!s) return;
    free(s->k_cache); free(s->v_cache); free(s->out); free(s);
}

/* One forward pass over n rows; the logits of rows with want[i] != 0 go to cpu->out in row order. */
static int cpu_forward(w8a8_model *m, int n, const int *tok, const int *seq, const int *pos, const unsigned char *want) {
    const w8a8_config *c = &m->cfg;
    cpu_state *cs = m->cpu;
    uint32_t sch = c->scheme;
    int D = c->dim, H = c->hidden_dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd, qkvd = qd + 2 * kvd, half = hd / 2, r16 = sch != W8A8_F32;
    void (*norm)(float *, const float *, const float *, int, float) = r16 ? rmsnorm_gpu_order : rmsnorm;
    int widest = qkvd > 2 * H ? qkvd : 2 * H;
    if (widest < D) widest = D;
    if (widest < (int)c->vocab_size) widest = c->vocab_size;
    int n_out = 0;
    for (int i = 0; i < n; i++) n_out += want[i] != 0;
    if (n_out > cs->out_cap) {
        float *o = realloc(cs->out, (size_t)n_out * c->vocab_size * sizeof(float));
        if (!o) return fail(W8A8_ERR_NOMEM, "out of memory for logits");
        cs->out = o; cs->out_cap = n_out;
    }
    int kmax = D > qd ? D : qd;
    if (kmax < H) kmax = H;
    float *x = malloc(sizeof(float) * n * D), *xb = malloc(sizeof(float) * n * kmax),
          *q = malloc(sizeof(float) * n * kmax), *s = malloc(sizeof(float) * n),
          *y = malloc(sizeof(float) * (size_t)n * widest),
          *att = malloc(sizeof(float) * (m->max_ctx + ATT_SCRATCH(m->max_ctx, hd))),
          *wbuf = malloc(sizeof(float) * kmax);
    if (!x || !xb || !q || !s || !y || !att || !wbuf) {
        free(x); free(xb); free(q); free(s); free(y); free(att); free(wbuf);
        return fail(W8A8_ERR_NOMEM, "out of memory for activations (%d rows)", n);
    }
    for (int r = 0; r < n; r++) {   /* embedding lookup */
        size_t base = (size_t)tok[r] * D;
        for (int j = 0; j < D; j++)
            x[r * D + j] = m->embd_dtype == W8A8_DT_F32 ? ((const float *)m->tok_embd)[base + j]
                                                         : w8a8_bf16_to_float(((const uint16_t *)m->tok_embd)[base + j]);
    }
    size_t seq_stride = (size_t)m->max_ctx * kvd, layer_stride = (size_t)m->max_batch * seq_stride;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const layer *L = &m->layers[l];
        float *kc = cs->k_cache + l * layer_stride, *vc = cs->v_cache + l * layer_stride;
        /* attention: norm, q k v, RoPE, cache, softmax(q k / sqrt(d)) v, output projection */
        for (int r = 0; r < n; r++) norm(xb + r * D, x + r * D, L->attn_norm, D, c->norm_eps);
        if (m->calib) calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_QKV), xb, n, D);
        linear_forward(sch, &L->qkv, xb, n, y, q, s, wbuf);
        for (int r = 0; r < n; r++) {
            float *qkv = y + (size_t)r * qkvd, *qh = qkv, *kh = qkv + qd, *vh = qkv + qd + kvd;
            if (r16) for (int j = 0; j < qkvd; j++) qkv[j] = round_bf16(qkv[j]);
            if (L->q_norm) {
                for (int h = 0; h < nh; h++) {
                    if (r16) head_norm_gpu_order(qh + h * hd, L->q_norm, hd, c->norm_eps);
                    else rmsnorm(qh + h * hd, qh + h * hd, L->q_norm, hd, c->norm_eps);
                }
                for (int h = 0; h < nkv; h++) {
                    if (r16) head_norm_gpu_order(kh + h * hd, L->k_norm, hd, c->norm_eps);
                    else rmsnorm(kh + h * hd, kh + h * hd, L->k_norm, hd, c->norm_eps);
                }
            }
            const float *rc = m->rope_cos + (size_t)pos[r] * half, *rs = m->rope_sin + (size_t)pos[r] * half;
            rope_rotate(qh, nh, hd, rc, rs);
            rope_rotate(kh, nkv, hd, rc, rs);
            if (r16) for (int j = 0; j < qd + kvd; j++) qkv[j] = round_bf16(qkv[j]);
            if (m->calib) {
                calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_K), kh, 1, kvd);
                calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_V), vh, 1, kvd);
            }
            float *kdst = kc + seq[r] * seq_stride + (size_t)pos[r] * kvd, *vdst = vc + seq[r] * seq_stride + (size_t)pos[r] * kvd;
            for (int j = 0; j < kvd; j++) { kdst[j] = kv_round(kh[j], L->k_scale); vdst[j] = kv_round(vh[j], L->v_scale); }
        }
        for (int r = 0; r < n; r++) {
            const float *qkv = y + (size_t)r * qkvd;
            float *o = xb + (size_t)r * qd;
            for (int h = 0; h < nh; h++) {
                const float *qh = qkv + h * hd;
                int kvh = h / (nh / nkv);
                const float *kb = kc + seq[r] * seq_stride + kvh * hd, *vb = vc + seq[r] * seq_stride + kvh * hd;
                if (r16) { attention_head_gpu_order(o + h * hd, qh, kb, vb, kvd, pos[r], hd, att); continue; }
                for (int t = 0; t <= pos[r]; t++) {   /* llama2.c's attention */
                    float sc = 0.0f;
                    for (int i = 0; i < hd; i++) sc += qh[i] * kb[(size_t)t * kvd + i];
                    att[t] = sc / sqrtf((float)hd);
                }
                float mx = att[0], sum = 0.0f;
                for (int t = 1; t <= pos[r]; t++) mx = fmaxf(mx, att[t]);
                for (int t = 0; t <= pos[r]; t++) { att[t] = expf(att[t] - mx); sum += att[t]; }
                for (int t = 0; t <= pos[r]; t++) att[t] /= sum;
                float *oh = o + h * hd;
                memset(oh, 0, sizeof(float) * hd);
                for (int t = 0; t <= pos[r]; t++)
                    for (int i = 0; i < hd; i++) oh[i] += att[t] * vb[(size_t)t * kvd + i];
            }
        }
        if (m->calib) calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_O), xb, n, qd);
        linear_forward(sch, &L->o, xb, n, y, q, s, wbuf);
        for (int i = 0; i < n * D; i++) x[i] += y[i];
        /* feed-forward: norm, gate and up, silu(gate) * up, down */
        for (int r = 0; r < n; r++) norm(xb + r * D, x + r * D, L->ffn_norm, D, c->norm_eps);
        if (m->calib) calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_W13), xb, n, D);
        linear_forward(sch, &L->w13, xb, n, y, q, s, wbuf);
        for (int r = 0; r < n; r++) {
            float *g = y + (size_t)r * 2 * H, *u = g + H, *hb = xb + (size_t)r * H;
            for (int j = 0; j < H; j++) {
                float gv = r16 ? round_bf16(g[j]) : g[j], uv = r16 ? round_bf16(u[j]) : u[j];
                hb[j] = r16 ? silu_gpu_order(gv) * uv : silu(gv) * uv;
            }
        }
        if (m->calib) calib_absmax(m->calib + w8a8_calib_offset(c, l, W8A8_CAL_W2), xb, n, H);
        linear_forward(sch, &L->w2, xb, n, y, q, s, wbuf);
        for (int i = 0; i < n * D; i++) x[i] += y[i];
    }
    /* final norm and LM head, only for the rows asked for */
    int k = 0;
    for (int r = 0; r < n; r++) {
        if (!want[r]) continue;
        norm(xb, x + r * D, m->out_norm, D, c->norm_eps);
        linear_forward(r16 ? W8A8_BF16 : W8A8_F32, &m->lm_head, xb, 1, cs->out + (size_t)k * c->vocab_size, q, s, wbuf);
        k++;
    }
    free(x); free(xb); free(q); free(s); free(y); free(att); free(wbuf);
    return W8A8_OK;
}

/* =========================================================================================================
 * 5. GPU backend: the CUDA driver API and NVRTC, both opened with dlopen (no CUDA headers or libraries are
 *    needed to build), and kernels.cu.inc compiled at start-up for the GPU found.
 * ======================================================================================================= */
#define FEED_CHUNK 256      /* rows per forward pass when every row's logits are kept (w8a8_score), and on the CPU */
#define PREFILL_ROWS 2048   /* rows of prompts per forward pass on the GPU (big GEMMs), fewer if part_o would pass 512 MiB */
#define COMBINE_THREADS 512 /* attention_combine_quant's block */

#define W8A8_KERNELS(...) #__VA_ARGS__
static const char kernel_source[] =
#include "kernels.cu.inc"
    ;

/* --- NVRTC --- */
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
static struct {
    void *lib;
    const char *(*GetErrorString)(nvrtcResult);
    nvrtcResult (*Version)(int *, int *);
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *);
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *);
} nvrtc;

static void *dlopen_first(const char *const *names, char *tried, size_t n) {
    tried[0] = 0;
    for (int i = 0; names[i]; i++) {
        if (!names[i][0]) continue;
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        snprintf(tried + strlen(tried), n - strlen(tried), "%s%s", tried[0] ? ", " : "", names[i]);
    }
    return NULL;
}

static int nvrtc_load(void) {
    if (nvrtc.lib) return W8A8_OK;
    const char *env = getenv("W8A8_NVRTC");
    if (env && env[0]) {   /* when named, only that one */
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h) return fail(W8A8_ERR_GPU, "NVRTC not found: W8A8_NVRTC=%s cannot be opened (%s)", env, dlerror());
        dlclose(h);
    }
    const char *names[] = {env ? env : "", "libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so",
                           "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12",
                           "/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so", "/usr/lib/x86_64-linux-gnu/libnvrtc.so", NULL};
    char tried[1024];
    void *h = dlopen_first(names, tried, sizeof tried);
    if (!h) return fail(W8A8_ERR_GPU, "NVRTC not found (tried %s); install the CUDA toolkit's NVRTC or set W8A8_NVRTC", tried);
#define NV(f) if (!(*(void **)&nvrtc.f = dlsym(h, "nvrtc" #f))) { dlclose(h); return fail(W8A8_ERR_GPU, "NVRTC lacks nvrtc" #f); }
    NV(GetErrorString) NV(Version) NV(CreateProgram) NV(CompileProgram) NV(GetProgramLogSize) NV(GetProgramLog)
    NV(GetCUBINSize) NV(GetCUBIN) NV(DestroyProgram)
#undef NV
    nvrtc.lib = h;
    return W8A8_OK;
}

/* The kernel source: the embedded string, or (for kernel work) the file named by W8A8_KERNELS_FILE with the
 * W8A8_KERNELS( ... ) wrapper taken off and its line numbers kept. */
static char *kernel_text(void) {
    const char *path = getenv("W8A8_KERNELS_FILE");
    if (!path || !path[0]) return strdup(kernel_source);
    size_t n;
    char *b = read_whole(path, &n), *o = b ? malloc(n + 64) : NULL;
    if (!b || !o) { free(b); free(o); fail(W8A8_ERR_IO, "W8A8_KERNELS_FILE: cannot read '%s'", path); return NULL; }
    char *start = strstr(b, "\nW8A8_KERNELS("), *end = strrchr(b, ')');   /* the wrapper starts a line */
    if (start) start++;
    if (!start || !end || end < start) { free(b); free(o); fail(W8A8_ERR_GPU, "'%s' has no W8A8_KERNELS( ... ) wrapper", path); return NULL; }
    int line = 1;
    for (char *p = b; p < start; p++) line += *p == '\n';
    *end = 0;
    snprintf(o, n + 64, "#line %d\n%s", line, start + strlen("W8A8_KERNELS("));
    free(b);
    return o;
}

/* no FMA contraction: elementwise kernels then round exactly as the CPU reference does; ptxas on all cores
 * (half the cold start on the H100 machine: 7.5-8.8 s -> 3.7-4.5 s; NVRTC before 12.1 lacks it and compiles
 * without) */
#define KERNEL_OPT_STD "-std=c++17"
#define KERNEL_OPT_FMAD "--fmad=false"
#define KERNEL_OPT_SPLIT "--split-compile=0"

/* The kernels, in the order of gpu_state's f[] */
enum { F_EMBED, F_RMSNORM, F_SILU, F_GEMM_BF16, F_GEMM_E4M3, F_GEMM_S8, F_GEMV_BF16, F_GEMV_E4M3, F_GEMV_S8,
       F_GEMM90_BF16, F_GEMM90_BF16_WIDE, F_GEMM90_E4M3, F_GEMM90_E4M3_WIDE /* 192 columns */, F_GEMM90_S8, F_GEMM90_S8_WIDE,
       F_GEMM90_BF16_SWAP, F_GEMM90_E4M3_SWAP, F_GEMM90_S8_SWAP /* in F_GEMM_ order */, F_ROPE, F_ATTN, F_ATTN_TC, F_COMBINE_QUANT,
       F_ARGMAX, F_NLL, F_ABSMAX, F_COUNT };
static const char *kernel_names[F_COUNT] = {"embed", "rmsnorm_quant", "silu_mul_quant", "gemm_bf16", "gemm_e4m3",
                                            "gemm_s8", "gemv_bf16", "gemv_e4m3", "gemv_s8", "gemm90_bf16_128", "gemm90_bf16_256",
                                            "gemm90_e4m3_128", "gemm90_e4m3_192", "gemm90_s8_128", "gemm90_s8_256", "gemm90_bf16_swap",
                                            "gemm90_e4m3_swap", "gemm90_s8_swap", "rope_kv", "attention",
                                            "attention_tc", "attention_combine_quant", "argmax_rows", "row_nll", "col_absmax"};

/* Cold start: NVRTC compiles the kernels as KERNEL_PARTS programs at once, each on a thread of its own. A
 * program gives bodies only to its own part's kernels (W8A8_BODY_<name> is 1 there and 0 in the others, where
 * the entry point stays empty), so a first start waits for the dearest part rather than for all of them. The
 * parts are balanced by each kernel's own compile time for an FP8, INT8 or BF16 model: the Hopper GEMMs over
 * three parts, attention, the gemvs with the mma.sync GEMMs, the row-wise stages. On the H100 machine (16
 * cores) the FP8 8B model's kernels took 1.9-2.0 s this way against 3.0-3.5 s as one program (3 parts: 2.0-2.2
 * s; a part a kernel: 3.1-3.3 s, each program's fixed cost and the cores shared); on 2 cores about the same
 * either way (2.6-2.8 s). */
#define KERNEL_PARTS 6
static const unsigned char kernel_part[F_COUNT] = {
    [F_GEMM90_BF16] = 0, [F_GEMM90_BF16_SWAP] = 0, [F_GEMM90_E4M3_SWAP] = 0, [F_GEMM90_S8_SWAP] = 0,
    [F_GEMM90_E4M3] = 1, [F_GEMM90_S8] = 1, [F_GEMM90_BF16_WIDE] = 1,
    [F_GEMM90_S8_WIDE] = 2, [F_GEMM90_E4M3_WIDE] = 2, [F_ROPE] = 2, [F_COMBINE_QUANT] = 2, [F_RMSNORM] = 2,
    [F_ATTN] = 3, [F_ATTN_TC] = 3,
    [F_GEMV_BF16] = 4, [F_GEMV_E4M3] = 4, [F_GEMV_S8] = 4, [F_GEMM_BF16] = 4, [F_GEMM_E4M3] = 4, [F_GEMM_S8] = 4,
    [F_EMBED] = 5, [F_SILU] = 5, [F_ARGMAX] = 5, [F_NLL] = 5, [F_ABSMAX] = 5};

/* W8A8_BUILD in kernels.cu.inc: which optional kernels get a body (a model needs one activation type's GEMMs,
 * one KV cache type's attention and attention_tc for its head dim; the others are half of NVRTC's time).
 * BUILD_BF16: the bf16 Hopper GEMMs past the plain 128-column one, which an FP8 or INT8 model's LM head does
 * without (~0.15 s of NVRTC each). */
enum { BUILD_E4M3 = 1, BUILD_S8 = 2, BUILD_KV_BF16 = 4, BUILD_KV_E4M3 = 8, BUILD_TC_64 = 16, BUILD_TC_128 = 32, BUILD_ATT_ODD = 64,
       BUILD_BF16 = 128, BUILD_ALL = 255 };

/* Compiles the kernels for one target ("sm_90a", "sm_89", "sm_80"): the bodies of one part's kernels, or of
 * all (part -1). The error holds NVRTC's log on failure. */
static int nvrtc_compile(const char *target, int build, int part, char **cubin, size_t *cubin_n) {
    int rc = nvrtc_load();
    if (rc) return rc;
    char *src = kernel_text();
    if (!src) return W8A8_ERR_GPU;
    char arch[64], sm[32], bits[32], body[F_COUNT][64];
    snprintf(arch, sizeof arch, "--gpu-architecture=%s", target);
    snprintf(sm, sizeof sm, "-DW8A8_SM=%d", atoi(target + 3));
    snprintf(bits, sizeof bits, "-DW8A8_BUILD=%d", build);
    const char *opts[6 + F_COUNT] = {arch, sm, bits, KERNEL_OPT_STD, KERNEL_OPT_FMAD};
    int n_opts = 5;
    for (int i = 0; i < F_COUNT; i++) {
        snprintf(body[i], sizeof body[i], "-DW8A8_BODY_%s=%d", kernel_names[i], part < 0 || kernel_part[i] == part);
        opts[n_opts++] = body[i];
    }
    opts[n_opts++] = KERNEL_OPT_SPLIT;   /* the last: dropped where NVRTC lacks it */
    nvrtcProgram prog;
    nvrtcResult r = nvrtc.CreateProgram(&prog, src, "kernels.cu.inc", 0, NULL, NULL);
    if (r) { free(src); return fail(W8A8_ERR_GPU, "nvrtcCreateProgram: %s", nvrtc.GetErrorString(r)); }
    r = nvrtc.CompileProgram(prog, n_opts, opts);
    if (r == 5 /* NVRTC_ERROR_INVALID_OPTION: an NVRTC without --split-compile */) {
        nvrtc.DestroyProgram(&prog);
        n_opts--;   /* KERNEL_OPT_SPLIT, the last */
        r = nvrtc.CreateProgram(&prog, src, "kernels.cu.inc", 0, NULL, NULL);
        if (r) { free(src); return fail(W8A8_ERR_GPU, "nvrtcCreateProgram: %s", nvrtc.GetErrorString(r)); }
        r = nvrtc.CompileProgram(prog, n_opts, opts);
    }
    free(src);
    if (r) {
        size_t ln = 0;
        nvrtc.GetProgramLogSize(prog, &ln);
        char *log = malloc(ln + 1);
        if (log) { nvrtc.GetProgramLog(prog, log); log[ln] = 0; }
        rc = fail(W8A8_ERR_GPU, "compiling kernels.cu.inc for %s failed: %s\n%.900s", target, nvrtc.GetErrorString(r), log ? log : "");
        free(log);
        nvrtc.DestroyProgram(&prog);
        return rc;
    }
    size_t n = 0;
    nvrtc.GetCUBINSize(prog, &n);
    *cubin = malloc(n ? n : 1);
    if (!*cubin) { nvrtc.DestroyProgram(&prog); return fail(W8A8_ERR_NOMEM, "out of memory"); }
    nvrtc.GetCUBIN(prog, *cubin);
    *cubin_n = n;
    nvrtc.DestroyProgram(&prog);
    return W8A8_OK;
}

int w8a8_compile_check(const char *target, size_t *cubin_bytes) {
    if (!target || strncmp(target, "sm_", 3)) return fail(W8A8_ERR_ARG, "w8a8_compile_check: target must look like sm_90a");
    char *cubin = NULL;
    size_t n = 0;
    int rc = nvrtc_compile(target, BUILD_ALL, -1, &cubin, &n);
    free(cubin);
    if (!rc && cubin_bytes) *cubin_bytes = n;
    return rc;
}

/* --- the CUDA driver API --- */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;
typedef struct CUgraph_st *CUgraph;
typedef struct CUevent_st *CUevent;
typedef struct CUgraphExec_st *CUgraphExec;
/* cuLaunchKernelEx's configuration, as cuda.h lays it out; the attributes used: "programmatic stream
 * serialization" (id 6: the kernel may start before the previous one in the stream has finished) and the
 * cluster dimension (id 4: x, y, z as three unsigned ints at the value's start). */
typedef struct { int id; char pad[4]; union { char bytes[64]; int value; } v; } CUlaunchAttribute;
typedef struct {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned numAttrs;
} CUlaunchConfig;
enum { CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
static CUlaunchAttribute cluster_dim(int x) {   /* blocks in clusters of x along x */
    CUlaunchAttribute a = {.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION};
    memcpy(a.v.bytes, (unsigned[3]){(unsigned)x, 1, 1}, 3 * sizeof(unsigned));
    return a;
}
enum { CU_STREAM_CAPTURE_MODE_RELAXED = 2 };
enum { CU_ATTR_MULTIPROCESSOR_COUNT = 16, CU_ATTR_CC_MAJOR = 75, CU_ATTR_CC_MINOR = 76 };
enum { CU_FUNC_MAX_DYNAMIC_SHARED = 8 };
static struct {
    void *lib;
    int init_rc;
    CUresult (*Init)(unsigned);
    CUresult (*DriverGetVersion)(int *);
    CUresult (*GetErrorString)(CUresult, const char **);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetName)(char *, int, CUdevice);
    CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*MemAlloc)(CUdeviceptr *, size_t);
    CUresult (*MemFree)(CUdeviceptr);
    CUresult (*MemGetInfo)(size_t *, size_t *);
    CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*MemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*MemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
    CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **);
    CUresult (*LaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);   /* optional: programmatic dependent launch */
    /* CUDA graphs (optional: without them every launch is made one by one) */
    CUresult (*StreamBeginCapture)(CUstream, int);
    CUresult (*StreamEndCapture)(CUstream, CUgraph *);
    CUresult (*GraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*GraphLaunch)(CUgraphExec, CUstream);
    CUresult (*GraphExecDestroy)(CUgraphExec);
    CUresult (*GraphDestroy)(CUgraph);
    /* events (optional: tools/bench times kernels with them) */
    CUresult (*EventCreate)(CUevent *, unsigned);
    CUresult (*EventRecord)(CUevent, CUstream);
    CUresult (*EventSynchronize)(CUevent);
    CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
    CUresult (*EventDestroy)(CUevent);
    /* the Hopper GEMM (optional: without them every GEMM runs the mma.sync tiles) */
    CUresult (*FuncSetAttribute)(CUfunction, int, int);
    CUresult (*TensorMapEncodeTiled)(void *, int, unsigned, void *, const unsigned long long *, const unsigned long long *,
                                     const unsigned *, const unsigned *, int, int, int, int);
    CUresult (*OccupancyMaxActiveClusters)(int *, CUfunction, const CUlaunchConfig *);
} cu;

static const char *cu_str(CUresult r) {
    const char *s = NULL;
    if (cu.GetErrorString) cu.GetErrorString(r, &s);
    return s ? s : "unknown CUDA error";
}

/* Opens libcuda and initializes it once per process; the answer (and its message) is remembered. */
static int cuda_load(void) {
    static char why[512];
    if (cu.lib) return cu.init_rc ? fail(W8A8_ERR_GPU, "%s", why) : W8A8_OK;
    const char *names[] = {"libcuda.so.1", "libcuda.so", NULL};
    char tried[256];
    void *h = dlopen_first(names, tried, sizeof tried);
    if (!h) return fail(W8A8_ERR_GPU, "no CUDA driver (libcuda.so.1 not found): no NVIDIA GPU here, or its driver is not installed");
#define REQ(f, name) {(void **)&cu.f, name, 0}
#define OPT(f, name) {(void **)&cu.f, name, 1}
    struct { void **fn; const char *name; int optional; } syms[] = {
        REQ(Init, "cuInit"), REQ(DriverGetVersion, "cuDriverGetVersion"),
        REQ(GetErrorString, "cuGetErrorString"), REQ(DeviceGetCount, "cuDeviceGetCount"),
        REQ(DeviceGet, "cuDeviceGet"), REQ(DeviceGetName, "cuDeviceGetName"),
        REQ(DeviceGetAttribute, "cuDeviceGetAttribute"), REQ(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
        REQ(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"), REQ(CtxSetCurrent, "cuCtxSetCurrent"),
        REQ(ModuleLoadData, "cuModuleLoadData"), REQ(ModuleUnload, "cuModuleUnload"),
        REQ(ModuleGetFunction, "cuModuleGetFunction"), REQ(MemAlloc, "cuMemAlloc_v2"),
        REQ(MemFree, "cuMemFree_v2"), REQ(MemGetInfo, "cuMemGetInfo_v2"),
        REQ(MemcpyHtoD, "cuMemcpyHtoD_v2"), REQ(MemcpyDtoH, "cuMemcpyDtoH_v2"),
        REQ(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"), REQ(MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"),
        REQ(MemsetD8, "cuMemsetD8_v2"), REQ(StreamCreate, "cuStreamCreate"),
        REQ(StreamDestroy, "cuStreamDestroy_v2"), REQ(StreamSynchronize, "cuStreamSynchronize"),
        REQ(LaunchKernel, "cuLaunchKernel"),
        /* optional: CUDA graphs and events (the engine works without them; see use_graphs, prof) */
        OPT(StreamBeginCapture, "cuStreamBeginCapture_v2"), OPT(StreamEndCapture, "cuStreamEndCapture"),
        OPT(GraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"), OPT(GraphLaunch, "cuGraphLaunch"),
        OPT(GraphExecDestroy, "cuGraphExecDestroy"), OPT(GraphDestroy, "cuGraphDestroy"),
        OPT(EventCreate, "cuEventCreate"), OPT(EventRecord, "cuEventRecord"),
        OPT(EventSynchronize, "cuEventSynchronize"), OPT(EventElapsedTime, "cuEventElapsedTime"),
        OPT(EventDestroy, "cuEventDestroy_v2"), OPT(FuncSetAttribute, "cuFuncSetAttribute"),
        OPT(TensorMapEncodeTiled, "cuTensorMapEncodeTiled"), OPT(LaunchKernelEx, "cuLaunchKernelEx"),
        OPT(OccupancyMaxActiveClusters, "cuOccupancyMaxActiveClusters"),
    };
#undef REQ
#undef OPT
    cu.lib = h;
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++)
        if (!(*syms[i].fn = dlsym(h, syms[i].name)) && !syms[i].optional) {
            snprintf(why, sizeof why, "the CUDA driver lacks %s (too old a driver?)", syms[i].name);
            cu.init_rc = 1;
            return fail(W8A8_ERR_GPU, "%s", why);
        }
    CUresult r = cu.Init(0);
    int n = 0;
    if (!r) r = cu.DeviceGetCount(&n);
    if (r || n == 0) {
        snprintf(why, sizeof why, r ? "the CUDA driver failed to start: %s" : "%sthe CUDA driver sees no GPU", r ? cu_str(r) : "");
        cu.init_rc = 1;
        return fail(W8A8_ERR_GPU, "%s", why);
    }
    return W8A8_OK;
}

/* --- the kernel cache: cubins under $W8A8_CACHE, $XDG_CACHE_HOME/w8a8 or ~/.cache/w8a8, keyed by a hash of
 * the source, the options, NVRTC's and the driver's versions and the target --- */
static int cache_dir(char *out, size_t n) {
    const char *e = getenv("W8A8_CACHE"), *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (e && e[0]) snprintf(out, n, "%s", e);
    else if (x && x[0]) snprintf(out, n, "%s/w8a8", x);
    else if (home && home[0]) snprintf(out, n, "%s/.cache/w8a8", home);
    else return -1;
    return 0;
}
static void mkdirs(const char *path) {
    char b[1024];
    snprintf(b, sizeof b, "%s", path);
    for (char *p = b + 1; *p; p++) if (*p == '/') { *p = 0; mkdir(b, 0755); *p = '/'; }
    mkdir(b, 0755);
}

/* a switch in the environment: NAME=1 */
static int env_on(const char *name) {
    const char *v = getenv(name);
    return v && v[0] == '1';
}
/* a number in the environment: 1 with *v set, 0 when unset or empty (*v untouched), -1 when not a number */
static int env_int(const char *name, int *v) {
    const char *e = getenv(name);
    if (!e || !e[0]) return 0;
    char *end;
    long x = strtol(e, &end, 10);
    if (*end || x < INT_MIN || x > INT_MAX) return -1;
    *v = (int)x;
    return 1;
}

/* --- the GPU state --- */
#define MAX_GRAPHS 32
#define H_SMEM 196608                         /* the wgmma kernel's pipeline stages (kernels.cu.inc's H_SMEM) */
#define H_EPI 32768                           /* its epilogue's output boxes (H_EPI) */
#define HOPPER_SMEM (H_SMEM + H_EPI + 2048)   /* with 1024-byte alignment and the barriers */
typedef struct { int n, chunks; CUgraphExec exec; } gpu_graph;   /* for n rows, attention over `chunks` chunks */
typedef struct { CUdeviceptr w, scale, bias; float in_scale; int N, K, Kp; } glinear;
typedef struct { CUdeviceptr attn_norm, ffn_norm, q_norm, k_norm; glinear qkv, o, w13, w2; } glayer;

/* decode's gemv (kernels.cu.inc) */
#define GEMV_MAX_M 4
#define GEMV_WARPS 16
#define OUT_BF16 0   /* the GEMM's out_mode: bf16 store (1 adds into fp32, 2 stores fp32) */
#define OUT_SILU 3
#define OUT_ROPE 4   /* the qkv gemv: RoPE and the KV-cache write in its epilogue (rope_kv's work) */
#define SILU_THREADS 256   /* silu_mul_quant's block (kernels.cu.inc) */
enum { IN_ACT, IN_NORM, IN_ROW };
typedef struct {   /* the gemv's input rows, made by the gemv itself (kernels.cu.inc: gemv_in) */
    int kind, K, mode;
    float static_scale, eps;
    CUdeviceptr src, rows, w;
    CUdeviceptr pos, seq, cos_t, sin_t, kcache, vcache;   /* OUT_ROPE */
    int nh, nkv, hd, ctx;
    float k_scale, v_scale;
} gemv_in;
/* shared memory of a gemv that makes its input: the rows (M x Kb bytes), then the stage (the source row, and
 * the norm's weights) */
static size_t gemv_smem(const gemv_in *in, int M, int Kb) { return in && in->kind != IN_ACT ? (size_t)M * Kb + (size_t)4 * in->K * (in->kind == IN_NORM ? 2 : 1) : 0; }

struct gpu_state {
    CUdevice dev;
    CUcontext ctx;
    CUstream stream;
    CUmodule mod[KERNEL_PARTS];   /* one a part of the kernels (kernel_part) */
    CUfunction f[F_COUNT];
    char name[256];
    int cc, sms, act_mode, gemm_fn, Dp, Kmax, kv_es /* bytes a cached key */;
    int no_gemv;                  /* 1: every GEMM through the mma tiles ($W8A8_NO_GEMV, for comparison) */
    int wgmma;                    /* GEMMs the gemv does not take run the wgmma kernel (sm_90, unless $W8A8_NO_WGMMA=1) */
    int exact_fp8;                /* FP8 GEMMs stay off the wgmma path (w8a8_options.exact_fp8) */
    int fp8_tile;                 /* $W8A8_FP8_TILE: 128 or 192 forces the FP8 wgmma tile's width (timings); 0, chosen by shape */
    int gemm_pairs;               /* wgmma GEMM: clusters of two blocks that fit on the GPU at once (0: no clusters) */
    int split_k;                  /* wgmma GEMM: K split over blocks where the tiles are too few ($W8A8_NO_SPLIT_K=1: not) */
    int swap;                     /* wgmma GEMM: up to 64 rows with the weights as the 64-row side ($W8A8_NO_SWAP=1: not) */
    int build;                    /* the BUILD_ bits the kernels were compiled with */
    CUdeviceptr split_part, split_count; /* its workspace: a block's sums (64 KB an item), a counter a tile */
    int pdl;                      /* kernels launched with programmatic dependent launch (sm_90, unless $W8A8_NO_PDL=1) */
    int att_v_smem;               /* bytes of an attention chunk's values, copied to shared memory at decode (0: no room) */
    int silu_keep;                /* silu_mul_quant keeps a row (hidden_dim floats) in shared memory between its passes */
    int rope_fuse;                /* decode: RoPE and the cache write inside the qkv gemv, for layers without q/k norm
                                   * (0 with $W8A8_NO_ROPE_FUSE=1) */
    int fuse;                     /* decode: norms, SiLU and the merge of attention's chunks inside the gemv and attention
                                   * launches (0 with $W8A8_NO_FUSE=1, or where the gemv's shared memory does not fit) */
    CUdeviceptr merge_count;      /* attention's counters of finished chunks, a row's query head (fuse) */
    int att_tc;                   /* prompts' attention can run on the tensor cores (attention_tc: head dim 64 or 128) */
    int use_graphs;               /* decode steps replay CUDA graphs (0 with $W8A8_NO_GRAPH=1 or an old driver) */
    gpu_graph graphs[MAX_GRAPHS]; /* one per batch size seen */
    int n_graphs;
    glayer *layers;
    CUdeviceptr embd, out_norm, rope_cos, rope_sin, k_cache, v_cache;
    glinear head;
    int prefill_rows;             /* rows of prompts a forward pass takes: PREFILL_ROWS, or fewer (see gpu_open) */
    CUdeviceptr x, act, act_s, qkv, att, h13, xn, tok, seq, pos, rows, logits, seq_logits, part_o, part_ml, argmax;
    CUdeviceptr tc_rows;          /* per row: 1 if attention_tc takes it */
    CUdeviceptr calib;            /* calibration statistics, while w8a8_calibrate is on */
    CUdeviceptr sample_rows;      /* w8a8_sample_greedy's sequence ids */
    CUdeviceptr *allocs;
    int n_allocs;
    size_t bytes;                 /* all device memory this model holds */
    char info[2048];              /* how the kernels were obtained */
    double t_kernels, t_weights;  /* seconds to get the kernels (compile or cache) and to upload the weights */
    int prof;                     /* $W8A8_PROFILE=1: each launch timed with events, a table at close */
    struct { CUevent a, b; int f; } *pev;
    int n_pev, cap_pev;
    double prof_ms[F_COUNT];
    long prof_n[F_COUNT];
};

static const char *gpu_name(const gpu_state *g) { return g->name; }

static int gpu_alloc(gpu_state *g, CUdeviceptr *p, size_t n, const char *what) {
    CUresult r = cu.MemAlloc(p, n ? n : 16);
    if (r) {
        size_t fr = 0, tot = 0;
        cu.MemGetInfo(&fr, &tot);
        *p = 0;
        return fail(W8A8_ERR_NOMEM, "out of GPU memory: %s needs %.1f MiB, %.1f MiB of %.1f MiB are free (%s); lower the context or batch",
                    what, n / 1048576.0, fr / 1048576.0, tot / 1048576.0, cu_str(r));
    }
    CUdeviceptr *na = realloc(g->allocs, sizeof(CUdeviceptr) * (g->n_allocs + 1));
    if (!na) { cu.MemFree(*p); return fail(W8A8_ERR_NOMEM, "out of memory"); }
    g->allocs = na;
    g->allocs[g->n_allocs++] = *p;
    g->bytes += n;
    return W8A8_OK;
}

static int gpu_upload(gpu_state *g, CUdeviceptr *p, const void *src, size_t n, const char *what) {
    int rc = gpu_alloc(g, p, n, what);
    if (rc) return rc;
    CUresult r = cu.MemcpyHtoD(*p, src, n);
    return r ? fail(W8A8_ERR_GPU, "copying %s to the GPU: %s", what, cu_str(r)) : W8A8_OK;
}

static void prof_collect(gpu_state *g);
/* W8A8_PROFILE=1: the GPU time by kernel since the last print, on stderr; the totals start again from zero */
static void prof_print(gpu_state *g) {
    double total = 0;
    prof_collect(g);
    for (int f = 0; f < F_COUNT; f++) total += g->prof_ms[f];
    fprintf(stderr, "w8a8: GPU time by kernel (W8A8_PROFILE=1; every launch timed, graphs off): %.1f ms in all\n", total);
    for (int f = 0; f < F_COUNT; f++)
        if (g->prof_n[f]) fprintf(stderr, "w8a8:   %-18s %9.2f ms %5.1f %%  %8ld launches  %8.1f us each\n", kernel_names[f], g->prof_ms[f],
                                  100 * g->prof_ms[f] / (total > 0 ? total : 1), g->prof_n[f], 1e3 * g->prof_ms[f] / g->prof_n[f]);
    for (int f = 0; f < F_COUNT; f++) { g->prof_ms[f] = 0; g->prof_n[f] = 0; }
}
static void gpu_free(gpu_state *g) {
    if (!g) return;
    if (g->ctx) cu.CtxSetCurrent(g->ctx);
    if (g->prof) {
        prof_print(g);
        for (int i = 0; i < g->cap_pev; i++) if (g->pev[i].a) { cu.EventDestroy(g->pev[i].a); cu.EventDestroy(g->pev[i].b); }
        free(g->pev);
    }
    for (int i = 0; i < g->n_graphs; i++) cu.GraphExecDestroy(g->graphs[i].exec);
    for (int i = 0; i < g->n_allocs; i++) cu.MemFree(g->allocs[i]);
    for (int p = 0; p < KERNEL_PARTS; p++) if (g->mod[p]) cu.ModuleUnload(g->mod[p]);
    if (g->stream) cu.StreamDestroy(g->stream);
    if (g->ctx) cu.DevicePrimaryCtxRelease(g->dev);
    free(g->allocs); free(g->layers); free(g);
}

/* Rows of [rows][K] weights as [rows][Kp], zero-padded: every GEMM steps K 64 bytes at a time. */
static int upload_padded(gpu_state *g, CUdeviceptr *p, const void *w, int rows, int K, int Kp, int es, const char *what) {
    if (K == Kp) return gpu_upload(g, p, w, (size_t)rows * K * es, what);
    unsigned char *b = calloc((size_t)rows * Kp, es);
    if (!b) return fail(W8A8_ERR_NOMEM, "out of memory padding %s", what);
    for (int r = 0; r < rows; r++) memcpy(b + (size_t)r * Kp * es, (const unsigned char *)w + (size_t)r * K * es, (size_t)K * es);
    int rc = gpu_upload(g, p, b, (size_t)rows * Kp * es, what);
    free(b);
    return rc;
}
static int round64(int k) { return (k + 63) / 64 * 64; }

static int upload_linear(gpu_state *g, const linear *l, glinear *gl, const char *what) {
    int es = w8a8_dtype_size(l->dtype), rc;
    gl->N = l->rows; gl->K = l->cols; gl->Kp = round64(l->cols); gl->in_scale = l->in_scale;
    if ((rc = upload_padded(g, &gl->w, l->w, l->rows, l->cols, gl->Kp, es, what))) return rc;
    if (l->scale && (rc = gpu_upload(g, &gl->scale, l->scale, sizeof(float) * l->rows, what))) return rc;
    if (l->bias && (rc = gpu_upload(g, &gl->bias, l->bias, sizeof(float) * l->rows, what))) return rc;
    return W8A8_OK;
}

static double seconds(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

/* Getting the kernels, part by part: from the cache if a good entry is there, else compiled by NVRTC and
 * stored. NVRTC needs no CUDA context, so each part compiles on a thread of its own while gpu_open uploads
 * the weights (a cold start then takes the longest of them, not their sum); kernels_end waits for them and
 * loads the modules. */
static int g_build_all;   /* build every optional kernel, whatever the model (the kernel tests, tools/bench's GEMMs) */
typedef struct {
    char target[16], dir[900], path[1024], err[1024];
    int build, part, have_dir, pending /* a compile to collect */, threaded, rc, stored;
    pthread_t thread;
    char *cubin;
    size_t n;
    double secs;
} kernel_job;

static void *compile_job(void *arg) {
    kernel_job *j = arg;
    double t0 = seconds();
    j->rc = nvrtc_compile(j->target, j->build, j->part, &j->cubin, &j->n);
    j->secs = seconds() - t0;
    if (j->rc) snprintf(j->err, sizeof j->err, "%s", w8a8_error());   /* the error text is per thread */
    return NULL;
}

/* the W8A8_BUILD bits of the kernels a model uses */
static int kernels_of(const w8a8_config *c) {
    int kv8 = c->kv_dtype == W8A8_KV_FP8, b = kv8 ? BUILD_KV_E4M3 : BUILD_KV_BF16;
    if (c->scheme == W8A8_FP8) b |= BUILD_E4M3;
    if (c->scheme == W8A8_INT8) b |= BUILD_S8;
    if (c->scheme == W8A8_BF16) b |= BUILD_BF16;
    if (c->head_dim == 64) b |= BUILD_TC_64;
    if (c->head_dim == 128) b |= BUILD_TC_128;
    if (c->head_dim * (kv8 ? 1 : 2) % 16) b |= BUILD_ATT_ODD;   /* cache rows not a whole number of 16-byte pieces */
    return b;
}

/* The part of the cache key that all parts share: a hash of the source, the options and NVRTC's and the
 * driver's versions (read once a start, not once a part) */
static int kernels_key(const char *target, int build, uint64_t *key) {
    int drv = 0, nv_major = 0, nv_minor = 0, rc;
    if ((rc = nvrtc_load())) return rc;
    cu.DriverGetVersion(&drv);
    nvrtc.Version(&nv_major, &nv_minor);
    char *src = kernel_text();
    if (!src) return W8A8_ERR_GPU;
    char keytxt[256];
    int n = snprintf(keytxt, sizeof keytxt, "%s|%d|%s %s %s|nvrtc %d.%d|driver %d", target, build, KERNEL_OPT_STD, KERNEL_OPT_FMAD,
                     KERNEL_OPT_SPLIT, nv_major, nv_minor, drv);
    *key = w8a8_fnv1a(w8a8_fnv1a(0xcbf29ce484222325ull, src, strlen(src)), keytxt, n);
    free(src);
    return W8A8_OK;
}

/* Loads a part from the cache (its entry: `key` with the part and which bodies it holds), or starts compiling it */
static int kernels_begin(gpu_state *g, kernel_job *j, uint64_t key) {
    char bodies[32 + F_COUNT];
    int n = snprintf(bodies, sizeof bodies, "|part %d:", j->part);
    for (int i = 0; i < F_COUNT; i++) bodies[n++] = kernel_part[i] == j->part ? '1' : '0';
    key = w8a8_fnv1a(key, bodies, n);
    j->have_dir = cache_dir(j->dir, sizeof j->dir) == 0;
    snprintf(j->path, sizeof j->path, "%.900s/kernels-%.15s-%016llx.cubin", j->dir, j->target, (unsigned long long)key);
    size_t len = 0;
    char *cubin = j->have_dir ? read_whole(j->path, &len) : NULL;
    if (cubin && cu.ModuleLoadData(&g->mod[j->part], cubin) == 0) { free(cubin); return W8A8_OK; }
    free(cubin);   /* none, unreadable or unloadable: compile */
    g->mod[j->part] = NULL;
    j->pending = 1;
    j->threaded = pthread_create(&j->thread, NULL, compile_job, j) == 0;
    if (!j->threaded) compile_job(j);   /* no thread to be had: compile now */
    return W8A8_OK;
}

/* Collects a part's compile (waits for its thread), loads it and stores it in the cache; or, with keep 0
 * (start-up has failed already), only waits for it. */
static int kernels_end(gpu_state *g, kernel_job *j, int keep) {
    if (!j->pending) return W8A8_OK;
    j->pending = 0;
    if (j->threaded) pthread_join(j->thread, NULL);
    if (!keep || j->rc) { free(j->cubin); return keep ? fail(j->rc, "%s", j->err) : W8A8_OK; }
    CUresult r = cu.ModuleLoadData(&g->mod[j->part], j->cubin);
    if (r) { free(j->cubin); return fail(W8A8_ERR_GPU, "loading the compiled kernels for %s: %s", j->target, cu_str(r)); }
    if (j->have_dir) {   /* write to a temporary file and rename: no reader ever sees half an entry */
        char tmp[1100];
        mkdirs(j->dir);
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", j->path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        if (f) {
            j->stored = fwrite(j->cubin, 1, j->n, f) == j->n;
            j->stored &= fclose(f) == 0;
            j->stored = j->stored && rename(tmp, j->path) == 0;
            if (!j->stored) unlink(tmp);
        }
    }
    free(j->cubin);
    return W8A8_OK;
}

/* The weights, uploaded once from the mapping (K padded to a multiple of 64) */
static int upload_weights(w8a8_model *m, gpu_state *g) {
    const w8a8_config *c = &m->cfg;
    int D = c->dim, H = c->hidden_dim, qd = c->n_heads * c->head_dim, V = c->vocab_size, rc;
    g->Dp = round64(D);
    g->Kmax = round64(D > qd ? (D > H ? D : H) : (qd > H ? qd : H));
    if ((rc = upload_padded(g, &g->embd, m->tok_embd, V, D, g->Dp, 2, "the embeddings")) ||
        (rc = gpu_upload(g, &g->out_norm, m->out_norm, sizeof(float) * D, "the final norm")))
        return rc;
    g->head = (glinear){.w = g->embd, .N = V, .K = D, .Kp = g->Dp};
    if (m->lm_head.w != m->tok_embd && (rc = upload_padded(g, &g->head.w, m->lm_head.w, V, D, g->Dp, 2, "the LM head"))) return rc;
    g->layers = calloc(c->n_layers, sizeof(glayer));
    if (!g->layers) return fail(W8A8_ERR_NOMEM, "out of memory");
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const layer *L = &m->layers[l];
        glayer *G = &g->layers[l];
        if ((rc = gpu_upload(g, &G->attn_norm, L->attn_norm, sizeof(float) * D, "a norm")) ||
            (rc = gpu_upload(g, &G->ffn_norm, L->ffn_norm, sizeof(float) * D, "a norm")) ||
            (L->q_norm && (rc = gpu_upload(g, &G->q_norm, L->q_norm, sizeof(float) * c->head_dim, "a q norm"))) ||
            (L->k_norm && (rc = gpu_upload(g, &G->k_norm, L->k_norm, sizeof(float) * c->head_dim, "a k norm"))) ||
            (rc = upload_linear(g, &L->qkv, &G->qkv, "the weights")) || (rc = upload_linear(g, &L->o, &G->o, "the weights")) ||
            (rc = upload_linear(g, &L->w13, &G->w13, "the weights")) || (rc = upload_linear(g, &L->w2, &G->w2, "the weights")))
            return rc;
    }
    return W8A8_OK;
}

static int gpu_open(w8a8_model *m) {
    const w8a8_config *c = &m->cfg;
    int rc;
    if (c->scheme == W8A8_F32) return fail(W8A8_ERR_GPU, "the f32 scheme runs on the CPU reference only");
    if ((rc = cuda_load())) return rc;
    gpu_state *g = calloc(1, sizeof *g);
    if (!g) return fail(W8A8_ERR_NOMEM, "out of memory");
    int ord = m->opt.device;
    if (ord < 0) {
        ord = 0;
        if (env_int("W8A8_DEVICE", &ord) < 0) { free(g); return fail(W8A8_ERR_GPU, "W8A8_DEVICE=%s: not a GPU number (0, 1, ...)", getenv("W8A8_DEVICE")); }
    }
    int count = 0;
    cu.DeviceGetCount(&count);
    CUresult r;
    if (ord < 0 || ord >= count) { free(g); return fail(W8A8_ERR_GPU, "GPU %d does not exist (there are %d)", ord, count); }
    if ((r = cu.DeviceGet(&g->dev, ord)) || (r = cu.DevicePrimaryCtxRetain(&g->ctx, g->dev))) {
        free(g);
        return fail(W8A8_ERR_GPU, "cannot open GPU %d: %s", ord, cu_str(r));
    }
    m->gpu = g;   /* from here on, w8a8_close frees whatever was made */
    cu.CtxSetCurrent(g->ctx);
    cu.DeviceGetName(g->name, sizeof g->name, g->dev);
    int major = 0, minor = 0;
    cu.DeviceGetAttribute(&major, CU_ATTR_CC_MAJOR, g->dev);
    cu.DeviceGetAttribute(&minor, CU_ATTR_CC_MINOR, g->dev);
    cu.DeviceGetAttribute(&g->sms, CU_ATTR_MULTIPROCESSOR_COUNT, g->dev);
    g->cc = major * 10 + minor;
    char target[16];
    if (g->cc >= 90 && g->cc < 100) snprintf(target, sizeof target, "sm_90a");
    else snprintf(target, sizeof target, "sm_%d", g->cc);
    if (g->cc < 80) return fail(W8A8_ERR_GPU, "%s (compute capability %d.%d) is older than the sm_80 this engine needs", g->name, major, minor);
    if (c->scheme == W8A8_FP8 && g->cc < 89)
        return fail(W8A8_ERR_GPU, "%s (sm_%d) has no FP8 tensor cores (sm_89 and later do): convert with --scheme int8 or bf16", g->name, g->cc);
    if (c->kv_dtype == W8A8_KV_FP8 && g->cc < 89)
        return fail(W8A8_ERR_GPU, "%s (sm_%d) has no FP8 conversions (sm_89 and later do): convert without --kv fp8", g->name, g->cc);
    if (c->head_dim > 32 * 8)   /* MAXD in kernels.cu.inc */
        return fail(W8A8_ERR_GPU, "head_dim %u: the GPU attention takes head dims up to 256 (the CPU reference takes any)", c->head_dim);
    if ((r = cu.StreamCreate(&g->stream, 0))) return fail(W8A8_ERR_GPU, "cuStreamCreate: %s", cu_str(r));
    kernel_job jobs[KERNEL_PARTS] = {0};
    g->build = g_build_all ? BUILD_ALL : kernels_of(c);
    double t0 = seconds();
    uint64_t key = 0;
    rc = kernels_key(target, g->build, &key);
    for (int p = 0; p < KERNEL_PARTS && !rc; p++) {
        jobs[p].build = g->build, jobs[p].part = p;
        snprintf(jobs[p].target, sizeof jobs[p].target, "%s", target);
        rc = kernels_begin(g, &jobs[p], key);
    }
    g->t_kernels = seconds() - t0;
    t0 = seconds();
    if (!rc) rc = upload_weights(m, g);   /* while NVRTC compiles, if it must */
    g->t_weights = seconds() - t0;
    int compiled = 0, stored = 0;
    double longest = 0;
    for (int p = 0; p < KERNEL_PARTS; p++) {   /* before any return: every compile thread is joined */
        if (!jobs[p].pending) continue;
        int rk = kernels_end(g, &jobs[p], !rc);
        if (!rc) rc = rk;
        compiled++, stored += jobs[p].stored;
        longest = jobs[p].secs > longest ? jobs[p].secs : longest;
    }
    g->t_kernels += longest;
    if (rc) return rc;
    if (!compiled) snprintf(g->info, sizeof g->info, "kernels for %s loaded from the cache (%s)", target, jobs[0].dir);
    else snprintf(g->info, sizeof g->info, "kernels for %s: %d of %d parts compiled by NVRTC, on threads, in %.2f s%s%s", target, compiled,
                  KERNEL_PARTS, longest, stored < compiled ? "; not cached (cache folder not writable: set W8A8_CACHE)" : "; cached in ",
                  stored < compiled ? "" : jobs[0].dir);
    for (int i = 0; i < F_COUNT; i++)
        if ((r = cu.ModuleGetFunction(&g->f[i], g->mod[kernel_part[i]], kernel_names[i])))
            return fail(W8A8_ERR_GPU, "kernel %s: %s", kernel_names[i], cu_str(r));
    g->act_mode = c->scheme == W8A8_BF16 ? 0 : c->scheme == W8A8_FP8 ? 1 : 2;
    g->no_gemv = env_on("W8A8_NO_GEMV");
    g->exact_fp8 = m->opt.exact_fp8 || env_on("W8A8_FP8_EXACT");
    if (g->cc == 90 && cu.FuncSetAttribute && cu.TensorMapEncodeTiled && !env_on("W8A8_NO_WGMMA")) {
        g->wgmma = 1;
        g->swap = !env_on("W8A8_NO_SWAP");
        if (env_int("W8A8_FP8_TILE", &g->fp8_tile) < 0 || (g->fp8_tile && g->fp8_tile != 128 && g->fp8_tile != 192))
            return fail(W8A8_ERR_GPU, "W8A8_FP8_TILE=%s: the FP8 GEMM's tiles are 128 or 192 columns wide", getenv("W8A8_FP8_TILE"));
        for (int i = F_GEMM90_BF16; i <= F_GEMM90_S8_SWAP; i++)
            if ((r = cu.FuncSetAttribute(g->f[i], CU_FUNC_MAX_DYNAMIC_SHARED, HOPPER_SMEM)))
                return fail(W8A8_ERR_GPU, "%s: %d bytes of shared memory: %s", kernel_names[i], HOPPER_SMEM, cu_str(r));
        /* pairs of blocks sharing the weight tile (TMA multicast): as many as can run at once, which is fewer
         * than half the SMs where a GPC has an odd number of them */
        CUlaunchAttribute attr = cluster_dim(2);
        CUlaunchConfig lc = {(unsigned)g->sms & ~1u, 1, 1, 384, 1, 1, HOPPER_SMEM, g->stream, &attr, 1};
        if (cu.LaunchKernelEx && cu.OccupancyMaxActiveClusters && !env_on("W8A8_NO_CLUSTER") &&
            cu.OccupancyMaxActiveClusters(&g->gemm_pairs, g->f[F_GEMM90_E4M3], &lc))
            g->gemm_pairs = 0;
        /* split K: at most one item an SM, so the workspace holds g->sms items and counters */
        g->split_k = !env_on("W8A8_NO_SPLIT_K");
        if (g->split_k && ((rc = gpu_alloc(g, &g->split_part, (size_t)g->sms * 65536, "the GEMM's split-K workspace")) ||
                           (rc = gpu_alloc(g, &g->split_count, sizeof(int) * g->sms, "the GEMM's split-K workspace"))))
            return rc;
        if (g->split_k && (r = cu.MemsetD8(g->split_count, 0, sizeof(int) * g->sms))) return fail(W8A8_ERR_GPU, "cuMemsetD8: %s", cu_str(r));
    }
    g->pdl = g->cc >= 90 && cu.LaunchKernelEx && !env_on("W8A8_NO_PDL");   /* kernels built with W8A8_SM >= 90 wait */
    g->prof = env_on("W8A8_PROFILE") && cu.EventCreate && cu.EventRecord && cu.EventElapsedTime;
    g->use_graphs = cu.StreamBeginCapture && cu.StreamEndCapture && cu.GraphInstantiateWithFlags && cu.GraphLaunch && cu.GraphExecDestroy &&
                    cu.GraphDestroy && !env_on("W8A8_NO_GRAPH") && !g->prof;
    g->gemm_fn = c->scheme == W8A8_BF16 ? F_GEMM_BF16 : c->scheme == W8A8_FP8 ? F_GEMM_E4M3 : F_GEMM_S8;
    int D = c->dim, H = c->hidden_dim, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, V = c->vocab_size;
    size_t weights = g->bytes, half = c->head_dim / 2;
    if ((rc = gpu_upload(g, &g->rope_cos, m->rope_cos, sizeof(float) * m->max_ctx * half, "the RoPE tables")) ||
        (rc = gpu_upload(g, &g->rope_sin, m->rope_sin, sizeof(float) * m->max_ctx * half, "the RoPE tables")))
        return rc;
    /* the KV cache: bf16 or e4m3, [layer][sequence][position][kv_dim] */
    g->kv_es = c->kv_dtype == W8A8_KV_FP8 ? 1 : 2;
    /* decode's attention copies each chunk's values to shared memory where the GPU has room for them beside
     * the kernel's own (the driver refuses a size that does not fit) */
    int vbytes = ATT_CHUNK * c->head_dim * g->kv_es;
    if (cu.FuncSetAttribute && !cu.FuncSetAttribute(g->f[F_ATTN], CU_FUNC_MAX_DYNAMIC_SHARED, vbytes)) g->att_v_smem = vbytes;
    g->silu_keep = c->scheme != W8A8_BF16 && cu.FuncSetAttribute && !env_on("W8A8_NO_SILU_KEEP") &&
                   !cu.FuncSetAttribute(g->f[F_SILU], CU_FUNC_MAX_DYNAMIC_SHARED, (int)sizeof(float) * H);
    g->att_tc = (c->head_dim == 64 || c->head_dim == 128) && !env_on("W8A8_NO_TC_ATTENTION") && cu.FuncSetAttribute &&
                !cu.FuncSetAttribute(g->f[F_ATTN_TC], CU_FUNC_MAX_DYNAMIC_SHARED, TC_SMEM);
    /* decode's fused stages: the gemv makes its input in shared memory (the largest at GEMV_MAX_M rows), and
     * attention merges its chunks (a counter a row and query head, zero between launches) */
    g->fuse = !env_on("W8A8_NO_FUSE") && cu.FuncSetAttribute;
    g->rope_fuse = !env_on("W8A8_NO_ROPE_FUSE") && c->head_dim % 2 == 0 && c->head_dim <= 256;   /* the gemv's tables: 128 pairs */
    size_t need = 0, es = c->scheme == W8A8_BF16 ? 2 : 1;
    gemv_in in_norm = {.kind = IN_NORM, .K = D}, in_att = {.kind = IN_ROW, .K = qd}, in_h = {.kind = IN_ROW, .K = H};
#define NEED(in, Kp, e) (need = need > gemv_smem(in, GEMV_MAX_M, (Kp) * (e)) ? need : gemv_smem(in, GEMV_MAX_M, (Kp) * (e)))
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const glayer *L = &g->layers[l];
        NEED(&in_norm, L->qkv.Kp, es); NEED(&in_att, L->o.Kp, es); NEED(&in_norm, L->w13.Kp, es); NEED(&in_h, L->w2.Kp, es);
    }
    NEED(&in_norm, g->Dp, 2);   /* the LM head, bf16 */
#undef NEED
    for (int f = F_GEMV_BF16; f <= F_GEMV_S8 && g->fuse; f++) g->fuse = !cu.FuncSetAttribute(g->f[f], CU_FUNC_MAX_DYNAMIC_SHARED, (int)need);
    if (g->fuse && ((rc = gpu_alloc(g, &g->merge_count, sizeof(int) * GEMV_MAX_M * c->n_heads, "attention's counters")) ||
                    (r = cu.MemsetD8(g->merge_count, 0, sizeof(int) * GEMV_MAX_M * c->n_heads))))
        return rc ? rc : fail(W8A8_ERR_GPU, "cuMemsetD8: %s", cu_str(r));
    size_t kv = (size_t)c->n_layers * m->max_batch * m->max_ctx * kvd * g->kv_es;
    char what[128];
    snprintf(what, sizeof what, "the KV cache (%d sequences x %d positions)", m->max_batch, m->max_ctx);
    if ((rc = gpu_alloc(g, &g->k_cache, kv, what)) || (rc = gpu_alloc(g, &g->v_cache, kv, what))) return rc;
    /* activations for the largest batch of rows a forward pass takes */
    int splits = (m->max_ctx + ATT_CHUNK - 1) / ATT_CHUNK, R = PREFILL_ROWS;
    while (R > FEED_CHUNK && (double)R * c->n_heads * splits * c->head_dim * sizeof(float) > 512.0 * 1048576) R /= 2;
    if (R < m->max_batch) R = m->max_batch;
    g->prefill_rows = R;
    int LR = m->max_batch > FEED_CHUNK ? m->max_batch : FEED_CHUNK;   /* rows of logits: every sequence, or a score chunk */
    size_t act = 0;
#define ACT(ptr, n) (act += (n), gpu_alloc(g, &g->ptr, (n), "activations"))
    if ((rc = ACT(x, sizeof(float) * R * D)) || (rc = ACT(act, (size_t)R * g->Kmax * 2)) || (rc = ACT(act_s, sizeof(float) * R)) ||
        (rc = ACT(qkv, (size_t)R * (qd + 2 * kvd) * 2)) || (rc = ACT(att, sizeof(float) * R * qd)) || (rc = ACT(h13, (size_t)R * 2 * H * 2)) ||
        (rc = ACT(xn, (size_t)R * g->Dp * 2)) || (rc = ACT(tok, sizeof(int) * R)) || (rc = ACT(seq, sizeof(int) * R)) ||
        (rc = ACT(pos, sizeof(int) * R)) || (rc = ACT(tc_rows, sizeof(int) * R)) || (rc = ACT(rows, sizeof(int) * R)) || (rc = ACT(logits, sizeof(float) * LR * (size_t)V)) ||
        (rc = ACT(seq_logits, sizeof(float) * m->max_batch * (size_t)V)) || (rc = ACT(argmax, sizeof(int) * m->max_batch)) ||
        (rc = ACT(sample_rows, sizeof(int) * m->max_batch)) ||
        (rc = ACT(part_o, sizeof(float) * (size_t)R * c->n_heads * splits * c->head_dim)) ||
        (rc = ACT(part_ml, sizeof(float) * 2 * (size_t)R * c->n_heads * splits)))
        return rc;
#undef ACT
    if (m->opt.verbose)
        fprintf(stderr, "w8a8: %s (sm_%d, %d SMs); %s\nw8a8: GEMMs: %s; GPU memory: weights %.1f MiB, KV cache %.1f MiB, activations %.1f MiB\n",
                g->name, g->cc, g->sms, g->info, !g->wgmma ? "mma.sync" : g->gemm_pairs ? "wgmma, blocks in pairs" : "wgmma",
                weights / 1048576.0, 2.0 * kv / 1048576.0, act / 1048576.0);
    return W8A8_OK;
}

/* a launch on the stream (in clusters of `cluster` blocks along x when > 1) */
static int launch_ex(gpu_state *g, int f, unsigned gx, unsigned gy, unsigned gz, unsigned block, unsigned smem, int cluster, void **args) {
#ifdef W8A8_LAUNCH_HOOK
    if (W8A8_LAUNCH_HOOK(f)) return W8A8_OK;   /* tools/prof's leave-one-out timings (W8A8_SKIP) */
#endif
    int timed = 0;
    if (g->prof) {   /* a pair of events around the launch, read at the next sync */
        if (g->n_pev == g->cap_pev) {
            int cap = g->cap_pev ? 2 * g->cap_pev : 256;
            void *np = realloc(g->pev, sizeof *g->pev * cap);
            if (np) { g->pev = np; memset(g->pev + g->cap_pev, 0, sizeof *g->pev * (cap - g->cap_pev)); g->cap_pev = cap; }
        }
        if (g->n_pev < g->cap_pev) {
            timed = 1;
            if (!g->pev[g->n_pev].a) { cu.EventCreate(&g->pev[g->n_pev].a, 0); cu.EventCreate(&g->pev[g->n_pev].b, 0); }
            g->pev[g->n_pev].f = f;
            cu.EventRecord(g->pev[g->n_pev].a, g->stream);
        }
    }
    CUresult r;
    if (g->pdl || cluster > 1) {   /* with pdl every kernel waits for the one before it (wait_prior in kernels.cu.inc) */
        CUlaunchAttribute attrs[2] = {cluster_dim(cluster), {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, .v.value = 1}};
        CUlaunchConfig lc = {gx, gy, gz, block, 1, 1, smem, g->stream, attrs + (cluster == 1), (unsigned)(cluster > 1) + (unsigned)g->pdl};
        r = cu.LaunchKernelEx(&lc, g->f[f], args, NULL);
    } else r = cu.LaunchKernel(g->f[f], gx, gy, gz, block, 1, 1, smem, g->stream, args, NULL);
    if (timed) cu.EventRecord(g->pev[g->n_pev++].b, g->stream);
    return r ? fail(W8A8_ERR_GPU, "launching %s: %s", kernel_names[f], cu_str(r)) : W8A8_OK;
}
static int launch_smem(gpu_state *g, int f, unsigned gx, unsigned gy, unsigned gz, unsigned block, unsigned smem, void **args) {
    return launch_ex(g, f, gx, gy, gz, block, smem, 1, args);
}
static int launch(gpu_state *g, int f, unsigned gx, unsigned gy, unsigned gz, unsigned block, void **args) {
    return launch_smem(g, f, gx, gy, gz, block, 0, args);
}
static void prof_collect(gpu_state *g) {
    for (int i = 0; i < g->n_pev; i++) {
        float ms = 0;
        cu.EventSynchronize(g->pev[i].b);
        cu.EventElapsedTime(&ms, g->pev[i].a, g->pev[i].b);
        g->prof_ms[g->pev[i].f] += ms;
        g->prof_n[g->pev[i].f]++;
    }
    g->n_pev = 0;
}

typedef struct { _Alignas(64) unsigned long long v[16]; } tma_map;
/* The Hopper GEMM's tensor maps (CUtensorMap), 2-d: rows of `cols` elements of `es` bytes (type, a
 * CUtensorMapDataType), `pitch` bytes apart, moved in boxes of box_rows rows x 128 bytes in the 128-byte swizzle
 * (what wgmma reads and the epilogue writes); l2: the L2 promotion of the loads (operands 256 bytes, the output
 * none). Rows and columns past the edges read as zeros and are not written. */
enum { TMA_U8 = 0, TMA_F32 = 7, TMA_BF16 = 9, TMA_L2_NONE = 0, TMA_L2_256B = 3 };
static int tma_encode(tma_map *map, CUdeviceptr p, int type, int es, int cols, int rows, size_t pitch, int box_rows, int l2) {
    enum { INTERLEAVE_NONE = 0, SWIZZLE_128B = 3, OOB_ZERO = 0 };
    unsigned long long dims[2] = {(unsigned long long)cols, (unsigned long long)rows}, strides[1] = {(unsigned long long)pitch};
    unsigned box[2] = {128u / (unsigned)es, (unsigned)box_rows}, step[2] = {1, 1};
    CUresult r = cu.TensorMapEncodeTiled(map, type, 2, (void *)p, dims, strides, box, step, INTERLEAVE_NONE, SWIZZLE_128B, l2, OOB_ZERO);
    return r ? fail(W8A8_ERR_GPU, "cuTensorMapEncodeTiled (%d x %d, %d-byte values): %s", rows, cols, es, cu_str(r)) : W8A8_OK;
}
/* The wgmma epilogue's output (M rows of N bf16 or fp32 values, ldo apart) goes out by the copy engine only where
 * it can address it: out 16-byte aligned, rows a multiple of 16 bytes apart. */
static int tma_out_ok(CUdeviceptr out, int N, int ldo, int es) { return !((N | ldo) & 1) && !(out & 15) && !((size_t)ldo * es & 15); }

/* The FP8 tile 192 columns wide reads less shared memory a FLOP than the 128-column one (each warpgroup's n192
 * wgmma reads its 64 rows of A once for 192 columns, not 128) and ran 5-10 % faster where both fill the GPU's waves
 * alike (H100 run122: qkv and gate+up at M >= 1024); but N = 4096 makes 21.3 tiles of 192 against 32 of 128, and
 * where its last wave is partly idle (o and down at M = 1024-4096) it was up to 20 % slower. So: whichever takes
 * fewer waves, a wave of 192-column tiles counted as 192 / 128 / 1.08 of one of 128. */
static int fp8_wide_faster(int tiles_m, int N, int sms) {
    int waves128 = (tiles_m * ((N + 127) / 128) + sms - 1) / sms, waves192 = (tiles_m * ((N + 191) / 192) + sms - 1) / sms;
    return waves192 * 192 < waves128 * 128 * 1.08;
}

/* y = linear(act) with the epilogue: out_mode 0 bf16 store, 1 add into fp32, 2 fp32 store (3, the gemv only:
 * silu(gate) * up, fp32). Up to GEMV_MAX_M rows (decode) stream the weights with the gemv kernels, one block
 * an SM, which can also make their input (`in`: null, or IN_ACT, for act); more go through the wgmma kernel on Hopper (a
 * persistent grid, one block an SM; up to 64 rows with the operands swapped; 256-column tiles where there are
 * enough of them to fill the GPU, else 128; FP8 128 or 192 by fp8_wide_faster; blocks in pairs that share the weight tile where
 * there are two row tiles or more; K split over blocks where the tiles are too few) or the mma tiles elsewhere. */
static int gpu_gemm_in(gpu_state *g, int fn, CUdeviceptr a, CUdeviceptr as, const glinear *l, int M, int out_mode, CUdeviceptr out, int ldo,
                       const gemv_in *in) {
    int es = fn == F_GEMM_BF16 ? 2 : 1, Kb = l->Kp * es;
    CUdeviceptr w = l->w, ws = l->scale, bias = l->bias, asp = l->scale ? as : 0;
    gemv_in plain = {.kind = IN_ACT};
    void *args[] = {&a, &w, &M, (void *)&l->N, &Kb, &asp, &ws, &bias, &out_mode, &out, &ldo, in ? (void *)in : &plain};
    if (M <= GEMV_MAX_M && !g->no_gemv) {
        int units = out_mode == OUT_SILU ? l->N / 2 : l->N, blocks = (units + GEMV_WARPS - 1) / GEMV_WARPS;
        return launch_smem(g, fn - F_GEMM_BF16 + F_GEMV_BF16, blocks < g->sms ? blocks : g->sms, 1, 1, 32 * GEMV_WARPS, (unsigned)gemv_smem(in, M, Kb), args);
    }
    if (g->wgmma && !(fn == F_GEMM_E4M3 && g->exact_fp8)) {
        /* up to 64 rows: swapped, the weights on the wgmma's 64-row side and the rows as its n = 64, so that a
         * tile is not mostly rows of zeros (the 128-row tile at M = 16 multiplies 7/8 zeros) */
        int all_built = fn != F_GEMM_BF16 || (g->build & BUILD_BF16);   /* not just the plain 128-column kernel */
        int swap = M <= 64 && g->swap && all_built, rows = swap ? 64 : 128, tiles_m = (M + rows - 1) / rows;
        int fp8 = fn == F_GEMM_E4M3, wide = !swap && all_built && !fp8 && tiles_m * ((l->N + 255) / 256) >= g->sms;
        if (fp8 && !swap) wide = g->fp8_tile ? g->fp8_tile == 192 : fp8_wide_faster(tiles_m, l->N, g->sms);
        int bn = wide ? (fp8 ? 192 : 256) : 128;
        int kernel = swap ? F_GEMM90_BF16_SWAP + (fn - F_GEMM_BF16)
                          : fn == F_GEMM_BF16 ? F_GEMM90_BF16 + wide : fp8 ? F_GEMM90_E4M3 + wide : F_GEMM90_S8 + wide;
        int pair = tiles_m >= 2 && g->gemm_pairs > 0, units = (tiles_m + pair) / (1 + pair) * ((l->N + bn - 1) / bn), rc;
        /* too few tiles to keep every SM streaming weights (few rows): K split in up to 16 parts, one item an SM.
         * Not for a third of the SMs or more with a short K: the halves' start and merge cost more than the idle
         * SMs (H100 run40: qkv at M = 16, 48 tiles of 32 steps, 40 -> 38 TFLOP/s split in two; o and down, 32
         * tiles, 28 -> 31 and 36 -> 51 split in four; down at M = 256, 64 tiles of 112 steps, 544 -> 692 in two).
         * Only 128-column tiles split: the kernel merges only those, and the workspace holds one's sums an item (the
         * wide tiles are taken where they fill the GPU anyway; W8A8_FP8_TILE=192 forces them on fewer rows too) */
        int tiles = units << pair, steps = (Kb + 127) / 128, splits = g->split_k && !wide ? g->sms / tiles : 1;
        if (3 * tiles > g->sms && steps < 64) splits = 1;
        if (splits > 16) splits = 16;
        if (splits > steps) splits = steps;   /* every split has a step */
        if (splits < 1) splits = 1;
        int items = units * splits, blocks = pair ? 2 * (items < g->gemm_pairs ? items : g->gemm_pairs) : items < g->sms ? items : g->sms;
        tma_map ma, mw, mo = {{0}};   /* a pair's blocks each bring half of the weight tile; mo, the output */
        if ((rc = tma_encode(&ma, a, TMA_U8, 1, Kb, M, Kb, rows, TMA_L2_256B)) ||
            (rc = tma_encode(&mw, w, TMA_U8, 1, Kb, l->N, Kb, bn >> pair, TMA_L2_256B)))
            return rc;
        int oes = out_mode == OUT_BF16 ? 2 : 4, out_tma = !swap && tma_out_ok(out, l->N, ldo, oes);
        if (out_tma && (rc = tma_encode(&mo, out, oes == 2 ? TMA_BF16 : TMA_F32, oes, l->N, M, (size_t)ldo * oes, 64, TMA_L2_NONE))) return rc;
        CUdeviceptr part = g->split_part, count = g->split_count;
        void *hargs[] = {&ma, &mw, &mo, &M, (void *)&l->N, &Kb, &splits, &part, &count, &asp, &ws, &bias, &out_mode, &out, &ldo, &out_tma};
        return launch_ex(g, kernel, blocks, 1, 1, 384, HOPPER_SMEM, 1 + pair, hargs);
    }
    return launch(g, fn, (l->N + 63) / 64, (M + 63) / 64, 1, 128, args);
}
static int gpu_gemm(gpu_state *g, int fn, CUdeviceptr a, CUdeviceptr as, const glinear *l, int M, int out_mode, CUdeviceptr out, int ldo) {
    return gpu_gemm_in(g, fn, a, as, l, M, out_mode, out, ldo, NULL);
}

/* Calibration: folds the column maxima of n bf16 rows (cache rows of seq/pos when sq is given) into the stats. */
static int calib_gpu(gpu_state *g, size_t off, CUdeviceptr src, int cols, int ld, CUdeviceptr sq, CUdeviceptr ps, int ctx, int n) {
    CUdeviceptr dst = g->calib + off * sizeof(float);
    void *args[] = {&src, &cols, &ld, &sq, &ps, &ctx, &dst};
    return launch(g, F_ABSMAX, n, 1, 1, 256, args);
}

/* Grid heights of rope_kv (ROPE_WARPS heads a block) and attention (a kv head's query heads, `heads` a block). */
static int rope_blocks_y(int nh, int nkv) { return (nh + nkv + ROPE_WARPS - 1) / ROPE_WARPS; }
static int attention_blocks_y(int nh, int nkv, int heads) { return nkv * ((nh / nkv + heads - 1) / heads); }

/* The kernels of one forward pass over n rows (their tokens, sequences and positions already on the GPU),
 * attention split in `splits` chunks (tc: the rows flagged in g->tc_rows on the tensor cores instead, TC_ALL:
 * every row), logits for the n_out rows listed in g->rows. */
enum { TC_NONE, TC_SOME, TC_ALL };
static int gpu_launch_forward(w8a8_model *m, int n, int n_out, int splits, int tc) {
    gpu_state *g = m->gpu;
    const w8a8_config *c = &m->cfg;
    int D = c->dim, H = c->hidden_dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, ctx = m->max_ctx;
    int qd = nh * hd, kvd = nkv * hd, mode = g->act_mode, rc = 0;
    /* a few rows (decode): more, lighter attention blocks (ATT_DECODE_HEADS query heads a block), each chunk's
     * values fetched with its keys; the stages between the linears done inside the gemv and attention
     * launches (fuse), unless calibration needs each linear's input as quantized */
    int att_heads = n <= GEMV_MAX_M ? ATT_DECODE_HEADS : ATT_HEADS, v_smem = n <= GEMV_MAX_M ? g->att_v_smem : 0;
    int fuse = n <= GEMV_MAX_M && !g->no_gemv && g->fuse && !m->calib && tc == TC_NONE;
    float eps = c->norm_eps, no_scale = 0.0f;
    CUdeviceptr null = 0, tc_rows = tc ? g->tc_rows : 0;
    int parts = tc == TC_ALL ? 1 : splits;   /* partial results a row and head: one when attention_tc takes every row */
    void *a_embed[] = {&g->tok, &g->embd, &D, &g->Dp, &g->x};
    if ((rc = launch(g, F_EMBED, n, 1, 1, 1024, a_embed))) return rc;
    size_t layer_kv = (size_t)m->max_batch * ctx * kvd * g->kv_es;
    for (uint32_t l = 0; l < c->n_layers && !rc; l++) {
        glayer *L = &g->layers[l];
        float ks = m->layers[l].k_scale, vs = m->layers[l].v_scale;
        CUdeviceptr kc = g->k_cache + l * layer_kv, vc = g->v_cache + l * layer_kv;
        int Kq = L->qkv.Kp, Ko = L->o.Kp, K13 = L->w13.Kp, K2 = L->w2.Kp;
        float s_qkv = L->qkv.in_scale, s_o = L->o.in_scale, s_13 = L->w13.in_scale, s_2 = L->w2.in_scale;
        void *a_n1[] = {&g->x, &null, &L->attn_norm, &eps, &D, &Kq, &mode, &s_qkv, &g->act, &g->act_s};
        void *a_rope[] = {&g->qkv, &g->pos, &g->seq, &g->rope_cos, &g->rope_sin, &nh, &nkv, &hd, &L->q_norm, &L->k_norm, &eps, &kc, &vc, &ctx, &ks, &vs};
        CUdeviceptr merge = fuse ? g->merge_count : 0;
        void *a_attn[] = {&g->qkv, &g->pos, &g->seq, &kc, &vc, &ctx, &nh, &nkv, &hd, &ks, &vs, &g->part_o, &g->part_ml, &att_heads, &v_smem, &tc_rows,
                          &merge, &g->att};
        void *a_tc[] = {&g->qkv, &g->pos, &g->seq, &g->tc_rows, &n, &kc, &vc, &ctx, &nh, &nkv, &hd, &ks, &vs, &parts, &g->part_o, &g->part_ml};
        void *a_comb[] = {&g->part_o, &g->part_ml, &parts, &nh, &hd, &g->att, &Ko, &mode, &s_o, &g->act, &g->act_s, &g->pos};
        void *a_n2[] = {&g->x, &null, &L->ffn_norm, &eps, &D, &K13, &mode, &s_13, &g->act, &g->act_s};
        int keep = g->silu_keep && !(s_2 > 0);   /* silu_mul_quant keeps the row for its second pass (dynamic scale) */
        void *a_silu[] = {&g->h13, &H, &K2, &mode, &s_2, &keep, &g->act, &g->act_s};
        /* calibration (bf16 scheme): each linear's input as quantized (bf16), the keys and values as cached */
#define CALIB(what, src, cols, ld, sq, ps) (m->calib ? calib_gpu(g, w8a8_calib_offset(c, l, what), src, cols, ld, sq, ps, ctx, n) : 0)
        if (fuse) {   /* decode: five launches a layer (six where RoPE is not fused: q/k norm) */
            gemv_in n1 = {.kind = IN_NORM, .K = D, .mode = mode, .static_scale = s_qkv, .eps = eps, .src = g->x, .w = L->attn_norm};
            gemv_in o = {.kind = IN_ROW, .K = qd, .mode = mode, .static_scale = s_o, .src = g->att};
            gemv_in n2 = {.kind = IN_NORM, .K = D, .mode = mode, .static_scale = s_13, .eps = eps, .src = g->x, .w = L->ffn_norm};
            gemv_in h = {.kind = IN_ROW, .K = H, .mode = mode, .static_scale = s_2, .src = g->h13};
            int rope = g->rope_fuse && !L->q_norm && !L->k_norm;
            if (rope) {
                n1.pos = g->pos; n1.seq = g->seq; n1.cos_t = g->rope_cos; n1.sin_t = g->rope_sin; n1.kcache = kc; n1.vcache = vc;
                n1.nh = nh; n1.nkv = nkv; n1.hd = hd; n1.ctx = ctx; n1.k_scale = ks; n1.v_scale = vs;
            }
            rc = gpu_gemm_in(g, g->gemm_fn, 0, g->act_s, &L->qkv, n, rope ? OUT_ROPE : 0, g->qkv, qd + 2 * kvd, &n1);
            if (!rc && !rope) rc = launch(g, F_ROPE, n, rope_blocks_y(nh, nkv), 1, 32 * ROPE_WARPS, a_rope);
            if (!rc) rc = launch_smem(g, F_ATTN, n, attention_blocks_y(nh, nkv, att_heads), splits, ATT_THREADS, v_smem, a_attn);
            if (!rc) rc = gpu_gemm_in(g, g->gemm_fn, 0, g->act_s, &L->o, n, 1, g->x, D, &o);
            if (!rc) rc = gpu_gemm_in(g, g->gemm_fn, 0, g->act_s, &L->w13, n, OUT_SILU, g->h13, H, &n2);   /* h13 holds silu(gate) * up, fp32 */
            if (!rc) rc = gpu_gemm_in(g, g->gemm_fn, 0, g->act_s, &L->w2, n, 1, g->x, D, &h);
            continue;
        }
        rc = launch(g, F_RMSNORM, n, 1, 1, NORM_BLOCK, a_n1);
        if (!rc) rc = CALIB(W8A8_CAL_QKV, g->act, D, Kq, 0, 0);
        if (!rc) rc = gpu_gemm(g, g->gemm_fn, g->act, g->act_s, &L->qkv, n, 0, g->qkv, qd + 2 * kvd);
        if (!rc) rc = launch(g, F_ROPE, n, rope_blocks_y(nh, nkv), 1, 32 * ROPE_WARPS, a_rope);
        if (!rc) rc = CALIB(W8A8_CAL_K, kc, kvd, kvd, g->seq, g->pos);
        if (!rc) rc = CALIB(W8A8_CAL_V, vc, kvd, kvd, g->seq, g->pos);
        if (!rc && tc != TC_ALL) rc = launch_smem(g, F_ATTN, n, attention_blocks_y(nh, nkv, att_heads), splits, ATT_THREADS, v_smem, a_attn);
        if (!rc && tc) rc = launch_smem(g, F_ATTN_TC, (n + TC_ROWS - 1) / TC_ROWS, nh, 1, TC_THREADS, TC_SMEM, a_tc);
        /* the chunks merged and the row quantized (a max and elementwise work: the result does not depend on the
         * block size, unlike rmsnorm_quant's sum, whose order the CPU reference follows) */
        if (!rc) rc = launch(g, F_COMBINE_QUANT, n, 1, 1, COMBINE_THREADS, a_comb);
        if (!rc) rc = CALIB(W8A8_CAL_O, g->act, qd, Ko, 0, 0);
        if (!rc) rc = gpu_gemm(g, g->gemm_fn, g->act, g->act_s, &L->o, n, 1, g->x, D);
        if (!rc) rc = launch(g, F_RMSNORM, n, 1, 1, NORM_BLOCK, a_n2);
        if (!rc) rc = CALIB(W8A8_CAL_W13, g->act, D, K13, 0, 0);
        if (!rc) rc = gpu_gemm(g, g->gemm_fn, g->act, g->act_s, &L->w13, n, 0, g->h13, 2 * H);
        if (!rc) rc = launch_smem(g, F_SILU, n, 1, 1, SILU_THREADS, keep ? sizeof(float) * H : 0, a_silu);
        if (!rc) rc = CALIB(W8A8_CAL_W2, g->act, H, K2, 0, 0);
        if (!rc) rc = gpu_gemm(g, g->gemm_fn, g->act, g->act_s, &L->w2, n, 1, g->x, D);
#undef CALIB
    }
    if (rc || !n_out) return rc;
    int bf = 0, V = c->vocab_size;
    if (fuse) {   /* the final norm made by the LM head's gemv (bf16) */
        gemv_in fn = {.kind = IN_NORM, .K = D, .mode = bf, .eps = eps, .src = g->x, .rows = g->rows, .w = g->out_norm};
        return gpu_gemm_in(g, F_GEMM_BF16, 0, 0, &g->head, n_out, 2, g->logits, V, &fn);
    }
    void *a_fn[] = {&g->x, &g->rows, &g->out_norm, &eps, &D, &g->Dp, &bf, &no_scale, &g->xn, &null};
    if ((rc = launch(g, F_RMSNORM, n_out, 1, 1, NORM_BLOCK, a_fn))) return rc;
    return gpu_gemm(g, F_GEMM_BF16, g->xn, 0, &g->head, n_out, 2, g->logits, V);
}

/* A decode step (every row wants its logits) is the same launches each time but for the positions, so it is
 * captured once per batch size as a CUDA graph and replayed: one launch instead of ~11 a layer. Its attention
 * launches a block for every chunk of positions the graph covers; those past a row's position return at once and
 * are skipped when combining (so the result is the same bits as without the graph), yet thousands of empty blocks
 * slow a long context's steps (H100, 4-layer model at position 1024, batch 64: 1.84 ms a step with 4,096 positions,
 * 2.19 with 32,768; run138). So a graph covers only the chunks up to the batch's last position, rounded up to 2^k
 * or 3 * 2^k (less than half again as many), and is made again, larger, when the positions outgrow it: a dozen
 * captures at most per batch size over the model's life (they never shrink: a later short sequence replays the
 * larger graph, as every step did before). Run140, the graph alone at 32,768 positions: batch 64 2.19 -> 1.83 ms,
 * batch 16 1.32 -> 1.25, batch 1 0.832 -> 0.824; at 4,096 the same as before. */
static int graph_chunks(const w8a8_model *m, int need) {
    int all = (m->max_ctx + ATT_CHUNK - 1) / ATT_CHUNK, b = 1;
    while (b < need) b = b == 1 ? 2 : (b & (b - 1)) ? b / 3 * 4 : b / 2 * 3;   /* 1, 2, 3, 4, 6, 8, 12, 16, ... */
    return b < all ? b : all;
}
/* the decode graph captured for batches of n rows, or NULL */
static gpu_graph *graph_for(gpu_state *g, int n) {
    for (int i = 0; i < g->n_graphs; i++) if (g->graphs[i].n == n) return &g->graphs[i];
    return NULL;
}
static int gpu_forward(w8a8_model *m, int n, const int *tok, const int *seq, const int *pos, const unsigned char *want) {
    gpu_state *g = m->gpu;
    int maxpos = 0, n_out = 0, rows[4096], rc;
    for (int i = 0; i < n; i++) { if (pos[i] > maxpos) maxpos = pos[i]; if (want[i]) rows[n_out++] = i; }
    cu.CtxSetCurrent(g->ctx);
    CUresult r;
    if ((r = cu.MemcpyHtoDAsync(g->tok, tok, sizeof(int) * n, g->stream)) || (r = cu.MemcpyHtoDAsync(g->seq, seq, sizeof(int) * n, g->stream)) ||
        (r = cu.MemcpyHtoDAsync(g->pos, pos, sizeof(int) * n, g->stream)) || (r = cu.MemcpyHtoDAsync(g->rows, rows, sizeof(int) * n_out, g->stream)))
        return fail(W8A8_ERR_GPU, "copying a batch to the GPU: %s", cu_str(r));
    /* the rows of prompts (runs of at least TC_MIN_RUN rows of one sequence) take the tensor-core attention;
     * decode steps (a row a sequence) never do */
    int on = 0, tc_rows[4096];
    for (int i = 0, j; i < n && g->att_tc; i = j) {
        for (j = i; j < n && seq[j] == seq[i]; j++) {}
        for (int k = i; k < j; k++) tc_rows[k] = j - i >= TC_MIN_RUN;
        if (j - i >= TC_MIN_RUN) on += j - i;
    }
    int tc = on == 0 ? TC_NONE : on == n ? TC_ALL : TC_SOME;
    if (tc && (r = cu.MemcpyHtoDAsync(g->tc_rows, tc_rows, sizeof(int) * n, g->stream)))
        return fail(W8A8_ERR_GPU, "copying a batch to the GPU: %s", cu_str(r));
    gpu_graph *gr = graph_for(g, n);
    int need = maxpos / ATT_CHUNK + 1;   /* attention's chunks of positions */
    if (!g->use_graphs || tc || n_out != n || m->calib || (!gr && g->n_graphs == MAX_GRAPHS))   /* launch by launch */
        return gpu_launch_forward(m, n, n_out, need, tc);
    int chunks = graph_chunks(m, need);
    if (!gr || gr->chunks < chunks) {
        CUgraph graph = NULL;
        CUgraphExec exec = NULL;
        if ((r = cu.StreamBeginCapture(g->stream, CU_STREAM_CAPTURE_MODE_RELAXED)))
            return fail(W8A8_ERR_GPU, "starting a CUDA graph capture: %s", cu_str(r));
        rc = gpu_launch_forward(m, n, n_out, chunks, 0);
        r = cu.StreamEndCapture(g->stream, &graph);
        if (rc || r || (r = cu.GraphInstantiateWithFlags(&exec, graph, 0))) {
            if (graph) cu.GraphDestroy(graph);
            return rc ? rc : fail(W8A8_ERR_GPU, "capturing the decode step as a CUDA graph: %s (W8A8_NO_GRAPH=1 turns graphs off)", cu_str(r));
        }
        cu.GraphDestroy(graph);
        if (gr) cu.GraphExecDestroy(gr->exec);   /* outgrown (a launch in flight still completes) */
        else gr = &g->graphs[g->n_graphs++];
        gr->n = n;
        gr->chunks = chunks;
        gr->exec = exec;
    }
    if ((r = cu.GraphLaunch(gr->exec, g->stream))) return fail(W8A8_ERR_GPU, "launching the decode step's CUDA graph: %s", cu_str(r));
    return W8A8_OK;
}

/* Waits for the GPU; a failed kernel shows up here. */
static int gpu_sync(gpu_state *g) {
    CUresult r = cu.StreamSynchronize(g->stream);
    if (g->prof) prof_collect(g);
    return r ? fail(W8A8_ERR_GPU, "a GPU kernel failed: %s", cu_str(r)) : W8A8_OK;
}

/* =========================================================================================================
 * 6. Forward pass: batches of rows through whichever backend runs the model
 * ======================================================================================================= */
static int forward(w8a8_model *m, int n, const int *tok, const int *seq, const int *pos, const unsigned char *want) {
    return m->gpu ? gpu_forward(m, n, tok, seq, pos, want) : cpu_forward(m, n, tok, seq, pos, want);
}

/* Row k of the last forward's logits becomes sequence seq's current logits. On the GPU they stay there
 * until asked for (w8a8_logits copies them back; greedy sampling takes the argmax on the GPU). */
static int keep_logits(w8a8_model *m, int k, int seq) {
    size_t V = m->cfg.vocab_size;
    if (m->gpu) {
        gpu_state *g = m->gpu;
        CUresult r = cu.MemcpyDtoDAsync(g->seq_logits + sizeof(float) * V * seq, g->logits + sizeof(float) * V * k, sizeof(float) * V, g->stream);
        m->logits_ready[seq] = 2;   /* on the GPU */
        return r ? fail(W8A8_ERR_GPU, "copying logits: %s", cu_str(r)) : W8A8_OK;
    }
    memcpy(m->logits + (size_t)seq * V, m->cpu->out + (size_t)k * V, V * sizeof(float));
    m->logits_ready[seq] = 1;
    return W8A8_OK;
}

/* Copies rows [0, k) of the last forward's logits to the host. */
static int fetch_logits(w8a8_model *m, int k, float *dst) {
    size_t bytes = sizeof(float) * m->cfg.vocab_size * k;
    if (!m->gpu) { memcpy(dst, m->cpu->out, bytes); return W8A8_OK; }
    int rc = gpu_sync(m->gpu);
    CUresult r = rc ? 0 : cu.MemcpyDtoH(dst, m->gpu->logits, bytes);
    return rc ? rc : r ? fail(W8A8_ERR_GPU, "copying logits back: %s", cu_str(r)) : W8A8_OK;
}

/* =========================================================================================================
 * 7. Sampling (llama2.c's: xorshift* random numbers, multinomial or nucleus sampling)
 * ======================================================================================================= */
static uint32_t rng_u32(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}
static float rng_f32(uint64_t *s) { return (rng_u32(s) >> 8) / 16777216.0f; }

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

typedef struct { float p; int i; } prob_index;
static int cmp_prob_desc(const void *a, const void *b) {
    float pa = ((const prob_index *)a)->p, pb = ((const prob_index *)b)->p;
    return pa > pb ? -1 : pa < pb ? 1 : 0;
}

int w8a8_sample_logits(const float *logits, int n, w8a8_sampler *s, int *token) {
    if (!logits || n <= 0 || !s || !token) return fail(W8A8_ERR_ARG, "w8a8_sample_logits: NULL argument or empty logits");
    if (!(s->temperature >= 0) || !(s->top_p >= 0)) return fail(W8A8_ERR_ARG, "temperature and top_p must be >= 0");
    for (int i = 0; i < n; i++)
        if (!isfinite(logits[i]))
            return fail(W8A8_ERR_ARG, "logit %d is %g: the model's weights or its computation are broken", i, logits[i]);
    if (s->temperature == 0.0f) { *token = argmax(logits, n); return W8A8_OK; }
    if (s->seed == 0) s->seed = 0x9e3779b97f4a7c15ull;
    float *p = malloc(sizeof(float) * n);
    prob_index *pi = NULL;
    if (!p) return fail(W8A8_ERR_NOMEM, "out of memory");
    float mx = logits[0] / s->temperature, sum = 0.0f;
    for (int i = 0; i < n; i++) { p[i] = logits[i] / s->temperature; mx = fmaxf(mx, p[i]); }
    for (int i = 0; i < n; i++) { p[i] = expf(p[i] - mx); sum += p[i]; }
    if (!(sum >= 1.0f) || !isfinite(sum) || !isfinite(mx)) {   /* the max term alone is exp(0) = 1 */
        free(p);
        return fail(W8A8_ERR_ARG, "the logits overflow at temperature %g: the model's weights or its computation are broken", s->temperature);
    }
    for (int i = 0; i < n; i++) p[i] /= sum;
    float coin = rng_f32(&s->seed), cdf = 0.0f;
    int pick = n - 1;
    if (s->top_p <= 0.0f || s->top_p >= 1.0f) {
        for (int i = 0; i < n; i++) { cdf += p[i]; if (coin < cdf) { pick = i; break; } }
    } else {
        /* keep the smallest set of tokens whose probability exceeds top_p (tokens below (1-p)/(n-1) can't
         * be in it, so they are dropped before sorting) */
        pi = malloc(sizeof(prob_index) * n);
        if (!pi) { free(p); return fail(W8A8_ERR_NOMEM, "out of memory"); }
        float cutoff = n > 1 ? (1.0f - s->top_p) / (n - 1) : 0.0f;
        int n0 = 0;
        for (int i = 0; i < n; i++) if (p[i] >= cutoff) pi[n0++] = (prob_index){p[i], i};
        qsort(pi, n0, sizeof *pi, cmp_prob_desc);
        float cum = 0.0f;
        int last = n0 - 1;   /* n0 >= 1: the largest probability is at least 1/n > cutoff */
        for (int i = 0; i < n0; i++) { cum += pi[i].p; if (cum > s->top_p) { last = i; break; } }
        float r = coin * cum;
        pick = pi[last].i;
        for (int i = 0; i <= last; i++) { cdf += pi[i].p; if (r < cdf) { pick = pi[i].i; break; } }
    }
    free(p); free(pi);
    *token = pick;
    return W8A8_OK;
}

/* =========================================================================================================
 * 8. Public API
 * ======================================================================================================= */
w8a8_options w8a8_default_options(void) {
    w8a8_options o = {0};
    o.device = -1;
    return o;
}

/* --- open handles: every call checks its handle against this list, so a closed or made-up handle is an
 * error, not a crash --- */
static pthread_mutex_t g_live_lock = PTHREAD_MUTEX_INITIALIZER;
static w8a8_model **g_live;
static int g_n_live;
static int live_add(w8a8_model *m) {
    pthread_mutex_lock(&g_live_lock);
    w8a8_model **n = realloc(g_live, sizeof *n * (g_n_live + 1));
    if (n) { g_live = n; g_live[g_n_live++] = m; }
    pthread_mutex_unlock(&g_live_lock);
    return n ? W8A8_OK : fail(W8A8_ERR_NOMEM, "out of memory");
}
static int live_remove(w8a8_model *m) {
    int found = 0;
    pthread_mutex_lock(&g_live_lock);
    for (int i = 0; i < g_n_live; i++) if (g_live[i] == m) { g_live[i] = g_live[--g_n_live]; found = 1; break; }
    pthread_mutex_unlock(&g_live_lock);
    return found;
}
static int is_live(const w8a8_model *m) {
    int found = 0;
    pthread_mutex_lock(&g_live_lock);
    for (int i = 0; i < g_n_live && !found; i++) found = g_live[i] == m;
    pthread_mutex_unlock(&g_live_lock);
    return found;
}
#define CHECK_MODEL(m) do { if (!(m)) return fail(W8A8_ERR_ARG, "NULL model"); \
    if (!is_live(m)) return fail(W8A8_ERR_ARG, "not an open model (closed already?)"); } while (0)

static void model_free(w8a8_model *m) {
    if (!m) return;
    gpu_free(m->gpu);
    cpu_free(m->cpu);
    tokenizer_free(&m->tok);
    free(m->layers); free(m->rope_cos); free(m->rope_sin);
    free(m->seq_len); free(m->logits); free(m->logits_ready); free(m->chat_tmpl); free(m->calib);
    if (m->map && !m->borrowed) munmap(m->map, m->map_bytes);
    if (m->fd >= 0) close(m->fd);
    free(m);
}

void w8a8_close(w8a8_model *m) {
    if (m && live_remove(m)) model_free(m);   /* a handle not open (closed twice, made up) is left alone */
}

/* Everything after the image is in memory: checks, weights, tables, the backend. */
static int finish_open(w8a8_model *m, const char *name) {
    int rc = check_image(m, name);
    if (!rc) rc = bind_weights(m);
    if (rc) return rc;
    const w8a8_config *c = &m->cfg;
    if (m->opt.max_context < 0 || m->opt.max_context > (int)c->max_context)
        return fail(W8A8_ERR_ARG, "context %d is outside 1..%u (the model's maximum)", m->opt.max_context, c->max_context);
    if (m->opt.max_batch < 0 || m->opt.max_batch > 4096) return fail(W8A8_ERR_ARG, "max_batch %d is outside 1..4096", m->opt.max_batch);
    m->max_ctx = m->opt.max_context ? m->opt.max_context : c->max_context < 4096 ? (int)c->max_context : 4096;
    m->max_batch = m->opt.max_batch ? m->opt.max_batch : 1;
    m->seq_len = malloc(sizeof(int) * m->max_batch);
    m->logits_ready = calloc(m->max_batch, sizeof(int));
    m->logits = malloc(sizeof(float) * m->max_batch * (size_t)c->vocab_size);
    m->chat_tmpl = strndup(m->tok.chat_template, m->tok.template_bytes);
    if (!m->seq_len || !m->logits_ready || !m->logits || !m->chat_tmpl) return fail(W8A8_ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->max_batch; i++) m->seq_len[i] = -1;
    if ((rc = build_rope(m))) return rc;
    if (!m->opt.force_cpu) {
        rc = gpu_open(m);
        if (rc && m->opt.require_gpu) return rc;
        if (rc) {
            snprintf(m->fallback, sizeof m->fallback, "%s", g_error);
            gpu_free(m->gpu);   /* whatever a failed start made */
            m->gpu = NULL;
        }
    } else snprintf(m->fallback, sizeof m->fallback, "the CPU was asked for");
    if (!m->gpu && (rc = cpu_init(m))) return rc;
    return live_add(m);
}

static w8a8_model *model_new(const w8a8_options *opt) {
    init_tables();
    w8a8_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->fd = -1;
    m->opt = opt ? *opt : w8a8_default_options();
    return m;
}

int w8a8_open(w8a8_model **out, const char *path, const w8a8_options *opt) {
    if (!out || !path) return fail(W8A8_ERR_ARG, "w8a8_open: NULL argument");
    *out = NULL;
    w8a8_model *m = model_new(opt);
    if (!m) return fail(W8A8_ERR_NOMEM, "out of memory");
    int rc = map_file(m, path);
    if (!rc) rc = finish_open(m, path);
    if (rc) { int keep = rc; char msg[sizeof g_error]; memcpy(msg, g_error, sizeof msg); model_free(m); memcpy(g_error, msg, sizeof msg); return keep; }
    *out = m;
    return W8A8_OK;
}

int w8a8_open_memory(w8a8_model **out, const void *data, size_t n, const w8a8_options *opt) {
    if (!out || !data) return fail(W8A8_ERR_ARG, "w8a8_open_memory: NULL argument");
    *out = NULL;
    if ((uintptr_t)data % 8) return fail(W8A8_ERR_ARG, "w8a8_open_memory: the image must be 8-byte aligned (256 for speed)");
    w8a8_model *m = model_new(opt);
    if (!m) return fail(W8A8_ERR_NOMEM, "out of memory");
    m->map = (unsigned char *)data;
    m->map_bytes = n;
    m->borrowed = 1;
    int rc = finish_open(m, "model image");
    if (rc) { int keep = rc; char msg[sizeof g_error]; memcpy(msg, g_error, sizeof msg); model_free(m); memcpy(g_error, msg, sizeof msg); return keep; }
    *out = m;
    return W8A8_OK;
}

const w8a8_config *w8a8_config_of(const w8a8_model *m) { return m && is_live(m) ? &m->cfg : NULL; }
int w8a8_on_gpu(const w8a8_model *m) { return m && is_live(m) && m->gpu; }
int w8a8_context_of(const w8a8_model *m) { return m && is_live(m) ? m->max_ctx : 0; }
const char *w8a8_fallback_reason(const w8a8_model *m) { return m && is_live(m) && !m->gpu ? m->fallback : ""; }
const char *w8a8_chat_template(const w8a8_model *m) { return m && is_live(m) && m->chat_tmpl ? m->chat_tmpl : ""; }
const char *w8a8_backend_info(const w8a8_model *m) { return m && is_live(m) && m->gpu ? m->gpu->info : ""; }
const char *w8a8_device_name(const w8a8_model *m) { return !m || !is_live(m) ? "" : m->gpu ? gpu_name(m->gpu) : "CPU reference"; }

int w8a8_tokenize(w8a8_model *m, const char *text, int add_bos, int *ids, int max_ids, int *n_ids) {
    CHECK_MODEL(m);
    if (!m || !text || !n_ids || (max_ids > 0 && !ids)) return fail(W8A8_ERR_ARG, "w8a8_tokenize: NULL argument");
    ivec v = {0};
    if (add_bos && m->cfg.bos_id >= 0 && (m->tok.flags & W8A8_TOKF_ADD_BOS)) ivec_push(&v, m->cfg.bos_id);
    int rc = tokenize(&m->tok, text, strlen(text), &v);
    if (rc) { free(v.v); return rc; }
    *n_ids = v.n;
    if (v.n > max_ids) rc = fail(W8A8_ERR_ARG, "the text is %d tokens, more than the %d that fit", v.n, max_ids);
    else if (v.n) memcpy(ids, v.v, sizeof(int) * v.n);
    free(v.v);
    return rc;
}

int w8a8_token_bytes(w8a8_model *m, int id, const char **bytes, int *len) {
    CHECK_MODEL(m);
    if (!m || !bytes || !len) return fail(W8A8_ERR_ARG, "w8a8_token_bytes: NULL argument");
    if (id < 0 || id >= m->tok.n_tokens) return fail(W8A8_ERR_TOKEN, "token id %d is outside 0..%d", id, m->tok.n_tokens - 1);
    *bytes = (const char *)tok_text(&m->tok, id, len);
    return W8A8_OK;
}

int w8a8_decode(w8a8_model *m, w8a8_decoder *d, int id, char *out, int cap, int *len) {
    CHECK_MODEL(m);
    if (!m || !d || !out || !len) return fail(W8A8_ERR_ARG, "w8a8_decode: NULL argument");
    if (id < 0 || id >= m->tok.n_tokens) return fail(W8A8_ERR_TOKEN, "token id %d is outside 0..%d", id, m->tok.n_tokens - 1);
    return decode_stream(&m->tok, d, id, out, cap, len);
}

static int check_seq(const w8a8_model *m, int seq) {
    CHECK_MODEL(m);
    if (seq < 0 || seq >= m->max_batch || m->seq_len[seq] < 0)
        return fail(W8A8_ERR_ARG, "sequence %d is not started (this model holds %d; see w8a8_seq_start)", seq, m->max_batch);
    return W8A8_OK;
}

int w8a8_seq_start(w8a8_model *m, int *seq) {
    CHECK_MODEL(m);
    if (!m || !seq) return fail(W8A8_ERR_ARG, "w8a8_seq_start: NULL argument");
    for (int i = 0; i < m->max_batch; i++)
        if (m->seq_len[i] < 0) { m->seq_len[i] = 0; m->logits_ready[i] = 0; *seq = i; return W8A8_OK; }
    return fail(W8A8_ERR_ARG, "all %d sequences are in use (raise max_batch, or end one)", m->max_batch);
}
int w8a8_seq_reset(w8a8_model *m, int seq) {
    int rc = check_seq(m, seq);
    if (!rc) { m->seq_len[seq] = 0; m->logits_ready[seq] = 0; }
    return rc;
}
int w8a8_seq_end(w8a8_model *m, int seq) {
    int rc = check_seq(m, seq);
    if (!rc) m->seq_len[seq] = -1;
    return rc;
}
int w8a8_seq_length(w8a8_model *m, int seq, int *n) {
    int rc = check_seq(m, seq);
    if (!rc && !n) rc = fail(W8A8_ERR_ARG, "NULL argument");
    if (!rc) *n = m->seq_len[seq];
    return rc;
}

static int check_tokens(const w8a8_model *m, const int *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= (int)m->cfg.vocab_size)
            return fail(W8A8_ERR_TOKEN, "token id %d is outside the vocabulary 0..%u", ids[i], m->cfg.vocab_size - 1);
    return W8A8_OK;
}

/* n more positions fit in sequence seq */
static int check_fits(const w8a8_model *m, int seq, int n) {
    if (n > m->max_ctx - m->seq_len[seq])
        return fail(W8A8_ERR_CONTEXT, "%d more tokens do not fit: sequence %d holds %d of %d positions (raise the context)",
                    n, seq, m->seq_len[seq], m->max_ctx);
    return W8A8_OK;
}

/* no sequence is given twice to `who` */
static int check_distinct(const int *seqs, int n, const char *who) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return fail(W8A8_ERR_ARG, "%s: sequence %d is given twice", who, seqs[i]);
    return W8A8_OK;
}

/* Feeds ids to one sequence, FEED_CHUNK rows a forward pass; all_logits receives every row's logits. */
static int feed_all_logits(w8a8_model *m, int seq, const int *ids, int n, float *all_logits) {
    int rc, seqs[FEED_CHUNK], pos[FEED_CHUNK];
    unsigned char want[FEED_CHUNK];
    if ((rc = check_tokens(m, ids, n)) || (rc = check_fits(m, seq, n))) return rc;
    for (int done = 0; done < n;) {
        int k = n - done < FEED_CHUNK ? n - done : FEED_CHUNK;
        for (int i = 0; i < k; i++) { seqs[i] = seq; pos[i] = m->seq_len[seq] + i; want[i] = 1; }
        m->logits_ready[seq] = 0;
        if ((rc = forward(m, k, ids + done, seqs, pos, want))) return rc;
        m->seq_len[seq] += k;
        if ((rc = fetch_logits(m, k, all_logits + (size_t)done * m->cfg.vocab_size))) return rc;
        done += k;
        if (done == n && (rc = keep_logits(m, k - 1, seq))) return rc;
    }
    return W8A8_OK;
}

/* Feeds the prompts of several sequences: their rows are packed, one sequence after another, into forward
 * passes of up to m->feed_rows rows (a pass may hold the end of one prompt and the start of the next), so
 * many short prompts make the large GEMMs a long prompt makes. Only each prompt's last row gets logits. */
static int feed_seqs(w8a8_model *m, int n_seqs, const int *seqs, const int *const *ids, const int *n) {
    int rc;
    for (int i = 0; i < n_seqs; i++) {
        if ((rc = check_seq(m, seqs[i]))) return rc;
        if (!ids[i] || n[i] <= 0) return fail(W8A8_ERR_ARG, "nothing to feed (%d tokens)", n[i]);
        if ((rc = check_fits(m, seqs[i], n[i])) || (rc = check_tokens(m, ids[i], n[i]))) return rc;
    }
    if ((rc = check_distinct(seqs, n_seqs, "w8a8_feed_batch"))) return rc;
    int R = m->gpu ? m->gpu->prefill_rows : FEED_CHUNK, *tok = malloc(sizeof(int) * 3 * R), *sq = tok + R, *ps = sq + R;
    unsigned char *want = malloc(R);
    if (!tok || !want) { free(tok); free(want); return fail(W8A8_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < n_seqs; i++) m->logits_ready[seqs[i]] = 0;
    rc = W8A8_OK;
    for (int i = 0, off = 0; i < n_seqs;) {   /* (i, off): the next row to feed */
        int k = 0, n_out = 0;
        while (k < R && i < n_seqs) {
            int take = n[i] - off < R - k ? n[i] - off : R - k, s = seqs[i];
            for (int j = 0; j < take; j++, k++) {
                tok[k] = ids[i][off + j]; sq[k] = s; ps[k] = m->seq_len[s] + j;   /* seq_len: the rows of earlier passes */
                want[k] = off + j == n[i] - 1;
            }
            if ((off += take) == n[i]) { i++; off = 0; }
        }
        if ((rc = forward(m, k, tok, sq, ps, want))) break;
        for (int r = 0; r < k; r++) m->seq_len[sq[r]] = ps[r] + 1;
        for (int r = 0; r < k && !rc; r++) if (want[r]) rc = keep_logits(m, n_out++, sq[r]);
        if (rc) break;
    }
    free(tok); free(want);
    return rc;
}

int w8a8_feed(w8a8_model *m, int seq, const int *ids, int n) { return feed_seqs(m, 1, &seq, &ids, &n); }

int w8a8_feed_batch(w8a8_model *m, int n_seqs, const int *seqs, const int *const *ids, const int *n) {
    CHECK_MODEL(m);
    if (!seqs || !ids || !n || n_seqs <= 0) return fail(W8A8_ERR_ARG, "w8a8_feed_batch: NULL argument or no sequences");
    if (n_seqs > m->max_batch) return fail(W8A8_ERR_ARG, "w8a8_feed_batch: %d sequences, more than max_batch %d", n_seqs, m->max_batch);
    return feed_seqs(m, n_seqs, seqs, ids, n);
}

int w8a8_step(w8a8_model *m, int n_seqs, const int *seqs, const int *ids) {
    CHECK_MODEL(m);
    if (!m || !seqs || !ids || n_seqs <= 0) return fail(W8A8_ERR_ARG, "w8a8_step: NULL argument or no sequences");
    if (n_seqs > m->max_batch) return fail(W8A8_ERR_ARG, "w8a8_step: %d sequences, more than max_batch %d", n_seqs, m->max_batch);
    int rc, pos[4096];
    unsigned char want[4096];
    if ((rc = check_tokens(m, ids, n_seqs))) return rc;
    if ((rc = check_distinct(seqs, n_seqs, "w8a8_step"))) return rc;
    for (int i = 0; i < n_seqs; i++) {
        if ((rc = check_seq(m, seqs[i]))) return rc;
        if (m->seq_len[seqs[i]] >= m->max_ctx)
            return fail(W8A8_ERR_CONTEXT, "sequence %d is full (%d positions)", seqs[i], m->max_ctx);
        pos[i] = m->seq_len[seqs[i]];
        want[i] = 1;
    }
    if ((rc = forward(m, n_seqs, ids, seqs, pos, want))) return rc;
    for (int i = 0; i < n_seqs; i++) m->seq_len[seqs[i]]++;
    for (int i = 0; i < n_seqs; i++) if ((rc = keep_logits(m, i, seqs[i]))) return rc;
    return W8A8_OK;
}

int w8a8_logits(w8a8_model *m, int seq, const float **logits) {
    int rc = check_seq(m, seq);
    if (rc) return rc;
    if (!logits) return fail(W8A8_ERR_ARG, "NULL argument");
    if (!m->logits_ready[seq]) return fail(W8A8_ERR_ARG, "sequence %d has no logits yet (feed it first)", seq);
    size_t V = m->cfg.vocab_size;
    if (m->logits_ready[seq] == 2) {   /* still on the GPU */
        gpu_state *g = m->gpu;
        if ((rc = gpu_sync(g))) return rc;
        CUresult r = cu.MemcpyDtoH(m->logits + V * seq, g->seq_logits + sizeof(float) * V * seq, sizeof(float) * V);
        if (r) return fail(W8A8_ERR_GPU, "copying logits back: %s", cu_str(r));
        m->logits_ready[seq] = 1;
    }
    *logits = m->logits + V * seq;
    return W8A8_OK;
}

int w8a8_sample(w8a8_model *m, int seq, w8a8_sampler *s, int *token) {
    const float *lg = NULL;
    int rc = check_seq(m, seq);
    if (rc) return rc;
    if (s && token && s->temperature == 0.0f && m->logits_ready[seq] == 2) {   /* greedy on the GPU: 4 bytes back */
        gpu_state *g = m->gpu;
        CUdeviceptr row = g->seq_logits + sizeof(float) * m->cfg.vocab_size * seq, out = g->argmax, none = 0;
        int V = m->cfg.vocab_size;
        void *args[] = {&row, &none, &V, &out};
        CUresult r;
        if ((rc = launch(g, F_ARGMAX, 1, 1, 1, 1024, args)) || (rc = gpu_sync(g))) return rc;
        if ((r = cu.MemcpyDtoH(token, out, sizeof(int)))) return fail(W8A8_ERR_GPU, "copying a token back: %s", cu_str(r));
        return W8A8_OK;
    }
    rc = w8a8_logits(m, seq, &lg);
    return rc ? rc : w8a8_sample_logits(lg, m->cfg.vocab_size, s, token);
}

int w8a8_sample_greedy(w8a8_model *m, int n_seqs, const int *seqs, int *tokens) {
    CHECK_MODEL(m);
    if (!seqs || !tokens || n_seqs <= 0 || n_seqs > m->max_batch) return fail(W8A8_ERR_ARG, "w8a8_sample_greedy: NULL argument or %d sequences", n_seqs);
    int rc, on_gpu = 1;
    for (int i = 0; i < n_seqs; i++) {
        if ((rc = check_seq(m, seqs[i]))) return rc;
        if (!m->logits_ready[seqs[i]]) return fail(W8A8_ERR_ARG, "sequence %d has no logits yet (feed it first)", seqs[i]);
        on_gpu &= m->logits_ready[seqs[i]] == 2;
    }
    if (!on_gpu) {
        for (int i = 0; i < n_seqs; i++) {
            const float *lg;
            if ((rc = w8a8_logits(m, seqs[i], &lg))) return rc;
            tokens[i] = argmax(lg, m->cfg.vocab_size);
        }
        return W8A8_OK;
    }
    gpu_state *g = m->gpu;
    CUresult r;
    int V = m->cfg.vocab_size;
    void *args[] = {&g->seq_logits, &g->sample_rows, &V, &g->argmax};
    if ((r = cu.MemcpyHtoDAsync(g->sample_rows, seqs, sizeof(int) * n_seqs, g->stream))) return fail(W8A8_ERR_GPU, "copying sequence ids: %s", cu_str(r));
    if ((rc = launch(g, F_ARGMAX, n_seqs, 1, 1, 1024, args)) || (rc = gpu_sync(g))) return rc;
    if ((r = cu.MemcpyDtoH(tokens, g->argmax, sizeof(int) * n_seqs))) return fail(W8A8_ERR_GPU, "copying tokens back: %s", cu_str(r));
    return W8A8_OK;
}

/* On the GPU: the rows' negative log-likelihoods are computed there; one float a row comes back. */
static int gpu_score(w8a8_model *m, int seq, const int *ids, int n, double *nll_sum) {
    gpu_state *g = m->gpu;
    int rc = w8a8_seq_reset(m, seq), seqs[FEED_CHUNK], pos[FEED_CHUNK], V = m->cfg.vocab_size;
    unsigned char want[FEED_CHUNK];
    float nll[FEED_CHUNK];
    double sum = 0;
    if (rc || (rc = check_tokens(m, ids, n))) return rc;
    if (n > m->max_ctx) return fail(W8A8_ERR_CONTEXT, "%d tokens do not fit the context of %d", n, m->max_ctx);
    for (int done = 0; done < n - 1;) {
        int k = n - 1 - done < FEED_CHUNK ? n - 1 - done : FEED_CHUNK;   /* rows done..done+k-1 predict ids[+1] */
        for (int i = 0; i < k; i++) { seqs[i] = seq; pos[i] = done + i; want[i] = 1; }
        if ((rc = forward(m, k, ids + done, seqs, pos, want))) return rc;
        CUresult r = cu.MemcpyHtoDAsync(g->tok, ids + done + 1, sizeof(int) * k, g->stream);   /* targets */
        CUdeviceptr out = g->part_ml;
        void *args[] = {&g->logits, &g->tok, &V, &out};
        if (r) return fail(W8A8_ERR_GPU, "copying targets: %s", cu_str(r));
        if ((rc = launch(g, F_NLL, k, 1, 1, 1024, args)) || (rc = gpu_sync(g))) return rc;
        if ((r = cu.MemcpyDtoH(nll, out, sizeof(float) * k))) return fail(W8A8_ERR_GPU, "copying back: %s", cu_str(r));
        for (int i = 0; i < k; i++) sum += nll[i];
        done += k;
        m->seq_len[seq] = done;
    }
    *nll_sum = sum;
    return W8A8_OK;
}

int w8a8_score(w8a8_model *m, int seq, const int *ids, int n, double *nll_sum, int *n_scored) {
    CHECK_MODEL(m);
    if (!m || !ids || !nll_sum || !n_scored || n < 2) return fail(W8A8_ERR_ARG, "w8a8_score: NULL argument or fewer than 2 tokens");
    if (m->gpu) {
        int rc = check_seq(m, seq);
        if (!rc) rc = gpu_score(m, seq, ids, n, nll_sum);
        if (!rc) *n_scored = n - 1;
        return rc;
    }
    size_t V = m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * V * n);
    if (!lg) return fail(W8A8_ERR_NOMEM, "out of memory for %d rows of logits", n);
    int rc = w8a8_seq_reset(m, seq);
    if (!rc) rc = feed_all_logits(m, seq, ids, n, lg);
    double nll = 0;
    for (int i = 0; !rc && i + 1 < n; i++) {
        const float *row = lg + V * i;
        float mx = row[0];
        for (size_t j = 1; j < V; j++) mx = fmaxf(mx, row[j]);
        double sum = 0;
        for (size_t j = 0; j < V; j++) sum += exp((double)row[j] - mx);
        nll += log(sum) + mx - row[ids[i + 1]];
    }
    free(lg);
    if (!rc) { *nll_sum = nll; *n_scored = n - 1; }
    return rc;
}

/* --- calibration --- */
size_t w8a8_calib_size(const w8a8_model *m) { return m && is_live(m) ? w8a8_calib_offset(&m->cfg, m->cfg.n_layers, 0) : 0; }

int w8a8_calibrate(w8a8_model *m, int on) {
    CHECK_MODEL(m);
    size_t n = w8a8_calib_size(m);
    if (!on) { free(m->calib); m->calib = NULL; return W8A8_OK; }
    if (m->gpu && (m->cfg.scheme != W8A8_BF16 || m->cfg.kv_dtype != W8A8_KV_16))
        return fail(W8A8_ERR_ARG, "calibration on the GPU runs a bf16 model with a bf16 KV cache (this one is %s%s)",
                    w8a8_scheme_name(m->cfg.scheme), m->cfg.kv_dtype ? ", fp8 KV cache" : "");
    if (!m->calib && !(m->calib = malloc(n * sizeof(float)))) return fail(W8A8_ERR_NOMEM, "out of memory for calibration statistics");
    for (size_t i = 0; i < n; i++) m->calib[i] = 0.0f;
    if (m->gpu) {
        gpu_state *g = m->gpu;
        int rc;
        cu.CtxSetCurrent(g->ctx);
        if (!g->calib && (rc = gpu_alloc(g, &g->calib, n * sizeof(float), "calibration statistics"))) return rc;
        CUresult r = cu.MemsetD8(g->calib, 0, n * sizeof(float));
        if (r) return fail(W8A8_ERR_GPU, "clearing calibration statistics: %s", cu_str(r));
    }
    return W8A8_OK;
}

int w8a8_calib_stats(w8a8_model *m, float *out, size_t n_floats) {
    CHECK_MODEL(m);
    size_t n = w8a8_calib_size(m);
    if (!out || n_floats < n) return fail(W8A8_ERR_ARG, "w8a8_calib_stats: NULL or too small (%zu floats, need %zu)", n_floats, n);
    if (!m->calib) return fail(W8A8_ERR_ARG, "w8a8_calib_stats: calibration is not on (w8a8_calibrate(m, 1) first)");
    if (m->gpu) {
        int rc = gpu_sync(m->gpu);
        if (rc) return rc;
        CUresult r = cu.MemcpyDtoH(out, m->gpu->calib, n * sizeof(float));
        if (r) return fail(W8A8_ERR_GPU, "copying calibration statistics back: %s", cu_str(r));
    } else if (out != m->calib) memcpy(out, m->calib, n * sizeof(float));
    return W8A8_OK;
}
