/*
 * test_zqfile.c - the .zq reader and writer: round trips of every tensor type, CRC-32C, and
 * rejection of every kind of damage (formats/ZQ_FORMAT.md, "How a reader reacts to damage").
 */
#include "../formats/zqfile.h"
#include "../formats/zqfile_internal.h"
#include "../runtime/internal.h"
#include "support/check.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define SEED 20240611u

static uint64_t rng_state;

static uint32_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rng_float(void)
{
    return (float)(rng_next() % 20001) / 10000.0f - 1.0f;
}

static void tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", zq_test_tmpdir(), name);
}

/* Writes a new file: replacing a truncated one would make ext4 flush it to disk on close
 * (auto_da_alloc), which slows the damage loops down a lot. */
static int write_bytes(const char *path, const void *data, size_t n)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    const int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* ---- a sample model -------------------------------------------------------------------- */

static char *sample_vocab[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "你", "好",
                               "a",     "##b",   "",      "hello"};
static char *sample_added[] = {"<user>", "<bot>"};

enum { N_SAMPLE = 6 };

/* Fills f with one tensor of each kind; the data is malloc'd (free with free_sample). The
 * tensors have the names of GPT-2 weights, which the reader requires, but small shapes that
 * no model has. */
static void make_sample(zq_file *f)
{
    memset(f, 0, sizeof *f);
    f->hparams = (zq_hparams){.n_vocab = 16, .n_ctx = 8, .n_embd = 8, .n_layer = 1,
                              .n_head = 2, .n_inner = 32, .ln_eps = 1e-5f,
                              .activation = ZQ_ACT_GELU_ERF};
    f->vocab = sample_vocab;
    f->n_vocab_base = (int32_t)(sizeof sample_vocab / sizeof sample_vocab[0]);
    f->added = sample_added;
    f->n_added = 2;
    f->lower_case = false;
    snprintf(f->name, sizeof f->name, "sample");
    snprintf(f->tool, sizeof f->tool, "test_zqfile");
    snprintf(f->source, sizeof f->source, "memory");
    snprintf(f->source_format, sizeof f->source_format, "random");
    snprintf(f->quant_desc, sizeof f->quant_desc, "mixed types");

    static const struct {
        const char *name;
        zq_type type;
        int rows, cols, group;
    } shapes[N_SAMPLE] = {
        {"wpe.weight", ZQ_TYPE_F32, 3, 5, 0},
        {"h.0.attn.c_proj.weight", ZQ_TYPE_F16, 4, 7, 0},
        {"h.0.attn.c_attn.weight", ZQ_TYPE_Q8, 5, 33, 0},
        {"h.0.mlp.c_fc.weight", ZQ_TYPE_Q8, 6, 64, 16},
        {"ln_f.bias", ZQ_TYPE_F32, 1, 9, 0},
        {"wte.weight", ZQ_TYPE_Q8, 40, 4000, 0},
    };
    f->tensors = calloc(N_SAMPLE, sizeof *f->tensors);
    f->n_tensors = N_SAMPLE;
    for (int i = 0; i < N_SAMPLE; i++) {
        zq_file_tensor *t = &f->tensors[i];
        snprintf(t->name, sizeof t->name, "%s", shapes[i].name);
        t->type = shapes[i].type;
        t->rows = shapes[i].rows;
        t->cols = shapes[i].cols;
        t->group = shapes[i].group;
        const size_t n = (size_t)t->rows * (size_t)t->cols;
        if (t->type == ZQ_TYPE_F32) {
            float *d = malloc(n * sizeof *d);
            for (size_t k = 0; k < n; k++)
                d[k] = rng_float();
            t->data = d;
        } else if (t->type == ZQ_TYPE_F16) {
            uint16_t *d = malloc(n * sizeof *d);
            for (size_t k = 0; k < n; k++)
                d[k] = zq_f32_to_f16(rng_float());
            t->data = d;
        } else {
            /* The big tensor is mostly zeros, so its frame has several blocks but few bytes,
             * which keeps the damage loops short. */
            const bool sparse = i == 5;
            int8_t *d = malloc(n);
            for (size_t k = 0; k < n; k++) {
                const int v = (int)(rng_next() % 255) - 127;
                d[k] = (int8_t)(sparse && rng_next() % 16 != 0 ? 0 : v);
            }
            const size_t n_scales = (size_t)(zq_frame_scale_bytes(t) / 4);
            float *s = malloc(n_scales * sizeof *s);
            for (size_t k = 0; k < n_scales; k++)
                s[k] = 0.001f + (float)(rng_next() % 1000) * 1e-5f;
            t->data = d;
            t->scales = s;
        }
    }
}

static void free_sample(zq_file *f)
{
    for (int i = 0; i < f->n_tensors; i++) {
        free(f->tensors[i].data);
        free(f->tensors[i].scales);
    }
    free(f->tensors);
    memset(f, 0, sizeof *f);
}

/* The sample written once at level 3; most damage tests start from its bytes. */
static char sample_path[512];
static uint8_t *sample_bytes;
static size_t sample_size;

static void write_sample_once(void)
{
    if (sample_bytes)
        return;
    zq_file f;
    make_sample(&f);
    tmp_path(sample_path, sizeof sample_path, "sample.zq");
    const zq_status st = zq_file_write(sample_path, &f, 3, 2);
    CHECK(st == ZQ_OK, "write: %s", zq_last_error());
    free_sample(&f);
    sample_bytes = (uint8_t *)zq_test_read_file(sample_path, &sample_size);
    CHECK(sample_bytes != NULL, "cannot read back %s", sample_path);
}

static uint64_t sample_meta_size(void)
{
    uint64_t v;
    memcpy(&v, sample_bytes + 16, 8);
    return v;
}

/* Reads path, which must fail with status (or any failure when status is ZQ_OK), with a
 * message that names the file and contains needle (if not NULL), and leave *out empty. */
static void expect_reject(const char *path, zq_status status, const char *needle)
{
    zq_file f;
    memset(&f, 0x5a, sizeof f);
    const zq_status st = zq_file_read(path, 2, &f);
    CHECK(st != ZQ_OK, "%s was accepted", path);
    if (status != ZQ_OK)
        CHECK(st == status, "%s: status %s, expected %s (%s)", path, zq_status_str(st),
              zq_status_str(status), zq_last_error());
    CHECK(strstr(zq_last_error(), path) != NULL, "message lacks the file name: %s",
          zq_last_error());
    if (needle)
        CHECK(strstr(zq_last_error(), needle) != NULL, "message lacks \"%s\": %s", needle,
              zq_last_error());
    CHECK(f.arena == NULL, "%s: arena not freed", path);
    CHECK(f.tensors == NULL, "%s: tensors not freed", path);
    CHECK(f.n_tensors == 0, "%s: n_tensors not reset", path);
    CHECK(f.vocab == NULL, "%s: vocabulary not freed", path);
    zq_file_free(&f);
}

static void expect_bytes_rejected(const char *name, const uint8_t *bytes, size_t n,
                                  zq_status status, const char *needle)
{
    char path[512];
    tmp_path(path, sizeof path, name);
    CHECK(write_bytes(path, bytes, n), "cannot write %s", path);
    expect_reject(path, status, needle);
}

/* ---- CRC-32C --------------------------------------------------------------------------- */

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void crc32c_matches_reference(void)
{
    CHECK_EQ_INT(zq_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(zq_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(zq_crc32c(0, "", 0), 0);

    uint8_t buf[1100];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)rng_next();
    for (size_t start = 0; start < 9; start++) {
        for (size_t n = 0; n + start <= sizeof buf; n += 37) {
            const uint32_t want = crc32c_bitwise(buf + start, n);
            CHECK_EQ_INT(zq_crc32c(0, buf + start, n), want);
            CHECK_EQ_INT(zq_crc32c_portable(0, buf + start, n), want);
        }
    }
    /* Continuing from a previous value equals one pass over the whole buffer. */
    const uint32_t part = zq_crc32c(0, buf, 500);
    CHECK_EQ_INT(zq_crc32c(part, buf + 500, 600), crc32c_bitwise(buf, 1100));
}

/* ---- round trips ----------------------------------------------------------------------- */

static void compare_tensor(const zq_file_tensor *a, const zq_file_tensor *b)
{
    CHECK(strcmp(a->name, b->name) == 0, "%s vs %s", a->name, b->name);
    CHECK_EQ_INT(a->type, b->type);
    CHECK_EQ_INT(a->rows, b->rows);
    CHECK_EQ_INT(a->cols, b->cols);
    CHECK_EQ_INT(a->group, b->group);
    const size_t n = (size_t)a->rows * (size_t)a->cols;
    size_t elem = 1;
    if (a->type == ZQ_TYPE_F32)
        elem = 4;
    else if (a->type == ZQ_TYPE_F16)
        elem = 2;
    CHECK(memcmp(a->data, b->data, n * elem) == 0, "tensor %s: data differs", a->name);
    CHECK((uintptr_t)b->data % 64 == 0, "tensor %s: data not 64-byte aligned", a->name);
    if (a->type == ZQ_TYPE_Q8) {
        const size_t scale_bytes = (size_t)zq_frame_scale_bytes(a);
        CHECK(b->scales != NULL, "tensor %s: no scales", a->name);
        CHECK(memcmp(a->scales, b->scales, scale_bytes) == 0, "tensor %s: scales differ",
              a->name);
        CHECK((uintptr_t)b->scales % 64 == 0, "tensor %s: scales not 64-byte aligned", a->name);
        CHECK_EQ_INT(zq_file_tensor_bytes(b), n + scale_bytes);
    } else {
        CHECK(b->scales == NULL, "tensor %s: unexpected scales", a->name);
        CHECK_EQ_INT(zq_file_tensor_bytes(b), n * elem);
    }
}

static void compare_files(const zq_file *a, const zq_file *b)
{
    CHECK(memcmp(&a->hparams, &b->hparams, sizeof a->hparams) == 0, "hparams differ");
    CHECK_EQ_INT(a->n_vocab_base, b->n_vocab_base);
    for (int i = 0; i < a->n_vocab_base && i < b->n_vocab_base; i++)
        CHECK(strcmp(a->vocab[i], b->vocab[i]) == 0, "vocab %d: %s vs %s", i, a->vocab[i],
              b->vocab[i]);
    CHECK_EQ_INT(a->n_added, b->n_added);
    for (int i = 0; i < a->n_added && i < b->n_added; i++)
        CHECK(strcmp(a->added[i], b->added[i]) == 0, "added %d differs", i);
    CHECK_EQ_INT(a->lower_case, b->lower_case);
    CHECK(strcmp(b->tokenizer_kind, "wordpiece") == 0, "kind %s", b->tokenizer_kind);
    CHECK(strcmp(a->name, b->name) == 0, "name %s", b->name);
    CHECK(strcmp(a->tool, b->tool) == 0, "tool %s", b->tool);
    CHECK(strcmp(a->source, b->source) == 0, "source %s", b->source);
    CHECK(strcmp(a->source_format, b->source_format) == 0, "format %s", b->source_format);
    CHECK(strcmp(a->quant_desc, b->quant_desc) == 0, "quant %s", b->quant_desc);
    CHECK_EQ_INT(a->n_tensors, b->n_tensors);
    for (int i = 0; i < a->n_tensors && i < b->n_tensors; i++)
        compare_tensor(&a->tensors[i], &b->tensors[i]);
}

static void zqfile_round_trip(void)
{
    write_sample_once();
    zq_file want, got;
    rng_state = SEED;
    make_sample(&want);
    rng_state = SEED + 1;

    zq_status st = zq_file_read(sample_path, 3, &got);
    CHECK(st == ZQ_OK, "read: %s", zq_last_error());
    if (st == ZQ_OK) {
        compare_files(&want, &got);
        CHECK((uintptr_t)got.arena % 64 == 0, "arena not aligned");
        CHECK(got.arena_bytes >= 6 * 64, "arena of %zu bytes", got.arena_bytes);
        CHECK(zq_file_find(&got, "h.0.mlp.c_fc.weight") == &got.tensors[3], "find failed");
        CHECK(zq_file_find(&got, "missing") == NULL, "found a missing tensor");
    }
    zq_file_free(&got);
    CHECK(got.arena == NULL, "free left the arena");
    CHECK(got.n_tensors == 0, "free left n_tensors");
    zq_file_free(&got);
    zq_file_free(NULL);
    free_sample(&want);
}

/* Tensor frames are compressed one per thread, so the bytes do not depend on the threads. */
static void zqfile_write_deterministic(void)
{
    write_sample_once();
    zq_file f;
    rng_state = SEED;
    make_sample(&f);
    char path[512];
    tmp_path(path, sizeof path, "one-thread.zq");
    CHECK(zq_file_write(path, &f, 3, 1) == ZQ_OK, "%s", zq_last_error());
    size_t n = 0;
    uint8_t *bytes = (uint8_t *)zq_test_read_file(path, &n);
    CHECK(bytes != NULL, "cannot read %s", path);
    CHECK_EQ_INT(n, sample_size);
    CHECK(bytes && n == sample_size && memcmp(bytes, sample_bytes, n) == 0,
          "one thread wrote other bytes than two");
    free(bytes);

    /* Other levels still read back the same tensors. */
    for (int level = 1; level <= 19; level += 9) {
        CHECK(zq_file_write(path, &f, level, 4) == ZQ_OK, "level %d: %s", level, zq_last_error());
        zq_file got;
        CHECK(zq_file_read(path, 1, &got) == ZQ_OK, "level %d: %s", level, zq_last_error());
        compare_files(&f, &got);
        zq_file_free(&got);
    }
    free_sample(&f);
}

static void zqfile_no_tensors(void)
{
    zq_file f;
    rng_state = SEED;
    make_sample(&f);
    zq_file_tensor *keep = f.tensors;
    const int32_t n = f.n_tensors;
    f.tensors = NULL;
    f.n_tensors = 0;
    char path[512];
    tmp_path(path, sizeof path, "empty-model.zq");
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_OK, "%s", zq_last_error());
    zq_file got;
    CHECK(zq_file_read(path, 2, &got) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(got.n_tensors, 0);
    CHECK_EQ_INT(got.n_vocab_base, f.n_vocab_base);
    zq_file_free(&got);
    f.tensors = keep;
    f.n_tensors = n;
    free_sample(&f);
}

/* ---- damage to the file as a whole ----------------------------------------------------- */

static void zqfile_rejects_bad_header(void)
{
    write_sample_once();
    uint8_t *b = malloc(sample_size);

    memcpy(b, sample_bytes, sample_size);
    memcpy(b, "GGUF\0\0\0\0", 8);
    expect_bytes_rejected("magic.zq", b, sample_size, ZQ_ERR_FORMAT, "not a .zq file");

    const uint32_t versions[] = {0, 2, 0x01000001u};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        memcpy(b, sample_bytes, sample_size);
        memcpy(b + 8, &versions[i], 4);
        char needle[64];
        snprintf(needle, sizeof needle, "format version %u, this zq reads version 1",
                 versions[i]);
        expect_bytes_rejected("version.zq", b, sample_size, ZQ_ERR_VERSION, needle);
        CHECK(strstr(zq_last_error(), "re-quantize") != NULL, "%s", zq_last_error());
    }

    /* Flags with a valid header checksum, as a writer with a flag unknown here would set. */
    memcpy(b, sample_bytes, sample_size);
    b[12] = 1;
    const uint32_t crc = zq_crc32c(0, b, 28);
    memcpy(b + 28, &crc, 4);
    expect_bytes_rejected("flags.zq", b, sample_size, ZQ_ERR_FORMAT, "flags");

    memcpy(b, sample_bytes, sample_size);
    b[20] ^= 0x40; /* meta_size */
    expect_bytes_rejected("meta-size.zq", b, sample_size, ZQ_ERR_CHECKSUM, "header checksum");
    free(b);
}

static void zqfile_rejects_truncation(void)
{
    write_sample_once();
    const size_t data_start = 32 + (size_t)sample_meta_size();
    const struct {
        size_t size;
        const char *needle;
    } cases[] = {
        {0, "empty"},
        {1, "truncated"},
        {31, "truncated"},
        {32, "truncated"},
        {32 + (size_t)sample_meta_size() / 2, "truncated"},
        {data_start - 1, "truncated"},
        {data_start, "truncated"},
        {data_start + 7, "truncated"},
        {(data_start + sample_size) / 2, "truncated"},
        {sample_size - 1, "truncated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "truncated-%zu.zq", cases[i].size);
        expect_bytes_rejected(name, sample_bytes, cases[i].size, ZQ_ERR_FORMAT, cases[i].needle);
    }
}

static void zqfile_rejects_trailing_bytes(void)
{
    write_sample_once();
    uint8_t *b = malloc(sample_size + 100);
    memcpy(b, sample_bytes, sample_size);
    memset(b + sample_size, 0, 100);
    expect_bytes_rejected("trailing-1.zq", b, sample_size + 1, ZQ_ERR_FORMAT, "1 unexpected byte");
    expect_bytes_rejected("trailing-100.zq", b, sample_size + 100, ZQ_ERR_FORMAT,
                          "100 unexpected bytes");
    /* A second copy of the last frame appended is still trailing data. */
    memcpy(b + sample_size, sample_bytes + sample_size - 100, 100);
    expect_bytes_rejected("trailing-frame.zq", b, sample_size + 100, ZQ_ERR_FORMAT, "unexpected");
    free(b);
}

static void flip_and_expect_error(uint8_t *b, size_t pos, uint8_t mask, int *accepted)
{
    char path[512];
    tmp_path(path, sizeof path, "flipped.zq");
    b[pos] ^= mask;
    const int written = write_bytes(path, b, sample_size);
    b[pos] ^= mask;
    CHECK(written, "cannot write %s", path);
    zq_file f;
    /* One thread: on a busy machine each parallel region can wait a scheduler tick. */
    const zq_status st = zq_file_read(path, 1, &f);
    if (st == ZQ_OK) {
        (*accepted)++;
        fprintf(stderr, "byte %zu ^ 0x%02x was not detected\n", pos, mask);
    } else {
        CHECK(st == ZQ_ERR_FORMAT || st == ZQ_ERR_CHECKSUM || st == ZQ_ERR_VERSION,
              "byte %zu: status %s", pos, zq_status_str(st));
        CHECK(strstr(zq_last_error(), path) != NULL, "byte %zu: %s", pos, zq_last_error());
    }
    zq_file_free(&f);
}

/* The positions to damage: every 97th byte, plus both ends of every region and frame. */
static size_t damage_positions(size_t *pos, size_t cap)
{
    size_t n = 0;
    for (size_t p = 0; p < sample_size && n < cap; p += 97)
        pos[n++] = p;
    const size_t meta_end = 32 + (size_t)sample_meta_size();
    const size_t fixed[] = {0, 7, 8, 12, 16, 24, 28, 31, 32, 36, meta_end - 1};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && n < cap; i++)
        pos[n++] = fixed[i];

    /* Frame ends, from the directory. */
    char *json = malloc(1 << 20);
    const size_t len = ZSTD_decompress(json, 1 << 20, sample_bytes + 32, meta_end - 32);
    CHECK(!ZSTD_isError(len), "metadata does not decompress");
    cJSON *root = ZSTD_isError(len) ? NULL : cJSON_ParseWithLength(json, len);
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "tensors"))
    {
        const size_t off = meta_end + (size_t)cJSON_GetObjectItem(e, "offset")->valuedouble;
        const size_t size = (size_t)cJSON_GetObjectItem(e, "size")->valuedouble;
        const size_t at[] = {off, off + 4, off + 5, off + size / 2, off + size - 5,
                             off + size - 1};
        for (size_t i = 0; i < 6 && n < cap; i++)
            pos[n++] = at[i];
    }
    cJSON_Delete(root);
    free(json);
    return n;
}

static void zqfile_detects_every_flipped_byte(void)
{
    write_sample_once();
    uint8_t *b = malloc(sample_size);
    memcpy(b, sample_bytes, sample_size);
    size_t *pos = malloc((sample_size / 97 + 100) * sizeof *pos);
    const size_t n = damage_positions(pos, sample_size / 97 + 100);
    int accepted = 0;
    for (size_t i = 0; i < n; i++) {
        flip_and_expect_error(b, pos[i], 0xFF, &accepted);
        flip_and_expect_error(b, pos[i], (uint8_t)(1u << (pos[i] % 8)), &accepted);
    }
    CHECK(accepted == 0, "%d of %zu damaged files were accepted", accepted, 2 * n);
    printf("# %zu positions in a %zu-byte file, 2 flips each\n", n, sample_size);
    free(pos);
    free(b);
}

static void zqfile_rejects_bad_paths(void)
{
    write_sample_once();
    char path[512];
    tmp_path(path, sizeof path, "empty.zq");
    CHECK(write_bytes(path, "", 0), "cannot write %s", path);
    expect_reject(path, ZQ_ERR_FORMAT, "empty");

    tmp_path(path, sizeof path, "a-directory.zq");
    mkdir(path, 0700);
    expect_reject(path, ZQ_ERR_IO, "directory");

    tmp_path(path, sizeof path, "does-not-exist.zq");
    expect_reject(path, ZQ_ERR_IO, "No such file");

    /* A FIFO without a writer: a blocking open() would wait forever, so the alarm turns a
     * hang into a failed test program. */
    tmp_path(path, sizeof path, "fifo.zq");
    unlink(path);
    CHECK(mkfifo(path, 0600) == 0, "cannot create the FIFO %s", path);
    alarm(60);
    expect_reject(path, ZQ_ERR_IO, "not a regular file");
    alarm(0);
    unlink(path);
}

/* ---- metadata that is well-formed JSON but wrong --------------------------------------- */

/* The sample split into its parts, so a test can change the metadata or a frame and write a
 * file with correct checksums around the change. */
typedef struct {
    cJSON *meta;
    const uint8_t *frames; /* the tensor frames of the sample, unchanged */
    size_t frames_size;
    uint8_t *extra;        /* a replacement frame appended after the others, or NULL */
    size_t extra_size;
} crafted;

static void craft_from_sample(crafted *c)
{
    write_sample_once();
    memset(c, 0, sizeof *c);
    const size_t meta_end = 32 + (size_t)sample_meta_size();
    char *json = malloc(1 << 20);
    const size_t len = ZSTD_decompress(json, 1 << 20, sample_bytes + 32, meta_end - 32);
    c->meta = ZSTD_isError(len) ? NULL : cJSON_ParseWithLength(json, len);
    free(json);
    c->frames = sample_bytes + meta_end;
    c->frames_size = sample_size - meta_end;
}

/* Writes a file with json as its metadata and the crafted frames, with valid CRCs, to
 * tmp/name, and returns its path in path. */
static void craft_write_text(const crafted *c, const char *name, const char *json, size_t len,
                             char *path, size_t cap)
{
    const size_t bound = ZSTD_compressBound(len);
    uint8_t *meta = malloc(bound);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    const size_t meta_size = ZSTD_compress2(cctx, meta, bound, json, len);
    ZSTD_freeCCtx(cctx);

    uint8_t header[32];
    const uint32_t version = ZQ_FILE_VERSION, flags = 0;
    const uint64_t size64 = meta_size;
    const uint32_t meta_crc = zq_crc32c(0, meta, meta_size);
    memcpy(header, ZQ_FILE_MAGIC, 8);
    memcpy(header + 8, &version, 4);
    memcpy(header + 12, &flags, 4);
    memcpy(header + 16, &size64, 8);
    memcpy(header + 24, &meta_crc, 4);
    const uint32_t header_crc = zq_crc32c(0, header, 28);
    memcpy(header + 28, &header_crc, 4);

    tmp_path(path, cap, name);
    unlink(path);
    FILE *f = fopen(path, "wb");
    fwrite(header, 1, 32, f);
    fwrite(meta, 1, meta_size, f);
    fwrite(c->frames, 1, c->frames_size, f);
    if (c->extra)
        fwrite(c->extra, 1, c->extra_size, f);
    CHECK(fclose(f) == 0, "cannot write %s", path);
    free(meta);
}

static void craft_write(crafted *c, const char *name, char *path, size_t cap)
{
    char *json = cJSON_PrintUnformatted(c->meta);
    craft_write_text(c, name, json, strlen(json), path, cap);
    cJSON_free(json);
}

static void craft_free(crafted *c)
{
    cJSON_Delete(c->meta);
    free(c->extra);
}

static cJSON *tensor_entry(crafted *c, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItem(c->meta, "tensors"), i);
}

static void set_number(cJSON *obj, const char *key, double v)
{
    cJSON_ReplaceItemInObject(obj, key, cJSON_CreateNumber(v));
}

static void set_string(cJSON *obj, const char *key, const char *v)
{
    cJSON_ReplaceItemInObject(obj, key, cJSON_CreateString(v));
}

typedef void (*mutate_fn)(crafted *c);

static void m_n_embd_zero(crafted *c)
{
    set_number(cJSON_GetObjectItem(c->meta, "hparams"), "n_embd", 0);
}
static void m_n_head_indivisible(crafted *c)
{
    set_number(cJSON_GetObjectItem(c->meta, "hparams"), "n_head", 3);
}
static void m_n_layer_fraction(crafted *c)
{
    set_number(cJSON_GetObjectItem(c->meta, "hparams"), "n_layer", 1.5);
}
static void m_activation(crafted *c)
{
    set_string(cJSON_GetObjectItem(c->meta, "hparams"), "activation", "swish");
}
static void m_ln_eps_string(crafted *c)
{
    set_string(cJSON_GetObjectItem(c->meta, "hparams"), "ln_eps", "1e-5");
}
static void m_no_provenance(crafted *c)
{
    cJSON_DeleteItemFromObject(c->meta, "provenance");
}
static void m_long_name(crafted *c)
{
    char name[200];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = 0;
    set_string(cJSON_GetObjectItem(c->meta, "provenance"), "name", name);
}
static void m_tokenizer_kind(crafted *c)
{
    set_string(cJSON_GetObjectItem(c->meta, "tokenizer"), "kind", "bpe");
}
static void m_vocab_number(crafted *c)
{
    cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(c->meta, "tokenizer"), "vocab");
    cJSON_ReplaceItemInArray(vocab, 2, cJSON_CreateNumber(7));
}
static void m_vocab_too_big(crafted *c)
{
    set_number(cJSON_GetObjectItem(c->meta, "hparams"), "n_vocab", 12);
}
static void m_special_wrong(crafted *c)
{
    cJSON *tok = cJSON_GetObjectItem(c->meta, "tokenizer");
    set_number(cJSON_GetObjectItem(tok, "special"), "sep", 2);
}
static void m_offset_gap(crafted *c)
{
    cJSON *e = tensor_entry(c, 1);
    set_number(e, "offset", cJSON_GetObjectItem(e, "offset")->valuedouble + 1);
}
static void m_raw_size(crafted *c)
{
    set_number(tensor_entry(c, 0), "raw_size", 61);
}
static void m_duplicate(crafted *c)
{
    set_string(tensor_entry(c, 4), "name", "wpe.weight");
}
static void m_bad_group(crafted *c)
{
    set_number(tensor_entry(c, 2), "group", 7);
}
static void m_group_on_f32(crafted *c)
{
    set_number(tensor_entry(c, 0), "group", 5);
}
static void m_bad_type(crafted *c)
{
    set_string(tensor_entry(c, 0), "type", "q4_0");
}
static void m_wrong_crc(crafted *c)
{
    cJSON *e = tensor_entry(c, 3);
    set_number(e, "crc32c", (double)((uint32_t)cJSON_GetObjectItem(e, "crc32c")->valuedouble ^ 1));
}
static void m_huge_raw_size(crafted *c)
{
    cJSON *e = tensor_entry(c, 5);
    set_number(e, "rows", 1 << 30);
    set_number(e, "cols", 1 << 20);
    set_number(e, "raw_size", 4.0 * (1 << 30) + 1125899906842624.0); /* scales + 2^50 */
}
static void m_tensors_object(crafted *c)
{
    cJSON_ReplaceItemInObject(c->meta, "tensors", cJSON_CreateObject());
}
/* cJSON prints bytes above 0x7f as they are, so these reach the file unchanged. */
static void m_vocab_latin1(crafted *c)
{
    cJSON *vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(c->meta, "tokenizer"), "vocab");
    cJSON_ReplaceItemInArray(vocab, 7, cJSON_CreateString("caf\xe9"));
}
static void m_added_surrogate(crafted *c)
{
    cJSON *added = cJSON_GetObjectItem(cJSON_GetObjectItem(c->meta, "tokenizer"), "added");
    cJSON_ReplaceItemInArray(added, 1, cJSON_CreateString("<b\xed\xa0\x80t>"));
}
static void m_provenance_overlong(crafted *c)
{
    set_string(cJSON_GetObjectItem(c->meta, "provenance"), "source", "models/\xc0\xaf");
}

static void m_duplicate_hparam(crafted *c)
{
    cJSON_AddNumberToObject(cJSON_GetObjectItem(c->meta, "hparams"), "n_embd", 16);
}
static void m_duplicate_top_key(crafted *c)
{
    cJSON_AddItemToObject(c->meta, "provenance", cJSON_CreateObject());
}
static void m_duplicate_special(crafted *c)
{
    cJSON *tok = cJSON_GetObjectItem(c->meta, "tokenizer");
    cJSON_AddNumberToObject(cJSON_GetObjectItem(tok, "special"), "sep", 2);
}
static void m_duplicate_tensor_key(crafted *c)
{
    cJSON_AddNumberToObject(tensor_entry(c, 2), "rows", 50);
}
static void m_layer_past_n_layer(crafted *c)
{
    set_string(tensor_entry(c, 1), "name", "h.1.attn.c_proj.weight");
}
static void m_unknown_tensor(crafted *c)
{
    set_string(tensor_entry(c, 1), "name", "h.0.attn.masked_bias");
}
static void m_leading_zero_layer(crafted *c)
{
    set_string(tensor_entry(c, 1), "name", "h.00.attn.c_proj.weight");
}

static void m_added_empty(crafted *c)
{
    cJSON *added = cJSON_GetObjectItem(cJSON_GetObjectItem(c->meta, "tokenizer"), "added");
    cJSON_ReplaceItemInArray(added, 1, cJSON_CreateString(""));
}
static void m_no_sep(crafted *c)
{
    cJSON *tok = cJSON_GetObjectItem(c->meta, "tokenizer");
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(tok, "vocab"), 3, cJSON_CreateString("[SEP2]"));
    set_number(cJSON_GetObjectItem(tok, "special"), "sep", -1);
}

static void zqfile_rejects_bad_metadata(void)
{
    const struct {
        const char *name;
        mutate_fn mutate;
        zq_status status;
        const char *needle;
    } cases[] = {
        {"n_embd", m_n_embd_zero, ZQ_ERR_FORMAT, "hparams.n_embd"},
        {"n_head", m_n_head_indivisible, ZQ_ERR_FORMAT, "not a multiple of n_head"},
        {"n_layer", m_n_layer_fraction, ZQ_ERR_FORMAT, "hparams.n_layer"},
        {"activation", m_activation, ZQ_ERR_FORMAT, "swish"},
        {"ln_eps", m_ln_eps_string, ZQ_ERR_FORMAT, "hparams.ln_eps"},
        {"provenance", m_no_provenance, ZQ_ERR_FORMAT, "provenance"},
        {"long-name", m_long_name, ZQ_ERR_FORMAT, "provenance.name"},
        {"kind", m_tokenizer_kind, ZQ_ERR_UNSUPPORTED, "bpe"},
        {"vocab", m_vocab_number, ZQ_ERR_FORMAT, "tokenizer.vocab[2]"},
        {"n_vocab", m_vocab_too_big, ZQ_ERR_FORMAT, "more than n_vocab"},
        {"special", m_special_wrong, ZQ_ERR_FORMAT, "tokenizer.special.sep"},
        {"offset", m_offset_gap, ZQ_ERR_FORMAT, "frame offset"},
        {"raw-size", m_raw_size, ZQ_ERR_FORMAT, "raw_size 61"},
        {"duplicate", m_duplicate, ZQ_ERR_FORMAT, "more than once"},
        {"group", m_bad_group, ZQ_ERR_FORMAT, "does not divide"},
        {"group-f32", m_group_on_f32, ZQ_ERR_FORMAT, "only int8"},
        {"type", m_bad_type, ZQ_ERR_FORMAT, "q4_0"},
        {"crc", m_wrong_crc, ZQ_ERR_CHECKSUM, "h.0.mlp.c_fc.weight"},
        {"huge", m_huge_raw_size, ZQ_ERR_FORMAT, "cannot come from"},
        {"tensors", m_tensors_object, ZQ_ERR_FORMAT, "tensors"},
        {"utf8-vocab", m_vocab_latin1, ZQ_ERR_FORMAT, "not valid UTF-8"},
        {"utf8-added", m_added_surrogate, ZQ_ERR_FORMAT, "not valid UTF-8"},
        {"utf8-provenance", m_provenance_overlong, ZQ_ERR_FORMAT, "not valid UTF-8"},
        {"dup-hparam", m_duplicate_hparam, ZQ_ERR_FORMAT,
         "metadata object hparams has the key \"n_embd\" twice"},
        {"dup-top", m_duplicate_top_key, ZQ_ERR_FORMAT,
         "metadata object at the top level has the key \"provenance\" twice"},
        {"dup-special", m_duplicate_special, ZQ_ERR_FORMAT,
         "metadata object tokenizer.special has the key \"sep\" twice"},
        {"dup-tensor", m_duplicate_tensor_key, ZQ_ERR_FORMAT,
         "metadata object tensors[2] has the key \"rows\" twice"},
        {"layer", m_layer_past_n_layer, ZQ_ERR_FORMAT,
         "tensor 'h.1.attn.c_proj.weight' belongs to layer 1, but hparams.n_layer is 1"},
        {"unknown-tensor", m_unknown_tensor, ZQ_ERR_FORMAT,
         "unknown tensor 'h.0.attn.masked_bias'"},
        {"leading-zero", m_leading_zero_layer, ZQ_ERR_FORMAT,
         "unknown tensor 'h.00.attn.c_proj.weight'"},
        {"added-empty", m_added_empty, ZQ_ERR_FORMAT, "added token 1 (id 12) is empty"},
        {"no-sep", m_no_sep, ZQ_ERR_FORMAT, "the vocabulary has no [SEP] token"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crafted c;
        craft_from_sample(&c);
        CHECK(c.meta != NULL, "cannot parse the sample metadata");
        if (!c.meta)
            return;
        cases[i].mutate(&c);
        char name[64], path[512];
        snprintf(name, sizeof name, "meta-%s.zq", cases[i].name);
        craft_write(&c, name, path, sizeof path);
        expect_reject(path, cases[i].status, cases[i].needle);
        craft_free(&c);
    }

    /* The crafting itself must produce a readable file when nothing is changed. */
    crafted c;
    craft_from_sample(&c);
    char path[512];
    craft_write(&c, "meta-unchanged.zq", path, sizeof path);
    zq_file f;
    CHECK(zq_file_read(path, 1, &f) == ZQ_OK, "%s", zq_last_error());
    zq_file_free(&f);
    craft_free(&c);

    /* Bytes after the JSON object; whitespace there is fine. */
    craft_from_sample(&c);
    char *json = cJSON_PrintUnformatted(c.meta);
    const size_t len = strlen(json);
    char *text = malloc(len + 8);
    memcpy(text, json, len);
    memcpy(text + len, " \n{}", 4);
    craft_write_text(&c, "meta-trailing.zq", text, len + 4, path, sizeof path);
    expect_reject(path, ZQ_ERR_FORMAT, "2 unexpected bytes after the metadata JSON object");
    memcpy(text + len, " \r\n\t", 4);
    craft_write_text(&c, "meta-whitespace.zq", text, len + 4, path, sizeof path);
    CHECK(zq_file_read(path, 1, &f) == ZQ_OK, "%s", zq_last_error());
    zq_file_free(&f);
    free(text);
    cJSON_free(json);
    craft_free(&c);

    /* Metadata that is not JSON at all. */
    craft_from_sample(&c);
    cJSON_Delete(c.meta);
    c.meta = cJSON_CreateString("not an object");
    craft_write(&c, "meta-string.zq", path, sizeof path);
    expect_reject(path, ZQ_ERR_FORMAT, "not a JSON object");
    craft_free(&c);
}

/* Appends a frame holding raw (the content of an int8 [5, 33] tensor) to c, with a new
 * directory entry called name; every old frame keeps its entry. */
static void append_q8_frame(crafted *c, const char *name, const uint8_t *raw)
{
    zq_file_tensor t = {.type = ZQ_TYPE_Q8, .rows = 5, .cols = 33};
    const size_t content = (size_t)zq_frame_content_bytes(&t);
    c->extra = malloc(ZSTD_compressBound(content));
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    c->extra_size = ZSTD_compress2(cctx, c->extra, ZSTD_compressBound(content), raw, content);
    ZSTD_freeCCtx(cctx);

    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "type", "int8");
    cJSON_AddNumberToObject(e, "rows", 5);
    cJSON_AddNumberToObject(e, "cols", 33);
    cJSON_AddNumberToObject(e, "group", 0);
    cJSON_AddNumberToObject(e, "offset", (double)c->frames_size);
    cJSON_AddNumberToObject(e, "size", (double)c->extra_size);
    cJSON_AddNumberToObject(e, "raw_size", (double)content);
    cJSON_AddNumberToObject(e, "crc32c", zq_crc32c(0, c->extra, c->extra_size));
    cJSON_AddItemToArray(cJSON_GetObjectItem(c->meta, "tensors"), e);
}

/* The content of an int8 [5, 33] frame: 5 scales of 0.5, padding to 64 bytes, zero values. */
enum { Q8_5X33_BYTES = 64 + 5 * 33 };

static void fill_q8_5x33(uint8_t *raw)
{
    memset(raw, 0, Q8_5X33_BYTES);
    const float scale = 0.5f;
    for (int r = 0; r < 5; r++)
        memcpy(raw + 4 * r, &scale, 4);
}

/* An int8 frame with -128 in it, which the writer never produces, is rejected on reading. */
static void zqfile_rejects_int8_minus_128(void)
{
    crafted c;
    craft_from_sample(&c);
    if (!c.meta)
        return;
    uint8_t raw[Q8_5X33_BYTES];
    fill_q8_5x33(raw);
    raw[64 + 40] = 0x80;
    append_q8_frame(&c, "h.0.mlp.c_proj.weight", raw);
    char path[512];
    craft_write(&c, "minus-128.zq", path, sizeof path);
    expect_reject(path, ZQ_ERR_FORMAT, "int8 value -128 at row 1, column 7");
    craft_free(&c);
}

/* Scales that are infinite, NaN or negative are rejected on reading and writing. */
static void zqfile_rejects_bad_scales(void)
{
    const struct {
        float scale;
        const char *needle;
    } cases[] = {
        {INFINITY, "scale 2 is inf, expected a finite value >= 0"},
        {NAN, "scale 2 is nan, expected a finite value >= 0"},
        {-0.25f, "scale 2 is -0.25, expected a finite value >= 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crafted c;
        craft_from_sample(&c);
        if (!c.meta)
            return;
        uint8_t raw[Q8_5X33_BYTES];
        fill_q8_5x33(raw);
        memcpy(raw + 4 * 2, &cases[i].scale, 4);
        append_q8_frame(&c, "h.0.mlp.c_proj.weight", raw);
        char path[512];
        craft_write(&c, "bad-scale.zq", path, sizeof path);
        expect_reject(path, ZQ_ERR_FORMAT, cases[i].needle);
        craft_free(&c);
    }

    zq_file f;
    make_sample(&f);
    char path[512];
    tmp_path(path, sizeof path, "inf-scale.zq");
    f.tensors[2].scales[2] = INFINITY;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "an infinite scale was written");
    CHECK(strstr(zq_last_error(), "scale 2 is inf, expected a finite value >= 0") != NULL, "%s",
          zq_last_error());
    free_sample(&f);
}

/* Random changes to the metadata JSON, wrapped with valid checksums, reach the JSON checks.
 * Each read must end in a result or a clean error; ASan builds catch memory errors. */
static void zqfile_metadata_survives_damage(void)
{
    crafted c;
    craft_from_sample(&c);
    if (!c.meta)
        return;
    char *json = cJSON_PrintUnformatted(c.meta);
    const size_t len = strlen(json);
    char *copy = malloc(len + 1);
    const char alphabet[] = "{}[]\",:0123456789-.eE tfnul\\xyz";
    uint64_t rng = SEED;
    int accepted = 0;
    for (int round = 0; round < 300; round++) {
        memcpy(copy, json, len + 1);
        for (int k = 0; k < 1 + round % 3; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            copy[(rng >> 33) % len] = alphabet[(rng >> 20) % (sizeof alphabet - 1)];
        }
        char path[512];
        craft_write_text(&c, "fuzz.zq", copy, len, path, sizeof path);
        zq_file f;
        if (zq_file_read(path, 1, &f) == ZQ_OK)
            accepted++;
        else
            CHECK(strstr(zq_last_error(), path) != NULL, "%s", zq_last_error());
        zq_file_free(&f);
    }
    printf("# %d of 300 damaged metadata texts still read\n", accepted);
    free(copy);
    cJSON_free(json);
    craft_free(&c);
}

/* ---- writing --------------------------------------------------------------------------- */

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static void zqfile_write_failures_leave_nothing(void)
{
    zq_file f;
    rng_state = SEED;
    make_sample(&f);
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "write-target");
    mkdir(dir, 0700);

    snprintf(path, sizeof path, "%s/no-such-folder/model.zq", dir);
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_IO, "%s", zq_last_error());
    CHECK(strstr(zq_last_error(), "no-such-folder") != NULL, "%s", zq_last_error());

    /* The rename over a directory fails after the whole file was written. */
    snprintf(path, sizeof path, "%s/model.zq", dir);
    mkdir(path, 0700);
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_IO, "%s", zq_last_error());
    CHECK(strstr(zq_last_error(), "rename") != NULL, "%s", zq_last_error());
    CHECK_EQ_INT(count_entries(dir), 1);
    rmdir(path);

    /* Invalid input: nothing is created. */
    CHECK(zq_file_write(path, &f, 0, 2) == ZQ_ERR_INVALID_ARG, "level 0 accepted");
    CHECK(zq_file_write(path, &f, 23, 2) == ZQ_ERR_INVALID_ARG, "level 23 accepted");
    f.tensors[3].group = 7;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "group 7 of 64 accepted");
    f.tensors[3].group = 16;
    snprintf(f.tensors[1].name, sizeof f.tensors[1].name, "wpe.weight");
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "duplicate name accepted");
    snprintf(f.tensors[1].name, sizeof f.tensors[1].name, "h.1.attn.c_proj.weight");
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "layer 1 of 1 accepted");
    CHECK(strstr(zq_last_error(), "belongs to layer 1") != NULL, "%s", zq_last_error());
    snprintf(f.tensors[1].name, sizeof f.tensors[1].name, "b.f16");
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "unknown name accepted");
    CHECK(strstr(zq_last_error(), "unknown tensor 'b.f16'") != NULL, "%s", zq_last_error());
    snprintf(f.tensors[1].name, sizeof f.tensors[1].name, "h.0.attn.c_proj.weight");
    ((int8_t *)f.tensors[2].data)[9] = -128;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "-128 accepted");
    CHECK(strstr(zq_last_error(), "h.0.attn.c_attn.weight") != NULL, "%s", zq_last_error());
    ((int8_t *)f.tensors[2].data)[9] = 0;
    /* -128 in the first byte, the last 8-byte word and the tail bytes of [5, 33]. */
    const size_t at[] = {0, 159, 160, 164};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int8_t *q = f.tensors[2].data;
        const int8_t keep = q[at[i]];
        q[at[i]] = -128;
        CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "-128 at %zu accepted", at[i]);
        q[at[i]] = keep;
    }
    f.tensors[2].scales[4] = -1.0f;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "negative scale accepted");
    f.tensors[2].scales[4] = 0.5f;
    f.hparams.n_head = 3;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "n_head 3 accepted");
    f.hparams.n_head = 2;
    char latin1[] = "caf\xe9";
    char *keep = f.vocab[7];
    f.vocab[7] = latin1;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "Latin-1 vocabulary accepted");
    CHECK(strstr(zq_last_error(), "vocabulary entry 7 is not valid UTF-8") != NULL, "%s",
          zq_last_error());
    f.vocab[7] = keep;
    f.added[1] = "";
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "empty added token accepted");
    CHECK(strstr(zq_last_error(), "added token 1 (id 12) is empty") != NULL, "%s",
          zq_last_error());
    f.added[1] = "<bot>";
    f.vocab[2] = "[CLS2]";
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "vocabulary without [CLS] accepted");
    CHECK(strstr(zq_last_error(), "has no [CLS] token") != NULL, "%s", zq_last_error());
    f.vocab[2] = "[CLS]";
    snprintf(f.source, sizeof f.source, "models/\xff");
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "invalid provenance accepted");
    CHECK(strstr(zq_last_error(), "provenance source is not valid UTF-8") != NULL, "%s",
          zq_last_error());
    snprintf(f.source, sizeof f.source, "memory");
    f.hparams.n_vocab = 5;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_ERR_INVALID_ARG, "vocab over n_vocab accepted");
    CHECK_EQ_INT(count_entries(dir), 0);

    /* Replacing an existing file works and leaves only the new file. */
    f.hparams.n_vocab = 16;
    CHECK(zq_file_write(path, &f, 3, 2) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_file_write(path, &f, 5, 2) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(count_entries(dir), 1);
    unlink(path);
    rmdir(dir);
    free_sample(&f);
}

int main(void)
{
    printf("# seed %u\n", SEED);
    rng_state = SEED;
    ZQ_RUN(crc32c_matches_reference);
    rng_state = SEED;
    write_sample_once();
    ZQ_RUN(zqfile_round_trip);
    ZQ_RUN(zqfile_write_deterministic);
    ZQ_RUN(zqfile_no_tensors);
    ZQ_RUN(zqfile_rejects_bad_header);
    ZQ_RUN(zqfile_rejects_truncation);
    ZQ_RUN(zqfile_rejects_trailing_bytes);
    ZQ_RUN(zqfile_detects_every_flipped_byte);
    ZQ_RUN(zqfile_rejects_bad_paths);
    ZQ_RUN(zqfile_rejects_bad_metadata);
    ZQ_RUN(zqfile_rejects_int8_minus_128);
    ZQ_RUN(zqfile_rejects_bad_scales);
    ZQ_RUN(zqfile_metadata_survives_damage);
    ZQ_RUN(zqfile_write_failures_leave_nothing);
    free(sample_bytes);
    ZQ_CHECK_EXIT();
}
