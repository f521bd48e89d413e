/* Fuzz target: the tokenizers, encode and streaming decode of arbitrary bytes. The first byte picks the
 * tokenizer (llama2 SentencePiece, Llama 3 and Qwen3 byte-level, tinystories-656k BPE); the rest is the text.
 * Besides not crashing, it checks a property: valid UTF-8 that matches no special token decodes back to
 * itself. Models: $W8A8_FUZZ_DIR (default test/out) holds tok-llama2/llama3/qwen3.w8a8 and
 * tinystories-656k.fp8.w8a8, which `make test` makes. */
#include "../w8a8.c"

static w8a8_model *g_tok[4];

static int valid_utf8(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        int cp, l = utf8_next(p + i, n - i, &cp);
        if (cp < 0 || (cp >= 0xd800 && cp < 0xe000) || cp > 0x10ffff || (l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) || (l == 4 && cp < 0x10000)) return 0;
        i += l;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *dir = getenv("W8A8_FUZZ_DIR") ? getenv("W8A8_FUZZ_DIR") : "test/out";
    const char *names[4] = {"tok-llama2.w8a8", "tok-llama3.w8a8", "tok-qwen3.w8a8", "tinystories-656k.fp8.w8a8"};
    w8a8_options o = w8a8_default_options();
    o.force_cpu = 1;
    o.max_context = 1;
    for (int i = 0; i < 4; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (w8a8_open(&g_tok[i], p, &o)) { fprintf(stderr, "fuzz_tokenizer: %s (run make test first)\n", w8a8_error()); exit(1); }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1 || n > 4096) return 0;
    w8a8_model *m = g_tok[data[0] & 3];
    char *text = malloc(n);
    memcpy(text, data + 1, n - 1);
    text[n - 1] = 0;
    size_t tl = strlen(text);
    int *ids = malloc(sizeof(int) * (4 * n + 8)), k = 0;
    if (w8a8_tokenize(m, text, 0, ids, 4 * (int)n + 8, &k) == W8A8_OK) {
        char *out = malloc(4 * n + 64), b[16384];
        size_t ol = 0;
        int special = 0, l;
        w8a8_decoder d = {0};
        for (int i = 0; i < k; i++) {
            if (ids[i] < 0 || ids[i] >= (int)m->cfg.vocab_size) abort();
            int ty = m->tok.types[ids[i]];
            special |= ty == W8A8_TT_SPECIAL || ty == W8A8_TT_CONTROL || ty == W8A8_TT_USER;
            if (w8a8_decode(m, &d, ids[i], b, sizeof b, &l)) abort();
            if (ol + l > 4 * n + 64) abort();
            memcpy(out + ol, b, l);
            ol += l;
        }
        if (!special && valid_utf8((const unsigned char *)text, tl) && (ol != tl || memcmp(out, text, tl))) {
            fprintf(stderr, "round trip failed on tokenizer %d: \"%s\" -> \"%.*s\"\n", data[0] & 3, text, (int)ol, out);
            abort();
        }
        free(out);
    }
    free(ids);
    free(text);
    return 0;
}
