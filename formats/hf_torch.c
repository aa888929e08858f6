/*
 * hf_torch.c - reads pytorch_model.bin in the zip format that torch.save has written since
 * PyTorch 1.6: <prefix>/data.pkl is the pickled state dict (hf_pickle.c), and each storage
 * it refers to is the entry <prefix>/data/<key>. A tensor is a strided view of a storage, and
 * several tensors may share one (a tied lm_head shares wte's).
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#define MAX_PICKLE_BYTES ((uint64_t)256 << 20)
#define MAX_STORAGE_BYTES ((uint64_t)1 << 40)

typedef struct {
    const char *path;
    zip_t *zip;
    char prefix[128]; /* the folder of data.pkl inside the archive */
} archive;

/* Reports a failed zip_open_from_source by the libzip error code. */
static zq_status open_error(const char *path, zip_error_t *error)
{
    const int code = zip_error_code_zip(error);
    if (code == ZIP_ER_NOZIP)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: not a zip archive; zq reads the zip format that torch.save has written "
                       "since PyTorch 1.6 (re-save the model, or save it as safetensors)",
                       path);
    if (code == ZIP_ER_OPEN || code == ZIP_ER_READ || code == ZIP_ER_SEEK)
        return zq_fail(ZQ_ERR_IO, "%s: cannot open: %s", path, zip_error_strerror(error));
    if (code == ZIP_ER_MEMORY)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    return zq_fail(ZQ_ERR_FORMAT, "%s: invalid zip archive: %s", path, zip_error_strerror(error));
}

/* Opens the archive from a stream that zq_hf_fopen checked to be a regular file, rather than
 * by path, so that libzip never opens a FIFO (which would block) or a file swapped in after
 * the check. */
static zq_status open_archive(const char *path, archive *a)
{
    FILE *file = zq_hf_fopen(path);
    if (!file)
        return ZQ_ERR_IO;
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t *source = zip_source_filep_create(file, 0, -1, &error);
    if (!source) {
        fclose(file);
        zip_error_fini(&error);
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    }
    a->zip = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
    zq_status st = ZQ_OK;
    if (!a->zip) {
        zip_source_free(source); /* the archive owns the source only on success */
        st = open_error(path, &error);
    }
    zip_error_fini(&error);
    return st;
}

/* Finds "<prefix>/data.pkl" with a prefix of one folder level. */
static zq_status find_pickle(archive *a, zip_uint64_t *index)
{
    const zip_int64_t n = zip_get_num_entries(a->zip, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(a->zip, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        const char *slash = name ? strchr(name, '/') : NULL;
        const size_t len = slash ? (size_t)(slash - name) : 0;
        if (slash && len > 0 && len < sizeof a->prefix && strcmp(slash, "/data.pkl") == 0) {
            memcpy(a->prefix, name, len);
            a->prefix[len] = 0;
            *index = (zip_uint64_t)i;
            return ZQ_OK;
        }
    }
    return zq_fail(ZQ_ERR_FORMAT,
                   "%s: the archive has no <name>/data.pkl entry, so it is not a torch.save file",
                   a->path);
}

/* Reads exactly size bytes of an entry, then reads once more to reach its end, which makes
 * libzip verify the entry's CRC-32. */
static zq_status read_fully(const archive *a, zip_file_t *zf, const char *name, uint8_t *buf,
                            uint64_t size)
{
    uint64_t got = 0;
    while (got < size) {
        const zip_int64_t r = zip_fread(zf, buf + got, size - got);
        if (r <= 0)
            return zq_fail(ZQ_ERR_FORMAT, "%s: entry %s: %s", a->path, name,
                           r < 0 ? zip_file_strerror(zf) : "shorter than its recorded size");
        got += (uint64_t)r;
    }
    uint8_t extra;
    const zip_int64_t r = zip_fread(zf, &extra, 1);
    if (r != 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: entry %s: %s", a->path, name,
                       r < 0 ? zip_file_strerror(zf) : "longer than its recorded size");
    return ZQ_OK;
}

/* Reads a whole entry of at most max bytes into a malloc'd buffer. */
static zq_status read_entry(const archive *a, zip_uint64_t index, uint64_t max, uint8_t **out,
                            uint64_t *size)
{
    *out = NULL;
    const char *name = zip_get_name(a->zip, index, ZIP_FL_ENC_RAW);
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(a->zip, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return zq_fail(ZQ_ERR_FORMAT, "%s: entry %s: %s", a->path, name, zip_strerror(a->zip));
    if (st.size > max)
        return zq_fail(ZQ_ERR_FORMAT, "%s: entry %s has %llu bytes, more than %llu", a->path,
                       name, (unsigned long long)st.size, (unsigned long long)max);
    uint8_t *buf = malloc(st.size ? (size_t)st.size : 1);
    if (!buf)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for entry %s", a->path, name);
    zip_file_t *zf = zip_fopen_index(a->zip, index, 0);
    zq_status status = zf ? read_fully(a, zf, name, buf, st.size)
                          : zq_fail(ZQ_ERR_FORMAT, "%s: entry %s: %s", a->path, name,
                                    zip_strerror(a->zip));
    if (zf)
        zip_fclose(zf);
    if (status != ZQ_OK) {
        free(buf);
        return status;
    }
    *out = buf;
    *size = st.size;
    return ZQ_OK;
}

/* Checks that the view lies inside its storage: offset + sum((size - 1) * stride) < numel. */
static zq_status check_view(const archive *a, const zq_torch_tensor *t, uint64_t numel)
{
    if (numel == 0)
        return ZQ_OK;
    uint64_t last = (uint64_t)t->offset;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t step = 0;
        overflow |= __builtin_mul_overflow((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d],
                                           &step);
        overflow |= __builtin_add_overflow(last, step, &last);
    }
    if (overflow || last >= (uint64_t)t->storage_numel)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s' reaches past the end of storage %s (%lld elements)",
                       a->path, t->name, t->storage_key, (long long)t->storage_numel);
    return ZQ_OK;
}

static bool is_contiguous(const zq_torch_tensor *t)
{
    int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expected)
            return false;
        expected *= t->shape[d];
    }
    return true;
}

/* Copies the view's elements in row-major order, converted to f32. */
static void gather(const zq_torch_tensor *t, const uint8_t *storage, uint64_t numel, float *out)
{
    const size_t elem = zq_hf_dtype_size(t->dtype);
    if (is_contiguous(t)) {
        zq_hf_convert(t->dtype, storage + (size_t)t->offset * elem, (size_t)numel, out);
        return;
    }
    int64_t index[ZQ_HF_MAX_DIMS] = {0};
    for (uint64_t k = 0; k < numel; k++) {
        int64_t pos = t->offset;
        for (int d = 0; d < t->ndim; d++)
            pos += index[d] * t->stride[d];
        zq_hf_convert(t->dtype, storage + (size_t)pos * elem, 1, out + k);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++index[d] < t->shape[d])
                break;
            index[d] = 0;
        }
    }
}

static zq_status read_storage(const archive *a, const zq_torch_tensor *t, uint8_t **out)
{
    char entry[256];
    snprintf(entry, sizeof entry, "%s/data/%s", a->prefix, t->storage_key);
    const zip_int64_t index = zip_name_locate(a->zip, entry, ZIP_FL_ENC_RAW);
    if (index < 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s': storage entry %s is missing", a->path,
                       t->name, entry);
    const uint64_t want = (uint64_t)t->storage_numel * zq_hf_dtype_size(t->dtype);
    uint64_t size = 0;
    ZQ_TRY(read_entry(a, (zip_uint64_t)index, MAX_STORAGE_BYTES, out, &size));
    if (size != want) {
        free(*out);
        *out = NULL;
        return zq_fail(ZQ_ERR_FORMAT, "%s: storage %s has %llu bytes, its %lld %s elements need "
                       "%llu", a->path, entry, (unsigned long long)size,
                       (long long)t->storage_numel, t->storage_type, (unsigned long long)want);
    }
    return ZQ_OK;
}

static zq_status load_tensor(const archive *a, const zq_torch_tensor *t, zq_hf_model *m)
{
    if (t->dtype == ZQ_HF_OTHER) {
        const char *bare = strncmp(t->name, "transformer.", 12) == 0 ? t->name + 12 : t->name;
        if (zq_hf_is_attn_buffer(bare))
            return ZQ_OK; /* the causal mask (often a BoolStorage), dropped anyway */
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: tensor '%s' is stored as torch.%s; zq reads Float, Half and BFloat16 "
                       "storages",
                       a->path, t->name, t->storage_type);
    }
    uint64_t numel = 0;
    if (!zq_hf_numel(t->ndim, t->shape, &numel) ||
        (uint64_t)t->storage_numel > MAX_STORAGE_BYTES)
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is too large", a->path, t->name);
    ZQ_TRY(check_view(a, t, numel));

    uint8_t *storage = NULL;
    ZQ_TRY(read_storage(a, t, &storage));
    float *data = malloc(numel ? (size_t)numel * sizeof(float) : 1);
    if (!data) {
        free(storage);
        return zq_fail(ZQ_ERR_NOMEM, "%s: tensor '%s': out of memory", a->path, t->name);
    }
    gather(t, storage, numel, data);
    free(storage);
    return zq_hf_append(m, a->path, t->name, t->ndim, t->shape, t->dtype, data);
}

/* Reads data.pkl and lists the state dict's tensors. */
static zq_status read_state_dict(archive *a, zq_torch_tensor **list, int32_t *n)
{
    zip_uint64_t index = 0;
    ZQ_TRY(find_pickle(a, &index));
    uint8_t *pickle = NULL;
    uint64_t size = 0;
    ZQ_TRY(read_entry(a, index, MAX_PICKLE_BYTES, &pickle, &size));
    char label[512];
    snprintf(label, sizeof label, "%s: %s/data.pkl", a->path, a->prefix);
    const zq_status st = zq_pickle_read_state_dict(label, pickle, (size_t)size, list, n);
    free(pickle);
    return st;
}

zq_status zq_hf_read_torch_bin(const char *path, zq_hf_model *m)
{
    if (!path || !m)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_hf_read_torch_bin: a path and a model are "
                       "required");
    archive a = {.path = path};
    ZQ_TRY(open_archive(path, &a));
    zq_torch_tensor *list = NULL;
    int32_t n = 0;
    const int32_t first = m->n_tensors;
    zq_status st = read_state_dict(&a, &list, &n);
    for (int32_t i = 0; i < n && st == ZQ_OK; i++)
        st = load_tensor(&a, &list[i], m);
    free(list);
    zip_discard(a.zip);
    if (st == ZQ_OK)
        zq_hf_set_source_format(m, "pytorch_model.bin", first);
    return st;
}
