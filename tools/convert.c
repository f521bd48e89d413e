/* convert — writes a w8a8 model file from a llama2.c checkpoint, a GGUF file or a Hugging Face directory.
 *
 *   ./convert INPUT -o OUT [--scheme f32|bf16|fp8|int8|fp8-static|int8-sq] [--tokenizer FILE] [--quiet]
 *             [--act static|dynamic] [--smooth|--no-smooth] [--alpha A|auto] [--kv bf16|fp8]
 *             [--calib TEXT [--calib-tokens N] [--calib-save FILE] | --calib-load FILE] [--calib-cpu] [--rotate]
 *
 * Sections below, in the order the work flows: reading the sources (GGUF, safetensors incl. pre-quantized
 * FP8, llama2.c), tokenizers, quantization of a weight, the plan of the output file, calibration statistics
 * and SmoothQuant, writing, calibration runs, main.
 *
 * INPUT is a llama2.c checkpoint (legacy format; give its tokenizer.bin with --tokenizer) or a directory
 * with config.json, model.safetensors (or shards and model.safetensors.index.json), tokenizer.json (or
 * --tokenizer tokenizer.bin) and tokenizer_config.json. The output is written to OUT.tmp.PID and renamed,
 * so an interrupted run never leaves a half-written model. */
#define _GNU_SOURCE
#include "../w8a8.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp_path[4200];
static int g_quiet;

/* Allocation: in the fuzz build (fuzz/fuzz_convert.c) every block is tracked, die() jumps back to the
 * harness instead of exiting, and the harness frees what an input left behind. */
#ifdef W8A8_FUZZ
#include <setjmp.h>
static jmp_buf *g_die_jump;
static void *g_blocks[1 << 18];
static int g_n_blocks;
static void *track(void *p) { if (p && g_n_blocks < (1 << 18)) g_blocks[g_n_blocks++] = p; return p; }
static void untrack(void *p) {
    for (int i = g_n_blocks - 1; p && i >= 0; i--) if (g_blocks[i] == p) { g_blocks[i] = g_blocks[--g_n_blocks]; return; }
}
static void *t_malloc(size_t n) { return track(malloc(n)); }
static void *t_calloc(size_t n, size_t s) { return track(calloc(n, s)); }
static void *t_realloc(void *p, size_t n) { void *q = realloc(p, n); if (q) { untrack(p); track(q); } return q; }
static void t_free(void *p) { untrack(p); free(p); }
static char *t_strdup(const char *s) { return track(strdup(s)); }
#define J_MALLOC t_malloc
#define J_REALLOC t_realloc
#define J_FREE t_free
#define MALLOC t_malloc
#define CALLOC t_calloc
#define REALLOC t_realloc
#define FREE t_free
#define STRDUP t_strdup
#else
#define MALLOC malloc
#define CALLOC calloc
#define REALLOC realloc
#define FREE free
#define STRDUP strdup
#endif
#include "json.h"

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
#ifdef W8A8_FUZZ
    if (g_die_jump) longjmp(*g_die_jump, 1);   /* quietly: the fuzzer feeds it nonsense on purpose */
#endif
    va_start(ap, fmt);
    fprintf(stderr, "convert: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (g_tmp_path[0]) unlink(g_tmp_path);
    exit(1);
}
static void on_signal(int sig) {
    if (g_tmp_path[0]) unlink(g_tmp_path);
    signal(sig, SIG_DFL);
    raise(sig);
}
static void *xmalloc(size_t n) {
    void *p = MALLOC(n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}
static void *xcalloc(size_t n, size_t s) {
    void *p = CALLOC(n ? n : 1, s ? s : 1);
    if (!p) die("out of memory (%zu bytes)", n * s);
    return p;
}

/* A number read from a file, as an integer in [lo, hi]: anything else (a fraction, NaN, 3e84) is the file's
 * error, never a cast out of range. */
static long long int_in(double v, long long lo, long long hi, const char *what, const char *path) {
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v))
        die("'%s': %s = %g is not a whole number in %lld..%lld", path, what, v, lo, hi);
    return (long long)v;
}

typedef struct { unsigned char *p; size_t n; } blob;
#ifdef W8A8_FUZZ
static blob g_maps[64];
static int g_n_maps;
#endif
static blob map_file(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) die("'%s' is not a readable file", path);
    blob b = {NULL, (size_t)st.st_size};
    if (b.n) {
        b.p = mmap(NULL, b.n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (b.p == MAP_FAILED) die("cannot map '%s': %s", path, strerror(errno));
    }
    close(fd);
#ifdef W8A8_FUZZ
    if (b.p && g_n_maps < 64) g_maps[g_n_maps++] = b;
#endif
    return b;
}
static void unmap_blob(blob b) {
#ifdef W8A8_FUZZ
    for (int i = 0; i < g_n_maps; i++) if (g_maps[i].p == b.p) { g_maps[i] = g_maps[--g_n_maps]; break; }
#endif
    if (b.p) munmap(b.p, b.n);
}

static jv read_json(const char *path) {
    blob b = map_file(path);
    jv v;
    char err[200];
    if (json_parse((const char *)b.p, b.n, &v, err, sizeof err)) die("'%s' is not valid JSON: %s", path, err);
    unmap_blob(b);
    return v;
}
static int file_exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

static void progress(const char *what, int done, int total) {
    if (g_quiet || !isatty(2)) {
        if (!g_quiet && done == total) fprintf(stderr, "%s: %d/%d\n", what, done, total);
        return;
    }
    int w = 40, f = total ? done * w / total : w;
    fprintf(stderr, "\r%-10s [", what);
    for (int i = 0; i < w; i++) fputc(i < f ? '#' : '.', stderr);
    fprintf(stderr, "] %d/%d", done, total);
    if (done == total) fputc('\n', stderr);
}

/* =========================================================================================================
 * GGUF (v2, v3): metadata, tokenizer and tensors, dequantized to fp32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K)
 * ======================================================================================================= */
enum { G_U8, G_I8, G_U16, G_I16, G_U32, G_I32, G_F32, G_BOOL, G_STR, G_ARR, G_U64, G_I64, G_F64 };
enum { GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q4_1 = 3, GT_Q8_0 = 8, GT_Q6_K = 14, GT_BF16 = 30 };
typedef struct { const char *key; int klen, type, arr_type; uint64_t n; const unsigned char *val; } gguf_kv;
typedef struct { char name[96]; int type; uint64_t ne[4]; int nd; const unsigned char *data; uint64_t bytes; } gguf_tensor;
typedef struct { blob b; gguf_kv *kv; uint64_t n_kv; gguf_tensor *t; uint64_t n_t; const char *path; } gguf_file;

typedef struct { const unsigned char *p, *end; const char *path; } gcur;
static void gneed(gcur *c, uint64_t n) { if ((uint64_t)(c->end - c->p) < n) die("'%s': the GGUF file is truncated or malformed", c->path); }
static uint64_t gu64(gcur *c) { uint64_t v; gneed(c, 8); memcpy(&v, c->p, 8); c->p += 8; return v; }
static uint32_t gu32(gcur *c) { uint32_t v; gneed(c, 4); memcpy(&v, c->p, 4); c->p += 4; return v; }
static const char *gstr(gcur *c, int *len) {
    uint64_t n = gu64(c);
    if (n > (1u << 30)) die("'%s': a GGUF string of %llu bytes", c->path, (unsigned long long)n);
    gneed(c, n);
    const char *s = (const char *)c->p;
    c->p += n;
    *len = (int)n;
    return s;
}
static uint64_t gtype_size(int t, const char *path) {
    static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t < 0 || t > G_F64 || t == G_ARR) die("'%s': GGUF value type %d is not valid here", path, t);
    return sz[t];
}
static void gskip(gcur *c, int t) {
    int l;
    if (t == G_STR) gstr(c, &l);
    else { uint64_t s = gtype_size(t, c->path); gneed(c, s); c->p += s; }
}

static gguf_file gguf_open(const char *path) {
    gguf_file g = {map_file(path), NULL, 0, NULL, 0, path};
    if (g.b.n < 24 || memcmp(g.b.p, "GGUF", 4)) die("'%s' is not a GGUF file", path);
    gcur c = {g.b.p, g.b.p + g.b.n, path};
    c.p += 4;
    uint32_t ver = gu32(&c);
    if (ver != 2 && ver != 3) die("'%s': GGUF version %u is not read (2 and 3 are)", path, ver);
    g.n_t = gu64(&c);
    g.n_kv = gu64(&c);
    if (g.n_t > 1000000 || g.n_kv > 1000000) die("'%s': implausible GGUF counts", path);
    g.kv = xcalloc(g.n_kv, sizeof(gguf_kv));
    uint64_t align = 32;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        gguf_kv *k = &g.kv[i];
        k->key = gstr(&c, &k->klen);
        k->type = (int)gu32(&c);
        k->val = c.p;
        if (k->type == G_ARR) {
            k->arr_type = (int)gu32(&c);
            k->n = gu64(&c);
            k->val = c.p;
            if (k->arr_type == G_ARR) die("'%s': nested GGUF arrays are not read", path);
            for (uint64_t j = 0; j < k->n; j++) gskip(&c, k->arr_type);
        } else gskip(&c, k->type);
        if (k->klen == 17 && !memcmp(k->key, "general.alignment", 17) && k->type == G_U32) { uint32_t a; memcpy(&a, k->val, 4); align = a; }
    }
    if (!align || (align & (align - 1))) die("'%s': bad alignment", path);
    g.t = xcalloc(g.n_t, sizeof(gguf_tensor));
    uint64_t *offs = xcalloc(g.n_t, 8);
    for (uint64_t i = 0; i < g.n_t; i++) {
        gguf_tensor *t = &g.t[i];
        int l;
        const char *nm = gstr(&c, &l);
        if (l >= (int)sizeof t->name) die("'%s': a tensor name is too long", path);
        memcpy(t->name, nm, l);
        t->nd = (int)gu32(&c);
        if (t->nd < 1 || t->nd > 4) die("'%s': tensor '%s' has %d dimensions", path, t->name, t->nd);
        for (int d = 0; d < 4; d++) t->ne[d] = d < t->nd ? gu64(&c) : 1;
        t->type = (int)gu32(&c);
        offs[i] = gu64(&c);
    }
    uint64_t data = ((uint64_t)(c.p - g.b.p) + align - 1) / align * align;
    for (uint64_t i = 0; i < g.n_t; i++) {
        gguf_tensor *t = &g.t[i];
        uint64_t n = 1;
        for (int d = 0; d < 4; d++) if (__builtin_mul_overflow(n, t->ne[d], &n)) die("'%s': tensor '%s' is too large", path, t->name);
        uint64_t bs, bb;   /* block size in elements and bytes */
        switch (t->type) {
        case GT_F32: bs = 1; bb = 4; break;
        case GT_F16: case GT_BF16: bs = 1; bb = 2; break;
        case GT_Q8_0: bs = 32; bb = 34; break;
        case GT_Q4_0: bs = 32; bb = 18; break;
        case GT_Q4_1: bs = 32; bb = 20; break;
        case GT_Q6_K: bs = 256; bb = 210; break;
        default: bs = 0; bb = 0;   /* unknown: an error only if the tensor is read */
        }
        t->bytes = bs ? n / bs * bb : 0;
        if (bs && n % bs) die("'%s': tensor '%s' has %llu elements, not a multiple of its block of %llu", path, t->name, (unsigned long long)n, (unsigned long long)bs);
        if (data > g.b.n || offs[i] > g.b.n - data || t->bytes > g.b.n - data - offs[i])   /* no sum that can wrap */
            die("'%s': tensor '%s' lies outside the file", path, t->name);
        t->data = g.b.p + data + offs[i];
    }
    FREE(offs);
    return g;
}

static const gguf_kv *gguf_get(const gguf_file *g, const char *key) {
    int n = (int)strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++) if (g->kv[i].klen == n && !memcmp(g->kv[i].key, key, n)) return &g->kv[i];
    return NULL;
}
static double gguf_num(const gguf_file *g, const char *key, double dflt) {
    const gguf_kv *k = gguf_get(g, key);
    if (!k) return dflt;
    const unsigned char *v = k->val;
    switch (k->type) {
    case G_U8: return *v; case G_I8: return *(const int8_t *)v; case G_BOOL: return *v != 0;
    case G_U16: { uint16_t x; memcpy(&x, v, 2); return x; } case G_I16: { int16_t x; memcpy(&x, v, 2); return x; }
    case G_U32: { uint32_t x; memcpy(&x, v, 4); return x; } case G_I32: { int32_t x; memcpy(&x, v, 4); return x; }
    case G_F32: { float x; memcpy(&x, v, 4); return x; } case G_U64: { uint64_t x; memcpy(&x, v, 8); return (double)x; }
    case G_I64: { int64_t x; memcpy(&x, v, 8); return (double)x; } case G_F64: { double x; memcpy(&x, v, 8); return x; }
    default: return dflt;
    }
}
static char *gguf_string(const gguf_file *g, const char *key) {
    const gguf_kv *k = gguf_get(g, key);
    if (!k || k->type != G_STR) return NULL;
    gcur c = {k->val, g->b.p + g->b.n, g->path};
    int l;
    const char *s = gstr(&c, &l);
    char *r = xmalloc(l + 1);
    memcpy(r, s, l);
    r[l] = 0;
    return r;
}
static const gguf_tensor *gguf_find(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_t; i++) if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}
static float h2f(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return w8a8_f16_to_float(v); }

/* Dequantizes n elements (ggml's block formats) to fp32. */
static void gguf_dequant(const gguf_tensor *t, float *y, uint64_t n, const char *path) {
    const unsigned char *p = t->data;
    switch (t->type) {
    case GT_F32: memcpy(y, p, n * 4); return;
    case GT_F16: for (uint64_t i = 0; i < n; i++) y[i] = h2f(p + 2 * i); return;
    case GT_BF16: for (uint64_t i = 0; i < n; i++) { uint16_t v; memcpy(&v, p + 2 * i, 2); y[i] = w8a8_bf16_to_float(v); } return;
    case GT_Q8_0:   /* 32 values: f16 d, int8 q[32]; x = d q */
        for (uint64_t b = 0; b < n / 32; b++, p += 34) { float d = h2f(p); for (int i = 0; i < 32; i++) y[32 * b + i] = d * (int8_t)p[2 + i]; }
        return;
    case GT_Q4_0:   /* f16 d, 16 bytes of nibbles: low nibbles are values 0..15, high 16..31; x = d (q - 8) */
        for (uint64_t b = 0; b < n / 32; b++, p += 18) {
            float d = h2f(p);
            for (int i = 0; i < 16; i++) { y[32 * b + i] = d * ((p[2 + i] & 15) - 8); y[32 * b + 16 + i] = d * ((p[2 + i] >> 4) - 8); }
        }
        return;
    case GT_Q4_1:   /* f16 d, f16 m, nibbles as Q4_0; x = d q + m */
        for (uint64_t b = 0; b < n / 32; b++, p += 20) {
            float d = h2f(p), m = h2f(p + 2);
            for (int i = 0; i < 16; i++) { y[32 * b + i] = d * (p[4 + i] & 15) + m; y[32 * b + 16 + i] = d * (p[4 + i] >> 4) + m; }
        }
        return;
    case GT_Q6_K:   /* 256 values: ql[128] low 4 bits, qh[64] high 2 bits, int8 scales[16], f16 d; x = d s (q - 32) */
        for (uint64_t b = 0; b < n / 256; b++, p += 210) {
            const unsigned char *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            float d = h2f(p + 208), *yb = y + 256 * b;
            for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, yb += 128)
                for (int l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = (int)((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32, q2 = (int)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32, q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    yb[l] = d * sc[is] * q1; yb[l + 32] = d * sc[is + 2] * q2; yb[l + 64] = d * sc[is + 4] * q3; yb[l + 96] = d * sc[is + 6] * q4;
                }
        }
        return;
    default: die("'%s': tensor '%s' has ggml type %d, which this converter does not read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K are)", path, t->name, t->type);
    }
}

/* The GGUF name of a weight asked for by its Hugging Face name. */
static void gguf_name(const char *hf, char *out, size_t n) {
    static const char *map[][2] = {
        {"input_layernorm.weight", "attn_norm.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"}, {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"}, {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"}, {"self_attn.k_proj.bias", "attn_k.bias"}, {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.q_norm.weight", "attn_q_norm.weight"}, {"self_attn.k_norm.weight", "attn_k_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"}, {"mlp.up_proj.weight", "ffn_up.weight"}, {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    int l;
    char kind[64];
    if (!strcmp(hf, "model.embed_tokens.weight")) snprintf(out, n, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight")) snprintf(out, n, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight")) snprintf(out, n, "output.weight");
    else if (sscanf(hf, "model.layers.%d.%63s", &l, kind) == 2) {
        snprintf(out, n, "%s", hf);
        for (size_t i = 0; i < sizeof map / sizeof *map; i++) if (!strcmp(kind, map[i][0])) snprintf(out, n, "blk.%d.%s", l, map[i][1]);
    } else snprintf(out, n, "%s", hf);
}

static gguf_file g_gguf;   /* the GGUF source, when there is one */

/* =========================================================================================================
 * Sources of weights: a llama2.c checkpoint, safetensors files or a GGUF file, all asked by Hugging Face name.
 * ======================================================================================================= */
typedef struct { char *name; int dtype; uint64_t shape[4]; int ndim; const unsigned char *data; size_t bytes; } st_tensor;
enum { SRC_L2C, SRC_ST, SRC_GGUF, SRC_SYNTH };
typedef struct {
    int kind;               /* SRC_*: llama2.c, safetensors, GGUF, or synthetic (random weights, norms 1, biases 0) */
    int rotate_half;        /* 1: q/k rows in Hugging Face's rotate-half order (reordered to adjacent pairs) */
    st_tensor *t; int n;    /* safetensors tensors */
    blob l2c;               /* llama2.c checkpoint */
    w8a8_config c;
    int l2c_shared;
} source;

enum { ST_F32, ST_F16, ST_BF16, ST_F8, ST_OTHER };   /* ST_F8: float8_e4m3fn, a pre-quantized checkpoint's weights */

static void st_open(source *s, const char *path) {
    blob b = map_file(path);
    if (b.n < 8) die("'%s' is too small to be a safetensors file", path);
    uint64_t hn;
    memcpy(&hn, b.p, 8);
    if (hn > b.n - 8 || hn > (1u << 30)) die("'%s': the safetensors header length %llu is outside the file", path, (unsigned long long)hn);
    jv h;
    char err[200];
    if (json_parse((const char *)b.p + 8, hn, &h, err, sizeof err) || h.type != J_OBJ)
        die("'%s': the safetensors header is not a JSON object: %s", path, err);
    const unsigned char *data = b.p + 8 + hn;
    size_t data_n = b.n - 8 - hn;
    for (int i = 0; i < h.n; i++) {
        if (!strcmp(h.keys[i], "__metadata__")) continue;
        const jv *e = &h.items[i], *dt = jget(e, "dtype"), *sh = jget(e, "shape"), *of = jget(e, "data_offsets");
        if (!dt || dt->type != J_STR || !sh || sh->type != J_ARR || sh->n > 4 || !of || of->type != J_ARR || of->n != 2 ||
            of->items[0].type != J_NUM || of->items[1].type != J_NUM)
            die("'%s': tensor '%s' has a malformed header entry", path, h.keys[i]);
        st_tensor t = {0};
        t.name = STRDUP(h.keys[i]);
        t.dtype = !strcmp(dt->str, "F32") ? ST_F32 : !strcmp(dt->str, "F16") ? ST_F16 : !strcmp(dt->str, "BF16") ? ST_BF16
                : !strcmp(dt->str, "F8_E4M3") ? ST_F8 : ST_OTHER;
        t.ndim = sh->n;
        uint64_t elems = 1;
        for (int k = 0; k < sh->n; k++) {
            if (sh->items[k].type != J_NUM || sh->items[k].num < 0 || sh->items[k].num > 1e12) die("'%s': tensor '%s' has a bad shape", path, t.name);
            t.shape[k] = (uint64_t)sh->items[k].num;
            if (__builtin_mul_overflow(elems, t.shape[k], &elems)) die("'%s': tensor '%s' has a shape that overflows", path, t.name);
        }
        double b0 = of->items[0].num, b1 = of->items[1].num;
        if (b0 < 0 || b1 < b0 || b1 > (double)data_n) die("'%s': tensor '%s' lies outside the file", path, t.name);
        t.data = data + (size_t)b0;
        t.bytes = (size_t)(b1 - b0);
        int es = t.dtype == ST_F32 ? 4 : t.dtype == ST_F8 ? 1 : t.dtype == ST_OTHER ? 0 : 2;
        uint64_t want = 0;   /* elems * es, which must not wrap either */
        if (es && (__builtin_mul_overflow(elems, (uint64_t)es, &want) || (uint64_t)t.bytes != want)) die("'%s': tensor '%s' has %zu bytes for %llu elements", path, t.name, t.bytes, (unsigned long long)elems);
        s->t = REALLOC(s->t, sizeof(st_tensor) * (s->n + 1));
        if (!s->t) die("out of memory");
        s->t[s->n++] = t;
        if (t.dtype == ST_OTHER && strstr(t.name, "weight"))
            fprintf(stderr, "convert: note: tensor '%s' has dtype %s (read only if needed)\n", t.name, dt->str);
    }
    jv_free(&h);
}

static const st_tensor *st_find(const source *s, const char *name) {
    for (int i = 0; i < s->n; i++) if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}

/* The llama2.c legacy layout: the offset (in floats) of each weight, by Hugging Face name. */
static int64_t l2c_offset(const source *s, const char *name, uint64_t *rows, uint64_t *cols) {
    const w8a8_config *c = &s->c;
    int64_t D = c->dim, H = c->hidden_dim, L = c->n_layers, V = c->vocab_size, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t off = 7;   /* header ints */
    int64_t emb = off, rms_att = emb + V * D, wq = rms_att + L * D, wk = wq + L * D * D, wv = wk + L * kvd * D,
            wo = wv + L * kvd * D, rms_ffn = wo + L * D * D, w1 = rms_ffn + L * D, w2 = w1 + L * H * D, w3 = w2 + L * D * H,
            rms_final = w3 + L * H * D, freq = rms_final + D, wcls = freq + (int64_t)c->max_context * (c->head_dim / 2) * 2;
    int l;
    char kind[64];
    if (!strcmp(name, "model.embed_tokens.weight")) { *rows = V; *cols = D; return emb; }
    if (!strcmp(name, "model.norm.weight")) { *rows = D; *cols = 0; return rms_final; }
    if (!strcmp(name, "lm_head.weight")) { if (s->l2c_shared) return -1; *rows = V; *cols = D; return wcls; }
    if (sscanf(name, "model.layers.%d.%63s", &l, kind) != 2 || l < 0 || l >= L) return -1;
    if (!strcmp(kind, "input_layernorm.weight")) { *rows = D; *cols = 0; return rms_att + l * D; }
    if (!strcmp(kind, "post_attention_layernorm.weight")) { *rows = D; *cols = 0; return rms_ffn + l * D; }
    if (!strcmp(kind, "self_attn.q_proj.weight")) { *rows = D; *cols = D; return wq + l * D * D; }
    if (!strcmp(kind, "self_attn.k_proj.weight")) { *rows = kvd; *cols = D; return wk + l * kvd * D; }
    if (!strcmp(kind, "self_attn.v_proj.weight")) { *rows = kvd; *cols = D; return wv + l * kvd * D; }
    if (!strcmp(kind, "self_attn.o_proj.weight")) { *rows = D; *cols = D; return wo + l * D * D; }
    if (!strcmp(kind, "mlp.gate_proj.weight")) { *rows = H; *cols = D; return w1 + l * H * D; }
    if (!strcmp(kind, "mlp.down_proj.weight")) { *rows = D; *cols = H; return w2 + l * D * H; }
    if (!strcmp(kind, "mlp.up_proj.weight")) { *rows = H; *cols = D; return w3 + l * H * D; }
    return -1;
}

static int src_has(const source *s, const char *name) {
    uint64_t r, c;
    char gn[128];
    switch (s->kind) {
    case SRC_SYNTH: return strcmp(name, "lm_head.weight") != 0;
    case SRC_ST: return st_find(s, name) != NULL;
    case SRC_GGUF: gguf_name(name, gn, sizeof gn); return gguf_find(&g_gguf, gn) != NULL;
    default: return l2c_offset(s, name, &r, &c) >= 0;
    }
}

static float bf16f(uint16_t v) { return w8a8_bf16_to_float(v); }

/* --- work split over the CPU's cores (synthetic weights and quantization of large models) --- */
#include <pthread.h>
typedef struct { void (*fn)(void *, uint64_t, uint64_t); void *ctx; uint64_t lo, hi; } par_job;
static void *par_run(void *a) { par_job *j = a; j->fn(j->ctx, j->lo, j->hi); return NULL; }
static void parallel_for(uint64_t n, void (*fn)(void *, uint64_t, uint64_t), void *ctx) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = n < (1u << 16) || cpus < 2 ? 1 : cpus > 32 ? 32 : (int)cpus;
    pthread_t th[32];
    par_job jobs[32];
    int started = 0;
    for (int t = 0; t < nt; t++) {
        jobs[t] = (par_job){fn, ctx, n * t / nt, n * (t + 1) / nt};
        if (t == 0 || pthread_create(&th[t], NULL, par_run, &jobs[t])) par_run(&jobs[t]);
        else started |= 1 << t;
    }
    for (int t = 1; t < nt; t++) if (started & (1 << t)) pthread_join(th[t], NULL);
}

/* Synthetic weights: uniform in (-0.05, 0.05), spread like a trained weight; each element from a hash of the
 * tensor's name and its index (splitmix64), so any part can be made on any core. Norms 1, biases 0. */
typedef struct { uint64_t seed; float *out; uint64_t n; int is_1d, is_bias; } synth_job;
static void synth_range(void *ctx, uint64_t lo, uint64_t hi) {
    synth_job *j = ctx;
    for (uint64_t i = lo; i < hi; i++) {
        uint64_t z = j->seed + (i + 1) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        double u = ((z >> 11) + 0.5) / 9007199254740992.0;
        j->out[i] = !j->is_1d ? (float)((u - 0.5) * 0.1) : j->is_bias ? 0.0f : 1.0f;
    }
}

/* A small fp32 tensor of a safetensors source (scales), as n floats; NULL if absent. */
static float *st_read_small(const source *s, const char *name, uint64_t *n) {
    const st_tensor *t = st_find(s, name);
    if (!t) return NULL;
    int es = t->dtype == ST_F32 ? 4 : (t->dtype == ST_F16 || t->dtype == ST_BF16) ? 2 : 0;
    if (!es) die("tensor '%s' has a dtype this converter does not read as a scale (F32, F16, BF16)", name);
    *n = t->bytes / es;
    float *v = xmalloc(sizeof(float) * (*n ? *n : 1));
    for (uint64_t i = 0; i < *n; i++) {
        uint16_t h;
        if (es == 4) memcpy(&v[i], t->data + 4 * i, 4);
        else { memcpy(&h, t->data + 2 * i, 2); v[i] = t->dtype == ST_F16 ? w8a8_f16_to_float(h) : bf16f(h); }
    }
    return v;
}

/* A pre-quantized FP8 linear (the compressed-tensors and "fp8" layouts: `X.weight` float8_e4m3fn [rows][cols],
 * `X.weight_scale` per tensor [1] or per output channel [rows] / [rows][1], optional `X.input_scale` [1]):
 * its codes as they are, each row's scale in row_scale, the input scale (0 if none) in *in_scale. */
static uint8_t *src_read_fp8(const source *s, const char *name, uint64_t rows, uint64_t cols, float *row_scale, float *in_scale) {
    const st_tensor *t = st_find(s, name);
    if (!t || t->dtype != ST_F8 || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        die("tensor '%s' is missing or is not a [%llu x %llu] F8_E4M3 tensor", name, (unsigned long long)rows, (unsigned long long)cols);
    char sn[160], base[128];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(name) > 6 ? strlen(name) - 6 : 0), name);   /* drop "weight" */
    snprintf(sn, sizeof sn, "%sweight_scale_inv", base);
    if (st_find(s, sn)) die("'%s': block-wise FP8 scales (weight_scale_inv, DeepSeek style) are not supported; per-tensor or per-channel weight_scale are", name);
    snprintf(sn, sizeof sn, "%sweight_scale", base);
    uint64_t ns = 0;
    float *sc = st_read_small(s, sn, &ns);
    if (!sc) die("'%s' is F8_E4M3 but '%s' is missing", name, sn);
    if (ns != 1 && ns != rows) die("'%s' has %llu values: expected 1 (per tensor) or %llu (per channel); block-wise scales are not supported", sn, (unsigned long long)ns, (unsigned long long)rows);
    for (uint64_t r = 0; r < rows; r++) {
        row_scale[r] = sc[ns == 1 ? 0 : r];
        if (!(row_scale[r] > 0 && isfinite(row_scale[r]))) die("'%s' holds %g: scales must be positive numbers", sn, row_scale[r]);
    }
    FREE(sc);
    uint8_t *codes = xmalloc(rows * cols);
    memcpy(codes, t->data, rows * cols);
    for (uint64_t i = 0; i < rows * cols; i++)
        if ((codes[i] & 0x7f) == 0x7f) die("'%s' holds a NaN (code 0x%02x at element %llu)", name, codes[i], (unsigned long long)i);
    if (in_scale) {
        snprintf(sn, sizeof sn, "%sinput_scale", base);
        float *is = st_read_small(s, sn, &ns);
        *in_scale = 0;
        if (is) {
            if (ns != 1 || !(is[0] > 0 && isfinite(is[0]))) die("'%s' must be one positive number (a per-tensor static scale)", sn);
            *in_scale = is[0];
            FREE(is);
        }
    }
    return codes;
}

/* Reads a tensor as fp32 and checks its shape ([rows][cols], or [rows] when cols == 0). */
static float *src_read(const source *s, const char *name, uint64_t rows, uint64_t cols) {
    uint64_t n = rows * (cols ? cols : 1);
    float *out = xmalloc(n * sizeof(float));
    if (s->kind == SRC_GGUF) {
        char gn[128];
        gguf_name(name, gn, sizeof gn);
        const gguf_tensor *t = gguf_find(&g_gguf, gn);
        if (!t) die("tensor '%s' is missing from the GGUF file", gn);
        /* ggml lists dimensions fastest first: ne0 is the contiguous (input) one */
        if (cols ? (t->ne[0] != cols || t->ne[1] != rows || t->nd > 2) : (t->ne[0] != rows || t->nd != 1))
            die("tensor '%s' has shape [%llu x %llu] (ggml order), expected [%llu x %llu]", gn, (unsigned long long)t->ne[0],
                (unsigned long long)t->ne[1], (unsigned long long)(cols ? cols : rows), (unsigned long long)(cols ? rows : 1));
        gguf_dequant(t, out, n, g_gguf.path);
        return out;
    }
    if (s->kind == SRC_SYNTH) {
        synth_job j = {w8a8_fnv1a(0xcbf29ce484222325ull, name, strlen(name)), out, n, cols == 0, strstr(name, "bias") != NULL};
        parallel_for(n, synth_range, &j);
        return out;
    }
    if (s->kind == SRC_L2C) {
        uint64_t r, c;
        int64_t off = l2c_offset(s, name, &r, &c);
        if (off < 0) die("the llama2.c checkpoint has no tensor '%s'", name);
        memcpy(out, s->l2c.p + off * 4, n * 4);
        return out;
    }
    const st_tensor *t = st_find(s, name);
    if (!t) die("tensor '%s' is missing from the safetensors files", name);
    int ok = cols ? (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols) : (t->ndim == 1 && t->shape[0] == rows);
    if (!ok) {
        char sh[128] = "";
        for (int k = 0; k < t->ndim; k++) snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%llu", k ? " x " : "", (unsigned long long)t->shape[k]);
        die("tensor '%s' has shape [%s], expected [%llu%s%llu]", name, sh, (unsigned long long)rows, cols ? " x " : "",
            (unsigned long long)(cols ? cols : 0));
    }
    if (t->dtype == ST_F8) {   /* a pre-quantized weight, read as code * scale */
        float *rs = xmalloc(sizeof(float) * rows);
        uint8_t *codes = src_read_fp8(s, name, rows, cols, rs, NULL);
        for (uint64_t i = 0; i < n; i++) out[i] = w8a8_fp8_to_float(codes[i]) * rs[i / cols];
        FREE(codes); FREE(rs);
        return out;
    }
    for (uint64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case ST_F32: memcpy(&out[i], t->data + 4 * i, 4); break;
        case ST_F16: { uint16_t v; memcpy(&v, t->data + 2 * i, 2); out[i] = w8a8_f16_to_float(v); break; }
        case ST_BF16: { uint16_t v; memcpy(&v, t->data + 2 * i, 2); out[i] = bf16f(v); break; }
        default: die("tensor '%s' has a dtype this converter does not read (F32, F16 and BF16 are read)", name);
        }
    }
    return out;
}

/* Hugging Face stores q and k rows of each head in rotate-half order (pairs i and i + d/2); the engine, like
 * llama2.c, rotates adjacent pairs (2i, 2i + 1). Undo the permutation: row 2p + c <- row c * d/2 + p. */
static void unpermute_bytes(void *w, int n_heads, int head_dim, size_t row_bytes) {
    unsigned char *tmp = xmalloc(row_bytes * head_dim);
    for (int h = 0; h < n_heads; h++) {
        unsigned char *base = (unsigned char *)w + (size_t)h * head_dim * row_bytes;
        memcpy(tmp, base, row_bytes * head_dim);
        for (int p = 0; p < head_dim / 2; p++)
            for (int c = 0; c < 2; c++) memcpy(base + (2 * p + c) * row_bytes, tmp + (c * head_dim / 2 + p) * row_bytes, row_bytes);
    }
    FREE(tmp);
}
static void unpermute_rows(float *w, int n_heads, int head_dim, int cols) { unpermute_bytes(w, n_heads, head_dim, sizeof(float) * (cols ? cols : 1)); }

/* =========================================================================================================
 * Tokenizers: llama2.c tokenizer.bin, and tokenizer.json
 * ======================================================================================================= */
typedef struct {
    uint32_t kind, pre, flags;
    int n;                      /* tokens */
    float *scores;
    uint8_t *types;
    char **text; int *len;
    int32_t *merges; int n_merges;
    char *tmpl;
    int bos, eos, eot;
} tok_build;

static void tb_alloc(tok_build *t, int n) {
    t->n = n;
    t->scores = xcalloc(n, sizeof(float));
    t->types = xcalloc(n, 1);
    t->text = xcalloc(n, sizeof(char *));
    t->len = xcalloc(n, sizeof(int));
    for (int i = 0; i < n; i++) { t->types[i] = W8A8_TT_UNUSED; t->text[i] = STRDUP(""); }
}

static int parse_byte_token(const char *s, int n) {
    unsigned v;
    if (n == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' && sscanf(s + 3, "%2x", &v) == 1) return (int)v;
    return -1;
}

static int count_l2c_tokens(const char *path) {
    blob b = map_file(path);
    size_t o = 4;
    int n = 0;
    while (o + 8 <= b.n) {
        int32_t len;
        memcpy(&len, b.p + o + 4, 4);
        if (len < 0 || len > 4096) break;
        o += 8 + len;
        n++;
    }
    unmap_blob(b);
    return n;
}

static int g_pad_vocab;   /* --synthetic: a model's vocabulary may be larger than its tokenizer's */

static void load_l2c_tokenizer(tok_build *t, const char *path, int vocab) {
    blob b = map_file(path);
    size_t o = 4;
    if (b.n < 4) die("'%s' is too small to be a llama2.c tokenizer", path);
    tb_alloc(t, vocab);
    for (int i = 0; i < vocab; i++) {
        float sc;
        int32_t len;
        if (o + 8 > b.n && g_pad_vocab) break;   /* the rest stay unused */
        if (o + 8 > b.n) die("'%s' holds fewer tokens than the model's vocabulary of %d", path, vocab);
        memcpy(&sc, b.p + o, 4);
        memcpy(&len, b.p + o + 4, 4);
        o += 8;
        if (len < 0 || len > 4096 || o + len > b.n) die("'%s': token %d has a bad length", path, i);
        FREE(t->text[i]);
        t->text[i] = xmalloc(len + 1);
        memcpy(t->text[i], b.p + o, len);
        t->text[i][len] = 0;
        t->len[i] = len;
        t->scores[i] = sc;
        o += len;
        int byte = parse_byte_token(t->text[i], len);
        if (i < 3) t->types[i] = W8A8_TT_CONTROL;   /* <unk>, <s>, </s> */
        else if (byte >= 0) { t->types[i] = W8A8_TT_BYTE; t->text[i][0] = (char)byte; t->len[i] = 1; }
        else t->types[i] = W8A8_TT_NORMAL;
    }
    t->kind = W8A8_TOK_SPM;
    t->flags = W8A8_TOKF_DUMMY_PREFIX | W8A8_TOKF_BYTE_FALLBACK | W8A8_TOKF_ADD_BOS;
    t->bos = 1; t->eos = 2; t->eot = -1;
    unmap_blob(b);
}

/* GPT-2's byte-to-character map, inverted: a character of a byte-level token stands for one byte. */
static int byte_of_char(int cp) {
    if ((cp >= '!' && cp <= '~') || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff)) return cp;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) continue;
        if (cp == 256 + n) return b;
        n++;
    }
    return -1;
}

static int utf8_decode(const unsigned char *s, int n, int *cp) {
    int len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : 4;
    if (len > n) { *cp = -1; return 1; }
    int v = len == 1 ? s[0] : s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) v = (v << 6) | (s[i] & 63);
    *cp = v;
    return len;
}

/* Token text as the engine stores it: the bytes it prints. */
static void token_bytes(const tok_build *t, const char *s, int n, char **out, int *outn, int *ok) {
    char *b = xmalloc(n + 1);
    int k = 0;
    *ok = 1;
    if (t->kind == W8A8_TOK_BYTE_BPE) {
        for (int i = 0; i < n;) {
            int cp, l = utf8_decode((const unsigned char *)s + i, n - i, &cp), by = byte_of_char(cp);
            if (by < 0) { *ok = 0; by = '?'; }
            b[k++] = (char)by;
            i += l;
        }
    } else {
        for (int i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) { b[k++] = ' '; i += 3; }
            else { if (s[i] == ' ') *ok = 0; b[k++] = s[i++]; }   /* a raw space is unreachable */
        }
    }
    b[k] = 0;
    *out = b;
    *outn = k;
}

static const char *LLAMA3_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *QWEN2_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Finds what kind of tokenizer a tokenizer.json is from its normalizer and pre-tokenizer. */
static void classify_tokenizer(tok_build *t, const jv *root, const char *path) {
    const jv *model = jget(root, "model"), *pre = jget(root, "pre_tokenizer"), *norm = jget(root, "normalizer");
    const char *mtype = jstr(model, "type");
    if (!mtype || strcmp(mtype, "BPE")) die("'%s': tokenizer model '%s' is not supported (BPE is)", path, mtype ? mtype : "?");
    /* walk the pre-tokenizer (and a Sequence's members) for ByteLevel, Metaspace and a Split regex */
    const jv *stack[64];
    int sp = 0, bytelevel = 0, metaspace = 0;
    const char *regex = NULL;
    if (pre && pre->type == J_OBJ) stack[sp++] = pre;
    while (sp) {
        const jv *v = stack[--sp];
        const char *ty = jstr(v, "type");
        if (ty && !strcmp(ty, "ByteLevel")) bytelevel = 1;
        if (ty && !strcmp(ty, "Metaspace")) metaspace = 1;
        if (ty && !strcmp(ty, "Split")) { const jv *pat = jget(v, "pattern"); if (jstr(pat, "Regex")) regex = jstr(pat, "Regex"); }
        const jv *subs = jget(v, "pretokenizers");
        for (int i = 0; subs && subs->type == J_ARR && i < subs->n && sp < 64; i++) stack[sp++] = &subs->items[i];
    }
    if (bytelevel) {
        t->kind = W8A8_TOK_BYTE_BPE;
        if (regex && !strcmp(regex, LLAMA3_RE)) t->pre = W8A8_PRE_LLAMA3;
        else if (regex && !strcmp(regex, QWEN2_RE)) t->pre = W8A8_PRE_QWEN2;
        else die("'%s': the byte-level pre-tokenizer regex is not one this engine knows (Llama 3 and Qwen2/3 are known): %s",
                 path, regex ? regex : "(none)");
        if (jbool(model, "ignore_merges", 0)) t->flags |= W8A8_TOKF_IGNORE_MERGES;
        return;
    }
    t->kind = W8A8_TOK_BPE;
    if (metaspace) t->flags |= W8A8_TOKF_DUMMY_PREFIX;
    const jv *ns = jget(norm, "normalizers");
    for (int i = 0; ns && ns->type == J_ARR && i < ns->n; i++) {
        const char *ty = jstr(&ns->items[i], "type");
        if (ty && !strcmp(ty, "Prepend")) t->flags |= W8A8_TOKF_DUMMY_PREFIX;
    }
    if (jstr(norm, "type") && !strcmp(jstr(norm, "type"), "Prepend")) t->flags |= W8A8_TOKF_DUMMY_PREFIX;
    if (jbool(model, "byte_fallback", 0)) t->flags |= W8A8_TOKF_BYTE_FALLBACK;
}

typedef struct { char *s; int n; int id; } vocab_ent;
static int cmp_vocab(const void *a, const void *b) {
    const vocab_ent *x = a, *y = b;
    int m = x->n < y->n ? x->n : y->n, c = memcmp(x->s, y->s, m);
    return c ? c : x->n - y->n;
}
static int vocab_lookup(const vocab_ent *v, int n, const char *s, int len) {
    vocab_ent key = {(char *)s, len, 0};
    const vocab_ent *e = bsearch(&key, v, n, sizeof *v, cmp_vocab);
    return e ? e->id : -1;
}

static void load_hf_tokenizer(tok_build *t, const char *path, int vocab) {
    jv root = read_json(path);
    const jv *model = jget(&root, "model"), *vj = jget(model, "vocab"), *mj = jget(model, "merges"), *added = jget(&root, "added_tokens");
    if (!vj || vj->type != J_OBJ) die("'%s' has no model.vocab object", path);
    classify_tokenizer(t, &root, path);
    int n = vocab;
    for (int i = 0; i < vj->n; i++) if (vj->items[i].type == J_NUM) n = (int)fmax(n, int_in(vj->items[i].num, 0, 1 << 24, "a token id", path) + 1);
    for (int i = 0; added && added->type == J_ARR && i < added->n; i++) n = (int)fmax(n, int_in(jnum(&added->items[i], "id", 0), 0, 1 << 24, "an added token id", path) + 1);
    if (n > vocab) die("'%s' has %d tokens, more than the model's vocabulary of %d", path, n, vocab);
    tb_alloc(t, vocab);
    vocab_ent *ve = xmalloc(sizeof(vocab_ent) * vj->n);
    for (int i = 0; i < vj->n; i++) {
        if (vj->items[i].type != J_NUM || vj->items[i].num < 0) die("'%s': vocabulary entry %d has no id", path, i);
        int id = (int)int_in(vj->items[i].num, 0, vocab - 1, "a token id", path), ok;
        ve[i] = (vocab_ent){vj->keys[i], vj->key_lens[i], id};
        FREE(t->text[id]);
        token_bytes(t, vj->keys[i], vj->key_lens[i], &t->text[id], &t->len[id], &ok);
        int byte = t->kind == W8A8_TOK_BPE ? parse_byte_token(vj->keys[i], vj->key_lens[i]) : -1;
        if (byte >= 0) { t->types[id] = W8A8_TT_BYTE; t->text[id][0] = (char)byte; t->len[id] = 1; }
        else t->types[id] = ok ? W8A8_TT_NORMAL : W8A8_TT_UNUSED;
    }
    qsort(ve, vj->n, sizeof *ve, cmp_vocab);
    for (int i = 0; added && added->type == J_ARR && i < added->n; i++) {
        const jv *a = &added->items[i];
        int id = (int)int_in(jnum(a, "id", -1), 0, vocab - 1, "an added token id", path);
        const jv *c = jget(a, "content");
        if (id < 0 || id >= vocab || !c || c->type != J_STR) die("'%s': added token %d is malformed", path, i);
        FREE(t->text[id]);
        t->text[id] = xmalloc(c->n + 1);
        memcpy(t->text[id], c->str, c->n + 1);
        t->len[id] = c->n;
        t->types[id] = jbool(a, "special", 1) ? W8A8_TT_SPECIAL : W8A8_TT_USER;
    }
    if (mj && mj->type == J_ARR) {
        t->merges = xmalloc(sizeof(int32_t) * 2 * (mj->n + 1));
        for (int i = 0; i < mj->n; i++) {
            const jv *e = &mj->items[i];
            const char *a, *b;
            int la, lb;
            if (e->type == J_STR) {
                const char *sp = memchr(e->str, ' ', e->n);
                if (!sp) die("'%s': merge %d ('%s') has no space", path, i, e->str);
                a = e->str; la = (int)(sp - e->str); b = sp + 1; lb = e->n - la - 1;
            } else if (e->type == J_ARR && e->n == 2 && e->items[0].type == J_STR && e->items[1].type == J_STR) {
                a = e->items[0].str; la = e->items[0].n; b = e->items[1].str; lb = e->items[1].n;
            } else die("'%s': merge %d is malformed", path, i);
            int ia = vocab_lookup(ve, vj->n, a, la), ib = vocab_lookup(ve, vj->n, b, lb);
            if (ia < 0 || ib < 0) continue;   /* a merge of unknown pieces can never apply */
            t->merges[2 * t->n_merges] = ia;
            t->merges[2 * t->n_merges + 1] = ib;
            t->n_merges++;
        }
    }
    FREE(ve);
    jv_free(&root);
}

/* bos/eos/chat template from tokenizer_config.json (strings or {"content": ...}). */
static int find_token(const tok_build *t, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < t->n; i++)
        if ((t->types[i] == W8A8_TT_SPECIAL || t->types[i] == W8A8_TT_CONTROL || t->types[i] == W8A8_TT_USER) &&
            t->len[i] == (int)strlen(s) && !memcmp(t->text[i], s, t->len[i])) return i;
    return -1;
}
static const char *token_field(const jv *o, const char *key) {
    const jv *v = jget(o, key);
    if (v && v->type == J_STR) return v->str;
    return jstr(v, "content");
}

static void load_tokenizer_config(tok_build *t, const char *path) {
    jv root = read_json(path);
    int b = find_token(t, token_field(&root, "bos_token")), e = find_token(t, token_field(&root, "eos_token"));
    if (b >= 0) t->bos = b;
    if (e >= 0) t->eos = e;
    if (jget(&root, "add_bos_token")) {
        if (jbool(&root, "add_bos_token", 0)) t->flags |= W8A8_TOKF_ADD_BOS;
        else t->flags &= ~W8A8_TOKF_ADD_BOS;
    }
    const jv *ct = jget(&root, "chat_template");
    if (ct && ct->type == J_STR) t->tmpl = STRDUP(ct->str);
    else if (ct && ct->type == J_ARR)
        for (int i = 0; i < ct->n; i++)
            if (jstr(&ct->items[i], "name") && !strcmp(jstr(&ct->items[i], "name"), "default") && jstr(&ct->items[i], "template"))
                t->tmpl = STRDUP(jstr(&ct->items[i], "template"));
    jv_free(&root);
}

/* tokenizer.ggml.*: "llama" (SentencePiece, scores) or "gpt2" (byte-level BPE, merges). */
static void gguf_tokenizer(tok_build *t, const gguf_file *g) {
    char *model = gguf_string(g, "tokenizer.ggml.model"), *pre = gguf_string(g, "tokenizer.ggml.pre");
    const gguf_kv *toks = gguf_get(g, "tokenizer.ggml.tokens"), *types = gguf_get(g, "tokenizer.ggml.token_type"),
                  *scores = gguf_get(g, "tokenizer.ggml.scores"), *merges = gguf_get(g, "tokenizer.ggml.merges");
    if (!model || !toks || toks->type != G_ARR || toks->arr_type != G_STR) die("'%s' has no tokenizer (tokenizer.ggml.model and .tokens)", g->path);
    int spm = !strcmp(model, "llama");
    if (!spm && strcmp(model, "gpt2")) die("'%s': tokenizer model '%s' is not supported (llama, gpt2 are)", g->path, model);
    t->kind = spm ? W8A8_TOK_SPM : W8A8_TOK_BYTE_BPE;
    if (spm) t->flags = W8A8_TOKF_BYTE_FALLBACK | (gguf_num(g, "tokenizer.ggml.add_space_prefix", 1) ? W8A8_TOKF_DUMMY_PREFIX : 0);
    else {
        const char *p = pre ? pre : "default";
        if (!strcmp(p, "llama-bpe") || !strcmp(p, "llama3")) t->pre = W8A8_PRE_LLAMA3;
        else if (!strcmp(p, "qwen2")) t->pre = W8A8_PRE_QWEN2;
        else if (!strcmp(p, "smollm")) t->pre = W8A8_PRE_SMOLLM;
        else if (!strcmp(p, "gpt-2") || !strcmp(p, "default")) t->pre = W8A8_PRE_GPT2;
        else die("'%s': pre-tokenizer '%s' is not supported (llama-bpe, qwen2, smollm, gpt-2 are)", g->path, p);
    }
    tb_alloc(t, (int)toks->n);
    gcur c = {toks->val, g->b.p + g->b.n, g->path};
    vocab_ent *ve = xmalloc(sizeof(vocab_ent) * toks->n);
    for (uint64_t i = 0; i < toks->n; i++) {
        int l, ok, ty = 1;
        const char *s = gstr(&c, &l);
        if (types && types->arr_type == G_I32 && i < types->n) { int32_t v; memcpy(&v, types->val + 4 * i, 4); ty = v; }
        if (scores && scores->arr_type == G_F32 && i < scores->n) memcpy(&t->scores[i], scores->val + 4 * i, 4);
        ve[i] = (vocab_ent){(char *)s, l, (int)i};
        FREE(t->text[i]);
        /* ggml types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */
        if (ty == 3 || ty == 4 || (ty == 2 && !spm)) {
            t->text[i] = xmalloc(l + 1); memcpy(t->text[i], s, l); t->text[i][l] = 0; t->len[i] = l;
            t->types[i] = spm && ty == 3 ? W8A8_TT_CONTROL : ty == 4 ? W8A8_TT_USER : W8A8_TT_SPECIAL;
            continue;
        }
        token_bytes(t, s, l, &t->text[i], &t->len[i], &ok);
        int byte = spm ? parse_byte_token(s, l) : -1;
        if (byte >= 0) { t->types[i] = W8A8_TT_BYTE; t->text[i][0] = (char)byte; t->len[i] = 1; }
        else t->types[i] = ty == 2 ? W8A8_TT_CONTROL : ty == 5 || !ok ? W8A8_TT_UNUSED : W8A8_TT_NORMAL;
    }
    qsort(ve, toks->n, sizeof *ve, cmp_vocab);
    if (merges && merges->type == G_ARR && merges->arr_type == G_STR) {
        gcur mc = {merges->val, g->b.p + g->b.n, g->path};
        t->merges = xmalloc(sizeof(int32_t) * 2 * (merges->n + 1));
        for (uint64_t i = 0; i < merges->n; i++) {
            int l;
            const char *s = gstr(&mc, &l), *sp = memchr(s, ' ', l);
            if (!sp) die("'%s': merge %llu has no space", g->path, (unsigned long long)i);
            int a = vocab_lookup(ve, (int)toks->n, s, (int)(sp - s)), b = vocab_lookup(ve, (int)toks->n, sp + 1, (int)(l - (sp - s) - 1));
            if (a < 0 || b < 0) continue;
            t->merges[2 * t->n_merges] = a;
            t->merges[2 * t->n_merges + 1] = b;
            t->n_merges++;
        }
    }
    FREE(ve);
    t->bos = (int)int_in(gguf_num(g, "tokenizer.ggml.bos_token_id", -1), -1, (long long)toks->n - 1, "bos_token_id", g->path);
    t->eos = (int)int_in(gguf_num(g, "tokenizer.ggml.eos_token_id", -1), -1, (long long)toks->n - 1, "eos_token_id", g->path);
    if (gguf_num(g, "tokenizer.ggml.add_bos_token", spm) != 0) t->flags |= W8A8_TOKF_ADD_BOS;
    t->tmpl = gguf_string(g, "tokenizer.chat_template");
    FREE(model); FREE(pre);
}

/* =========================================================================================================
 * Quantization of one linear weight [rows][cols]: the scheme's dtype and a per-output-channel scale
 * ======================================================================================================= */
typedef struct { double err2, ref2; } qerr;

typedef struct { int scheme; const float *w; uint64_t cols; void *out; float *scale; pthread_mutex_t lock; qerr *e; } quant_job;
static void quantize_rows_range(void *ctx, uint64_t lo, uint64_t hi);
static float g_fp8_value[256];   /* e4m3 code -> value */
static void quantize_weight(int scheme, const float *w, uint64_t rows, uint64_t cols, void *out, float *scale, qerr *e) {
    if (g_fp8_value[0x38] == 0) for (int c = 0; c < 256; c++) g_fp8_value[c] = w8a8_fp8_to_float((uint8_t)c);
    quant_job j = {scheme, w, cols, out, scale, PTHREAD_MUTEX_INITIALIZER, e};
    if (rows * cols < (1u << 20)) quantize_rows_range(&j, 0, rows);   /* small: in order, one thread */
    else parallel_for(rows, quantize_rows_range, &j);
}
static void quantize_rows_range(void *ctx, uint64_t lo, uint64_t hi) {
    quant_job *j = ctx;
    int scheme = j->scheme;
    const float *w = j->w;
    uint64_t cols = j->cols;
    void *out = j->out;
    float *scale = j->scale;
    qerr acc = {0, 0}, *e = &acc;
    for (uint64_t r = lo; r < hi; r++) {
        const float *wr = w + r * cols;
        float amax = 0, s = 1;
        if (scheme == W8A8_FP8 || scheme == W8A8_INT8) {
            for (uint64_t j = 0; j < cols; j++) amax = fmaxf(amax, fabsf(wr[j]));
            s = amax > 0 ? amax / (scheme == W8A8_FP8 ? 448.0f : 127.0f) : 1.0f;
            scale[r] = s;
        }
        for (uint64_t j = 0; j < cols; j++) {
            float v = wr[j], d;
            switch (scheme) {
            case W8A8_F32: ((float *)out)[r * cols + j] = v; d = v; break;
            case W8A8_BF16: { uint16_t q = w8a8_bf16_from_float(v); ((uint16_t *)out)[r * cols + j] = q; d = w8a8_bf16_to_float(q); break; }
            case W8A8_FP8: { uint8_t q = w8a8_fp8_from_float(v / s); ((uint8_t *)out)[r * cols + j] = q; d = g_fp8_value[q] * s; break; }
            default: { int8_t q = w8a8_int8_from_float(v / s); ((int8_t *)out)[r * cols + j] = q; d = q * s; break; }
            }
            e->err2 += ((double)v - d) * ((double)v - d);
            e->ref2 += (double)v * v;
        }
    }
    pthread_mutex_lock(&j->lock);
    j->e->err2 += acc.err2;
    j->e->ref2 += acc.ref2;
    pthread_mutex_unlock(&j->lock);
}

/* =========================================================================================================
 * The plan: every tensor of the output file, in order, with what produces it
 * ======================================================================================================= */
enum { P_EMBD, P_OUTPUT, P_OUT_NORM, P_ATTN_NORM, P_FFN_NORM, P_QKV, P_QKV_BIAS, P_Q_NORM, P_K_NORM, P_WO, P_W13, P_W2, P_SCALE,
       P_IN_SCALE, P_K_SCALE, P_V_SCALE };
enum { K_QKV, K_WO, K_W13, K_W2, K_EMBD, K_N };
static const char *kind_names[K_N] = {"wqkv", "wo", "w13", "w2", "embeddings"};

typedef struct { w8a8_tensor_entry e; int what, layer, of; } planned;   /* of: P_IN_SCALE's linear (P_QKV ...) */

typedef struct {
    source src;
    w8a8_config c;
    int scheme;
    int act_static;         /* static per-tensor activation scales (from calibration or the checkpoint) */
    int smooth;             /* SmoothQuant: fold per-channel factors into the weights */
    float alpha;            /* its migration strength */
    int kv_fp8;             /* e4m3 KV cache with per-layer scales */
    int rotate;             /* --rotate: the residual stream turned by a random Hadamard rotation (folded in) */
    float *rot_signs;       /* its random signs [dim] */
    int direct_fp8;         /* the source is a pre-quantized FP8 checkpoint: copy its codes and scales */
    const float *stats;     /* calibration statistics (w8a8_calib_stats' layout), or NULL */
    planned *p; int np;
    float *pending_scale;   /* the scale of the linear just written, written next */
    float ckpt_in_scale[4]; /* direct_fp8: the checkpoint's input scales of the current layer's linears (0: none) */
    int sm_layer;           /* the layer whose smoothing factors are below (-1: none yet) */
    float *sm[4];           /* smoothing factors: qkv input [dim], o input per kv channel [kv_dim], w13 input [dim], w2 input [hidden] */
    qerr err[K_N];
} conv;

static void plan_add(conv *cv, const char *name, int dtype, uint64_t rows, uint64_t cols, int what, int layer) {
    planned *p;
    cv->p = REALLOC(cv->p, sizeof(planned) * (cv->np + 1));
    if (!cv->p) die("out of memory");
    p = &cv->p[cv->np++];
    memset(p, 0, sizeof *p);
    snprintf(p->e.name, W8A8_NAME_MAX, "%s", name);
    p->e.dtype = dtype;
    p->e.ndim = cols ? 2 : 1;
    p->e.shape[0] = rows;
    p->e.shape[1] = cols;
    p->e.bytes = rows * (cols ? cols : 1) * w8a8_dtype_size(dtype);
    p->what = what;
    p->layer = layer;
}

static void plan_linear(conv *cv, int l, const char *nm, int what, uint64_t rows, uint64_t cols) {
    char name[W8A8_NAME_MAX];
    int dt = cv->scheme == W8A8_F32 ? W8A8_DT_F32 : cv->scheme == W8A8_BF16 ? W8A8_DT_BF16 : cv->scheme == W8A8_FP8 ? W8A8_DT_E4M3 : W8A8_DT_I8;
    snprintf(name, sizeof name, "blk.%d.%s", l, nm);
    plan_add(cv, name, dt, rows, cols, what, l);
    if (cv->scheme == W8A8_FP8 || cv->scheme == W8A8_INT8) {
        snprintf(name, sizeof name, "blk.%d.%s.scale", l, nm);
        plan_add(cv, name, W8A8_DT_F32, rows, 0, P_SCALE, l);
        if (cv->act_static) {
            snprintf(name, sizeof name, "blk.%d.%s.in_scale", l, nm);
            plan_add(cv, name, W8A8_DT_F32, 1, 0, P_IN_SCALE, l);
            cv->p[cv->np - 1].of = what;
        }
    }
}

static void make_plan(conv *cv) {
    const w8a8_config *c = &cv->c;
    cv->np = 0;
    int e16 = cv->scheme == W8A8_F32 ? W8A8_DT_F32 : W8A8_DT_BF16;
    uint64_t D = c->dim, H = c->hidden_dim, qd = (uint64_t)c->n_heads * c->head_dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim;
    char name[W8A8_NAME_MAX];
    plan_add(cv, "tok_embd", e16, c->vocab_size, D, P_EMBD, -1);
    if (!(c->flags & W8A8_TIED_EMBEDDINGS) || cv->rotate) plan_add(cv, "output", e16, c->vocab_size, D, P_OUTPUT, -1);
    plan_add(cv, "out_norm", W8A8_DT_F32, D, 0, P_OUT_NORM, -1);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        snprintf(name, sizeof name, "blk.%u.attn_norm", l); plan_add(cv, name, W8A8_DT_F32, D, 0, P_ATTN_NORM, l);
        plan_linear(cv, l, "wqkv", P_QKV, qd + 2 * kvd, D);
        if (c->flags & W8A8_QKV_BIAS) { snprintf(name, sizeof name, "blk.%u.wqkv.bias", l); plan_add(cv, name, W8A8_DT_F32, qd + 2 * kvd, 0, P_QKV_BIAS, l); }
        if (c->flags & W8A8_QK_NORM) {
            snprintf(name, sizeof name, "blk.%u.q_norm", l); plan_add(cv, name, W8A8_DT_F32, c->head_dim, 0, P_Q_NORM, l);
            snprintf(name, sizeof name, "blk.%u.k_norm", l); plan_add(cv, name, W8A8_DT_F32, c->head_dim, 0, P_K_NORM, l);
        }
        plan_linear(cv, l, "wo", P_WO, D, qd);
        snprintf(name, sizeof name, "blk.%u.ffn_norm", l); plan_add(cv, name, W8A8_DT_F32, D, 0, P_FFN_NORM, l);
        plan_linear(cv, l, "w13", P_W13, 2 * H, D);
        plan_linear(cv, l, "w2", P_W2, D, H);
        if (cv->kv_fp8) {
            snprintf(name, sizeof name, "blk.%u.k_scale", l); plan_add(cv, name, W8A8_DT_F32, 1, 0, P_K_SCALE, l);
            snprintf(name, sizeof name, "blk.%u.v_scale", l); plan_add(cv, name, W8A8_DT_F32, 1, 0, P_V_SCALE, l);
        }
    }
}

static float *read_layer(conv *cv, int l, const char *what, uint64_t rows, uint64_t cols) {
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, what);
    return src_read(&cv->src, name, rows, cols);
}

/* --- Calibration statistics and SmoothQuant ---
 * The statistics are the engine's (w8a8_calib_stats): per layer, the per-channel absolute maxima of the inputs
 * of qkv, o, w13 and w2, then of the keys and values. */
static const float *stat_of(const conv *cv, int l, int what) { return cv->stats + w8a8_calib_offset(&cv->c, l, what); }
static size_t stats_size(const w8a8_config *c) { return w8a8_calib_offset(c, c->n_layers, 0); }
/* o's input channel h * head_dim + d reads v's channel (h / group) * head_dim + d (GQA) */
static uint64_t kv_channel(const w8a8_config *c, uint64_t j) {
    return (j / c->head_dim / (c->n_heads / c->n_kv_heads)) * c->head_dim + j % c->head_dim;
}

/* max |w[r][j]| over rows, into cmax[j] (kept if larger) */
static void col_absmax(const float *w, uint64_t rows, uint64_t cols, float *cmax) {
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t j = 0; j < cols; j++) cmax[j] = fmaxf(cmax[j], fabsf(w[r * cols + j]));
}
/* SmoothQuant's factor for one input channel: s = max|X|^alpha / max|W|^(1 - alpha). Dividing the channel of X
 * by s (folded into what produces X) and multiplying the column of W by s leaves X W^T unchanged, and moves
 * the activation's outliers into the weights, which are quantized per output channel and take them well. */
static float smooth_factor(float xmax, float wmax, float alpha) {
    if (!(xmax > 0) || !(wmax > 0)) return 1.0f;
    double s = pow(xmax, alpha) / pow(wmax, 1.0 - alpha);
    return (float)(s < 1e-5 ? 1e-5 : s > 1e5 ? 1e5 : s);
}

/* A pre-quantized FP8 linear, copied without dequantizing: the checkpoint's codes (rows reordered and
 * concatenated as the engine stores them) and its per-row scales; its input scale kept for P_IN_SCALE
 * (the largest of the parts: q, k and v, or gate and up, read the same input). */
static void *produce_fp8(conv *cv, const planned *p) {
    const w8a8_config *c = &cv->c;
    uint64_t rows = p->e.shape[0], cols = p->e.shape[1], D = c->dim, H = c->hidden_dim;
    uint64_t qd = (uint64_t)c->n_heads * c->head_dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim;
    const char *parts[3];
    uint64_t prow[3];
    int np = 0, which = 0;
    switch (p->what) {
    case P_QKV: parts[0] = "self_attn.q_proj.weight"; parts[1] = "self_attn.k_proj.weight"; parts[2] = "self_attn.v_proj.weight";
                prow[0] = qd; prow[1] = prow[2] = kvd; np = 3; which = 0; break;
    case P_WO: parts[0] = "self_attn.o_proj.weight"; prow[0] = D; np = 1; which = 1; break;
    case P_W13: parts[0] = "mlp.gate_proj.weight"; parts[1] = "mlp.up_proj.weight"; prow[0] = prow[1] = H; np = 2; which = 2; break;
    default: parts[0] = "mlp.down_proj.weight"; prow[0] = D; np = 1; which = 3; break;
    }
    uint8_t *out = xmalloc(rows * cols);
    float *scale = xmalloc(sizeof(float) * rows), in_max = 0;
    int all_in = 1;
    uint64_t at = 0;
    for (int i = 0; i < np; i++) {
        char name[160];
        float in = 0;
        snprintf(name, sizeof name, "model.layers.%d.%s", p->layer, parts[i]);
        uint8_t *codes = src_read_fp8(&cv->src, name, prow[i], cols, scale + at, &in);
        if (cv->src.rotate_half && p->what == P_QKV && i < 2) {
            int nh = i == 0 ? c->n_heads : c->n_kv_heads;
            unpermute_bytes(codes, nh, c->head_dim, cols);
            unpermute_bytes(scale + at, nh, c->head_dim, sizeof(float));
        }
        memcpy(out + at * cols, codes, prow[i] * cols);
        FREE(codes);
        at += prow[i];
        all_in &= in > 0;
        in_max = fmaxf(in_max, in);
    }
    cv->ckpt_in_scale[which] = all_in ? in_max : 0;
    if (cv->act_static && !cv->stats && !all_in) die("'%s' has no input_scale for a static activation scale: use --act dynamic or --calib", parts[0]);
    cv->pending_scale = scale;
    return out;
}

/* The smoothing factors of layer l (computed once per layer: the weights are read for their column maxima). */
static void smooth_layer(conv *cv, int l);

/* --- Rotation of the residual stream (--rotate, QuaRot's offline part) ---
 * With Q = diag(signs) H / sqrt(dim) (H the Walsh-Hadamard matrix, so Q is orthogonal) the model can run on
 * x Q instead of x: RMSNorm(x Q) = RMSNorm(x) Q once the norms' gains are folded into the linears after them,
 * a linear that reads the stream becomes W Q (each row turned), one that writes it Q^T W (each column
 * turned), the embeddings E Q, the LM head (W_h diag(g_out)) Q. Nothing changes at run time; the rotation
 * spreads an outlier channel over all of them, which the per-token activation scales then take better. */
static void fwht(float *v, int n) {   /* in place, unnormalized */
    for (int h = 1; h < n; h <<= 1)
        for (int i = 0; i < n; i += 2 * h)
            for (int j = i; j < i + h; j++) { float a = v[j], b = v[j + h]; v[j] = a + b; v[j + h] = a - b; }
}
static void rotate_rows(const conv *cv, float *w, uint64_t rows, uint64_t dim) {   /* w <- w Q */
    float norm = 1.0f / sqrtf((float)dim);
    for (uint64_t r = 0; r < rows; r++) {
        float *row = w + r * dim;
        for (uint64_t j = 0; j < dim; j++) row[j] *= cv->rot_signs[j];
        fwht(row, (int)dim);
        for (uint64_t j = 0; j < dim; j++) row[j] *= norm;
    }
}
static void rotate_cols(const conv *cv, float *w, uint64_t dim, uint64_t cols) {   /* w [dim][cols] <- Q^T w */
    float *col = xmalloc(sizeof(float) * dim), norm = 1.0f / sqrtf((float)dim);
    for (uint64_t c = 0; c < cols; c++) {
        for (uint64_t j = 0; j < dim; j++) col[j] = w[j * cols + c] * cv->rot_signs[j];
        fwht(col, (int)dim);
        for (uint64_t j = 0; j < dim; j++) w[j * cols + c] = col[j] * norm;
    }
    FREE(col);
}
static void scale_cols(float *w, uint64_t rows, uint64_t cols, const float *g) {
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t j = 0; j < cols; j++) w[r * cols + j] *= g[j];
}

/* Produces one planned tensor's bytes. */
static void *produce(conv *cv, const planned *p) {
    const w8a8_config *c = &cv->c;
    uint64_t rows = p->e.shape[0], cols = p->e.shape[1], D = c->dim, H = c->hidden_dim;
    uint64_t qd = (uint64_t)c->n_heads * c->head_dim, kvd = (uint64_t)c->n_kv_heads * c->head_dim;
    int l = p->layer, hf = cv->src.rotate_half, kind = -1;
    float *w = NULL;
    if (l >= 0 && cv->smooth) smooth_layer(cv, l);
    float *const *sm = cv->sm;
    switch (p->what) {
    case P_EMBD:   /* with tied embeddings, some files keep only one of the two names */
        w = src_read(&cv->src, src_has(&cv->src, "model.embed_tokens.weight") || !src_has(&cv->src, "lm_head.weight")
                                   ? "model.embed_tokens.weight" : "lm_head.weight", rows, cols);
        kind = K_EMBD;
        break;
    case P_OUTPUT:   /* rotated: untied, the final norm's gains folded in */
        w = src_read(&cv->src, src_has(&cv->src, "lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight", rows, cols);
        if (cv->rotate) {
            float *g = src_read(&cv->src, "model.norm.weight", cols, 0);
            scale_cols(w, rows, cols, g);
            FREE(g);
        }
        kind = K_EMBD;
        break;
    case P_OUT_NORM: {
        float *g = src_read(&cv->src, "model.norm.weight", rows, 0);
        if (cv->rotate) for (uint64_t j = 0; j < rows; j++) g[j] = 1.0f;
        return g;
    }
    case P_ATTN_NORM: case P_FFN_NORM: {   /* smoothing: the norm's gains divide its output's channels */
        float *g = read_layer(cv, l, p->what == P_ATTN_NORM ? "input_layernorm.weight" : "post_attention_layernorm.weight", rows, 0);
        if (cv->smooth) for (uint64_t j = 0; j < rows; j++) g[j] /= sm[p->what == P_ATTN_NORM ? 0 : 2][j];
        if (cv->rotate) for (uint64_t j = 0; j < rows; j++) g[j] = 1.0f;   /* folded into qkv / w13 */
        return g;
    }
    case P_Q_NORM: case P_K_NORM: {
        float *v = read_layer(cv, l, p->what == P_Q_NORM ? "self_attn.q_norm.weight" : "self_attn.k_norm.weight", rows, 0);
        if (hf) unpermute_rows(v, 1, c->head_dim, 0);
        return v;
    }
    case P_QKV_BIAS: {
        float *v = xmalloc(sizeof(float) * rows), *q = read_layer(cv, l, "self_attn.q_proj.bias", qd, 0),
              *k = read_layer(cv, l, "self_attn.k_proj.bias", kvd, 0), *vv = read_layer(cv, l, "self_attn.v_proj.bias", kvd, 0);
        if (hf) { unpermute_rows(q, c->n_heads, c->head_dim, 0); unpermute_rows(k, c->n_kv_heads, c->head_dim, 0); }
        if (cv->smooth) for (uint64_t j = 0; j < kvd; j++) vv[j] /= sm[1][j];
        memcpy(v, q, qd * 4); memcpy(v + qd, k, kvd * 4); memcpy(v + qd + kvd, vv, kvd * 4);
        FREE(q); FREE(k); FREE(vv);
        return v;
    }
    case P_QKV: case P_WO: case P_W13: case P_W2:
        if (cv->direct_fp8) return produce_fp8(cv, p);
        if (p->what == P_QKV) {
            float *q = read_layer(cv, l, "self_attn.q_proj.weight", qd, D), *k = read_layer(cv, l, "self_attn.k_proj.weight", kvd, D),
                  *v = read_layer(cv, l, "self_attn.v_proj.weight", kvd, D);
            if (hf) { unpermute_rows(q, c->n_heads, c->head_dim, D); unpermute_rows(k, c->n_kv_heads, c->head_dim, D); }
            w = xmalloc(sizeof(float) * rows * cols);
            memcpy(w, q, qd * D * 4); memcpy(w + qd * D, k, kvd * D * 4); memcpy(w + (qd + kvd) * D, v, kvd * D * 4);
            FREE(q); FREE(k); FREE(v);
            if (cv->smooth) {   /* columns times the input's factors; v rows divided by the o input's */
                for (uint64_t r = 0; r < rows; r++)
                    for (uint64_t j = 0; j < D; j++) w[r * D + j] *= sm[0][j];
                for (uint64_t r = 0; r < kvd; r++)
                    for (uint64_t j = 0; j < D; j++) w[(qd + kvd + r) * D + j] /= sm[1][r];
            }
            kind = K_QKV;
        } else if (p->what == P_WO) {
            w = read_layer(cv, l, "self_attn.o_proj.weight", D, qd);
            if (cv->smooth)   /* o's input channel h hd + d is v's channel (h / group) hd + d */
                for (uint64_t r = 0; r < D; r++)
                    for (uint64_t j = 0; j < qd; j++) w[r * qd + j] *= sm[1][kv_channel(c, j)];
            kind = K_WO;
        } else if (p->what == P_W13) {
            float *g = read_layer(cv, l, "mlp.gate_proj.weight", H, D), *u = read_layer(cv, l, "mlp.up_proj.weight", H, D);
            w = xmalloc(sizeof(float) * rows * cols);
            memcpy(w, g, H * D * 4); memcpy(w + H * D, u, H * D * 4);
            FREE(g); FREE(u);
            if (cv->smooth) {   /* columns times the input's factors; up rows divided by the down input's */
                for (uint64_t r = 0; r < 2 * H; r++)
                    for (uint64_t j = 0; j < D; j++) w[r * D + j] *= sm[2][j];
                for (uint64_t r = 0; r < H; r++)
                    for (uint64_t j = 0; j < D; j++) w[(H + r) * D + j] /= sm[3][r];
            }
            kind = K_W13;
        } else {
            w = read_layer(cv, l, "mlp.down_proj.weight", D, H);
            if (cv->smooth)
                for (uint64_t r = 0; r < D; r++)
                    for (uint64_t j = 0; j < H; j++) w[r * H + j] *= sm[3][j];
            kind = K_W2;
        }
        break;
    case P_SCALE: { float *s = cv->pending_scale; cv->pending_scale = NULL; return s; }
    case P_IN_SCALE: {   /* the largest (smoothed) input over the calibration text, at the format's largest value */
        float *s = xmalloc(sizeof(float)), qmax = cv->scheme == W8A8_FP8 ? 448.0f : 127.0f, amax = 0;
        int which = p->of == P_QKV ? 0 : p->of == P_WO ? 1 : p->of == P_W13 ? 2 : 3;
        if (!cv->stats) {   /* a pre-quantized checkpoint's own input scale */
            s[0] = cv->ckpt_in_scale[which];
            return s;
        }
        const float *a = stat_of(cv, l, which);   /* W8A8_CAL_QKV .. W8A8_CAL_W2 are 0 .. 3, as `which` */
        uint64_t n = which == 1 ? qd : which == 3 ? H : D;
        for (uint64_t j = 0; j < n; j++) {
            float f = !cv->smooth ? 1.0f : which == 1 ? sm[1][kv_channel(c, j)] : sm[which][j];
            amax = fmaxf(amax, a[j] / f);
        }
        s[0] = amax > 0 ? amax / qmax : 1.0f;
        return s;
    }
    case P_K_SCALE: case P_V_SCALE: {   /* the cache's scales: the largest key (value, as smoothed) at 448 */
        float *s = xmalloc(sizeof(float)), amax = 0;
        const float *a = stat_of(cv, l, p->what == P_K_SCALE ? W8A8_CAL_K : W8A8_CAL_V);
        for (uint64_t j = 0; j < kvd; j++) amax = fmaxf(amax, a[j] / (p->what == P_V_SCALE && cv->smooth ? sm[1][j] : 1.0f));
        s[0] = amax > 0 ? amax / 448.0f : 1.0f;
        return s;
    }
    }
    if (cv->rotate) {
        if (p->what == P_EMBD || p->what == P_OUTPUT) rotate_rows(cv, w, rows, cols);
        else if (p->what == P_QKV || p->what == P_W13) {
            float *g = read_layer(cv, l, p->what == P_QKV ? "input_layernorm.weight" : "post_attention_layernorm.weight", D, 0);
            scale_cols(w, rows, cols, g);
            FREE(g);
            rotate_rows(cv, w, rows, cols);
        } else rotate_cols(cv, w, rows, cols);   /* wo, w2 write the stream */
    }
    /* embeddings and the LM head stay 16-bit in the quantized schemes */
    int sch = kind == K_EMBD ? (cv->scheme == W8A8_F32 ? W8A8_F32 : W8A8_BF16) : cv->scheme;
    void *out = xmalloc(p->e.bytes);
    float *scale = (sch == W8A8_FP8 || sch == W8A8_INT8) ? xmalloc(sizeof(float) * rows) : NULL;
    quantize_weight(sch, w, rows, cols, out, scale, &cv->err[kind]);
    FREE(w);
    cv->pending_scale = scale;
    return out;
}

static void smooth_layer(conv *cv, int l) {
    if (cv->sm_layer == l) return;
    const w8a8_config *c = &cv->c;
    uint64_t D = c->dim, H = c->hidden_dim, hd = c->head_dim, qd = (uint64_t)c->n_heads * hd, kvd = (uint64_t)c->n_kv_heads * hd;
    uint64_t len[4] = {D, kvd, D, H};
    float *wmax[4], *xmax_o = xcalloc(kvd, sizeof(float));
    for (int i = 0; i < 4; i++) {
        FREE(cv->sm[i]);
        cv->sm[i] = xmalloc(sizeof(float) * len[i]);
        wmax[i] = xcalloc(len[i], sizeof(float));
    }
    const char *qkv[3] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"};
    for (int i = 0; i < 3; i++) {
        uint64_t r = i ? kvd : qd;
        float *w = read_layer(cv, l, qkv[i], r, D);
        col_absmax(w, r, D, wmax[0]);
        FREE(w);
    }
    float *w = read_layer(cv, l, "self_attn.o_proj.weight", D, qd), *cm = xcalloc(qd, sizeof(float));
    col_absmax(w, D, qd, cm);
    const float *xo = stat_of(cv, l, W8A8_CAL_O);
    for (uint64_t j = 0; j < qd; j++) {   /* the heads sharing a kv head share its factors */
        uint64_t k = kv_channel(c, j);
        wmax[1][k] = fmaxf(wmax[1][k], cm[j]);
        xmax_o[k] = fmaxf(xmax_o[k], xo[j]);
    }
    FREE(w); FREE(cm);
    const char *gu[2] = {"mlp.gate_proj.weight", "mlp.up_proj.weight"};
    for (int i = 0; i < 2; i++) { w = read_layer(cv, l, gu[i], H, D); col_absmax(w, H, D, wmax[2]); FREE(w); }
    w = read_layer(cv, l, "mlp.down_proj.weight", D, H);
    col_absmax(w, D, H, wmax[3]);
    FREE(w);
    const float *xs[4] = {stat_of(cv, l, W8A8_CAL_QKV), xmax_o, stat_of(cv, l, W8A8_CAL_W13), stat_of(cv, l, W8A8_CAL_W2)};
    for (int i = 0; i < 4; i++) {
        for (uint64_t j = 0; j < len[i]; j++) cv->sm[i][j] = smooth_factor(xs[i][j], wmax[i][j], cv->alpha);
        FREE(wmax[i]);
    }
    FREE(xmax_o);
    cv->sm_layer = l;
}

/* =========================================================================================================
 * Reading the input's config
 * ======================================================================================================= */
static void config_from_l2c(conv *cv, const char *path) {
    cv->src.l2c = map_file(path);
    blob b = cv->src.l2c;
    if (b.n >= 4 && !memcmp(b.p, "ak42", 4)) die("'%s' is a llama2.c version-1/2 export; only the legacy (version 0) format is read", path);
    if (b.n < 28) die("'%s' is too small to be a llama2.c checkpoint", path);
    int32_t h[7];
    memcpy(h, b.p, 28);
    for (int i = 0; i < 7; i++) {   /* the vocabulary size is negative when the classifier is not shared */
        int64_t v = i == 5 ? llabs((int64_t)h[i]) : h[i];
        if (v <= 0 || v > 1 << 20) die("'%s' does not look like a llama2.c checkpoint (header %d %d %d %d %d %d %d)", path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    }
    w8a8_config *c = &cv->c;
    c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4];
    c->vocab_size = h[5] < 0 ? -h[5] : h[5]; c->max_context = h[6];   /* |h[5]| <= 2^20, checked above */
    if (c->dim % c->n_heads) die("'%s': bad dimensions in the header", path);
    c->head_dim = c->dim / c->n_heads;
    cv->src.l2c_shared = h[5] > 0;
    if (cv->src.l2c_shared) c->flags |= W8A8_TIED_EMBEDDINGS;
    c->rope_theta = 10000.0f; c->norm_eps = 1e-5f;
    cv->src.c = *c;
    uint64_t r, cc;
    int64_t end = cv->src.l2c_shared ? l2c_offset(&cv->src, "model.norm.weight", &r, &cc) + c->dim + (int64_t)c->max_context * c->head_dim
                                     : l2c_offset(&cv->src, "lm_head.weight", &r, &cc) + (int64_t)c->vocab_size * c->dim;
    if ((int64_t)b.n != end * 4) die("'%s' is %zu bytes, but its header implies %lld (truncated, or not a llama2.c checkpoint)", path, b.n, (long long)end * 4);
}

static void parse_hf_config(conv *cv, const char *p) {
    jv cj = read_json(p);
    const jv *archs = jget(&cj, "architectures");
    const char *arch = archs && archs->type == J_ARR && archs->n > 0 && archs->items[0].type == J_STR ? archs->items[0].str : NULL;
    if (!arch) die("%s: no 'architectures' entry", p);
    int qwen2 = !strcmp(arch, "Qwen2ForCausalLM"), qwen3 = !strcmp(arch, "Qwen3ForCausalLM");
    if (strcmp(arch, "LlamaForCausalLM") && strcmp(arch, "MistralForCausalLM") && !qwen2 && !qwen3)
        die("architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM are)", arch);
    const char *act = jstr(&cj, "hidden_act");
    if (act && strcmp(act, "silu")) die("%s: hidden_act '%s' is not supported (silu is)", p, act);
    w8a8_config *c = &cv->c;
    c->dim = (uint32_t)int_in(jnum(&cj, "hidden_size", 0), 0, 1 << 20, "hidden_size", p);
    c->hidden_dim = (uint32_t)int_in(jnum(&cj, "intermediate_size", 0), 0, 1 << 22, "intermediate_size", p);
    c->n_layers = (uint32_t)int_in(jnum(&cj, "num_hidden_layers", 0), 0, 4096, "num_hidden_layers", p);
    c->n_heads = (uint32_t)int_in(jnum(&cj, "num_attention_heads", 0), 0, 4096, "num_attention_heads", p);
    c->n_kv_heads = (uint32_t)int_in(jnum(&cj, "num_key_value_heads", c->n_heads), 0, 4096, "num_key_value_heads", p);
    if (!c->dim || !c->hidden_dim || !c->n_layers || !c->n_heads || !c->n_kv_heads) die("%s: a dimension is missing or zero", p);
    c->head_dim = (uint32_t)int_in(jnum(&cj, "head_dim", c->dim / c->n_heads), 0, 4096, "head_dim", p);
    c->vocab_size = (uint32_t)int_in(jnum(&cj, "vocab_size", 0), 0, 1 << 24, "vocab_size", p);
    c->max_context = (uint32_t)int_in(jnum(&cj, "max_position_embeddings", 2048), 1, 1 << 24, "max_position_embeddings", p);
    c->rope_theta = (float)jnum(&cj, "rope_theta", 10000.0);
    c->norm_eps = (float)jnum(&cj, "rms_norm_eps", 1e-6);
    if (jbool(&cj, "tie_word_embeddings", 0)) c->flags |= W8A8_TIED_EMBEDDINGS;
    if (qwen2 || jbool(&cj, "attention_bias", 0)) c->flags |= W8A8_QKV_BIAS;
    if (qwen3) c->flags |= W8A8_QK_NORM;
    const jv *rs = jget(&cj, "rope_scaling");
    if (rs && rs->type == J_OBJ) {
        const char *ty = jstr(rs, "rope_type") ? jstr(rs, "rope_type") : jstr(rs, "type");
        if (!ty || strcmp(ty, "llama3")) die("%s: rope_scaling type '%s' is not supported (llama3 is)", p, ty ? ty : "?");
        c->rope_scaling = W8A8_ROPE_LLAMA3;
        c->rope_factor = (float)jnum(rs, "factor", 8);
        c->rope_low_freq_factor = (float)jnum(rs, "low_freq_factor", 1);
        c->rope_high_freq_factor = (float)jnum(rs, "high_freq_factor", 4);
        c->rope_original_context = (uint32_t)int_in(jnum(rs, "original_max_position_embeddings", 8192), 1, 1 << 24, "original_max_position_embeddings", p);
    }
    const jv *b = jget(&cj, "bos_token_id"), *e = jget(&cj, "eos_token_id");
    c->bos_id = b && b->type == J_NUM ? (int)int_in(b->num, -1, 1 << 24, "bos_token_id", p) : -1;
    c->eos_id = e && e->type == J_NUM ? (int)int_in(e->num, -1, 1 << 24, "eos_token_id", p)
              : e && e->type == J_ARR && e->n && e->items[0].type == J_NUM ? (int)int_in(e->items[0].num, -1, 1 << 24, "eos_token_id", p) : -1;
    c->eot_id = -1;
    jv_free(&cj);
}

static void config_from_hf(conv *cv, const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (!file_exists(p)) die("'%s' has no config.json (is it a Hugging Face model directory?)", dir);
    parse_hf_config(cv, p);
    w8a8_config *c = &cv->c;
    int tied = (c->flags & W8A8_TIED_EMBEDDINGS) != 0;

    /* the weights */
    cv->src.kind = SRC_ST;
    cv->src.rotate_half = 1;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    if (file_exists(p)) {
        jv ij = read_json(p);
        const jv *wm = jget(&ij, "weight_map");
        if (!wm || wm->type != J_OBJ) die("%s has no weight_map", p);
        char **seen = xcalloc(wm->n, sizeof(char *));
        int ns = 0;
        for (int i = 0; i < wm->n; i++) {
            if (wm->items[i].type != J_STR) die("%s: weight_map entry %d is not a file name", p, i);
            const char *f = wm->items[i].str;
            int dup = 0;
            for (int k = 0; k < ns; k++) dup |= !strcmp(seen[k], f);
            if (dup) continue;
            if (strchr(f, '/')) die("%s: shard name '%s' has a '/'", p, f);
            seen[ns++] = STRDUP(f);
            char fp[4200];
            snprintf(fp, sizeof fp, "%s/%s", dir, f);
            st_open(&cv->src, fp);
        }
        for (int k = 0; k < ns; k++) FREE(seen[k]);
        FREE(seen);
        jv_free(&ij);
    } else {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (!file_exists(p)) die("'%s' has neither model.safetensors nor model.safetensors.index.json", dir);
        st_open(&cv->src, p);
    }
    if (tied && src_has(&cv->src, "lm_head.weight") && src_has(&cv->src, "model.embed_tokens.weight"))
        fprintf(stderr, "convert: note: lm_head.weight ignored (embeddings are tied)\n");
    if (!tied && !src_has(&cv->src, "lm_head.weight")) {
        fprintf(stderr, "convert: note: no lm_head.weight; tying the LM head to the embeddings\n");
        c->flags |= W8A8_TIED_EMBEDDINGS;
    }
}

/* =========================================================================================================
 * Writing the file
 * ======================================================================================================= */
static void xwrite(FILE *f, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, f) != n) die("write failed: %s", strerror(errno));
}
static void pad_to(FILE *f, uint64_t *at, uint64_t align) {
    static const char zeros[W8A8_ALIGN];
    uint64_t n = (align - *at % align) % align;
    xwrite(f, zeros, n);
    *at += n;
}

static unsigned char *build_tokenizer_section(const tok_build *t, uint64_t *n_out) {
    w8a8_tokenizer_header th = {t->kind, t->pre, t->flags, (uint32_t)t->n, (uint32_t)t->n_merges, 0, 0, 0};
    uint64_t text = 0;
    for (int i = 0; i < t->n; i++) text += t->len[i];
    th.text_bytes = (uint32_t)text;
    th.template_bytes = t->tmpl ? (uint32_t)strlen(t->tmpl) : 0;
    uint64_t n = sizeof th + 4ull * t->n + ((t->n + 3) & ~3ull) + 4ull * (t->n + 1) + ((text + 3) & ~3ull) + 8ull * t->n_merges + th.template_bytes;
    unsigned char *b = xcalloc(n, 1), *o = b;
    memcpy(o, &th, sizeof th); o += sizeof th;
    memcpy(o, t->scores, 4ull * t->n); o += 4ull * t->n;
    memcpy(o, t->types, t->n); o += (t->n + 3) & ~3ull;
    uint32_t off = 0;
    for (int i = 0; i <= t->n; i++) { memcpy(o, &off, 4); o += 4; if (i < t->n) off += t->len[i]; }
    for (int i = 0; i < t->n; i++) { memcpy(o, t->text[i], t->len[i]); o += t->len[i]; }
    o = b + sizeof th + 4ull * t->n + ((t->n + 3) & ~3ull) + 4ull * (t->n + 1) + ((text + 3) & ~3ull);
    memcpy(o, t->merges, 8ull * t->n_merges); o += 8ull * t->n_merges;
    if (th.template_bytes) memcpy(o, t->tmpl, th.template_bytes);
    *n_out = n;
    return b;
}

static void config_from_gguf(conv *cv, tok_build *tb, const char *path) {
    g_gguf = gguf_open(path);
    const gguf_file *g = &g_gguf;
    char *arch = gguf_string(g, "general.architecture"), k[128];
    if (!arch) die("'%s' has no general.architecture", path);
    int llama = !strcmp(arch, "llama"), qwen2 = !strcmp(arch, "qwen2"), qwen3 = !strcmp(arch, "qwen3");
    if (!llama && !qwen2 && !qwen3) die("'%s': architecture '%s' is not supported (llama, qwen2, qwen3 are)", path, arch);
    if (gguf_find(g, "rope_freqs.weight")) die("'%s': rope frequency factors (rope_freqs, Llama 3.1 scaling in GGUF) are not supported yet", path);
#define A(key, dflt) (snprintf(k, sizeof k, "%s." key, arch), int_in(gguf_num(g, k, dflt), 0, 1 << 24, k, path))
#define AF(key, dflt) (snprintf(k, sizeof k, "%s." key, arch), gguf_num(g, k, dflt))
    w8a8_config *c = &cv->c;
    c->dim = (uint32_t)A("embedding_length", 0);
    c->hidden_dim = (uint32_t)A("feed_forward_length", 0);
    c->n_layers = (uint32_t)A("block_count", 0);
    c->n_heads = (uint32_t)A("attention.head_count", 0);
    c->n_kv_heads = (uint32_t)A("attention.head_count_kv", c->n_heads);
    if (!c->dim || !c->hidden_dim || !c->n_layers || !c->n_heads || !c->n_kv_heads) die("'%s': a dimension is missing", path);
    c->head_dim = (uint32_t)A("attention.key_length", c->dim / c->n_heads);
    c->max_context = (uint32_t)A("context_length", 2048);
    c->rope_theta = (float)AF("rope.freq_base", 10000.0);
    c->norm_eps = (float)AF("attention.layer_norm_rms_epsilon", 1e-5);
#undef A
#undef AF
    gguf_tokenizer(tb, g);
    c->vocab_size = (uint32_t)tb->n;
    const gguf_tensor *e = gguf_find(g, "token_embd.weight");
    if (!e || e->ne[1] != c->vocab_size) die("'%s': token_embd.weight is missing or does not match the %u tokens", path, c->vocab_size);
    if (!gguf_find(g, "output.weight")) c->flags |= W8A8_TIED_EMBEDDINGS;
    if (qwen2 || gguf_find(g, "blk.0.attn_q.bias")) c->flags |= W8A8_QKV_BIAS;
    if (qwen3) c->flags |= W8A8_QK_NORM;
    c->bos_id = tb->bos; c->eos_id = tb->eos;
    /* llama.cpp's converter reorders Llama's q/k rows for its adjacent-pair RoPE: the engine's layout already.
     * Qwen models keep Hugging Face's rotate-half order in GGUF, so theirs are reordered like safetensors. */
    cv->src.kind = SRC_GGUF;
    cv->src.rotate_half = !llama;
    FREE(arch);
}

/* --dump GGUF TENSOR OUT: one tensor, dequantized to raw fp32 (the tests compare it with the gguf package). */
static void dump_gguf_tensor(const char *path, const char *name, const char *out) {
    gguf_file g = gguf_open(path);
    const gguf_tensor *t = gguf_find(&g, name);
    if (!t) die("'%s' has no tensor '%s'", path, name);
    uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *y = xmalloc(n * sizeof(float));
    gguf_dequant(t, y, n, path);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(y, 4, n, f) != n || fclose(f)) die("cannot write '%s'", out);
    FREE(y);
}

/* --vocab-only: a tiny model (random weights) around a tokenizer, for tokenizer work and tests. */
static void config_vocab_only(conv *cv, tok_build *tb, const char *path) {
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        jv root = read_json(path);
        int v = 0;
        const jv *vj = jget(jget(&root, "model"), "vocab"), *added = jget(&root, "added_tokens");
        for (int i = 0; vj && vj->type == J_OBJ && i < vj->n; i++) v = (int)fmax(v, int_in(vj->items[i].num, 0, 1 << 24, "a token id", path) + 1);
        for (int i = 0; added && added->type == J_ARR && i < added->n; i++) v = (int)fmax(v, int_in(jnum(&added->items[i], "id", 0), 0, 1 << 24, "an added token id", path) + 1);
        jv_free(&root);
        load_hf_tokenizer(tb, path, v);
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", (int)(strrchr(path, '/') ? strrchr(path, '/') - path : 1),
                 strrchr(path, '/') ? path : ".");
        if (file_exists(cfg)) load_tokenizer_config(tb, cfg);
    } else load_l2c_tokenizer(tb, path, count_l2c_tokens(path));
    w8a8_config *c = &cv->c;
    c->dim = 8; c->hidden_dim = 8; c->n_layers = 1; c->n_heads = 1; c->n_kv_heads = 1; c->head_dim = 8;
    c->vocab_size = tb->n; c->max_context = 64; c->rope_theta = 10000; c->norm_eps = 1e-5f;
    c->flags = W8A8_TIED_EMBEDDINGS;
    c->bos_id = tb->bos; c->eos_id = tb->eos; c->eot_id = -1;
    cv->src.kind = SRC_SYNTH;
}

static void usage(void) {
    fprintf(stderr,
            "usage: convert INPUT -o OUT [--scheme S] [options]\n"
            "  INPUT  a Hugging Face directory (also pre-quantized FP8: compressed-tensors / \"fp8\" layout), a GGUF\n"
            "         file (.gguf), or a llama2.c checkpoint (.bin, with --tokenizer tokenizer.bin)\n"
            "       convert --vocab-only TOKENIZER -o OUT   (tokenizer.json or tokenizer.bin; random tiny weights)\n"
            "       convert --synthetic config.json --tokenizer TOKENIZER -o OUT [--scheme S]   (real shapes, random weights)\n"
            "  --scheme S         f32 (reference), bf16, fp8 (E4M3 W8A8, dynamic per-token scales; default), int8 (W8A8,\n"
            "                     dynamic), fp8-static (smoothed, static per-tensor scales), int8-sq (SmoothQuant INT8,\n"
            "                     static scales; --act dynamic for per-token)\n"
            "  --act static|dynamic   activation scales: per tensor from calibration, or per token at run time\n"
            "  --smooth, --no-smooth  SmoothQuant folding on or off (on by default for fp8-static and int8-sq)\n"
            "  --alpha A          SmoothQuant migration strength, 0..1 (default 0.5), or auto: the best of 0.3..0.8\n"
            "                     on the calibration text\n"
            "  --kv bf16|fp8      the KV cache: 16-bit (default) or e4m3 with calibrated per-layer scales\n"
            "  --calib FILE       calibrate on this text (static scales, smoothing and --kv fp8 need it)\n"
            "  --calib-tokens N   tokens of it to run (default 4096)\n"
            "  --calib-save FILE  save the statistics; --calib-load FILE  reuse them instead of --calib\n"
            "  --calib-cpu        calibrate on the CPU reference (f32) even where there is a GPU\n"
            "  --rotate           turn the residual stream by a random Hadamard rotation (folded into the weights;\n"
            "                     spreads outlier channels without calibration; dim a power of two)\n"
            "  --tokenizer FILE   a llama2.c tokenizer.bin, used instead of tokenizer.json\n"
            "  --quiet            no progress, no summary\n");
    exit(2);
}

/* Writes the model file for the current plan: to OUT.tmp.PID, then renamed. Returns its size. */
static uint64_t write_model(conv *cv, const tok_build *tb, const char *out, const char *label) {
    cv->c.scheme = cv->scheme;
    cv->c.act_scales = cv->act_static ? W8A8_ACT_STATIC : W8A8_ACT_DYNAMIC;
    cv->c.kv_dtype = cv->kv_fp8 ? W8A8_KV_FP8 : W8A8_KV_16;
    if (cv->rotate) cv->c.flags &= ~(uint32_t)W8A8_TIED_EMBEDDINGS;   /* the LM head gets the final norm folded in */
    cv->src.c = cv->c;
    cv->sm_layer = -1;
    memset(cv->err, 0, sizeof cv->err);
    make_plan(cv);
    /* layout: header, tokenizer, table, data */
    uint64_t tok_n;
    unsigned char *tok = build_tokenizer_section(tb, &tok_n);
    w8a8_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, W8A8_MAGIC, 8);
    h.version = W8A8_VERSION;
    h.header_bytes = sizeof h;
    h.config = cv->c;
    h.tokenizer_offset = sizeof h;
    h.tokenizer_bytes = tok_n;
    h.table_offset = (h.tokenizer_offset + tok_n + 7) & ~7ull;
    h.n_tensors = cv->np;
    uint64_t at = h.table_offset + (uint64_t)cv->np * sizeof(w8a8_tensor_entry);
    at = (at + W8A8_ALIGN - 1) / W8A8_ALIGN * W8A8_ALIGN;
    h.data_offset = at;
    for (int i = 0; i < cv->np; i++) {
        cv->p[i].e.offset = at;
        at += cv->p[i].e.bytes;
        at = (at + W8A8_ALIGN - 1) / W8A8_ALIGN * W8A8_ALIGN;
    }
    h.data_bytes = at - h.data_offset;
    h.file_bytes = at;
    w8a8_tensor_entry *table = xcalloc(cv->np, sizeof *table);
    for (int i = 0; i < cv->np; i++) table[i] = cv->p[i].e;
    uint64_t sum = w8a8_fnv1a(0xcbf29ce484222325ull, &h, sizeof h);
    sum = w8a8_fnv1a(sum, tok, tok_n);
    h.checksum = w8a8_fnv1a(sum, table, sizeof(*table) * cv->np);

    snprintf(g_tmp_path, sizeof g_tmp_path, "%s.tmp.%d", out, (int)getpid());
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    FILE *f = fopen(g_tmp_path, "wb");
    if (!f) { g_tmp_path[0] = 0; die("cannot create '%s': %s", out, strerror(errno)); }
    uint64_t pos = 0;
    xwrite(f, &h, sizeof h); pos += sizeof h;
    xwrite(f, tok, tok_n); pos += tok_n;
    pad_to(f, &pos, 8);
    xwrite(f, table, sizeof(*table) * cv->np); pos += sizeof(*table) * cv->np;
    for (int i = 0; i < cv->np; i++) {
        pad_to(f, &pos, W8A8_ALIGN);
        if (pos != cv->p[i].e.offset) die("internal error: tensor '%s' at %llu, planned %llu", cv->p[i].e.name, (unsigned long long)pos, (unsigned long long)cv->p[i].e.offset);
        void *data = produce(cv, &cv->p[i]);
        xwrite(f, data, cv->p[i].e.bytes);
        pos += cv->p[i].e.bytes;
        FREE(data);
        progress(label, i + 1, cv->np);
    }
    pad_to(f, &pos, W8A8_ALIGN);
    if (fflush(f) || fsync(fileno(f)) || fclose(f)) die("writing '%s' failed: %s", g_tmp_path, strerror(errno));
    if (rename(g_tmp_path, out)) die("cannot rename '%s' to '%s': %s", g_tmp_path, out, strerror(errno));
    g_tmp_path[0] = 0;
    FREE(tok); FREE(table);
    return h.file_bytes;
}

/* =========================================================================================================
 * Calibration: the model, unquantized, over real text, recording every linear input's per-channel maximum
 * ======================================================================================================= */
/* Up to max bytes of a text file, cut after its last whole line when cut, NUL-terminated. */
static char *read_text(const char *path, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot read '%s': %s", path, strerror(errno));
    char *t = xmalloc(max + 1);
    size_t n = fread(t, 1, max, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (more) while (n > 0 && t[n - 1] != '\n') n--;
    t[n] = 0;
    if (memchr(t, 0, n)) die("'%s' holds a NUL byte: not a text file", path);
    return t;
}

static char g_calib_model[4300];   /* the temporary model calibration runs, removed on exit */
static void remove_calib_model(void) { if (g_calib_model[0]) unlink(g_calib_model); }

#define CALIB_MAGIC "W8A8CAL1"
typedef struct { char magic[8]; uint32_t n_layers, dim, hidden_dim, q_dim, kv_dim, n_tokens; uint64_t n_floats; } calib_header;

static void calib_save(const conv *cv, const float *st, int n_tokens, const char *path) {
    const w8a8_config *c = &cv->c;
    calib_header h = {CALIB_MAGIC, c->n_layers, c->dim, c->hidden_dim, c->n_heads * c->head_dim, c->n_kv_heads * c->head_dim,
                      (uint32_t)n_tokens, stats_size(c)};
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) die("cannot create '%s': %s", path, strerror(errno));
    int ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(st, sizeof(float), h.n_floats, f) == h.n_floats;
    if (fclose(f) || !ok || rename(tmp, path)) { unlink(tmp); die("writing '%s' failed: %s", path, strerror(errno)); }
}

static float *calib_load(const conv *cv, const char *path) {
    const w8a8_config *c = &cv->c;
    blob b = map_file(path);
    calib_header h;
    if (b.n < sizeof h) die("'%s' is not a calibration file (too short)", path);
    memcpy(&h, b.p, sizeof h);
    if (memcmp(h.magic, CALIB_MAGIC, 8)) die("'%s' is not a calibration file (convert --calib-save writes them)", path);
    if (h.n_layers != c->n_layers || h.dim != c->dim || h.hidden_dim != c->hidden_dim || h.q_dim != c->n_heads * c->head_dim ||
        h.kv_dim != c->n_kv_heads * c->head_dim || h.n_floats != stats_size(c) || b.n != sizeof h + h.n_floats * sizeof(float))
        die("'%s' holds statistics of another model (%u layers, dim %u, hidden %u); this one has %u, %u, %u", path, h.n_layers, h.dim,
            h.hidden_dim, c->n_layers, c->dim, c->hidden_dim);
    float *st = xmalloc(h.n_floats * sizeof(float));
    memcpy(st, b.p + sizeof h, h.n_floats * sizeof(float));
    for (uint64_t i = 0; i < h.n_floats; i++)
        if (!(st[i] >= 0 && isfinite(st[i]))) die("'%s': statistic %llu is %g, not a finite maximum", path, (unsigned long long)i, st[i]);
    if (!g_quiet) fprintf(stderr, "calibration statistics from %s (%u tokens)\n", path, h.n_tokens);
    return st;
}

/* The first n_tokens tokens of a text file (fewer if it is shorter; *n says how many). */
static int *text_tokens(w8a8_model *m, const char *path, int n_tokens, int *n) {
    char *text = read_text(path, (size_t)n_tokens * 16 + 4096);
    w8a8_tokenize(m, text, 0, NULL, 0, n);   /* counts */
    int *ids = xmalloc(sizeof(int) * (*n + 1));
    if (w8a8_tokenize(m, text, 0, ids, *n + 1, n)) die("'%s': %s", path, w8a8_error());
    if (*n > n_tokens) *n = n_tokens;
    FREE(text);
    return ids;
}
/* A window of the text as the model reads it: BOS (if it has one), then up to `win` tokens from `at`. */
static int text_window(w8a8_model *m, const int *ids, int n_ids, int at, int win, int *buf) {
    int k = 0, bos = w8a8_config_of(m)->bos_id, take = n_ids - at < win ? n_ids - at : win;
    if (bos >= 0) buf[k++] = bos;
    memcpy(buf + k, ids + at, sizeof(int) * take);
    return k + take;
}
/* Writes the current plan to the temporary g_calib_model (quietly) and opens it; NULL (why in w8a8_error) if
 * it cannot be opened with these options. Windows of 512 tokens at most. */
static w8a8_model *write_and_open(conv *cv, const tok_build *tb, int require_gpu, int force_cpu) {
    int q = g_quiet;
    g_quiet = 1;   /* a temporary file: no progress bar of its own */
    write_model(cv, tb, g_calib_model, "temporary model");
    g_quiet = q;
    w8a8_options o = w8a8_default_options();
    o.require_gpu = require_gpu;
    o.force_cpu = force_cpu;
    o.max_context = cv->c.max_context < 512 ? (int)cv->c.max_context : 512;
    w8a8_model *m = NULL;
    return w8a8_open(&m, g_calib_model, &o) ? NULL : m;
}

/* Writes the model unquantized (bf16 for the GPU; f32 for the CPU reference), runs it over up to n_tokens
 * tokens of the text in windows that each start with BOS, and returns the statistics. */
static float *calibrate(conv *cv, const tok_build *tb, const char *out, const char *text_path, int n_tokens, int cpu_only) {
    int scheme = cv->scheme, act_static = cv->act_static, smooth = cv->smooth, kv_fp8 = cv->kv_fp8, direct = cv->direct_fp8;
    cv->act_static = cv->smooth = cv->kv_fp8 = cv->direct_fp8 = 0;   /* the model as it is */
    snprintf(g_calib_model, sizeof g_calib_model, "%s.calib.%d", out, (int)getpid());
    atexit(remove_calib_model);
    w8a8_model *m = NULL;
    char gpu_why[600] = "";
    if (!cpu_only) {
        cv->scheme = W8A8_BF16;
        if (!(m = write_and_open(cv, tb, 1, 0))) snprintf(gpu_why, sizeof gpu_why, "%s", w8a8_error());
    }
    if (!m) {
        cv->scheme = W8A8_F32;
        if (!(m = write_and_open(cv, tb, 0, 1))) die("calibration: %s", w8a8_error());
    }
    int n_ids, *ids = text_tokens(m, text_path, n_tokens, &n_ids);
    if (n_ids < 16) die("'%s' gives only %d tokens: too little text to calibrate on", text_path, n_ids);
    if (!g_quiet)
        fprintf(stderr, "calibrating on %d tokens of %s, %s%s%s%s\n", n_ids, text_path, w8a8_on_gpu(m) ? "on the GPU (bf16): " : "on the CPU reference (f32)",
                w8a8_on_gpu(m) ? w8a8_device_name(m) : "", !w8a8_on_gpu(m) && gpu_why[0] ? " -- not on the GPU: " : "",
                !w8a8_on_gpu(m) ? gpu_why : "");
    int win = w8a8_context_of(m) - (w8a8_config_of(m)->bos_id >= 0), seq, *buf = xmalloc(sizeof(int) * (win + 1));
    int n_win = (n_ids + win - 1) / win;
    if (w8a8_calibrate(m, 1) || w8a8_seq_start(m, &seq)) die("calibration: %s", w8a8_error());
    for (int wi = 0; wi < n_win; wi++) {
        int len = text_window(m, ids, n_ids, wi * win, win, buf);
        if (w8a8_seq_reset(m, seq) || w8a8_feed(m, seq, buf, len)) die("calibration: %s", w8a8_error());
        progress("calibrating", wi + 1, n_win);
    }
    size_t ns = w8a8_calib_size(m);
    if (ns != stats_size(&cv->c)) die("internal error: %zu calibration statistics, expected %zu", ns, stats_size(&cv->c));
    float *st = xmalloc(ns * sizeof(float));
    if (w8a8_calib_stats(m, st, ns)) die("calibration: %s", w8a8_error());
    w8a8_close(m);
    remove_calib_model();
    g_calib_model[0] = 0;
    FREE(ids); FREE(buf);
    cv->scheme = scheme; cv->act_static = act_static; cv->smooth = smooth; cv->kv_fp8 = kv_fp8; cv->direct_fp8 = direct;
    return st;
}

/* --alpha auto: SmoothQuant's best strength differs between models (the paper tunes it per model). Each
 * candidate is converted and scored on the calibration text (never the evaluation text); the lowest
 * perplexity wins. */
static float choose_alpha(conv *cv, const tok_build *tb, const char *out, const char *text_path, int n_tokens) {
    static const float cand[] = {0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    snprintf(g_calib_model, sizeof g_calib_model, "%s.alpha.%d", out, (int)getpid());
    atexit(remove_calib_model);
    int n_ids = 0, *ids = NULL, *buf = NULL;
    float best = 0.5f;
    double best_ppl = INFINITY;
    if (!g_quiet) fprintf(stderr, "choosing alpha on %s:", text_path);
    for (size_t i = 0; i < sizeof cand / sizeof *cand; i++) {
        cv->alpha = cand[i];
        w8a8_model *m = write_and_open(cv, tb, 0, 0);
        if (!m) die("--alpha auto: %s", w8a8_error());
        int seq, win = w8a8_context_of(m) - (w8a8_config_of(m)->bos_id >= 0);
        if (!ids) { ids = text_tokens(m, text_path, n_tokens, &n_ids); buf = xmalloc(sizeof(int) * (win + 1)); }   /* same tokenizer each time */
        if (w8a8_seq_start(m, &seq)) die("--alpha auto: %s", w8a8_error());
        double nll = 0, s;
        int scored = 0, k;
        for (int at = 0; at + 1 < n_ids; at += win) {
            int len = text_window(m, ids, n_ids, at, win, buf);
            if (len < 2) break;
            if (w8a8_score(m, seq, buf, len, &s, &k)) die("--alpha auto: %s", w8a8_error());
            nll += s; scored += k;
        }
        double ppl = exp(nll / (scored ? scored : 1));
        if (!g_quiet) fprintf(stderr, " %.1f: %.4f%s", cand[i], ppl, i + 1 < sizeof cand / sizeof *cand ? "," : "\n");
        if (ppl < best_ppl) { best_ppl = ppl; best = cand[i]; }
        w8a8_close(m);
    }
    remove_calib_model();
    g_calib_model[0] = 0;
    FREE(ids); FREE(buf);
    if (!g_quiet) fprintf(stderr, "alpha %.1f (perplexity %.4f on the calibration text)\n", best, best_ppl);
    return best;
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *tokpath = NULL, *scheme = "fp8", *act = NULL, *kv = "bf16";
    const char *calib_text = NULL, *calib_save_path = NULL, *calib_load_path = NULL, *alpha_s = NULL;
    int vocab_only = 0, synthetic = 0, smooth = -1, calib_tokens = 4096, calib_cpu = 0, rotate = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--scheme") && i + 1 < argc) scheme = argv[++i];
        else if (!strcmp(argv[i], "--act") && i + 1 < argc) act = argv[++i];
        else if (!strcmp(argv[i], "--kv") && i + 1 < argc) kv = argv[++i];
        else if (!strcmp(argv[i], "--smooth")) smooth = 1;
        else if (!strcmp(argv[i], "--no-smooth")) smooth = 0;
        else if (!strcmp(argv[i], "--alpha") && i + 1 < argc) alpha_s = argv[++i];
        else if (!strcmp(argv[i], "--calib") && i + 1 < argc) calib_text = argv[++i];
        else if (!strcmp(argv[i], "--calib-tokens") && i + 1 < argc) {
            char *e;
            long v = strtol(argv[++i], &e, 10);
            if (*e || v < 16 || v > 100000000) die("--calib-tokens: '%s' is not a count of at least 16", argv[i]);
            calib_tokens = (int)v;
        }
        else if (!strcmp(argv[i], "--calib-save") && i + 1 < argc) calib_save_path = argv[++i];
        else if (!strcmp(argv[i], "--calib-load") && i + 1 < argc) calib_load_path = argv[++i];
        else if (!strcmp(argv[i], "--calib-cpu")) calib_cpu = 1;
        else if (!strcmp(argv[i], "--rotate")) rotate = 1;
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tokpath = argv[++i];
        else if (!strcmp(argv[i], "--quiet")) g_quiet = 1;
        else if (!strcmp(argv[i], "--vocab-only")) vocab_only = 1;
        else if (!strcmp(argv[i], "--synthetic")) synthetic = 1;
        else if (!strcmp(argv[i], "--dump") && i + 3 < argc) { dump_gguf_tensor(argv[i + 1], argv[i + 2], argv[i + 3]); return 0; }
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) usage();
        else if (argv[i][0] == '-') { fprintf(stderr, "convert: unknown option '%s'\n", argv[i]); usage(); }
        else if (!in) in = argv[i];
        else { fprintf(stderr, "convert: more than one input ('%s')\n", argv[i]); usage(); }
    }
    if (!in || !out) usage();
    conv cv;
    memset(&cv, 0, sizeof cv);
    int named_static = 0;   /* fp8-static and int8-sq: static scales and smoothing unless told otherwise */
    if (!strcmp(scheme, "f32")) cv.scheme = W8A8_F32;
    else if (!strcmp(scheme, "bf16")) cv.scheme = W8A8_BF16;
    else if (!strcmp(scheme, "fp8")) cv.scheme = W8A8_FP8;
    else if (!strcmp(scheme, "int8")) cv.scheme = W8A8_INT8;
    else if (!strcmp(scheme, "fp8-static")) { cv.scheme = W8A8_FP8; named_static = 1; }
    else if (!strcmp(scheme, "int8-sq")) { cv.scheme = W8A8_INT8; named_static = 1; }
    else die("unknown scheme '%s' (f32, bf16, fp8, int8, fp8-static, int8-sq)", scheme);
    int quantized = cv.scheme == W8A8_FP8 || cv.scheme == W8A8_INT8;
    if (act && strcmp(act, "static") && strcmp(act, "dynamic")) die("--act: '%s' is not static or dynamic", act);
    cv.act_static = act ? !strcmp(act, "static") : named_static;
    if (cv.act_static && !quantized) die("--act static needs a quantized scheme (fp8, int8, fp8-static, int8-sq); %s has no activation scales", scheme);
    cv.smooth = smooth >= 0 ? smooth : named_static;
    cv.alpha = 0.5f;
    int alpha_auto = alpha_s && !strcmp(alpha_s, "auto");
    if (alpha_s && !alpha_auto) {
        char *e;
        double a = strtod(alpha_s, &e);
        if (*e || !(a >= 0 && a <= 1)) die("--alpha: '%s' is not a number in 0..1 (or auto)", alpha_s);
        cv.alpha = (float)a;
    }
    if (alpha_s && !cv.smooth) die("--alpha sets SmoothQuant's strength: add --smooth (or use fp8-static / int8-sq)");
    if (alpha_auto && !quantized) die("--alpha auto scores the quantized model: it needs fp8 or int8");
    if (alpha_auto && !calib_text) die("--alpha auto scores each strength on the calibration text: add --calib TEXT");
    if (strcmp(kv, "bf16") && strcmp(kv, "fp8")) die("--kv: '%s' is not bf16 or fp8", kv);
    cv.kv_fp8 = !strcmp(kv, "fp8");
    if (calib_text && calib_load_path) die("--calib and --calib-load both give statistics: choose one");
    if (calib_save_path && !calib_text) die("--calib-save saves what --calib computes: add --calib FILE");
    if (calib_text && !file_exists(calib_text)) die("cannot read the calibration text '%s': %s", calib_text, strerror(errno));

    struct stat st;
    if (stat(in, &st)) die("cannot read '%s': %s", in, strerror(errno));
    tok_build tb;
    memset(&tb, 0, sizeof tb);
    tb.bos = tb.eos = tb.eot = -1;
    char p[4200];
    size_t inlen = strlen(in);
    if (synthetic) {   /* real shapes from a config.json, deterministic random weights: for benchmarks */
        if (!tokpath) die("--synthetic needs a tokenizer: --tokenizer tokenizer.bin or tokenizer.json");
        parse_hf_config(&cv, in);
        g_pad_vocab = 1;
        size_t tl = strlen(tokpath);
        if (tl > 5 && !strcmp(tokpath + tl - 5, ".json")) load_hf_tokenizer(&tb, tokpath, cv.c.vocab_size);
        else load_l2c_tokenizer(&tb, tokpath, cv.c.vocab_size);
        if (cv.c.bos_id < 0 || cv.c.bos_id >= (int32_t)cv.c.vocab_size) cv.c.bos_id = tb.bos;
        if (cv.c.eos_id < 0 || cv.c.eos_id >= (int32_t)cv.c.vocab_size) cv.c.eos_id = tb.eos;
        cv.src.kind = SRC_SYNTH;
    } else if (vocab_only) config_vocab_only(&cv, &tb, in);
    else if (!S_ISDIR(st.st_mode) && inlen > 5 && !strcmp(in + inlen - 5, ".gguf")) {
        if (tokpath) die("a GGUF file carries its own tokenizer: drop --tokenizer");
        config_from_gguf(&cv, &tb, in);
    } else if (S_ISDIR(st.st_mode)) {
        config_from_hf(&cv, in);
        snprintf(p, sizeof p, "%s/tokenizer.json", in);
        if (tokpath) load_l2c_tokenizer(&tb, tokpath, cv.c.vocab_size);
        else if (file_exists(p)) load_hf_tokenizer(&tb, p, cv.c.vocab_size);
        else die("'%s' has no tokenizer.json; give a llama2.c tokenizer with --tokenizer", in);
        snprintf(p, sizeof p, "%s/tokenizer_config.json", in);
        if (!tokpath && file_exists(p)) load_tokenizer_config(&tb, p);
        if (tb.bos >= 0 && !tokpath) cv.c.bos_id = tb.bos;
        if (tb.eos >= 0 && !tokpath) cv.c.eos_id = tb.eos;
        if (tb.kind == W8A8_TOK_BPE && cv.c.bos_id >= 0) tb.flags |= W8A8_TOKF_ADD_BOS;
    } else {
        if (!tokpath) die("a llama2.c checkpoint needs its tokenizer: --tokenizer tokenizer.bin");
        config_from_l2c(&cv, in);
        load_l2c_tokenizer(&tb, tokpath, cv.c.vocab_size);
        cv.c.bos_id = 1; cv.c.eos_id = 2;
    }
    /* end-of-turn: the chat families' markers */
    const char *eots[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>"};
    for (int i = 0; i < 4 && cv.c.eot_id < 0; i++) cv.c.eot_id = find_token(&tb, eots[i]);
    cv.c.scheme = cv.scheme;
    cv.src.c = cv.c;

    /* a pre-quantized FP8 checkpoint: copied as it is into fp8, read as code * scale for anything else */
    const st_tensor *q0 = cv.src.kind == SRC_ST ? st_find(&cv.src, "model.layers.0.self_attn.q_proj.weight") : NULL;
    int fp8_source = q0 && q0->dtype == ST_F8;
    int have_stats = calib_text || calib_load_path;
    if (rotate) {   /* a random Hadamard rotation of the residual stream, folded into the weights */
        uint32_t D = cv.c.dim;
        if (D & (D - 1)) die("--rotate uses a Hadamard rotation: dim %u is not a power of two", D);
        if (cv.smooth) die("--rotate and SmoothQuant do not combine here: choose one (--no-smooth with fp8-static / int8-sq)");
        if (calib_load_path) die("--rotate changes every linear input: calibrate the rotated model with --calib, not --calib-load");
        cv.rotate = 1;
        cv.rot_signs = xmalloc(sizeof(float) * D);
        uint64_t z = 0x243f6a8885a308d3ull;
        for (uint32_t j = 0; j < D; j++) { z = z * 6364136223846793005ull + 1442695040888963407ull; cv.rot_signs[j] = (z >> 63) ? -1.0f : 1.0f; }
    }
    if (fp8_source && cv.scheme == W8A8_FP8 && !cv.smooth && !cv.rotate) {
        cv.direct_fp8 = 1;
        /* the checkpoint's static input scales are used when it has them, unless told otherwise */
        if (!act && !have_stats) {
            char nm[200];
            snprintf(nm, sizeof nm, "model.layers.0.self_attn.q_proj.input_scale");
            cv.act_static = st_find(&cv.src, nm) != NULL;
        }
        if (!g_quiet)
            fprintf(stderr, "pre-quantized FP8 checkpoint: codes and scales copied as they are (%s activation scales)\n",
                    cv.act_static ? have_stats ? "static, calibrated" : "static, the checkpoint's" : "dynamic");
    } else if (fp8_source && !g_quiet)
        fprintf(stderr, "pre-quantized FP8 checkpoint: weights read as code * scale (requantized for %s%s)\n", scheme, cv.smooth ? ", smoothed" : "");
    const char *needs = cv.smooth ? "smoothing (--smooth, fp8-static, int8-sq)" : cv.kv_fp8 ? "--kv fp8" : cv.act_static && !cv.direct_fp8 ? "static activation scales" : NULL;
    if (needs && !have_stats) die("%s needs calibration statistics: add --calib TEXT (or --calib-load FILE)", needs);
    if (have_stats && !needs && !(cv.direct_fp8 && cv.act_static) && !calib_save_path)
        die("--calib is not needed for %s with dynamic scales and no smoothing (it would be ignored)", scheme);
    float *stats = NULL;
    if (calib_load_path) stats = calib_load(&cv, calib_load_path);
    else if (calib_text) {
        stats = calibrate(&cv, &tb, out, calib_text, calib_tokens, calib_cpu);
        if (calib_save_path) calib_save(&cv, stats, calib_tokens, calib_save_path);
    }
    cv.stats = stats;
    if (alpha_auto) cv.alpha = choose_alpha(&cv, &tb, out, calib_text, calib_tokens < 4096 ? calib_tokens : 4096);
    uint64_t file_bytes = write_model(&cv, &tb, out, "converting");
    if (!g_quiet) {
        fprintf(stderr, "wrote %s: %s (%s activation scales%s%s%s), %u layers, dim %u, vocab %u, %.1f MiB\n", out, scheme,
                cv.act_static ? "static" : "dynamic", cv.smooth ? ", SmoothQuant" : "", cv.rotate ? ", rotated" : "", cv.kv_fp8 ? ", fp8 KV cache" : "",
                cv.c.n_layers, cv.c.dim, cv.c.vocab_size, file_bytes / 1048576.0);
        fprintf(stderr, "quantization error (relative RMS, ||w - dequant(q(w))|| / ||w||):\n");
        for (int k = 0; k < K_N; k++)
            if (cv.err[k].ref2 > 0) fprintf(stderr, "  %-11s %.3e\n", kind_names[k], sqrt(cv.err[k].err2 / cv.err[k].ref2));
    }
    return 0;
}
