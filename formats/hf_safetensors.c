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

/* One header entry, checked against the file but not read yet. */
typedef struct {
    const cJSON *json; /* the entry; its key is the tensor name */
    zq_hf_dtype dtype;
    int ndim;
    int64_t shape[ZQ_HF_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* data_offsets */
} st_entry;

static zq_status parse_entry(const st_file *f, const cJSON *entry, st_entry *out)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return zq_fail(ZQ_ERR_FORMAT, "%s: header entry '%s' is not an object", f->path, name);
    memset(out, 0, sizeof *out);
    out->json = entry;
    size_t elem = 0;
    ZQ_TRY(parse_dtype(f->path, name, cJSON_GetObjectItemCaseSensitive(entry, "dtype"),
                       &out->dtype, &elem));
    ZQ_TRY(parse_shape(f->path, name, cJSON_GetObjectItemCaseSensitive(entry, "shape"),
                       &out->ndim, out->shape));
    ZQ_TRY(parse_offsets(f, name, cJSON_GetObjectItemCaseSensitive(entry, "data_offsets"),
                         &out->begin, &out->end));
    if (!zq_hf_numel(out->ndim, out->shape, &out->numel))
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' is too large", f->path, name);
    if (out->end - out->begin != out->numel * elem)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: tensor '%s' has %llu data bytes, its shape and dtype need %llu",
                       f->path, name, (unsigned long long)(out->end - out->begin),
                       (unsigned long long)(out->numel * elem));
    return ZQ_OK;
}

static int compare_begin(const void *a, const void *b)
{
    const st_entry *const *x = a;
    const st_entry *const *y = b;
    if ((*x)->begin != (*y)->begin)
        return (*x)->begin < (*y)->begin ? -1 : 1;
    return 0;
}

/* Checks that the tensors' byte ranges cover the data section exactly, without overlaps or
 * gaps, as the safetensors library requires (its InvalidOffset and MetadataIncompleteBuffer
 * errors). Shared bytes make two tensors alias, and bytes that no tensor owns could hide other
 * content. Empty tensors own no bytes and are skipped. */
static zq_status check_layout(const st_file *f, const st_entry *entries, size_t n)
{
    const st_entry **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", f->path);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (entries[i].end > entries[i].begin)
            sorted[m++] = &entries[i];
    qsort(sorted, m, sizeof *sorted, compare_begin);

    zq_status st = ZQ_OK;
    uint64_t covered = 0;
    const st_entry *last = NULL; /* the entry that ends at covered */
    for (size_t i = 0; i < m && st == ZQ_OK; i++) {
        const st_entry *e = sorted[i];
        if (e->begin < covered)
            st = zq_fail(ZQ_ERR_FORMAT,
                         "%s: the data of tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) "
                         "overlap; each tensor needs its own bytes: the file is damaged",
                         f->path, last->json->string, (unsigned long long)last->begin,
                         (unsigned long long)last->end, e->json->string,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
        else if (e->begin > covered)
            st = zq_fail(ZQ_ERR_FORMAT,
                         "%s: data bytes [%llu, %llu) before tensor '%s' belong to no tensor: "
                         "the file is damaged",
                         f->path, (unsigned long long)covered, (unsigned long long)e->begin,
                         e->json->string);
        covered = e->end;
        last = e;
    }
    if (st == ZQ_OK && covered != f->data_bytes)
        st = zq_fail(ZQ_ERR_FORMAT,
                     "%s: data bytes [%llu, %llu) after the last tensor belong to no tensor: the "
                     "file is damaged or has trailing bytes",
                     f->path, (unsigned long long)covered, (unsigned long long)f->data_bytes);
    free(sorted);
    return st;
}

static zq_status load_entry(const st_file *f, const st_entry *e, zq_hf_model *m)
{
    const char *name = e->json->string;
    if (e->dtype == ZQ_HF_OTHER) {
        const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
        if (zq_hf_is_attn_buffer(bare))
            return ZQ_OK; /* the causal mask, dropped anyway */
        const char *dtype_name = cJSON_GetObjectItemCaseSensitive(e->json, "dtype")->valuestring;
        return zq_fail(ZQ_ERR_UNSUPPORTED,
                       "%s: tensor '%s' has dtype %s; zq reads F32, F16 and BF16 weights",
                       f->path, name, dtype_name);
    }
    float *data;
    ZQ_TRY(load_data(f, name, e->dtype, e->numel, e->begin, &data));
    return zq_hf_append(m, f->path, name, e->ndim, e->shape, e->dtype, data);
}

/* Checks every header entry and the layout of the data before reading any tensor. */
static zq_status read_entries(const st_file *f, const cJSON *root, zq_hf_model *m)
{
    const size_t cap = (size_t)cJSON_GetArraySize(root);
    st_entry *entries = malloc((cap ? cap : 1) * sizeof *entries);
    if (!entries)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", f->path);
    size_t n = 0;
    zq_status st = ZQ_OK;
    for (const cJSON *e = root->child; e && st == ZQ_OK; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0)
            st = parse_entry(f, e, &entries[n++]);
    if (st == ZQ_OK)
        st = check_layout(f, entries, n);
    for (size_t i = 0; i < n && st == ZQ_OK; i++)
        st = load_entry(f, &entries[i], m);
    free(entries);
    return st;
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
    if (!path || !m)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_hf_read_safetensors: a path and a model are "
                       "required");
    st_file f = {path, -1, 0, 0};
    uint64_t size = 0;
    ZQ_TRY(zq_hf_open(path, &f.fd, &size));
    cJSON *root = NULL;
    const int32_t first = m->n_tensors;
    zq_status st = read_header(&f, size, &root);
    if (st == ZQ_OK)
        st = read_entries(&f, root, m);
    cJSON_Delete(root);
    close(f.fd);
    if (st == ZQ_OK)
        zq_hf_set_source_format(m, "safetensors", first);
    return st;
}
