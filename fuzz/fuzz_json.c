/* Fuzz target: the JSON reader the converter uses for config.json, tokenizer.json and safetensors headers. */
#include <stdint.h>
#include "../tools/json.h"

static size_t walk(const jv *v, int depth) {
    size_t n = 1;
    if (depth > 100) abort();
    if (v->type == J_ARR || v->type == J_OBJ)
        for (int i = 0; i < v->n; i++) n += walk(&v->items[i], depth + 1) + (v->type == J_OBJ ? strlen(v->keys[i]) : 0);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    jv v;
    char err[200];
    if (json_parse((const char *)data, n, &v, err, sizeof err) == 0) {
        walk(&v, 0);
        jget(&v, "model");
        jv_free(&v);
    }
    return 0;
}
