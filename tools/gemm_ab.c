/* gemm_ab — one GEMM type at one M over the bench's four shapes, timed three times each: quick A/Bs of kernel
 * variants (W8A8_KERNELS_FILE=variant.inc ./gemm_ab ...) in one device call. Any model opens the GPU.
 *   make gemm_ab && ./gemm_ab MODEL fp8|int8|bf16 M [reps_ms] [shape index 0..3 | -1 all] [out_mode] */
#include "../w8a8.c"
static const int SH[4][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}};
static const char *NM[4] = {"qkv", "o", "gate+up", "down"};
static void fill(unsigned char *p, size_t n, int type) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        if (type == 0) p[i] = (i & 1) ? (unsigned char)(0x3c | (s & 0x80)) : (unsigned char)s;
        else if (type == 1) p[i] = (unsigned char)(s & 0xb7);
        else p[i] = (unsigned char)s;
    }
}
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int type = !strcmp(argv[2], "bf16") ? 0 : !strcmp(argv[2], "fp8") ? 1 : 2, M = atoi(argv[3]);
    double min_ms = argc > 4 ? atof(argv[4]) : 40;
    int only = argc > 5 ? atoi(argv[5]) : -1, om = argc > 6 ? atoi(argv[6]) : 0;
    g_build_all = 1;
    w8a8_options o = w8a8_default_options();
    o.require_gpu = 1;
    w8a8_model *m = NULL;
    if (w8a8_open(&m, argv[1], &o)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
    gpu_state *g = m->gpu;
    int fn = type == 0 ? F_GEMM_BF16 : type == 1 ? F_GEMM_E4M3 : F_GEMM_S8, es = type ? 1 : 2;
    size_t maxA = (size_t)M * 14336 * es, maxW = (size_t)28672 * 4096 * es, maxO = (size_t)M * 28672 * 4;
    CUdeviceptr A, W, O, sa, sw;
    if (gpu_alloc(g, &A, maxA, "A") || gpu_alloc(g, &W, maxW, "W") || gpu_alloc(g, &O, maxO, "O") || gpu_alloc(g, &sa, 4 * (size_t)M, "sa") ||
        gpu_alloc(g, &sw, 4 * 28672, "sw")) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
    unsigned char *h = malloc(maxA > maxW ? maxA : maxW);
    float *ones = malloc(4 * (M > 28672 ? M : 28672));
    for (int i = 0; i < (M > 28672 ? M : 28672); i++) ones[i] = 1.0f / 64;
    cu.MemcpyHtoD(sa, ones, 4 * (size_t)M);
    cu.MemcpyHtoD(sw, ones, 4 * 28672);
    fill(h, maxA, type); cu.MemcpyHtoD(A, h, maxA);
    fill(h, maxW, type); cu.MemcpyHtoD(W, h, maxW);
    cu.MemsetD8(O, 0, maxO);
    CUevent e0, e1;
    cu.EventCreate(&e0, 0); cu.EventCreate(&e1, 0);
    for (int s = 0; s < 4; s++) {
        if (only >= 0 && s != only) continue;
        int N = SH[s][0], K = SH[s][1];
        glinear l = {.w = W, .scale = type ? sw : 0, .N = N, .K = K, .Kp = K};
        printf("%-8s %s M=%d:", NM[s], argv[2], M);
        for (int trial = 0; trial < 3; trial++) {
            gpu_gemm(g, fn, A, sa, &l, M, om, O, N);
            int reps = 1;
            float ms = 0;
            for (;;) {
                cu.EventRecord(e0, g->stream);
                for (int r = 0; r < reps; r++) gpu_gemm(g, fn, A, sa, &l, M, om, O, N);
                cu.EventRecord(e1, g->stream);
                cu.EventSynchronize(e1);
                cu.EventElapsedTime(&ms, e0, e1);
                if (ms >= min_ms || reps >= 4096) break;
                reps *= 2;
            }
            if (gpu_sync(g)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
            printf(" %7.1f", 2.0 * M * N * K / (ms / reps * 1e-3) / 1e12);
        }
        printf(" TFLOP/s\n");
        fflush(stdout);
    }
    w8a8_close(m);
    return 0;
}
