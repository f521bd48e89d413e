/* Fuzz target: the converter's readers of untrusted files: GGUF (header, metadata, tensor infos, tokenizer),
 * safetensors headers, llama2.c checkpoints and tokenizers, config.json and tokenizer.json. The first byte
 * picks the reader, the rest is the file. Built with W8A8_FUZZ, the converter tracks its allocations and its
 * die() jumps back here, so a rejected file is freed like an accepted one. */
#define main convert_main
#include "../tools/convert.c"
#undef main
#include <sys/mman.h>

static int g_fd = -1;
static char g_path[64];

static void reset(void) {
    while (g_n_blocks) free(g_blocks[--g_n_blocks]);
    while (g_n_maps) { g_n_maps--; munmap(g_maps[g_n_maps].p, g_maps[g_n_maps].n); }
    memset(&g_gguf, 0, sizeof g_gguf);
    g_pad_vocab = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1) return 0;
    if (g_fd < 0) {
        g_fd = memfd_create("fuzz_convert", 0);
        snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    }
    if (ftruncate(g_fd, 0) || pwrite(g_fd, data + 1, n - 1, 0) != (ssize_t)(n - 1)) return 0;
    g_quiet = 1;
    jmp_buf jump;
    g_die_jump = &jump;
    if (setjmp(jump) == 0) {
        conv cv;
        tok_build tb;
        memset(&cv, 0, sizeof cv);
        memset(&tb, 0, sizeof tb);
        switch (data[0] % 6) {
        case 0: config_from_gguf(&cv, &tb, g_path); break;
        case 1: st_open(&cv.src, g_path); break;
        case 2: config_from_l2c(&cv, g_path); break;
        case 3: load_l2c_tokenizer(&tb, g_path, 1 + data[0] / 6); break;
        case 4: parse_hf_config(&cv, g_path); break;
        case 5: load_hf_tokenizer(&tb, g_path, 300); break;
        }
    }
    g_die_jump = NULL;
    reset();
    return 0;
}
