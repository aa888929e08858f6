/*
 * test_filter.c - the sensitive-word filter: normalisation (case, full width, inserted noise),
 * overlapping and nested words, word-list loading errors, and streaming masking checked
 * against the one-shot mask over many random splits.
 */
#include "../runtime/filter.h"

#include "support/check.h"

#include <stdint.h>
#include <string.h>

#define TEST_SEED 7071u

static uint64_t test_rng = TEST_SEED;

static uint64_t test_next(void)
{
    uint64_t z = (test_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t test_below(size_t n)
{
    return (size_t)(test_next() % n);
}

static zq_filter *make_filter(const char *const *words, int n)
{
    zq_filter *filter = NULL;
    zq_status status = zq_filter_create(words, n, &filter);
    CHECK(status == ZQ_OK, "create: %s", zq_last_error());
    return filter;
}

/* Checks that masking text gives expected with the given number of hits, and that
 * zq_filter_match agrees. */
static void check_mask(const zq_filter *filter, const char *text, const char *expected,
                       int64_t expected_hits)
{
    const size_t len = strlen(text);
    char *out = malloc(len + 1);
    size_t out_len = 0;
    int64_t hits = -1;
    zq_status status = zq_filter_mask(filter, text, len, out, &out_len, &hits);
    CHECK(status == ZQ_OK, "mask '%s': %s", text, zq_last_error());
    CHECK(strcmp(out, expected) == 0, "mask '%s' gave '%s', expected '%s'", text, out,
          expected);
    CHECK_EQ_INT(out_len, strlen(expected));
    CHECK(hits == expected_hits, "mask '%s': %lld hits, expected %lld", text, (long long)hits,
          (long long)expected_hits);
    CHECK(zq_filter_match(filter, text, len) == (expected_hits > 0), "match '%s'", text);
    free(out);
}

static void test_plain_hits(void)
{
    const char *words[] = {"bad", "坏词"};
    zq_filter *filter = make_filter(words, 2);
    CHECK_EQ_INT(zq_filter_word_count(filter), 2);
    CHECK_EQ_INT(zq_filter_max_word_chars(filter), 3);
    check_mask(filter, "a bad day", "a *** day", 1);
    check_mask(filter, "bad", "***", 1);
    check_mask(filter, "这是坏词。", "这是**。", 1);
    check_mask(filter, "bad坏词bad", "********", 3);
    check_mask(filter, "good", "good", 0);
    check_mask(filter, "", "", 0);
    zq_filter_free(filter);
}

static void test_case_and_width_variants(void)
{
    const char *words[] = {"bad", "ＷＯＲＳＥ"};
    zq_filter *filter = make_filter(words, 2);
    check_mask(filter, "ＢＡＤ", "***", 1);
    check_mask(filter, "BaD!", "***!", 1);
    check_mask(filter, "ｂａｄ", "***", 1);
    check_mask(filter, "worse", "*****", 1);
    check_mask(filter, "Ｗorse", "*****", 1);
    zq_filter_free(filter);
}

static void test_noise_inside_words(void)
{
    const char *words[] = {"bad", "坏词", "a b c"};
    zq_filter *filter = make_filter(words, 3);
    CHECK_EQ_INT(zq_filter_max_word_chars(filter), 3); /* "a b c" is the word "abc" */
    check_mask(filter, "b a-d", "*****", 1);
    check_mask(filter, "坏*词", "***", 1);
    check_mask(filter, "坏\xE3\x80\x80词", "***", 1);  /* U+3000 ideographic space */
    check_mask(filter, "b\xE2\x80\x8B" "ad", "****", 1); /* U+200B zero-width space */
    check_mask(filter, "B.\n\tA ~~ D", "**********", 1);
    check_mask(filter, "--bad--", "--***--", 1);
    check_mask(filter, "abc", "***", 1);
    check_mask(filter, "b\xFF" "ad", "****", 1); /* an invalid byte is noise too */
    check_mask(filter, "\xFF ok", "\xFF ok", 0);
    check_mask(filter, "bxad", "bxad", 0);
    zq_filter_free(filter);
}

static void test_overlapping_words(void)
{
    const char *words[] = {"abc", "cde", "xy", "yz"};
    zq_filter *filter = make_filter(words, 4);
    check_mask(filter, "abcde", "*****", 2);
    check_mask(filter, "-abcdef-", "-*****f-", 2);
    check_mask(filter, "xyz", "***", 2);
    check_mask(filter, "x y z", "*****", 2);
    zq_filter_free(filter);

    const char *nested[] = {"abcd", "bc"}; /* "bc" ends inside a longer prefix */
    filter = make_filter(nested, 2);
    check_mask(filter, "abcx", "a**x", 1);
    check_mask(filter, "abcd", "****", 2);
    zq_filter_free(filter);
}

static void test_word_prefix_of_another(void)
{
    const char *words[] = {"bad", "badly", "ly"};
    zq_filter *filter = make_filter(words, 3);
    check_mask(filter, "badly", "*****", 3);
    check_mask(filter, "badl", "***l", 1);
    check_mask(filter, "ba", "ba", 0);
    check_mask(filter, "bad ly", "******", 3);
    zq_filter_free(filter);
}

static void test_no_false_hits(void)
{
    const char *words[] = {"敏感词", "badword", "违禁"};
    zq_filter *filter = make_filter(words, 3);
    const char *clean[] = {
        "今天天气很好，我们去公园散步吧。",
        "This is a perfectly bad-free sentence about words.",
        "敏感的人，违反规定，禁止入内。",
        "敏感",
    };
    for (int i = 0; i < 4; i++)
        check_mask(filter, clean[i], clean[i], 0);
    zq_filter_free(filter);
}

static void test_duplicate_and_noise_words(void)
{
    const char *words[] = {"bad", "BAD", "b-a-d", "!!!", "  "};
    zq_filter *filter = make_filter(words, 5);
    CHECK_EQ_INT(zq_filter_word_count(filter), 1);
    check_mask(filter, "bad", "***", 1);
    zq_filter_free(filter);

    const char *invalid[] = {"ok", "b\xC3" "d"};
    zq_filter *none = (zq_filter *)1;
    CHECK(zq_filter_create(invalid, 2, &none) == ZQ_ERR_INVALID_ARG, "invalid word accepted");
    CHECK(none == NULL, "create left a filter");
    CHECK(strstr(zq_last_error(), "word 1") != NULL, "message: %s", zq_last_error());
}

static void test_empty_list(void)
{
    zq_filter *filter = make_filter(NULL, 0);
    CHECK_EQ_INT(zq_filter_word_count(filter), 0);
    CHECK_EQ_INT(zq_filter_max_word_chars(filter), 0);
    check_mask(filter, "anything 坏词 at all", "anything 坏词 at all", 0);

    zq_filter_stream *stream = NULL;
    CHECK(zq_filter_stream_create(filter, &stream) == ZQ_OK, "%s", zq_last_error());
    const char *text;
    size_t len;
    CHECK(zq_filter_stream_push(stream, "abc 坏", 7, &text, &len) == ZQ_OK, "push");
    CHECK(strcmp(text, "abc 坏") == 0, "emitted '%s'", text);
    CHECK_EQ_INT(zq_filter_stream_pending(stream), 0);
    zq_filter_stream_free(stream);
    zq_filter_free(filter);
}

static const char *write_temp(const char *name, const char *content, size_t len)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", zq_test_tmpdir(), name);
    FILE *file = fopen(path, "wb");
    CHECK(file != NULL, "cannot write %s", path);
    if (file) {
        fwrite(content, 1, len, file);
        fclose(file);
    }
    return path;
}

static void test_load_word_list(void)
{
    const char list[] = "\xEF\xBB\xBF# sensitive words\r\n"
                        "bad\r\n"
                        "\n"
                        "   \n"
                        "#notaword\n"
                        "坏 词\n"
                        "***\n"
                        "Ｘｙ"; /* no final newline */
    const char *path = write_temp("words.txt", list, sizeof list - 1);
    zq_filter *filter = NULL;
    CHECK(zq_filter_load(path, &filter) == ZQ_OK, "%s", zq_last_error());
    if (!filter)
        return;
    CHECK_EQ_INT(zq_filter_word_count(filter), 3);
    check_mask(filter, "bad 坏词 xy notaword", "*** ** ** notaword", 3);
    zq_filter_free(filter);

    path = write_temp("empty.txt", "# nothing\n\n", 11);
    CHECK(zq_filter_load(path, &filter) == ZQ_OK, "%s", zq_last_error());
    CHECK(filter != NULL, "no filter for a comment-only list");
    if (filter)
        CHECK_EQ_INT(zq_filter_word_count(filter), 0);
    zq_filter_free(filter);
}

static void test_load_errors(void)
{
    zq_filter *filter = (zq_filter *)1;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-list.txt", zq_test_tmpdir());
    CHECK(zq_filter_load(missing, &filter) == ZQ_ERR_IO, "missing file accepted");
    CHECK(filter == NULL, "load left a filter");
    CHECK(strstr(zq_last_error(), "no-such-list.txt") != NULL, "message: %s", zq_last_error());

    filter = (zq_filter *)1;
    CHECK(zq_filter_load(zq_test_tmpdir(), &filter) == ZQ_ERR_IO, "a directory was accepted");
    CHECK(filter == NULL, "load left a filter");

    const char list[] = "good\n# comment\nb\xE4\xBD" "d\nlater\n";
    const char *path = write_temp("invalid.txt", list, sizeof list - 1);
    filter = (zq_filter *)1;
    CHECK(zq_filter_load(path, &filter) == ZQ_ERR_FORMAT, "invalid UTF-8 accepted");
    CHECK(filter == NULL, "load left a filter");
    CHECK(strstr(zq_last_error(), "invalid.txt:3:") != NULL, "message: %s", zq_last_error());
}

/* Joins everything a stream emits for text cut at the given sorted offsets. Returns a malloc'd
 * string and sets *hits to the stream's hit count. */
static char *stream_pieces(zq_filter_stream *stream, const char *text, size_t len,
                           const size_t *cuts, int n_cuts, int64_t *hits)
{
    char *joined = malloc(len + 1);
    size_t n_joined = 0, from = 0;
    const char *piece;
    size_t piece_len;
    for (int c = 0; c <= n_cuts; c++) {
        const size_t to = c < n_cuts ? cuts[c] : len;
        zq_status status = zq_filter_stream_push(stream, text + from, to - from, &piece,
                                                 &piece_len);
        CHECK(status == ZQ_OK, "push: %s", zq_last_error());
        CHECK(n_joined + piece_len <= len, "stream emitted more than the text");
        if (n_joined + piece_len > len)
            break;
        memcpy(joined + n_joined, piece, piece_len);
        n_joined += piece_len;
        from = to;
    }
    CHECK(zq_filter_stream_finish(stream, &piece, &piece_len) == ZQ_OK, "finish");
    if (n_joined + piece_len <= len) {
        memcpy(joined + n_joined, piece, piece_len);
        n_joined += piece_len;
    }
    joined[n_joined] = '\0';
    *hits = zq_filter_stream_hits(stream);
    zq_filter_stream_reset(stream);
    return joined;
}

static const char *const fragments[] = {
    "bad", "ba", "d", "badly", "ly", "坏", "词", "坏词", " ", "-", "*", "\xE2\x80\x8B", "Ｂ",
    "ＡＤ", "好", "ok", "\xFF", "\xE4\xBD", "，", "。", "abc", "cde", "x",
};

static size_t random_text(char *buf, size_t cap)
{
    const size_t n_fragments = sizeof fragments / sizeof fragments[0];
    size_t len = 0;
    const size_t count = 1 + test_below(40);
    for (size_t i = 0; i < count; i++) {
        const char *fragment = fragments[test_below(n_fragments)];
        const size_t n = strlen(fragment);
        if (len + n >= cap)
            break;
        memcpy(buf + len, fragment, n);
        len += n;
    }
    buf[len] = '\0';
    return len;
}

static int compare_size(const void *a, const void *b)
{
    const size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void test_stream_equals_mask(void)
{
    const char *words[] = {"bad", "badly", "坏词", "abc", "cde", "ly"};
    zq_filter *filter = make_filter(words, 6);
    zq_filter_stream *stream = NULL;
    CHECK(zq_filter_stream_create(filter, &stream) == ZQ_OK, "%s", zq_last_error());
    printf("# test_stream_equals_mask seed %u\n", TEST_SEED);

    char text[256], expected[256];
    size_t cuts[16];
    int mismatches = 0;
    for (int round = 0; round < 400; round++) {
        const size_t len = random_text(text, sizeof text);
        size_t expected_len;
        int64_t expected_hits, hits;
        zq_filter_mask(filter, text, len, expected, &expected_len, &expected_hits);
        for (int split = 0; split < 8; split++) {
            const int n_cuts = len ? (int)test_below(16) : 0;
            for (int c = 0; c < n_cuts; c++)
                cuts[c] = test_below(len + 1);
            qsort(cuts, (size_t)n_cuts, sizeof cuts[0], compare_size);
            char *joined = stream_pieces(stream, text, len, cuts, n_cuts, &hits);
            if (strcmp(joined, expected) != 0 || hits != expected_hits) {
                if (mismatches++ < 3)
                    fprintf(stderr, "round %d: stream '%s' (%lld hits), mask '%s' (%lld)\n",
                            round, joined, (long long)hits, expected, (long long)expected_hits);
            }
            free(joined);
        }
    }
    CHECK_EQ_INT(mismatches, 0);
    zq_filter_stream_free(stream);
    zq_filter_free(filter);
}

/* Returns the number of code points in s[0..len), counting a trailing incomplete one. */
static int count_code_points(const char *s, size_t len)
{
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static void test_stream_holds_minimal_tail(void)
{
    const char *words[] = {"bad", "badly", "坏词语"};
    zq_filter *filter = make_filter(words, 3);
    zq_filter_stream *stream = NULL;
    CHECK(zq_filter_stream_create(filter, &stream) == ZQ_OK, "%s", zq_last_error());
    const struct {
        const char *piece;
        const char *emitted;
        size_t pending;
    } steps[] = {
        {"xxb", "xx", 1},   {"a", "", 2},          {"x", "bax", 0},   {"bad", "", 3},
        {"ly", "*****", 0}, {"bad", "", 3},        {"!", "", 4},      {"?", "", 5},
        {"z", "***!?z", 0}, {"坏\xE8\xAF", "", 5}, {"\x8D", "", 6},   {"语", "***", 0},
        {"\xE8", "", 1},    {"\xAF\x8D", "词", 0}, {"坏坏", "坏", 3},
    };
    const char *text;
    size_t len;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        CHECK(zq_filter_stream_push(stream, steps[i].piece, strlen(steps[i].piece), &text,
                                    &len) == ZQ_OK, "push %zu", i);
        CHECK(strcmp(text, steps[i].emitted) == 0, "step %zu: emitted '%s', expected '%s'", i,
              text, steps[i].emitted);
        CHECK(zq_filter_stream_pending(stream) == steps[i].pending,
              "step %zu: %zu bytes pending, expected %zu", i, zq_filter_stream_pending(stream),
              steps[i].pending);
    }
    CHECK(zq_filter_stream_finish(stream, &text, &len) == ZQ_OK, "finish");
    CHECK(strcmp(text, "坏") == 0, "finish emitted '%s'", text);
    CHECK_EQ_INT(zq_filter_stream_hits(stream), 4);
    zq_filter_stream_free(stream);
    zq_filter_free(filter);
}

/* With no noise in the text, the held tail is at most max_word_chars - 1 code points plus one
 * incomplete character, whatever the split. */
static void test_stream_hold_bound(void)
{
    const char *words[] = {"abcdef", "坏词语", "xyz"};
    zq_filter *filter = make_filter(words, 3);
    const int max_chars = zq_filter_max_word_chars(filter);
    zq_filter_stream *stream = NULL;
    CHECK(zq_filter_stream_create(filter, &stream) == ZQ_OK, "%s", zq_last_error());
    const char *const parts[] = {"a", "ab", "abcde", "abcdef", "坏", "坏词", "x", "xy", "q"};
    char text[512];
    int worst = 0;
    for (int round = 0; round < 200; round++) {
        size_t len = 0;
        for (int i = 0; i < 30; i++) {
            const char *part = parts[test_below(sizeof parts / sizeof parts[0])];
            memcpy(text + len, part, strlen(part));
            len += strlen(part);
        }
        const char *out;
        size_t out_len;
        for (size_t from = 0; from < len;) {
            const size_t step = 1 + test_below(4);
            const size_t to = from + step < len ? from + step : len;
            zq_filter_stream_push(stream, text + from, to - from, &out, &out_len);
            const size_t pending = zq_filter_stream_pending(stream);
            const int held = count_code_points(text + to - pending, pending);
            worst = held > worst ? held : worst;
            from = to;
        }
        zq_filter_stream_finish(stream, &out, &out_len);
    }
    CHECK(worst <= max_chars, "held %d code points, longest word %d", worst, max_chars);
    CHECK(worst >= max_chars - 1, "never held a near-complete word (worst %d)", worst);
    zq_filter_stream_free(stream);
    zq_filter_free(filter);
}

int main(void)
{
    ZQ_RUN(test_plain_hits);
    ZQ_RUN(test_case_and_width_variants);
    ZQ_RUN(test_noise_inside_words);
    ZQ_RUN(test_overlapping_words);
    ZQ_RUN(test_word_prefix_of_another);
    ZQ_RUN(test_no_false_hits);
    ZQ_RUN(test_duplicate_and_noise_words);
    ZQ_RUN(test_empty_list);
    ZQ_RUN(test_load_word_list);
    ZQ_RUN(test_load_errors);
    ZQ_RUN(test_stream_equals_mask);
    ZQ_RUN(test_stream_holds_minimal_tail);
    ZQ_RUN(test_stream_hold_bound);
    ZQ_CHECK_EXIT();
}
