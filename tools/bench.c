/* bench — how fast w8a8 runs on this GPU, against PyTorch's kernels (cuBLASLt) measured in the same run.
 *
 *   make bench && ./bench [--dir DIR] [--json FILE] [--svg FILE] [--schemes bf16,fp8,int8] [--no-torch]
 *   ./bench --gemm-only --no-torch --config test/synth/llama-3.1-8b-4layers.json --gemm-m 4096 --gemm-types fp8
 *       (one M, one type: a quick A/B of a kernel variant, run again with W8A8_KERNELS_FILE=variant.inc)
 *
 * 1. Writes synthetic models with Llama-3.1-8B shapes (random weights; `convert --synthetic`) into DIR
 *    (default bench-models/), once.
 * 2. GEMM TFLOP/s of the four linear shapes at M = 1 ... 8192 for our fp8 / int8 / bf16 kernels, and the same
 *    shapes through tools/bench_torch.py (torch._scaled_mm with row-wise scales, torch._int_mm, bf16 matmul),
 *    which runs beside us on the same bytes: a cell is ours then PyTorch's, twice (--gemm-rounds), each side's
 *    fastest kept, so both are timed over the same stretch of the GPU's clocks.
 * 3. Copy bandwidth (cuMemcpyDtoD; read + written bytes), then per scheme: decode ms/token at batch 1 and its
 *    share of that bandwidth (bytes read per token / time), TTFT of a 2048-token prompt, throughput at batch
 *    1, 16, 64, 256 for prefill-heavy and decode-heavy runs, cold start (NVRTC) and warm start (cache).
 * Prints a table, writes JSON and an SVG plot of throughput against batch. Token ids are fixed (the weights
 * are random, so the text means nothing); decode steps pick the next tokens with w8a8_sample_greedy. */
#include "../w8a8.c"   /* the engine itself: the benchmark times its internal GEMM too */
#include "json.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>

static const char *g_dir = "bench-models";
static const char *g_config = "test/synth/llama-3.1-8b.json";   /* --config: another synthetic shape */
static int g_ttft_only;                                          /* --ttft-only: batch 1 only */
static FILE *g_json;
static int g_first_json = 1;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}
static void jsonf(const char *fmt, ...) {   /* one JSON record a line, inside a top-level array */
    va_list ap;
    va_start(ap, fmt);
    fprintf(g_json, "%s", g_first_json ? "[\n " : ",\n ");
    vfprintf(g_json, fmt, ap);
    va_end(ap);
    g_first_json = 0;
    fflush(g_json);
}

/* --- 1. the models --- */
static const char *model_path(const char *scheme) {
    static char p[8][512];
    static int k;
    char *b = p[k++ & 7];
    const char *base = strrchr(g_config, '/') ? strrchr(g_config, '/') + 1 : g_config;
    snprintf(b, 512, "%s/%.*s.%s.w8a8", g_dir, (int)strcspn(base, "."), base, scheme);
    return b;
}
static void make_model(const char *scheme, const char *tokenizer) {
    const char *p = model_path(scheme);
    if (access(p, R_OK) == 0) return;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && ./convert --synthetic %s --tokenizer %s -o %s --scheme %s --quiet",
             g_dir, g_config, tokenizer, p, scheme);
    double t0 = seconds();
    fprintf(stderr, "bench: writing %s ...\n", p);
    if (system(cmd)) die("'%s' failed", cmd);
    fprintf(stderr, "bench: %s written in %.1f s\n", p, seconds() - t0);
}

/* --- timing on the GPU --- */
typedef struct { CUevent a, b; } timer;
static void t_start(gpu_state *g, timer *t) {
    if (!t->a) { cu.EventCreate(&t->a, 0); cu.EventCreate(&t->b, 0); }
    cu.EventRecord(t->a, g->stream);
}
static double t_stop_ms(gpu_state *g, timer *t) {
    float ms = 0;
    cu.EventRecord(t->b, g->stream);
    cu.EventSynchronize(t->b);
    cu.EventElapsedTime(&ms, t->a, t->b);
    return ms;
}

/* --- 2. GEMM --- */
static const int SHAPES[4][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}};
static const char *SHAPE_NAMES[4] = {"qkv", "o", "gate+up", "down"};
static const int MS[] = {1, 16, 64, 256, 1024, 2048, 4096, 8192};
#define N_MS (int)(sizeof MS / sizeof *MS)
static const char *TYPES[3] = {"bf16", "fp8", "int8"};
static int g_compare_mma;
static int g_gemm_m, g_gemm_types = 7;   /* --gemm-m M,...: only those M (bits of MS); --gemm-types T,...: those types (A/Bs of kernel variants) */
static int g_gemm_rounds = 2;            /* --gemm-rounds R: ours and PyTorch's in turn, R times a cell */
static int type_wanted(int type) { return g_gemm_types >> type & 1; }
static int m_wanted(int mi) { return !g_gemm_m || (g_gemm_m >> mi & 1); }
static int gemm_cell(int type, int mi) { return type_wanted(type) && m_wanted(mi); }
static double ours[3][4][N_MS], theirs[3][4][N_MS], mma_sync[3][4][N_MS];   /* mma_sync: the sm_80 tiles, on Hopper too */

/* The operands: element i of a matrix (row-major, A as M x K, W as N x K) comes from a hash of i and the matrix's
 * salt; tools/bench_torch.py builds the same bytes from the same hash, so both sides multiply identical data (an
 * H100 under full tensor-core load lowers its clocks by the power its operands' bits cost). bf16: +-[2^-7, 2^-5),
 * e4m3: exponent field < 7 (never NaN), s8: any byte. */
enum { SALT_A = 0x1234567, SALT_W = 0x7654321 };
static uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
    return x;
}
static void fill(unsigned char *p, size_t elems, int type, uint32_t salt) {
    for (size_t i = 0; i < elems; i++) {
        uint32_t h = mix32((uint32_t)i ^ salt);
        if (type == 0) { p[2 * i] = (unsigned char)h; p[2 * i + 1] = (unsigned char)(0x3c | (h >> 8 & 0x80)); }   /* 0x3c00 | (h & 0x80ff) */
        else p[i] = (unsigned char)(type == 1 ? h & 0xb7 : h);
    }
}

/* The PyTorch reference: tools/bench_torch.py as a second process on the same GPU, asked for each cell right after
 * we time ours, so that both kernels of a cell run at the same clocks and temperature. */
static FILE *g_torch_req, *g_torch_ans;   /* our requests to it, its answers (one JSON line each) */
static pid_t g_torch_pid;

static void torch_stop(void) {
    if (g_torch_req) fclose(g_torch_req);   /* its input ends: it exits */
    if (g_torch_ans) fclose(g_torch_ans);
    if (g_torch_pid > 0) waitpid(g_torch_pid, NULL, 0);
    g_torch_req = g_torch_ans = NULL;
    g_torch_pid = 0;
}
/* One request, one answer; the answer's number at key, or -1 (and the reference stopped) where there is none. */
static double torch_ask(const char *key, const char *fmt, ...) {
    if (!g_torch_req) return -1;
    char req[256], line[4096], err[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req, sizeof req, fmt, ap);
    va_end(ap);
    if (fprintf(g_torch_req, "%s\n", req) < 0 || fflush(g_torch_req) || !fgets(line, sizeof line, g_torch_ans)) {
        fprintf(stderr, "bench: the PyTorch reference stopped answering; its columns stay empty\n");
        torch_stop();
        return -1;
    }
    jv root;
    if (json_parse(line, strlen(line), &root, err, sizeof err)) { fprintf(stderr, "bench: PyTorch's answer to '%s': %s\n", req, err); return -1; }
    const jv *v = jget(&root, key), *e = jget(&root, "error");
    double x = v && v->type == J_NUM ? v->num : -1;
    if (e && e->type == J_STR) fprintf(stderr, "bench: PyTorch could not run '%s': %s\n", req, e->str);
    jv_free(&root);
    return x;
}
static void torch_start(void) {
    int req[2], ans[2];
    if (pipe(req) || pipe(ans)) { perror("bench: pipe"); return; }
    fprintf(stderr, "bench: the PyTorch reference (python3 tools/bench_torch.py, beside us) ...\n");
    if ((g_torch_pid = fork()) == 0) {
        dup2(req[0], 0);
        dup2(ans[1], 1);
        close(req[0]); close(req[1]); close(ans[0]); close(ans[1]);
        execlp("python3", "python3", "tools/bench_torch.py", (char *)NULL);
        _exit(127);
    }
    close(req[0]);
    close(ans[1]);
    if (g_torch_pid < 0) { perror("bench: fork"); close(req[1]); close(ans[0]); g_torch_pid = 0; return; }
    g_torch_req = fdopen(req[1], "w");
    g_torch_ans = fdopen(ans[0], "r");
    char line[1024], err[200];
    jv root;
    if (!fgets(line, sizeof line, g_torch_ans) || json_parse(line, strlen(line), &root, err, sizeof err)) {
        fprintf(stderr, "bench: the PyTorch reference did not start (no torch with CUDA here?); its columns stay empty\n");
        torch_stop();
        return;
    }
    const jv *tv = jget(&root, "torch");
    jsonf("{\"kind\": \"torch\", \"version\": \"%s\"}", tv && tv->type == J_STR ? tv->str : "?");
    jv_free(&root);
}

static void bench_gemm(gpu_state *g) {
    size_t nA = (size_t)8192 * 14336, nW = (size_t)28672 * 4096, maxO = (size_t)8192 * 28672 * 2;   /* the largest A and W, in values */
    CUdeviceptr A, W, O, sa, sw;
    if (gpu_alloc(g, &A, 2 * nA, "bench A") || gpu_alloc(g, &W, 2 * nW, "bench W") || gpu_alloc(g, &O, maxO, "bench out") ||
        gpu_alloc(g, &sa, 4 * 8192, "scales") || gpu_alloc(g, &sw, 4 * 28672, "scales"))
        die("%s", w8a8_error());
    unsigned char *h = malloc(2 * (nA > nW ? nA : nW));
    float *ones = malloc(4 * 28672);
    for (int i = 0; i < 28672; i++) ones[i] = 1.0f / 64;
    cu.MemcpyHtoD(sa, ones, 4 * 8192);
    cu.MemcpyHtoD(sw, ones, 4 * 28672);
    timer t = {0};
    for (int type = 0; type < 3; type++) {
        if (!type_wanted(type)) continue;
        int fn = type == 0 ? F_GEMM_BF16 : type == 1 ? F_GEMM_E4M3 : F_GEMM_S8;
        size_t es = type == 0 ? 2 : 1;
        fill(h, nA, type, SALT_A);
        cu.MemcpyHtoD(A, h, nA * es);
        fill(h, nW, type, SALT_W);
        cu.MemcpyHtoD(W, h, nW * es);
        for (int s = 0; s < 4; s++)
            for (int mi = 0; mi < N_MS; mi++) {
                if (!gemm_cell(type, mi)) continue;
                int N = SHAPES[s][0], K = SHAPES[s][1], M = MS[mi];
                glinear l = {.w = W, .scale = type ? sw : 0, .N = N, .K = K, .Kp = K};
                int hopper = g->wgmma;
                /* ours then PyTorch's, g_gemm_rounds times; each side's fastest round: the two see the same run of clocks */
                for (int round = 0; round < g_gemm_rounds; round++) {
                    for (int pass = 0; pass < (g_compare_mma && hopper && M > GEMV_MAX_M && !round ? 2 : 1); pass++) {   /* --compare-mma: the mma.sync tiles too */
                        g->wgmma = pass ? 0 : hopper;
                        gpu_gemm(g, fn, A, sa, &l, M, 0, O, N);   /* warm up */
                        int reps = 1;
                        double ms;
                        for (;;) {
                            t_start(g, &t);
                            for (int r = 0; r < reps; r++) gpu_gemm(g, fn, A, sa, &l, M, 0, O, N);
                            ms = t_stop_ms(g, &t);
                            if (ms >= 30 || reps >= 4096) break;
                            reps *= 2;
                        }
                        if (gpu_sync(g)) die("%s", w8a8_error());
                        double *cell = &(pass ? mma_sync : ours)[type][s][mi], tf = 2.0 * M * N * K / (ms / reps * 1e-3) / 1e12;
                        if (tf > *cell) *cell = tf;
                    }
                    double tf = torch_ask("tflops", "gemm %s %d %d %d", TYPES[type], N, K, M);
                    if (!round || tf > theirs[type][s][mi]) theirs[type][s][mi] = tf;
                }
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                fprintf(stderr, "bench: %lld.%03ld %s %s M=%d: ours %.1f, PyTorch %.1f TFLOP/s\n", (long long)now.tv_sec, now.tv_nsec / 1000000, TYPES[type], SHAPE_NAMES[s], M,
                        ours[type][s][mi], theirs[type][s][mi]);   /* progress, and a time to set beside the GPU's clock log */
                g->wgmma = hopper;
            }
    }
    free(h); free(ones);
}

/* --- 3. the model: start, decode, TTFT, throughput --- */
static w8a8_model *open_model(const char *scheme, int batch, int ctx, double *secs) {
    w8a8_options o = w8a8_default_options();
    o.require_gpu = 1;
    o.max_batch = batch;
    o.max_context = ctx;
    w8a8_model *m = NULL;
    double t0 = seconds();
    if (w8a8_open(&m, model_path(scheme), &o)) die("%s: %s", model_path(scheme), w8a8_error());
    if (secs) *secs = seconds() - t0;
    return m;
}

/* Weights and cache a decode step reads for one token at position p: every linear and the LM head, and K/V. */
static double bytes_per_token(w8a8_model *m, int p) {
    const w8a8_config *c = &m->cfg;
    double b = 0;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const glayer *L = &m->gpu->layers[l];
        const glinear *ls[4] = {&L->qkv, &L->o, &L->w13, &L->w2};
        for (int k = 0; k < 4; k++) b += (double)ls[k]->N * ls[k]->Kp * w8a8_dtype_size(m->layers[l].qkv.dtype) + (ls[k]->scale ? 4.0 * ls[k]->N : 0);
    }
    b += (double)c->vocab_size * m->gpu->Dp * 2;
    b += 2.0 * c->n_layers * (p + 1) * c->n_kv_heads * c->head_dim * m->gpu->kv_es;
    return b;
}

typedef struct { double prefill_s, decode_s; int in, out, batch; } run_result;
/* batch sequences: their prompts of `in` tokens fed together (w8a8_feed_batch), then `out` batched decode steps */
static run_result run(w8a8_model *m, int batch, int in, int out) {
    run_result r = {0, 0, in, out, batch};
    int *seqs = malloc(sizeof(int) * batch), *tok = malloc(sizeof(int) * batch), *prompt = malloc(sizeof(int) * in), *ns = malloc(sizeof(int) * batch);
    const int **ids = malloc(sizeof(int *) * batch);
    for (int i = 0; i < in; i++) prompt[i] = 1000 + (i * 7919) % 100000;
    for (int b = 0; b < batch; b++) { if (w8a8_seq_start(m, &seqs[b])) die("%s", w8a8_error()); ids[b] = prompt; ns[b] = in; }
    double t0 = seconds();
    if (w8a8_feed_batch(m, batch, seqs, ids, ns)) die("%s", w8a8_error());
    if (w8a8_sample_greedy(m, batch, seqs, tok)) die("%s", w8a8_error());
    double t1 = seconds();
    for (int s = 1; s < out; s++)
        if (w8a8_step(m, batch, seqs, tok) || w8a8_sample_greedy(m, batch, seqs, tok)) die("%s", w8a8_error());
    double t2 = seconds();
    r.prefill_s = t1 - t0;
    r.decode_s = t2 - t1;
    for (int b = 0; b < batch; b++) w8a8_seq_end(m, seqs[b]);
    free(seqs); free(tok); free(prompt); free(ns); free(ids);
    return r;
}

static double g_copy_ours;

static void bench_scheme(const char *scheme, double tput[2][4], double *decode_ms, double *share, double *ttft) {
    double open_s;
    /* batch 1: TTFT of 2048 tokens, decode ms/token */
    w8a8_model *m = open_model(scheme, 1, 2048 + 256, &open_s);
    run(m, 1, 2048, 8);   /* warm up: the decode graph for these positions is captured (graphs grow with the position) */
    run_result a = run(m, 1, 2048, 129);
    *ttft = a.prefill_s;
    *decode_ms = a.decode_s / 128 * 1e3;
    double bpt = bytes_per_token(m, 2048 + 64);
    *share = bpt / (*decode_ms * 1e-3) / 1e9 / g_copy_ours;
    jsonf("{\"kind\": \"decode\", \"scheme\": \"%s\", \"ttft_2048_s\": %.4f, \"decode_ms_per_token\": %.4f, \"bytes_per_token\": %.0f, "
          "\"bandwidth_gbs\": %.1f, \"share_of_copy_bandwidth\": %.4f, \"open_s\": %.2f}",
          scheme, *ttft, *decode_ms, bpt, bpt / (*decode_ms * 1e-3) / 1e9, *share, open_s);
    fprintf(stderr, "bench: %s: TTFT(2048) %.3f s, decode %.3f ms/token (%.0f GB/s, %.0f %% of copy bandwidth)\n", scheme, *ttft,
            *decode_ms, bpt / (*decode_ms * 1e-3) / 1e9, 100 * *share);
    w8a8_close(m);
    if (g_ttft_only) return;
    /* throughput: prefill-heavy (2048 in / 128 out) and decode-heavy (128 in / 2048 out), shortened where the
     * KV cache or the time would not fit (the JSON says what ran) */
    const int batches[4] = {1, 16, 64, 256};
    for (int bi = 0; bi < 4; bi++) {
        int B = batches[bi];
        int pin = B <= 16 ? 2048 : B == 64 ? 512 : 128, pout = 128, din = 128, dout = B <= 16 ? 512 : 256;
        int ctx = (pin + pout > din + dout ? pin + pout : din + dout) + 8;
        m = open_model(scheme, B, ctx, NULL);
        run(m, B, 16, 4);
        run_result p = run(m, B, pin, pout), d = run(m, B, din, dout);
        double pt = (double)B * (pin + pout) / (p.prefill_s + p.decode_s), dt = (double)B * (din + dout) / (d.prefill_s + d.decode_s);
        double pto = (double)B * pout / (p.prefill_s + p.decode_s), dto = (double)B * dout / (d.prefill_s + d.decode_s);
        tput[0][bi] = pt;
        tput[1][bi] = dt;
        jsonf("{\"kind\": \"throughput\", \"scheme\": \"%s\", \"batch\": %d, \"prefill_heavy\": {\"in\": %d, \"out\": %d, \"tok_s\": %.1f, "
              "\"out_tok_s\": %.1f, \"prefill_s\": %.3f, \"decode_s\": %.3f}, \"decode_heavy\": {\"in\": %d, \"out\": %d, \"tok_s\": %.1f, "
              "\"out_tok_s\": %.1f, \"prefill_s\": %.3f, \"decode_s\": %.3f}}",
              scheme, B, pin, pout, pt, pto, p.prefill_s, p.decode_s, din, dout, dt, dto, d.prefill_s, d.decode_s);
        fprintf(stderr, "bench: %s batch %d: %d/%d %.0f tok/s (%.0f out), %d/%d %.0f tok/s (%.0f out)\n", scheme, B, pin, pout, pt, pto,
                din, dout, dt, dto);
        w8a8_close(m);
    }
}

static void svg_plot(const char *path, const char **schemes, int ns, double tput[][2][4]) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    const char *col[3] = {"#1f77b4", "#d62728", "#2ca02c"};
    double ymax = 1;
    for (int s = 0; s < ns; s++) for (int w = 0; w < 2; w++) for (int b = 0; b < 4; b++) ymax = fmax(ymax, tput[s][w][b]);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='640' height='400' font-family='sans-serif' font-size='12'>\n"
               "<rect width='640' height='400' fill='white'/><text x='320' y='20' text-anchor='middle'>w8a8 throughput (tok/s, in+out) vs batch, "
               "Llama-3.1-8B shapes</text>\n<line x1='60' y1='350' x2='600' y2='350' stroke='black'/><line x1='60' y1='40' x2='60' y2='350' stroke='black'/>\n");
    const int batches[4] = {1, 16, 64, 256};
    for (int b = 0; b < 4; b++) fprintf(f, "<text x='%d' y='368' text-anchor='middle'>%d</text>\n", 60 + 180 * b, batches[b]);
    for (int y = 0; y <= 4; y++) fprintf(f, "<text x='55' y='%d' text-anchor='end'>%.0f</text>\n", 354 - 77 * y, ymax * y / 4);
    for (int s = 0; s < ns; s++)
        for (int w = 0; w < 2; w++) {
            fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' %s points='", col[s % 3], w ? "stroke-dasharray='6,4'" : "");
            for (int b = 0; b < 4; b++) fprintf(f, "%.1f,%.1f ", 60.0 + 180 * b, 350 - 308 * tput[s][w][b] / ymax);
            fprintf(f, "'/>\n<text x='610' y='%.1f' fill='%s'>%s %s</text>\n", 350 - 308 * tput[s][w][3] / ymax - 4, col[s % 3], schemes[s],
                    w ? "decode" : "prefill");
        }
    fprintf(f, "<text x='320' y='392' text-anchor='middle'>batch (solid: prefill-heavy, dashed: decode-heavy)</text></svg>\n");
    fclose(f);
}

int main(int argc, char **argv) {
    const char *json_path = NULL, *svg_path = NULL, *schemes_arg = "bf16,fp8,int8";
    int torch = 1, gemm = 1, gemm_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) g_dir = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc) svg_path = argv[++i];
        else if (!strcmp(argv[i], "--schemes") && i + 1 < argc) schemes_arg = argv[++i];
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else if (!strcmp(argv[i], "--no-gemm")) gemm = 0;
        else if (!strcmp(argv[i], "--gemm-only")) gemm_only = 1;
        else if (!strcmp(argv[i], "--compare-mma")) g_compare_mma = 1;
        else if (!strcmp(argv[i], "--gemm-m") && i + 1 < argc) {
            for (char *p = argv[++i]; *p; p += *p == ',') {
                int m = (int)strtol(p, &p, 10), mi = 0;
                while (mi < N_MS && MS[mi] != m) mi++;
                if (mi == N_MS || (*p && *p != ',')) die("--gemm-m: M from the table, comma-separated (%d is not one)", m);
                g_gemm_m |= 1 << mi;
            }
        }
        else if (!strcmp(argv[i], "--gemm-rounds") && i + 1 < argc) {
            g_gemm_rounds = atoi(argv[++i]);
            if (g_gemm_rounds < 1 || g_gemm_rounds > 100) die("--gemm-rounds: 1 to 100");
        }
        else if (!strcmp(argv[i], "--gemm-types") && i + 1 < argc) {
            const char *t = argv[++i];
            g_gemm_types = (strstr(t, "bf16") ? 1 : 0) | (strstr(t, "fp8") ? 2 : 0) | (strstr(t, "int8") ? 4 : 0);
            if (!g_gemm_types) die("--gemm-types: bf16, fp8 and/or int8");
        }
        else if (!strcmp(argv[i], "--config") && i + 1 < argc) g_config = argv[++i];
        else if (!strcmp(argv[i], "--ttft-only")) { g_ttft_only = 1; gemm = 0; }
        else { fprintf(stderr, "usage: bench [--dir DIR] [--json FILE] [--svg FILE] [--schemes bf16,fp8,int8] [--no-torch] [--no-gemm]\n"
                        "             [--config SYNTHETIC_CONFIG.json] [--ttft-only] [--gemm-only]\n"
                        "             [--compare-mma] [--gemm-m M,...] [--gemm-types bf16,fp8,int8] [--gemm-rounds R]\n"); return 2; }
    }
    char jp[600], sp[600];
    if (!json_path) { snprintf(jp, sizeof jp, "%s/bench.json", g_dir); json_path = jp; }
    if (!svg_path) { snprintf(sp, sizeof sp, "%s/bench.svg", g_dir); svg_path = sp; }
    char mk[700];
    snprintf(mk, sizeof mk, "mkdir -p %s", g_dir);
    if (system(mk)) die("cannot make %s", g_dir);
    g_json = fopen(json_path, "w");
    if (!g_json) die("cannot write %s", json_path);
    const char *shared = getenv("W8A8_SHARED");
    char tok[600];
    snprintf(tok, sizeof tok, "%s/tokenizers/llama3/tokenizer.json", shared ? shared : "../shared");
    const char *schemes[3];
    int ns = 0;
    char sbuf[64];
    snprintf(sbuf, sizeof sbuf, "%s", schemes_arg);
    for (char *t = strtok(sbuf, ","); t && ns < 3; t = strtok(NULL, ",")) schemes[ns++] = t;

    /* start-up: cold (an empty kernel cache) and warm. NVRTC keeps what it compiled in the driver's compute
     * cache (~/.nv/ComputeCache) too, which made "cold" compiles take 0.1 s after the first run on a machine;
     * with it off, cold is the first run on a fresh machine. */
    setenv("CUDA_CACHE_DISABLE", "1", 1);
    signal(SIGPIPE, SIG_IGN);   /* a PyTorch reference that dies is a failed write to it, not our end */
    char cache[] = "/tmp/w8a8-bench-cache-XXXXXX";
    if (!mkdtemp(cache)) die("mkdtemp failed");
    setenv("W8A8_CACHE", cache, 1);
    if (cuda_load()) die("%s", w8a8_error());   /* before writing 40 GB of models */
    for (int i = 0; i < ns; i++) make_model(schemes[i], tok);
    double t_cold, t_warm;
    w8a8_model *m = open_model(schemes[0], 1, 256, &t_cold);
    double k_cold = m->gpu->t_kernels, w_cold = m->gpu->t_weights;
    char dev[256];
    snprintf(dev, sizeof dev, "%s", w8a8_device_name(m));
    w8a8_close(m);
    m = open_model(schemes[0], 1, 256, &t_warm);
    double k_warm = m->gpu->t_kernels, w_warm = m->gpu->t_weights;
    fprintf(stderr, "bench: %s; cold start %.2f s (NVRTC %.2f s alongside weights %.2f s), warm start %.2f s (kernels %.3f s, weights %.2f s)\n", dev,
            t_cold, k_cold, w_cold, t_warm, k_warm, w_warm);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    jsonf("{\"kind\": \"device\", \"name\": \"%s\", \"date\": \"%s\", \"cold_start_s\": %.3f, \"cold_kernels_s\": %.3f, \"cold_weights_s\": %.3f, "
          "\"warm_start_s\": %.3f, \"warm_kernels_s\": %.4f, \"warm_weights_s\": %.3f}", dev, date, t_cold, k_cold, w_cold, t_warm, k_warm, w_warm);

    /* copy bandwidth, ours */
    {
        gpu_state *g = m->gpu;
        size_t n = (size_t)1 << 30;
        CUdeviceptr a, b;
        if (gpu_alloc(g, &a, n, "copy") || gpu_alloc(g, &b, n, "copy")) die("%s", w8a8_error());
        timer t = {0};
        cu.MemcpyDtoDAsync(b, a, n, g->stream);
        t_start(g, &t);
        for (int r = 0; r < 10; r++) cu.MemcpyDtoDAsync(b, a, n, g->stream);
        double ms = t_stop_ms(g, &t);
        g_copy_ours = 2.0 * n * 10 / (ms * 1e-3) / 1e9;
        jsonf("{\"kind\": \"copy\", \"gbs\": %.1f, \"note\": \"cuMemcpyDtoD of 1 GiB, bytes read + written\"}", g_copy_ours);
        fprintf(stderr, "bench: copy bandwidth %.0f GB/s\n", g_copy_ours);
    }
    double copy_torch = -1;
    if (gemm) {   /* the GEMMs of every type: a module with all of them */
        w8a8_close(m);
        g_build_all = 1;
        m = open_model(schemes[0], 1, 256, NULL);
        if (torch) torch_start();
        bench_gemm(m->gpu);
        copy_torch = torch_ask("copy_gbs", "copy");
        torch_stop();
        g_build_all = 0;
    }
    w8a8_close(m);
    if (gemm) {
        printf("\nGEMM TFLOP/s (ours / PyTorch = ratio), %s\n", dev);
        printf("%-8s %-6s", "shape", "type");
        for (int mi = 0; mi < N_MS; mi++) printf(" %20d", MS[mi]);
        printf("\n");
        for (int s = 0; s < 4; s++)
            for (int type = 0; type < 3; type++) {
                if (!type_wanted(type)) continue;
                printf("%-8s %-6s", SHAPE_NAMES[s], TYPES[type]);
                for (int mi = 0; mi < N_MS; mi++) {
                    double o = ours[type][s][mi], r = theirs[type][s][mi];
                    char cell[64];
                    if (!gemm_cell(type, mi)) { printf(" %20s", "-"); continue; }
                    if (r > 0) snprintf(cell, sizeof cell, "%.0f/%.0f=%.2f", o, r, o / r);
                    else snprintf(cell, sizeof cell, "%.1f/-", o);
                    printf(" %20s", cell);
                    jsonf("{\"kind\": \"gemm\", \"shape\": \"%s\", \"N\": %d, \"K\": %d, \"M\": %d, \"type\": \"%s\", \"tflops\": %.2f, \"torch_tflops\": %.2f, "
                          "\"ratio\": %.3f, \"mma_sync_tflops\": %.2f}", SHAPE_NAMES[s], SHAPES[s][0], SHAPES[s][1], MS[mi], TYPES[type], o,
                          r > 0 ? r : -1.0, r > 0 ? o / r : -1.0, mma_sync[type][s][mi]);
                }
                printf("\n");
                double measured = 0;   /* the mma.sync tiles ran (--compare-mma on Hopper) */
                for (int mi = 0; mi < N_MS; mi++) measured += mma_sync[type][s][mi];
                if (measured > 0) {
                    printf("%-8s %-6s", "", "mma");
                    for (int mi = 0; mi < N_MS; mi++) printf(" %20.0f", mma_sync[type][s][mi]);
                    printf("\n");
                }
            }
    }
    printf("\ncopy bandwidth: %.0f GB/s (cuMemcpyDtoD)%s", g_copy_ours, copy_torch > 0 ? "" : "\n");
    if (copy_torch > 0) printf(", %.0f GB/s (PyTorch copy_)\n", copy_torch);
    printf("start: cold %.2f s (NVRTC %.2f s on a thread alongside the weights' %.2f s), warm %.2f s (kernels from cache %.3f s + weights %.2f s)\n\n", t_cold, k_cold,
           w_cold, t_warm, k_warm, w_warm);
    if (gemm_only) { fprintf(g_json, "\n]\n"); fclose(g_json); return 0; }
    double tput[3][2][4] = {{{0}}}, dec[3], share[3], ttft[3];
    for (int i = 0; i < ns; i++) bench_scheme(schemes[i], tput[i], &dec[i], &share[i], &ttft[i]);
    printf("%-6s %10s %12s %8s | %s\n", "scheme", "TTFT 2048", "decode ms/t", "of copy", "tok/s (in+out) at batch 1 / 16 / 64 / 256: prefill-heavy ; decode-heavy");
    for (int i = 0; i < ns; i++)
        printf("%-6s %9.3fs %12.3f %7.0f%% | %.0f / %.0f / %.0f / %.0f ; %.0f / %.0f / %.0f / %.0f\n", schemes[i], ttft[i], dec[i], 100 * share[i],
               tput[i][0][0], tput[i][0][1], tput[i][0][2], tput[i][0][3], tput[i][1][0], tput[i][1][1], tput[i][1][2], tput[i][1][3]);
    printf("(prefill-heavy: 2048 in / 128 out at batch 1 and 16, 512 in at 64, 128 in at 256; decode-heavy: 128 in / 512 out at\n"
           " batch 1 and 16, 256 out at 64 and 256: shortened from 2048 to fit the device time)\n");
    fprintf(g_json, "\n]\n");
    fclose(g_json);
    svg_plot(svg_path, schemes, ns, tput);
    fprintf(stderr, "bench: wrote %s and %s\n", json_path, svg_path);
    char rm[700];
    snprintf(rm, sizeof rm, "rm -rf %s", cache);
    if (system(rm)) {}
    return 0;
}
