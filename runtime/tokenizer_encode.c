/*
 * tokenizer_encode.c - text to ids with Hugging Face BertTokenizer semantics (the slow Python
 * tokenizer, do_lower_case as configured, strip_accents unset).
 *
 * The text is scanned once. Added tokens are cut out first. Each stretch between them goes
 * through BERT's basic tokenizer one whitespace-separated word at a time, and each piece of a
 * word goes through WordPiece. Unicode properties come from libutf8proc; its Unicode version
 * (15.0 in utf8proc 2.8) may differ from the Python that HF runs under, which only matters
 * for code points assigned between the two versions.
 */
#include "tokenizer_impl.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* A growable array of code points. */
typedef struct {
    uint32_t *data;
    size_t n, cap;
} cp_buf;

typedef struct {
    const zq_tokenizer *tok;
    int32_t *ids;
    int cap;
    int64_t n; /* ids produced so far, including those past cap */
    zq_status status;

    cp_buf word;  /* code points of the current whitespace-separated word, after cleaning */
    cp_buf norm;  /* the word lower-cased and without accents */
    char *utf8;   /* one punctuation-split piece of norm as UTF-8 */
    size_t *offs; /* byte offset of each code point of utf8, plus the end */
} encoder;

static bool cp_push(encoder *e, cp_buf *b, uint32_t cp)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        uint32_t *data = realloc(b->data, cap * sizeof *data);
        if (!data) {
            e->status = zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot grow a word to %zu chars", cap);
            return false;
        }
        b->data = data;
        b->cap = cap;
    }
    b->data[b->n++] = cp;
    return true;
}

static void emit(encoder *e, int32_t id)
{
    if (e->n < e->cap)
        e->ids[e->n] = id;
    e->n++;
}

static void emit_unk(encoder *e)
{
    if (e->tok->special.unk < 0) {
        e->status = zq_fail(ZQ_ERR_UNSUPPORTED,
                            "tokenizer: a word is not in the vocabulary, which has no [UNK]");
        return;
    }
    emit(e, e->tok->special.unk);
}

/* ---- character classes, as BERT's basic tokenizer defines them ---------------------------- */

static bool is_whitespace(uint32_t cp)
{
    if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r')
        return true;
    /* U+2028 and U+2029 are not Zs, but Python's str.split() splits on them */
    if (cp < 0x80)
        return false;
    return cp == 0x2028 || cp == 0x2029 ||
           utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_ZS;
}

/* Categories C* (Cc, Cf, Cs, Co, Cn), except tab, newline and carriage return. */
static bool is_control(uint32_t cp)
{
    if (cp < 0x80)
        return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7F;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS ||
           c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CN;
}

/* Categories P* plus every ASCII non-alphanumeric printable ("$", "+", "^" are symbols). */
static bool is_punctuation(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}

/* ---- lower-casing and accent stripping ---------------------------------------------------- */

/* Unicode's Cased property, approximated by the letter case categories.
 * NOTE: Other_Lowercase and Other_Uppercase letters (such as "ª", "ʰ", "Ⓐ") are missed, so a
 * capital sigma right after one becomes "σ" here where Python gives "ς". */
static bool is_cased(uint32_t cp)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

/* Unicode's Case_Ignorable property: marks, format characters, modifiers, and the
 * Word_Break MidLetter, MidNumLet and Single_Quote characters. */
static bool is_case_ignorable(uint32_t cp)
{
    static const uint32_t mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,  0x5F4, 0x2018,
                                   0x2019, 0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07,
                                   0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (cp == mid[i])
            return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK:
        return true;
    default:
        return false;
    }
}

/* Python's str.lower() turns a capital sigma into final sigma (U+03C2) when a cased letter
 * comes before it and none after it, skipping case-ignorable characters both ways. */
static bool is_final_sigma(const uint32_t *w, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && is_case_ignorable(w[j - 1]))
        j--;
    if (j == 0 || !is_cased(w[j - 1]))
        return false;
    for (j = i + 1; j < n && is_case_ignorable(w[j]); j++)
        ;
    return j == n || !is_cased(w[j]);
}

/* Python's str.lower() of w[i] in the context of the word w. utf8proc maps one code point to
 * one; Python differs only for U+0130 (to "i" plus U+0307, a mark that accent stripping drops
 * anyway) and for the final sigma. */
static uint32_t lower_at(const uint32_t *w, size_t n, size_t i)
{
    uint32_t cp = w[i];
    if (cp < 0x80)
        return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    if (cp == 0x3A3 && is_final_sigma(w, n, i))
        return 0x3C2;
    return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
}

static int combining_class(uint32_t cp)
{
    return utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
}

/* Canonical ordering of NFD: a stable sort by combining class within each run of
 * characters whose class is not 0. */
static void canonical_order(uint32_t *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint32_t cp = s[i];
        int cc = combining_class(cp);
        if (cc == 0)
            continue;
        size_t k = i;
        while (k > 0 && combining_class(s[k - 1]) > cc) {
            s[k] = s[k - 1];
            k--;
        }
        s[k] = cp;
    }
}

/* Fills e->norm with the current word lower-cased, NFD-decomposed and without category Mn,
 * as HF does when lower_case is set; otherwise with the word unchanged. */
static bool normalize_word(encoder *e)
{
    const cp_buf *w = &e->word;
    e->norm.n = 0;
    for (size_t i = 0; i < w->n; i++) {
        uint32_t cp = e->tok->lower_case ? lower_at(w->data, w->n, i) : w->data[i];
        if (cp < 0x80 || !e->tok->lower_case) {
            if (!cp_push(e, &e->norm, cp))
                return false;
            continue;
        }
        utf8proc_int32_t parts[8];
        int last_class = 0;
        utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cp, parts, 8,
                                                     UTF8PROC_DECOMPOSE, &last_class);
        if (n < 1 || n > 8) { /* canonical decompositions are at most 4 long */
            parts[0] = (utf8proc_int32_t)cp;
            n = 1;
        }
        for (utf8proc_ssize_t k = 0; k < n; k++)
            if (!cp_push(e, &e->norm, (uint32_t)parts[k]))
                return false;
    }
    if (!e->tok->lower_case)
        return true;
    canonical_order(e->norm.data, e->norm.n);
    size_t n_unmarked = 0;
    for (size_t i = 0; i < e->norm.n; i++) {
        uint32_t cp = e->norm.data[i];
        if (cp < 0x80 || utf8proc_category((utf8proc_int32_t)cp) != UTF8PROC_CATEGORY_MN)
            e->norm.data[n_unmarked++] = cp;
    }
    e->norm.n = n_unmarked;
    return true;
}

/* ---- WordPiece ------------------------------------------------------------------------------ */

/* Encodes norm[from..to) as UTF-8 into e->utf8 and the offset of each code point into e->offs;
 * to - from is at most ZQ_TOK_MAX_WORD_CHARS. */
static void piece_to_utf8(encoder *e, size_t from, size_t to)
{
    size_t len = 0;
    for (size_t i = from; i < to; i++) {
        e->offs[i - from] = len;
        len += (size_t)utf8proc_encode_char((utf8proc_int32_t)e->norm.data[i],
                                            (utf8proc_uint8_t *)e->utf8 + len);
    }
    e->offs[to - from] = len;
}

/* Greedy longest-match-first WordPiece over norm[from..to). A piece that no vocabulary entry
 * matches turns the whole word into one [UNK]. */
static void wordpiece(encoder *e, size_t from, size_t to)
{
    size_t n_chars = to - from;
    if (n_chars > ZQ_TOK_MAX_WORD_CHARS) {
        emit_unk(e);
        return;
    }
    piece_to_utf8(e, from, to);
    int32_t found[ZQ_TOK_MAX_WORD_CHARS];
    int n_found = 0;
    for (size_t start = 0; start < n_chars;) {
        size_t end = n_chars;
        while (end > start && e->offs[end] - e->offs[start] > e->tok->max_body)
            end--;
        int32_t id = -1;
        for (; end > start; end--) {
            id = zq_tok_lookup(e->tok, start > 0, e->utf8 + e->offs[start],
                               e->offs[end] - e->offs[start]);
            if (id >= 0 && id < e->tok->n_vocab)
                break;
            id = -1;
        }
        if (id < 0) {
            emit_unk(e);
            return;
        }
        found[n_found++] = id;
        start = end;
    }
    for (int i = 0; i < n_found; i++)
        emit(e, found[i]);
}

/* Runs the basic tokenizer's per-word steps on e->word: normalize, split off each punctuation
 * character as its own piece, and WordPiece every piece. */
static void flush_word(encoder *e)
{
    if (e->word.n == 0)
        return;
    bool ok = normalize_word(e);
    e->word.n = 0;
    if (!ok)
        return;
    size_t start = 0;
    for (size_t i = 0; i < e->norm.n && e->status == ZQ_OK; i++) {
        if (!is_punctuation(e->norm.data[i]))
            continue;
        if (i > start)
            wordpiece(e, start, i);
        wordpiece(e, i, i + 1);
        start = i + 1;
    }
    if (start < e->norm.n && e->status == ZQ_OK)
        wordpiece(e, start, e->norm.n);
}

/* Runs the basic tokenizer over text[0..len), which contains no added token. Cleaning drops
 * NUL, U+FFFD (and so every invalid byte) and control characters. Whitespace ends a word, and
 * each CJK ideograph is a word of its own. */
static void encode_span(encoder *e, const unsigned char *text, size_t len)
{
    for (size_t i = 0; i < len && e->status == ZQ_OK;) {
        uint32_t cp;
        i += zq_tok_utf8_next(text + i, len - i, &cp);
        if (cp == 0 || cp == 0xFFFD || is_control(cp))
            continue;
        if (is_whitespace(cp)) {
            flush_word(e);
        } else if (zq_tok_is_cjk(cp)) {
            flush_word(e);
            if (cp_push(e, &e->word, cp))
                flush_word(e);
        } else {
            cp_push(e, &e->word, cp);
        }
    }
    if (e->status == ZQ_OK)
        flush_word(e);
}

/* Returns the index of the longest added token at the start of s[0..n), or -1. */
static int match_added(const zq_tokenizer *tok, const unsigned char *s, size_t n)
{
    for (int k = tok->added_start[s[0]]; k < tok->added_start[s[0] + 1]; k++) {
        int32_t j = tok->added_order[k];
        int32_t id = tok->n_vocab + j;
        if (tok->lens[id] <= n && memcmp(tok->arena + tok->offsets[id], s, tok->lens[id]) == 0)
            return j;
    }
    return -1;
}

/* Cuts added tokens out of the text (longest match, trying each code point from the left)
 * and runs the basic tokenizer on the stretches between them. */
static void encode_text(encoder *e, const unsigned char *text, size_t len)
{
    size_t span = 0;
    for (size_t i = 0; i < len && e->tok->n_added > 0 && e->status == ZQ_OK;) {
        int j = match_added(e->tok, text + i, len - i);
        if (j < 0) {
            uint32_t cp;
            i += zq_tok_utf8_next(text + i, len - i, &cp);
            continue;
        }
        encode_span(e, text + span, i - span);
        emit(e, e->tok->n_vocab + j);
        i += e->tok->lens[e->tok->n_vocab + j];
        span = i;
    }
    if (e->status == ZQ_OK)
        encode_span(e, text + span, len - span);
}

zq_status zq_tokenizer_encode(const zq_tokenizer *tok, const char *text, size_t len,
                              int32_t *ids, int cap, int *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!tok || (!text && len > 0) || cap < 0 || (!ids && cap > 0) || !n_out)
        return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: invalid arguments (cap %d)", cap);
    if (len > (size_t)INT32_MAX / 4) /* keeps the id count, a few per byte at most, in an int */
        return zq_fail(ZQ_ERR_INVALID_ARG, "tokenizer: text of %zu bytes is too long", len);
    encoder e = {.tok = tok, .ids = ids, .cap = cap, .status = ZQ_OK};
    size_t piece_bytes = 4 * ZQ_TOK_MAX_WORD_CHARS;
    e.utf8 = malloc(piece_bytes);
    e.offs = malloc((ZQ_TOK_MAX_WORD_CHARS + 1) * sizeof *e.offs);
    if (!e.utf8 || !e.offs)
        e.status = zq_fail(ZQ_ERR_NOMEM, "tokenizer: cannot allocate scratch memory");
    else
        encode_text(&e, (const unsigned char *)text, len);
    free(e.word.data);
    free(e.norm.data);
    free(e.utf8);
    free(e.offs);
    if (e.status != ZQ_OK)
        return e.status;
    *n_out = (int)e.n;
    if (e.n > cap)
        return zq_fail(ZQ_ERR_CONTEXT_FULL, "tokenizer: the text has %lld tokens, room for %d",
                       (long long)e.n, cap);
    return ZQ_OK;
}
