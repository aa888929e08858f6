/*
 * zqfile_write.c - writes .zq files (formats/ZQ_FORMAT.md). The tensors are compressed in
 * parallel and held in memory, because the metadata, which comes first in the file, records
 * every frame's size. The file is written under a temporary name and renamed at the end.
 */
#include "zqfile_internal.h"

#include "../runtime/internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

typedef struct {
    uint8_t *data;
    size_t size;
} frame_buf;

static ZSTD_CCtx *create_cctx(int level)
{
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (cctx && (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
                 ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
                 ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)))) {
        ZSTD_freeCCtx(cctx);
        return NULL;
    }
    return cctx;
}

/* Compresses src[0, n) into one frame; ZSTD_compress2 gets n up front, so the frame records
 * the content size. */
static zq_status compress_frame(const char *path, const char *label, ZSTD_CCtx *cctx,
                                const void *src, size_t n, frame_buf *out)
{
    const size_t bound = ZSTD_compressBound(n);
    out->data = malloc(bound);
    if (!out->data)
        return zq_fail(ZQ_ERR_NOMEM, "%s: %s: out of memory", path, label);
    const size_t got = ZSTD_compress2(cctx, out->data, bound, src, n);
    if (ZSTD_isError(got))
        return zq_fail(ZQ_ERR_INTERNAL, "%s: %s: zstd compression failed: %s", path, label,
                       ZSTD_getErrorName(got));
    out->size = got;
    return ZQ_OK;
}

/* Lays out an int8 tensor's frame content: scales, zero padding to 64 bytes, values. */
static uint8_t *pack_q8(const zq_file_tensor *t, size_t content)
{
    const size_t scale_bytes = (size_t)zq_frame_scale_bytes(t);
    uint8_t *packed = calloc(1, content);
    if (packed) {
        memcpy(packed, t->scales, scale_bytes);
        memcpy(packed + ZQ_ALIGN_UP(scale_bytes), t->data, content - ZQ_ALIGN_UP(scale_bytes));
    }
    return packed;
}

static zq_status compress_tensor(const char *path, ZSTD_CCtx *cctx, const zq_file_tensor *t,
                                 frame_buf *out, zq_frame_ref *fr)
{
    char label[128];
    snprintf(label, sizeof label, "tensor '%s'", t->name);
    const size_t content = (size_t)zq_frame_content_bytes(t);
    const void *src = t->data;
    uint8_t *packed = NULL;
    if (t->type == ZQ_TYPE_Q8) {
        ZQ_TRY(zq_check_q8_values(path, ZQ_ERR_INVALID_ARG, t));
        src = packed = pack_q8(t, content);
        if (!packed)
            return zq_fail(ZQ_ERR_NOMEM, "%s: %s: out of memory", path, label);
    }
    const zq_status st = compress_frame(path, label, cctx, src, content, out);
    free(packed);
    ZQ_TRY(st);
    fr->size = out->size;
    fr->raw_size = content;
    fr->crc32c = zq_crc32c(0, out->data, out->size);
    return ZQ_OK;
}

static void compress_worker(const char *path, const zq_file *f, int level, frame_buf *bufs,
                            zq_frame_ref *frames, zq_worker_result *results)
{
    ZSTD_CCtx *cctx = create_cctx(level);
    ZQ_OMP("omp for schedule(dynamic, 1)")
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const zq_status st =
            cctx ? compress_tensor(path, cctx, &f->tensors[i], &bufs[i], &frames[i])
                 : zq_fail(ZQ_ERR_NOMEM, "%s: cannot create a zstd context", path);
        if (st != ZQ_OK) {
            results[i].status = st;
            snprintf(results[i].message, sizeof results[i].message, "%s", zq_last_error());
        }
    }
    ZSTD_freeCCtx(cctx);
}

/* Compresses every tensor with n_threads threads and gives each frame its offset. Reports
 * the first failure in tensor order. */
static zq_status compress_tensors(const char *path, const zq_file *f, int level, int n_threads,
                                  frame_buf *bufs, zq_frame_ref *frames)
{
    const int32_t n = f->n_tensors;
    zq_worker_result *results = calloc(n > 0 ? (size_t)n : 1, sizeof *results);
    if (!results)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    if (n_threads > n)
        n_threads = n > 0 ? n : 1;

    ZQ_OMP("omp parallel num_threads(n_threads)")
    compress_worker(path, f, level, bufs, frames, results);

    zq_status st = ZQ_OK;
    uint64_t offset = 0;
    for (int32_t i = 0; i < n && st == ZQ_OK; i++) {
        st = results[i].status;
        if (st != ZQ_OK)
            zq_fail(st, "%s", results[i].message);
        frames[i].offset = offset;
        offset += frames[i].size;
    }
    free(results);
    return st;
}

static void store_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}

static void store_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

static void build_header(uint8_t h[ZQ_FILE_HEADER_BYTES], const frame_buf *meta)
{
    memcpy(h, ZQ_FILE_MAGIC, 8);
    store_u32(h + 8, ZQ_FILE_VERSION);
    store_u32(h + 12, 0);
    store_u64(h + 16, meta->size);
    store_u32(h + 24, zq_crc32c(0, meta->data, meta->size));
    store_u32(h + 28, zq_crc32c(0, h, 28));
}

static zq_status write_all(int fd, const char *tmp, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n > 0) {
        const ssize_t done = write(fd, p, n);
        if (done < 0 && errno == EINTR)
            continue;
        if (done < 0)
            return zq_fail(ZQ_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        p += done;
        n -= (size_t)done;
    }
    return ZQ_OK;
}

/* Makes the rename durable; a failure here leaves a complete file, so it is only logged. */
static void sync_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        ZQ_WARN("cannot sync folder %s after writing %s: %s", dir, path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

static zq_status write_frames(int fd, const char *tmp, const uint8_t *header,
                              const frame_buf *meta, const frame_buf *bufs, int32_t n)
{
    ZQ_TRY(write_all(fd, tmp, header, ZQ_FILE_HEADER_BYTES));
    ZQ_TRY(write_all(fd, tmp, meta->data, meta->size));
    for (int32_t i = 0; i < n; i++)
        ZQ_TRY(write_all(fd, tmp, bufs[i].data, bufs[i].size));
    if (fsync(fd) != 0)
        return zq_fail(ZQ_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    return ZQ_OK;
}

/* Writes the file as <path>.tmp-<pid> and renames it to path; removes it on any failure. */
static zq_status write_atomically(const char *path, const frame_buf *meta, const frame_buf *bufs,
                                  int32_t n)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: the path is too long", path);
    uint8_t header[ZQ_FILE_HEADER_BYTES];
    build_header(header, meta);

    const int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return zq_fail(ZQ_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    zq_status st = write_frames(fd, tmp, header, meta, bufs, n);
    if (close(fd) != 0 && st == ZQ_OK)
        st = zq_fail(ZQ_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == ZQ_OK && rename(tmp, path) != 0)
        st = zq_fail(ZQ_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (st != ZQ_OK) {
        unlink(tmp);
        return st;
    }
    sync_parent_dir(path);
    return ZQ_OK;
}

/* Builds and compresses the metadata JSON. */
static zq_status compress_metadata(const char *path, const zq_file *f, int level,
                                   const zq_frame_ref *frames, frame_buf *meta)
{
    char *json = zq_meta_build(f, frames);
    if (!json)
        return ZQ_ERR_NOMEM;
    ZSTD_CCtx *cctx = create_cctx(level);
    const zq_status st =
        cctx ? compress_frame(path, "the metadata", cctx, json, strlen(json), meta)
             : zq_fail(ZQ_ERR_NOMEM, "%s: cannot create a zstd context", path);
    ZSTD_freeCCtx(cctx);
    cJSON_free(json);
    return st;
}

zq_status zq_file_write(const char *path, const zq_file *f, int zstd_level, int n_threads)
{
    if (!path || !path[0] || !f)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_file_write: a path and a file are required");
    if (zstd_level < 1 || zstd_level > ZSTD_maxCLevel())
        return zq_fail(ZQ_ERR_INVALID_ARG, "%s: zstd level %d, expected 1 to %d", path,
                       zstd_level, ZSTD_maxCLevel());
    ZQ_TRY(zq_meta_check_input(path, f));

    const int32_t n = f->n_tensors;
    const double start = zq_now_seconds();
    frame_buf *bufs = calloc(n > 0 ? (size_t)n : 1, sizeof *bufs);
    zq_frame_ref *frames = calloc(n > 0 ? (size_t)n : 1, sizeof *frames);
    frame_buf meta = {0};
    zq_status st = bufs && frames ? ZQ_OK : zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", path);
    if (st == ZQ_OK)
        st = compress_tensors(path, f, zstd_level, zq_resolve_threads(n_threads), bufs, frames);
    if (st == ZQ_OK)
        st = compress_metadata(path, f, zstd_level, frames, &meta);
    if (st == ZQ_OK)
        st = write_atomically(path, &meta, bufs, n);
    if (st == ZQ_OK)
        ZQ_DEBUG("%s: wrote %d tensors in %.3f s", path, n, zq_now_seconds() - start);

    for (int32_t i = 0; bufs && i < n; i++)
        free(bufs[i].data);
    free(bufs);
    free(frames);
    free(meta.data);
    return st;
}
