/*
 * stream.c - server-sent events over a libmicrohttpd callback response. In the
 * thread-per-connection mode the content reader may block. So it waits on the job for new
 * text, formats it with the API's zq_sse_ops, and checks between waits whether the client
 * has gone. A gone client cancels the job, which frees its decoding slot at the next step.
 */
#include "gen.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>

#define POLL_MS 50
#define BLOCK_SIZE 4096

typedef struct {
    zq_http_req *req; /* valid while the reader runs, not in free_state */
    zq_job *job;
    const zq_sse_ops *ops;
    void *user;
    zq_buf events;   /* formatted, not yet handed to libmicrohttpd */
    size_t sent;     /* bytes of events already handed over */
    size_t offset;   /* bytes of the job's text already formatted */
    zq_buf text;     /* the whole reply so far */
    bool opened, closed;
} sse_state;

void zq_sse_event(zq_buf *out, cJSON *object)
{
    char *json = object ? cJSON_PrintUnformatted(object) : NULL;
    cJSON_Delete(object);
    if (!json) {
        out->failed = true;
        return;
    }
    zq_buf_puts(out, "data: ");
    zq_buf_puts(out, json);
    zq_buf_puts(out, "\n\n");
    free(json);
}

/* Formats whatever the job has produced since the last call; waits up to POLL_MS for it.
 * Returns false when the client has gone. */
static bool produce(sse_state *s)
{
    if (!s->opened) {
        s->ops->open(s->user, &s->events);
        s->opened = true;
        return true;
    }
    const size_t before = s->text.len;
    zq_job_state state;
    s->offset = zq_job_poll(s->job, s->offset, POLL_MS, &s->text, &state);
    if (s->text.len > before)
        s->ops->delta(s->user, s->text.data + before, s->text.len - before, &s->events);
    if (state.finish != ZQ_FINISH_NONE) {
        s->req->tokens = state.n_tokens;
        s->ops->close(s->user, s->text.data ? s->text.data : "", &state, &s->events);
        s->closed = true;
        return true;
    }
    if (s->text.len == before && zq_http_client_gone(s->req)) {
        zq_job_cancel(s->job);
        return false;
    }
    return true;
}

static ssize_t read_events(void *cls, uint64_t pos, char *buf, size_t max)
{
    sse_state *s = cls;
    while (s->sent == s->events.len) {
        if (s->closed || s->events.failed)
            return MHD_CONTENT_READER_END_OF_STREAM;
        s->events.len = s->sent = 0; /* everything was handed over: reuse the buffer */
        if (!produce(s))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->events.len - s->sent;
    if (n > max)
        n = max;
    memcpy(buf, s->events.data + s->sent, n);
    s->sent += n;
    return (ssize_t)n;
}

static void free_state(void *cls)
{
    sse_state *s = cls;
    zq_job_cancel(s->job); /* no effect when it has ended; stops it when the client left */
    zq_job_release(s->job);
    if (s->ops->free_user)
        s->ops->free_user(s->user);
    zq_buf_free(&s->events);
    zq_buf_free(&s->text);
    free(s);
}

enum MHD_Result zq_sse_respond(zq_http_req *req, zq_job *job, const zq_sse_ops *ops,
                               void *user)
{
    sse_state *s = calloc(1, sizeof *s);
    if (!s) {
        if (ops->free_user)
            ops->free_user(user);
        return zq_http_send_error(req, 500, "server_error", "out of memory");
    }
    zq_job_retain(job);
    s->req = req;
    s->job = job;
    s->ops = ops;
    s->user = user;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, read_events, s,
                                          free_state);
    if (!resp) {
        free_state(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx: pass events at once */
    enum MHD_Result ret = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    req->status = MHD_HTTP_OK;
    req->responded = true;
    return ret;
}
