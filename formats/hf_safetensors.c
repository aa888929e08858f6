/*
 * hf_safetensors.c - reads model.safetensors: a u64 little-endian header length, a JSON header
 * that maps each tensor name to its dtype, shape and byte range [begin, end) counted from the
 * end of the header, then the raw little-endian data.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The safetensors library rejects headers over 100 MB; so does this reader. */
#define MAX_HEADER_BYTES ((uint64_t)100 << 20)

typedef struct {
    const char *path;
    int fd;
    uint64_t data_start; /* file offset of byte 0 of the data_offsets */
    uint64_t data_bytes;
} st_file;

typedef struct {
    const char *name;
    size_t size;
} dtype_size;

/* Element sizes of the dtypes that ZQ does not convert but still checks the sizes of. */
static const dtype_size other_dtypes[] = {
    {"BOOL", 1}, {"U8", 1}, {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2},
    {"I32", 4},  {"U32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
};

static zq_status parse_dtype(const char *path, const char *name, const cJSON *item,
                             zq_hf_dtype *dtype, size_t *elem)
{
    if (!cJSON_IsString(item))
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s': \"dtype\" must be a string", path, name);
    const char *s = item->valuestring;
    const zq_hf_dtype known[] = {ZQ_HF_F32, ZQ_HF_F16, ZQ_HF_BF16};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(s, zq_hf_dtype_name(known[i])) == 0) {
            *dtype = known[i];
            *elem = zq_hf_dtype_size(known[i]);
            return ZQ_OK;
        }
    }
    for (size_t i = 0; i < sizeof other_dtypes / sizeof other_dtypes[0]; i++) {
        if (strcmp(s, other_dtypes[i].name) == 0) {
            *dtype = ZQ_HF_OTHER;
            *elem = other_dtypes[i].size;
            return ZQ_OK;
        }
    }
    return zq_fail(ZQ_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown dtype \"%.16s\"", path, name,
                   s);
}

static zq_status parse_shape(const char *path, const char *name, const cJSON *item, int *ndim,
                             int64_t *shape)
{
    if (!cJSON_IsArray(item))
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s': \"shape\" must be an array", path, name);
    const int n = cJSON_GetArraySize(item);
    if (n > ZQ_HF_MAX_DIMS)
        return zq_fail(ZQ_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions, at most %d "
                       "supported", path, name, n, ZQ_HF_MAX_DIMS);
    int i = 0;
    for (const cJSON *d = item->child; d; d = d->next, i++) {
        const double v = cJSON_IsNumber(d) ? d->valuedouble : -1;
        if (!(v >= 0 && v == floor(v) && v <= 9.0e15))
            return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a size", path, name,
                           i);
        shape[i] = (int64_t)v;
    }
    *ndim = n;
    return ZQ_OK;
}

static zq_status parse_offsets(const st_file *f, const char *name, const cJSON *item,
                               uint64_t *begin, uint64_t *end)
{
    const cJSON *b = cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 ? item->child : NULL;
    const cJSON *e = b ? b->next : NULL;
    if (!cJSON_IsNumber(b) || !cJSON_IsNumber(e))
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]",
                       f->path, name);
    const double lo = b->valuedouble, hi = e->valuedouble;
    if (!(lo >= 0 && lo <= hi && lo == floor(lo) && hi == floor(hi)) ||
        hi > (double)f->data_bytes)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%.0f, %.0f] lie outside the %llu data "
                       "bytes: the file is truncated or damaged",
                       f->path, name, lo, hi, (unsigned long long)f->data_bytes);
    *begin = (uint64_t)lo;
    *end = (uint64_t)hi;
    return ZQ_OK;
}

/* Reads the data of one tensor and converts it to f32. */
static zq_status load_data(const st_file *f, const char *name, zq_hf_dtype dtype, uint64_t numel,
                           uint64_t begin, float **out)
{
    const size_t bytes = (size_t)numel * zq_hf_dtype_size(dtype);
    float *data = malloc(numel ? (size_t)numel * sizeof(float) : 1);
    void *raw = dtype == ZQ_HF_F32 ? (void *)data : malloc(bytes ? bytes : 1);
    zq_status st = data && raw ? ZQ_OK
                               : zq_fail(ZQ_ERR_NOMEM, "%s: tensor '%s': out of memory", f->path,
                                         name);
    if (st == ZQ_OK)
        st = zq_hf_pread(f->path, f->fd, raw, bytes, f->data_start + begin);
    if (st == ZQ_OK && dtype != ZQ_HF_F32)
        zq_hf_convert(dtype, raw, (size_t)numel, data);
    if (raw != data)
        free(raw);
    if (st != ZQ_OK) {
        free(data);
        return st;
    }
    *out = data;
    return ZQ_OK;
}

static zq_status read_entry(const st_file *f, const cJSON *entry, zq_hf_model *m)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return zq_fail(ZQ_ERR_FORMAT, "%s: header entry '%s' is not an object", f->path, name);
    zq_hf_dtype dtype = ZQ_HF_OTHER;
    size_t elem = 0;
    int ndim = 0;
    int64_t shape[ZQ_HF_MAX_DIMS] = {0};
    uint64_t begin = 0, end = 0, numel = 0;
    ZQ_TRY(parse_dtype(f->path, name, cJSON_GetObjectItemCaseSensitive(entry, "dtype"), &dtype,
                       &elem));
    ZQ_TRY(parse_shape(f->path, name, cJSON_GetObjectItemCaseSensitive(entry, "shape"), &ndim,
                       shape));
    ZQ_TRY(parse_offsets(f, name, cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"), &begin,
                         &end));
    if (!zq_hf_numel(ndim, shape, &numel))
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is too large", f->path, name);
    if (end - begin != numel * elem)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s' has %llu data bytes, its shape and dtype need %llu",
                       f->path, name, (unsigned long long)(end - begin),
                       (unsigned long long)(numel * elem));

    if (dtype == ZQ_HF_OTHER) {
        const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
        if (zq_hf_is_attn_buffer(bare))
            return ZQ_OK; /* the causal mask, dropped anyway */
        const char *dtype_name = cJSON_GetObjectItemCaseSensitive(entry, "dtype")->valuestring;
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s; zq reads F32, F16 and BF16 weights",
                       f->path, name, dtype_name);
    }
    float *data;
    ZQ_TRY(load_data(f, name, dtype, numel, begin, &data));
    return zq_hf_append(m, f->path, name, ndim, shape, dtype, data);
}

static zq_status read_header(st_file *f, uint64_t file_size, cJSON **out)
{
    *out = NULL;
    if (file_size < 8)
        return zq_fail(ZQ_ERR_FORMAT, "%s: truncated: %llu bytes, less than the 8-byte header "
                       "length", f->path, (unsigned long long)file_size);
    uint64_t len;
    ZQ_TRY(zq_hf_pread(f->path, f->fd, &len, 8, 0));
    if (len > file_size - 8)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%llu bytes): the "
                       "file is truncated or not a safetensors file",
                       f->path, (unsigned long long)len, (unsigned long long)file_size);
    if (len > MAX_HEADER_BYTES)
        return zq_fail(ZQ_ERR_FORMAT, "%s: header length %llu is over the 100 MB limit", f->path,
                       (unsigned long long)len);
    f->data_start = 8 + len;
    f->data_bytes = file_size - f->data_start;

    char *text = malloc((size_t)len + 1);
    if (!text)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", f->path);
    zq_status st = zq_hf_pread(f->path, f->fd, text, (size_t)len, 8);
    cJSON *root = st == ZQ_OK ? cJSON_ParseWithLength(text, (size_t)len) : NULL;
    free(text);
    ZQ_TRY(st);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zq_fail(ZQ_ERR_FORMAT, "%s: the header is not a JSON object", f->path);
    }
    *out = root;
    return ZQ_OK;
}

zq_status zq_hf_read_safetensors(const char *path, zq_hf_model *m)
{
    st_file f = {path, -1, 0, 0};
    uint64_t size = 0;
    ZQ_TRY(zq_hf_open(path, &f.fd, &size));
    cJSON *root = NULL;
    const int32_t first = m->n_tensors;
    zq_status st = read_header(&f, size, &root);
    for (const cJSON *e = root ? root->child : NULL; e && st == ZQ_OK; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0)
            st = read_entry(&f, e, m);
    cJSON_Delete(root);
    close(f.fd);
    if (st == ZQ_OK)
        zq_hf_set_source_format(m, "safetensors", first);
    return st;
}
