/*
 * gen.h - the steps both chat APIs share: the input filter, the response cache, submitting
 * a job, waiting for it, and streaming it as server-sent events.
 */
#ifndef ZQ_SERVER_GEN_H
#define ZQ_SERVER_GEN_H

#include "http.h"

/* Returns whether any turn of the request contains a listed word (and counts the hit). */
bool zq_gen_input_refused(zq_server *srv, const zq_gen_request *request);

/* Tokenizes turns (user, reply, ..., user) into the chat prompt ids[n_ctx], dropping the
 * oldest exchanges when the prompt and reserve new tokens would not fit. When even the
 * last turn does not fit, sends a 400 response that gives the token counts and returns
 * false. */
bool zq_gen_build_prompt(zq_server *srv, zq_http_req *req, const char *const *turns,
                         int n_turns, int reserve, int32_t *ids, int *n_ids, int *n_dropped);

/* Counts the tokens of the full chat prompt of the turns: [CLS], then each turn and its
 * [SEP]. */
int zq_gen_count_prompt(const zq_server *srv, const char *const *turns, int n_turns);

/* Starts a generation: a finished job from the cache when the request is deterministic and
 * its key is stored, else a job submitted to the scheduler. key receives the cache key
 * ("" when the reply must not be cached or came from the cache). On failure sends the error
 * response (503 when the queue is full) and returns NULL. */
zq_job *zq_gen_start(zq_server *srv, zq_http_req *req, const zq_gen_request *request,
                     const int32_t *ids, int n_ids, char key[ZQ_CACHE_KEY_LEN + 1]);

/* Waits for a job to end and appends the whole reply to text. When the client disconnects
 * it cancels the job and returns at once with state->finish ZQ_FINISH_CANCELLED. */
void zq_gen_wait(zq_http_req *req, zq_job *job, zq_buf *text, zq_job_state *state);

/* Stores a finished reply under key (no-op for "" or an unsuccessful finish). */
void zq_gen_cache_store(zq_server *srv, const char *key, const char *text,
                        const zq_job_state *state);

/* Sends the error response for a job that ended with ZQ_FINISH_ERROR: 503
 * unavailable_error when the shutdown aborted it, else 500 server_error. */
enum MHD_Result zq_gen_send_failure(zq_http_req *req, const zq_job_state *state);

/* Appends the data: {"error": {"message", "type", "code"}} event that ends a stream whose
 * job ended with ZQ_FINISH_ERROR (the type and code of zq_gen_send_failure) or
 * ZQ_FINISH_CANCELLED. */
void zq_gen_error_event(zq_server *srv, const zq_job_state *state, zq_buf *out);

/* Event formatting for one streaming API. */
typedef struct {
    void (*open)(void *user, zq_buf *out);
    void (*delta)(void *user, const char *text, size_t len, zq_buf *out);
    /* Called once the job has ended and all its text was passed to delta; full_text is
     * the whole reply. Writes the final events, [DONE] included. */
    void (*close)(void *user, const char *full_text, const zq_job_state *state, zq_buf *out);
    void (*free_user)(void *user);
} zq_sse_ops;

/* Queues a 200 text/event-stream response that streams the job's text. Takes a reference
 * to job and ownership of user (freed with ops->free_user). */
enum MHD_Result zq_sse_respond(zq_http_req *req, zq_job *job, const zq_sse_ops *ops,
                               void *user);

/* Appends `data: JSON\n\n` for the object and deletes it. */
void zq_sse_event(zq_buf *out, struct cJSON *object);

#endif /* ZQ_SERVER_GEN_H */
