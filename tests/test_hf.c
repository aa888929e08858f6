/*
 * test_hf.c - the Hugging Face readers: config.json, safetensors (F32, F16, BF16), the
 * torch.save zip with its pickle, vocab and added tokens, name normalisation, the tied head,
 * and clean errors for damaged folders, which the tests build from the fixtures.
 */
#include "../formats/hf.h"
#include "../formats/hf_internal.h"
#include "../runtime/internal.h"
#include "support/check.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

static char tiny[512], tiny_f16[512], tiny_bf16[512], tiny_torch[512];

static void set_paths(void)
{
    snprintf(tiny, sizeof tiny, "%s/tiny-random", zq_test_fixtures());
    snprintf(tiny_f16, sizeof tiny_f16, "%s/tiny-random/f16", zq_test_fixtures());
    snprintf(tiny_bf16, sizeof tiny_bf16, "%s/tiny-random/bf16", zq_test_fixtures());
    snprintf(tiny_torch, sizeof tiny_torch, "%s/tiny-random/pytorch", zq_test_fixtures());
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

static void copy_file(const char *from, const char *to)
{
    size_t n = 0;
    char *data = zq_test_read_file(from, &n);
    CHECK(data != NULL, "cannot read %s", from);
    if (data)
        CHECK(write_bytes(to, data, n), "cannot write %s", to);
    free(data);
}

/* Makes tmp/<name> holding src's config.json, vocab.txt and tokenizer_config.json, plus its
 * weights file when weights is not NULL. Returns the folder in dir. */
static void make_dir(char *dir, size_t cap, const char *name, const char *src, const char *weights)
{
    snprintf(dir, cap, "%s/%s", zq_test_tmpdir(), name);
    mkdir(dir, 0700);
    const char *files[] = {"config.json", "vocab.txt", "tokenizer_config.json", weights};
    for (int i = 0; i < 4 && files[i]; i++) {
        char from[700], to[700];
        snprintf(from, sizeof from, "%s/%s", src, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        copy_file(from, to);
    }
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    CHECK(write_bytes(path, text, strlen(text)), "cannot write %s", path);
}

/* Replaces key in dir/config.json with value (a JSON text; NULL removes the key). */
static void edit_config(const char *dir, const char *key, const char *value)
{
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = zq_test_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON_DeleteItemFromObject(root, key);
    if (value)
        cJSON_AddItemToObject(root, key, cJSON_Parse(value));
    char *out = cJSON_Print(root);
    CHECK(write_bytes(path, out, strlen(out)), "cannot write %s", path);
    cJSON_free(out);
    cJSON_Delete(root);
}

/* Loads dir, which must fail with status and a message containing both needles. */
static void expect_load_error(const char *dir, zq_status status, const char *needle,
                              const char *needle2)
{
    zq_hf_model m;
    const zq_status st = zq_hf_load(dir, &m);
    CHECK(st == status, "%s: status %s, expected %s (%s)", dir, zq_status_str(st),
          zq_status_str(status), zq_last_error());
    CHECK(strstr(zq_last_error(), needle) != NULL, "message lacks \"%s\": %s", needle,
          zq_last_error());
    if (needle2)
        CHECK(strstr(zq_last_error(), needle2) != NULL, "message lacks \"%s\": %s", needle2,
              zq_last_error());
    CHECK(m.tensors == NULL, "%s: tensors left after failure", dir);
    CHECK(m.vocab == NULL, "%s: vocab left after failure", dir);
    zq_hf_free(&m);
}

/* ---- safetensors writer for building test folders ---------------------------------------- */

typedef struct {
    char name[128];
    const char *dtype; /* "F32" unless set */
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t bytes;
} st_entry;

static void write_safetensors(const char *path, const st_entry *e, int n)
{
    cJSON *header = cJSON_CreateObject();
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(header, e[i].name);
        cJSON_AddStringToObject(t, "dtype", e[i].dtype ? e[i].dtype : "F32");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e[i].shape[d]));
        cJSON *range = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)(offset + e[i].bytes)));
        offset += e[i].bytes;
    }
    char *json = cJSON_PrintUnformatted(header);
    const uint64_t len = strlen(json);
    FILE *f = fopen(path, "wb");
    fwrite(&len, 8, 1, f);
    fwrite(json, 1, len, f);
    for (int i = 0; i < n; i++)
        fwrite(e[i].data, 1, e[i].bytes, f);
    CHECK(fclose(f) == 0, "cannot write %s", path);
    cJSON_free(json);
    cJSON_Delete(header);
}

/* Lists the tensors of m as F32 entries named "transformer.<name>". */
static int entries_from_model(const zq_hf_model *m, st_entry *e)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const zq_hf_tensor *t = &m->tensors[i];
        memset(&e[i], 0, sizeof e[i]);
        snprintf(e[i].name, sizeof e[i].name, "transformer.%s", t->name);
        e[i].ndim = t->ndim;
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            e[i].shape[d] = t->shape[d];
            n *= (uint64_t)t->shape[d];
        }
        e[i].data = t->data;
        e[i].bytes = (size_t)n * 4;
    }
    return m->n_tensors;
}

/* ---- loading the fixtures -------------------------------------------------------------- */

static void hf_loads_tiny_f32(void)
{
    zq_hf_model m;
    const zq_status st = zq_hf_load(tiny, &m);
    CHECK(st == ZQ_OK, "%s", zq_last_error());
    if (st != ZQ_OK)
        return;
    CHECK_EQ_INT(m.hparams.n_vocab, 395);
    CHECK_EQ_INT(m.hparams.n_ctx, 64);
    CHECK_EQ_INT(m.hparams.n_embd, 64);
    CHECK_EQ_INT(m.hparams.n_layer, 2);
    CHECK_EQ_INT(m.hparams.n_head, 4);
    CHECK_EQ_INT(m.hparams.n_inner, 256);
    CHECK_NEAR(m.hparams.ln_eps, 1e-5, 1e-12);
    CHECK_EQ_INT(m.hparams.activation, ZQ_ACT_GELU_TANH);
    CHECK_EQ_INT(m.n_vocab_lines, 395);
    CHECK(strcmp(m.vocab[0], "[PAD]") == 0, "vocab[0] = %s", m.vocab[0]);
    CHECK(strcmp(m.vocab[4], "[MASK]") == 0, "vocab[4] = %s", m.vocab[4]);
    CHECK_EQ_INT(m.n_added, 0);
    CHECK(m.lower_case, "do_lower_case not read");
    CHECK(m.lm_head_tied, "the head is not tied");
    CHECK(strcmp(m.source_format, "safetensors F32") == 0, "%s", m.source_format);
    CHECK_EQ_INT(m.n_tensors, 28);
    CHECK(zq_hf_find(&m, "lm_head.weight") == NULL, "lm_head kept");
    const zq_hf_tensor *t = zq_hf_find(&m, "h.0.attn.c_attn.weight");
    CHECK(t != NULL, "c_attn missing");
    if (t) {
        CHECK_EQ_INT(t->ndim, 2);
        CHECK_EQ_INT(t->shape[0], 64);
        CHECK_EQ_INT(t->shape[1], 192);
    }
    t = zq_hf_find(&m, "ln_f.bias");
    CHECK(t != NULL, "ln_f.bias missing");
    if (t) {
        CHECK_EQ_INT(t->ndim, 1);
        CHECK_EQ_INT(t->shape[0], 64);
    }
    CHECK(zq_hf_find(&m, "transformer.wte.weight") == NULL, "prefix not stripped");
    zq_hf_free(&m);
    zq_hf_free(&m);
    zq_hf_free(NULL);
}

/* Rounds to binary16 or bfloat16 as torch does (round to nearest, ties to even). */
static float round_f16(float x)
{
    return zq_f16_to_f32(zq_f32_to_f16(x));
}

static float round_bf16(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    bits += 0x7FFFu + ((bits >> 16) & 1);
    return zq_bf16_to_f32((uint16_t)(bits >> 16));
}

/* Compares every tensor of b with a: same shapes, and values equal after rounding. */
static void compare_models(const zq_hf_model *a, const zq_hf_model *b, float (*round)(float),
                           const char *label)
{
    CHECK_EQ_INT(a->n_tensors, b->n_tensors);
    int mismatches = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const zq_hf_tensor *x = &a->tensors[i];
        const zq_hf_tensor *y = zq_hf_find(b, x->name);
        CHECK(y != NULL, "%s: %s missing", label, x->name);
        if (!y)
            continue;
        CHECK_EQ_INT(x->ndim, y->ndim);
        CHECK(memcmp(x->shape, y->shape, sizeof x->shape) == 0, "%s: %s shape", label, x->name);
        uint64_t n = 0;
        zq_hf_numel(x->ndim, x->shape, &n);
        for (uint64_t k = 0; k < n; k++) {
            const float want = round ? round(x->data[k]) : x->data[k];
            if (memcmp(&want, &y->data[k], 4) != 0 && mismatches++ < 5)
                fprintf(stderr, "%s: %s[%llu] = %.9g, expected %.9g\n", label, x->name,
                        (unsigned long long)k, (double)y->data[k], (double)want);
        }
    }
    CHECK(mismatches == 0, "%s: %d values differ", label, mismatches);
}

static void hf_formats_agree(void)
{
    zq_hf_model f32, f16, bf16, torch;
    CHECK(zq_hf_load(tiny, &f32) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_hf_load(tiny_f16, &f16) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_hf_load(tiny_bf16, &bf16) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_hf_load(tiny_torch, &torch) == ZQ_OK, "%s", zq_last_error());
    compare_models(&f32, &f16, round_f16, "f16");
    compare_models(&f32, &bf16, round_bf16, "bf16");
    compare_models(&f32, &torch, NULL, "pytorch");
    CHECK(strcmp(f16.source_format, "safetensors F16") == 0, "%s", f16.source_format);
    CHECK(strcmp(bf16.source_format, "safetensors BF16") == 0, "%s", bf16.source_format);
    CHECK(strcmp(torch.source_format, "pytorch_model.bin F32") == 0, "%s", torch.source_format);
    CHECK(strcmp(bf16.tensors[0].src_dtype, "BF16") == 0, "%s", bf16.tensors[0].src_dtype);
    zq_hf_free(&f32);
    zq_hf_free(&f16);
    zq_hf_free(&bf16);
    zq_hf_free(&torch);
}

static void hf_torch_drops_buffers(void)
{
    zq_hf_model m;
    CHECK(zq_hf_load(tiny_torch, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_tensors, 28);
    CHECK(zq_hf_find(&m, "h.0.attn.bias") == NULL, "attn.bias kept");
    CHECK(zq_hf_find(&m, "h.1.attn.masked_bias") == NULL, "attn.masked_bias kept");
    CHECK(zq_hf_find(&m, "lm_head.weight") == NULL, "tied lm_head kept");
    CHECK(m.lm_head_tied, "tied head not detected");
    zq_hf_free(&m);

    /* The low-level reader keeps what the file holds. */
    char path[600];
    snprintf(path, sizeof path, "%s/pytorch_model.bin", tiny_torch);
    memset(&m, 0, sizeof m);
    CHECK(zq_hf_read_torch_bin(path, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_tensors, 33);
    const zq_hf_tensor *bias = zq_hf_find(&m, "h.0.attn.bias");
    CHECK(bias != NULL, "attn.bias missing");
    if (bias) {
        CHECK_EQ_INT(bias->ndim, 4);
        CHECK_EQ_INT(bias->shape[2], 64);
        CHECK_EQ_INT(bias->shape[3], 64);
        CHECK_NEAR(bias->data[0], 1.0, 0); /* the causal mask: row 0 attends to column 0 only */
        CHECK_NEAR(bias->data[1], 0.0, 0);
    }
    const zq_hf_tensor *masked = zq_hf_find(&m, "h.1.attn.masked_bias");
    CHECK(masked != NULL, "masked_bias missing");
    if (masked) {
        CHECK_EQ_INT(masked->ndim, 0);
        CHECK_NEAR(masked->data[0], -1e4, 0);
    }
    const zq_hf_tensor *head = zq_hf_find(&m, "lm_head.weight");
    const zq_hf_tensor *wte = zq_hf_find(&m, "wte.weight");
    CHECK(head != NULL, "lm_head missing");
    CHECK(wte != NULL, "wte missing");
    if (head && wte)
        CHECK(memcmp(head->data, wte->data, 395 * 64 * 4) == 0, "lm_head != wte");
    zq_hf_free(&m);
}

static void hf_loads_zh_chat_tiny(void)
{
    zq_hf_model m;
    const zq_status st = zq_hf_load("models/zh-chat-tiny", &m);
    CHECK(st == ZQ_OK, "%s", zq_last_error());
    if (st != ZQ_OK)
        return;
    CHECK_EQ_INT(m.hparams.n_layer, 6);
    CHECK_EQ_INT(m.hparams.n_embd, 256);
    CHECK_EQ_INT(m.hparams.n_vocab, 3817);
    CHECK_EQ_INT(m.n_vocab_lines, 3817);
    CHECK_EQ_INT(m.n_tensors, 2 + 12 * 6 + 2);
    CHECK(m.lm_head_tied, "head not tied");
    CHECK(m.lower_case, "lower_case");
    zq_hf_free(&m);
}

/* ---- config.json ----------------------------------------------------------------------- */

static void hf_config_fields(void)
{
    char dir[600], path[700];
    make_dir(dir, sizeof dir, "config", tiny, NULL);
    snprintf(path, sizeof path, "%s/config.json", dir);
    zq_hparams hp;

    edit_config(dir, "n_inner", "100");
    edit_config(dir, "activation_function", "\"gelu\"");
    edit_config(dir, "layer_norm_epsilon", NULL);
    edit_config(dir, "n_positions", NULL); /* n_ctx (64) remains */
    CHECK(zq_hf_read_config(path, &hp) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(hp.n_inner, 100);
    CHECK_EQ_INT(hp.activation, ZQ_ACT_GELU_ERF);
    CHECK_NEAR(hp.ln_eps, 1e-5, 1e-12);
    CHECK_EQ_INT(hp.n_ctx, 64);

    const struct {
        const char *name;
        zq_activation act;
    } acts[] = {{"\"relu\"", ZQ_ACT_RELU},
                {"\"gelu_pytorch_tanh\"", ZQ_ACT_GELU_TANH},
                {"\"gelu_fast\"", ZQ_ACT_GELU_TANH}};
    for (size_t i = 0; i < 3; i++) {
        edit_config(dir, "activation_function", acts[i].name);
        CHECK(zq_hf_read_config(path, &hp) == ZQ_OK, "%s", zq_last_error());
        CHECK_EQ_INT(hp.activation, acts[i].act);
    }

    const struct {
        const char *key, *value;
        zq_status status;
        const char *needle;
    } bad[] = {
        {"activation_function", "\"swish\"", ZQ_ERR_UNSUPPORTED, "swish"},
        {"model_type", "\"bert\"", ZQ_ERR_UNSUPPORTED, "bert"},
        {"model_type", NULL, ZQ_ERR_FORMAT, "model_type"},
        {"n_head", "5", ZQ_ERR_FORMAT, "not a multiple of n_head 5"},
        {"n_embd", "0", ZQ_ERR_FORMAT, "n_embd"},
        {"n_layer", "\"2\"", ZQ_ERR_FORMAT, "n_layer"},
        {"vocab_size", NULL, ZQ_ERR_FORMAT, "vocab_size"},
        {"layer_norm_epsilon", "-1", ZQ_ERR_FORMAT, "layer_norm_epsilon"},
        {"scale_attn_by_inverse_layer_idx", "true", ZQ_ERR_UNSUPPORTED, "inverse_layer_idx"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        make_dir(dir, sizeof dir, "config", tiny, NULL);
        edit_config(dir, bad[i].key, bad[i].value);
        const zq_status st = zq_hf_read_config(path, &hp);
        CHECK(st == bad[i].status, "%s: %s (%s)", bad[i].key, zq_status_str(st), zq_last_error());
        CHECK(strstr(zq_last_error(), bad[i].needle) != NULL, "%s", zq_last_error());
        CHECK(strstr(zq_last_error(), "config.json") != NULL, "%s", zq_last_error());
    }
}

static void hf_rejects_bad_config(void)
{
    char dir[600];
    make_dir(dir, sizeof dir, "no-config", tiny, "model.safetensors");
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    expect_load_error(dir, ZQ_ERR_IO, "config.json", "No such file");

    write_text(dir, "config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64,,}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "config.json", "invalid JSON");

    make_dir(dir, sizeof dir, "bert", tiny, "model.safetensors");
    edit_config(dir, "model_type", "\"bert\"");
    expect_load_error(dir, ZQ_ERR_UNSUPPORTED, "model_type \"bert\"", NULL);

    expect_load_error("/nonexistent-zq-model", ZQ_ERR_IO, "/nonexistent-zq-model/config.json",
                      NULL);
}

static void hf_rejects_null_arguments(void)
{
    zq_hf_model m;
    CHECK(zq_hf_load(NULL, &m) == ZQ_ERR_INVALID_ARG, "zq_hf_load: NULL folder");
    CHECK(m.tensors == NULL, "zq_hf_load: output not cleared");
    CHECK(zq_hf_load(tiny, NULL) == ZQ_ERR_INVALID_ARG, "zq_hf_load: NULL output");
    CHECK(zq_hf_read_safetensors(NULL, &m) == ZQ_ERR_INVALID_ARG, "safetensors: NULL path");
    CHECK(zq_hf_read_torch_bin(NULL, &m) == ZQ_ERR_INVALID_ARG, "torch: NULL path");
    zq_hparams hp;
    CHECK(zq_hf_read_config(NULL, &hp) == ZQ_ERR_INVALID_ARG, "config: NULL path");
    CHECK(zq_hf_read_config(tiny, NULL) == ZQ_ERR_INVALID_ARG, "config: NULL output");
    CHECK(zq_hf_find(NULL, "wte.weight") == NULL, "zq_hf_find: NULL model");
    zq_hf_free(NULL);
}

/* ---- weights files --------------------------------------------------------------------- */

static void hf_rejects_missing_weights(void)
{
    char dir[600];
    make_dir(dir, sizeof dir, "no-weights", tiny, NULL);
    expect_load_error(dir, ZQ_ERR_IO, "neither model.safetensors nor pytorch_model.bin", NULL);
    write_text(dir, "model.safetensors.index.json", "{}");
    expect_load_error(dir, ZQ_ERR_UNSUPPORTED, "sharded", NULL);
}

/* Each file of a model folder that is a FIFO without a writer is rejected, not waited on
 * forever; the alarm turns a hang into a failed test program. */
static void hf_rejects_fifos(void)
{
    const char *const files[] = {"config.json", "vocab.txt", "tokenizer_config.json",
                                 "added_tokens.json", "model.safetensors", "pytorch_model.bin"};
    alarm(60);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char dir[600], path[700];
        char name[64];
        snprintf(name, sizeof name, "fifo-%zu", i);
        const bool torch = strcmp(files[i], "pytorch_model.bin") == 0;
        make_dir(dir, sizeof dir, name, torch ? tiny_torch : tiny,
                 i < 4 ? "model.safetensors" : NULL);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
        CHECK(mkfifo(path, 0600) == 0, "cannot create the FIFO %s", path);
        expect_load_error(dir, ZQ_ERR_IO, "not a regular file", files[i]);
        unlink(path);
    }
    alarm(0);
}

static void hf_rejects_bad_safetensors(void)
{
    char src[600];
    snprintf(src, sizeof src, "%s/model.safetensors", tiny);
    size_t size = 0;
    uint8_t *bytes = (uint8_t *)zq_test_read_file(src, &size);
    CHECK(bytes != NULL, "cannot read %s", src);
    if (!bytes)
        return;
    uint64_t header_len;
    memcpy(&header_len, bytes, 8);

    char dir[600], path[700];
    make_dir(dir, sizeof dir, "bad-st", tiny, NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const struct {
        size_t size;
        const char *needle;
    } cuts[] = {
        {0, "truncated"},
        {5, "truncated"},
        {8 + header_len / 2, "runs past the end"},
        {8 + header_len + 1000, "truncated or damaged"},
        {size - 1, "truncated or damaged"},
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        CHECK(write_bytes(path, bytes, cuts[i].size), "cannot write %s", path);
        expect_load_error(dir, ZQ_ERR_FORMAT, cuts[i].needle, "model.safetensors");
    }

    uint8_t *copy = malloc(size);
    memcpy(copy, bytes, size);
    const uint64_t huge = size * 4;
    memcpy(copy, &huge, 8);
    CHECK(write_bytes(path, copy, size), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_FORMAT, "header length", "runs past the end");

    /* A dtype unknown to safetensors, and an integer dtype that weights cannot have. */
    memcpy(copy, bytes, size);
    char *dtype = strstr((char *)copy + 8, "\"F32\"");
    memcpy(dtype, "\"Q4\" ", 5);
    CHECK(write_bytes(path, copy, size), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_UNSUPPORTED, "unknown dtype \"Q4\"", NULL);
    memcpy(dtype, "\"I32\"", 5);
    CHECK(write_bytes(path, copy, size), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_UNSUPPORTED, "dtype I32", NULL);

    /* Header that is not JSON. */
    memcpy(copy, bytes, size);
    copy[8] = '[';
    CHECK(write_bytes(path, copy, size), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_FORMAT, "not a JSON object", NULL);
    free(copy);
    free(bytes);
}

/* Writes a safetensors file with the given header text and data_bytes bytes of data (the
 * floats 0, 1, 2, ...) to tmp/layout.safetensors and reads it into m. */
static zq_status read_layout(const char *header, size_t data_bytes, zq_hf_model *m, char *path,
                             size_t cap)
{
    snprintf(path, cap, "%s/layout.safetensors", zq_test_tmpdir());
    const uint64_t len = strlen(header);
    uint8_t buf[512];
    CHECK(8 + len + data_bytes <= sizeof buf, "the layout case is too large");
    if (8 + len + data_bytes > sizeof buf)
        return ZQ_ERR_INTERNAL;
    memcpy(buf, &len, 8);
    memcpy(buf + 8, header, len);
    for (size_t i = 0; i < data_bytes / 4; i++) {
        const float v = (float)i;
        memcpy(buf + 8 + len + 4 * i, &v, 4);
    }
    CHECK(write_bytes(path, buf, 8 + len + data_bytes), "cannot write %s", path);
    memset(m, 0, sizeof *m);
    return zq_hf_read_safetensors(path, m);
}

/* The data_offsets must cover the data section exactly: no shared bytes, no gaps, nothing
 * after the last tensor. Empty tensors and any order of the entries are fine. */
static void hf_safetensors_layout(void)
{
    const struct {
        const char *header;
        size_t data_bytes;
        const char *needle; /* NULL: the file is valid */
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, "tensors 'a' [0, 8) and 'b' [0, 8) overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         20, "data bytes [8, 12) before tensor 'b' belong to no tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
         "data bytes [8, 12) after the last tensor belong to no tensor"},
        {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
         "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         16, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[600];
        zq_hf_model m;
        const zq_status st = read_layout(cases[i].header, cases[i].data_bytes, &m, path,
                                         sizeof path);
        if (cases[i].needle) {
            CHECK(st == ZQ_ERR_FORMAT, "case %zu: status %s", i, zq_status_str(st));
            CHECK(strstr(zq_last_error(), cases[i].needle) != NULL, "case %zu: %s", i,
                  zq_last_error());
            CHECK(strstr(zq_last_error(), path) != NULL, "case %zu: %s", i, zq_last_error());
        } else {
            CHECK(st == ZQ_OK, "case %zu: %s", i, zq_last_error());
            CHECK_EQ_INT(m.n_tensors, 3);
            const zq_hf_tensor *b = zq_hf_find(&m, "b");
            CHECK(b != NULL && b->data[0] == 2.0f, "tensor b was read from the wrong bytes");
        }
        zq_hf_free(&m);
    }
}

/* Writes the tiny model into tmp/<name> as safetensors after edit() changes the entries. */
static void write_variant(const char *name, char *dir, size_t cap,
                          int (*edit)(st_entry *e, int n, float *scratch))
{
    zq_hf_model m;
    CHECK(zq_hf_load(tiny, &m) == ZQ_OK, "%s", zq_last_error());
    st_entry entries[40];
    int n = entries_from_model(&m, entries);
    static float scratch[395 * 64];
    n = edit(entries, n, scratch);
    make_dir(dir, cap, name, tiny, NULL);
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_safetensors(path, entries, n);
    zq_hf_free(&m);
}

static int find_entry(const st_entry *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0)
            return i;
    return -1;
}

static int edit_untied_head(st_entry *e, int n, float *scratch)
{
    const int wte = find_entry(e, n, "transformer.wte.weight");
    memcpy(scratch, e[wte].data, e[wte].bytes);
    scratch[100] += 1.0f;
    e[n] = e[wte];
    snprintf(e[n].name, sizeof e[n].name, "lm_head.weight");
    e[n].data = scratch;
    return n + 1;
}

static int edit_tied_head(st_entry *e, int n, float *scratch)
{
    const int wte = find_entry(e, n, "transformer.wte.weight");
    e[n] = e[wte];
    snprintf(e[n].name, sizeof e[n].name, "lm_head.weight");
    return n + 1;
}

static int edit_drop_ln2_bias(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.h.1.ln_2.bias");
    e[i] = e[n - 1];
    return n - 1;
}

static int edit_short_wpe(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.wpe.weight");
    e[i].shape[0] = 32;
    e[i].bytes /= 2;
    return n;
}

static int edit_extra_layer(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.h.1.ln_2.bias");
    e[n] = e[i];
    snprintf(e[n].name, sizeof e[n].name, "transformer.h.2.ln_2.bias");
    return n + 1;
}

static int edit_duplicate(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.ln_f.bias");
    e[n] = e[i];
    snprintf(e[n].name, sizeof e[n].name, "ln_f.bias");
    return n + 1;
}

static int edit_bool_mask(st_entry *e, int n, float *scratch)
{
    static uint8_t mask[64 * 64];
    e[n] = (st_entry){.name = "transformer.h.0.attn.bias", .dtype = "BOOL", .ndim = 4,
                      .shape = {1, 1, 64, 64}, .data = mask, .bytes = sizeof mask};
    return n + 1;
}

static int edit_nan_weight(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.h.0.attn.c_attn.weight");
    memcpy(scratch, e[i].data, e[i].bytes);
    scratch[1234] = NAN;
    e[i].data = scratch;
    return n;
}

static int edit_inf_bias(st_entry *e, int n, float *scratch)
{
    const int i = find_entry(e, n, "transformer.ln_f.bias");
    memcpy(scratch, e[i].data, e[i].bytes);
    scratch[63] = -INFINITY;
    e[i].data = scratch;
    return n;
}

/* An infinite masked_bias buffer is dropped with the other attention buffers, not rejected. */
static int edit_inf_masked_bias(st_entry *e, int n, float *scratch)
{
    static const float minus_inf = -INFINITY;
    e[n] = (st_entry){.name = "transformer.h.1.attn.masked_bias", .ndim = 0, .data = &minus_inf,
                      .bytes = sizeof minus_inf};
    return n + 1;
}

static void hf_rejects_non_finite_weights(void)
{
    char dir[600];
    write_variant("nan-weight", dir, sizeof dir, edit_nan_weight);
    expect_load_error(dir, ZQ_ERR_FORMAT,
                      "model.safetensors: tensor 'h.0.attn.c_attn.weight' has a non-finite value "
                      "(NaN) at index 1234",
                      NULL);
    write_variant("inf-bias", dir, sizeof dir, edit_inf_bias);
    expect_load_error(dir, ZQ_ERR_FORMAT, "tensor 'ln_f.bias' has a non-finite value (-inf) at "
                      "index 63", NULL);

    zq_hf_model m;
    write_variant("inf-masked-bias", dir, sizeof dir, edit_inf_masked_bias);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK(zq_hf_find(&m, "h.1.attn.masked_bias") == NULL, "masked_bias kept");
    zq_hf_free(&m);

    /* An F16 infinity (0x7c00) becomes an f32 infinity and is rejected too. */
    const uint16_t half[4] = {0x3c00, 0x7c00, 0, 0};
    char path[700];
    snprintf(path, sizeof path, "%s/half.safetensors", zq_test_tmpdir());
    const st_entry e = {.name = "w", .dtype = "F16", .ndim = 1, .shape = {4}, .data = half,
                        .bytes = sizeof half};
    write_safetensors(path, &e, 1);
    memset(&m, 0, sizeof m);
    CHECK(zq_hf_read_safetensors(path, &m) == ZQ_ERR_FORMAT, "an F16 infinity was accepted");
    CHECK(strstr(zq_last_error(), "tensor 'w' has a non-finite value (inf) at index 1") != NULL,
          "%s", zq_last_error());
    zq_hf_free(&m);
}

static void hf_head_and_shapes(void)
{
    char dir[600];
    zq_hf_model m;
    write_variant("untied", dir, sizeof dir, edit_untied_head);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK(!m.lm_head_tied, "a different lm_head was treated as tied");
    CHECK(zq_hf_find(&m, "lm_head.weight") != NULL, "untied lm_head dropped");
    zq_hf_free(&m);

    write_variant("tied", dir, sizeof dir, edit_tied_head);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK(m.lm_head_tied, "an equal lm_head was not detected as tied");
    CHECK(zq_hf_find(&m, "lm_head.weight") == NULL, "tied lm_head kept");
    zq_hf_free(&m);

    write_variant("bool-mask", dir, sizeof dir, edit_bool_mask);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_tensors, 28);
    zq_hf_free(&m);

    write_variant("missing", dir, sizeof dir, edit_drop_ln2_bias);
    expect_load_error(dir, ZQ_ERR_FORMAT, "'h.1.ln_2.bias' is missing", "[64]");
    write_variant("short-wpe", dir, sizeof dir, edit_short_wpe);
    expect_load_error(dir, ZQ_ERR_FORMAT, "'wpe.weight' has shape [32, 64]", "implies [64, 64]");
    write_variant("extra", dir, sizeof dir, edit_extra_layer);
    expect_load_error(dir, ZQ_ERR_FORMAT, "unexpected tensor 'h.2.ln_2.bias'", NULL);
    write_variant("duplicate", dir, sizeof dir, edit_duplicate);
    expect_load_error(dir, ZQ_ERR_FORMAT, "'ln_f.bias' appears twice", NULL);
}

/* ---- tokenizer files ------------------------------------------------------------------- */

static void hf_tokenizer_files(void)
{
    char dir[600], path[700];
    zq_hf_model m;
    make_dir(dir, sizeof dir, "tokenizer", tiny, "model.safetensors");
    write_text(dir, "tokenizer_config.json", "{\"do_lower_case\": false}");
    write_text(dir, "added_tokens.json", "{\"<bot>\": 396, \"<user>\": 395, \"[SEP]\": 3}");
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK(!m.lower_case, "do_lower_case false not read");
    CHECK_EQ_INT(m.n_added, 2);
    if (m.n_added == 2) {
        CHECK(strcmp(m.added[0], "<user>") == 0, "added[0] = %s", m.added[0]);
        CHECK(strcmp(m.added[1], "<bot>") == 0, "added[1] = %s", m.added[1]);
    }
    zq_hf_free(&m);

    /* The same tokens from added_tokens_decoder, listed in both files. */
    write_text(dir, "tokenizer_config.json",
               "{\"added_tokens_decoder\": {\"0\": {\"content\": \"[PAD]\"}, "
               "\"395\": {\"content\": \"<user>\"}}}");
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_added, 2);
    CHECK(m.lower_case, "the default do_lower_case is true");
    zq_hf_free(&m);

    write_text(dir, "added_tokens.json", "{\"<bot>\": 397}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "'<bot>' has id 397, expected 396", NULL);
    write_text(dir, "added_tokens.json", "{\"<bot>\": 3}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "'<bot>' has id 3", NULL);
    write_text(dir, "added_tokens.json", "[1, 2]");
    expect_load_error(dir, ZQ_ERR_FORMAT, "added_tokens.json", "JSON object");
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    unlink(path);
    write_text(dir, "tokenizer_config.json", "{\"do_lower_case\": \"yes\"}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "do_lower_case", NULL);
    write_text(dir, "tokenizer_config.json", "{");
    expect_load_error(dir, ZQ_ERR_FORMAT, "tokenizer_config.json", "invalid JSON");
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);

    /* Invalid UTF-8 and empty tokens in the tokenizer files, reported with the file and
     * line. */
    write_text(dir, "added_tokens.json", "{\"<user>\": 395,\n \"<b\xe4t>\": 396}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "added_tokens.json: line 2: invalid UTF-8", NULL);
    write_text(dir, "added_tokens.json", "{\"\": 395}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "added_tokens.json: the added token with id 395 is empty",
                      NULL);
    snprintf(path, sizeof path, "%s/added_tokens.json", dir);
    unlink(path);
    write_text(dir, "tokenizer_config.json",
               "{\"added_tokens_decoder\": {\"395\": {\"content\": \"\xed\xa0\x80\"}}}");
    expect_load_error(dir, ZQ_ERR_FORMAT, "tokenizer_config.json: line 1: invalid UTF-8", NULL);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);

    /* vocab.txt: CRLF line ends are stripped; more lines than vocab_size is an error. */
    snprintf(path, sizeof path, "%s/vocab.txt", tiny);
    char *vocab = zq_test_read_file(path, NULL);
    CHECK(vocab != NULL, "cannot read vocab.txt");
    if (!vocab)
        return;
    size_t len = strlen(vocab);
    char *crlf = malloc(2 * len + 16);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (vocab[i] == '\n')
            crlf[k++] = '\r';
        crlf[k++] = vocab[i];
    }
    crlf[k] = 0;
    write_text(dir, "vocab.txt", crlf);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_vocab_lines, 395);
    if (m.n_vocab_lines == 395)
        CHECK(strcmp(m.vocab[2], "[CLS]") == 0, "vocab[2] = '%s'", m.vocab[2]);
    zq_hf_free(&m);

    /* Line 7 with a Latin-1 byte; an overlong form on the last line. */
    strcpy(crlf, vocab);
    char *line7 = crlf;
    for (int i = 0; i < 6; i++)
        line7 = strchr(line7, '\n') + 1;
    line7[1] = (char)0xe9;
    write_text(dir, "vocab.txt", crlf);
    expect_load_error(dir, ZQ_ERR_FORMAT, "vocab.txt: line 7: invalid UTF-8 at byte 2 of the line",
                      NULL);
    strcpy(crlf, vocab);
    *strrchr(crlf, '\n') = 0;
    strcpy(strrchr(crlf, '\n') + 1, "\xc0\xaf\n");
    write_text(dir, "vocab.txt", crlf);
    expect_load_error(dir, ZQ_ERR_FORMAT, "vocab.txt: line 395: invalid UTF-8", NULL);

    strcpy(crlf, vocab);
    strcat(crlf, "extra\n");
    write_text(dir, "vocab.txt", crlf);
    expect_load_error(dir, ZQ_ERR_FORMAT, "396 tokens, more than vocab_size 395", NULL);
    write_text(dir, "vocab.txt", "");
    expect_load_error(dir, ZQ_ERR_FORMAT, "vocab.txt: empty", NULL);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    unlink(path);
    expect_load_error(dir, ZQ_ERR_IO, "vocab.txt", NULL);

    /* A padded vocabulary (fewer lines than vocab_size) is fine. */
    vocab[len - 10] = 0;
    *strrchr(vocab, '\n') = 0;
    write_text(dir, "vocab.txt", vocab);
    CHECK(zq_hf_load(dir, &m) == ZQ_OK, "%s", zq_last_error());
    CHECK(m.n_vocab_lines < 395, "%d lines", m.n_vocab_lines);
    CHECK(m.n_vocab_lines > 390, "%d lines", m.n_vocab_lines);
    zq_hf_free(&m);
    free(crlf);
    free(vocab);
}

/* ---- torch.save archives built by the test --------------------------------------------- */

typedef struct {
    uint8_t data[8192];
    size_t n;
} pickle_buf;

static void emit(pickle_buf *p, const void *bytes, size_t n)
{
    memcpy(p->data + p->n, bytes, n);
    p->n += n;
}

static void emit_op(pickle_buf *p, uint8_t op)
{
    emit(p, &op, 1);
}

static void emit_str(pickle_buf *p, const char *s)
{
    const uint32_t len = (uint32_t)strlen(s);
    emit_op(p, 'X');
    emit(p, &len, 4);
    emit(p, s, len);
}

static void emit_int(pickle_buf *p, int32_t v)
{
    emit_op(p, 'J');
    emit(p, &v, 4);
}

static void emit_global(pickle_buf *p, const char *module, const char *name)
{
    emit_op(p, 'c');
    emit(p, module, strlen(module));
    emit_op(p, '\n');
    emit(p, name, strlen(name));
    emit_op(p, '\n');
}

static void emit_ints_tuple(pickle_buf *p, const int32_t *v, int n)
{
    emit_op(p, '(');
    for (int i = 0; i < n; i++)
        emit_int(p, v[i]);
    emit_op(p, 't');
}

/* _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()). */
static void emit_tensor_value(pickle_buf *p, const char *storage_type, const char *storage_key,
                              int32_t numel, int32_t offset, const int32_t *shape,
                              const int32_t *stride, int ndim)
{
    emit_global(p, "torch._utils", "_rebuild_tensor_v2");
    emit_op(p, '(');
    emit_op(p, '(');
    emit_str(p, "storage");
    emit_global(p, "torch", storage_type);
    emit_str(p, storage_key);
    emit_str(p, "cpu");
    emit_int(p, numel);
    emit_op(p, 't');
    emit_op(p, 'Q');
    emit_int(p, offset);
    emit_ints_tuple(p, shape, ndim);
    emit_ints_tuple(p, stride, ndim);
    emit_op(p, 0x89);
    emit_global(p, "collections", "OrderedDict");
    emit_op(p, ')');
    emit_op(p, 'R');
    emit_op(p, 't');
    emit_op(p, 'R');
}

/* A state dict item: key, then a tensor. */
static void emit_tensor(pickle_buf *p, const char *key, const char *storage_type,
                        const char *storage_key, int32_t numel, int32_t offset,
                        const int32_t *shape, const int32_t *stride, int ndim)
{
    emit_str(p, key);
    emit_tensor_value(p, storage_type, storage_key, numel, offset, shape, stride, ndim);
}

typedef struct {
    const char *name;
    const void *data;
    size_t size;
} zip_item;

static void write_zip(const char *path, const zip_item *items, int n)
{
    unlink(path);
    int err = 0;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    CHECK(z != NULL, "zip_open %s: %d", path, err);
    for (int i = 0; z && i < n; i++) {
        zip_source_t *src = zip_source_buffer(z, items[i].data, items[i].size, 0);
        CHECK(zip_file_add(z, items[i].name, src, ZIP_FL_OVERWRITE) >= 0, "zip add %s",
              items[i].name);
    }
    if (z)
        CHECK(zip_close(z) == 0, "zip_close %s", path);
}

static void expect_torch_error(const char *path, zq_status status, const char *needle)
{
    zq_hf_model m;
    memset(&m, 0, sizeof m);
    const zq_status st = zq_hf_read_torch_bin(path, &m);
    CHECK(st == status, "%s: %s, expected %s (%s)", needle, zq_status_str(st),
          zq_status_str(status), zq_last_error());
    CHECK(strstr(zq_last_error(), needle) != NULL, "message lacks \"%s\": %s", needle,
          zq_last_error());
    CHECK(strstr(zq_last_error(), path) != NULL, "message lacks the file: %s", zq_last_error());
    zq_hf_free(&m);
}

static const float storage0[6] = {0, 1, 2, 3, 4, 5};

/* A state dict with a transposed view, an offset view, a parameter, half and bfloat16
 * storages, inside an OrderedDict with _metadata state, using the memo and LONG1. */
static void build_views_pickle(pickle_buf *p)
{
    const int32_t shape_t[2] = {3, 2}, stride_t[2] = {1, 3};
    const int32_t shape_u[1] = {2}, stride_u[1] = {2};
    const int32_t shape_h[1] = {2}, stride_h[1] = {1};
    p->n = 0;
    emit_op(p, 0x80);
    emit_op(p, 2);
    emit_global(p, "collections", "OrderedDict");
    emit_op(p, ')');
    emit_op(p, 'R');
    emit_op(p, 'r'); /* LONG_BINPUT 300 */
    emit(p, "\x2c\x01\x00\x00", 4);
    emit_op(p, '(');
    emit_tensor(p, "t", "FloatStorage", "0", 6, 0, shape_t, stride_t, 2);
    emit_tensor(p, "u", "FloatStorage", "0", 6, 2, shape_u, stride_u, 1);
    emit_tensor(p, "half", "HalfStorage", "1", 2, 0, shape_h, stride_h, 1);
    emit_tensor(p, "bf", "BFloat16Storage", "2", 2, 0, shape_h, stride_h, 1);
    /* "param": _rebuild_parameter(<tensor>, True, OrderedDict()) */
    emit_str(p, "param");
    emit_global(p, "torch._utils", "_rebuild_parameter");
    emit_op(p, '(');
    emit_tensor_value(p, "FloatStorage", "0", 6, 4, shape_u, stride_h, 1);
    emit_op(p, 0x88);
    emit_global(p, "collections", "OrderedDict");
    emit_op(p, ')');
    emit_op(p, 'R');
    emit_op(p, 't');
    emit_op(p, 'R');
    emit_op(p, 'u'); /* SETITEMS */
    /* BUILD with the _metadata state an OrderedDict from state_dict() carries. */
    emit_op(p, '}');
    emit_op(p, 0x8c);
    emit_op(p, 9);
    emit(p, "_metadata", 9);
    emit_op(p, 0x8a); /* LONG1 -2 */
    emit_op(p, 1);
    emit_op(p, 0xfe);
    emit_op(p, 's');
    emit_op(p, 'b');
    emit_op(p, 0x94); /* MEMOIZE */
    emit_op(p, 'j');  /* LONG_BINGET 300: the same dict */
    emit(p, "\x2c\x01\x00\x00", 4);
    emit_op(p, '.');
}

static void hf_torch_views(void)
{
    pickle_buf p;
    build_views_pickle(&p);
    const uint16_t half[2] = {0x3C00, 0xC000};  /* 1.0, -2.0 */
    const uint16_t bf16[2] = {0x3F80, 0x4040};  /* 1.0, 3.0 */
    const zip_item items[] = {
        {"archive/data.pkl", p.data, p.n},
        {"archive/data/0", storage0, sizeof storage0},
        {"archive/data/1", half, sizeof half},
        {"archive/data/2", bf16, sizeof bf16},
        {"archive/version", "3\n", 2},
    };
    char path[600];
    snprintf(path, sizeof path, "%s/views.bin", zq_test_tmpdir());
    write_zip(path, items, 5);

    zq_hf_model m;
    memset(&m, 0, sizeof m);
    const zq_status st = zq_hf_read_torch_bin(path, &m);
    CHECK(st == ZQ_OK, "%s", zq_last_error());
    CHECK_EQ_INT(m.n_tensors, 5);
    const struct {
        const char *name;
        int64_t rows, cols; /* rows 0: a vector */
        float values[6];
    } want[] = {
        {"t", 3, 2, {0, 3, 1, 4, 2, 5}}, /* transposed view */
        {"u", 0, 2, {2, 4}},             /* strided view with an offset */
        {"half", 0, 2, {1, -2}},
        {"bf", 0, 2, {1, 3}},
        {"param", 0, 2, {4, 5}},         /* through _rebuild_parameter */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const zq_hf_tensor *t = zq_hf_find(&m, want[i].name);
        CHECK(t != NULL, "%s missing", want[i].name);
        if (!t)
            continue;
        CHECK_EQ_INT(t->ndim, want[i].rows ? 2 : 1);
        CHECK_EQ_INT(t->shape[0], want[i].rows ? want[i].rows : want[i].cols);
        const int64_t n = want[i].rows ? want[i].rows * want[i].cols : want[i].cols;
        for (int64_t k = 0; k < n; k++)
            CHECK_NEAR(t->data[k], want[i].values[k], 0);
    }
    const zq_hf_tensor *h = zq_hf_find(&m, "half");
    if (h)
        CHECK(strcmp(h->src_dtype, "F16") == 0, "half dtype %s", h->src_dtype);
    CHECK(strcmp(m.source_format, "pytorch_model.bin mixed") == 0, "%s", m.source_format);
    zq_hf_free(&m);

    /* A view that reaches past its storage. */
    const int32_t shape[1] = {3}, stride[1] = {3};
    p.n = 0;
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_op(&p, '}');
    emit_op(&p, '(');
    emit_tensor(&p, "w", "FloatStorage", "0", 6, 0, shape, stride, 1);
    emit_op(&p, 'u');
    emit_op(&p, '.');
    write_zip(path, items, 2);
    expect_torch_error(path, ZQ_ERR_FORMAT, "reaches past the end of storage 0");
}

static void hf_rejects_bad_torch_files(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/bad.bin", zq_test_tmpdir());

    CHECK(write_bytes(path, "\x80\x02}q\x00.", 6), "write");
    expect_torch_error(path, ZQ_ERR_FORMAT, "not a zip archive");

    const zip_item no_pickle[] = {{"archive/data/0", storage0, sizeof storage0}};
    write_zip(path, no_pickle, 1);
    expect_torch_error(path, ZQ_ERR_FORMAT, "data.pkl");

    pickle_buf p = {.n = 0};
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_op(&p, '}');
    emit_op(&p, 'V'); /* UNICODE, a text-protocol opcode torch never writes */
    const zip_item unknown_op[] = {{"archive/data.pkl", p.data, p.n}};
    write_zip(path, unknown_op, 1);
    expect_torch_error(path, ZQ_ERR_UNSUPPORTED, "unsupported pickle opcode 0x56");

    p.n = 0;
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_global(&p, "os", "system");
    emit_str(&p, "echo owned");
    emit_op(&p, 0x85);
    emit_op(&p, 'R');
    emit_op(&p, '.');
    const zip_item evil[] = {{"archive/data.pkl", p.data, p.n}};
    write_zip(path, evil, 1);
    expect_torch_error(path, ZQ_ERR_UNSUPPORTED, "unsupported global os.system");

    p.n = 0;
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_op(&p, '}');
    const zip_item no_stop[] = {{"archive/data.pkl", p.data, p.n}};
    write_zip(path, no_stop, 1);
    expect_torch_error(path, ZQ_ERR_FORMAT, "without STOP");

    /* A storage the pickle names but the archive lacks. */
    const int32_t shape[1] = {6}, stride[1] = {1};
    p.n = 0;
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_op(&p, '}');
    emit_op(&p, '(');
    emit_tensor(&p, "w", "FloatStorage", "7", 6, 0, shape, stride, 1);
    emit_op(&p, 'u');
    emit_op(&p, '.');
    const zip_item missing[] = {{"archive/data.pkl", p.data, p.n},
                                {"archive/data/0", storage0, sizeof storage0}};
    write_zip(path, missing, 2);
    expect_torch_error(path, ZQ_ERR_FORMAT, "archive/data/7 is missing");

    /* An integer storage holding a weight. */
    p.n = 0;
    emit_op(&p, 0x80);
    emit_op(&p, 2);
    emit_op(&p, '}');
    emit_op(&p, '(');
    emit_tensor(&p, "w", "LongStorage", "0", 3, 0, shape, stride, 1);
    emit_op(&p, 'u');
    emit_op(&p, '.');
    const zip_item longs[] = {{"archive/data.pkl", p.data, p.n},
                              {"archive/data/0", storage0, sizeof storage0}};
    write_zip(path, longs, 2);
    expect_torch_error(path, ZQ_ERR_UNSUPPORTED, "torch.LongStorage");
}

/* A damaged byte inside a stored entry fails libzip's CRC-32 check. */
static void hf_torch_detects_crc_damage(void)
{
    char src[600], dir[600], path[700];
    snprintf(src, sizeof src, "%s/pytorch_model.bin", tiny_torch);
    size_t size = 0;
    uint8_t *bytes = (uint8_t *)zq_test_read_file(src, &size);
    CHECK(bytes != NULL, "cannot read %s", src);
    if (!bytes)
        return;
    make_dir(dir, sizeof dir, "torch-crc", tiny_torch, NULL);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    /* The first storage (wte, 101120 bytes) starts after data.pkl, near byte 3100. */
    bytes[20000] ^= 0x01;
    CHECK(write_bytes(path, bytes, size), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_FORMAT, "pytorch_model.bin", "CRC");

    bytes[20000] ^= 0x01;
    CHECK(write_bytes(path, bytes, size / 2), "cannot write %s", path);
    expect_load_error(dir, ZQ_ERR_FORMAT, "pytorch_model.bin", NULL);
    free(bytes);
}

/* Damaged pickles never crash the machine: random byte changes to the fixture's data.pkl
 * give a result or a clean error (run under ASan to catch memory errors). */
static void hf_pickle_survives_damage(void)
{
    const unsigned seed = 1234567u;
    printf("# seed %u\n", seed);
    char path[600];
    snprintf(path, sizeof path, "%s/pytorch_model.bin", tiny_torch);
    int err = 0;
    zip_t *z = zip_open(path, ZIP_RDONLY, &err);
    CHECK(z != NULL, "cannot open %s", path);
    if (!z)
        return;
    const zip_int64_t index = zip_name_locate(z, "pytorch_model/data.pkl", 0);
    zip_stat_t st;
    zip_stat_index(z, (zip_uint64_t)index, 0, &st);
    uint8_t *pickle = malloc(st.size), *copy = malloc(st.size);
    zip_file_t *zf = zip_fopen_index(z, (zip_uint64_t)index, 0);
    CHECK(zip_fread(zf, pickle, st.size) == (zip_int64_t)st.size, "cannot read data.pkl");
    zip_fclose(zf);
    zip_discard(z);

    uint64_t rng = seed;
    int accepted = 0;
    for (int round = 0; round < 2000; round++) {
        memcpy(copy, pickle, st.size);
        const int changes = 1 + round % 3;
        for (int k = 0; k < changes; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            copy[(rng >> 33) % st.size] = (uint8_t)(rng >> 20);
        }
        zq_torch_tensor *list = NULL;
        int32_t n = 0;
        const size_t len = round % 50 == 49 ? (size_t)(rng >> 40) % st.size : (size_t)st.size;
        if (zq_pickle_read_state_dict("fuzz", copy, len, &list, &n) == ZQ_OK) {
            accepted++;
            CHECK(n <= 40, "%d tensors from a damaged pickle", n);
        } else {
            CHECK(strncmp(zq_last_error(), "fuzz", 4) == 0, "%s", zq_last_error());
        }
        free(list);
    }
    printf("# %d of 2000 damaged pickles still parsed\n", accepted);
    free(copy);
    free(pickle);
}

/* Hostile pickles hit a limit instead of exhausting memory. */
static void hf_pickle_limits(void)
{
    const size_t n = 400000;
    uint8_t *p = malloc(n);
    zq_torch_tensor *list = NULL;
    int32_t count = 0;

    /* None wrapped in a one-tuple, again and again. */
    memset(p, 0x85, n);
    memcpy(p, "\x80\x02N", 3);
    p[n - 1] = '.';
    CHECK(zq_pickle_read_state_dict("nested", p, n, &list, &count) == ZQ_ERR_UNSUPPORTED, "%s",
          zq_last_error());
    CHECK(strstr(zq_last_error(), "too many objects") != NULL, "%s", zq_last_error());

    memset(p, '(', n);
    memcpy(p, "\x80\x02", 2);
    CHECK(zq_pickle_read_state_dict("marks", p, n, &list, &count) == ZQ_ERR_FORMAT, "%s",
          zq_last_error());

    /* BINGET of one memo entry pushes without making values, so the stack limit stops it. */
    const size_t n_get = 2 * 1100000 + 8;
    uint8_t *gets = malloc(n_get);
    memcpy(gets, "\x80\x02Nq\x00", 5);
    for (size_t i = 5; i + 2 <= n_get; i += 2)
        memcpy(gets + i, "h\x00", 2);
    CHECK(zq_pickle_read_state_dict("stack", gets, n_get, &list, &count) == ZQ_ERR_FORMAT, "%s",
          zq_last_error());
    CHECK(strstr(zq_last_error(), "stack too deep") != NULL, "%s", zq_last_error());
    free(gets);

    /* A memo index past the limit, and a BINGET of an index never stored. */
    const uint8_t put[] = {0x80, 2, '}', 'r', 0xff, 0xff, 0xff, 0x7f, '.'};
    CHECK(zq_pickle_read_state_dict("memo", put, sizeof put, &list, &count) ==
              ZQ_ERR_UNSUPPORTED,
          "%s", zq_last_error());
    const uint8_t get[] = {0x80, 2, 'h', 7, '.'};
    CHECK(zq_pickle_read_state_dict("get", get, sizeof get, &list, &count) == ZQ_ERR_FORMAT,
          "%s", zq_last_error());
    CHECK(list == NULL, "list set on failure");
    free(p);
}

int main(void)
{
    set_paths();
    ZQ_RUN(hf_loads_tiny_f32);
    ZQ_RUN(hf_formats_agree);
    ZQ_RUN(hf_torch_drops_buffers);
    ZQ_RUN(hf_loads_zh_chat_tiny);
    ZQ_RUN(hf_config_fields);
    ZQ_RUN(hf_rejects_bad_config);
    ZQ_RUN(hf_rejects_null_arguments);
    ZQ_RUN(hf_rejects_missing_weights);
    ZQ_RUN(hf_rejects_fifos);
    ZQ_RUN(hf_rejects_bad_safetensors);
    ZQ_RUN(hf_safetensors_layout);
    ZQ_RUN(hf_head_and_shapes);
    ZQ_RUN(hf_rejects_non_finite_weights);
    ZQ_RUN(hf_tokenizer_files);
    ZQ_RUN(hf_torch_views);
    ZQ_RUN(hf_rejects_bad_torch_files);
    ZQ_RUN(hf_torch_detects_crc_damage);
    ZQ_RUN(hf_pickle_survives_damage);
    ZQ_RUN(hf_pickle_limits);
    ZQ_CHECK_EXIT();
}
