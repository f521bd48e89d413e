/* GPU tests (included by test_main.c, which includes w8a8.c): every kernel against its CPU twin on fresh
 * random inputs (never zeros) with outputs poisoned first; the whole model GPU against CPU; batches; the
 * kernel cache. Each skips, saying why, where there is no GPU. */

static char gpu_skip_why[1100];
static int gpu_broke;   /* the driver sees a GPU, but the engine did not start on it: a failure, not a skip */

static w8a8_model *open_gpu_exact(const char *p, int batch, int exact_fp8) {
    w8a8_options o = w8a8_default_options();
    o.require_gpu = 1;
    o.max_batch = batch;
    o.exact_fp8 = exact_fp8;
    w8a8_model *m = NULL;
    if (!p) { snprintf(gpu_skip_why, sizeof gpu_skip_why, "the test model is missing"); return NULL; }
    if (w8a8_open(&m, p, &o)) {
        const char *e = w8a8_error();
        /* what this machine lacks (no GPU, too old a GPU, no NVRTC) skips; anything else on a GPU is a bug */
        int lacks = cuda_load() || strstr(e, "older than") || strstr(e, "has no FP8") || strstr(e, "NVRTC not found");
        snprintf(gpu_skip_why, sizeof gpu_skip_why, "%s%s", lacks ? "no GPU: " : "", e);
        if (!lacks) gpu_broke = 1;
        return NULL;
    }
    return m;
}
static w8a8_model *open_gpu(const char *p, int batch) { return open_gpu_exact(p, batch, 0); }
static int have_gpu(void) {
    gpu_broke = 0;
    if (cuda_load()) { snprintf(gpu_skip_why, sizeof gpu_skip_why, "no GPU: %s", w8a8_error()); return 0; }
    return 1;
}
/* a test that could not open its model on the GPU: skipped where the machine lacks what it needs, failed where
 * the GPU is there and the engine broke (so a broken start cannot pass as "no GPU") */
static void gpu_skip(const char *name) {
    if (gpu_broke) result(0, name, "the GPU is there, but the engine did not start on it: %s", gpu_skip_why);
    else skip(name, gpu_skip_why);
}

static uint64_t trng = 0x853c49e6748fea9bull;
static float urand(void) {   /* uniform in [-1, 1) */
    trng = trng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((trng >> 40) / 8388608.0 - 1.0);
}
static float nrand(void) { float s = 0; for (int i = 0; i < 4; i++) s += urand(); return s * 0.866f; }

static CUdeviceptr dev_from(gpu_state *g, const void *src, size_t n) {
    CUdeviceptr p;
    if (gpu_alloc(g, &p, n, "a test buffer")) return 0;
    if (src) cu.MemcpyHtoD(p, src, n);
    else cu.MemsetD8(p, 0xff, n);   /* poison: every byte 0xff (NaN in fp32 and bf16) */
    return p;
}
static void dev_to(gpu_state *g, void *dst, CUdeviceptr p, size_t n) {
    cu.StreamSynchronize(g->stream);
    cu.MemcpyDtoH(dst, p, n);
}

/* Codes that differ: none may be more than one step apart, and at most a few may differ at all (each a
 * value on the other side of a rounding boundary because a sum was added up in another order). */
static int code_step(int mode, const void *a, const void *b, size_t i) {
    if (mode == 0) { int x = ((const uint16_t *)a)[i], y = ((const uint16_t *)b)[i]; return abs(x - y); }
    if (mode == 1) {
        int x = ((const uint8_t *)a)[i], y = ((const uint8_t *)b)[i];
        if ((x ^ y) & 0x80) return (x & 0x7f) || (y & 0x7f) ? 99 : 0;
        return abs((x & 0x7f) - (y & 0x7f));
    }
    return abs(((const int8_t *)a)[i] - ((const int8_t *)b)[i]);
}

/* The largest difference between GPU attention outputs `got` [R][nh][hd] and softmax(q k^T / sqrt(hd)) v in
 * double (bf16 q of qkv rows, the caches' values kc, vc [seq][ctx][nkv hd]), and the largest output. */
static void attention_vs_double(const uint16_t *qkv, const float *kc, const float *vc, const int *pos, const int *seq, int R, int nh,
                                int nkv, int hd, int ctx, const float *got, double *md, double *ma) {
    int qkvd = (nh + 2 * nkv) * hd, kvd = nkv * hd;
    *md = *ma = 0;
    for (int r = 0; r < R; r++)
        for (int h = 0; h < nh; h++) {
            int kvh = h / (nh / nkv);
            double *att = malloc(sizeof(double) * (pos[r] + 1)), mx = -1e300, sum = 0;
            for (int t = 0; t <= pos[r]; t++) {
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)w8a8_bf16_to_float(qkv[r * qkvd + h * hd + i]) * kc[((size_t)seq[r] * ctx + t) * kvd + kvh * hd + i];
                att[t] = s / sqrt(hd);
                mx = fmax(mx, att[t]);
            }
            for (int t = 0; t <= pos[r]; t++) sum += att[t] = exp(att[t] - mx);
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int t = 0; t <= pos[r]; t++) o += att[t] / sum * vc[((size_t)seq[r] * ctx + t) * kvd + kvh * hd + i];
                float gv = got[(r * nh + h) * hd + i];
                *md = isnan(gv) ? 1e9 : fmax(*md, fabs(gv - o));
                *ma = fmax(*ma, fabs(o));
            }
            free(att);
        }
}

static void test_gpu_kernels(void) {
    if (!have_gpu()) { gpu_skip("GPU kernels vs CPU reference"); return; }
    g_build_all = 1;   /* every type's kernels, whatever the model's scheme */
    w8a8_model *m = open_gpu(model("tinystories-656k", "fp8"), 1);
    g_build_all = 0;
    if (!m) { gpu_skip("GPU kernels vs CPU reference"); return; }
    gpu_state *g = m->gpu;
    const char *mode_name[] = {"bf16", "fp8", "int8"};
    int fp8 = g->cc >= 89;

    /* RMSNorm + quantization, three modes */
    for (int mode = 0; mode < 3; mode++) for (int wide = 0; wide < 2; wide++) {
        if (mode == 1 && !fp8) continue;
        int R = 37, D = wide ? 17000 : 1000, Dp = wide ? 17024 : 1024, es = mode ? 1 : 2;   /* 17000: past the 4096 a row kept in registers */
        float *x = malloc(sizeof(float) * R * D), *w = malloc(sizeof(float) * D), *xn = malloc(sizeof(float) * R * D), *q = malloc(sizeof(float) * R * D), *s = malloc(sizeof(float) * R), gs[64];
        for (int i = 0; i < R * D; i++) x[i] = nrand() * (i % 97 == 0 ? 20 : 1);   /* with outliers */
        for (int i = 0; i < D; i++) w[i] = 1 + 0.3f * urand();
        CUdeviceptr dx = dev_from(g, x, sizeof(float) * R * D), dw = dev_from(g, w, sizeof(float) * D), dout = dev_from(g, NULL, (size_t)R * Dp * es), ds = dev_from(g, NULL, sizeof(float) * R), null = 0;
        float eps = 1e-5f, st = 0;
        void *args[] = {&dx, &null, &dw, &eps, &D, &Dp, &mode, &st, &dout, &ds};
        launch(g, F_RMSNORM, R, 1, 1, NORM_BLOCK, args);
        unsigned char *got = malloc((size_t)R * Dp * es), *want = malloc((size_t)R * Dp * es);
        dev_to(g, got, dout, (size_t)R * Dp * es);
        dev_to(g, gs, ds, sizeof(float) * R);
        for (int exact = 0; exact < 2; exact++) {   /* against llama2.c's RMSNorm; against the GPU's summation order, bit for bit */
            for (int r = 0; r < R; r++) (exact ? rmsnorm_gpu_order : rmsnorm)(xn + r * D, x + r * D, w, D, eps);
            quantize_rows(mode == 0 ? W8A8_BF16 : mode == 1 ? W8A8_FP8 : W8A8_INT8, 0, xn, R, D, q, s);
            int diff = 0, far = 0, pad = 0;
            double sdiff = 0;
            for (int r = 0; r < R; r++) {
                for (int j = 0; j < Dp; j++) {
                    size_t i = (size_t)r * Dp + j;
                    float v = j < D ? q[r * D + j] : 0;
                    if (mode == 0) ((uint16_t *)want)[i] = w8a8_bf16_from_float(v);
                    else if (mode == 1) want[i] = j < D ? w8a8_fp8_from_float(xn[r * D + j] / s[r]) : 0;
                    else ((int8_t *)want)[i] = (int8_t)v;
                    int st_ = code_step(mode, got, want, i);
                    diff += st_ != 0; far += st_ > 1; pad += j >= D && st_ != 0;
                }
                if (mode) sdiff = fmax(sdiff, fabs(gs[r] / s[r] - 1));
            }
            if (exact)
                result(diff == 0 && sdiff == 0, path("GPU rmsnorm_quant (%s, rows of %d) == CPU RMSNorm in the GPU's order + quantize_rows, bit for bit", mode_name[mode], D),
                       "%d codes differ, scales within %.1e", diff, sdiff);
            else
                result(far == 0 && pad == 0 && diff <= R * D / 200 && sdiff < 1e-5, path("GPU rmsnorm_quant (%s) == CPU rmsnorm + quantize_rows", mode_name[mode]),
                       "%d x %d: %d codes one step off (bound %d), scales within %.1e", R, D, diff, R * D / 200, sdiff);
        }
        free(x); free(w); free(xn); free(q); free(s); free(got); free(want);
    }

    /* GEMM, each kernel family and type, ragged shapes, three epilogues: the mma.sync tiles (sm_80 and later),
     * the decode gemv (M <= 4) and, on Hopper, the wgmma kernel (at every M, 128- and 256-column tiles, blocks in
     * pairs or not, K split over blocks or not, up to 64 rows with the operands swapped: all but the last two
     * shapes have too few tiles to fill the GPU), and the unswapped wgmma tiles at those few rows too; FP8 also on
     * its 192-column tile (one accumulator a warpgroup) at every M, which must give the 128-column tile's bits (here
     * the 128 tile's K splits, where it splits, are one step each: a split of several steps adds its steps' sums
     * in another order, so a split tile's bits differ from an unsplit one's; the host never splits where it takes
     * the 192 tile, which it takes only where 128-column tiles fill two waves or more). The
     * wgmma kernel runs twice and must give the same bits: the split sums are added in a fixed order. */
    int shapes[][3] = {{1, 64, 64}, {2, 72, 960}, {4, 264, 4160}, {5, 100, 172}, {37, 300, 1500}, {64, 128, 256}, {130, 200, 320},
                       {256, 520, 1024}, {300, 256, 2048}, {24, 17000, 192}, {1100, 4200, 192}};
    int n_shapes = sizeof shapes / sizeof *shapes, keep_gemv = g->no_gemv, keep_wgmma = g->wgmma, keep_swap = g->swap, keep_tile = g->fp8_tile;
    const char *family[] = {"mma.sync", "gemv", "wgmma", "wgmma unswapped", "wgmma 192 columns"};
    for (int fam = 0; fam < 5; fam++)
    for (int type = 0; type < 3; type++) {
        if ((type == 1 && !fp8) || (fam == 4 && type != 1)) continue;
        if (fam >= 2 && !keep_wgmma) { skip(path("GPU gemm_%s (%s) == CPU", mode_name[type], family[fam]), "not a Hopper GPU (or $W8A8_NO_WGMMA=1)"); continue; }
        g->no_gemv = fam != 1;
        g->wgmma = fam >= 2;
        g->swap = fam == 2 && keep_swap;
        g->fp8_tile = fam == 4 ? 192 : keep_tile;
        int fn = type == 0 ? F_GEMM_BF16 : type == 1 ? F_GEMM_E4M3 : F_GEMM_S8, es = type == 0 ? 2 : 1, bad = 0, emu[4] = {0}, outputs = 0;
        int order_bad = 0, order_outputs = 0;   /* the gemv: its own fp32 order, bit for bit */
        double worst = 0;
        for (int sh_ = 0; sh_ < n_shapes; sh_++) {
            int M = shapes[sh_][0], N = shapes[sh_][1], K = shapes[sh_][2], Kp = round64(K);
            if ((fam == 1 && M > GEMV_MAX_M) || (fam == 3 && M > 64)) continue;
            unsigned char *A = calloc((size_t)M * Kp, es), *Wt = calloc((size_t)N * Kp, es);
            float *av = malloc(sizeof(float) * M * K), *wv = malloc(sizeof(float) * N * K), *sa = malloc(sizeof(float) * M),
                  *sw = malloc(sizeof(float) * N), *bias = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * M * N), *x0 = malloc(sizeof(float) * M * N);
            double *ref = malloc(sizeof(double) * M * N), *mags = malloc(sizeof(double) * M * N);
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < (pass ? N : M) * K; i++) {
                    int r = i / K, k = i % K;
                    unsigned char *dst = pass ? Wt : A;
                    float *val = pass ? wv : av;
                    size_t o = (size_t)r * Kp + k;
                    float v = nrand();
                    if (type == 0) { uint16_t b = w8a8_bf16_from_float(v); memcpy(dst + 2 * o, &b, 2); val[i] = w8a8_bf16_to_float(b); }
                    else if (type == 1) { uint8_t b = w8a8_fp8_from_float(v * 100); dst[o] = b; val[i] = w8a8_fp8_to_float(b); }
                    else { int8_t b = (int8_t)(urand() * 127.99f); dst[o] = (uint8_t)b; val[i] = b; }
                }
            for (int i = 0; i < M; i++) sa[i] = 0.01f + fabsf(urand());
            for (int i = 0; i < N; i++) { sw[i] = 0.01f + fabsf(urand()); bias[i] = urand(); }
            for (int i = 0; i < M * N; i++) x0[i] = urand();
            for (int r = 0; r < M; r++)
                for (int n = 0; n < N; n++) {
                    double acc = 0, mag = 0;
                    const float *ar = av + (size_t)r * K, *wr = wv + (size_t)n * K;
                    for (int k = 0; k < K; k++) { acc += (double)ar[k] * wr[k]; mag += fabs((double)ar[k] * wr[k]); }
                    ref[r * N + n] = acc;
                    mags[r * N + n] = mag;
                }
            glinear gl = {.N = N, .K = K, .Kp = Kp};
            int shape_bad = 0;
            CUdeviceptr dA = dev_from(g, A, (size_t)M * Kp * es), dsa = dev_from(g, sa, sizeof(float) * M);
            gl.w = dev_from(g, Wt, (size_t)N * Kp * es);
            gl.scale = type ? dev_from(g, sw, sizeof(float) * N) : 0;
            for (int out_mode = 0; out_mode < 3; out_mode++) {
                gl.bias = out_mode == 1 ? dev_from(g, bias, sizeof(float) * N) : 0;
                CUdeviceptr dout = out_mode == 1 ? dev_from(g, x0, sizeof(float) * M * N) : dev_from(g, NULL, sizeof(float) * M * N);
                if (gpu_gemm(g, fn, dA, dsa, &gl, M, out_mode, dout, N) || gpu_sync(g)) {
                    if (bad++ < 3) printf("  %s M%d N%d K%d: %s\n", mode_name[type], M, N, K, w8a8_error());
                    continue;
                }
                if (out_mode == 0) {
                    uint16_t *b16 = (uint16_t *)got;
                    dev_to(g, b16, dout, 2 * M * N);
                    for (int i = M * N - 1; i >= 0; i--) got[i] = w8a8_bf16_to_float(b16[i]);
                } else dev_to(g, got, dout, sizeof(float) * M * N);
                if (fam >= 2 && out_mode == 2) {
                    CUdeviceptr again = dev_from(g, NULL, sizeof(float) * M * N);
                    float *g2 = malloc(sizeof(float) * M * N);
                    if (gpu_gemm(g, fn, dA, dsa, &gl, M, out_mode, again, N) || gpu_sync(g)) bad++;
                    dev_to(g, g2, again, sizeof(float) * M * N);
                    if (memcmp(got, g2, sizeof(float) * M * N) && bad++ < 3) printf("  %s M%d N%d K%d: a second run differs\n", mode_name[type], M, N, K);
                    /* swapped or not, each output is the same sum in the same order: the same bits (so a row's
                     * logits do not depend on how many rows share its batch) */
                    if (fam == 2 && M <= 64 && keep_swap) {
                        g->swap = 0;
                        if (gpu_gemm(g, fn, dA, dsa, &gl, M, out_mode, again, N) || gpu_sync(g)) bad++;
                        g->swap = keep_swap;
                        dev_to(g, g2, again, sizeof(float) * M * N);
                        if (memcmp(got, g2, sizeof(float) * M * N) && bad++ < 3) printf("  %s M%d N%d K%d: swapped and unswapped differ\n", mode_name[type], M, N, K);
                    }
                    if (fam == 4) {   /* each output the same sums in the same order as on the 128-column tile */
                        g->fp8_tile = 128;
                        if (gpu_gemm(g, fn, dA, dsa, &gl, M, out_mode, again, N) || gpu_sync(g)) bad++;
                        g->fp8_tile = 192;
                        dev_to(g, g2, again, sizeof(float) * M * N);
                        if (memcmp(got, g2, sizeof(float) * M * N) && bad++ < 3) printf("  %s M%d N%d K%d: 192- and 128-column tiles differ\n", mode_name[type], M, N, K);
                    }
                    free(g2);
                }
                for (int r = 0; r < M; r++)
                    for (int n = 0; n < N; n++) {
                        double acc = ref[r * N + n], mag = mags[r * N + n];
                        float v = (float)acc, sc = 1;
                        if (type) { v = v * sa[r] * sw[n]; sc = sa[r] * sw[n]; }
                        if (out_mode == 1) v = x0[r * N + n] + (v + bias[n]);
                        float gv = got[r * N + n];
                        /* fp32 sums in another order: a few ulps of the sum of |products|; bf16 output adds its rounding.
                         * Hopper's FP8 wgmma adds each 32 products to the accumulator aligned to the largest term with
                         * ~14 bits kept; the kernel starts a fresh accumulator every 128 values and sums those in fp32.
                         * The worst seen over 14.6M outputs is 2.6e-4 of the sum of |products| (H100 run40; one
                         * instruction could lose up to 31 x 2^-14 of its largest product): 2^-11 */
                        double rel = type == 2 ? 0 : fam >= 2 && type == 1 ? 1.0 / 2048 : 4e-6;
                        double tol = rel * mag * sc + (out_mode == 0 ? fabs(v) / 256 : 0) + (out_mode == 1 ? 1e-6 * fabs(v) : 0);
                        double err = fabs((double)gv - v);
                        outputs++;
                        if (!(err <= tol) && bad++ < 12 && shape_bad++ < 2)   /* the first two of each shape */
                            printf("  %s M%d N%d K%d mode %d: [%d,%d] %g vs %g\n", mode_name[type], M, N, K, out_mode, r, n, gv, v);
                        if (mag > 0 && out_mode == 2) worst = fmax(worst, err / (mag * sc));
                        if (fam == 1 && type != 2 && out_mode == 2) {
                            /* the gemv's order: lane l adds the values of 16-byte chunks l, l + 32, ... (the row padded
                             * with zeros to Kp) in turn by fmaf, then the xor butterfly, then the scales. Its main
                             * loop runs only where K passes ~100 chunks (the test models never get there); a change
                             * to it must keep these bits */
                            float part[32];
                            int per_chunk = 16 / es;
                            for (int l = 0; l < 32; l++) {
                                part[l] = 0.0f;
                                for (int k0 = l * per_chunk; k0 < Kp; k0 += 32 * per_chunk)
                                    for (int k = k0; k < k0 + per_chunk; k++)
                                        part[l] = fmaf(k < K ? wv[(size_t)n * K + k] : 0.0f, k < K ? av[(size_t)r * K + k] : 0.0f, part[l]);
                            }
                            float e = butterfly32(part);
                            if (type) e = e * sa[r] * sw[n];
                            order_outputs++;
                            if (memcmp(&e, &gv, sizeof e) && order_bad++ < 3)
                                printf("  %s M%d N%d K%d: [%d,%d] %.9g, its order gives %.9g\n", mode_name[type], M, N, K, r, n, gv, e);
                        }
                        if (out_mode == 2 && type != 2 && fam != 1 && (size_t)M * N <= 200000) {   /* how does the tensor core accumulate? */
                            int kc = type == 0 ? 16 : 32;     /* K per mma instruction */
                            float rn = 0, rz = 0;
                            for (int k0 = 0; k0 < K; k0 += kc) {
                                double cs = 0;
                                for (int k = k0; k < k0 + kc && k < K; k++) cs += (double)av[r * K + k] * wv[n * K + k];
                                rn = (float)((double)rn + cs);
                                double z = (double)rz + cs;
                                float zf = (float)z;
                                if (fabs((double)zf) > fabs(z)) zf = nextafterf(zf, 0.0f);   /* toward zero */
                                rz = zf;
                            }
                            float e = (float)acc;
                            if (type) { rn = rn * sa[r] * sw[n]; rz = rz * sa[r] * sw[n]; e = e * sa[r] * sw[n]; }
                            emu[0] += gv == e; emu[1] += gv == rn; emu[2] += gv == rz; emu[3]++;
                        }
                    }
            }
            free(A); free(Wt); free(av); free(wv); free(sa); free(sw); free(bias); free(got); free(x0); free(ref); free(mags);
        }
        result(!bad, path("GPU gemm_%s (%s) == CPU at M %s, ragged N and K, bf16/add/fp32 epilogues%s", mode_name[type], family[fam],
                          fam == 1 ? "1..4" : fam == 3 ? "1..64" : "1..1100",
                          fam == 2 ? ", the same bits twice and swapped or not" : fam == 3 ? ", the same bits twice"
                                   : fam == 4 ? ", the same bits twice and as the 128-column tile" : ""),
               "%d of %d wrong; worst |err| / sum|a w| = %.1e%s", bad, outputs, worst, type == 2 ? " (int8: exact)" : "");
        if (fam == 1 && type != 2)
            result(!order_bad, path("GPU gemv_%s: each output is its lane-strided fp32 sum and butterfly, bit for bit", mode_name[type]),
                   "%d of %d differ", order_bad, order_outputs);
        if (type != 2 && fam != 1)
            printf("  accumulation: of %d outputs, %d equal the exactly-rounded sum, %d a per-instruction round-to-nearest sum, %d round-toward-zero\n",
                   emu[3], emu[0], emu[1], emu[2]);
    }
    g->no_gemv = keep_gemv;
    g->wgmma = keep_wgmma;
    g->swap = keep_swap;
    g->fp8_tile = keep_tile;

    /* FP8 on Hopper's wgmma over a long K with every product positive, where the sum only grows: the kernel must
     * keep adding its 128-value steps in fp32. Left in the tensor cores' accumulator ("fast accumulation", ~14 bits
     * kept, truncated) the sums came out 7 % low at K = 4096 and 22 % at 14336; promoted, 7.7e-4 (H100 run56).
     * K is not split over blocks here: each split starts a fresh accumulator, which would hide the loss. */
    for (int tile = 128; tile <= 192 && fp8 && keep_wgmma && !g->exact_fp8; tile += 64) {
        int M = 256, N = 256, K = 4096, keep_split = g->split_k;
        g->fp8_tile = tile;
        g->split_k = 0;
        unsigned char *A = malloc((size_t)M * K), *Wt = malloc((size_t)N * K);
        float *av = malloc(sizeof(float) * M * K), *wv = malloc(sizeof(float) * N * K), *got = malloc(sizeof(float) * M * N);
        float *ones = malloc(sizeof(float) * M);
        for (int i = 0; i < M * K; i++) { A[i] = w8a8_fp8_from_float(20 * fabsf(nrand())); av[i] = w8a8_fp8_to_float(A[i]); }
        for (int i = 0; i < N * K; i++) { Wt[i] = w8a8_fp8_from_float(20 * fabsf(nrand())); wv[i] = w8a8_fp8_to_float(Wt[i]); }
        for (int i = 0; i < M; i++) ones[i] = 1.0f;
        glinear gl = {.N = N, .K = K, .Kp = K};
        gl.w = dev_from(g, Wt, (size_t)N * K);
        gl.scale = dev_from(g, ones, sizeof(float) * N);
        CUdeviceptr dA = dev_from(g, A, (size_t)M * K), dout = dev_from(g, NULL, sizeof(float) * M * N);
        int rc = gpu_gemm(g, F_GEMM_E4M3, dA, gl.scale, &gl, M, 2, dout, N) || gpu_sync(g);
        double worst = 0;
        if (!rc) {
            dev_to(g, got, dout, sizeof(float) * M * N);
            for (int r = 0; r < M; r++)
                for (int n = 0; n < N; n++) {
                    double ref = 0;
                    for (int k = 0; k < K; k++) ref += (double)av[(size_t)r * K + k] * wv[(size_t)n * K + k];
                    worst = fmax(worst, fabs(got[r * N + n] - ref) / ref);
                }
        }
        result(!rc && worst < 2e-3, path("GPU gemm_fp8 (wgmma, %d-column tile) sums K in fp32 steps: all-positive products, K 4096, within 2e-3", tile),
               "%s worst relative error %.1e", rc ? w8a8_error() : "", worst);
        free(A); free(Wt); free(av); free(wv); free(got); free(ones);
        g->split_k = keep_split;
        g->fp8_tile = keep_tile;
    }

    /* RoPE + KV write, with and without q/k norm, and into an fp8 cache */
    for (int variant = 0; variant < 3; variant++) {
        int qkn = variant == 1, kv8 = variant == 2;
        float ks = kv8 ? 0.0123f : 0.0f, vs = kv8 ? 0.0071f : 0.0f;
        int R = 9, nh = 4, nkv = 2, hd = 64, ctx = 64, B = 3, qkvd = (nh + 2 * nkv) * hd, kvd = nkv * hd, half = hd / 2;
        uint16_t *qkv = malloc(2 * R * qkvd), *got = malloc(2 * R * qkvd), *kcg = malloc(2 * B * ctx * kvd), *vcg = malloc(2 * B * ctx * kvd);
        float *cs = malloc(sizeof(float) * ctx * half), *sn = malloc(sizeof(float) * ctx * half), qn[64], kn[64], *row = malloc(sizeof(float) * qkvd);
        int pos[9], seq[9];
        for (int i = 0; i < R * qkvd; i++) qkv[i] = w8a8_bf16_from_float(nrand());
        for (int i = 0; i < R; i++) { pos[i] = (i * 7 + 3) % ctx; seq[i] = i % B; }
        for (int i = 0; i < half; i++) for (int p = 0; p < ctx; p++) {
            float f = 1.0f / powf(500000.0f, (float)(2 * i) / hd);
            cs[p * half + i] = cosf(p * f); sn[p * half + i] = sinf(p * f);
        }
        for (int i = 0; i < hd; i++) { qn[i] = 1 + 0.2f * urand(); kn[i] = 1 + 0.2f * urand(); }
        CUdeviceptr dq = dev_from(g, qkv, 2 * R * qkvd), dp = dev_from(g, pos, sizeof pos), ds = dev_from(g, seq, sizeof seq),
                    dc = dev_from(g, cs, sizeof(float) * ctx * half), dsn = dev_from(g, sn, sizeof(float) * ctx * half),
                    dqn = qkn ? dev_from(g, qn, sizeof qn) : 0, dkn = qkn ? dev_from(g, kn, sizeof kn) : 0,
                    dkc = dev_from(g, NULL, 2 * B * ctx * kvd), dvc = dev_from(g, NULL, 2 * B * ctx * kvd);
        float eps = 1e-6f;
        void *args[] = {&dq, &dp, &ds, &dc, &dsn, &nh, &nkv, &hd, &dqn, &dkn, &eps, &dkc, &dvc, &ctx, &ks, &vs};
        launch(g, F_ROPE, R, rope_blocks_y(nh, nkv), 1, 32 * ROPE_WARPS, args);
        dev_to(g, got, dq, 2 * R * qkvd);
        dev_to(g, kcg, dkc, 2 * B * ctx * kvd);
        dev_to(g, vcg, dvc, 2 * B * ctx * kvd);
        int diff = 0, far = 0, n = 0;
        for (int r = 0; r < R; r++) {
            for (int j = 0; j < qkvd; j++) row[j] = w8a8_bf16_to_float(qkv[r * qkvd + j]);
            if (qkn) {
                for (int h = 0; h < nh; h++) rmsnorm(row + h * hd, row + h * hd, qn, hd, eps);
                for (int h = 0; h < nkv; h++) rmsnorm(row + (nh + h) * hd, row + (nh + h) * hd, kn, hd, eps);
            }
            rope_rotate(row, nh + nkv, hd, cs + pos[r] * half, sn + pos[r] * half);
            for (int j = 0; j < qkvd; j++) {
                uint16_t want = j < (nh + nkv) * hd ? w8a8_bf16_from_float(row[j]) : qkv[r * qkvd + j];
                size_t ci = ((size_t)seq[r] * ctx + pos[r]) * kvd + (j < (nh + nkv) * hd ? j - nh * hd : j - (nh + nkv) * hd);
                uint16_t have = j < nh * hd ? got[r * qkvd + j] : j < (nh + nkv) * hd ? kcg[ci] : vcg[ci];
                if (kv8 && j >= nh * hd) {   /* the cache holds e4m3(bf16 value / scale), as kv_round on the CPU */
                    want = w8a8_fp8_from_float(w8a8_bf16_to_float(want) / (j < (nh + nkv) * hd ? ks : vs));
                    have = ((const uint8_t *)(j < (nh + nkv) * hd ? kcg : vcg))[ci];
                }
                int d = abs((int)want - (int)have);
                diff += d != 0; far += d > 1; n++;
            }
        }
        /* without the norm the same fp32 operations run in the same order: bit-exact */
        result(far == 0 && (qkn ? diff <= n / 100 : diff == 0), path("GPU rope_kv%s == CPU (q rotated in place, k and v in the cache)",
                                                                     qkn ? " with q/k norm" : kv8 ? " into an fp8 cache" : ""),
               "%d of %d bf16 values one step off", diff, n);
        free(qkv); free(got); free(kcg); free(vcg); free(cs); free(sn); free(row);
    }

    /* attention over several splits, GQA, head dims 8, 64, 128 (and a bf16 cache here; fp8 caches run end to end) */
    /* gpu_open's room check for decode's shared-memory values is the driver's own refusal of a size that does
     * not fit beside the kernel's static shared memory */
    result(cu.FuncSetAttribute && cu.FuncSetAttribute(g->f[F_ATTN], CU_FUNC_MAX_DYNAMIC_SHARED, 1 << 20) != 0,
           "GPU: the driver refuses attention 1 MiB of dynamic shared memory (what gpu_open's room check relies on)", "");
    int hds[] = {8, 64, 128};
    for (int hi = 0; hi < 3; hi++) {
        /* GQA groups of 1, 6 (two blocks of query heads: 4 + 2) and 4 */
        int hd = hds[hi], nh = hi == 1 ? 12 : 8, nkv = hi == 0 ? 8 : 2, ctx = 700, B = 2, R = 5, qkvd = (nh + 2 * nkv) * hd, kvd = nkv * hd;
        int pos[5] = {0, 1, 255, 256, 699}, seq[5] = {0, 1, 1, 0, 1}, splits = 699 / ATT_CHUNK + 1;
        uint16_t *qkv = malloc(2 * R * qkvd), *kc = malloc(2 * (size_t)B * ctx * kvd), *vc = malloc(2 * (size_t)B * ctx * kvd);
        float *got = malloc(sizeof(float) * R * nh * hd);
        for (int i = 0; i < R * qkvd; i++) qkv[i] = w8a8_bf16_from_float(nrand());
        for (size_t i = 0; i < (size_t)B * ctx * kvd; i++) { kc[i] = w8a8_bf16_from_float(nrand()); vc[i] = w8a8_bf16_from_float(nrand()); }
        CUdeviceptr dq = dev_from(g, qkv, 2 * R * qkvd), dp = dev_from(g, pos, sizeof pos), ds = dev_from(g, seq, sizeof seq),
                    dk = dev_from(g, kc, 2 * (size_t)B * ctx * kvd), dv = dev_from(g, vc, 2 * (size_t)B * ctx * kvd),
                    dpo = dev_from(g, NULL, sizeof(float) * R * nh * splits * hd), dml = dev_from(g, NULL, sizeof(float) * 2 * R * nh * splits),
                    dout = dev_from(g, NULL, sizeof(float) * R * nh * hd);
        float no_scale = 0;
        int heads = ATT_HEADS, v_smem = 0;
        CUdeviceptr no_rows = 0, merge = 0, merged = 0;
        void *a1[] = {&dq, &dp, &ds, &dk, &dv, &ctx, &nh, &nkv, &hd, &no_scale, &no_scale, &dpo, &dml, &heads, &v_smem, &no_rows, &merge, &merged};
        int qd = nh * hd, bf = 0;
        float st = 0;
        CUdeviceptr dact = dev_from(g, NULL, 2 * (size_t)R * qd), dsc = dev_from(g, NULL, sizeof(float) * R);
        void *a2[] = {&dpo, &dml, &splits, &nh, &hd, &dout, &qd, &bf, &st, &dact, &dsc, &dp};
        /* as decode runs it first: ATT_DECODE_HEADS query heads a block, the chunk's values through shared memory
         * (where there is room); the same sums, so the same bits as ATT_HEADS a block reading the values directly */
        float *got1 = malloc(sizeof(float) * R * nh * hd);
        heads = ATT_DECODE_HEADS;
        v_smem = ATT_CHUNK * hd * 2;
        if (!cu.FuncSetAttribute || cu.FuncSetAttribute(g->f[F_ATTN], CU_FUNC_MAX_DYNAMIC_SHARED, v_smem)) v_smem = 0;
        launch_smem(g, F_ATTN, R, attention_blocks_y(nh, nkv, heads), splits, ATT_THREADS, v_smem, a1);
        launch(g, F_COMBINE_QUANT, R, 1, 1, COMBINE_THREADS, a2);
        dev_to(g, got1, dout, sizeof(float) * R * nh * hd);
        /* decode's fused form: the last block of a row's query heads merges the chunks itself (twice: the
         * counters are back at zero after a launch) */
        int blocks_y = attention_blocks_y(nh, nkv, heads), same_m = 0;
        merge = dev_from(g, NULL, sizeof(int) * R * blocks_y);
        merged = dev_from(g, NULL, sizeof(float) * R * nh * hd);
        cu.MemsetD8(merge, 0, sizeof(int) * R * blocks_y);
        float *gotm = malloc(sizeof(float) * R * nh * hd);
        for (int rep = 0; rep < 2; rep++) {
            cu.MemsetD8(merged, 0xff, sizeof(float) * R * nh * hd);
            launch_smem(g, F_ATTN, R, blocks_y, splits, ATT_THREADS, v_smem, a1);
            dev_to(g, gotm, merged, sizeof(float) * R * nh * hd);
            for (int i = 0; i < R * nh * hd; i++) same_m += memcmp(&gotm[i], &got1[i], sizeof(float)) == 0;
        }
        result(same_m == 2 * R * nh * hd, path("GPU attention (head dim %d): chunks merged by the last block (decode) == attention_combine_quant, bit for bit", hd),
               "%d of %d outputs identical over two launches", same_m, 2 * R * nh * hd);
        free(gotm);
        merge = merged = 0;
        heads = ATT_HEADS;
        int v_smem1 = v_smem;
        v_smem = 0;
        launch(g, F_ATTN, R, attention_blocks_y(nh, nkv, heads), splits, ATT_THREADS, a1);
        launch(g, F_COMBINE_QUANT, R, 1, 1, COMBINE_THREADS, a2);
        dev_to(g, got, dout, sizeof(float) * R * nh * hd);
        int same1 = 0;
        for (int i = 0; i < R * nh * hd; i++) same1 += memcmp(&got[i], &got1[i], sizeof(float)) == 0;
        result(same1 == R * nh * hd, path("GPU attention (head dim %d): %d query heads a block == %d a block, bit for bit", hd, ATT_DECODE_HEADS, ATT_HEADS),
               "%d of %d outputs identical (values through %d bytes of shared memory)", same1, R * nh * hd, v_smem1);
        free(got1);
        float *kf = malloc(sizeof(float) * (size_t)B * ctx * kvd), *vf = malloc(sizeof(float) * (size_t)B * ctx * kvd);
        for (size_t i = 0; i < (size_t)B * ctx * kvd; i++) { kf[i] = w8a8_bf16_to_float(kc[i]); vf[i] = w8a8_bf16_to_float(vc[i]); }
        double md = 0, ma = 0;
        attention_vs_double(qkv, kf, vf, pos, seq, R, nh, nkv, hd, ctx, got, &md, &ma);
        result(md <= 1e-5 * ma, path("GPU attention (split over the sequence, GQA, head dim %d) == double reference", hd),
               "positions up to 699 in %d splits: max |diff| %.1e (bound 1e-5 x %.2f)", splits, md, ma);
        /* and bit for bit what the CPU reference computes in the GPU's order */
        float *qf = malloc(sizeof(float) * hd), *o = malloc(sizeof(float) * hd), *scratch = malloc(sizeof(float) * ATT_SCRATCH(ctx, hd));
        int same = 0, total = 0;
        for (int r = 0; r < R; r++)
            for (int h = 0; h < nh; h++) {
                int kvh = h / (nh / nkv);
                for (int i = 0; i < hd; i++) qf[i] = w8a8_bf16_to_float(qkv[r * qkvd + h * hd + i]);
                attention_head_gpu_order(o, qf, kf + (size_t)seq[r] * ctx * kvd + kvh * hd, vf + (size_t)seq[r] * ctx * kvd + kvh * hd, kvd, pos[r], hd, scratch);
                for (int i = 0; i < hd; i++) { same += o[i] == got[(r * nh + h) * hd + i]; total++; }
            }
        result(same == total, path("GPU attention (head dim %d) == CPU reference bit for bit", hd), "%d of %d outputs identical", same, total);
        uint16_t *act = malloc(2 * (size_t)R * qd);
        dev_to(g, act, dact, 2 * (size_t)R * qd);
        int bad_q = 0;
        for (int i = 0; i < R * qd; i++) bad_q += act[i] != w8a8_bf16_from_float(got[i]);
        result(!bad_q, path("GPU attention_combine_quant (head dim %d): its bf16 row is the fp32 output rounded", hd), "%d differ", bad_q);
        free(act);
        free(qf); free(kf); free(vf); free(o); free(scratch);
        free(qkv); free(kc); free(vc); free(got);
    }

    /* prompts' attention on the tensor cores: 150 rows, the first 100 of sequence 1 at positions 200..299, then
     * 50 of sequence 0 at 0..49 (a block of rows holds both), the last 10 left to `attention`; against the double
     * reference, and each row's result the same bits when its sequence's rows run alone; bf16 and fp8 caches */
    for (int hd = 64; hd <= 128; hd += 64) for (int kv8 = 0; kv8 < 1 + fp8; kv8++) {
        if (!cu.FuncSetAttribute || cu.FuncSetAttribute(g->f[F_ATTN_TC], CU_FUNC_MAX_DYNAMIC_SHARED, TC_SMEM)) {
            skip("GPU attention_tc", "the GPU has no room for its shared memory");
            break;
        }
        int nh = 8, nkv = 2, ctx = 700, B = 2, R = 150, qkvd = (nh + 2 * nkv) * hd, kvd = nkv * hd, splits = 299 / ATT_CHUNK + 1;
        int pos[150], seq[150], flag[150];
        for (int r = 0; r < R; r++) { seq[r] = r < 100; pos[r] = r < 100 ? 200 + r : r - 100; flag[r] = r < 140; }
        size_t nkc = (size_t)B * ctx * kvd, es = kv8 ? 1 : 2;
        uint16_t *qkv = malloc(2 * R * qkvd);
        unsigned char *kc = malloc(es * nkc), *vc = malloc(es * nkc);
        float *got = malloc(sizeof(float) * R * nh * hd), *alone = malloc(sizeof(float) * R * nh * hd), *kf = malloc(sizeof(float) * nkc),
              *vf = malloc(sizeof(float) * nkc), ks = kv8 ? 0.02f : 0, vs = kv8 ? 0.03f : 0;
        for (int i = 0; i < R * qkvd; i++) qkv[i] = w8a8_bf16_from_float(nrand());
        for (size_t i = 0; i < 2 * nkc; i++) {   /* keys, then values */
            unsigned char *dst = (i < nkc ? kc : vc) + es * (i % nkc);
            float *val = (i < nkc ? kf : vf) + i % nkc, sc = i < nkc ? ks : vs;
            if (kv8) { dst[0] = w8a8_fp8_from_float(nrand() / sc); *val = w8a8_fp8_to_float(dst[0]) * sc; }
            else { uint16_t b = w8a8_bf16_from_float(nrand()); memcpy(dst, &b, 2); *val = w8a8_bf16_to_float(b); }
        }
        CUdeviceptr dq = dev_from(g, qkv, 2 * R * qkvd), dp = dev_from(g, pos, sizeof pos), ds = dev_from(g, seq, sizeof seq), df = dev_from(g, flag, sizeof flag),
                    dk = dev_from(g, kc, es * nkc), dv = dev_from(g, vc, es * nkc),
                    dpo = dev_from(g, NULL, sizeof(float) * R * nh * splits * hd), dml = dev_from(g, NULL, sizeof(float) * 2 * R * nh * splits),
                    dout = dev_from(g, NULL, sizeof(float) * R * nh * hd), dact = dev_from(g, NULL, 2 * (size_t)R * nh * hd), dsc = dev_from(g, NULL, sizeof(float) * R);
        float no_scale = 0;
        int heads = ATT_HEADS, v_smem = 0, qd = nh * hd, bf = 0;
        const char *cache = kv8 ? ", fp8 cache" : "";
        for (int pass = 0; pass < 3; pass++) {   /* all 150 rows; then sequence 1's 100 rows alone; then sequence 0's 40 */
            int off = pass == 2 ? 100 : 0, n = pass == 0 ? R : pass == 1 ? 100 : 40;
            CUdeviceptr q = dq + 2 * (size_t)off * qkvd, p = dp + sizeof(int) * off, sq = ds + sizeof(int) * off, fl = df + sizeof(int) * off;
            CUdeviceptr merge = 0, merged = 0;
            void *a1[] = {&q, &p, &sq, &dk, &dv, &ctx, &nh, &nkv, &hd, &ks, &vs, &dpo, &dml, &heads, &v_smem, &fl, &merge, &merged};
            void *a2[] = {&q, &p, &sq, &fl, &n, &dk, &dv, &ctx, &nh, &nkv, &hd, &ks, &vs, &splits, &dpo, &dml};
            void *a3[] = {&dpo, &dml, &splits, &nh, &hd, &dout, &qd, &bf, &no_scale, &dact, &dsc, &p};
            launch(g, F_ATTN, n, attention_blocks_y(nh, nkv, heads), splits, ATT_THREADS, a1);
            launch_smem(g, F_ATTN_TC, (n + TC_ROWS - 1) / TC_ROWS, nh, 1, TC_THREADS, TC_SMEM, a2);
            launch(g, F_COMBINE_QUANT, n, 1, 1, COMBINE_THREADS, a3);
            dev_to(g, pass ? alone + (size_t)off * nh * hd : got, dout, sizeof(float) * n * nh * hd);
        }
        double md = 0, ma = 0;
        attention_vs_double(qkv, kf, vf, pos, seq, R, nh, nkv, hd, ctx, got, &md, &ma);
        result(md <= 1e-5 * ma, path("GPU attention_tc (head dim %d%s, two sequences in a block, GQA) == double reference", hd, cache),
               "150 rows, 140 on the tensor cores: max |diff| %.1e (bound 1e-5 x %.2f)", md, ma);
        int same = 0;
        for (int i = 0; i < 140 * nh * hd; i++) same += memcmp(&got[i], &alone[i], sizeof(float)) == 0;
        result(same == 140 * nh * hd, path("GPU attention_tc (head dim %d%s): a row's result is the same bits with other rows beside it or not", hd, cache),
               "%d of %d identical", same, 140 * nh * hd);
        free(qkv); free(kc); free(vc); free(got); free(alone); free(kf); free(vf);
    }

    /* the quantization of attention_combine_quant (one chunk a head: its output is part_o itself) and of
     * silu_mul_quant, rows of 300 (one value a load) and 17000 (8 a load) */
    for (int mode = 0; mode < 3; mode++) for (int wide = 0; wide < 2; wide++) {
        if (mode == 1 && !fp8) continue;
        int R = 11, K = wide ? 17000 : 300, Kp = wide ? 17024 : 320, es = mode ? 1 : 2, diff = 0, far = 0, hd = 100, nh = K / hd, one = 1;
        float *in = malloc(sizeof(float) * R * K), *hv = malloc(sizeof(float) * R * K), *q = malloc(sizeof(float) * R * K), *s = malloc(sizeof(float) * R);
        float *ml = malloc(sizeof(float) * 2 * R * nh);
        uint16_t *h13 = malloc(2 * R * 2 * K);
        for (int i = 0; i < R * K; i++) in[i] = nrand() * 3;
        for (int i = 0; i < R * nh; i++) { ml[2 * i] = 0; ml[2 * i + 1] = 1; }
        for (int i = 0; i < R * 2 * K; i++) h13[i] = w8a8_bf16_from_float(nrand() * 2);
        for (int r = 0; r < R; r++) for (int j = 0; j < K; j++) {
            float gv = w8a8_bf16_to_float(h13[r * 2 * K + j]), uv = w8a8_bf16_to_float(h13[r * 2 * K + K + j]);
            hv[r * K + j] = silu(gv) * uv;
        }
        unsigned char *got = malloc((size_t)R * Kp * es), *want = malloc((size_t)R * Kp * es), *unkept = malloc((size_t)R * Kp * es);
        int kept_same = 1;
        for (int which = 0; which < 3; which++) {   /* combine; silu; silu keeping the row in shared memory */
            const float *src = which ? hv : in;
            CUdeviceptr din = which ? dev_from(g, h13, 2 * R * 2 * K) : dev_from(g, in, sizeof(float) * R * K),
                        dout = dev_from(g, NULL, (size_t)R * Kp * es), ds = dev_from(g, NULL, sizeof(float) * R),
                        dml = dev_from(g, ml, sizeof(float) * 2 * R * nh), datt = dev_from(g, NULL, sizeof(float) * R * K);
            float st = 0;
            int keep = which == 2;
            void *args[] = {&din, &K, &Kp, &mode, &st, &keep, &dout, &ds};
            CUdeviceptr no_pos = 0;   /* every chunk (one here) */
            void *cargs[] = {&din, &dml, &one, &nh, &hd, &datt, &Kp, &mode, &st, &dout, &ds, &no_pos};
            if (keep) cu.FuncSetAttribute(g->f[F_SILU], CU_FUNC_MAX_DYNAMIC_SHARED, (int)sizeof(float) * K);
            launch_smem(g, which ? F_SILU : F_COMBINE_QUANT, R, 1, 1, which ? SILU_THREADS : COMBINE_THREADS, keep ? sizeof(float) * K : 0,
                        which ? args : cargs);
            dev_to(g, got, dout, (size_t)R * Kp * es);
            if (which == 1) memcpy(unkept, got, (size_t)R * Kp * es);
            if (which == 2) { kept_same = memcmp(got, unkept, (size_t)R * Kp * es) == 0; continue; }
            quantize_rows(mode == 0 ? W8A8_BF16 : mode == 1 ? W8A8_FP8 : W8A8_INT8, 0, src, R, K, q, s);
            for (int r = 0; r < R; r++) for (int j = 0; j < Kp; j++) {
                size_t i = (size_t)r * Kp + j;
                if (mode == 0) ((uint16_t *)want)[i] = j < K ? w8a8_bf16_from_float(q[r * K + j]) : 0;
                else if (mode == 1) want[i] = j < K ? w8a8_fp8_from_float(src[r * K + j] / s[r]) : 0;
                else ((int8_t *)want)[i] = j < K ? (int8_t)q[r * K + j] : 0;
                int d = code_step(mode, got, want, i);
                diff += d != 0; far += d > 1;
                if (!which && d) far++;   /* the combine's quantization is bit-exact */
            }
        }
        /* silu uses expf on the CPU side here, whose GPU and glibc versions may differ by an ulp */
        result(far == 0 && diff <= R * K / 100, path("GPU attention_combine_quant and silu_mul_quant (%s, rows of %d) == CPU", mode_name[mode], K),
               "%d codes one step off", diff);
        result(kept_same, path("GPU silu_mul_quant (%s, rows of %d): the row kept in shared memory between its passes, the same bits", mode_name[mode], K), "");
        free(in); free(hv); free(q); free(s); free(ml); free(h13); free(got); free(want); free(unkept);
    }

    /* argmax: the first of equal maxima; rows whose length is a multiple of 4 (16-byte loads) and not; the rows
     * picked through `rows`; a maximum in the last few entries */
    {
        int Vs[2] = {50000, 50001};
        for (int k = 0; k < 2; k++) {
            int V = Vs[k], R = 3, pick[2] = {2, 0}, out[2] = {-1, -1};
            float *lg = malloc(sizeof(float) * V * R);
            for (int i = 0; i < V * R; i++) lg[i] = nrand();
            lg[31337] = 9; lg[40000] = 9;                         /* row 0: two equal maxima */
            lg[2 * V + V - 1] = 7; lg[2 * V + V - 3] = 7;         /* row 2: at the end */
            CUdeviceptr dl = dev_from(g, lg, sizeof(float) * V * R), dout = dev_from(g, NULL, sizeof(out)), none = 0;
            CUdeviceptr drows = dev_from(g, pick, sizeof(pick));
            void *args[] = {&dl, &none, &V, &dout};
            launch(g, F_ARGMAX, 1, 1, 1, 1024, args);
            dev_to(g, out, dout, sizeof(int));
            result(out[0] == 31337, path("GPU argmax_rows: the first maximum, as the CPU's argmax (rows of %d)", V), "got %d", out[0]);
            void *args2[] = {&dl, &drows, &V, &dout};
            launch(g, F_ARGMAX, 2, 1, 1, 1024, args2);
            dev_to(g, out, dout, sizeof(out));
            result(out[0] == V - 3 && out[1] == 31337, path("GPU argmax_rows: rows picked, a maximum near the end (rows of %d)", V), "got %d %d", out[0], out[1]);
            free(lg);
        }
    }
    result(gpu_sync(g) == 0, "GPU kernels: no launch or execution error", "%s", w8a8_error());
    w8a8_close(m);
}

/* the whole model: GPU against the CPU reference on the same file */
static void test_gpu_e2e(void) {
    if (!have_gpu()) { gpu_skip("GPU end to end"); return; }
    const char *names[] = {"stories260K", "tinystories-656k"};
    const char *schemes[] = {"bf16", "fp8", "int8", "fp8-static", "fp8-smooth", "int8-sq", "int8-sq-dynamic", "fp8-kvfp8", "bf16-kvfp8", "int8-sq-kvfp8",
                             "int8-rotate"};
    const double bound[] = {1e-2, 2e-2, 1e-2, 2e-2, 2e-2, 1e-2, 1e-2, 2e-2, 1e-2, 1e-2, 1e-2};
    const int n_schemes = sizeof schemes / sizeof *schemes;
    size_t len;
    char *text = slurp(path("%s/corpus/tinystories-dev.txt", SH), &len);
    if (len > 32768) text[32768] = 0;
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < n_schemes; s++) {
            const char *p = model(names[k], schemes[s]);
            /* FP8 on Hopper: the strict checks on the exact path (exact_fp8), then the default wgmma path against
             * looser bounds: its tensor cores keep ~14 bits of each 32-product sum (see the GEMM test) */
            int fp8 = !strncmp(schemes[s], "fp8", 3);
            w8a8_model *c = open_cpu(p, 1), *gm = open_gpu_exact(p, 1, fp8);
            if (!gm) { gpu_skip(path("GPU end to end %s %s", names[k], schemes[s])); w8a8_close(c); continue; }
            int fast = fp8 && gm->gpu->wgmma;
            /* the CPU reference's side, once for both GPU paths: greedy text, the last-position logits of a
             * prompt, perplexity (the calibrated variants on a shorter text to keep the CPU side quick) */
            int ids[128], n, sc, V = w8a8_config_of(c)->vocab_size, ppl_tokens = s >= 3 ? 2048 : 0;
            const float *lc;
            char *tc = generate_text(c, "", 200);
            w8a8_tokenize(c, "Once upon a time, a little boy named Tom went to the park with his dog. They", 1, ids, 128, &n);
            w8a8_seq_start(c, &sc);
            w8a8_feed(c, sc, ids, n);
            w8a8_logits(c, sc, &lc);
            float *lcpu = malloc(sizeof(float) * V);
            memcpy(lcpu, lc, sizeof(float) * V);
            w8a8_seq_end(c, sc);
            double ppl_cpu = text_ppl(c, text, 256, ppl_tokens, NULL);
            for (int pass = 0; pass < 1 + fast; pass++) {
                if (pass) { w8a8_close(gm); gm = open_gpu(p, 1); }
                const char *how = pass ? " (wgmma FP8)" : fast ? " (exact FP8)" : "";
                double lbound = pass ? 0.15 : bound[s], pbound = pass ? 2e-2 : 1e-3;
                char *tg = generate_text(gm, "", 200);
                int same = !strcmp(tc, tg), at = 0;
                while (tc[at] && tc[at] == tg[at]) at++;
                result(same, path("GPU == CPU %s %s%s: greedy 200 tokens from BOS, identical text", names[k], schemes[s], how), "%s",
                       same ? "" : path("first difference at byte %d: \"%.40s\" vs \"%.40s\"", at, tc + at, tg + at));
                int sg;
                const float *lg;
                w8a8_seq_start(gm, &sg);
                w8a8_feed(gm, sg, ids, n);
                w8a8_logits(gm, sg, &lg);
                double md = 0, ma = 0;
                for (int v = 0; v < V; v++) { md = isnan(lg[v]) ? 1e9 : fmax(md, fabs(lcpu[v] - lg[v])); ma = fmax(ma, fabs(lcpu[v])); }
                result(md <= lbound * ma, path("GPU == CPU %s %s%s: last-position logits", names[k], schemes[s], how), "%d tokens, max |diff| %.2e = %.1e x max |logit| (bound %.2g)",
                       n, md, md / ma, lbound);
                w8a8_seq_end(gm, sg);
                double ppl = text_ppl(gm, text, 256, ppl_tokens, NULL);
                result(fabs(ppl / ppl_cpu - 1) <= pbound, path("GPU == CPU %s %s%s: perplexity within %g %%", names[k], schemes[s], how, 100 * pbound),
                       "CPU %.4f, GPU %.4f (%+.3f %%)", ppl_cpu, ppl, 100 * (ppl / ppl_cpu - 1));
                free(tg);
            }
            free(tc); free(lcpu);
            w8a8_close(c); w8a8_close(gm);
        }
    free(text);

    /* prompts' attention on the tensor cores (head dim 64: the real models above have 8 and 16) against the
     * split kernel, whose sums the CPU reference follows bit for bit: a synthetic SmolLM2-135M, a 400-token prompt.
     * The bound is the bf16 one of the GPU == CPU checks above: 30 layers of random weights turn attention's
     * ~1e-6 differences into bf16 roundings that go the other way (6.5e-3 x max |logit| on the H100) */
    char *syn = path("%s/synth-smollm2.bf16.w8a8", OUT);
    if (!exists(syn)) sh("./convert --synthetic test/synth/smollm2-135m.json --tokenizer %s/tokenizers/llama2/tokenizer.bin -o %s --scheme bf16 --quiet", SH, syn);
    float *lg[2] = {NULL, NULL};
    int ids[400], tc_on = 0;
    for (int i = 0; i < 400; i++) ids[i] = 1 + (i * 7919) % 31999;
    for (int off = 0; off < 2; off++) {
        if (off) setenv("W8A8_NO_TC_ATTENTION", "1", 1);
        w8a8_model *gm = open_gpu(syn, 1);
        unsetenv("W8A8_NO_TC_ATTENTION");
        int sg, V = gm ? w8a8_config_of(gm)->vocab_size : 0;
        const float *l;
        if (!gm || w8a8_seq_start(gm, &sg) || w8a8_feed(gm, sg, ids, 400) || w8a8_logits(gm, sg, &l)) { w8a8_close(gm); break; }
        if (!off) tc_on = gm->gpu->att_tc;
        lg[off] = malloc(sizeof(float) * V);
        memcpy(lg[off], l, sizeof(float) * V);
        double md = 0, ma = 0;
        if (off) for (int v = 0; v < V; v++) { md = isnan(lg[0][v]) ? 1e9 : fmax(md, fabs(lg[0][v] - lg[1][v])); ma = fmax(ma, fabs(lg[1][v])); }
        if (off) result(tc_on && md <= 1e-2 * ma, "GPU attention on the tensor cores == the split kernel: last-position logits of a 400-token prompt (synthetic SmolLM2, bf16)",
                        "tensor cores %s; max |diff| %.2e = %.1e x max |logit| (bound 1e-2)", tc_on ? "on" : "OFF", md, md / ma);
        w8a8_close(gm);
    }
    if (!lg[1]) result(0, "GPU attention on the tensor cores: a 400-token prompt", "%s", w8a8_error());
    free(lg[0]); free(lg[1]);
}

/* Calibration on the GPU (bf16 model) == on the CPU reference of the same bf16 model, and convert --calib
 * uses the GPU where there is one. */
static void test_gpu_calib(void) {
    if (!have_gpu()) { gpu_skip("GPU calibration"); return; }
    const char *p = model("tinystories-656k", "bf16");
    w8a8_model *c = open_cpu(p, 1), *gm = open_gpu(p, 1);
    if (!c || !gm) { result(0, "GPU calibration", "open failed: %s", w8a8_error()); w8a8_close(c); w8a8_close(gm); return; }
    size_t len, ns = w8a8_calib_size(c);
    char *text = slurp(path("%s/corpus/tinystories-holdout.txt", SH), &len);
    if (len > 4000) text[4000] = 0;
    int *ids = malloc(sizeof(int) * 8000), n, sc, sg;
    w8a8_tokenize(c, text, 1, ids, 8000, &n);
    if (n > 256) n = 256;
    float *a = malloc(sizeof(float) * ns), *b = malloc(sizeof(float) * ns);
    int ok = !w8a8_calibrate(c, 1) && !w8a8_calibrate(gm, 1) && !w8a8_seq_start(c, &sc) && !w8a8_seq_start(gm, &sg) &&
             !w8a8_feed(c, sc, ids, n) && !w8a8_feed(gm, sg, ids, n) && !w8a8_calib_stats(c, a, ns) && !w8a8_calib_stats(gm, b, ns);
    double worst = 0;
    for (size_t i = 0; ok && i < ns; i++) worst = fmax(worst, fabs(a[i] - b[i]) / fmax(a[i], 1e-3));
    /* the GPU records each input as it quantizes it (bf16: 2^-9), and sums in fp32 in another order than the
     * CPU reference's exact sums; the differences compound over the layers */
    result(ok && worst <= 2e-2, "GPU calibration statistics == CPU reference (bf16 model)", "%d tokens, %zu maxima, max relative diff %.1e (bound 2e-2)", n, ns, worst);
    free(a); free(b); free(ids); free(text);
    w8a8_close(c); w8a8_close(gm);
    char *out = path("%s/gpu-calib.w8a8", OUT);
    int rc = sh("./convert %s/models/tinystories-656k -o %s --scheme int8-sq --calib %s/corpus/tinystories-holdout.txt --calib-tokens 1024 2> %s/gpu-calib.log",
                SH, out, SH, OUT);
    size_t ln;
    char *log = slurp(path("%s/gpu-calib.log", OUT), &ln);
    w8a8_model *m = rc ? NULL : open_gpu(out, 1);
    char *line = log ? strstr(log, "calibrating on") : NULL;
    if (line && strchr(line, '\n')) *strchr(line, '\n') = 0;
    result(m && line && strstr(line, "on the GPU"), "convert --calib runs on the GPU where there is one", "%s", line ? line : "no log");
    free(log);
    w8a8_close(m);
}

/* 8 sequences of different lengths in one batch give what each gives alone */
static void test_gpu_batch(void) {
    if (!have_gpu()) { gpu_skip("GPU batch"); return; }
    const char *schemes[] = {"bf16", "fp8", "int8"};
    for (int s = 0; s < 3; s++) {
        const char *p = model("tinystories-656k", schemes[s]);
        /* alone, one row goes through the gemv kernels; batched, 8 rows through the tensor-core GEMM (mma.sync, or
         * wgmma on Hopper): compare like with like */
        setenv("W8A8_NO_GEMV", "1", 1);
        w8a8_model *mb = open_gpu(p, 8), *m1 = open_gpu(p, 1);
        unsetenv("W8A8_NO_GEMV");
        if (!mb || !m1) { gpu_skip(path("GPU batch %s", schemes[s])); w8a8_close(mb); w8a8_close(m1); continue; }
        int seqs[8], ids[8][128], n[8], ok = 1;
        double md = 0;
        for (int i = 0; i < 8; i++) {
            n[i] = 1 + i * 9;   /* 1 .. 64 tokens */
            ids[i][0] = w8a8_config_of(mb)->bos_id;
            for (int j = 1; j < n[i]; j++) ids[i][j] = 3 + (i * 131 + j * 17) % 2000;
            w8a8_seq_start(mb, &seqs[i]);
            ok &= !w8a8_feed(mb, seqs[i], ids[i], n[i]);
        }
        for (int step = 0; step < 5; step++) {
            int toks[8];
            for (int i = 0; i < 8; i++) { toks[i] = 5 + (step * 37 + i * 11) % 1900; ids[i][n[i]++] = toks[i]; }
            ok &= !w8a8_step(mb, 8, seqs, toks);
        }
        int greedy[8], gok = !w8a8_sample_greedy(mb, 8, seqs, greedy);
        for (int i = 0; i < 8; i++) {
            const float *b;
            w8a8_logits(mb, seqs[i], &b);
            gok &= greedy[i] == argmax(b, w8a8_config_of(mb)->vocab_size);
        }
        result(gok, path("GPU batch (%s): w8a8_sample_greedy over 8 sequences == argmax of each one's logits", schemes[s]), "");
        /* without the CUDA graph the same bits */
        setenv("W8A8_NO_GRAPH", "1", 1);
        setenv("W8A8_NO_GEMV", "1", 1);   /* like m1 */
        w8a8_model *mg = open_gpu(p, 1);
        unsetenv("W8A8_NO_GRAPH");
        unsetenv("W8A8_NO_GEMV");
        double gd = mg ? 0 : 1;
        /* sequences 0 and 7, then one of 300 tokens (the graph made again over 2 chunks of 256 positions when
         * position 256 comes), then sequence 0 again (replayed by the larger graph); logits compared at the end and
         * at position 255, the last the 1-chunk graph covers */
        int long_ids[300], cases[] = {0, 7, -1, 0}, chunks_seen = 0;
        for (int j = 0; j < 300; j++) long_ids[j] = 3 + (j * 71) % 1900;
        for (int k = 0; mg && k < 4; k++) {
            int i = cases[k], len = i < 0 ? 300 : n[i], sq, sq1;
            const int *t = i < 0 ? long_ids : ids[i];
            const float *a, *b;
            w8a8_seq_start(mg, &sq); w8a8_seq_start(m1, &sq1);
            for (int j = 0; j < len; j++) {
                w8a8_feed(mg, sq, &t[j], 1); w8a8_feed(m1, sq1, &t[j], 1);
                if (j != 255 && j != len - 1) continue;
                w8a8_logits(mg, sq, &a); w8a8_logits(m1, sq1, &b);
                for (int v = 0; v < 2048; v++) gd = fmax(gd, fabs(a[v] - b[v]));
                gpu_graph *gr = graph_for(m1->gpu, 1);
                if (gr && j == 299) chunks_seen = gr->chunks;
            }
            w8a8_seq_end(mg, sq); w8a8_seq_end(m1, sq1);
        }
        result(mg && gd == 0 && mg->gpu->use_graphs == 0 && m1->gpu->use_graphs && m1->gpu->n_graphs > 0 && chunks_seen == 2,
               path("GPU (%s): decode through the CUDA graph == without it (W8A8_NO_GRAPH=1), bit for bit, as the graph grows from 1 "
                    "chunk of positions to 2 and back to a short sequence", schemes[s]), "max |diff| %.2e; chunks at position 299: %d", gd, chunks_seen);
        w8a8_close(mg);
        for (int i = 0; i < 8; i++) {
            int sq;
            const float *a, *b;
            w8a8_seq_start(m1, &sq);
            for (int j = 0; j < n[i]; j++) w8a8_feed(m1, sq, &ids[i][j], 1);   /* one token at a time */
            w8a8_logits(m1, sq, &a);
            w8a8_logits(mb, seqs[i], &b);
            for (int v = 0; v < 2048; v++) md = fmax(md, fabs(a[v] - b[v]));
            w8a8_seq_end(m1, sq);
        }
        result(ok && md == 0, path("GPU batch (%s): 8 sequences of 1..64 tokens, prefill then 5 batched steps == each alone, token by token", schemes[s]),
               "max |diff| %.2e", md);
        /* the same prompts packed into one forward pass by w8a8_feed_batch, then the same steps */
        setenv("W8A8_NO_GEMV", "1", 1);
        w8a8_model *mf = open_gpu(p, 8);
        unsetenv("W8A8_NO_GEMV");
        int fseqs[8], *fids[8], fn[8], fok = mf != NULL;
        double fd = 0;
        for (int i = 0; fok && i < 8; i++) { w8a8_seq_start(mf, &fseqs[i]); fids[i] = ids[i]; fn[i] = n[i] - 5; }
        fok = fok && !w8a8_feed_batch(mf, 8, fseqs, (const int *const *)fids, fn);
        for (int step = 0; fok && step < 5; step++) {
            int toks[8];
            for (int i = 0; i < 8; i++) toks[i] = ids[i][fn[i] + step];
            fok &= !w8a8_step(mf, 8, fseqs, toks);
        }
        for (int i = 0; fok && i < 8; i++) {
            const float *a, *b;
            w8a8_logits(mf, fseqs[i], &a);
            w8a8_logits(mb, seqs[i], &b);
            for (int v = 0; v < 2048; v++) fd = fmax(fd, fabs(a[v] - b[v]));
        }
        result(fok && fd == 0, path("GPU w8a8_feed_batch (%s): the 8 prompts in one forward pass, then 5 steps == fed one by one", schemes[s]),
               "max |diff| %.2e %s", fd, fok ? "" : w8a8_error());
        w8a8_close(mf);
        w8a8_close(mb); w8a8_close(m1);
    }
    /* decode's fused stages (norms, SiLU, RoPE with the cache write and attention's merge inside the gemv and
     * attention launches) give the bits of the separate kernels: a 3-token prompt in one pass (logits of its last
     * row only), tokens one at a time (the graph of one row), then steps of 3 rows, against the same with
     * W8A8_NO_FUSE=1 */
    const char *fschemes[] = {"bf16", "fp8", "int8", "fp8-static", "int8-sq", "bf16-kvfp8"};
    for (int s = 0; s < 6; s++) {
        const char *p = model("tinystories-656k", fschemes[s]);
        setenv("W8A8_NO_FUSE", "1", 1);
        w8a8_model *mu = open_gpu(p, 3);
        unsetenv("W8A8_NO_FUSE");
        w8a8_model *mfu = open_gpu(p, 3);
        if (!mu || !mfu) { gpu_skip(path("GPU fused decode %s", fschemes[s])); w8a8_close(mu); w8a8_close(mfu); continue; }
        int su[3], sf[3], ok = mfu->gpu->fuse && mfu->gpu->rope_fuse && !mu->gpu->fuse;
        double d = 0;
        w8a8_model *ms[2] = {mu, mfu};
        for (int k = 0; k < 2; k++) {
            int *sq = k ? sf : su;
            for (int i = 0; i < 3; i++) {
                int pr[3] = {w8a8_config_of(ms[k])->bos_id, 40 + i, 300 + i};
                ok &= !w8a8_seq_start(ms[k], &sq[i]) && !w8a8_feed(ms[k], sq[i], pr, 3 - (i == 2));
                for (int j = 0; j < 3 + 2 * i; j++) { int t = 7 + (j * 53 + i * 29) % 1900; ok &= !w8a8_feed(ms[k], sq[i], &t, 1); }
            }
            for (int step = 0; step < 4; step++) {
                int toks[3];
                for (int i = 0; i < 3; i++) toks[i] = 11 + (step * 71 + i * 13) % 1900;
                ok &= !w8a8_step(ms[k], 3, sq, toks);
            }
        }
        for (int i = 0; ok && i < 3; i++) {
            const float *a, *b;
            w8a8_logits(mu, su[i], &a);
            w8a8_logits(mfu, sf[i], &b);
            for (int v = 0; v < (int)w8a8_config_of(mu)->vocab_size; v++) d = fmax(d, fabs(a[v] - b[v]));
        }
        result(ok && d == 0, path("GPU fused decode stages (%s) == the separate kernels (W8A8_NO_FUSE=1), bit for bit", fschemes[s]),
               "max |diff| %.2e%s", d, ok ? "" : " (or a step failed, or fusion was not on)");
        w8a8_close(mu); w8a8_close(mfu);
    }
}

/* the kernel cache: a second start loads without compiling; a corrupted entry is compiled again */
static void test_gpu_cache(void) {
    if (!have_gpu()) { gpu_skip("kernel cache"); return; }
    char dir[512];
    snprintf(dir, sizeof dir, "%s/kcache", OUT);
    sh("rm -rf %s", dir);
    setenv("W8A8_CACHE", dir, 1);
    const char *p = model("stories260K", "int8");
    char info[3][2100];
    double t[3];
    for (int i = 0; i < 3; i++) {
        if (i == 2) sh("for f in %s/*.cubin; do head -c 1000 /dev/urandom > $f; done", dir);   /* corrupt it */
        double t0 = now();
        w8a8_model *m = open_gpu(p, 1);
        t[i] = now() - t0;
        snprintf(info[i], sizeof info[i], "%s", m ? w8a8_backend_info(m) : gpu_skip_why);
        w8a8_close(m);
    }
    unsetenv("W8A8_CACHE");
    result(strstr(info[0], "compiled") && strstr(info[0], "cached in"), "kernel cache: the first start compiles and stores", "%s (%.2f s to open)", info[0], t[0]);
    result(strstr(info[1], "loaded from the cache") != NULL, "kernel cache: the second start loads without compiling", "%s (%.2f s to open)", info[1], t[1]);
    result(strstr(info[2], "compiled") != NULL, "kernel cache: a corrupted entry is compiled again", "%s", info[2]);
}

/* GPU faults: out of memory names the sizes and leaks nothing; an unwritable cache compiles each time and
 * says so; two processes starting at once on an empty cache both work and leave whole entries */
static void test_gpu_faults(void) {
    if (!have_gpu()) { gpu_skip("GPU faults"); return; }
    char *big = path("%s/synth-smollm2.fp8.w8a8", OUT);
    if (!exists(big)) sh("./convert --synthetic test/synth/smollm2-135m.json --tokenizer %s/tokenizers/llama2/tokenizer.bin -o %s --scheme fp8 --quiet", SH, big);
    w8a8_model *probe = open_gpu(model("stories260K", "int8"), 1);
    size_t free0 = 0, total = 0, free1 = 0;
    if (probe) { cu.CtxSetCurrent(probe->gpu->ctx); cu.MemGetInfo(&free0, &total); }
    w8a8_options o = w8a8_default_options();
    o.require_gpu = 1; o.max_batch = 4096; o.max_context = 8192;   /* a 773 GB KV cache */
    w8a8_model *m = NULL;
    int rc = w8a8_open(&m, big, &o);
    char msg[1100];
    snprintf(msg, sizeof msg, "%s", w8a8_error());
    if (probe) cu.MemGetInfo(&free1, &total);
    result(rc == W8A8_ERR_NOMEM && !m && strstr(msg, "KV cache") && strstr(msg, "MiB") && free1 + (64 << 20) >= free0,
           "GPU out of memory: an error naming the sizes; nothing leaked", "%s (free before %.0f MiB, after %.0f MiB)", msg, free0 / 1048576.0, free1 / 1048576.0);
    w8a8_close(probe);
    setenv("W8A8_CACHE", "/proc/w8a8-not-writable", 1);
    m = open_gpu(model("stories260K", "int8"), 1);
    result(m && strstr(w8a8_backend_info(m), "not cached"), "kernel cache folder not writable: compiled each time, with a note", "%s", m ? w8a8_backend_info(m) : gpu_skip_why);
    w8a8_close(m);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/kcache2", OUT);
    sh("rm -rf %s", dir);
    setenv("W8A8_CACHE", dir, 1);
    rc = sh("(./run %s -n 4 -t 0 'Tim' > %s/p1.txt 2>&1 & ./run %s -n 4 -t 0 'Tim' > %s/p2.txt 2>&1 & wait) && ./run %s -n 4 -t 0 'Tim' -v 2>&1 | grep -q 'loaded from the cache'",
            model("stories260K", "int8"), OUT, model("stories260K", "int8"), OUT, model("stories260K", "int8"));
    unsetenv("W8A8_CACHE");
    int tmp_left = sh("ls %s | grep -q tmp", dir) == 0;
    result(rc == 0 && !tmp_left, "two processes starting at once on an empty cache: both run, the entry is whole and loads", "");
}
