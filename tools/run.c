/* run — the command line: generate text, chat, count tokens, measure perplexity.
 *
 *   ./run MODEL ["prompt"] [-n steps] [-t temperature] [-p top_p] [-s seed] [-c context] [-i] [--chat]
 *         [--system TEXT] [--cpu] [--exact-fp8] [--tokenize] [--ppl FILE] [-v]
 */
#define _GNU_SOURCE
#include "../w8a8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void) {
    fprintf(stderr,
            "usage: run MODEL [\"prompt\"] [options]\n"
            "  -n N          tokens to generate (default 256)\n"
            "  -t T          temperature, 0 = greedy (default 1.0)\n"
            "  -p P          top-p (nucleus) sampling (default 0.9; 1 = off)\n"
            "  -s SEED       random seed (default: the time)\n"
            "  -c N          context length (default: the model's, at most 4096)\n"
            "  -i            interactive: read further prompts from stdin, one per line\n"
            "  --chat        use the model's chat template (Llama 3, ChatML/Qwen, Llama 2, Zephyr)\n"
            "  --system TXT  system prompt for --chat\n"
            "  --cpu         run the CPU reference even where there is a GPU\n"
            "  --exact-fp8   on Hopper, FP8 GEMMs with fp32 sums like the CPU reference (slower prefill)\n"
            "  --tokenize    print the prompt's token ids (no BOS) and exit\n"
            "  --ppl FILE    perplexity of FILE over non-overlapping windows of the context\n"
            "  -v            verbose: device, memory, timings\n");
    exit(2);
}

static void die_api(const char *what) {
    fprintf(stderr, "run: %s: %s\n", what, w8a8_error());
    exit(1);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t k;
    while (b && (k = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += k;
        if (len + 1 == cap) b = realloc(b, cap *= 2);
    }
    fclose(f);
    if (!b) { fprintf(stderr, "run: out of memory reading %s\n", path); exit(1); }
    b[len] = 0;
    *n = len;
    return b;
}

/* --- chat templates: the families are recognised from the stored Jinja text (which is not run) --- */
enum { CHAT_NONE, CHAT_LLAMA3, CHAT_CHATML, CHAT_LLAMA2, CHAT_ZEPHYR };
static int chat_family(const char *t) {
    if (strstr(t, "<|start_header_id|>")) return CHAT_LLAMA3;
    if (strstr(t, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(t, "[INST]")) return CHAT_LLAMA2;
    if (strstr(t, "<|user|>")) return CHAT_ZEPHYR;
    return CHAT_NONE;
}
static const char *chat_names[] = {"none", "Llama 3", "ChatML", "Llama 2", "Zephyr"};

/* One user turn (with the system prompt on the first) in the family's format, ending where the assistant's
 * reply begins. */
static char *chat_turn(int fam, const char *sys, const char *user, int first, int *add_bos) {
    size_t n = strlen(user) + (sys ? strlen(sys) : 0) + 256;
    char *b = malloc(n);
    if (!b) exit(1);
    b[0] = 0;
    *add_bos = first;
    switch (fam) {
    case CHAT_LLAMA3:
        if (first && sys) snprintf(b, n, "<|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>", sys);
        snprintf(b + strlen(b), n - strlen(b), "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", user);
        break;
    case CHAT_CHATML:   /* the template writes no BOS (some GGUFs name <|im_start|> as BOS: it must not double) */
        *add_bos = 0;
        if (first && sys) snprintf(b, n, "<|im_start|>system\n%s<|im_end|>\n", sys);
        snprintf(b + strlen(b), n - strlen(b), "%s<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", first ? "" : "\n", user);
        break;
    case CHAT_LLAMA2:
        *add_bos = 1;
        if (first && sys) snprintf(b, n, "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]", sys, user);
        else snprintf(b, n, "[INST] %s [/INST]", user);
        break;
    case CHAT_ZEPHYR:
        if (first && sys) snprintf(b, n, "<|system|>\n%s</s>\n", sys);
        snprintf(b + strlen(b), n - strlen(b), "<|user|>\n%s</s>\n<|assistant|>\n", user);
        break;
    }
    return b;
}

typedef struct {
    w8a8_model *m;
    int seq, steps;
    w8a8_sampler smp;
    w8a8_decoder dec;
    int *ids;
    int cap;
    long long generated;
    double gen_time;
} session;

static void emit(session *s, int tok) {
    char buf[16384];
    int len;
    if (w8a8_decode(s->m, &s->dec, tok, buf, sizeof buf, &len)) die_api("decode");
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
}

/* Feeds text (echoing it unless chat), then generates until a stop token or the step limit. */
static void generate(session *s, const char *text, int add_bos, int echo) {
    const w8a8_config *c = w8a8_config_of(s->m);
    int n;
    if (w8a8_tokenize(s->m, text, add_bos, s->ids, s->cap, &n)) die_api("tokenize");
    int len;
    w8a8_seq_length(s->m, s->seq, &len);
    if (n == 0 && len == 0) { fprintf(stderr, "run: the prompt is empty and the model has no BOS token to start from\n"); exit(1); }
    if (n && w8a8_feed(s->m, s->seq, s->ids, n)) die_api("prompt");
    if (echo) for (int i = 0; i < n; i++) emit(s, s->ids[i]);
    double t0 = now();
    for (int i = 0; i < s->steps; i++) {
        int tok;
        if (w8a8_sample(s->m, s->seq, &s->smp, &tok)) die_api("sample");
        if (tok == c->eos_id || tok == c->eot_id || (tok == c->bos_id && c->bos_id >= 0)) break;
        emit(s, tok);
        s->generated++;
        w8a8_seq_length(s->m, s->seq, &len);
        if (len >= (int)c->max_context || w8a8_feed(s->m, s->seq, &tok, 1)) {
            fprintf(stderr, "\nrun: the context is full (%d tokens)\n", len);
            break;
        }
    }
    s->gen_time += now() - t0;
}

static int perplexity(w8a8_model *m, const char *path, int ctx) {
    size_t n;
    char *text = read_file(path, &n);
    int cap = (int)n + 16, nt;
    int *ids = malloc(sizeof(int) * cap);
    if (!ids) return 1;
    if (w8a8_tokenize(m, text, 0, ids, cap, &nt)) die_api("tokenize");
    const w8a8_config *c = w8a8_config_of(m);
    int bos = c->bos_id >= 0, win = ctx - bos, seq;
    if (w8a8_seq_start(m, &seq)) die_api("sequence");
    int *buf = malloc(sizeof(int) * ctx);
    double nll = 0, t0 = now();
    long long scored = 0;
    int windows = nt / win;
    if (windows == 0) { fprintf(stderr, "run: %s has %d tokens, fewer than one window of %d\n", path, nt, win); return 1; }
    for (int w = 0; w < windows; w++) {
        if (bos) buf[0] = c->bos_id;
        memcpy(buf + bos, ids + (size_t)w * win, sizeof(int) * win);
        double s;
        int k;
        if (w8a8_score(m, seq, buf, ctx, &s, &k)) die_api("score");
        /* the BOS position predicts the window's first token: count it like the rest */
        nll += s;
        scored += k;
        if (isatty(2) || w + 1 == windows) {
            int bar = 30 * (w + 1) / windows;
            fprintf(stderr, "\rperplexity [%.*s%*s] %d/%d windows, ppl so far %.4f", bar, "##############################", 30 - bar, "",
                    w + 1, windows, exp(nll / scored));
            if (w + 1 == windows) fputc('\n', stderr);
        }
    }
    fprintf(stderr, "%lld tokens scored in %.1f s (%d windows of %d)\n", scored, now() - t0, windows, ctx);
    printf("ppl: %.6f\n", exp(nll / scored));
    free(buf); free(ids); free(text);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *prompt = NULL, *ppl = NULL, *sys = NULL;
    int steps = 256, ctx = 0, interactive = 0, chat = 0, tokenize_only = 0, seeded = 0;
    w8a8_options opt = w8a8_default_options();
    w8a8_sampler smp = {1.0f, 0.9f, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-n") && more) steps = atoi(argv[++i]);
        else if (!strcmp(a, "-t") && more) smp.temperature = strtof(argv[++i], NULL);
        else if (!strcmp(a, "-p") && more) smp.top_p = strtof(argv[++i], NULL);
        else if (!strcmp(a, "-s") && more) { smp.seed = strtoull(argv[++i], NULL, 10); seeded = 1; }
        else if (!strcmp(a, "-c") && more) ctx = atoi(argv[++i]);
        else if (!strcmp(a, "-i")) interactive = 1;
        else if (!strcmp(a, "--chat")) chat = 1;
        else if (!strcmp(a, "--system") && more) sys = argv[++i];
        else if (!strcmp(a, "--cpu")) opt.force_cpu = 1;
        else if (!strcmp(a, "--exact-fp8")) opt.exact_fp8 = 1;
        else if (!strcmp(a, "--tokenize")) tokenize_only = 1;
        else if (!strcmp(a, "--ppl") && more) ppl = argv[++i];
        else if (!strcmp(a, "-v")) opt.verbose = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "run: unknown option or missing value: '%s'\n", a); usage(); }
        else if (!path) path = a;
        else if (!prompt) prompt = a;
        else { fprintf(stderr, "run: unexpected argument '%s' (quote the prompt)\n", a); usage(); }
    }
    if (!path) usage();
    if (steps < 0 || ctx < 0 || smp.temperature < 0 || smp.top_p < 0 || smp.top_p > 1) {
        fprintf(stderr, "run: -n, -c, -t must be >= 0 and -p within 0..1\n");
        return 2;
    }
    if (!seeded) smp.seed = (uint64_t)time(NULL);
    opt.max_context = ctx;
    if (tokenize_only) opt.force_cpu = 1, opt.max_context = 1;
    w8a8_model *m;
    if (w8a8_open(&m, path, &opt)) die_api("open");
    const w8a8_config *c = w8a8_config_of(m);

    if (tokenize_only) {
        int cap = prompt ? (int)strlen(prompt) + 16 : 16, n;
        int *ids = malloc(sizeof(int) * cap);
        if (w8a8_tokenize(m, prompt ? prompt : "", 0, ids, cap, &n)) die_api("tokenize");
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
        w8a8_close(m);
        return 0;
    }
    if (!w8a8_on_gpu(m)) fprintf(stderr, "run: no GPU in use (%s): running the CPU reference\n", w8a8_fallback_reason(m));
    const char *bi = w8a8_backend_info(m);   /* says once how long compiling the kernels took */
    if (bi[0] && (opt.verbose || strstr(bi, "compiled"))) fprintf(stderr, "run: %s\n", bi);
    ctx = w8a8_context_of(m);
    fprintf(stderr, "run: %s, scheme %s, context %d\n", w8a8_device_name(m), w8a8_scheme_name(c->scheme), ctx);
    if (ppl) { int rc = perplexity(m, ppl, ctx); w8a8_close(m); return rc; }

    session s = {0};
    s.m = m; s.steps = steps; s.smp = smp;
    s.cap = ctx + 64;
    s.ids = malloc(sizeof(int) * s.cap);
    if (w8a8_seq_start(m, &s.seq)) die_api("sequence");
    int fam = CHAT_NONE;
    if (chat) {
        fam = chat_family(w8a8_chat_template(m));
        if (fam == CHAT_NONE) {
            fprintf(stderr, "run: %s; --chat needs one of the Llama 3, ChatML, Llama 2 or Zephyr formats\n",
                    w8a8_chat_template(m)[0] ? "the model's chat template is of a kind this program does not know" : "the model has no chat template");
            return 1;
        }
        fprintf(stderr, "run: chat template: %s\n", chat_names[fam]);
        if (!prompt) interactive = 1;   /* a conversation */
    }
    double t0 = now();
    char line[65536];
    for (int turn = 0;; turn++) {
        const char *text = prompt;
        if (turn > 0 || !prompt) {
            if (turn > 0 && !interactive) break;
            if (interactive) {
                if (isatty(0)) { fprintf(stderr, "\n> "); fflush(stderr); }
                if (!fgets(line, sizeof line, stdin)) break;
                line[strcspn(line, "\n")] = 0;
                text = line;
            } else text = "";
        }
        if (chat) {
            int bos;
            char *t = chat_turn(fam, sys, text, turn == 0, &bos);
            generate(&s, t, bos, 0);
            free(t);
            printf("\n");
        } else generate(&s, text, turn == 0, 1);
    }
    if (!chat) printf("\n");
    fflush(stdout);
    fprintf(stderr, "run: %lld tokens in %.2f s: %.1f tok/s (generation), %.2f s in all\n", s.generated, s.gen_time,
            s.gen_time > 0 ? s.generated / s.gen_time : 0.0, now() - t0);
    free(s.ids);
    w8a8_close(m);
    return 0;
}
