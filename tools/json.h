/* json.h — a small JSON reader for the converter (config.json, tokenizer.json, safetensors headers).
 * Strict RFC 8259 with a nesting limit; strings are decoded to UTF-8 (\u escapes and surrogate pairs).
 * Include it in one file; every function is static. */
#ifndef W8A8_JSON_H
#define W8A8_JSON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef J_MALLOC   /* a fuzz build routes these through its tracking allocator */
#define J_MALLOC malloc
#define J_REALLOC realloc
#define J_FREE free
#endif

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct jv {
    int type, n;            /* n: string bytes, or number of items */
    double num;
    char *str;              /* J_STR: NUL-terminated (may hold NULs: use n) */
    struct jv *items;       /* J_ARR / J_OBJ values */
    char **keys;            /* J_OBJ keys */
    int *key_lens;
} jv;

typedef struct { const char *p, *end; int depth; char err[160]; } jparser;

static void jv_free(jv *v) {
    if (!v) return;
    J_FREE(v->str);
    for (int i = 0; i < v->n && (v->type == J_ARR || v->type == J_OBJ); i++) {
        jv_free(&v->items[i]);
        if (v->keys) J_FREE(v->keys[i]);
    }
    J_FREE(v->items); J_FREE(v->keys); J_FREE(v->key_lens);
    memset(v, 0, sizeof *v);
}

static int j_err(jparser *P, const char *what) {
    if (!P->err[0]) snprintf(P->err, sizeof P->err, "%s at byte %ld", what, (long)(P->end - P->p));
    return -1;
}
static void j_ws(jparser *P) { while (P->p < P->end && (*P->p == ' ' || *P->p == '\t' || *P->p == '\n' || *P->p == '\r')) P->p++; }

static int j_hex4(jparser *P, unsigned *out) {
    if (P->end - P->p < 4) return j_err(P, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *P->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return j_err(P, "bad \\u escape");
    }
    *out = v;
    return 0;
}

static int j_string(jparser *P, char **out, int *len) {
    P->p++;   /* opening quote */
    const char *s = P->p;
    size_t cap = 16;
    while (s < P->end && *s != '"') { if (*s == '\\') s++; s++; cap++; }
    char *b = J_MALLOC(cap + 4), *o = b;
    if (!b) return j_err(P, "out of memory");
    while (1) {
        if (P->p >= P->end) { J_FREE(b); return j_err(P, "unterminated string"); }
        unsigned char c = (unsigned char)*P->p++;
        if (c == '"') break;
        if (c < 0x20) { J_FREE(b); return j_err(P, "control character in string"); }
        if (c != '\\') { *o++ = (char)c; continue; }
        if (P->p >= P->end) { J_FREE(b); return j_err(P, "unterminated escape"); }
        c = (unsigned char)*P->p++;
        switch (c) {
        case '"': *o++ = '"'; break; case '\\': *o++ = '\\'; break; case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break; case 'f': *o++ = '\f'; break; case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break; case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j_hex4(P, &cp)) { J_FREE(b); return -1; }
            if (cp >= 0xd800 && cp < 0xdc00 && P->end - P->p >= 6 && P->p[0] == '\\' && P->p[1] == 'u') {
                const char *save = P->p;
                P->p += 2;
                if (j_hex4(P, &lo)) { J_FREE(b); return -1; }
                if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else P->p = save;
            }
            if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;   /* lone surrogate */
            if (cp < 0x80) *o++ = (char)cp;
            else if (cp < 0x800) { *o++ = (char)(0xc0 | cp >> 6); *o++ = (char)(0x80 | (cp & 63)); }
            else if (cp < 0x10000) { *o++ = (char)(0xe0 | cp >> 12); *o++ = (char)(0x80 | ((cp >> 6) & 63)); *o++ = (char)(0x80 | (cp & 63)); }
            else { *o++ = (char)(0xf0 | cp >> 18); *o++ = (char)(0x80 | ((cp >> 12) & 63)); *o++ = (char)(0x80 | ((cp >> 6) & 63)); *o++ = (char)(0x80 | (cp & 63)); }
            break;
        }
        default: J_FREE(b); return j_err(P, "bad escape");
        }
    }
    *o = 0;
    *out = b;
    *len = (int)(o - b);
    return 0;
}

static int j_value(jparser *P, jv *v);

static int j_push(jv *v, int *cap) {
    if (v->n < *cap) return 0;
    int nc = *cap ? *cap * 2 : 8;
    jv *ni = J_REALLOC(v->items, sizeof(jv) * nc);
    if (!ni) return -1;
    v->items = ni;
    if (v->type == J_OBJ) {
        char **nk = J_REALLOC(v->keys, sizeof(char *) * nc);
        if (!nk) return -1;
        v->keys = nk;
        int *nl = J_REALLOC(v->key_lens, sizeof(int) * nc);
        if (!nl) return -1;
        v->key_lens = nl;
    }
    *cap = nc;
    return 0;
}

static int j_value(jparser *P, jv *v) {
    memset(v, 0, sizeof *v);
    j_ws(P);
    if (P->p >= P->end) return j_err(P, "unexpected end");
    char c = *P->p;
    if (c == '{' || c == '[') {
        if (++P->depth > 64) return j_err(P, "nesting too deep");
        v->type = c == '{' ? J_OBJ : J_ARR;
        char close = c == '{' ? '}' : ']';
        int cap = 0;
        P->p++;
        j_ws(P);
        if (P->p < P->end && *P->p == close) { P->p++; P->depth--; return 0; }
        for (;;) {
            if (j_push(v, &cap)) return j_err(P, "out of memory");
            if (v->type == J_OBJ) {
                j_ws(P);
                if (P->p >= P->end || *P->p != '"') return j_err(P, "expected a key");
                if (j_string(P, &v->keys[v->n], &v->key_lens[v->n])) return -1;
                v->items[v->n].type = J_NULL; v->items[v->n].n = 0;
                v->items[v->n].str = NULL; v->items[v->n].items = NULL; v->items[v->n].keys = NULL; v->items[v->n].key_lens = NULL;
                v->n++;
                j_ws(P);
                if (P->p >= P->end || *P->p != ':') return j_err(P, "expected ':'");
                P->p++;
                if (j_value(P, &v->items[v->n - 1])) return -1;
            } else {
                v->items[v->n].type = J_NULL; v->items[v->n].n = 0;
                v->items[v->n].str = NULL; v->items[v->n].items = NULL; v->items[v->n].keys = NULL; v->items[v->n].key_lens = NULL;
                v->n++;
                if (j_value(P, &v->items[v->n - 1])) return -1;
            }
            j_ws(P);
            if (P->p < P->end && *P->p == ',') { P->p++; continue; }
            if (P->p < P->end && *P->p == close) { P->p++; P->depth--; return 0; }
            return j_err(P, "expected ',' or a closing bracket");
        }
    }
    if (c == '"') { v->type = J_STR; return j_string(P, &v->str, &v->n); }
    if (P->end - P->p >= 4 && !memcmp(P->p, "true", 4)) { v->type = J_TRUE; P->p += 4; return 0; }
    if (P->end - P->p >= 5 && !memcmp(P->p, "false", 5)) { v->type = J_FALSE; P->p += 5; return 0; }
    if (P->end - P->p >= 4 && !memcmp(P->p, "null", 4)) { v->type = J_NULL; P->p += 4; return 0; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        int k = 0;
        while (P->p < P->end && k < 63 && strchr("+-0123456789.eE", *P->p)) buf[k++] = *P->p++;
        buf[k] = 0;
        char *e;
        v->type = J_NUM;
        v->num = strtod(buf, &e);
        if (*e || k == 0) return j_err(P, "bad number");
        return 0;
    }
    return j_err(P, "unexpected character");
}

/* Parses n bytes; on failure returns -1 with a message in err (and frees what it built). */
static int json_parse(const char *text, size_t n, jv *out, char *err, size_t errn) {
    if (!text) { text = ""; n = 0; }   /* an empty file maps to nothing */
    jparser P = {text, text + n, 0, {0}};
    int rc = j_value(&P, out);
    if (!rc) { j_ws(&P); if (P.p != P.end) rc = j_err(&P, "trailing characters"); }
    if (rc) {
        snprintf(err, errn, "%s", P.err);
        jv_free(out);
    }
    return rc;
}

static inline const jv *jget(const jv *o, const char *key) {
    if (!o || o->type != J_OBJ) return NULL;
    for (int i = 0; i < o->n; i++) if (!strcmp(o->keys[i], key)) return &o->items[i];
    return NULL;
}
static inline double jnum(const jv *o, const char *key, double dflt) {
    const jv *v = jget(o, key);
    return v && v->type == J_NUM ? v->num : dflt;
}
static inline const char *jstr(const jv *o, const char *key) {
    const jv *v = jget(o, key);
    return v && v->type == J_STR ? v->str : NULL;
}
static inline int jbool(const jv *o, const char *key, int dflt) {
    const jv *v = jget(o, key);
    return v && v->type == J_TRUE ? 1 : v && v->type == J_FALSE ? 0 : dflt;
}
#endif
