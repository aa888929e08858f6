/*
 * zqfile.c - reads and verifies .zq files (formats/ZQ_FORMAT.md): the header, the metadata
 * frame, then every tensor frame, in parallel, into one 64-byte aligned arena.
 *
 * Each size from the file is checked against the file size and the format's limits before it
 * is used to read or allocate, and every frame's CRC-32C is checked before zstd decodes it.
 * Files are read with pread, so a file that shrinks while it is read gives an error, not a
 * SIGBUS as a mapping would.
 */
#include "zqfile_internal.h"

#include "../runtime/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

/* A zstd frame starts with this magic, then the Frame_Header_Descriptor byte, whose bit 2 is
 * the Content_Checksum_flag (RFC 8878, section 3.1.1.1). */
#define ZSTD_FRAME_MAGIC 0xFD2FB528u
#define ZSTD_FHD_CHECKSUM_FLAG 0x04

typedef struct {
    const char *path;
    int fd;
    uint64_t size;
    uint64_t data_start; /* file offset of the first tensor frame */
} zq_input;

static uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Opens path with O_NONBLOCK, so that a FIFO without a writer fails the regular-file check
 * instead of blocking in open(), then clears the flag for the reads. */
static zq_status open_input(const char *path, zq_input *in)
{
    in->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (in->fd < 0)
        return zq_fail(ZQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(in->fd, &st) != 0)
        return zq_fail(ZQ_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return zq_fail(ZQ_ERR_IO, "%s: is a directory, expected a .zq file", path);
    if (!S_ISREG(st.st_mode))
        return zq_fail(ZQ_ERR_IO, "%s: not a regular file (a FIFO, socket or device), expected a "
                       ".zq file", path);
    const int flags = fcntl(in->fd, F_GETFL);
    if (flags < 0 || fcntl(in->fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
        return zq_fail(ZQ_ERR_IO, "%s: cannot clear O_NONBLOCK: %s", path, strerror(errno));
    in->size = (uint64_t)st.st_size;
    return ZQ_OK;
}

/* Reads exactly n bytes at offset; the caller has checked that they lie inside the file. */
static zq_status read_at(const zq_input *in, void *buf, size_t n, uint64_t offset)
{
    uint8_t *p = buf;
    while (n > 0) {
        const ssize_t got = pread(in->fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return zq_fail(ZQ_ERR_IO, "%s: read failed at byte %llu: %s", in->path,
                           (unsigned long long)offset, strerror(errno));
        if (got == 0)
            return zq_fail(ZQ_ERR_IO, "%s: the file shrank while being read (at byte %llu)",
                           in->path, (unsigned long long)offset);
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return ZQ_OK;
}

static zq_status read_header(const zq_input *in, uint64_t *meta_size, uint32_t *meta_crc)
{
    if (in->size == 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: the file is empty, expected a .zq model", in->path);
    if (in->size < ZQ_FILE_HEADER_BYTES)
        return zq_fail(ZQ_ERR_FORMAT, "%s: truncated: %llu bytes, less than the %d-byte header",
                       in->path, (unsigned long long)in->size, ZQ_FILE_HEADER_BYTES);
    uint8_t h[ZQ_FILE_HEADER_BYTES];
    ZQ_TRY(read_at(in, h, sizeof h, 0));

    if (memcmp(h, ZQ_FILE_MAGIC, 8) != 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: not a .zq file (wrong magic bytes)", in->path);
    const uint32_t version = load_u32(h + 8);
    if (version != ZQ_FILE_VERSION)
        return zq_fail(ZQ_ERR_VERSION,
                       "%s: format version %u, this zq reads version %d: re-quantize the model "
                       "with this zq",
                       in->path, version, ZQ_FILE_VERSION);
    if (zq_crc32c(0, h, 28) != load_u32(h + 28))
        return zq_fail(ZQ_ERR_CHECKSUM, "%s: header checksum mismatch: the file is damaged",
                       in->path);
    const uint32_t flags = load_u32(h + 12);
    if (flags != 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: unknown header flags 0x%x, expected 0", in->path,
                       flags);

    *meta_size = load_u64(h + 16);
    *meta_crc = load_u32(h + 24);
    if (*meta_size == 0)
        return zq_fail(ZQ_ERR_FORMAT, "%s: the header gives an empty metadata frame", in->path);
    if (*meta_size > in->size - ZQ_FILE_HEADER_BYTES)
        return zq_fail(ZQ_ERR_FORMAT,
                       "%s: truncated: the %llu-byte metadata frame ends past the end of the file "
                       "(%llu bytes)",
                       in->path, (unsigned long long)*meta_size, (unsigned long long)in->size);
    return ZQ_OK;
}

/* Checks that buf[0, n) is exactly one zstd frame with a content checksum and a content size,
 * and returns that size in *content. label names the frame in messages. */
static zq_status check_frame(const char *path, const char *label, const uint8_t *buf, size_t n,
                             uint64_t *content)
{
    if (n < 5 || load_u32(buf) != ZSTD_FRAME_MAGIC)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s is not a zstd frame", path, label);
    if (!(buf[4] & ZSTD_FHD_CHECKSUM_FLAG))
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s has no zstd content checksum", path, label);
    const size_t frame_size = ZSTD_findFrameCompressedSize(buf, n);
    if (ZSTD_isError(frame_size) || frame_size != n)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s is not a single zstd frame of %zu bytes", path,
                       label, n);
    const unsigned long long size = ZSTD_getFrameContentSize(buf, n);
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s does not record its content size", path, label);
    *content = size;
    return ZQ_OK;
}

/* Decompresses a checked frame into exactly cap bytes; zstd verifies the content checksum. */
static zq_status decompress(const char *path, const char *label, ZSTD_DCtx *dctx, void *dst,
                            size_t cap, const void *src, size_t n)
{
    const size_t got = ZSTD_decompressDCtx(dctx, dst, cap, src, n);
    if (ZSTD_isError(got))
        return zq_fail(ZQ_ERR_CHECKSUM, "%s: %s: zstd decompression failed: %s", path, label,
                       ZSTD_getErrorName(got));
    if (got != cap)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s decompressed to %zu bytes, expected %zu", path,
                       label, got, cap);
    return ZQ_OK;
}

/* Reads, verifies and parses the metadata frame. */
static zq_status read_metadata(zq_input *in, uint64_t meta_size, uint32_t meta_crc,
                               zq_file *f, zq_frame_ref **frames)
{
    const char *label = "the metadata frame";
    uint8_t *frame = malloc((size_t)meta_size);
    char *json = NULL;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    uint64_t content = 0;
    zq_status st = frame && dctx ? ZQ_OK : zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", in->path);
    if (st == ZQ_OK)
        st = read_at(in, frame, (size_t)meta_size, ZQ_FILE_HEADER_BYTES);
    if (st == ZQ_OK && zq_crc32c(0, frame, (size_t)meta_size) != meta_crc)
        st = zq_fail(ZQ_ERR_CHECKSUM, "%s: metadata checksum mismatch: the file is damaged",
                     in->path);
    if (st == ZQ_OK)
        st = check_frame(in->path, label, frame, (size_t)meta_size, &content);
    if (st == ZQ_OK && content > ZQ_FILE_MAX_META_BYTES)
        st = zq_fail(ZQ_ERR_FORMAT, "%s: %llu bytes of metadata, at most %llu allowed", in->path,
                     (unsigned long long)content, (unsigned long long)ZQ_FILE_MAX_META_BYTES);
    if (st == ZQ_OK && !(json = malloc((size_t)content + 1)))
        st = zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for the metadata", in->path);
    if (st == ZQ_OK)
        st = decompress(in->path, label, dctx, json, (size_t)content, frame, (size_t)meta_size);
    if (st == ZQ_OK) {
        json[content] = 0;
        in->data_start = ZQ_FILE_HEADER_BYTES + meta_size;
        st = zq_meta_parse(in->path, json, (size_t)content, in->data_start, in->size, f, frames);
    }
    ZSTD_freeDCtx(dctx);
    free(json);
    free(frame);
    return st;
}

/* Gives each tensor a 64-byte aligned region of one arena, in directory order. */
static zq_status alloc_arena(const char *path, zq_file *f, const zq_frame_ref *frames)
{
    size_t total = 0;
    for (int32_t i = 0; i < f->n_tensors; i++) {
        const uint64_t region = ZQ_ALIGN_UP(frames[i].raw_size);
        if (region > SIZE_MAX - total)
            return zq_fail(ZQ_ERR_NOMEM, "%s: the tensors do not fit in the address space", path);
        total += (size_t)region;
    }
    f->arena = zq_aligned_alloc(total);
    if (!f->arena)
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory for %zu bytes of tensors", path, total);
    f->arena_bytes = total;

    uint8_t *p = f->arena;
    for (int32_t i = 0; i < f->n_tensors; i++) {
        zq_file_tensor *t = &f->tensors[i];
        if (t->type == ZQ_TYPE_Q8) {
            t->scales = (float *)(void *)p;
            t->data = p + ZQ_ALIGN_UP(zq_frame_scale_bytes(t));
        } else {
            t->data = p;
        }
        p += ZQ_ALIGN_UP(frames[i].raw_size);
    }
    return ZQ_OK;
}

/* Reads one tensor frame into the thread's buffer (*buf, *cap), verifies it, decompresses it
 * into the tensor's arena region. */
static zq_status load_tensor(const zq_input *in, const zq_file_tensor *t, const zq_frame_ref *fr,
                             ZSTD_DCtx *dctx, uint8_t **buf, size_t *cap)
{
    char label[128];
    snprintf(label, sizeof label, "tensor '%s'", t->name);
    if (fr->size > *cap) {
        uint8_t *bigger = realloc(*buf, (size_t)fr->size);
        if (!bigger)
            return zq_fail(ZQ_ERR_NOMEM, "%s: %s: out of memory", in->path, label);
        *buf = bigger;
        *cap = (size_t)fr->size;
    }
    const uint64_t offset = in->data_start + fr->offset;
    ZQ_TRY(read_at(in, *buf, (size_t)fr->size, offset));
    if (zq_crc32c(0, *buf, (size_t)fr->size) != fr->crc32c)
        return zq_fail(ZQ_ERR_CHECKSUM,
                       "%s: %s: checksum mismatch in the frame at bytes %llu..%llu: the file is "
                       "damaged",
                       in->path, label, (unsigned long long)offset,
                       (unsigned long long)(offset + fr->size));

    uint64_t content;
    ZQ_TRY(check_frame(in->path, label, *buf, (size_t)fr->size, &content));
    if (content != fr->raw_size)
        return zq_fail(ZQ_ERR_FORMAT, "%s: %s: the frame holds %llu bytes, the directory says %llu",
                       in->path, label, (unsigned long long)content,
                       (unsigned long long)fr->raw_size);
    void *dst = t->type == ZQ_TYPE_Q8 ? (void *)t->scales : t->data;
    ZQ_TRY(decompress(in->path, label, dctx, dst, (size_t)fr->raw_size, *buf, (size_t)fr->size));
    return t->type == ZQ_TYPE_Q8 ? zq_check_q8_values(in->path, ZQ_ERR_FORMAT, t) : ZQ_OK;
}

typedef struct {
    uint64_t size;
    int32_t index;
} work_item;

/* Larger frames first, so the last thread to finish is not stuck with the biggest one. */
static int compare_work(const void *a, const void *b)
{
    const work_item *x = a;
    const work_item *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->index - y->index;
}

static void load_tensor_worker(const zq_input *in, const zq_file *f, const zq_frame_ref *frames,
                               const work_item *work, int32_t n, zq_worker_result *results)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    uint8_t *buf = NULL;
    size_t cap = 0;
    ZQ_OMP("omp for schedule(dynamic, 1)")
    for (int32_t k = 0; k < n; k++) {
        const int32_t i = work[k].index;
        zq_status st = dctx ? load_tensor(in, &f->tensors[i], &frames[i], dctx, &buf, &cap)
                            : zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", in->path);
        if (st != ZQ_OK) {
            results[i].status = st;
            snprintf(results[i].message, sizeof results[i].message, "%s", zq_last_error());
        }
    }
    free(buf);
    ZSTD_freeDCtx(dctx);
}

/* Loads every tensor with n_threads threads and reports the first failure in directory order,
 * so the message does not depend on thread timing. */
static zq_status load_tensors(const zq_input *in, zq_file *f, const zq_frame_ref *frames,
                              int n_threads)
{
    const int32_t n = f->n_tensors;
    if (n == 0)
        return ZQ_OK;
    work_item *work = malloc((size_t)n * sizeof *work);
    zq_worker_result *results = calloc((size_t)n, sizeof *results);
    if (!work || !results) {
        free(work);
        free(results);
        return zq_fail(ZQ_ERR_NOMEM, "%s: out of memory", in->path);
    }
    for (int32_t i = 0; i < n; i++)
        work[i] = (work_item){frames[i].size, i};
    qsort(work, (size_t)n, sizeof *work, compare_work);
    if (n_threads > n)
        n_threads = n;

    ZQ_OMP("omp parallel num_threads(n_threads)")
    load_tensor_worker(in, f, frames, work, n, results);

    zq_status st = ZQ_OK;
    for (int32_t i = 0; i < n && st == ZQ_OK; i++)
        if (results[i].status != ZQ_OK)
            st = zq_fail(results[i].status, "%s", results[i].message);
    free(work);
    free(results);
    return st;
}

zq_status zq_file_read(const char *path, int n_threads, zq_file *out)
{
    if (!out)
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_file_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !path[0])
        return zq_fail(ZQ_ERR_INVALID_ARG, "zq_file_read: the path is NULL or empty");
    const double start = zq_now_seconds();
    zq_input in = {path, -1, 0, 0};
    zq_frame_ref *frames = NULL;
    uint64_t meta_size = 0;
    uint32_t meta_crc = 0;

    zq_status st = open_input(path, &in);
    if (st == ZQ_OK)
        st = read_header(&in, &meta_size, &meta_crc);
    if (st == ZQ_OK)
        st = read_metadata(&in, meta_size, meta_crc, out, &frames);
    if (st == ZQ_OK)
        st = alloc_arena(path, out, frames);
    if (st == ZQ_OK)
        st = load_tensors(&in, out, frames, zq_resolve_threads(n_threads));
    if (in.fd >= 0)
        close(in.fd);
    free(frames);
    if (st != ZQ_OK) {
        zq_file_free(out);
        return st;
    }
    ZQ_DEBUG("%s: %d tensors, %zu bytes, read in %.3f s", path, out->n_tensors, out->arena_bytes,
             zq_now_seconds() - start);
    return ZQ_OK;
}

static void free_strings(char **list, int32_t n)
{
    if (!list)
        return;
    for (int32_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void zq_file_free(zq_file *f)
{
    if (!f)
        return;
    free_strings(f->vocab, f->n_vocab_base);
    free_strings(f->added, f->n_added);
    free(f->tensors);
    zq_aligned_free(f->arena);
    memset(f, 0, sizeof *f);
}

const zq_file_tensor *zq_file_find(const zq_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (int32_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}
