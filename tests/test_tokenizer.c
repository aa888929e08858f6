/*
 * test_tokenizer.c - the WordPiece tokenizer against HF BertTokenizer fixtures, plus the
 * output cap, invalid UTF-8, a random-bytes fuzz loop, speed on a long text, and decoding.
 *
 * With ZQ_TOKENIZER_LINES=FILE set it runs no tests. Instead it reads FILE as JSON lines, each
 * a string (or an object {"text": ..., "added_tokens": [...]}), and prints the ids of each
 * line on one line, separated by spaces. tests/e2e/tokenizer_npm.sh compares that output
 * with another implementation. ZQ_TOKENIZER_VOCAB overrides the vocabulary file and
 * ZQ_SEED the fuzz seed.
 */
#include "support/check.h"

#include "../runtime/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define DEFAULT_VOCAB "models/zh-chat-tiny/vocab.txt"

/* ---- helpers ------------------------------------------------------------------------------- */

typedef struct {
    char *data;   /* the file, with each newline replaced by NUL */
    char **lines; /* one string per token */
    int n;
} vocab_file;

/* Reads a vocab.txt the way HF's load_vocab does: one token per line, only "\n" stripped. */
static bool vocab_load(const char *path, vocab_file *v)
{
    size_t size;
    memset(v, 0, sizeof *v);
    v->data = zq_test_read_file(path, &size);
    if (!v->data)
        return false;
    int lines = 0;
    for (size_t i = 0; i < size; i++)
        lines += v->data[i] == '\n';
    v->lines = malloc(((size_t)lines + 1) * sizeof *v->lines);
    char *p = v->data, *end = v->data + size;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl)
            *nl = '\0';
        v->lines[v->n++] = p;
        p = nl ? nl + 1 : end;
    }
    return true;
}

static void vocab_free(vocab_file *v)
{
    free(v->lines);
    free(v->data);
}

static const char *vocab_path(void)
{
    const char *path = getenv("ZQ_TOKENIZER_VOCAB");
    return path && *path ? path : DEFAULT_VOCAB;
}

/* The tokenizer of the default vocabulary, with optional added tokens; NULL on failure. */
static zq_tokenizer *make_tokenizer(const char *const *added, int n_added)
{
    vocab_file v;
    if (!vocab_load(vocab_path(), &v)) {
        fprintf(stderr, "cannot read %s\n", vocab_path());
        return NULL;
    }
    zq_tokenizer *tok = NULL;
    zq_status st = zq_tokenizer_create((const char *const *)v.lines, v.n, added, n_added, true,
                                       &tok);
    if (st != ZQ_OK)
        fprintf(stderr, "zq_tokenizer_create: %s\n", zq_last_error());
    vocab_free(&v);
    return tok;
}

/* Encodes a copy of text[0..len) in a buffer of exactly len bytes, so ASan catches any read
 * past the end. Returns the status; *n gets the id count. */
static zq_status encode_exact(const zq_tokenizer *tok, const char *text, size_t len,
                              int32_t *ids, int cap, int *n)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    zq_status st = zq_tokenizer_encode(tok, copy, len, ids, cap, n);
    free(copy);
    return st;
}

static bool same_ids(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

/* Decodes ids with zq_tokenizer_piece into a malloc'd string. */
static char *decode(const zq_tokenizer *tok, const int32_t *ids, int n)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    int32_t prev = -1;
    for (int i = 0; i < n; i++) {
        char piece[256];
        size_t k = zq_tokenizer_piece(tok, prev, ids[i], piece, sizeof piece);
        if (len + k + 1 > cap) {
            cap = 2 * (len + k + 1);
            out = realloc(out, cap);
        }
        memcpy(out + len, piece, k + 1);
        len += k;
        prev = ids[i];
    }
    return out;
}

static char *decode_text(const zq_tokenizer *tok, const char *text)
{
    int32_t ids[512];
    int n = 0;
    if (zq_tokenizer_encode(tok, text, strlen(text), ids, 512, &n) != ZQ_OK)
        return NULL;
    return decode(tok, ids, n);
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state += 0x9E3779B97F4A7C15ull; /* splitmix64 */
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t test_seed(void)
{
    const char *s = getenv("ZQ_SEED");
    return s && *s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL);
}

/* ---- fixture cases ------------------------------------------------------------------------- */

static int json_strings(const cJSON *array, const char **out, int cap)
{
    int n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        if (n < cap && cJSON_IsString(item))
            out[n++] = item->valuestring;
    }
    return n;
}

static void check_case(const zq_tokenizer *tok, const cJSON *c, int index)
{
    const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
    const cJSON *tokens = cJSON_GetObjectItem(c, "tokens");
    const cJSON *want = cJSON_GetObjectItem(c, "ids");
    int32_t ids[512];
    int n = -1;
    zq_status st = encode_exact(tok, text, strlen(text), ids, 512, &n);
    CHECK(st == ZQ_OK, "case %d: %s", index, zq_last_error());
    CHECK(n == cJSON_GetArraySize(want), "case %d \"%s\": %d ids, want %d", index, text, n,
          cJSON_GetArraySize(want));
    for (int k = 0; k < n && k < cJSON_GetArraySize(want); k++) {
        int expected = cJSON_GetArrayItem(want, k)->valueint;
        const char *piece = cJSON_GetArrayItem(tokens, k)->valuestring;
        const char *got = zq_tokenizer_str(tok, ids[k]);
        CHECK(ids[k] == expected, "case %d \"%s\" id %d: %d, want %d", index, text, k, ids[k],
              expected);
        CHECK(got != NULL, "case %d: id %d has no string", index, ids[k]);
        CHECK(got && strcmp(got, piece) == 0, "case %d \"%s\" token %d: \"%s\", want \"%s\"",
              index, text, k, got ? got : "(null)", piece);
    }
}

static void tokenizer_fixture_cases(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer_cases.json", zq_test_fixtures());
    char *json = zq_test_read_file(path, NULL);
    CHECK(json != NULL, "cannot read %s", path);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    CHECK(root != NULL, "%s is not valid JSON", path);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK(cJSON_GetArraySize(cases) >= 29, "%d cases", cJSON_GetArraySize(cases));
    zq_tokenizer *plain = make_tokenizer(NULL, 0);
    CHECK(plain != NULL, "no tokenizer");
    int index = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        const char *added[16];
        int n_added = json_strings(cJSON_GetObjectItem(c, "added_tokens"), added, 16);
        zq_tokenizer *tok = n_added ? make_tokenizer(added, n_added) : plain;
        if (tok)
            check_case(tok, c, index);
        if (tok != plain)
            zq_tokenizer_free(tok);
        index++;
    }
    zq_tokenizer_free(plain);
    cJSON_Delete(root);
    free(json);
}

/* ---- vocabulary and special tokens --------------------------------------------------------- */

static void tokenizer_specials_and_lookup(void)
{
    const char *added[] = {"人工智能", "深度学习"};
    zq_tokenizer *tok = make_tokenizer(added, 2);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    zq_special_tokens sp = zq_tokenizer_special(tok);
    CHECK_EQ_INT(sp.pad, 0);
    CHECK_EQ_INT(sp.unk, 1);
    CHECK_EQ_INT(sp.cls, 2);
    CHECK_EQ_INT(sp.sep, 3);
    CHECK_EQ_INT(sp.mask, 4);
    CHECK_EQ_INT(zq_tokenizer_size(tok), 3817 + 2);
    CHECK_EQ_INT(zq_tokenizer_find(tok, "你"), 136);
    CHECK_EQ_INT(zq_tokenizer_find(tok, "##a"), 108);
    CHECK_EQ_INT(zq_tokenizer_find(tok, "深度学习"), 3818);
    CHECK_EQ_INT(zq_tokenizer_find(tok, "no-such-token"), -1);
    CHECK(strcmp(zq_tokenizer_str(tok, 3817), "人工智能") == 0, "added token string");
    CHECK(zq_tokenizer_str(tok, 3819) == NULL, "id past the end");
    CHECK(zq_tokenizer_str(tok, -1) == NULL, "negative id");
    zq_tokenizer_free(tok);

    const char *tiny[] = {"a", "b", "##b", "b"}; /* no specials, "b" twice: the last id wins */
    CHECK(zq_tokenizer_create(tiny, 4, NULL, 0, true, &tok) == ZQ_OK, "%s", zq_last_error());
    sp = zq_tokenizer_special(tok);
    CHECK_EQ_INT(sp.pad, -1);
    CHECK_EQ_INT(sp.unk, -1);
    CHECK_EQ_INT(sp.cls, -1);
    CHECK_EQ_INT(sp.sep, -1);
    CHECK_EQ_INT(sp.mask, -1);
    CHECK_EQ_INT(zq_tokenizer_find(tok, "b"), 3);
    int32_t ids[8];
    int n;
    CHECK(zq_tokenizer_encode(tok, "ab b", 4, ids, 8, &n) == ZQ_OK, "%s", zq_last_error());
    const int32_t want[] = {0, 2, 3}; /* "a" "##b" "b" */
    CHECK(same_ids(ids, n, want, 3), "%d ids", n);
    CHECK(zq_tokenizer_encode(tok, "c", 1, ids, 8, &n) == ZQ_ERR_UNSUPPORTED,
          "an unknown word without [UNK]");
    zq_tokenizer_free(tok);
}

static void tokenizer_create_rejects(void)
{
    const char *vocab[] = {"[UNK]", "a"};
    const char *empty[] = {""};
    const char *bad_utf8[] = {"\xE4\xBD"};
    zq_tokenizer *tok = (zq_tokenizer *)1;
    CHECK(zq_tokenizer_create(vocab, 0, NULL, 0, true, &tok) == ZQ_ERR_INVALID_ARG, "empty");
    CHECK(tok == NULL, "output not cleared");
    CHECK(zq_tokenizer_create(vocab, 2, empty, 1, true, &tok) == ZQ_ERR_INVALID_ARG,
          "empty added token");
    CHECK(strstr(zq_last_error(), "added token 0") != NULL, "message: %s", zq_last_error());
    CHECK(zq_tokenizer_create(vocab, 2, bad_utf8, 1, true, &tok) == ZQ_ERR_INVALID_ARG,
          "added token with invalid UTF-8");
    CHECK(zq_tokenizer_create(vocab, 2, NULL, 1, true, &tok) == ZQ_ERR_INVALID_ARG,
          "NULL added list");
    zq_tokenizer_free(NULL);
}

/* ---- encoding edge cases ------------------------------------------------------------------- */

static void tokenizer_cap_and_context_full(void)
{
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    const char *text = "你好，世界！"; /* 6 ids */
    const int32_t want[] = {136, 149, 73, 605, 764, 75};
    int32_t ids[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    int n = -1;
    zq_status st = zq_tokenizer_encode(tok, text, strlen(text), ids, 3, &n);
    CHECK(st == ZQ_ERR_CONTEXT_FULL, "status %s", zq_status_str(st));
    CHECK_EQ_INT(n, 6);
    CHECK(same_ids(ids, 3, want, 3), "the first 3 ids");
    CHECK_EQ_INT(ids[3], -7); /* nothing written past cap */
    CHECK(strstr(zq_last_error(), "6 tokens") != NULL, "message: %s", zq_last_error());

    st = zq_tokenizer_encode(tok, text, strlen(text), NULL, 0, &n);
    CHECK(st == ZQ_ERR_CONTEXT_FULL, "counting with cap 0: %s", zq_status_str(st));
    CHECK_EQ_INT(n, 6);
    st = zq_tokenizer_encode(tok, text, strlen(text), ids, 6, &n);
    CHECK(st == ZQ_OK, "exact cap: %s", zq_status_str(st));
    CHECK(same_ids(ids, n, want, 6), "exact cap: %d ids", n);
    CHECK(zq_tokenizer_encode(tok, text, strlen(text), ids, -1, &n) == ZQ_ERR_INVALID_ARG,
          "negative cap");
    CHECK(zq_tokenizer_encode(tok, text, strlen(text), NULL, 4, &n) == ZQ_ERR_INVALID_ARG,
          "NULL ids with cap");
    zq_tokenizer_free(tok);
}

static void tokenizer_empty_text(void)
{
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    int32_t ids[4];
    int n = -1;
    CHECK(zq_tokenizer_encode(tok, NULL, 0, ids, 4, &n) == ZQ_OK, "NULL text");
    CHECK_EQ_INT(n, 0);
    CHECK(zq_tokenizer_encode(tok, "", 0, NULL, 0, &n) == ZQ_OK, "empty text");
    CHECK_EQ_INT(n, 0);
    const char *blank = " \t\r\n\xE3\x80\x80\x07\xC2\xA0\xE2\x80\x8B"; /* spaces, controls */
    CHECK(encode_exact(tok, blank, strlen(blank), ids, 4, &n) == ZQ_OK, "blank text");
    CHECK_EQ_INT(n, 0);
    zq_tokenizer_free(tok);
}

/* Each invalid sequence acts as U+FFFD: dropped, and not a word boundary. */
static void tokenizer_invalid_utf8(void)
{
    static const struct {
        const char *text, *same_as;
    } cases[] = {
        {"你\xE4\xBD好", "你好"},                  /* truncated 3-byte sequence */
        {"a\xFF" "b", "ab"},                        /* 0xFF never appears in UTF-8 */
        {"a\xFE\xFE" "b", "ab"},
        {"a\x80\xBF" "b", "ab"},                    /* lone continuation bytes */
        {"a\xC0\xAF" "b", "ab"},                    /* overlong "/" */
        {"a\xE0\x80\xAF" "b", "ab"},                /* overlong 3-byte "/" */
        {"a\xF0\x80\x80\xAF" "b", "ab"},            /* overlong 4-byte "/" */
        {"a\xED\xA0\x80" "b", "ab"},                /* UTF-16 surrogate D800 */
        {"a\xF4\x90\x80\x80" "b", "ab"},            /* above U+10FFFF */
        {"a\xF8\x88\x80\x80\x80" "b", "ab"},        /* 5-byte form */
        {"\xC3" "A", "a"},                          /* lead byte then ASCII */
        {"世界\xE4", "世界"},                       /* truncated at the end of the buffer */
        {"世界\xF0\x9F\x98", "世界"},
        {"\xEF\xBF\xBD" "替换", "替换"},           /* an encoded U+FFFD is dropped too */
    };
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t got[64], want[64];
        int n_got = -1, n_want = -2;
        zq_status st = encode_exact(tok, cases[i].text, strlen(cases[i].text), got, 64, &n_got);
        CHECK(st == ZQ_OK, "case %zu: %s", i, zq_last_error());
        zq_tokenizer_encode(tok, cases[i].same_as, strlen(cases[i].same_as), want, 64, &n_want);
        CHECK(same_ids(got, n_got, want, n_want), "case %zu: %d ids, want the %d of \"%s\"", i,
              n_got, n_want, cases[i].same_as);
    }
    zq_tokenizer_free(tok);
}

static void tokenizer_added_tokens(void)
{
    const char *added[] = {"ab", "abc", "世界", "[X]"};
    zq_tokenizer *tok = make_tokenizer(added, 4);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    int n0 = 3817;
    int32_t ids[32];
    int n = 0;
    /* the longest added token at a position wins; the rest is tokenized normally */
    const char *text = "xabcd世界[X]ab";
    CHECK(zq_tokenizer_encode(tok, text, strlen(text), ids, 32, &n) == ZQ_OK, "status");
    int32_t x = zq_tokenizer_find(tok, "x"), d = zq_tokenizer_find(tok, "d");
    const int32_t want[] = {x, n0 + 1, d, n0 + 2, n0 + 3, n0};
    CHECK(same_ids(ids, n, want, 6), "%d ids", n);
    /* matching is on the raw text, so case matters, and added tokens split words */
    text = "AB";
    CHECK(zq_tokenizer_encode(tok, text, 2, ids, 32, &n) == ZQ_OK, "status");
    CHECK_EQ_INT(n, 2); /* "AB" is not the added token "ab" */
    CHECK_EQ_INT(ids[0], zq_tokenizer_find(tok, "a"));
    zq_tokenizer_free(tok);
}

/* Lower-casing follows Python's str.lower(), accents are stripped through NFD, and the
 * character classes follow BERT. Each input must give the ids of the plain text. */
static void tokenizer_normalization(void)
{
    static const struct {
        const char *text, *same_as;
    } cases[] = {
        {"HELLO", "hello"},
        {"ÀÉÎÕÜ ñ ç", "aeiou n c"},
        {"İstanbul", "istanbul"},                  /* U+0130 */
        {"e\xCC\x81t\xC3\xA9", "ete"},             /* combining acute and precomposed é */
        {"a\xE2\x80\xA8" "b", "a b"},              /* U+2028 splits words */
        {"a\xC2\xA0" "b", "a b"},                  /* no-break space */
        {"a\xE2\x80\x8B" "b", "ab"},               /* zero-width space is Cf: dropped */
        {"a\x0B\x0C" "b", "ab"},                   /* vertical tab, form feed: controls */
        {"你好a", "你 好 a"},
        {"a$b", "a $ b"},                          /* ASCII symbols are punctuation */
        {"\xEF\xA4\x80", "\xE8\xB1\x88"},          /* CJK compatibility U+F900 = U+8C48 */
    };
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t got[64], want[64];
        int n_got = -1, n_want = -2;
        zq_tokenizer_encode(tok, cases[i].text, strlen(cases[i].text), got, 64, &n_got);
        zq_tokenizer_encode(tok, cases[i].same_as, strlen(cases[i].same_as), want, 64, &n_want);
        CHECK(same_ids(got, n_got, want, n_want), "case %zu \"%s\": %d ids vs %d", i,
              cases[i].text, n_got, n_want);
    }
    zq_tokenizer_free(tok);
}

/* Python lower-cases a capital sigma to final sigma at the end of a word, and full-width
 * capitals to full-width small letters. The vocabulary has both sigmas and full-width letters
 * so the differences show in the ids. */
static void tokenizer_lower_case_rules(void)
{
    const char *vocab[] = {"[UNK]", "α", "##σ", "##ς", "σ", "##α", ".", "ｈ", "##ｅ"};
    zq_tokenizer *tok = NULL;
    CHECK(zq_tokenizer_create(vocab, 9, NULL, 0, true, &tok) == ZQ_OK, "%s", zq_last_error());
    if (!tok)
        return;
    static const struct {
        const char *text;
        int32_t ids[4];
        int n;
    } cases[] = {
        {"ΑΣ", {1, 3}, 2},         /* final */
        {"ΑΣΑ", {1, 2, 5}, 3},     /* medial */
        {"Σ", {4}, 1},             /* alone: no cased letter before */
        {"ΑΣ.", {1, 3, 6}, 3},     /* "." is case-ignorable but nothing cased follows */
        {"ＨＥ", {7, 8}, 2},       /* U+FF28 U+FF25 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[8];
        int n = 0;
        zq_tokenizer_encode(tok, cases[i].text, strlen(cases[i].text), ids, 8, &n);
        CHECK(same_ids(ids, n, cases[i].ids, cases[i].n), "case %zu: %d ids, first %d", i, n,
              n ? ids[0] : -1);
    }
    zq_tokenizer_free(tok);
}

static void tokenizer_long_words(void)
{
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    char text[256];
    memset(text, 'a', 101);
    int32_t ids[128];
    int n = 0;
    CHECK(zq_tokenizer_encode(tok, text, 100, ids, 128, &n) == ZQ_OK, "status");
    CHECK_EQ_INT(n, 100); /* "a" then 99 "##a" */
    CHECK_EQ_INT(ids[0], 15);
    CHECK_EQ_INT(ids[99], 108);
    CHECK(zq_tokenizer_encode(tok, text, 101, ids, 128, &n) == ZQ_OK, "status");
    CHECK_EQ_INT(n, 1); /* 101 chars is [UNK] */
    CHECK_EQ_INT(ids[0], 1);
    /* the limit counts characters after accent stripping, not bytes */
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "%s", i % 2 ? "a" : "\xC3\xA1");
    CHECK(zq_tokenizer_encode(tok, text, len, ids, 128, &n) == ZQ_OK, "100 accented chars");
    CHECK_EQ_INT(n, 100);
    zq_tokenizer_free(tok);
}

/* ---- fuzzing and speed --------------------------------------------------------------------- */

static void check_ids_in_range(const zq_tokenizer *tok, const int32_t *ids, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += ids[i] < 0 || ids[i] >= zq_tokenizer_size(tok);
    CHECK(bad == 0, "%d ids out of range", bad);
}

/* Random bytes, then random picks from a pool of tricky characters; neither may crash. */
static void tokenizer_fuzz_random_bytes(void)
{
    uint64_t seed = test_seed();
    printf("tokenizer_fuzz_random_bytes: seed %llu (set ZQ_SEED to repeat)\n",
           (unsigned long long)seed);
    const char *added[] = {"人工智能", "ab", "\xC3\xA9"};
    zq_tokenizer *tok = make_tokenizer(added, 3);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    size_t len = 1 << 20;
    char *buf = malloc(len);
    int cap = (int)len;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    uint64_t state = seed;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = rng_next(&state);
        memcpy(buf + i, &r, 8);
    }
    int n = -1;
    CHECK(zq_tokenizer_encode(tok, buf, len, ids, cap, &n) == ZQ_OK, "%s", zq_last_error());
    check_ids_in_range(tok, ids, n);

    static const char *const pool[] = {
        "a", "Z", "7", " ", "\t", "\n", ".", "'", "#", "你", "好", "，", "！", "\xC3\xA9",
        "\xCC\x81", "\xCE\xA3", "\xC4\xB0", "\xEF\xBC\xA1", "\xE3\x80\x80", "\xF0\x9F\x98\x80",
        "\xF0\xA0\x80\x80", "\xED\x95\x9C", "\xE2\x80\xA8", "\xFF", "\x80", "\xE4\xBD", "人工",
        "智能", "##", "\x00", "\x07", "\xEF\xBF\xBD",
    };
    size_t n_pool = sizeof pool / sizeof pool[0];
    for (int round = 0; round < 64; round++) {
        size_t used = 0, want = rng_next(&state) % 16384;
        while (used + 4 < len && used < want) {
            const char *p = pool[rng_next(&state) % n_pool];
            size_t k = p[0] ? strlen(p) : 1;
            memcpy(buf + used, p, k);
            used += k;
        }
        CHECK(encode_exact(tok, buf, used, ids, cap, &n) == ZQ_OK, "round %d: %s", round,
              zq_last_error());
        check_ids_in_range(tok, ids, n);
    }
    free(ids);
    free(buf);
    zq_tokenizer_free(tok);
}

/* A 100 KB mixed text. The time is printed for information only, never checked. */
static void tokenizer_long_text(void)
{
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    const char *unit = "今天天气怎么样? Hello World, iPhone15很好用 café naïve "
                       "supercalifragilisticexpialidocious 《红楼梦》";
    size_t unit_len = strlen(unit), len = 0, size = 100 * 1024;
    char *text = malloc(size);
    while (len + unit_len <= size) {
        memcpy(text + len, unit, unit_len);
        len += unit_len;
    }
    int32_t *ids = malloc(size * sizeof *ids);
    int n = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zq_status st = zq_tokenizer_encode(tok, text, len, ids, (int)size, &n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("tokenizer_long_text: %zu bytes -> %d ids in %.2f ms\n", len, n, ms);
    CHECK(st == ZQ_OK, "%s", zq_last_error());
    int32_t unit_ids[256];
    int n_unit = 0;
    zq_tokenizer_encode(tok, unit, unit_len, unit_ids, 256, &n_unit);
    CHECK(n_unit > 0, "the unit gave no ids");
    CHECK_EQ_INT(n, n_unit * (int)(len / unit_len));
    free(ids);
    free(text);
    zq_tokenizer_free(tok);
}

/* ---- decoding ------------------------------------------------------------------------------ */

static void tokenizer_decode_round_trip(void)
{
    static const char *const texts[] = {
        "你好，世界！", "hello world", "iphone15很好用", "《红楼梦》“很长”", "hello, world.",
        "don't stop!", "why? because", "3.14和2.5", "我爱人工智能和深度学习", "a",
        "今天天气怎么样?", "top-k = 50",
    };
    static const char *const expected[] = {
        "你好，世界！", "hello world", "iphone15很好用", "《红楼梦》“很长”", "hello, world.",
        "don't stop!", "why? because", "3. 14和2. 5", "我爱人工智能和深度学习", "a",
        "今天天气怎么样?", "top - k = 50",
    };
    const char *added[] = {"人工智能", "深度学习"};
    zq_tokenizer *tok = make_tokenizer(added, 2);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char *got = decode_text(tok, texts[i]);
        CHECK(got != NULL, "\"%s\" did not encode: %s", texts[i], zq_last_error());
        CHECK(got && strcmp(got, expected[i]) == 0, "\"%s\" decoded to \"%s\", want \"%s\"",
              texts[i], got ? got : "(null)", expected[i]);
        free(got);
    }
    zq_tokenizer_free(tok);
}

static void tokenizer_piece_rules(void)
{
    zq_tokenizer *tok = make_tokenizer(NULL, 0);
    CHECK(tok != NULL, "no tokenizer");
    if (!tok)
        return;
    char buf[64];
    /* zh-chat-tiny ids: 1 [UNK], 2 [CLS], 3 [SEP], 22 "h", 34 "t", 47 "'", 54 ".", 73 "，",
     * 112 "##e", 136 "你" */
    static const struct {
        int32_t prev, id;
        const char *text;
        const char *description;
    } cases[] = {
        {-1, 2, "", "[CLS] is empty"},
        {22, 3, "", "[SEP] is empty"},
        {-1, 99999, "", "an id out of range is empty"},
        {2, 22, "h", "no space after [CLS]"},
        {22, 112, "e", "\"##e\" joins"},
        {112, 22, " h", "a space between words"},
        {136, 1, "[UNK]", "[UNK] after CJK"},
        {22, 1, " [UNK]", "[UNK] after a word"},
        {136, 73, "，", "full-width comma after CJK"},
        {22, 54, ".", "no space before ."},
        {54, 22, " h", "a space after ."},
        {47, 34, "t", "no space after '"},
        {22, 47, "'", "no space before '"},
        {22, 136, "你", "no space before CJK"},
        {136, 22, "h", "no space after CJK"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = zq_tokenizer_piece(tok, cases[i].prev, cases[i].id, buf, sizeof buf);
        CHECK(strcmp(buf, cases[i].text) == 0, "%s: \"%s\"", cases[i].description, buf);
        CHECK(n == strlen(cases[i].text), "%s: length %zu", cases[i].description, n);
    }
    /* a short buffer still gets a NUL and the full length is returned */
    CHECK_EQ_INT(zq_tokenizer_piece(tok, 22, 1, buf, 3), 6);
    CHECK(strcmp(buf, " [") == 0, "truncated: \"%s\"", buf);
    CHECK_EQ_INT(zq_tokenizer_piece(tok, 22, 1, NULL, 0), 6);
    zq_tokenizer_free(tok);
}

/* ---- ZQ_TOKENIZER_LINES mode --------------------------------------------------------------- */

static void print_ids(const zq_tokenizer *tok, const char *text)
{
    int n = 0;
    zq_tokenizer_encode(tok, text, strlen(text), NULL, 0, &n);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    zq_status st = zq_tokenizer_encode(tok, text, strlen(text), ids, n, &n);
    if (st != ZQ_OK)
        printf("error: %s", zq_last_error());
    for (int i = 0; st == ZQ_OK && i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
}

static int tokenize_lines(const char *path)
{
    char *data = zq_test_read_file(path, NULL);
    zq_tokenizer *plain = make_tokenizer(NULL, 0);
    if (!data || !plain) {
        fprintf(stderr, "cannot read %s or the vocabulary\n", path);
        return 1;
    }
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *item = cJSON_Parse(line);
        const cJSON *text = cJSON_IsObject(item) ? cJSON_GetObjectItem(item, "text") : item;
        if (!cJSON_IsString(text)) {
            fprintf(stderr, "not a JSON string: %.60s\n", line);
            return 1;
        }
        const char *added[64];
        int n_added = json_strings(cJSON_GetObjectItem(item, "added_tokens"), added, 64);
        zq_tokenizer *tok = n_added ? make_tokenizer(added, n_added) : plain;
        if (tok)
            print_ids(tok, text->valuestring);
        if (tok != plain)
            zq_tokenizer_free(tok);
        cJSON_Delete(item);
    }
    zq_tokenizer_free(plain);
    free(data);
    return 0;
}

int main(void)
{
    const char *lines = getenv("ZQ_TOKENIZER_LINES");
    if (lines && *lines)
        return tokenize_lines(lines);
    ZQ_RUN(tokenizer_fixture_cases);
    ZQ_RUN(tokenizer_specials_and_lookup);
    ZQ_RUN(tokenizer_create_rejects);
    ZQ_RUN(tokenizer_cap_and_context_full);
    ZQ_RUN(tokenizer_empty_text);
    ZQ_RUN(tokenizer_invalid_utf8);
    ZQ_RUN(tokenizer_added_tokens);
    ZQ_RUN(tokenizer_normalization);
    ZQ_RUN(tokenizer_lower_case_rules);
    ZQ_RUN(tokenizer_long_words);
    ZQ_RUN(tokenizer_fuzz_random_bytes);
    ZQ_RUN(tokenizer_long_text);
    ZQ_RUN(tokenizer_decode_round_trip);
    ZQ_RUN(tokenizer_piece_rules);
    ZQ_CHECK_EXIT();
}
