/* prof — GPU time by kernel for each phase of a run: B sequences' prompts of P tokens, then S decode steps.
 *
 *   make prof && W8A8_PROFILE=1 ./prof MODEL B P S      (without W8A8_PROFILE: wall times only, graphs on)
 *   ./prof MODEL B P S CONTEXT                          (the KV cache sized for CONTEXT positions, not P + 2S + 16)
 *   W8A8_SKIP=KERNEL ./prof MODEL B P S                 (leave one kernel out: what it costs in the real run)
 *   W8A8_SKIP=KERNEL#I/N ./prof MODEL B P S             (only its launches I, I + N, ...: one of a layer's N)
 *
 * The engine's W8A8_PROFILE=1 times every launch with events (graphs off); this prints and clears its totals
 * after the warm-up, the prefill and the decode steps, so the phases do not mix (all on stderr). Events add
 * a gap around every launch, so small kernels look dearer than they are inside a graph; W8A8_SKIP=name (a
 * kernel of kernel_names, e.g. rmsnorm_quant or gemv_e4m3) drops that kernel's launches instead, so the wall
 * time against a run without it is its true share. The outputs are then wrong: timings only. Without
 * W8A8_PROFILE the decode steps are timed twice more, S steps each: without sampling (no token comes back
 * between steps), and the step's graph alone replayed (no host copies); what is left of a step is the host's. */
static int prof_skip(int f);
#define W8A8_LAUNCH_HOOK(f) prof_skip(f)
#include "../w8a8.c"
static int prof_skip(int f) {
    static long count;
    const char *s = getenv("W8A8_SKIP"), *h = s ? strchr(s, '#') : NULL;
    size_t len = h ? (size_t)(h - s) : (s ? strlen(s) : 0);
    if (!s || strlen(kernel_names[f]) != len || strncmp(s, kernel_names[f], len)) return 0;
    if (!h) return 1;
    int i = 0, n = 1;   /* "#I/N": e.g. gemv_e4m3#1/4 is the attention output's projection, the second of four */
    if (sscanf(h + 1, "%d/%d", &i, &n) != 2 || n < 1) { fprintf(stderr, "W8A8_SKIP: want KERNEL or KERNEL#I/N\n"); exit(2); }
    return count++ % n == i;
}
static void report(w8a8_model *m, const char *phase, double wall) {
    gpu_sync(m->gpu);
    fprintf(stderr, "== %s: %.2f ms wall\n", phase, wall * 1e3);
    if (m->gpu->prof) prof_print(m->gpu);
}
static void feed_all(w8a8_model *m, int B, int *seqs, const int *prompt, int P) {
    const int **ids = malloc(sizeof(int *) * B); int *ns = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) { ids[b] = prompt; ns[b] = P; }
    if (w8a8_feed_batch(m, B, seqs, ids, ns)) { fprintf(stderr, "%s\n", w8a8_error()); exit(1); }
    free(ids); free(ns);
}
int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) { fprintf(stderr, "usage: W8A8_PROFILE=1 ./prof MODEL BATCH PROMPT_TOKENS DECODE_STEPS [CONTEXT]\n"); return 2; }
    const char *path = argv[1];
    int B = atoi(argv[2]), P = atoi(argv[3]), S = atoi(argv[4]);
    w8a8_options o = w8a8_default_options();
    o.require_gpu = 1; o.max_batch = B; o.max_context = argc == 6 ? atoi(argv[5]) : P + 2 * S + 16;   /* the KV cache's positions */
    w8a8_model *m;
    if (w8a8_open(&m, path, &o)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
    fprintf(stderr, "== %s; wgmma GEMM blocks in pairs: %s (%d at once)\n", w8a8_device_name(m), m->gpu->gemm_pairs ? "yes" : "no", m->gpu->gemm_pairs);
    int *seqs = malloc(sizeof(int) * B), *tok = malloc(sizeof(int) * B), *prompt = malloc(sizeof(int) * P);
    int V = (int)w8a8_config_of(m)->vocab_size;
    for (int i = 0; i < P; i++) prompt[i] = (1000 + (i * 7919) % 100000) % V;   /* any ids: the timings do not depend on them */
    for (int b = 0; b < B; b++) w8a8_seq_start(m, &seqs[b]);
    /* warm-up: the prompt and 3 steps (the decode graph for these positions captured), then reset */
    feed_all(m, B, seqs, prompt, P);
    w8a8_sample_greedy(m, B, seqs, tok);
    for (int s = 0; s < 3; s++) { w8a8_step(m, B, seqs, tok); w8a8_sample_greedy(m, B, seqs, tok); }
    for (int b = 0; b < B; b++) w8a8_seq_reset(m, seqs[b]);
    report(m, "warm-up", 0);
    double t0 = seconds();
    feed_all(m, B, seqs, prompt, P);
    w8a8_sample_greedy(m, B, seqs, tok);
    char ph[64];
    snprintf(ph, sizeof ph, "prefill B=%d P=%d", B, P);
    report(m, ph, seconds() - t0);
    t0 = seconds();
    for (int s = 0; s < S; s++) { w8a8_step(m, B, seqs, tok); w8a8_sample_greedy(m, B, seqs, tok); }
    snprintf(ph, sizeof ph, "decode B=%d %d steps from %d (per step below)", B, S, P);
    double w = seconds() - t0;
    report(m, ph, w);
    fprintf(stderr, "== per step %.3f ms\n", w / S * 1e3);
    /* what of a step is the host's: the same S steps without sampling (no token comes back between them), and the
     * step's CUDA graph replayed S times at the last position (no host copies either) */
    gpu_state *g = m->gpu;
    if (!g->prof) {
        t0 = seconds();
        for (int s = 0; s < S; s++) if (w8a8_step(m, B, seqs, tok)) { fprintf(stderr, "%s\n", w8a8_error()); return 1; }
        gpu_sync(g);
        double ws = seconds() - t0;
        gpu_graph *gr = graph_for(g, B);
        double wg = 0;
        if (gr) {
            t0 = seconds();
            for (int s = 0; s < S; s++) cu.GraphLaunch(gr->exec, g->stream);
            gpu_sync(g);
            wg = seconds() - t0;
        }
        fprintf(stderr, "== per step without sampling %.3f ms; the graph alone %.3f ms\n", ws / S * 1e3, wg / S * 1e3);
    }
    w8a8_close(m);
    return 0;
}
