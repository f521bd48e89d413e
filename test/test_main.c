/* The w8a8 test suite: `make test` (from the repository root, with ../shared beside it or W8A8_SHARED set).
 * Prints one line per check and closes with "N passed, N failed, N skipped". GPU checks skip, saying why,
 * where there is no GPU. */
#define _GNU_SOURCE
#include "../w8a8.c"   /* the whole engine, so the GPU tests can reach each kernel and its CPU twin */
#include "../tools/json.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int n_pass, n_fail, n_skip;
static char SH[1024];       /* the shared folder */
static const char *OUT = "test/out";

static void result(int ok, const char *name, const char *fmt, ...) {
    char msg[2048] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, msg[0] ? ": " : "", msg);
    fflush(stdout);
    if (ok) n_pass++; else n_fail++;
}
static void skip(const char *name, const char *why) {
    printf("SKIP %s: %s\n", name, why);
    fflush(stdout);
    n_skip++;
}
static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }
static char *path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 1024, fmt, ap);
    va_end(ap);
    return b;
}
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}
#define slurp read_whole   /* w8a8.c's */
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

/* A converted model in test/out (made once per run). `variant` is a scheme, or one of the calibrated
 * variants below (calibrated once per model on 1024 tokens of tinystories-holdout.txt, on the CPU). */
static const char *model(const char *name, const char *variant);
static const char *calib_file(const char *name) {
    char *out = path("%s/%s.calib", OUT, name);
    if (exists(out)) return out;
    int rc;
    if (!strcmp(name, "stories260K"))
        rc = sh("./convert %s/models/stories260K/stories260K.bin --tokenizer %s/models/stories260K/tok512.bin -o %s/calib-out.w8a8 --scheme f32 "
                "--calib %s/corpus/tinystories-holdout.txt --calib-tokens 1024 --calib-cpu --calib-save %s --quiet", SH, SH, OUT, SH, out);
    else
        rc = sh("./convert %s/models/%s -o %s/calib-out.w8a8 --scheme f32 --calib %s/corpus/tinystories-holdout.txt --calib-tokens 1024 "
                "--calib-cpu --calib-save %s --quiet", SH, name, OUT, SH, out);
    return rc == 0 ? out : NULL;
}
static const struct { const char *variant, *flags; } variants[] = {
    {"fp8-static", "--scheme fp8-static"}, {"fp8-static-nosmooth", "--scheme fp8-static --no-smooth"},
    {"fp8-smooth", "--scheme fp8 --smooth"}, {"int8-sq", "--scheme int8-sq"}, {"int8-sq-dynamic", "--scheme int8-sq --act dynamic"},
    {"int8-static-nosmooth", "--scheme int8-sq --no-smooth"}, {"f32-smooth", "--scheme f32 --smooth"},
    {"fp8-kvfp8", "--scheme fp8 --kv fp8"}, {"bf16-kvfp8", "--scheme bf16 --kv fp8"}, {"f32-kvfp8", "--scheme f32 --kv fp8"},
    {"int8-sq-kvfp8", "--scheme int8-sq --kv fp8"}, {"f32-rotate", "--scheme f32 --rotate"}, {"int8-rotate", "--scheme int8 --rotate"},
};
static const char *model(const char *name, const char *variant) {
    char *out = path("%s/%s.%s.w8a8", OUT, name, variant);
    if (exists(out)) return out;
    char flags[512];
    snprintf(flags, sizeof flags, "--scheme %s", variant);
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++)
        if (!strcmp(variant, variants[i].variant)) {
            const char *cal = strstr(variants[i].flags, "--rotate") ? "" : calib_file(name);   /* rotation needs no statistics */
            if (!cal) return NULL;
            snprintf(flags, sizeof flags, "%s%s%s", variants[i].flags, cal[0] ? " --calib-load " : "", cal);
        }
    int rc;
    if (!strcmp(name, "stories260K"))
        rc = sh("./convert %s/models/stories260K/stories260K.bin --tokenizer %s/models/stories260K/tok512.bin -o %s %s --quiet", SH, SH, out, flags);
    else if (!strcmp(name, "stories260K-hf"))
        rc = sh("./convert %s/models/stories260K-hf --tokenizer %s/models/stories260K/tok512.bin -o %s %s --quiet", SH, SH, out, flags);
    else
        rc = sh("./convert %s/models/%s -o %s %s --quiet", SH, name, out, flags);
    return rc == 0 ? out : NULL;
}

static w8a8_model *open_cpu(const char *p, int batch) {
    w8a8_options o = w8a8_default_options();
    o.force_cpu = 1;
    o.max_batch = batch;
    w8a8_model *m = NULL;
    if (!p || w8a8_open(&m, p, &o)) return NULL;
    return m;
}

/* =========================================================================================================
 * Number formats against independent definitions
 * ======================================================================================================= */
/* E4M3 by its definition: bias 7, subnormals at e = 0, S.1111.111 NaN. */
static double e4m3_value(int code) {
    int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? m / 8.0 * pow(2, -6) : (1 + m / 8.0) * pow(2, e - 7);
    return s ? -v : v;
}
/* Encode by search: the nearest finite code, ties to the even code (the last mantissa bit 0), values past
 * 448 (and infinities) saturate to 448, NaN is 0x7f. */
static int e4m3_encode_ref(double x) {
    if (isnan(x)) return 0x7f;
    int s = signbit(x) ? 0x80 : 0;
    double a = fabs(x);
    int best = 0;
    for (int c = 1; c < 0x7f; c++) {
        double d = fabs(e4m3_value(c) - a), db = fabs(e4m3_value(best) - a);
        if (d < db || (d == db && (c & 1) == 0)) best = c;
    }
    return s | best;
}

static void test_fp8(void) {
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        double ref = e4m3_value(c);
        float v = w8a8_fp8_to_float((uint8_t)c);
        if (isnan(ref) ? !isnan(v) : v != ref) { if (bad++ < 5) printf("  decode 0x%02x: %g, expected %g\n", c, v, ref); }
    }
    result(!bad, "fp8 decode: all 256 codes", "%d wrong", bad);

    /* every code, every midpoint between neighbours (ties), nudged neighbours of both, saturation, tiny */
    double xs[4096];
    int n = 0;
    for (int c = 0; c < 0x7f; c++) {
        double v = e4m3_value(c), nx = c + 1 < 0x7f ? e4m3_value(c + 1) : 480.0, mid = (v + nx) / 2;
        xs[n++] = v; xs[n++] = -v; xs[n++] = mid; xs[n++] = -mid;
        xs[n++] = nextafterf((float)mid, 0); xs[n++] = nextafterf((float)mid, 1e9f);
    }
    double extra[] = {448, 449, 463.99, 464, 465, 479, 480, 1000, 1e30, INFINITY, -INFINITY, -0.0, 0.0, 1e-30,
                      pow(2, -10), pow(2, -10) * 1.0001, 3 * pow(2, -10), pow(2, -9) * 0.75, 0.015625 * 0.9999};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) { xs[n++] = extra[i]; xs[n++] = -extra[i]; }
    srand(1);
    for (int i = 0; i < 1000; i++) xs[n++] = ((double)rand() / RAND_MAX - 0.5) * pow(2, rand() % 24 - 12);
    bad = 0;
    for (int i = 0; i < n; i++) {
        float x = (float)xs[i];
        int got = w8a8_fp8_from_float(x), want = e4m3_encode_ref(x);
        if (got != want && bad++ < 5) printf("  encode %.9g: 0x%02x, expected 0x%02x\n", x, got, want);
    }
    int nan_ok = w8a8_fp8_from_float(NAN) == 0x7f;
    result(!bad && nan_ok, "fp8 encode: codes, ties to even, saturation to 448, subnormals, NaN", "%d of %d wrong%s", bad, n, nan_ok ? "" : ", NaN wrong");

    struct { float x; int q; } iv[] = {{0.5f, 0}, {1.5f, 2}, {2.5f, 2}, {-0.5f, 0}, {-1.5f, -2}, {-2.5f, -2}, {126.5f, 126},
                                       {127.49f, 127}, {127.5f, 127}, {300, 127}, {-300, -127}, {-127.5f, -127}, {0.49999997f, 0}};
    bad = 0;
    for (size_t i = 0; i < sizeof iv / sizeof *iv; i++)
        if (w8a8_int8_from_float(iv[i].x) != iv[i].q && bad++ < 5) printf("  int8 %g: %d, expected %d\n", iv[i].x, w8a8_int8_from_float(iv[i].x), iv[i].q);
    bad += w8a8_int8_from_float(NAN) != 0;
    result(!bad, "int8: round half to even, clamp to +-127", "%d wrong", bad);

    struct { uint32_t in; uint16_t out; } bv[] = {{0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, {0x3f818000, 0x3f82},
                                                  {0x3f808001, 0x3f81}, {0x7f7fffff, 0x7f80}, {0x80000000, 0x8000}};
    bad = 0;
    for (size_t i = 0; i < sizeof bv / sizeof *bv; i++) {
        float f;
        memcpy(&f, &bv[i].in, 4);
        bad += w8a8_bf16_from_float(f) != bv[i].out;
    }
    result(!bad, "bf16: round to nearest even", "%d wrong", bad);

    /* the engine's own exp (CPU and GPU compute it with the same operations) */
    double worst = 0;
    for (double x = -87; x <= 88; x += 0.00137) {
        double r = fabs(exp_w8a8((float)x) / exp((double)(float)x) - 1);
        if (r > worst) worst = r;
    }
    result(worst < 3 * 1.2e-7 && exp_w8a8(0) == 1.0f && exp_w8a8(-100) == 0 && isinf(exp_w8a8(100)),
           "exp_w8a8: within 3 ulp of exp on [-87, 88], exp(0) = 1 exactly", "worst relative error %.2e", worst);
}

/* =========================================================================================================
 * End to end on the real checkpoints
 * ======================================================================================================= */
static char *generate_text(w8a8_model *m, const char *prompt, int steps) {
    int ids[1024], n, seq, tok;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(cap, 1);
    w8a8_decoder dec = {0};
    if (w8a8_tokenize(m, prompt, 1, ids, 1024, &n) || w8a8_seq_start(m, &seq) || w8a8_feed(m, seq, ids, n)) return out;
    w8a8_sampler s = {0, 0, 0};
    for (int i = 0; i < steps; i++) {
        if (w8a8_sample(m, seq, &s, &tok)) break;
        if (tok == w8a8_config_of(m)->bos_id || tok == w8a8_config_of(m)->eos_id) break;
        char b[4096];
        int bl;
        if (w8a8_decode(m, &dec, tok, b, sizeof b, &bl)) break;
        if (len + bl + 1 < cap) { memcpy(out + len, b, bl); len += bl; }
        if (w8a8_feed(m, seq, &tok, 1)) break;
    }
    w8a8_seq_end(m, seq);
    return out;
}

static void test_golden(void) {
    const char *p = model("stories260K", "f32");
    w8a8_model *m = open_cpu(p, 1);
    if (!m) { result(0, "golden: stories260K f32 greedy 200", "convert/open failed: %s", w8a8_error()); return; }
    char *text = generate_text(m, "", 200);
    char *gold = slurp(path("%s/golden/stories260K-greedy200.txt", SH), NULL);
    result(gold && !strcmp(text, gold), "golden: stories260K f32, greedy 200 tokens == llama2.c byte for byte", "%s",
           gold && strcmp(text, gold) ? text : "");
    free(text); free(gold);
    w8a8_close(m);
    /* the CLI too */
    int rc = sh("./run %s -t 0 -n 200 --cpu 2>/dev/null | head -c -1 | cmp -s - %s/golden/stories260K-greedy200.txt", p, SH);
    result(rc == 0, "golden: ./run on the converted stories260K reproduces llama2.c's output", "");
}

static int all_logits(w8a8_model *m, const int *ids, int n, float *out) {
    int seq, V = (int)w8a8_config_of(m)->vocab_size;
    if (w8a8_seq_start(m, &seq)) return -1;
    for (int i = 0; i < n; i++) {
        const float *lg;
        if (w8a8_feed(m, seq, &ids[i], 1) || w8a8_logits(m, seq, &lg)) return -1;
        memcpy(out + (size_t)i * V, lg, sizeof(float) * V);
    }
    return w8a8_seq_end(m, seq);
}

static void test_hf_equals_l2c(void) {
    const char *schemes[] = {"f32", "fp8", "int8"};
    for (int s = 0; s < 3; s++) {
        w8a8_model *a = open_cpu(model("stories260K", schemes[s]), 1), *b = open_cpu(model("stories260K-hf", schemes[s]), 1);
        if (!a || !b) { result(0, "stories260K-hf == stories260K.bin", "%s: convert/open failed: %s", schemes[s], w8a8_error()); continue; }
        int ids[32], n;
        w8a8_tokenize(a, "Once upon a time, there was a little dog named Spot who", 1, ids, 32, &n);
        float *la = malloc(sizeof(float) * 512 * n), *lb = malloc(sizeof(float) * 512 * n);
        int ok = !all_logits(a, ids, n, la) && !all_logits(b, ids, n, lb) && !memcmp(la, lb, sizeof(float) * 512 * n);
        result(ok, path("stories260K-hf == stories260K.bin (%s)", schemes[s]), "logits at all %d positions %s", n, ok ? "bit-identical" : "differ");
        free(la); free(lb);
        w8a8_close(a); w8a8_close(b);
    }
}

/* HF's own math in NumPy (test/hf_reference.py), where numpy/safetensors are installed. */
static void test_hf_reference(void) {
    if (sh("python3 -c 'import numpy, safetensors' 2>/dev/null")) {
        skip("HF reference (NumPy)", "python3 with numpy and safetensors not installed (pip install numpy safetensors tokenizers)");
        return;
    }
    struct { const char *name, *dir, *prompt; } cases[] = {
        {"tinystories-656k", "tinystories-656k", "Once upon a time, there was a little girl named Lily. She"},
        {"stories260K-hf", "stories260K-hf", NULL},
    };
    for (int c = 0; c < 2; c++) {
        w8a8_model *m = open_cpu(model(cases[c].name, "f32"), 1);
        if (!m) { result(0, "HF reference", "open failed: %s", w8a8_error()); continue; }
        int ids[64], n;
        char arg[1024];
        if (cases[c].prompt) {
            w8a8_tokenize(m, cases[c].prompt, 0, ids, 64, &n);
            snprintf(arg, sizeof arg, "'%s' --bos", cases[c].prompt);
        } else {
            w8a8_tokenize(m, "Lily liked to play with her ball", 0, ids, 64, &n);
            arg[0] = '\'';
            int k = 1;
            for (int i = 0; i < n; i++) k += snprintf(arg + k, sizeof arg - k, "%d ", ids[i]);
            snprintf(arg + k, sizeof arg - k, "' --bos");
        }
        char *cmd = path("python3 test/hf_reference.py %s/models/%s %s > %s/hfref.json", SH, cases[c].dir, arg, OUT);
        size_t len;
        jv root;
        char err[200];
        char *js = sh("%s", cmd) == 0 ? slurp(path("%s/hfref.json", OUT), &len) : NULL;
        if (!js || json_parse(js, len, &root, err, sizeof err)) { result(0, path("HF reference: %s", cases[c].name), "reference failed"); free(js); w8a8_close(m); continue; }
        const jv *rid = jget(&root, "ids"), *rl = jget(&root, "logits");
        int V = (int)w8a8_config_of(m)->vocab_size, T = rid->n, same_ids = 1;
        int full[80];
        full[0] = w8a8_config_of(m)->bos_id;
        memcpy(full + 1, ids, sizeof(int) * n);
        if (T != n + 1) same_ids = 0;
        for (int i = 0; same_ids && i < T; i++) same_ids &= (int)rid->items[i].num == full[i];
        float *lg = malloc(sizeof(float) * V * (n + 1));
        double maxd = 0, maxa = 0;
        if (same_ids && !all_logits(m, full, T, lg))
            for (int t = 0; t < T; t++)
                for (int v = 0; v < V; v++) {
                    double r = rl->items[t].items[v].num;
                    maxd = fmax(maxd, fabs(r - lg[(size_t)t * V + v]));
                    maxa = fmax(maxa, fabs(r));
                }
        result(same_ids && maxd <= 1e-4 * maxa, path("HF reference: %s f32 logits == NumPy forward of the HF checkpoint", cases[c].name),
               "%s, %d positions, max |diff| %.2e (bound 1e-4 x max |logit| %.1f)", same_ids ? "token ids agree with HF tokenizers" : "token ids differ", T, maxd, maxa);
        free(lg); free(js);
        jv_free(&root);
        w8a8_close(m);
    }
}

static void test_656k_coherent(void) {
    w8a8_model *m = open_cpu(model("tinystories-656k", "f32"), 1);
    if (!m) { result(0, "tinystories-656k", "convert/open failed: %s", w8a8_error()); return; }
    char *t = generate_text(m, "", 120);
    int words = 0, alpha = 0;
    char *dup = strdup(t);
    for (char *w = strtok(dup, " \n"); w; w = strtok(NULL, " \n")) {
        words++;
        int ok = 1;
        for (char *c = w; *c; c++) ok &= (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || strchr(".,!?'\"-:;", *c) != NULL;
        alpha += ok;
    }
    result(!strncmp(t, "Once upon a time", 16) && words > 60 && alpha >= words * 95 / 100,
           "tinystories-656k: converts from HF (tokenizer.json) and writes coherent text greedily from BOS", "%d words, %d plain; \"%.100s...\"", words, alpha, t);
    free(t);
    free(dup);
    w8a8_close(m);
}

/* =========================================================================================================
 * Tokenizers: the shared vectors and llama.cpp's own tests
 * ======================================================================================================= */
static void test_tokenizers(void) {
    struct { const char *name, *src, *lcpp; } tk[] = {
        {"llama2", "tokenizers/llama2/tokenizer.bin", "llama-spm"},
        {"llama3", "tokenizers/llama3/tokenizer.json", "llama-bpe"},
        {"qwen3", "tokenizers/qwen3/tokenizer.json", "qwen2"},
    };
    for (int k = 0; k < 3; k++) {
        char *p = path("%s/tok-%s.w8a8", OUT, tk[k].name);
        if (!exists(p) && sh("./convert --vocab-only %s/%s -o %s --quiet", SH, tk[k].src, p)) { result(0, tk[k].name, "convert failed"); continue; }
        w8a8_model *m = open_cpu(p, 1);
        if (!m) { result(0, tk[k].name, "open failed: %s", w8a8_error()); continue; }
        size_t len;
        char *data = slurp(path("%s/tokenizers/vectors/%s.jsonl", SH, tk[k].name), &len);
        int lines = 0, bad = 0, rt_bad = 0, *ids = malloc(sizeof(int) * 65536), n;
        for (char *line = data, *nl; data && line < data + len; line = nl + 1) {
            nl = strchr(line, '\n');
            if (!nl) nl = data + len;
            if (nl == line) continue;
            jv v;
            char err[200];
            if (json_parse(line, nl - line, &v, err, sizeof err)) { bad++; continue; }
            lines++;
            const jv *text = jget(&v, "text"), *want = jget(&v, "ids");
            int ok = !w8a8_tokenize(m, text->str, 0, ids, 65536, &n) && n == want->n;
            for (int i = 0; ok && i < n; i++) ok = ids[i] == (int)want->items[i].num;
            if (!ok && bad++ < 3) printf("  %s: mismatch on \"%s\"\n", tk[k].name, text->str);
            /* streaming decode returns the text (the SentencePiece kind drops its dummy-prefix space) */
            w8a8_decoder d = {0};
            char *dec = malloc(text->n * 4 + 64);
            int dl = 0, l, valid = 1;
            for (int i = 0; i < n; i++) {
                char b[16384];
                if (w8a8_decode(m, &d, ids[i], b, sizeof b, &l)) break;
                for (int j = 0; j < l; j++) if ((unsigned char)b[j] >= 0x80 && j == 0 && (b[j] & 0xc0) == 0x80) valid = 0;
                memcpy(dec + dl, b, l);
                dl += l;
            }
            const char *expect = text->str;   /* SentencePiece's dummy-prefix space is added, then taken off */
            if (!valid || dl != (int)strlen(expect) || memcmp(dec, expect, dl)) { if (rt_bad++ < 3) printf("  %s: decode of \"%s\" gave \"%.*s\"\n", tk[k].name, text->str, dl, dec); }
            free(dec);
            jv_free(&v);
        }
        result(lines > 0 && !bad, path("tokenizer %s: vectors/%s.jsonl", tk[k].name, tk[k].name), "%d lines, %d wrong", lines, bad);
        result(lines > 0 && !rt_bad, path("tokenizer %s: streaming decode returns each text, whole characters only", tk[k].name), "%d wrong", rt_bad);
        free(data);
        /* llama.cpp's tokenizer tests */
        char *inp = slurp(path("%s/tokenizers/llamacpp-tests/ggml-vocab-%s.gguf.inp", SH, tk[k].lcpp), NULL);
        char *outp = slurp(path("%s/tokenizers/llamacpp-tests/ggml-vocab-%s.gguf.out", SH, tk[k].lcpp), NULL);
        int cases = 0;
        bad = 0;
        const char *sep = "\n__ggml_vocab_test__\n";
        for (char *a = inp, *o = outp; a && o && *a;) {
            char *e = strstr(a, sep), *oe = strchr(o, '\n');
            if (!e || !oe) break;
            *e = 0; *oe = 0;
            int want[4096], nw = 0;
            for (char *t = strtok(o, " "); t; t = strtok(NULL, " ")) want[nw++] = atoi(t);
            int ok = !w8a8_tokenize(m, a, 0, ids, 65536, &n) && n == nw;
            for (int i = 0; ok && i < n; i++) ok = ids[i] == want[i];
            if (!ok && bad++ < 3) printf("  llama.cpp %s: mismatch on \"%s\"\n", tk[k].lcpp, a);
            cases++;
            a = e + strlen(sep);
            o = oe + 1;
        }
        result(cases > 40 && !bad, path("tokenizer %s: llama.cpp's ggml-vocab-%s tests", tk[k].name, tk[k].lcpp), "%d cases, %d wrong", cases, bad);
        free(inp); free(outp); free(ids);
        w8a8_close(m);
    }
    /* a character split over byte tokens comes out once, whole */
    w8a8_model *m = open_cpu(path("%s/tok-llama2.w8a8", OUT), 1);
    if (m) {
        int ids[64], n, l, chunks = 0, ok = 1;
        w8a8_tokenize(m, "a\xf0\x9f\x99\x82", 0, ids, 64, &n);   /* "a🙂": the emoji is four byte tokens */
        w8a8_decoder d = {0};
        char all[64] = "";
        for (int i = 0; i < n; i++) {
            char b[64];
            w8a8_decode(m, &d, ids[i], b, sizeof b, &l);
            if (l) { chunks++; strncat(all, b, l); }
        }
        ok = n == 5 && chunks == 2 && !strcmp(all, "a\xf0\x9f\x99\x82");   /* "▁a", then 4 byte tokens */
        result(ok, "streaming decode: a 4-byte character over 4 byte tokens is printed once, whole", "%d tokens, %d chunks", n, chunks);
        w8a8_close(m);
    }
}

/* =========================================================================================================
 * The quantized forward against a deliberately naive double-precision fake-quant, written here from the
 * definitions, reading the model file with its own code.
 * ======================================================================================================= */
typedef struct { const unsigned char *base; const w8a8_header *h; const w8a8_tensor_entry *t; } nfile;

static const w8a8_tensor_entry *nfind(const nfile *f, const char *name) {
    for (uint32_t i = 0; i < f->h->n_tensors; i++) if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}
/* A weight as doubles, dequantized with its per-row scale. */
static double *nweight(const nfile *f, const char *name, int *rows, int *cols) {
    const w8a8_tensor_entry *e = nfind(f, name);
    char sn[80];
    snprintf(sn, sizeof sn, "%s.scale", name);
    const w8a8_tensor_entry *se = nfind(f, sn);
    int R = (int)e->shape[0], C = e->ndim == 2 ? (int)e->shape[1] : 1;
    double *w = malloc(sizeof(double) * R * C);
    const unsigned char *p = f->base + e->offset;
    for (int r = 0; r < R; r++) {
        double s = se ? ((const float *)(f->base + se->offset))[r] : 1.0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double v;
            switch (e->dtype) {
            case W8A8_DT_F32: v = ((const float *)p)[i]; break;
            case W8A8_DT_BF16: { uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16; float fl; memcpy(&fl, &u, 4); v = fl; break; }
            case W8A8_DT_E4M3: v = e4m3_value(p[i]); break;
            default: v = ((const int8_t *)p)[i]; break;
            }
            w[i] = v * s;
        }
    }
    *rows = R; *cols = C;
    return w;
}
static double bf16_round_d(double x) { return (double)w8a8_bf16_to_float(w8a8_bf16_from_float((float)x)); }

/* fake-quant: x -> dequant(quant(x)) with the scheme's per-row scale */
static void fakequant(int scheme, double *x, int n) {
    if (scheme == W8A8_BF16) { for (int i = 0; i < n; i++) x[i] = bf16_round_d(x[i]); return; }
    if (scheme == W8A8_F32) return;
    double amax = 0, qmax = scheme == W8A8_FP8 ? 448 : 127;
    for (int i = 0; i < n; i++) amax = fmax(amax, fabs(x[i]));
    double s = amax > 0 ? (float)(amax / qmax) : 1;
    for (int i = 0; i < n; i++) {
        double q = scheme == W8A8_FP8 ? e4m3_value(e4m3_encode_ref(x[i] / s)) : fmax(-127, fmin(127, nearbyint(x[i] / s)));
        x[i] = q * s;
    }
}
static void nmatvec(const double *w, int R, int C, const double *x, double *y) {
    for (int r = 0; r < R; r++) { double a = 0; for (int c = 0; c < C; c++) a += w[(size_t)r * C + c] * x[c]; y[r] = a; }
}
static void nrms(double *o, const double *x, const double *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double k = 1 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) o[i] = w[i] * x[i] * k;
}

/* logits of the last of n tokens */
static double *naive_forward(const char *file, const int *tok, int n) {
    size_t len;
    char *buf = slurp(file, &len);
    nfile f = {(const unsigned char *)buf, (const w8a8_header *)buf, NULL};
    f.t = (const w8a8_tensor_entry *)(buf + f.h->table_offset);
    const w8a8_config *c = &f.h->config;
    int sch = c->scheme, D = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, H = c->hidden_dim, V = c->vocab_size;
    int qd = nh * hd, kvd = nkv * hd, R, C;
    double *emb = nweight(&f, "tok_embd", &R, &C), *kc = calloc((size_t)c->n_layers * n * kvd, 8), *vc = calloc((size_t)c->n_layers * n * kvd, 8);
    double *x = malloc(8 * D), *xb = malloc(8 * (D > qd ? D : qd) * 4), *qkv = malloc(8 * (qd + 2 * kvd)), *o = malloc(8 * D * 4),
           *hb = malloc(8 * H * 2), *att = malloc(8 * n), *logits = malloc(8 * V);
    char nm[64];
    for (int p = 0; p < n; p++) {
        memcpy(x, emb + (size_t)tok[p] * D, 8 * D);
        for (uint32_t l = 0; l < c->n_layers; l++) {
            double *an, *fn, *wqkv, *wo, *w13, *w2;
            snprintf(nm, 64, "blk.%u.attn_norm", l); an = nweight(&f, nm, &R, &C);
            snprintf(nm, 64, "blk.%u.ffn_norm", l); fn = nweight(&f, nm, &R, &C);
            snprintf(nm, 64, "blk.%u.wqkv", l); wqkv = nweight(&f, nm, &R, &C);
            snprintf(nm, 64, "blk.%u.wo", l); wo = nweight(&f, nm, &R, &C);
            snprintf(nm, 64, "blk.%u.w13", l); w13 = nweight(&f, nm, &R, &C);
            snprintf(nm, 64, "blk.%u.w2", l); w2 = nweight(&f, nm, &R, &C);
            nrms(xb, x, an, D, c->norm_eps);
            fakequant(sch, xb, D);
            nmatvec(wqkv, qd + 2 * kvd, D, xb, qkv);
            for (int i = 0; i < qd + 2 * kvd; i++) qkv[i] = bf16_round_d(qkv[i]);
            for (int h = 0; h < nh + nkv; h++)   /* RoPE on adjacent pairs */
                for (int i = 0; i < hd / 2; i++) {
                    double fr = 1.0 / pow(c->rope_theta, 2.0 * i / hd), a = p * fr, *v = qkv + h * hd + 2 * i, v0 = v[0], v1 = v[1];
                    v[0] = v0 * cos(a) - v1 * sin(a);
                    v[1] = v0 * sin(a) + v1 * cos(a);
                }
            for (int i = 0; i < qd + kvd; i++) qkv[i] = bf16_round_d(qkv[i]);
            memcpy(kc + ((size_t)l * n + p) * kvd, qkv + qd, 8 * kvd);
            memcpy(vc + ((size_t)l * n + p) * kvd, qkv + qd + kvd, 8 * kvd);
            for (int h = 0; h < nh; h++) {
                int g = h / (nh / nkv);
                double mx = -1e300, sum = 0;
                for (int t = 0; t <= p; t++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += qkv[h * hd + i] * kc[((size_t)l * n + t) * kvd + g * hd + i];
                    att[t] = s / sqrt(hd);
                    mx = fmax(mx, att[t]);
                }
                for (int t = 0; t <= p; t++) sum += att[t] = exp(att[t] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int t = 0; t <= p; t++) a += att[t] / sum * vc[((size_t)l * n + t) * kvd + g * hd + i];
                    xb[h * hd + i] = a;
                }
            }
            fakequant(sch, xb, qd);
            nmatvec(wo, D, qd, xb, o);
            for (int i = 0; i < D; i++) x[i] += o[i];
            nrms(xb, x, fn, D, c->norm_eps);
            fakequant(sch, xb, D);
            nmatvec(w13, 2 * H, D, xb, hb);
            for (int i = 0; i < H; i++) {
                double g = bf16_round_d(hb[i]), u = bf16_round_d(hb[H + i]);
                hb[i] = g / (1 + exp(-g)) * u;
            }
            fakequant(sch, hb, H);
            nmatvec(w2, D, H, hb, o);
            for (int i = 0; i < D; i++) x[i] += o[i];
            free(an); free(fn); free(wqkv); free(wo); free(w13); free(w2);
        }
    }
    double *on = nweight(&f, "out_norm", &R, &C);
    nrms(xb, x, on, D, c->norm_eps);
    for (int i = 0; i < D; i++) xb[i] = bf16_round_d(xb[i]);
    nmatvec(emb, V, D, xb, logits);
    free(on); free(emb); free(kc); free(vc); free(x); free(xb); free(qkv); free(o); free(hb); free(att); free(buf);
    return logits;
}

static void test_quantized_forward(void) {
    const char *schemes[] = {"bf16", "fp8", "int8"};
    /* bound on max |logit - naive| / max |logit|: the engine computes in fp32 where the naive model keeps
     * doubles, so now and then an activation lands on the other side of a rounding boundary and moves by
     * one step (bf16: 2^-8 relative; int8: amax/127, coarse for small values); measured 1.9e-3, 4e-8, 9.9e-3 */
    const double bound[] = {5e-3, 5e-3, 2e-2};
    for (int s = 0; s < 3; s++) {
        const char *p = model("stories260K", schemes[s]);
        w8a8_model *m = open_cpu(p, 1);
        if (!m) { result(0, "quantized forward", "open failed: %s", w8a8_error()); continue; }
        int ids[64], n, seq;
        w8a8_tokenize(m, "One day, Lily met a big dog in the park. The dog", 1, ids, 64, &n);
        const float *lg;
        w8a8_seq_start(m, &seq);
        w8a8_feed(m, seq, ids, n);
        w8a8_logits(m, seq, &lg);
        double *ref = naive_forward(p, ids, n), md = 0, ma = 0;
        int V = w8a8_config_of(m)->vocab_size, am = 0, rm = 0;
        for (int v = 0; v < V; v++) {
            md = fmax(md, fabs(lg[v] - ref[v]));
            ma = fmax(ma, fabs(ref[v]));
            if (lg[v] > lg[am]) am = v;
            if (ref[v] > ref[rm]) rm = v;
        }
        result(md <= bound[s] * ma && am == rm, path("quantized forward %s == naive double fake-quant", schemes[s]),
               "%d tokens, max |diff| %.2e = %.1e x max |logit| (bound %.0e), argmax %s", n, md, md / ma, bound[s], am == rm ? "agrees" : "differs");
        free(ref);
        w8a8_close(m);
    }
}

/* Perplexity of a text in windows of ctx tokens, each from BOS, over at most max_tokens of it (0: all);
 * *scored (if given) counts the predicted tokens. NAN if scoring fails. */
static double text_ppl(w8a8_model *m, const char *text, int ctx, int max_tokens, int *scored_out) {
    int *ids = malloc(sizeof(int) * (strlen(text) + 8)), n, seq, win = ctx - 1, scored = 0, k2, buf[512];
    double nll = 0, sn;
    w8a8_tokenize(m, text, 0, ids, (int)strlen(text) + 8, &n);
    if (max_tokens && n > max_tokens) n = max_tokens;
    w8a8_seq_start(m, &seq);
    for (int w = 0; (w + 1) * win <= n; w++) {
        buf[0] = w8a8_config_of(m)->bos_id;
        memcpy(buf + 1, ids + w * win, sizeof(int) * win);
        if (w8a8_score(m, seq, buf, ctx, &sn, &k2)) { scored = 0; break; }
        nll += sn; scored += k2;
    }
    w8a8_seq_end(m, seq);
    free(ids);
    if (scored_out) *scored_out = scored;
    return scored ? exp(nll / scored) : NAN;
}

static void test_perplexity(void) {
    const char *names[] = {"stories260K", "tinystories-656k"}, *schemes[] = {"f32", "bf16", "fp8", "int8"};
    size_t len;
    char *text = slurp(path("%s/corpus/tinystories-dev.txt", SH), &len);
    if (!text) { result(0, "perplexity", "no corpus"); return; }
    if (len > 32768) text[32768] = 0;   /* a prefix keeps the CPU suite quick; ./run --ppl does the whole file */
    for (int k = 0; k < 2; k++) {
        double base = 0;
        char line[512] = "";
        int ok = 1;
        for (int s = 0; s < 4; s++) {
            w8a8_model *m = open_cpu(model(names[k], schemes[s]), 1);
            if (!m) { ok = 0; continue; }
            int scored;
            double ppl = text_ppl(m, text, 256, 0, &scored);
            if (s == 0) base = ppl;
            snprintf(line + strlen(line), sizeof line - strlen(line), "%s %.4f (%+.2f%%)  ", schemes[s], ppl, 100 * (ppl / base - 1));
            ok &= scored > 1000 && ppl / base < 1.05;
            w8a8_close(m);
        }
        result(ok, path("perplexity %s on tinystories-dev.txt[:32K], ctx 256", names[k]), "%s", line);
    }
    free(text);
}

/* =========================================================================================================
 * Calibration, SmoothQuant, static scales, the fp8 KV cache, pre-quantized FP8 checkpoints
 * ======================================================================================================= */
/* Runs `./convert ARGS -o test/out/bad.out`: 1 if it wrote no file and its messages hold `expect`. Its
 * "convert: ..." line goes to msg. */
static int convert_refused(const char *args, const char *expect, char *msg, size_t cap) {
    sh("rm -f %s/bad.out; ./convert %s -o %s/bad.out > %s/conv.log 2>&1", OUT, args, OUT, OUT);
    size_t ln;
    char *log = slurp(path("%s/conv.log", OUT), &ln);
    int refused = log && strstr(log, expect) && !exists(path("%s/bad.out", OUT));
    char *line = log ? strstr(log, "convert: ") : NULL;
    if (line && strchr(line, '\n')) *strchr(line, '\n') = 0;
    snprintf(msg, cap, "%s", line ? line : "");
    free(log);
    return refused;
}

static void test_calibration(void) {
    /* 1. the statistics against a direct computation: layer 0's qkv input is rmsnorm(embedding) * gain */
    w8a8_model *m = open_cpu(model("stories260K-hf", "f32"), 1);
    if (!m) { result(0, "calibration", "open failed: %s", w8a8_error()); return; }
    const w8a8_config *c = w8a8_config_of(m);
    int ids[64], n, seq, D = c->dim;
    w8a8_tokenize(m, "Lily liked to play with her ball in the park", 1, ids, 64, &n);
    size_t ns = w8a8_calib_size(m);
    float *st = malloc(sizeof(float) * ns), *direct = calloc(D, sizeof(float));
    int ok = !w8a8_calibrate(m, 1) && !w8a8_seq_start(m, &seq) && !w8a8_feed(m, seq, ids, n) && !w8a8_calib_stats(m, st, ns);
    for (int t = 0; t < n; t++) {
        const float *e = (const float *)m->tok_embd + (size_t)ids[t] * D, *g = m->layers[0].attn_norm;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)e[j] * e[j];
        double inv = 1 / sqrt(ss / D + c->norm_eps);
        for (int j = 0; j < D; j++) direct[j] = fmaxf(direct[j], (float)fabs(g[j] * e[j] * inv));
    }
    double md = 0;
    for (int j = 0; j < D; j++) md = fmax(md, fabs(st[j] - direct[j]) / direct[j]);
    result(ok && md <= 1e-5 && ns == (size_t)c->n_layers * (2 * D + c->n_heads * c->head_dim + c->hidden_dim + 2 * c->n_kv_heads * c->head_dim),
           "calibration: layer 0 qkv-input maxima == max |rmsnorm(embedding) * gain| computed directly", "%d tokens, max relative diff %.1e (bound 1e-5)", n, md);
    /* 2. every statistic against the NumPy forward of the HF checkpoint */
    if (sh("python3 -c 'import numpy, safetensors' 2>/dev/null")) skip("calibration vs NumPy", "python3 with numpy and safetensors not installed");
    else {
        char arg[1024];
        int k = snprintf(arg, sizeof arg, "'");
        for (int i = 1; i < n; i++) k += snprintf(arg + k, sizeof arg - k, "%d ", ids[i]);
        snprintf(arg + k, sizeof arg - k, "' --bos --stats");
        size_t len;
        jv root;
        char err[200];
        char *js = sh("python3 test/hf_reference.py %s/models/stories260K-hf %s > %s/hfstats.json", SH, arg, OUT) == 0
                       ? slurp(path("%s/hfstats.json", OUT), &len) : NULL;
        if (!js || json_parse(js, len, &root, err, sizeof err)) result(0, "calibration vs NumPy", "reference failed");
        else {
            const jv *rs = jget(&root, "stats");
            double worst = 0;
            for (int i = 0; rs && i < rs->n && (size_t)i < ns; i++) worst = fmax(worst, fabs(st[i] - rs->items[i].num) / fmax(rs->items[i].num, 1e-3));
            result(rs && (size_t)rs->n == ns && worst <= 1e-5, "calibration: all statistics == NumPy forward of the HF checkpoint",
                   "%zu per-channel maxima (5 layers x qkv, o, gate/up, down inputs, keys, values), max relative diff %.1e (bound 1e-5)", ns, worst);
            jv_free(&root);
        }
        free(js);
    }
    w8a8_calibrate(m, 0);
    w8a8_close(m);
    free(st); free(direct);

    /* 3. folding the smoothing factors leaves the f32 model's outputs unchanged */
    w8a8_model *a = open_cpu(model("stories260K", "f32"), 1), *b = open_cpu(model("stories260K", "f32-smooth"), 1);
    if (!a || !b) result(0, "SmoothQuant folding", "convert/open failed");
    else {
        w8a8_tokenize(a, "Once upon a time, there was a little dog named Spot who", 1, ids, 64, &n);
        float *la = malloc(sizeof(float) * 512 * n), *lb = malloc(sizeof(float) * 512 * n);
        double d = 0, mx = 0;
        if (!all_logits(a, ids, n, la) && !all_logits(b, ids, n, lb))
            for (int i = 0; i < 512 * n; i++) { d = fmax(d, fabs(la[i] - lb[i])); mx = fmax(mx, fabs(la[i])); }
        else d = 1e9;
        result(d <= 1e-5 * mx, "SmoothQuant folding (alpha 0.5) leaves f32 logits unchanged", "%d positions, max |diff| %.1e = %.1e x max |logit| (bound 1e-5)", n, d, d / mx);
        /* and so does the Hadamard rotation of the residual stream (--rotate) */
        w8a8_model *r = open_cpu(model("stories260K", "f32-rotate"), 1);
        d = 0;
        if (r && !all_logits(r, ids, n, lb))
            for (int i = 0; i < 512 * n; i++) d = fmax(d, fabs(la[i] - lb[i]));
        else d = 1e9;
        result(d <= 1e-5 * mx && r && !(r->cfg.flags & W8A8_TIED_EMBEDDINGS), "--rotate (random Hadamard on the residual stream, folded) leaves f32 logits unchanged",
               "%d positions, max |diff| %.1e = %.1e x max |logit| (bound 1e-5); embeddings untied", n, d, d / mx);
        w8a8_close(r);
        free(la); free(lb);
    }
    w8a8_close(a); w8a8_close(b);

    /* 4. statistics saved and reused give the same file as calibrating again */
    const char *cal = calib_file("stories260K"), *reused = model("stories260K", "fp8-static");
    char *again = path("%s/again.w8a8", OUT);
    int rc = sh("./convert %s/models/stories260K/stories260K.bin --tokenizer %s/models/stories260K/tok512.bin -o %s --scheme fp8-static "
                "--calib %s/corpus/tinystories-holdout.txt --calib-tokens 1024 --calib-cpu --quiet", SH, SH, again, SH);
    size_t n1 = 0, n2 = 0;
    char *f1 = reused ? slurp(reused, &n1) : NULL, *f2 = rc == 0 ? slurp(again, &n2) : NULL;
    result(cal && f1 && f2 && n1 == n2 && !memcmp(f1, f2, n1), "calibration statistics saved (--calib-save) and reused (--calib-load) == calibrating again",
           "fp8-static files %zu and %zu bytes, %s", n1, n2, f1 && f2 && n1 == n2 && !memcmp(f1, f2, n1) ? "identical" : "differ");
    free(f1); free(f2);

    /* 5. every new variant loads with its scales and runs (the perplexity table is `make quality`) */
    size_t tl;
    char *text = slurp(path("%s/corpus/tinystories-dev.txt", SH), &tl);
    if (tl > 16384) text[16384] = 0;
    w8a8_model *f = open_cpu(model("stories260K", "f32"), 1);
    double base = f ? text_ppl(f, text, 256, 0, NULL) : NAN;
    w8a8_close(f);
    const char *vs[] = {"fp8-static", "fp8-static-nosmooth", "fp8-smooth", "int8-sq", "int8-sq-dynamic", "int8-static-nosmooth", "fp8-kvfp8", "f32-kvfp8",
                        "int8-sq-kvfp8", "int8-rotate"};
    char line[1024] = "";
    ok = base > 0;
    for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) {
        w8a8_model *mm = open_cpu(model("stories260K", vs[i]), 1);
        double p = mm ? text_ppl(mm, text, 256, 0, NULL) : NAN;
        int statics = mm && strstr(vs[i], "static") ? mm->cfg.act_scales == W8A8_ACT_STATIC && mm->layers[0].qkv.in_scale > 0 : 1;
        int kv = mm && strstr(vs[i], "kvfp8") ? mm->cfg.kv_dtype == W8A8_KV_FP8 && mm->layers[0].k_scale > 0 : 1;
        ok &= mm && p / base < 1.1 && statics && kv;
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s %+.2f%%%s  ", vs[i], 100 * (p / base - 1), mm ? "" : " (failed)");
        w8a8_close(mm);
    }
    result(ok, "calibrated variants load with their static / KV scales and score within 10 % of f32", "tinystories-dev[:16K], ctx 256: %s", line);
    free(text);

    /* 6. bad uses say what is wrong */
    struct { const char *args, *expect; } bad[] = {
        {"--scheme fp8-static", "needs calibration statistics"},
        {"--scheme fp8 --kv fp8", "needs calibration statistics"},
        {"--scheme bf16 --act static", "--act static needs a quantized scheme"},
        {"--scheme fp8 --smooth --alpha 1.5 --calib-load x", "--alpha"},
        {"--scheme fp8 --kv int4", "--kv"},
        {"--scheme fp8-static --calib-load test/out/tinystories-656k.calib", "statistics of another model"},
        {"--scheme int8-sq --alpha auto --calib-load test/out/stories260K.calib", "--alpha auto scores each strength on the calibration text"},
        {"--scheme int8-sq --rotate --calib-load test/out/stories260K.calib", "--rotate and SmoothQuant do not combine"},
    };
    /* --alpha auto picks a strength by perplexity on the calibration text */
    rc = sh("./convert %s/models/stories260K/stories260K.bin --tokenizer %s/models/stories260K/tok512.bin -o %s/auto.w8a8 --scheme int8-sq "
            "--alpha auto --calib %s/corpus/tinystories-holdout.txt --calib-tokens 512 --calib-cpu > %s/auto.log 2>&1", SH, SH, OUT, SH, OUT);
    size_t al;
    char *alog = slurp(path("%s/auto.log", OUT), &al), *pick = alog ? strstr(alog, "\nalpha ") : NULL;
    w8a8_model *am = rc ? NULL : open_cpu(path("%s/auto.w8a8", OUT), 1);
    if (pick && strchr(pick + 1, '\n')) *strchr(pick + 1, '\n') = 0;
    result(am && pick && am->cfg.act_scales == W8A8_ACT_STATIC, "convert --alpha auto: scores 0.3 .. 0.8 on the calibration text and keeps the best",
           "%s", pick ? pick + 1 : "no choice printed");
    w8a8_close(am);
    free(alog);
    calib_file("tinystories-656k");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char msg[512];
        int good = convert_refused(path("%s/models/stories260K/stories260K.bin --tokenizer %s/models/stories260K/tok512.bin %s", SH, SH, bad[i].args),
                                   bad[i].expect, msg, sizeof msg);
        result(good, path("convert %s: refused", bad[i].args), "\"%s\"", msg);
    }
}

/* --- a pre-quantized FP8 checkpoint (compressed-tensors layout), made here from stories260K-hf --- */
typedef struct { char name[96], dtype[12]; int nd; uint64_t shape[2]; unsigned char *data; size_t bytes; } st_out;
static int write_safetensors(const char *file, st_out *t, int n) {
    char *hdr = malloc(64 * 1024);
    size_t k = 0, off = 0;
    k += sprintf(hdr + k, "{");
    for (int i = 0; i < n; i++) {
        k += sprintf(hdr + k, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].nd; d++) k += sprintf(hdr + k, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
        k += sprintf(hdr + k, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].bytes);
        off += t[i].bytes;
    }
    k += sprintf(hdr + k, "}");
    while (k % 8) hdr[k++] = ' ';
    FILE *f = fopen(file, "wb");
    if (!f) { free(hdr); return -1; }
    uint64_t hn = k;
    fwrite(&hn, 8, 1, f);
    fwrite(hdr, 1, k, f);
    for (int i = 0; i < n; i++) fwrite(t[i].data, 1, t[i].bytes, f);
    free(hdr);
    return fclose(f);
}

/* Writes DIR (F8_E4M3 weights + weight_scale + input_scale; q/k/v/o per tensor, the MLP per channel) and
 * DIR-deq (the same values, code * scale, in f32). nan_code / blockwise: a broken variant. */
static int make_fp8_checkpoint(const char *dir, int nan_code, int blockwise) {
    size_t n;
    char *src = slurp(path("%s/models/stories260K-hf/model.safetensors", SH), &n);
    if (!src) return -1;
    uint64_t hn;
    memcpy(&hn, src, 8);
    jv h;
    char err[200];
    if (json_parse(src + 8, hn, &h, err, sizeof err)) { free(src); return -1; }
    st_out q[256], d[256];
    int nq = 0, nd = 0;
    for (int i = 0; i < h.n && nq < 250; i++) {
        const jv *e = &h.items[i], *sh_ = jget(e, "shape"), *of = jget(e, "data_offsets");
        if (!of || !sh_) continue;   /* __metadata__ */
        const float *w = (const float *)(src + 8 + hn + (size_t)of->items[0].num);
        st_out t = {0};
        snprintf(t.name, sizeof t.name, "%s", h.keys[i]);
        t.nd = sh_->n;
        for (int k = 0; k < t.nd; k++) t.shape[k] = (uint64_t)sh_->items[k].num;
        t.bytes = (size_t)(of->items[1].num - of->items[0].num);
        if (!strstr(t.name, "_proj.weight")) {   /* embeddings and norms stay f32 */
            snprintf(t.dtype, sizeof t.dtype, "F32");
            t.data = malloc(t.bytes);
            memcpy(t.data, w, t.bytes);
            q[nq++] = t;
            d[nd] = t; d[nd].data = malloc(t.bytes); memcpy(d[nd++].data, w, t.bytes);
            continue;
        }
        uint64_t R = t.shape[0], C = t.shape[1];
        int per_channel = strstr(t.name, "mlp.") != NULL;
        float *sc = malloc(sizeof(float) * R), *deq = malloc(sizeof(float) * R * C);
        unsigned char *codes = malloc(R * C);
        float tmax = 0;
        for (uint64_t i2 = 0; i2 < R * C; i2++) tmax = fmaxf(tmax, fabsf(w[i2]));
        for (uint64_t r = 0; r < R; r++) {
            float amax = 0;
            for (uint64_t j = 0; j < C; j++) amax = fmaxf(amax, fabsf(w[r * C + j]));
            sc[r] = (per_channel ? amax : tmax) / 448.0f;
            for (uint64_t j = 0; j < C; j++) {
                codes[r * C + j] = w8a8_fp8_from_float(w[r * C + j] / sc[r]);
                deq[r * C + j] = w8a8_fp8_to_float(codes[r * C + j]) * sc[r];
            }
        }
        if (nan_code && strstr(t.name, "layers.1.self_attn.k_proj")) codes[5] = 0x7f;
        t.data = codes;
        t.bytes = R * C;
        snprintf(t.dtype, sizeof t.dtype, "F8_E4M3");
        q[nq++] = t;
        st_out s2 = {0}, s3 = {0};
        snprintf(s2.name, sizeof s2.name, "%.*sweight_scale", (int)strlen(t.name) - 6, t.name);
        snprintf(s2.dtype, sizeof s2.dtype, "F32");
        s2.nd = per_channel ? 2 : 1;
        s2.shape[0] = per_channel ? R : 1;
        s2.shape[1] = 1;
        if (blockwise && strstr(t.name, "layers.0.mlp.down")) { s2.shape[0] = 2; s2.shape[1] = 2; }
        s2.bytes = sizeof(float) * s2.shape[0] * (s2.nd == 2 ? s2.shape[1] : 1);
        s2.data = malloc(s2.bytes);
        for (uint64_t r = 0; r < s2.bytes / 4; r++) ((float *)s2.data)[r] = sc[r < R ? r : 0];
        q[nq++] = s2;
        snprintf(s3.name, sizeof s3.name, "%.*sinput_scale", (int)strlen(t.name) - 6, t.name);
        snprintf(s3.dtype, sizeof s3.dtype, "F32");
        s3.nd = 1; s3.shape[0] = 1; s3.bytes = 4; s3.data = malloc(4);
        ((float *)s3.data)[0] = 0.01f + 0.001f * (t.name[strlen(t.name) - 13] & 7);   /* differs between q, k and v */
        q[nq++] = s3;
        st_out dd = t;
        dd.bytes = sizeof(float) * R * C;
        snprintf(dd.dtype, sizeof dd.dtype, "F32");
        dd.data = (unsigned char *)deq;
        dd.bytes = sizeof(float) * R * C;
        d[nd++] = dd;
        free(sc);
    }
    char deqdir[1024];
    snprintf(deqdir, sizeof deqdir, "%s-deq", dir);
    sh("mkdir -p %s %s && cp %s/models/stories260K-hf/config.json %s/ && cp %s/models/stories260K-hf/config.json %s/", dir, deqdir, SH, dir, SH, deqdir);
    int rc = write_safetensors(path("%s/model.safetensors", dir), q, nq) | write_safetensors(path("%s/model.safetensors", deqdir), d, nd);
    for (int i = 0; i < nq; i++) free(q[i].data);
    for (int i = 0; i < nd; i++) free(d[i].data);
    jv_free(&h);
    free(src);
    return rc;
}

static void test_fp8_checkpoint(void) {
    char dird[1100], tok[1100], a[1100], b[1100], dyn[1100];
    snprintf(dird, sizeof dird, "%s/fp8ckpt", OUT);
    snprintf(tok, sizeof tok, "%s/models/stories260K/tok512.bin", SH);
    if (make_fp8_checkpoint(dird, 0, 0)) { result(0, "FP8 checkpoint", "could not write the test checkpoint"); return; }
    snprintf(a, sizeof a, "%s/fp8ckpt.fp8.w8a8", OUT);
    snprintf(b, sizeof b, "%s/fp8ckpt-deq.f32.w8a8", OUT);
    snprintf(dyn, sizeof dyn, "%s/fp8ckpt.dyn.w8a8", OUT);
    int rc = sh("./convert %s --tokenizer %s -o %s --scheme fp8 --quiet && ./convert %s-deq --tokenizer %s -o %s --scheme f32 --quiet && "
                "./convert %s --tokenizer %s -o %s --scheme fp8 --act dynamic --quiet", dird, tok, a, dird, tok, b, dird, tok, dyn);
    w8a8_model *ma = rc ? NULL : open_cpu(a, 1), *mb = rc ? NULL : open_cpu(b, 1), *md = rc ? NULL : open_cpu(dyn, 1);
    if (!ma || !mb || !md) { result(0, "FP8 checkpoint import", "convert/open failed (%s)", w8a8_error()); w8a8_close(ma); w8a8_close(mb); w8a8_close(md); return; }
    /* every code times its row's scale is the dequantized checkpoint's value at the same place, bit for bit:
     * the codes and scales were copied, in the engine's row order (q and k rows reordered for RoPE) */
    long mism = 0, total = 0;
    for (uint32_t l = 0; l < ma->cfg.n_layers; l++) {
        const linear *la[4] = {&ma->layers[l].qkv, &ma->layers[l].o, &ma->layers[l].w13, &ma->layers[l].w2};
        const linear *lb[4] = {&mb->layers[l].qkv, &mb->layers[l].o, &mb->layers[l].w13, &mb->layers[l].w2};
        for (int k = 0; k < 4; k++)
            for (int r = 0; r < la[k]->rows; r++)
                for (int j = 0; j < la[k]->cols; j++, total++) {
                    float va = w8a8_fp8_to_float(((const uint8_t *)la[k]->w)[(size_t)r * la[k]->cols + j]) * la[k]->scale[r];
                    mism += va != ((const float *)lb[k]->w)[(size_t)r * lb[k]->cols + j];
                }
    }
    result(total > 0 && mism == 0 && ma->layers[0].qkv.dtype == W8A8_DT_E4M3, "FP8 checkpoint import: codes and scales copied (code x scale == the checkpoint's value, bit for bit)",
           "%ld weights, %ld differ", total, mism);
    float want = 0.01f + 0.001f * ('q' & 7);   /* the largest of q/k/v's input scales (see make_fp8_checkpoint) */
    for (const char *p = "qkv"; *p; p++) want = fmaxf(want, 0.01f + 0.001f * (*p & 7));
    result(ma->cfg.act_scales == W8A8_ACT_STATIC && ma->layers[0].qkv.in_scale == want && md->cfg.act_scales == W8A8_ACT_DYNAMIC,
           "FP8 checkpoint import: input_scale becomes the static activation scale (max over q, k, v); --act dynamic drops it",
           "qkv in_scale %g (want %g); --act dynamic file: %s", ma->layers[0].qkv.in_scale, want, md->cfg.act_scales ? "static" : "dynamic");
    size_t tl;
    char *text = slurp(path("%s/corpus/tinystories-dev.txt", SH), &tl);
    if (tl > 16384) text[16384] = 0;
    double pb = text_ppl(mb, text, 256, 0, NULL), pd = text_ppl(md, text, 256, 0, NULL);
    result(pd / pb < 1.03, "FP8 checkpoint import: the model runs (dynamic scales) close to its dequantized twin", "perplexity %.4f vs f32 %.4f (%+.2f %%)", pd, pb, 100 * (pd / pb - 1));
    free(text);
    w8a8_close(ma); w8a8_close(mb); w8a8_close(md);
    /* broken checkpoints are refused with a reason */
    struct { int nan_code, blockwise; const char *expect; } bad[] = {{1, 0, "NaN"}, {0, 1, "block-wise"}};
    for (int i = 0; i < 2; i++) {
        char bd[512];
        snprintf(bd, sizeof bd, "%s/fp8bad%d", OUT, i);
        make_fp8_checkpoint(bd, bad[i].nan_code, bad[i].blockwise);
        char msg[512];
        int good = convert_refused(path("%s --tokenizer %s --scheme fp8", bd, tok), bad[i].expect, msg, sizeof msg);
        result(good, path("FP8 checkpoint with %s: refused", bad[i].expect), "%s", msg);
    }
}

/* =========================================================================================================
 * Bad files: each rejected with a clear error, no crash
 * ======================================================================================================= */
static void rechecksum(unsigned char *b) {
    w8a8_header *h = (w8a8_header *)b;
    h->checksum = 0;
    uint64_t s = w8a8_fnv1a(0xcbf29ce484222325ull, h, sizeof *h);
    s = w8a8_fnv1a(s, b + h->tokenizer_offset, h->tokenizer_bytes);
    h->checksum = w8a8_fnv1a(s, b + h->table_offset, (size_t)h->n_tensors * sizeof(w8a8_tensor_entry));
}

static void bad_case(const char *name, const unsigned char *data, size_t n, const char *expect) {
    char *p = path("%s/bad.w8a8", OUT);
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
    w8a8_model *m = NULL;
    w8a8_options o = w8a8_default_options();
    o.force_cpu = 1;
    int rc = w8a8_open(&m, p, &o);
    result(rc != 0 && !m && strstr(w8a8_error(), expect), path("bad file rejected: %s", name), "rc %d, \"%s\"", rc, w8a8_error());
    w8a8_close(m);
}

static void test_bad_files(void) {
    size_t n;
    unsigned char *good = (unsigned char *)slurp(model("tinystories-656k", "fp8"), &n), *b = malloc(n);
    if (!good) { result(0, "bad files", "no model"); return; }
    w8a8_header *h = (w8a8_header *)b;
    w8a8_tensor_entry *t;
#define RESET() (memcpy(b, good, n), t = (w8a8_tensor_entry *)(b + h->table_offset))
    RESET(); bad_case("empty file", b, 0, "too small");
    RESET(); bad_case("truncated", b, n / 2, "truncated");
    RESET(); bad_case("truncated inside the header", b, 100, "too small");
    RESET(); memcpy(b, "GGUF\0\0\0\0", 8); bad_case("wrong magic", b, n, "bad magic");
    RESET(); h->version = 99; rechecksum(b); bad_case("wrong version", b, n, "version 99");
    RESET(); b[sizeof(w8a8_header) + 40] ^= 1; bad_case("bad checksum (a flipped byte in the tokenizer)", b, n, "checksum");
    RESET(); h->config.dim ^= 0x100; bad_case("bad checksum (a changed dimension)", b, n, "checksum");
    RESET(); h->config.dim = 0xffffffffu; rechecksum(b); bad_case("dimension out of range", b, n, "dim");
    RESET(); t[0].shape[0] = 1ull << 40; t[0].shape[1] = 1ull << 40; rechecksum(b); bad_case("shape whose product overflows", b, n, "overflows");
    RESET(); t[0].shape[0] = 1ull << 33; t[0].shape[1] = 1ull << 31; t[0].bytes = 1ull << 63; rechecksum(b); bad_case("shape * dtype size overflows", b, n, "overflows");
    RESET(); t[1].offset = n + 4096; rechecksum(b); bad_case("tensor offset outside the file", b, n, "outside");
    /* (sections are range-checked before the checksum is read, so these need no new checksum) */
    RESET(); h->table_offset = n - 8; bad_case("table outside the file", b, n, "outside");
    RESET(); h->n_tensors = 0xfffffff; bad_case("huge tensor count", b, n, "outside");
    RESET(); h->tokenizer_bytes = 1ull << 62; bad_case("tokenizer section outside the file", b, n, "outside");
    RESET(); h->config.bos_id = 5000; rechecksum(b); bad_case("bos id outside the vocabulary", b, n, "outside the vocabulary");
    RESET(); {
        w8a8_tokenizer_header th;
        memcpy(&th, b + h->tokenizer_offset, sizeof th);
        size_t mo = h->tokenizer_offset + sizeof th + 4ull * th.n_tokens + ((th.n_tokens + 3) & ~3u) + 4ull * (th.n_tokens + 1) + ((th.text_bytes + 3) & ~3u);
        int32_t big = 1 << 30;
        memcpy(b + mo, &big, 4);
        rechecksum(b);
        bad_case("merge names a token outside the vocabulary", b, n, "outside the vocabulary");
    }
    RESET(); t[0].name[0] = 'x'; rechecksum(b); bad_case("missing tensor", b, n, "tok_embd");
    RESET(); t[2].shape[0] = 7; t[2].bytes = 28; rechecksum(b); bad_case("misshapen tensor", b, n, "shape");
    RESET(); h->config.scheme = 9; rechecksum(b); bad_case("unknown scheme", b, n, "scheme");
    w8a8_model *m = NULL;
    int rc = w8a8_open(&m, "/nonexistent/model.w8a8", NULL);
    result(rc == W8A8_ERR_IO && strstr(w8a8_error(), "No such file"), "missing file: clear error", "%s", w8a8_error());
    rc = w8a8_open(&m, OUT, NULL);
    result(rc == W8A8_ERR_IO && strstr(w8a8_error(), "not a regular file"), "a directory: clear error", "%s", w8a8_error());
    free(good); free(b);
    /* a token id out of range through the API */
    m = open_cpu(model("stories260K", "fp8"), 1);
    int seq, bad = 512;
    w8a8_seq_start(m, &seq);
    rc = w8a8_feed(m, seq, &bad, 1);
    result(rc == W8A8_ERR_TOKEN, "token id out of range: an error, not a crash", "%s", w8a8_error());
    w8a8_close(m);
}

/* =========================================================================================================
 * API, sampling, batching, CLI
 * ======================================================================================================= */
static void test_batch(void) {
    const char *schemes[] = {"f32", "fp8", "int8"};
    for (int s = 0; s < 3; s++) {
        const char *p = model("stories260K", schemes[s]);
        w8a8_model *mb = open_cpu(p, 4), *m1 = open_cpu(p, 1);
        if (!mb || !m1) { result(0, path("batch (%s)", schemes[s]), "open failed: %s", w8a8_error()); w8a8_close(mb); w8a8_close(m1); continue; }
        const char *prompts[] = {"Once upon a time", "The cat sat on the mat and looked at the", "Tim", "A big red ball rolled down the hill to the"};
        int seqs[4], ok = 1, ids[4][64], n[4];
        for (int i = 0; i < 4; i++) {
            w8a8_tokenize(mb, prompts[i], 1, ids[i], 64, &n[i]);
            w8a8_seq_start(mb, &seqs[i]);
            w8a8_feed(mb, seqs[i], ids[i], n[i]);
        }
        /* 6 batched steps of all four, each checked against the sequence run alone */
        int toks[4] = {10, 20, 30, 40};
        for (int step = 0; step < 6; step++) {
            if (w8a8_step(mb, 4, seqs, toks)) { ok = 0; break; }
            for (int i = 0; i < 4; i++) ids[i][n[i]++] = toks[i];
        }
        for (int i = 0; i < 4; i++) {
            int sq;
            const float *a, *b;
            w8a8_seq_start(m1, &sq);
            w8a8_feed(m1, sq, ids[i], n[i]);
            w8a8_logits(m1, sq, &a);
            w8a8_logits(mb, seqs[i], &b);
            ok &= !memcmp(a, b, 512 * sizeof(float));
            w8a8_seq_end(m1, sq);
        }
        int extra;
        ok &= w8a8_seq_start(mb, &extra) == W8A8_ERR_ARG;   /* all four in use */
        result(ok, path("batch (%s): 4 sequences of different lengths stepped together == each alone", schemes[s]), "");
        w8a8_close(mb); w8a8_close(m1);
    }
    /* w8a8_feed_batch: prompts packed into shared forward passes (here 3 + 200 + 150 + 1 rows: two passes of up
     * to 256 rows on the CPU, one prompt split across them) == each prompt fed alone, logits and a step after */
    for (int s = 0; s < 3; s++) {
        const char *p = model("stories260K", schemes[s]);
        w8a8_model *mf = open_cpu(p, 4), *m1 = open_cpu(p, 4);
        int lens[4] = {3, 200, 150, 1}, *ids[4], seqs[4], seqs1[4], ok = mf && m1, V = mf ? w8a8_config_of(mf)->vocab_size : 0;
        for (int i = 0; i < 4; i++) {
            ids[i] = malloc(sizeof(int) * lens[i]);
            for (int j = 0; j < lens[i]; j++) ids[i][j] = 1 + (i * 97 + j * 31) % (V - 1);
            w8a8_seq_start(mf, &seqs[i]);
            w8a8_seq_start(m1, &seqs1[i]);
            ok &= !w8a8_feed(m1, seqs1[i], ids[i], lens[i]);
        }
        ok &= !w8a8_feed_batch(mf, 4, seqs, (const int *const *)ids, lens);
        int toks[4] = {7, 8, 9, 10};
        ok &= !w8a8_step(mf, 4, seqs, toks) && !w8a8_step(m1, 4, seqs1, toks);
        for (int i = 0; ok && i < 4; i++) {
            const float *a, *b;
            int la = -1, lb = -2;
            w8a8_logits(mf, seqs[i], &a);
            w8a8_logits(m1, seqs1[i], &b);
            w8a8_seq_length(mf, seqs[i], &la);
            w8a8_seq_length(m1, seqs1[i], &lb);
            ok &= !memcmp(a, b, sizeof(float) * V) && la == lens[i] + 1 && la == lb;
        }
        /* misuse: a sequence twice, a bad token, too long: errors, nothing fed */
        int two[2] = {seqs[0], seqs[0]}, bad[3] = {4, -5, 6}, len0 = 0, l2[2] = {3, 3};
        const int *pp[2] = {ids[0], ids[0]}, *pb[1] = {bad};
        ok &= w8a8_feed_batch(mf, 2, two, pp, l2) == W8A8_ERR_ARG && strstr(w8a8_error(), "twice");
        ok &= w8a8_feed_batch(mf, 1, seqs, pb, l2) == W8A8_ERR_TOKEN;
        int huge = 100000;
        ok &= w8a8_feed_batch(mf, 1, seqs, pp, &huge) == W8A8_ERR_CONTEXT && w8a8_feed_batch(mf, 0, seqs, pp, l2) == W8A8_ERR_ARG;
        w8a8_seq_length(mf, seqs[0], &len0);
        ok &= len0 == lens[0] + 1;
        result(ok, path("w8a8_feed_batch (%s): 4 prompts (3, 200, 150, 1 tokens) packed into shared passes == each fed alone; misuse is an error", schemes[s]), "%s", ok ? "" : w8a8_error());
        for (int i = 0; i < 4; i++) free(ids[i]);
        w8a8_close(mf); w8a8_close(m1);
    }
}

static void test_sampling(void) {
    float lg[5] = {1, 3, 2, 3, -1};
    w8a8_sampler g = {0, 0, 0};
    int t = -1, ok;
    w8a8_sample_logits(lg, 5, &g, &t);
    ok = t == 1;   /* the first maximum */
    int a[50], b[50], c[50];
    w8a8_sampler s1 = {1.0f, 0.9f, 42}, s2 = {1.0f, 0.9f, 42}, s3 = {1.0f, 0.9f, 43};
    int diff = 0, never4 = 1;
    for (int i = 0; i < 50; i++) {
        w8a8_sample_logits(lg, 5, &s1, &a[i]);
        w8a8_sample_logits(lg, 5, &s2, &b[i]);
        w8a8_sample_logits(lg, 5, &s3, &c[i]);
        ok &= a[i] == b[i];
        diff += a[i] != c[i];
        never4 &= a[i] != 4;   /* top-p 0.9 drops the least likely token */
    }
    w8a8_sampler tiny = {1.0f, 1e-6f, 7};
    w8a8_sample_logits(lg, 5, &tiny, &t);
    result(ok && diff > 0 && never4 && (t == 1 || t == 3), "sampling: greedy first max, same seed same draws, top-p cuts the tail", "");
    result(w8a8_sample_logits(lg, 5, &(w8a8_sampler){-1, 0, 0}, &t) == W8A8_ERR_ARG, "sampling: a negative temperature is an error", "");
    float bad[3] = {1, NAN, 2};
    result(w8a8_sample_logits(bad, 3, &(w8a8_sampler){0.8f, 0.5f, 1}, &t) == W8A8_ERR_ARG && strstr(w8a8_error(), "broken"),
           "sampling: NaN logits are an error, not a silent pick (found by fuzz_model)", "%s", w8a8_error());
}

static void test_api_misuse(void) {
    w8a8_model *m = open_cpu(model("stories260K", "fp8"), 2);
    int ids[8] = {1, 2, 3}, n, seq;
    const float *lg;
    int ok = w8a8_feed(NULL, 0, ids, 1) == W8A8_ERR_ARG && w8a8_feed(m, 5, ids, 1) == W8A8_ERR_ARG &&
             w8a8_feed(m, 0, ids, 1) == W8A8_ERR_ARG /* not started */ && w8a8_tokenize(NULL, "x", 0, ids, 8, &n) == W8A8_ERR_ARG &&
             w8a8_tokenize(m, "Once upon a time there was", 0, ids, 2, &n) == W8A8_ERR_ARG && n > 2;
    w8a8_seq_start(m, &seq);
    ok &= w8a8_logits(m, seq, &lg) == W8A8_ERR_ARG;   /* nothing fed yet */
    int two[2] = {seq, seq}, tk[2] = {1, 1};
    ok &= w8a8_step(m, 2, two, tk) == W8A8_ERR_ARG;
    int *many = malloc(sizeof(int) * 600);
    for (int i = 0; i < 600; i++) many[i] = 100;
    ok &= w8a8_feed(m, seq, many, 600) == W8A8_ERR_CONTEXT && strstr(w8a8_error(), "do not fit");
    free(many);
    w8a8_close(m);
    w8a8_close(NULL);
    /* calls after close, a second close, a made-up handle: errors, never crashes */
    w8a8_model *fake = (w8a8_model *)(uintptr_t)0x1000;
    ok &= w8a8_feed(m, 0, ids, 1) == W8A8_ERR_ARG && strstr(w8a8_error(), "not an open model");
    ok &= w8a8_tokenize(m, "x", 0, ids, 8, &n) == W8A8_ERR_ARG && w8a8_seq_start(fake, &seq) == W8A8_ERR_ARG && !w8a8_config_of(m);
    w8a8_close(m);
    w8a8_close(fake);
    /* w8a8_open_memory: the same model from an image in memory */
    size_t len;
    char *img = slurp(model("stories260K", "fp8"), &len);
    w8a8_model *mm = NULL;
    w8a8_options o = w8a8_default_options();
    o.force_cpu = 1;
    ok &= w8a8_open_memory(&mm, img, len, &o) == 0 && w8a8_tokenize(mm, "Tim", 1, ids, 8, &n) == 0 && n == 2;
    w8a8_close(mm);
    ok &= w8a8_open_memory(&mm, img + 1, len - 1, &o) == W8A8_ERR_ARG && !mm;
    free(img);
    result(ok, "API misuse: NULLs, unknown or duplicate sequences, overlong prompts, calls after close, double close, made-up handles are errors", "%s", ok ? "" : w8a8_error());

    /* invalid UTF-8 in a prompt: byte fallback (SentencePiece) or bytes (byte-level), and back out as U+FFFD */
    const char *bad_utf8 = "ok \xff\xfe caf\xc3 \xe2\x82 end \xf0\x9f\x99";
    int good = 1;
    for (int k = 0; k < 3; k++) {
        const char *tk[] = {"llama2", "llama3", "qwen3"};
        w8a8_model *t = open_cpu(path("%s/tok-%s.w8a8", OUT, tk[k]), 1);
        int ids2[256], n2, l;
        char outb[4096] = "", b[256];
        w8a8_decoder d = {0};
        good &= t && !w8a8_tokenize(t, bad_utf8, 0, ids2, 256, &n2) && n2 > 0;
        for (int i = 0; t && i < n2; i++) { w8a8_decode(t, &d, ids2[i], b, sizeof b, &l); strncat(outb, b, l); }
        good &= strstr(outb, "ok ") && strstr(outb, "end") && strstr(outb, "\xef\xbf\xbd");   /* U+FFFD for the broken bytes */
        w8a8_close(t);
    }
    result(good, "invalid UTF-8 in a prompt is tokenized (byte fallback / bytes) and decoded with U+FFFD, no crash", "");
}

static void test_cli(void) {
    const char *p = model("stories260K", "fp8");
    int rc = sh("./run %s --tokenize 'Once upon a time' > %s/tok.txt", p, OUT);
    char *t = slurp(path("%s/tok.txt", OUT), NULL);
    result(rc == 0 && t && !strcmp(t, "403 407 261 378\n"), "./run --tokenize prints the ids without BOS", "%s", t ? t : "");
    free(t);
    rc = sh("./run %s -n 5 -t 0.8 -s 3 'Tom' > /dev/null 2> %s/err.txt", p, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc == 0 && t && strstr(t, "tok/s") && strstr(t, "scheme fp8"), "./run reports device, scheme and tok/s on stderr", "");
    free(t);
    rc = sh("./run %s --bogus 2>/dev/null", p);
    result(WEXITSTATUS(rc) == 2, "./run: an unknown option is a usage error", "");
    rc = sh("./run /nonexistent.w8a8 2> %s/err.txt", OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(WEXITSTATUS(rc) == 1 && t && strstr(t, "cannot open"), "./run: a missing model is a clear error", "%s", t ? t : "");
    free(t);
    rc = sh("head -c 3000 %s/corpus/tinystories-dev.txt > %s/small.txt && ./run %s --ppl %s/small.txt -c 128 > %s/ppl.txt 2>/dev/null", SH, OUT, p, OUT, OUT);
    t = slurp(path("%s/ppl.txt", OUT), NULL);
    result(rc == 0 && t && !strncmp(t, "ppl: ", 5) && atof(t + 5) > 1 && atof(t + 5) < 20, "./run --ppl ends with 'ppl: X'", "%s", t ? t : "");
    free(t);
    rc = sh("./run %s --chat 2> %s/err.txt < /dev/null", p, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && t && strstr(t, "no chat template"), "./run --chat on a model without a template says so", "");
    free(t);
    rc = sh("./convert %s/models/stories260K/stories260K.bin -o %s/x.w8a8 2> %s/err.txt", SH, OUT, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && t && strstr(t, "--tokenizer") && !exists(path("%s/x.w8a8", OUT)), "./convert: a llama2.c checkpoint without its tokenizer is a clear error", "");
    free(t);
    rc = sh("mkdir -p %s/fakehf && echo '{\"architectures\":[\"GPT2LMHeadModel\"]}' > %s/fakehf/config.json && ./convert %s/fakehf -o %s/x.w8a8 2> %s/err.txt", OUT, OUT, OUT, OUT, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && t && strstr(t, "GPT2LMHeadModel"), "./convert: an unknown architecture is an error naming it", "%s", t ? t : "");
    free(t);
    rc = sh("echo '{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":3e84}' > %s/fakehf/config.json && ./convert %s/fakehf -o %s/x.w8a8 2> %s/err.txt", OUT, OUT, OUT, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && t && strstr(t, "hidden_size = 3e+84"), "./convert: an absurd dimension is an error naming it (found by fuzz_convert)", "%s", t ? t : "");
    free(t);
    /* a llama2.c header whose vocabulary size is INT32_MIN (negating it overflowed; found by fuzz_convert) */
    int32_t l2c_header[7] = {64, 128, 2, 4, 4, INT32_MIN, 256};   /* dim, hidden, layers, heads, kv heads, vocab, context */
    FILE *f = fopen(path("%s/min.bin", OUT), "wb");
    fwrite(l2c_header, sizeof l2c_header, 1, f);
    fclose(f);
    rc = sh("./convert %s/min.bin --tokenizer %s/models/stories260K/tok512.bin -o %s/x.w8a8 2> %s/err.txt", OUT, SH, OUT, OUT);
    t = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && t && strstr(t, "does not look like a llama2.c checkpoint") && !exists(path("%s/x.w8a8", OUT)),
           "./convert: a llama2.c header with vocabulary size INT32_MIN is a clear error (found by fuzz_convert)", "%s", t ? t : "");
    free(t);
    /* an interrupted conversion leaves nothing behind */
    rc = sh("(./convert %s/models/tinystories-656k -o %s/int.w8a8 --scheme fp8 --quiet & p=$!; sleep 0.05; kill -INT $p; wait $p) 2>/dev/null; "
            "ls %s | grep -c 'int.w8a8' > %s/cnt.txt", SH, OUT, OUT, OUT);
    t = slurp(path("%s/cnt.txt", OUT), NULL);
    result(t && (atoi(t) == 0 || exists(path("%s/int.w8a8", OUT))) && !sh("ls %s | grep -q 'tmp' && exit 1 || exit 0", OUT),
           "./convert interrupted: no partial output file", "");
    free(t);
}

/* The example at the top of w8a8.h, compiled from nothing but the drop-in files with `cc -c`. */
static void test_example(void) {
    char *hdr = slurp("w8a8.h", NULL);
    char *a = strstr(hdr, " *     #include \"w8a8.h\""), *e = a ? strstr(a, " *     }\n *\n") : NULL;
    if (!a || !e) { result(0, "example", "no example in w8a8.h"); free(hdr); return; }
    e += strlen(" *     }\n");
    char *d = path("%s/dropin", OUT);
    sh("rm -rf %s && mkdir -p %s && cp w8a8.c w8a8.h kernels.cu.inc %s/", d, d, d);
    FILE *f = fopen(path("%s/example.c", d), "w");
    int lines = 0;
    for (char *l = a; l < e;) {
        char *nl = strchr(l, '\n');
        fprintf(f, "%.*s\n", (int)(nl - l - 7 > 0 ? nl - l - 7 : 0), l + 7);
        l = nl + 1;
        lines++;
    }
    fclose(f);
    free(hdr);
    const char *p = model("stories260K", "fp8");
    int rc = sh("cd %s && cc -std=gnu11 -Wall -Wextra -Werror -c w8a8.c && cc -std=gnu11 -Wall -Wextra -Werror example.c w8a8.o -o example -lm -ldl -lpthread && "
                "./example ../../../%s > out.txt", d, p);
    char *out = slurp(path("%s/out.txt", d), NULL);
    result(rc == 0 && out && strlen(out) > 20, "the example in w8a8.h builds with `cc -c w8a8.c` from the drop-in files alone and runs",
           "%d lines; output \"%.60s...\"", lines, out ? out : "");
    free(out);
}

/* faults on the way to the GPU that can be made without one */
/* run in a process of its own (NVRTC, once loaded, stays loaded): W8A8_NVRTC names a library that is not there,
 * W8A8_CACHE an empty folder (on a GPU machine a cached cubin would make NVRTC unneeded, and the open would work) */
static void test_nvrtc_missing(void) {
    int rc = w8a8_compile_check("sm_90a", NULL);
    result(rc == W8A8_ERR_GPU && strstr(w8a8_error(), "NVRTC not found"), "no NVRTC: a clear error", "%s", w8a8_error());
    w8a8_model *m = NULL;
    w8a8_options o = w8a8_default_options();
    rc = w8a8_open(&m, model("stories260K", "int8"), &o);
    result(rc == 0 && !w8a8_on_gpu(m) && w8a8_fallback_reason(m)[0], "no GPU or no NVRTC: w8a8_open falls back to the CPU and says why", "%s", m ? w8a8_fallback_reason(m) : w8a8_error());
    w8a8_close(m);
    m = NULL;
    o.require_gpu = 1;
    rc = w8a8_open(&m, model("stories260K", "int8"), &o);
    result(rc == W8A8_ERR_GPU && !m, "require_gpu without a usable GPU: an error", "%s", w8a8_error());
    w8a8_close(m);
}

static void test_faults(void) {
    model("stories260K", "int8");   /* made here, so the process below only opens it */
    int rc = sh("rm -rf %s/empty-cache && mkdir -p %s/empty-cache && W8A8_CACHE=%s/empty-cache W8A8_NVRTC=/nonexistent/libnvrtc.so "
                "./test/test_main nvrtc-missing > %s/nvrtc-missing.txt 2>&1", OUT, OUT, OUT, OUT);
    char *txt = slurp(path("%s/nvrtc-missing.txt", OUT), NULL);
    result(rc == 0 && txt && strstr(txt, "PASS no NVRTC") && strstr(txt, "PASS no GPU or no NVRTC") && strstr(txt, "PASS require_gpu"),
           "no NVRTC (a fresh process, W8A8_NVRTC=/nonexistent, an empty kernel cache): a clear error; w8a8_open falls back to the CPU and says why; require_gpu is an error",
           "%.300s", txt ? txt : "");
    free(txt);
    /* an NVRTC compile failure: the log, with its line, in the error */
    char *src = slurp("kernels.cu.inc", NULL);
    if (!src) { result(0, "compile failure", "no kernels.cu.inc"); return; }
    char *p = strstr(src, "extern \"C\" __global__ void embed(");
    FILE *f = fopen(path("%s/broken.cu.inc", OUT), "w");
    fprintf(f, "%.*sthis is not CUDA;\n%s", (int)(p - src), src, p);
    fclose(f);
    setenv("W8A8_KERNELS_FILE", path("%s/broken.cu.inc", OUT), 1);
    rc = w8a8_compile_check("sm_90a", NULL);
    unsetenv("W8A8_KERNELS_FILE");
    if (rc && strstr(w8a8_error(), "NVRTC not found")) skip("an NVRTC compile failure puts the log in the error", w8a8_error());
    else result(rc == W8A8_ERR_GPU && strstr(w8a8_error(), "kernels.cu.inc(") && strstr(w8a8_error(), "error"),
                "an NVRTC compile failure puts the log (file and line) in the error", "%.160s", w8a8_error());
    free(src);
    /* a prompt longer than the context: a clear error, not a silent truncation */
    rc = sh("./run %s -c 8 --cpu 'Once upon a time there was a little girl named Lily who' > /dev/null 2> %s/err.txt", model("stories260K", "fp8"), OUT);
    char *e = slurp(path("%s/err.txt", OUT), NULL);
    result(rc != 0 && e && strstr(e, "do not fit"), "./run: a prompt longer than the context is a clear error", "%s", e ? strstr(e, "run: prompt") ? strstr(e, "run: prompt") : e : "");
    free(e);
}

/* Constants that w8a8.c and kernels.cu.inc both define must agree: the host sizes grids and shared memory by
 * them, and the CPU reference follows the kernels' summation order (ATT_CHUNK, ATT_THREADS, NORM_THREADS).
 * A GPU test would catch one changed alone; this catches it without a GPU. Each is found in the embedded
 * kernel source as "NAME = value". */
static void test_kernel_constants(void) {
    struct { const char *name; long host; } c[] = {
        {"NORM_THREADS", NORM_THREADS}, {"NORM_BLOCK", NORM_BLOCK}, {"ATT_CHUNK", ATT_CHUNK}, {"ATT_THREADS", ATT_THREADS}, {"ATT_HEADS", ATT_HEADS},
        {"ROPE_WARPS", ROPE_WARPS}, {"TC_ROWS", TC_ROWS}, {"TC_THREADS", TC_THREADS}, {"TC_MIN_RUN", TC_MIN_RUN},
        {"GEMV_MAX_M", GEMV_MAX_M}, {"GEMV_WARPS", GEMV_WARPS}, {"OUT_SILU", OUT_SILU}, {"OUT_ROPE", OUT_ROPE}, {"IN_ACT", IN_ACT}, {"IN_NORM", IN_NORM},
        {"IN_ROW", IN_ROW}, {"H_SMEM", H_SMEM}, {"H_EPI", H_EPI}, {"OUT_BF16", OUT_BF16}, {"SILU_THREADS", SILU_THREADS}, {"BUILD_E4M3", BUILD_E4M3}, {"BUILD_S8", BUILD_S8},
        {"BUILD_KV_BF16", BUILD_KV_BF16}, {"BUILD_KV_E4M3", BUILD_KV_E4M3}, {"BUILD_TC_64", BUILD_TC_64},
        {"BUILD_TC_128", BUILD_TC_128}, {"BUILD_ATT_ODD", BUILD_ATT_ODD}, {"BUILD_BF16", BUILD_BF16},
    };
    int n = sizeof c / sizeof *c, ok = 1;
    char bad[512] = "";
    for (int i = 0; i < n; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "%s = ", c[i].name);
        const char *at = kernel_source;
        while ((at = strstr(at, pat)) && at > kernel_source && (isalnum((unsigned char)at[-1]) || at[-1] == '_')) at++;   /* a whole name */
        long k = at ? strtol(at + strlen(pat), NULL, 0) : -1;
        if (!at || k != c[i].host) {
            ok = 0;
            snprintf(bad + strlen(bad), sizeof bad - strlen(bad), " %s: host %ld, kernels %s%ld;", c[i].name, c[i].host, at ? "" : "missing ", k);
        }
    }
    if (ok) result(1, "w8a8.c and kernels.cu.inc agree on their shared constants", "%d constants", n);
    else result(0, "w8a8.c and kernels.cu.inc agree on their shared constants", "%s", bad);
}

static void test_nvrtc(void) {
    const char *targets[] = {"sm_80", "sm_86", "sm_89", "sm_90a"};
    for (int i = 0; i < 4; i++) {
        size_t n = 0;
        int rc = w8a8_compile_check(targets[i], &n);
        if (rc && strstr(w8a8_error(), "NVRTC not found")) { skip(path("kernels.cu.inc compiles with NVRTC for %s", targets[i]), w8a8_error()); continue; }
        result(rc == 0 && n > 0, path("kernels.cu.inc compiles with NVRTC for %s", targets[i]), "%s", rc ? w8a8_error() : path("%zu-byte cubin", n));
    }
}

/* =========================================================================================================
 * GGUF: SmolLM2-135M-Instruct from PyPI (make models), dequantization against the gguf package, llama.cpp
 * ======================================================================================================= */
static const char *smollm2_path(void) {
    const char *e = getenv("W8A8_MODELS"), *home = getenv("HOME");
    return e ? path("%s/SmolLM2-135M-Instruct.Q4_1.gguf", e) : path("%s/.cache/w8a8/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
}
static const char *smollm2(const char *scheme) {
    char *out = path("%s/smollm2.%s.w8a8", OUT, scheme);
    if (exists(out)) return out;
    return sh("./convert %s -o %s --scheme %s --quiet", smollm2_path(), out, scheme) == 0 ? out : NULL;
}

static void test_gguf(void) {
    /* a tensor offset so large that header end + offset wraps past 2^64 back into the file (found by fuzz_convert):
     * refused, not read */
    {
        unsigned char b[128] = "GGUF";
        uint32_t ver = 3, nd = 1, type = 0;
        uint64_t n_t = 1, n_kv = 0, nlen = 1, ne = 8, off = ~0ull;   /* header end rounds up to 64: 64 + ~0 wraps to 63 */
        size_t o = 4;
#define PUT(v) (memcpy(b + o, &(v), sizeof(v)), o += sizeof(v))
        PUT(ver); PUT(n_t); PUT(n_kv); PUT(nlen); b[o++] = 't'; PUT(nd); PUT(ne); PUT(type); PUT(off);
#undef PUT
        char *f = path("%s/wrap.gguf", OUT);
        FILE *fp = fopen(f, "wb");
        if (fp) { fwrite(b, 1, sizeof b, fp); fclose(fp); }
        int rc = sh("./convert --dump %s t %s/wrap.f32 > %s/wrap.log 2>&1", f, OUT, OUT);
        char *log = slurp(path("%s/wrap.log", OUT), NULL);
        result(rc != 0 && log && strstr(log, "lies outside the file"), "GGUF: a tensor offset that wraps around 2^64 is refused", "%s", log ? log : "");
        free(log);
    }
    /* dequantization, every type, against the gguf package */
    if (sh("python3 -c 'import gguf, numpy' 2>/dev/null")) skip("GGUF dequantization == the gguf package", "python3 with gguf and numpy not installed (make deps)");
    else {
        char *syn = path("%s/synth.gguf", OUT);
        int bad = 0, n = 0;
        const char *names[] = {"t_f32", "t_f16", "t_bf16", "t_q8_0", "t_q4_0", "t_q4_1", "t_q6_k"};
        if (sh("python3 test/gguf_reference.py make %s", syn)) bad++;
        for (int i = 0; i < 7 && !bad; i++, n++)
            bad += sh("python3 test/gguf_reference.py dump %s %s %s/ref.f32 && ./convert --dump %s %s %s/our.f32 && cmp -s %s/ref.f32 %s/our.f32",
                      syn, names[i], OUT, syn, names[i], OUT, OUT, OUT) != 0;
        const char *real[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.7.ffn_down.weight", "output_norm.weight"};
        if (exists(smollm2_path()))
            for (int i = 0; i < 4; i++, n++)
                bad += sh("python3 test/gguf_reference.py dump %s %s %s/ref.f32 && ./convert --dump %s %s %s/our.f32 && cmp -s %s/ref.f32 %s/our.f32",
                          smollm2_path(), real[i], OUT, smollm2_path(), real[i], OUT, OUT, OUT) != 0;
        result(!bad, "GGUF dequantization (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K) == the gguf package, bit for bit", "%d tensors, %d differ", n, bad);
    }
    if (!exists(smollm2_path())) { skip("SmolLM2-135M-Instruct", path("%s is absent: run `make models`", smollm2_path())); return; }
    const char *schemes[] = {"f32", "bf16", "fp8", "int8"};
    for (int s = 0; s < 4; s++) {
        w8a8_model *m = open_cpu(smollm2(schemes[s]), 1);
        if (!m) { result(0, path("SmolLM2 %s", schemes[s]), "convert/open failed: %s", w8a8_error()); continue; }
        char *t = generate_text(m, "The capital of France is", 8);
        result(strstr(t, "Paris") != NULL, path("SmolLM2 (GGUF Q4_1 -> %s): \"The capital of France is\" ...", schemes[s]), "\"%s\"", t);
        free(t);
        w8a8_close(m);
    }
    /* the chat template: a ChatML conversation that stops at <|im_end|> */
    int rc = sh("printf 'What is the capital of France?\\n' | ./run %s --chat --cpu -t 0 -n 60 > %s/chat.txt 2> %s/chat.err", smollm2("fp8"), OUT, OUT);
    char *c = slurp(path("%s/chat.txt", OUT), NULL), *ce = slurp(path("%s/chat.err", OUT), NULL);
    result(rc == 0 && c && strstr(c, "Paris") && ce && strstr(ce, "ChatML") && !strstr(c, "<|im"),
           "./run --chat on SmolLM2: ChatML recognised, answers, stops at <|im_end|>", "\"%s\"", c ? c : "");
    free(c); free(ce);

    /* llama.cpp on the same GGUF */
    if (sh("python3 -c 'import llama_cpp' 2>/dev/null")) { skip("llama.cpp reference", "llama-cpp-python not installed (pip install llama-cpp-python)"); return; }
    w8a8_model *m = open_cpu(smollm2("f32"), 1);
    const char *vec[] = {"llama2", "llama3", "qwen3"};
    int lines = 0, bad = 0;
    for (int v = 0; v < 3; v++) {
        sh("python3 test/llamacpp_reference.py %s tokenize < %s/tokenizers/vectors/%s.jsonl > %s/lc_tok.txt 2>/dev/null", smollm2_path(), SH, vec[v], OUT);
        char *txt = slurp(path("%s/tokenizers/vectors/%s.jsonl", SH, vec[v]), NULL), *ref = slurp(path("%s/lc_tok.txt", OUT), NULL);
        char *a = txt, *b = ref;
        while (a && b && *a && *b) {
            char *na = strchr(a, '\n'), *nb = strchr(b, '\n');
            if (!na || !nb) break;
            jv jt, jr;
            char err[100];
            if (!json_parse(a, na - a, &jt, err, sizeof err) && !json_parse(b, nb - b, &jr, err, sizeof err)) {
                int ids[4096], n;
                int ok = !w8a8_tokenize(m, jget(&jt, "text")->str, 0, ids, 4096, &n) && n == jr.n;
                for (int i = 0; ok && i < n; i++) ok = ids[i] == (int)jr.items[i].num;
                bad += !ok; lines++;
                jv_free(&jt); jv_free(&jr);
            }
            a = na + 1; b = nb + 1;
        }
        free(txt); free(ref);
    }
    result(lines >= 100 && !bad, "SmolLM2 tokenizer == llama.cpp's on every text of the shared vectors", "%d texts, %d differ", lines, bad);
    /* greedy continuations, teacher-forced: llama.cpp's tokens fed to ours, logits compared at every step */
    const char *prompts[] = {"The capital of France is", "Once upon a time, there was a little girl named", "def fibonacci(n):"};
    int steps = 0, agree = 0, free_run = 0, near_tie = 1;
    double md = 0, ma = 0;
    for (int p = 0; p < 3; p++) {
        char *js = NULL;
        size_t len;
        if (!sh("python3 test/llamacpp_reference.py %s generate '%s' 32 %s/lc.f32 > %s/lc.json 2>/dev/null", smollm2_path(), prompts[p], OUT, OUT))
            js = slurp(path("%s/lc.json", OUT), &len);
        float *ref = (float *)slurp(path("%s/lc.f32", OUT), NULL);
        jv root;
        char err[100];
        if (!js || !ref || json_parse(js, len, &root, err, sizeof err)) { result(0, "llama.cpp greedy", "reference failed"); free(js); free(ref); continue; }
        const jv *pr = jget(&root, "prompt"), *ids = jget(&root, "ids");
        int seq, V = 49152, tok[600], n = 0, diverged = 0;
        for (int i = 0; i < pr->n; i++) tok[n++] = (int)pr->items[i].num;
        w8a8_seq_start(m, &seq);
        w8a8_feed(m, seq, tok, n);
        for (int i = 0; i < ids->n; i++) {
            const float *lg, *rl = ref + (size_t)i * V;
            w8a8_logits(m, seq, &lg);
            int a = argmax(lg, V), b = (int)ids->items[i].num;
            float r2 = -1e30f;   /* llama.cpp's runner-up */
            for (int v = 0; v < V; v++) { md = fmax(md, fabs(lg[v] - rl[v])); ma = fmax(ma, fabs(rl[v])); if (v != b && rl[v] > r2) r2 = rl[v]; }
            steps++;
            agree += a == b;
            if (a != b) { diverged = 1; near_tie &= rl[b] - r2 < 0.5f; }
            if (!diverged) free_run++;
            w8a8_feed(m, seq, &b, 1);
        }
        w8a8_seq_end(m, seq);
        jv_free(&root); free(js); free(ref);
    }
    /* llama.cpp multiplies Q4_1 weights by activations it rounds to 8 bits (Q8_1); ours are exact */
    result(steps == 96 && agree >= steps * 9 / 10 && near_tie && md <= 0.1 * ma,
           "SmolLM2 f32 vs llama.cpp (same GGUF): greedy tokens agree, logits close",
           "%d of %d teacher-forced steps pick llama.cpp's token (%d before the first difference); every difference is a near tie (gap < 0.5); max |logit diff| %.3f = %.1e x max |logit| %.1f (bound 0.1x)",
           agree, steps, free_run, md, md / ma, ma);
    w8a8_close(m);
}

#include "test_gpu.c"

int main(int argc, char **argv) {
    const char *env = getenv("W8A8_SHARED");
    snprintf(SH, sizeof SH, "%s", env ? env : "../shared");
    mkdir(OUT, 0755);
    /* arguments: the groups to run (all when none) */
    double t0 = now();
    if (!exists(path("%s/models/stories260K/stories260K.bin", SH))) {
        /* every test reads it: stop here rather than run them all against missing files */
        printf("FAIL shared data: %s/models/stories260K is missing (clone with ../shared beside the repository, or set W8A8_SHARED)\n", SH);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    struct { const char *name; void (*fn)(void); } tests[] = {
        {"fp8", test_fp8}, {"golden", test_golden}, {"hf", test_hf_equals_l2c}, {"hfref", test_hf_reference},
        {"656k", test_656k_coherent}, {"tokenizers", test_tokenizers}, {"quant", test_quantized_forward},
        {"ppl", test_perplexity}, {"bad", test_bad_files}, {"batch", test_batch}, {"sampling", test_sampling},
        {"misuse", test_api_misuse}, {"cli", test_cli}, {"example", test_example}, {"constants", test_kernel_constants}, {"nvrtc", test_nvrtc}, {"faults", test_faults}, {"nvrtc-missing", test_nvrtc_missing},
        {"calib", test_calibration}, {"fp8ckpt", test_fp8_checkpoint}, {"gguf", test_gguf}, {"gpu", test_gpu_kernels}, {"gpu-e2e", test_gpu_e2e}, {"gpu-batch", test_gpu_batch}, {"gpu-cache", test_gpu_cache}, {"gpu-faults", test_gpu_faults}, {"gpu-calib", test_gpu_calib},
    };
    /* a name runs that group; -name leaves it out of the rest (all but nvrtc-missing when none is named) */
    int named = 0;
    for (int a = 1; a < argc; a++) {
        int known = 0;
        for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) known |= !strcmp(argv[a] + (argv[a][0] == '-'), tests[i].name);
        if (!known) { printf("FAIL arguments: no test group \"%s\"\n0 passed, 1 failed\n", argv[a]); return 1; }
        named |= argv[a][0] != '-';
    }
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        int chosen = !named && strcmp(tests[i].name, "nvrtc-missing");   /* that one only when asked */
        for (int a = 1; a < argc; a++) {
            if (!strcmp(argv[a], tests[i].name)) chosen = 1;
            if (argv[a][0] == '-' && !strcmp(argv[a] + 1, tests[i].name)) chosen = 0;
        }
        if (!chosen) continue;
        tests[i].fn();
    }
    printf("(%.1f s)\n", now() - t0);
    if (n_skip) printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    else printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
