/* Fuzz target: the model-file loader and validator, then a forward step on whatever it accepts.
 * Most mutations would only ever meet the checksum, so for half the inputs (the first byte of the version
 * field decides) the harness writes a correct checksum first: the validation behind it gets fuzzed too. */
#include "../w8a8.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    size_t cap = (n + 255) / 256 * 256 + 256;
    unsigned char *buf = aligned_alloc(256, cap);
    memcpy(buf, data, n);
    if (n >= sizeof(w8a8_header) && (buf[8] & 1) == 0) {
        w8a8_header *h = (w8a8_header *)buf;
        if (check_range(h->tokenizer_offset, h->tokenizer_bytes, n) && h->n_tensors < 100000 &&
            check_range(h->table_offset, (uint64_t)h->n_tensors * sizeof(w8a8_tensor_entry), n)) {
            w8a8_header copy = *h;
            copy.checksum = 0;
            uint64_t sum = w8a8_fnv1a(0xcbf29ce484222325ull, &copy, sizeof copy);
            sum = w8a8_fnv1a(sum, buf + h->tokenizer_offset, h->tokenizer_bytes);
            h->checksum = w8a8_fnv1a(sum, buf + h->table_offset, (size_t)h->n_tensors * sizeof(w8a8_tensor_entry));
        }
    }
    w8a8_options o = w8a8_default_options();
    o.force_cpu = 1;
    o.max_context = 8;
    o.max_batch = 2;
    w8a8_model *m = NULL;
    if (w8a8_open_memory(&m, buf, n, &o) == W8A8_OK) {
        int ids[16], k, seq, tok, len;
        char out[256];
        w8a8_decoder d = {0};
        w8a8_sampler s = {0.7f, 0.9f, 1};
        if (!w8a8_tokenize(m, "Hi \xff<s>", 1, ids, 16, &k) && k > 0 && !w8a8_seq_start(m, &seq) && !w8a8_feed(m, seq, ids, k < 6 ? k : 6) &&
            !w8a8_sample(m, seq, &s, &tok))
            w8a8_decode(m, &d, tok, out, sizeof out, &len);
        w8a8_close(m);
    }
    free(buf);
    return 0;
}
