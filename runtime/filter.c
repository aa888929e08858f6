/*
 * filter.c - the sensitive-word filter of filter.h: word-list loading, normalisation, an
 * Aho-Corasick automaton over normalised code points, and one-shot and streaming masking.
 *
 * The automaton's nodes are the prefixes of the words. Edges live in one open-addressing hash
 * table keyed by (node, code point), because CJK alphabets are too large for per-node arrays.
 * Besides its failure link, each node caches what the scans need without walking the links:
 * the longest word ending there and the number of words ending there. It also caches its
 * "hold" depth, the longest suffix that is a proper prefix of some word. A stream keeps back
 * only that many normalised code points.
 */
#include "filter.h"

#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define EMPTY_KEY UINT64_MAX

struct zq_filter {
    int n_words;
    int max_chars;
    int32_t n_nodes;
    /* per node [n_nodes]; node 0 is the root (the empty prefix) */
    int32_t *parent;
    int32_t *label;       /* code point on the edge from the parent */
    int32_t *depth;       /* prefix length in code points */
    int32_t *fail;        /* node of the longest proper suffix that is also a prefix */
    int32_t *match_chars; /* length of the longest word that is a suffix here, 0 if none */
    int32_t *match_count; /* words that are suffixes here, this prefix included */
    int32_t *hold;        /* length of the longest suffix that is a proper prefix of a word */
    uint8_t *is_word;
    uint8_t *has_child;
    /* edges: keys[i] = parent << 21 | code point, children[i] the child node */
    uint64_t *keys;
    int32_t *children;
    size_t edge_mask; /* table size - 1; the size is a power of two */
};

/* ---- UTF-8 decoding and normalisation -------------------------------------------------- */

/* Returns the length of the UTF-8 sequence that lead starts, 0 if lead cannot start one. */
static size_t sequence_length(uint8_t lead)
{
    if (lead < 0x80)
        return 1;
    if (lead < 0xC0)
        return 0; /* a continuation byte */
    if (lead < 0xE0)
        return 2;
    if (lead < 0xF0)
        return 3;
    if (lead < 0xF8)
        return 4;
    return 0;
}

/* Decodes the unit at s[0..avail): one valid UTF-8 character, or one byte that starts no valid
 * character (*cp = -1). Returns its length, or 0 when the bytes so far are a valid-looking
 * incomplete character and more may follow (final false). The result depends only on the
 * bytes it looks at, so a stream decodes exactly as a one-shot scan does. */
static size_t decode_unit(const uint8_t *s, size_t avail, bool final, int32_t *cp)
{
    const size_t need = sequence_length(s[0]);
    *cp = -1;
    if (need == 0)
        return 1;
    if (avail < need) {
        for (size_t i = 1; i < avail; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 1;
        }
        return final ? 1 : 0;
    }
    utf8proc_int32_t value;
    if (utf8proc_iterate(s, (utf8proc_ssize_t)need, &value) != (utf8proc_ssize_t)need)
        return 1;
    *cp = value;
    return need;
}

static bool is_noise_category(utf8proc_category_t category)
{
    switch (category) {
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO: case UTF8PROC_CATEGORY_SM: case UTF8PROC_CATEGORY_SC:
    case UTF8PROC_CATEGORY_SK: case UTF8PROC_CATEGORY_SO: case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
        return true;
    default:
        return false;
    }
}

/* Folds one code point the way NFKC_Casefold would when that yields one code point, else
 * lower-cases it. Multi-code-point results (U+FB01 "ﬁ" to "fi") are not taken, so every
 * normalised code point maps back to exactly one original character. */
static int32_t fold_code_point(int32_t cp)
{
    utf8proc_int32_t buf[8];
    int boundclass = 0;
    const utf8proc_option_t options =
        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT | UTF8PROC_CASEFOLD;
    utf8proc_ssize_t n = utf8proc_decompose_char(cp, buf, 8, options, &boundclass);
    if (n >= 1 && n <= 8)
        n = utf8proc_normalize_utf32(buf, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    return n == 1 ? buf[0] : utf8proc_tolower(cp);
}

/* Returns the normalised code point of a decoded unit, or -1 if the unit is noise. */
static int32_t normalise(int32_t cp)
{
    if (cp < 0)
        return -1; /* invalid byte */
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9'))
            return cp;
        if (cp >= 'A' && cp <= 'Z')
            return cp - 'A' + 'a';
        return -1; /* ASCII space, controls, punctuation and symbols */
    }
    if (cp >= 0x4E00 && cp <= 0x9FFF)
        return cp; /* CJK unified ideographs: letters with no folding */
    if (cp >= 0xFF01 && cp <= 0xFF5E)
        return normalise(cp - 0xFEE0); /* full-width ASCII */
    if (is_noise_category(utf8proc_category(cp)))
        return -1;
    return fold_code_point(cp);
}

/* Counts the normalised code points of a word. Returns -1 and sets *bad_byte at the first
 * invalid UTF-8 byte. */
static int count_word_chars(const char *text, size_t len, size_t *bad_byte)
{
    int chars = 0;
    size_t pos = 0;
    while (pos < len) {
        int32_t cp;
        size_t n = decode_unit((const uint8_t *)text + pos, len - pos, true, &cp);
        if (cp < 0) {
            *bad_byte = pos;
            return -1;
        }
        chars += normalise(cp) >= 0;
        pos += n;
    }
    return chars;
}

/* ---- the automaton ---------------------------------------------------------------------- */

static size_t edge_slot(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & mask;
}

static int32_t edge_find(const zq_filter *f, int32_t node, int32_t cp)
{
    const uint64_t key = (uint64_t)node << 21 | (uint64_t)cp;
    for (size_t i = edge_slot(key, f->edge_mask);; i = (i + 1) & f->edge_mask) {
        if (f->keys[i] == key)
            return f->children[i];
        if (f->keys[i] == EMPTY_KEY)
            return -1;
    }
}

static void edge_add(zq_filter *f, int32_t node, int32_t cp, int32_t child)
{
    const uint64_t key = (uint64_t)node << 21 | (uint64_t)cp;
    size_t i = edge_slot(key, f->edge_mask);
    while (f->keys[i] != EMPTY_KEY)
        i = (i + 1) & f->edge_mask;
    f->keys[i] = key;
    f->children[i] = child;
}

static int32_t step(const zq_filter *f, int32_t state, int32_t cp)
{
    for (;;) {
        int32_t next = edge_find(f, state, cp);
        if (next >= 0)
            return next;
        if (state == 0)
            return 0;
        state = f->fail[state];
    }
}

static zq_status alloc_nodes(zq_filter *f, int64_t max_nodes)
{
    if (max_nodes > INT32_MAX / 2)
        return zq_fail(ZQ_ERR_INVALID_ARG, "filter: %lld characters in the word list, expected"
                       " at most %d", (long long)max_nodes, INT32_MAX / 2);
    int32_t **arrays[] = {&f->parent,      &f->label,       &f->depth, &f->fail,
                          &f->match_chars, &f->match_count, &f->hold};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        *arrays[i] = calloc((size_t)max_nodes, sizeof(int32_t));
        if (!*arrays[i])
            return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory for %lld nodes",
                           (long long)max_nodes);
    }
    f->is_word = calloc((size_t)max_nodes, 1);
    f->has_child = calloc((size_t)max_nodes, 1);
    size_t slots = 16;
    while (slots < (size_t)max_nodes * 2)
        slots *= 2;
    f->keys = malloc(slots * sizeof *f->keys);
    f->children = malloc(slots * sizeof *f->children);
    if (!f->is_word || !f->has_child || !f->keys || !f->children)
        return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory for %lld nodes",
                       (long long)max_nodes);
    memset(f->keys, 0xff, slots * sizeof *f->keys); /* every key EMPTY_KEY */
    f->edge_mask = slots - 1;
    f->n_nodes = 1;
    return ZQ_OK;
}

/* Adds one word (valid UTF-8, at least one normalised code point) to the trie. */
static void insert_word(zq_filter *f, const char *text, size_t len)
{
    int32_t node = 0;
    size_t pos = 0;
    while (pos < len) {
        int32_t cp;
        pos += decode_unit((const uint8_t *)text + pos, len - pos, true, &cp);
        cp = normalise(cp);
        if (cp < 0)
            continue;
        int32_t child = edge_find(f, node, cp);
        if (child < 0) {
            child = f->n_nodes++;
            f->parent[child] = node;
            f->label[child] = cp;
            f->depth[child] = f->depth[node] + 1;
            f->has_child[node] = 1;
            edge_add(f, node, cp, child);
        }
        node = child;
    }
    if (!f->is_word[node]) {
        f->is_word[node] = 1;
        f->n_words++;
        f->max_chars = f->depth[node] > f->max_chars ? f->depth[node] : f->max_chars;
    }
}

/* Sets the failure links and the cached match and hold values, visiting nodes in order of
 * depth so that every link target is finished first. */
static zq_status link_nodes(zq_filter *f)
{
    const int32_t n = f->n_nodes;
    int32_t *order = malloc((size_t)n * sizeof *order);
    int32_t *starts = calloc((size_t)f->max_chars + 2, sizeof *starts);
    if (!order || !starts) {
        free(order);
        free(starts);
        return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory for %d nodes", n);
    }
    for (int32_t v = 0; v < n; v++) /* counting sort by depth */
        starts[f->depth[v] + 1]++;
    for (int d = 1; d <= f->max_chars + 1; d++)
        starts[d] += starts[d - 1];
    for (int32_t v = 0; v < n; v++)
        order[starts[f->depth[v]]++] = v;

    for (int32_t i = 1; i < n; i++) {
        const int32_t v = order[i];
        const int32_t parent = f->parent[v];
        f->fail[v] = parent == 0 ? 0 : step(f, f->fail[parent], f->label[v]);
        const int32_t link = f->fail[v];
        const int32_t own = f->is_word[v] ? f->depth[v] : 0;
        f->match_chars[v] = own > f->match_chars[link] ? own : f->match_chars[link];
        f->match_count[v] = f->is_word[v] + f->match_count[link];
        f->hold[v] = f->has_child[v] ? f->depth[v] : f->hold[link];
    }
    free(order);
    free(starts);
    return ZQ_OK;
}

typedef struct {
    const char *text;
    size_t len;
} word_ref;

static zq_status build(const word_ref *words, int n, int64_t total_chars, zq_filter **out)
{
    zq_filter *f = calloc(1, sizeof *f);
    if (!f)
        return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory");
    zq_status status = alloc_nodes(f, total_chars + 1);
    if (status == ZQ_OK) {
        for (int i = 0; i < n; i++)
            insert_word(f, words[i].text, words[i].len);
        status = link_nodes(f);
    }
    if (status != ZQ_OK) {
        zq_filter_free(f);
        return status;
    }
    ZQ_DEBUG("%d words, %d nodes, longest %d characters", f->n_words, f->n_nodes,
             f->max_chars);
    *out = f;
    return ZQ_OK;
}

/* ---- creating and loading --------------------------------------------------------------- */

zq_status zq_filter_create(const char *const *words, int n, zq_filter **out)
{
    *out = NULL;
    if (n < 0 || (n > 0 && !words))
        return zq_fail(ZQ_ERR_INVALID_ARG, "filter: %d words at %p", n, (const void *)words);
    word_ref *refs = malloc(((size_t)n + 1) * sizeof *refs);
    if (!refs)
        return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory for %d words", n);
    int kept = 0;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!words[i]) {
            free(refs);
            return zq_fail(ZQ_ERR_INVALID_ARG, "filter: word %d is NULL", i);
        }
        size_t len = strlen(words[i]), bad_byte = 0;
        int chars = count_word_chars(words[i], len, &bad_byte);
        if (chars < 0) {
            free(refs);
            return zq_fail(ZQ_ERR_INVALID_ARG,
                           "filter: word %d is invalid UTF-8 at byte %zu; pass UTF-8 text", i,
                           bad_byte);
        }
        if (chars == 0) {
            ZQ_WARN("word %d has only spaces, punctuation or symbols; skipped", i);
            continue;
        }
        refs[kept++] = (word_ref){words[i], len};
        total += chars;
    }
    zq_status status = build(refs, kept, total, out);
    free(refs);
    return status;
}

static zq_status read_whole_file(const char *path, char **data, size_t *size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        return zq_fail(ZQ_ERR_IO, "%s: cannot open the word list: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(file);
                return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory reading the word list", path);
            }
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, file);
        len += n;
    } while (n > 0);
    const int read_error = ferror(file) ? (errno ? errno : EIO) : 0;
    fclose(file);
    if (read_error) {
        free(buf);
        return zq_fail(ZQ_ERR_IO, "%s: cannot read the word list: %s", path,
                       strerror(read_error));
    }
    *data = buf;
    *size = len;
    return ZQ_OK;
}

/* Splits data into words, skipping blank and '#' lines. Fills refs (room for one per line). */
static zq_status parse_lines(const char *path, const char *data, size_t size, word_ref *refs,
                             int *n_refs, int64_t *total_chars)
{
    size_t pos = size >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    for (int line = 1; pos < size; line++) {
        const char *start = data + pos;
        const char *newline = memchr(start, '\n', size - pos);
        size_t len = newline ? (size_t)(newline - start) : size - pos;
        pos += len + 1;
        if (len > 0 && start[len - 1] == '\r')
            len--;
        if (len == 0 || start[0] == '#')
            continue;
        size_t bad_byte = 0;
        int chars = count_word_chars(start, len, &bad_byte);
        if (chars < 0)
            return zq_fail(ZQ_ERR_FORMAT, "%s:%d: invalid UTF-8 at byte %zu of the line; "
                           "save the word list as UTF-8", path, line, bad_byte + 1);
        if (chars == 0) {
            ZQ_WARN("%s:%d: the line has only spaces, punctuation or symbols; skipped", path,
                    line);
            continue;
        }
        refs[(*n_refs)++] = (word_ref){start, len};
        *total_chars += chars;
    }
    return ZQ_OK;
}

zq_status zq_filter_load(const char *path, zq_filter **out)
{
    *out = NULL;
    char *data = NULL;
    size_t size = 0;
    ZQ_TRY(read_whole_file(path, &data, &size));
    size_t lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    word_ref *refs = malloc(lines * sizeof *refs);
    if (!refs) {
        free(data);
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for %zu lines", path, lines);
    }
    int n_refs = 0;
    int64_t total = 0;
    zq_status status = lines > INT32_MAX
                           ? zq_fail(ZQ_ERR_INVALID_ARG, "%s: %zu lines, expected at most %d",
                                     path, lines, INT32_MAX)
                           : parse_lines(path, data, size, refs, &n_refs, &total);
    if (status == ZQ_OK)
        status = build(refs, n_refs, total, out);
    if (status == ZQ_OK)
        ZQ_INFO("%s: %d words", path, (*out)->n_words);
    free(refs);
    free(data);
    return status;
}

void zq_filter_free(zq_filter *filter)
{
    if (!filter)
        return;
    free(filter->parent);
    free(filter->label);
    free(filter->depth);
    free(filter->fail);
    free(filter->match_chars);
    free(filter->match_count);
    free(filter->hold);
    free(filter->is_word);
    free(filter->has_child);
    free(filter->keys);
    free(filter->children);
    free(filter);
}

int zq_filter_word_count(const zq_filter *filter)
{
    return filter->n_words;
}

int zq_filter_max_word_chars(const zq_filter *filter)
{
    return filter->max_chars;
}

/* ---- one-shot matching and masking ------------------------------------------------------ */

bool zq_filter_match(const zq_filter *filter, const char *text, size_t len)
{
    const uint8_t *s = (const uint8_t *)text;
    int32_t state = 0;
    for (size_t pos = 0; pos < len;) {
        int32_t cp;
        pos += decode_unit(s + pos, len - pos, true, &cp);
        cp = normalise(cp);
        if (cp < 0)
            continue;
        state = step(filter, state, cp);
        if (filter->match_chars[state] > 0)
            return true;
    }
    return false;
}

/* Sets masked[i] for every byte inside a match and returns the number of occurrences. starts
 * is a ring of the byte offsets of the last max_chars normalised code points. */
static int64_t mark_matches(const zq_filter *f, const uint8_t *s, size_t len, uint8_t *masked,
                            size_t *starts)
{
    const int64_t ring = f->max_chars > 0 ? f->max_chars : 1;
    int64_t seen = 0, hits = 0;
    int32_t state = 0;
    for (size_t pos = 0; pos < len;) {
        int32_t cp;
        const size_t n = decode_unit(s + pos, len - pos, true, &cp);
        cp = normalise(cp);
        if (cp >= 0) {
            starts[seen % ring] = pos;
            seen++;
            state = step(f, state, cp);
            const int32_t chars = f->match_chars[state];
            if (chars > 0) {
                const size_t first = starts[(seen - chars) % ring];
                memset(masked + first, 1, pos + n - first);
                hits += f->match_count[state];
            }
        }
        pos += n;
    }
    return hits;
}

zq_status zq_filter_mask(const zq_filter *filter, const char *text, size_t len, char *out,
                         size_t *out_len, int64_t *hits)
{
    const uint8_t *s = (const uint8_t *)text;
    uint8_t *masked = calloc(len ? len : 1, 1);
    size_t *starts = malloc((size_t)(filter->max_chars > 0 ? filter->max_chars : 1) *
                            sizeof *starts);
    if (!masked || !starts) {
        free(masked);
        free(starts);
        return zq_fail(ZQ_ERR_NOMEM, "filter: out of memory masking %zu bytes", len);
    }
    const int64_t found = mark_matches(filter, s, len, masked, starts);

    size_t written = 0;
    for (size_t pos = 0; pos < len;) {
        int32_t cp;
        const size_t n = decode_unit(s + pos, len - pos, true, &cp);
        if (masked[pos]) {
            out[written++] = '*';
        } else {
            memcpy(out + written, text + pos, n);
            written += n;
        }
        pos += n;
    }
    out[written] = '\0';
    *out_len = written;
    if (hits)
        *hits = found;
    free(masked);
    free(starts);
    return ZQ_OK;
}

/* ---- streaming ------------------------------------------------------------------------------ */

#define FLAG_UNIT 1   /* the byte starts a decoded unit */
#define FLAG_MASKED 2 /* the byte is inside a match */

struct zq_filter_stream {
    const zq_filter *filter;
    char *held;       /* [cap] bytes not emitted yet */
    uint8_t *flags;   /* [cap] FLAG_* per held byte */
    size_t n_held;    /* bytes in held */
    size_t n_decoded; /* held[n_decoded..n_held) is an incomplete UTF-8 character */
    size_t cap;
    uint64_t base;    /* stream offset of held[0] */
    uint64_t *starts; /* [ring] stream offsets of the last normalised code points */
    int64_t ring;
    int64_t seen; /* normalised code points so far */
    int32_t state;
    char *out; /* [out_cap] the text returned by the last call */
    size_t out_cap;
    int64_t hits;
    bool broken; /* an allocation failed; only reset recovers */
};

zq_status zq_filter_stream_create(const zq_filter *filter, zq_filter_stream **out)
{
    *out = NULL;
    zq_filter_stream *st = calloc(1, sizeof *st);
    if (!st)
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: out of memory");
    st->filter = filter;
    st->ring = filter->max_chars > 0 ? filter->max_chars : 1;
    st->cap = 256;
    st->out_cap = 256;
    st->held = malloc(st->cap);
    st->flags = malloc(st->cap);
    st->out = malloc(st->out_cap);
    st->starts = malloc((size_t)st->ring * sizeof *st->starts);
    if (!st->held || !st->flags || !st->out || !st->starts) {
        zq_filter_stream_free(st);
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: out of memory");
    }
    zq_filter_stream_reset(st);
    *out = st;
    return ZQ_OK;
}

void zq_filter_stream_free(zq_filter_stream *stream)
{
    if (!stream)
        return;
    free(stream->held);
    free(stream->flags);
    free(stream->out);
    free(stream->starts);
    free(stream);
}

/* Drops the text state but keeps the hit count. */
static void clear_text(zq_filter_stream *st)
{
    st->n_held = 0;
    st->n_decoded = 0;
    st->base = 0;
    st->seen = 0;
    st->state = 0;
}

void zq_filter_stream_reset(zq_filter_stream *stream)
{
    clear_text(stream);
    stream->hits = 0;
    stream->broken = false;
    stream->out[0] = '\0';
}

static bool grow(char **buf, uint8_t **flags, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t new_cap = *cap;
    while (new_cap < need)
        new_cap *= 2;
    char *new_buf = realloc(*buf, new_cap);
    if (new_buf)
        *buf = new_buf;
    if (flags) {
        uint8_t *new_flags = realloc(*flags, new_cap);
        if (new_flags)
            *flags = new_flags;
        if (!new_flags)
            return false;
    }
    if (!new_buf)
        return false;
    *cap = new_cap;
    return true;
}

/* Decodes and matches held[n_decoded..n_held), marking matched bytes. */
static void scan_held(zq_filter_stream *st, bool final)
{
    const zq_filter *f = st->filter;
    const uint8_t *s = (const uint8_t *)st->held;
    while (st->n_decoded < st->n_held) {
        const size_t pos = st->n_decoded;
        int32_t cp;
        const size_t n = decode_unit(s + pos, st->n_held - pos, final, &cp);
        if (n == 0)
            break;
        st->flags[pos] |= FLAG_UNIT;
        st->n_decoded += n;
        cp = normalise(cp);
        if (cp < 0)
            continue;
        st->starts[st->seen % st->ring] = st->base + pos;
        st->seen++;
        st->state = step(f, st->state, cp);
        const int32_t chars = f->match_chars[st->state];
        if (chars > 0) {
            /* the match starts inside the held text, because its prefix was held back */
            const size_t first = (size_t)(st->starts[(st->seen - chars) % st->ring] - st->base);
            for (size_t i = first; i < pos + n; i++)
                st->flags[i] |= FLAG_MASKED;
            st->hits += f->match_count[st->state];
        }
    }
}

/* Moves held[0..end) with masks applied to out and shifts the rest down. */
static zq_status emit(zq_filter_stream *st, size_t end, const char **text, size_t *text_len)
{
    if (!grow(&st->out, NULL, &st->out_cap, end + 1)) {
        st->broken = true;
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: out of memory for %zu bytes", end + 1);
    }
    size_t written = 0;
    for (size_t i = 0; i < end; i++) {
        if (!(st->flags[i] & FLAG_MASKED))
            st->out[written++] = st->held[i];
        else if (st->flags[i] & FLAG_UNIT)
            st->out[written++] = '*';
    }
    st->out[written] = '\0';
    memmove(st->held, st->held + end, st->n_held - end);
    memmove(st->flags, st->flags + end, st->n_held - end);
    st->n_held -= end;
    st->n_decoded -= end;
    st->base += end;
    *text = st->out;
    *text_len = written;
    return ZQ_OK;
}

zq_status zq_filter_stream_push(zq_filter_stream *stream, const char *piece, size_t len,
                                const char **text, size_t *text_len)
{
    zq_filter_stream *st = stream;
    *text = "";
    *text_len = 0;
    if (st->broken)
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: an earlier allocation failed; reset it");
    if (!grow(&st->held, &st->flags, &st->cap, st->n_held + len)) {
        st->broken = true;
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: out of memory for %zu bytes",
                       st->n_held + len);
    }
    if (len > 0) {
        memcpy(st->held + st->n_held, piece, len);
        memset(st->flags + st->n_held, 0, len);
    }
    st->n_held += len;
    scan_held(st, false);

    /* Everything before the start of the longest suffix that can still grow into a word is
     * final: no later match can begin earlier. */
    const int32_t hold = st->filter->hold[st->state];
    size_t end = st->n_decoded;
    if (hold > 0)
        end = (size_t)(st->starts[(st->seen - hold) % st->ring] - st->base);
    return emit(st, end, text, text_len);
}

zq_status zq_filter_stream_finish(zq_filter_stream *stream, const char **text,
                                  size_t *text_len)
{
    zq_filter_stream *st = stream;
    *text = "";
    *text_len = 0;
    if (st->broken)
        return zq_fail(ZQ_ERR_NOMEM, "filter stream: an earlier allocation failed; reset it");
    scan_held(st, true);
    zq_status status = emit(st, st->n_held, text, text_len);
    clear_text(st);
    return status;
}

size_t zq_filter_stream_pending(const zq_filter_stream *stream)
{
    return stream->n_held;
}

int64_t zq_filter_stream_hits(const zq_filter_stream *stream)
{
    return stream->hits;
}
