/*
 * tokenizer.c - the WordPiece vocabulary: building it, looking strings up through an
 * open-addressing hash table, and turning ids back into clean text (zq_tokenizer_piece).
 * Text to ids is in tokenizer_encode.c.
 */
#include "tokenizer_impl.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define FNV_OFFSET 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t hash_token(bool continuation, const char *s, size_t n)
{
    uint64_t h = continuation ? hash_bytes(FNV_OFFSET, "##", 2) : FNV_OFFSET;
    return hash_bytes(h, s, n);
}

static bool token_equals(const zq_tokenizer *tok, int32_t id, bool continuation, const char *s,
                         size_t n)
{
    const char *str = tok->arena + tok->offsets[id];
    size_t prefix = continuation ? 2 : 0;
    if (tok->lens[id] != n + prefix)
        return false;
    if (continuation && (str[0] != '#' || str[1] != '#'))
        return false;
    return memcmp(str + prefix, s, n) == 0;
}

int32_t zq_tok_lookup(const zq_tokenizer *tok, bool continuation, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_token(continuation, s, n) & tok->mask;
    for (;; i = (i + 1) & tok->mask) {
        int32_t id = tok->slots[i];
        if (id < 0 || token_equals(tok, id, continuation, s, n))
            return id;
    }
}

/* Inserts id. A vocabulary string seen twice maps to its last id, as HF's load_vocab does;
 * an added token never replaces a vocabulary entry. */
static void table_insert(zq_tokenizer *tok, int32_t id)
{
    const char *s = tok->arena + tok->offsets[id];
    uint32_t i = (uint32_t)hash_token(false, s, tok->lens[id]) & tok->mask;
    for (;; i = (i + 1) & tok->mask) {
        int32_t old = tok->slots[i];
        if (old < 0) {
            tok->slots[i] = id;
            return;
        }
        if (token_equals(tok, old, false, s, tok->lens[id])) {
            if (id < tok->n_vocab)
                tok->slots[i] = id;
            return;
        }
    }
}

size_t zq_tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    *cp = 0xFFFD;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t need;
    uint32_t value;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1, value = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2, value = b & 0x0F;
        lo = b == 0xE0 ? 0xA0 : 0x80; /* 0xE0 0x80..0x9F would be overlong */
        hi = b == 0xED ? 0x9F : 0xBF; /* 0xED 0xA0..0xBF would be a surrogate */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3, value = b & 0x07;
        lo = b == 0xF0 ? 0x90 : 0x80;
        hi = b == 0xF4 ? 0x8F : 0xBF; /* above U+10FFFF */
    } else {
        return 1;
    }
    if (n <= need || s[1] < lo || s[1] > hi)
        return 1;
    for (size_t i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 1;
        value = (value << 6) | (s[i] & 0x3F);
    }
    *cp = value;
    return need + 1;
}

/* An encoded U+FFFD decodes in 3 bytes; an invalid byte decodes to U+FFFD in 1. */
static bool valid_utf8(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t step = zq_tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (cp == 0xFFFD && step == 1)
            return false;
        i += step;
    }
    return true;
}

static zq_status check_args(const char *const *vocab, int n_vocab, const char *const *added,
                            int n_added)
{
    if (n_vocab < 1 || !vocab)
        return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: vocabulary is empty (%d tokens)", n_vocab);
    if (n_added < 0 || (n_added > 0 && !added) || n_added > INT32_MAX / 4 - n_vocab)
        return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: invalid added token count %d", n_added);
    for (int i = 0; i < n_vocab; i++)
        if (!vocab[i])
            return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: vocabulary string %d is NULL", i);
    for (int j = 0; j < n_added; j++) {
        if (!added[j] || !added[j][0])
            return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: added token %d is empty", j);
        if (!valid_utf8(added[j]))
            return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: added token %d is not valid UTF-8",
                           j);
    }
    return ZQ_OK;
}

/* Copies every string into one arena and records offsets, lengths and the longest body. */
static zq_status copy_strings(zq_tokenizer *tok, const char *const *vocab,
                              const char *const *added)
{
    int n = tok->n_vocab + tok->n_added;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const char *s = i < tok->n_vocab ? vocab[i] : added[i - tok->n_vocab];
        size_t len = strlen(s);
        if (len > UINT32_MAX / 2)
            return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: token %d is %zu bytes long", i, len);
        tok->lens[i] = (uint32_t)len;
        tok->offsets[i] = total;
        total += len + 1;
    }
    tok->arena = malloc(total);
    if (!tok->arena)
        return zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot allocate %zu bytes of strings", total);
    for (int i = 0; i < n; i++) {
        const char *s = i < tok->n_vocab ? vocab[i] : added[i - tok->n_vocab];
        memcpy(tok->arena + tok->offsets[i], s, tok->lens[i] + 1);
        size_t body = tok->lens[i] - (strncmp(s, "##", 2) == 0 ? 2 : 0);
        if (i < tok->n_vocab && body > tok->max_body)
            tok->max_body = body;
    }
    return ZQ_OK;
}

static zq_status build_table(zq_tokenizer *tok)
{
    size_t n = (size_t)tok->n_vocab + (size_t)tok->n_added;
    size_t slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    tok->slots = malloc(slots * sizeof *tok->slots);
    if (!tok->slots)
        return zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot allocate a %zu-slot table", slots);
    memset(tok->slots, 0xFF, slots * sizeof *tok->slots); /* every slot -1 */
    tok->mask = (uint32_t)(slots - 1);
    for (size_t i = 0; i < n; i++)
        table_insert(tok, (int32_t)i);
    return ZQ_OK;
}

/* Orders added tokens (indices into the added list) by first byte, then longest first, then
 * by index, so that among equal strings the first one given wins. */
static bool added_before(const zq_tokenizer *tok, int32_t a, int32_t b)
{
    const char *sa = tok->arena + tok->offsets[tok->n_vocab + a];
    const char *sb = tok->arena + tok->offsets[tok->n_vocab + b];
    uint32_t la = tok->lens[tok->n_vocab + a], lb = tok->lens[tok->n_vocab + b];
    if (sa[0] != sb[0])
        return (unsigned char)sa[0] < (unsigned char)sb[0];
    if (la != lb)
        return la > lb;
    return a < b;
}

static zq_status index_added(zq_tokenizer *tok)
{
    int32_t *order = malloc(((size_t)tok->n_added + 1) * sizeof *order);
    if (!order)
        return zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot index %d added tokens", tok->n_added);
    tok->added_order = order;
    for (int j = 0; j < tok->n_added; j++) { /* insertion sort: lists are short */
        int k = j;
        while (k > 0 && added_before(tok, j, order[k - 1])) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = j;
    }
    int j = 0;
    for (int b = 0; b < 256; b++) {
        tok->added_start[b] = j;
        while (j < tok->n_added &&
               (unsigned char)tok->arena[tok->offsets[tok->n_vocab + order[j]]] == b)
            j++;
    }
    tok->added_start[256] = j;
    return ZQ_OK;
}

static void find_specials(zq_tokenizer *tok)
{
    tok->special.pad = zq_tokenizer_find(tok, "[PAD]");
    tok->special.unk = zq_tokenizer_find(tok, "[UNK]");
    tok->special.cls = zq_tokenizer_find(tok, "[CLS]");
    tok->special.sep = zq_tokenizer_find(tok, "[SEP]");
    tok->special.mask = zq_tokenizer_find(tok, "[MASK]");
}

zq_status zq_tokenizer_create(const char *const *vocab, int n_vocab, const char *const *added,
                              int n_added, bool lower_case, zq_tokenizer **out)
{
    if (!out)
        return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: output pointer is NULL");
    *out = NULL;
    ZQ_TRY(check_args(vocab, n_vocab, added, n_added));
    zq_tokenizer *tok = calloc(1, sizeof *tok);
    size_t n = (size_t)n_vocab + (size_t)n_added;
    if (tok) {
        tok->offsets = malloc(n * sizeof *tok->offsets);
        tok->lens = malloc(n * sizeof *tok->lens);
    }
    if (!tok || !tok->offsets || !tok->lens) {
        zq_tokenizer_free(tok);
        return zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot allocate %zu tokens", n);
    }
    tok->n_vocab = n_vocab;
    tok->n_added = n_added;
    tok->lower_case = lower_case;
    zq_status st = copy_strings(tok, vocab, added);
    if (st == ZQ_OK)
        st = build_table(tok);
    if (st == ZQ_OK)
        st = index_added(tok);
    if (st != ZQ_OK) {
        zq_tokenizer_free(tok);
        return st;
    }
    find_specials(tok);
    *out = tok;
    return ZQ_OK;
}

void zq_tokenizer_free(zq_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->arena);
    free(tok->offsets);
    free(tok->lens);
    free(tok->slots);
    free(tok->added_order);
    free(tok);
}

int zq_tokenizer_size(const zq_tokenizer *tok)
{
    return tok->n_vocab + tok->n_added;
}

const char *zq_tokenizer_str(const zq_tokenizer *tok, int32_t id)
{
    if (id < 0 || id >= zq_tokenizer_size(tok))
        return NULL;
    return tok->arena + tok->offsets[id];
}

int32_t zq_tokenizer_find(const zq_tokenizer *tok, const char *token)
{
    return zq_tok_lookup(tok, false, token, strlen(token));
}

zq_special_tokens zq_tokenizer_special(const zq_tokenizer *tok)
{
    return tok->special;
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* Returns the text of id without its "##" (setting *continuation), or "" for an id out of
 * range and for [CLS], [SEP], [PAD] and [MASK]. */
static const char *piece_text(const zq_tokenizer *tok, int32_t id, size_t *len,
                              bool *continuation)
{
    const zq_special_tokens *sp = &tok->special;
    *continuation = false;
    *len = 0;
    if (id < 0 || id >= zq_tokenizer_size(tok) || id == sp->cls || id == sp->sep ||
        id == sp->pad || id == sp->mask)
        return "";
    const char *s = tok->arena + tok->offsets[id];
    *len = tok->lens[id];
    if (*len > 2 && s[0] == '#' && s[1] == '#') {
        *continuation = true;
        *len -= 2;
        return s + 2;
    }
    return s;
}

/* True for characters that never take a space on either side: CJK ideographs, kana, hangul,
 * full-width forms, and every non-ASCII character that is not a letter, mark or digit
 * (Chinese punctuation such as "，" "“" "…", symbols, emoji). */
static bool is_tight(uint32_t cp)
{
    if (cp < 0x80)
        return false;
    if (cp >= 0x2E80 || zq_tok_is_cjk(cp))
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return false;
    default:
        return true;
    }
}

static uint32_t first_char(const char *s, size_t len)
{
    uint32_t cp;
    zq_tok_utf8_next((const unsigned char *)s, len, &cp);
    return cp;
}

static uint32_t last_char(const char *s, size_t len)
{
    size_t start = len - 1;
    while (start > 0 && len - start < 4 && ((unsigned char)s[start] & 0xC0) == 0x80)
        start--;
    uint32_t cp;
    zq_tok_utf8_next((const unsigned char *)s + start, len - start, &cp);
    return cp;
}

/* The spacing rule between the text of the previous piece (ending in a) and this one
 * (starting with b), neither empty nor a "##" continuation. */
static bool space_between(uint32_t a, uint32_t b)
{
    if (is_tight(a) || is_tight(b))
        return false;
    /* HF's clean_up_tokenization_spaces: no space before . , ! ? and none around ' */
    if (b == '.' || b == ',' || b == '!' || b == '?' || b == '\'' || a == '\'')
        return false;
    return true;
}

size_t zq_tokenizer_piece(const zq_tokenizer *tok, int32_t prev, int32_t id, char *buf,
                          size_t cap)
{
    size_t len, prev_len;
    bool continuation, prev_continuation;
    const char *text = piece_text(tok, id, &len, &continuation);
    const char *prev_text = piece_text(tok, prev, &prev_len, &prev_continuation);
    bool space = len > 0 && prev_len > 0 && !continuation &&
                 space_between(last_char(prev_text, prev_len), first_char(text, len));
    size_t total = len + (space ? 1 : 0);
    if (cap > 0) {
        size_t n = total < cap - 1 ? total : cap - 1;
        if (space && n > 0)
            buf[0] = ' ';
        size_t from = space ? 1 : 0;
        if (n > from)
            memcpy(buf + from, text, n - from);
        buf[n] = '\0';
    }
    return total;
}
