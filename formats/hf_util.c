/*
 * hf_util.c - helpers of the Hugging Face readers: element conversion, the tensor list of a
 * zq_hf_model, and reading small files.
 */
#include "hf_internal.h"

#include "../runtime/internal.h"
#include "zqfile_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ELEMENTS ((uint64_t)1 << 48)
#define MAX_JSON_BYTES ((size_t)64 << 20)

size_t zq_hf_dtype_size(zq_hf_dtype dtype)
{
    switch (dtype) {
    case ZQ_HF_F32: return 4;
    case ZQ_HF_F16:
    case ZQ_HF_BF16: return 2;
    case ZQ_HF_OTHER: return 0;
    }
    return 0;
}

const char *zq_hf_dtype_name(zq_hf_dtype dtype)
{
    switch (dtype) {
    case ZQ_HF_F32: return "F32";
    case ZQ_HF_F16: return "F16";
    case ZQ_HF_BF16: return "BF16";
    case ZQ_HF_OTHER: return "other";
    }
    return "other";
}

void zq_hf_convert(zq_hf_dtype dtype, const void *src, size_t n, float *dst)
{
    const uint8_t *p = src;
    if (dtype == ZQ_HF_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = dtype == ZQ_HF_F16 ? zq_f16_to_f32(h) : zq_bf16_to_f32(h);
    }
}

bool zq_hf_numel(int ndim, const int64_t *shape, uint64_t *out)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > MAX_ELEMENTS)
            return false;
        n *= (uint64_t)shape[i];
        if (n > MAX_ELEMENTS)
            return false;
    }
    *out = n;
    return true;
}

bool zq_hf_is_attn_buffer(const char *name)
{
    if (strncmp(name, "h.", 2) != 0 || !isdigit((unsigned char)name[2]))
        return false;
    const char *p = name + 2;
    while (isdigit((unsigned char)*p))
        p++;
    return strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0;
}

static const char *non_finite_name(float x)
{
    if (isnan(x))
        return "NaN";
    return x > 0 ? "inf" : "-inf";
}

/* Fails on the first NaN or infinity in data. The attention mask buffers are exempt: ZQ drops
 * them, and masked_bias may legitimately hold -inf. */
static zq_status check_finite(const char *path, const char *name, int ndim, const int64_t *shape,
                              const float *data)
{
    uint64_t n = 0;
    if (zq_hf_is_attn_buffer(name) || !zq_hf_numel(ndim, shape, &n))
        return ZQ_OK;
    for (uint64_t i = 0; i < n; i++) {
        if (isfinite(data[i]))
            continue;
        return zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' has a non-finite value (%s) at index %llu",
                       path, name, non_finite_name(data[i]), (unsigned long long)i);
    }
    return ZQ_OK;
}

zq_status zq_hf_append(zq_hf_model *m, const char *path, const char *name, int ndim,
                       const int64_t *shape, zq_hf_dtype dtype, float *data)
{
    const char *prefix = "transformer.";
    if (strncmp(name, prefix, strlen(prefix)) == 0)
        name += strlen(prefix);
    zq_status st = ZQ_OK;
    if (strlen(name) >= sizeof m->tensors[0].name)
        st = zq_fail(ZQ_ERR_UNSUPPORTED, "%s: tensor name '%.60s...' is longer than %zu bytes",
                     path, name, sizeof m->tensors[0].name - 1);
    else if (zq_hf_find(m, name))
        st = zq_fail(ZQ_ERR_FORMAT, "%s: tensor '%s' appears twice", path, name);
    else if (ndim < 0 || ndim > ZQ_HF_MAX_DIMS)
        st = zq_fail(ZQ_ERR_UNSUPPORTED, "%s: tensor '%s' has %d dimensions, at most %d supported",
                     path, name, ndim, ZQ_HF_MAX_DIMS);
    else
        st = check_finite(path, name, ndim, shape, data);
    zq_hf_tensor *grown = NULL;
    if (st == ZQ_OK) {
        grown = realloc(m->tensors, ((size_t)m->n_tensors + 1) * sizeof *m->tensors);
        if (!grown)
            st = zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    }
    if (st != ZQ_OK) {
        free(data);
        return st;
    }
    m->tensors = grown;
    zq_hf_tensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    snprintf(t->src_dtype, sizeof t->src_dtype, "%s", zq_hf_dtype_name(dtype));
    return ZQ_OK;
}

void zq_hf_set_source_format(zq_hf_model *m, const char *container, int32_t first)
{
    const char *dtype = first < m->n_tensors ? m->tensors[first].src_dtype : "F32";
    for (int32_t i = first; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].src_dtype, dtype) != 0)
            dtype = "mixed";
    snprintf(m->source_format, sizeof m->source_format, "%s %s", container, dtype);
}

/* Opens with O_NONBLOCK, so that a FIFO without a writer fails the regular-file check instead
 * of blocking in open(), then clears the flag for the reads. */
zq_status zq_hf_open(const char *path, int *fd, uint64_t *size)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0)
        return zq_fail(ZQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    zq_status status = ZQ_OK;
    int flags = 0;
    if (fstat(*fd, &st) != 0)
        status = zq_fail(ZQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (S_ISDIR(st.st_mode))
        status = zq_fail(ZQ_ERR_IO, "%s: is a directory, expected a file", path);
    else if (!S_ISREG(st.st_mode))
        status = zq_fail(ZQ_ERR_IO, "%s: not a regular file (a FIFO, socket or device)", path);
    else if ((flags = fcntl(*fd, F_GETFL)) < 0 || fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        status = zq_fail(ZQ_ERR_IO, "%s: cannot clear O_NONBLOCK: %s", path, strerror(errno));
    if (status != ZQ_OK) {
        close(*fd);
        *fd = -1;
        return status;
    }
    *size = (uint64_t)st.st_size;
    return ZQ_OK;
}

FILE *zq_hf_fopen(const char *path)
{
    int fd = -1;
    uint64_t size = 0;
    if (zq_hf_open(path, &fd, &size) != ZQ_OK)
        return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        zq_fail(ZQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

zq_status zq_hf_pread(const char *path, int fd, void *buf, size_t n, uint64_t offset)
{
    uint8_t *p = buf;
    while (n > 0) {
        const ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return zq_fail(ZQ_ERR_IO, "%s: read failed at byte %llu: %s", path,
                           (unsigned long long)offset, strerror(errno));
        if (got == 0)
            return zq_fail(ZQ_ERR_IO, "%s: the file shrank while being read (at byte %llu)",
                           path, (unsigned long long)offset);
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return ZQ_OK;
}

zq_status zq_hf_read_file(const char *path, size_t max_bytes, char **out, size_t *len)
{
    *out = NULL;
    FILE *f = zq_hf_fopen(path);
    if (!f)
        return ZQ_ERR_IO;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    zq_status st = ZQ_OK;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            char *grown = cap <= max_bytes + 1 ? realloc(buf, cap + 1) : NULL;
            if (!grown) {
                st = cap > max_bytes + 1
                         ? zq_fail(ZQ_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes)
                         : zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = grown;
        }
        const size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (st == ZQ_OK && ferror(f))
        st = zq_fail(ZQ_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    fclose(f);
    if (st != ZQ_OK) {
        free(buf);
        return st;
    }
    if (!buf && !(buf = malloc(1)))
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return ZQ_OK;
}

zq_status zq_hf_check_utf8(const char *path, const char *text, size_t len)
{
    const size_t bad = zq_utf8_invalid_at(text, len);
    if (bad == len)
        return ZQ_OK;
    size_t line = 1;
    const char *line_start = text;
    for (const char *p = text; p < text + bad; p++) {
        if (*p == '\n') {
            line++;
            line_start = p + 1;
        }
    }
    return zq_fail(ZQ_ERR_FORMAT, "%s: line %zu: invalid UTF-8 at byte %zu of the line (0x%02x)",
                   path, line, (size_t)(text + bad - line_start) + 1,
                   (unsigned)(unsigned char)text[bad]);
}

zq_status zq_hf_read_json(const char *path, cJSON **out)
{
    *out = NULL;
    char *text;
    size_t len;
    ZQ_TRY(zq_hf_read_file(path, MAX_JSON_BYTES, &text, &len));
    const zq_status st = zq_hf_check_utf8(path, text, len);
    if (st != ZQ_OK) {
        free(text);
        return st;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        const long offset = at && at >= text && at <= text + len ? (long)(at - text) : -1;
        free(text);
        return zq_fail(ZQ_ERR_FORMAT, "%s: invalid JSON near byte %ld", path, offset);
    }
    free(text);
    *out = root;
    return ZQ_OK;
}
