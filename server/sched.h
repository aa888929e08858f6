/*
 * sched.h - generation jobs and the batching scheduler.
 *
 * One scheduler thread owns the model's contexts: a fixed pool of slots, one zq_context
 * each. Every step it admits queued jobs into free slots (prefill). Then it decodes one
 * token for all active slots with a single zq_decode_batch call. Each slot is sampled with
 * its job's own sampler, so a reply depends only on its own request and seed. Connection
 * threads submit jobs and read their text as it grows.
 */
#ifndef ZQ_SERVER_SCHED_H
#define ZQ_SERVER_SCHED_H

#include "../runtime/zq.h"
#include "buf.h"
#include "wordfilter.h"
#include "metrics.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    ZQ_FINISH_NONE = 0,  /* still queued or generating */
    ZQ_FINISH_STOP,      /* the model ended the reply with [SEP] */
    ZQ_FINISH_LENGTH,    /* max_new_tokens or the context size was reached */
    ZQ_FINISH_FILTERED,  /* the input was refused by the word filter; no generation ran */
    ZQ_FINISH_CANCELLED, /* the client disconnected */
    ZQ_FINISH_ERROR,     /* the runtime failed or the server shut down */
} zq_finish;

/* Returns the OpenAI finish_reason for a finish: "stop", "length", "content_filter", or
 * "error" / "cancelled" for the rest. */
const char *zq_finish_reason(zq_finish finish);

typedef struct {
    const int32_t *prompt; /* copied by zq_job_create */
    int n_prompt;
    zq_sampler_params sampling;
    int max_new_tokens;
    bool ignore_eos; /* keep generating past [SEP] until max_new_tokens (benchmarks, tests) */
    const zq_word_filter *output_filter; /* masks words in the reply; NULL = none */
    double t_arrival;               /* monotonic seconds when the request arrived */
} zq_job_params;

typedef struct zq_job zq_job;

/* A snapshot of a job's progress. */
typedef struct {
    zq_finish finish;
    int n_tokens;      /* tokens generated so far, [SEP] excluded */
    bool output_masked; /* the output filter masked at least one word */
    char error[200];   /* set with ZQ_FINISH_ERROR */
} zq_job_state;

/* Creates a job with one reference, or NULL when out of memory. */
zq_job *zq_job_create(const zq_job_params *params);

/* Creates a job that is already finished with the given text (a cache hit, a refusal). */
zq_job *zq_job_create_done(const char *text, int n_tokens, zq_finish finish);

void zq_job_retain(zq_job *job);
void zq_job_release(zq_job *job); /* frees the job when the last reference goes */

/* Asks the scheduler to stop the job at the next step (the client disconnected). */
void zq_job_cancel(zq_job *job);

/* Waits up to timeout_ms until the job has text beyond byte offset, or has finished.
 * Appends the new text to out (if not NULL), fills *state, and returns the new offset.
 * The text never ends inside a UTF-8 character or inside a word the filter may mask. */
size_t zq_job_poll(zq_job *job, size_t offset, int timeout_ms, zq_buf *out,
                   zq_job_state *state);

typedef struct {
    int n_slots;       /* parallel sequences; 1 = no batching */
    int queue_cap;     /* jobs that may wait for a busy slot */
    int n_threads;     /* threads per forward pass; 0 = physical cores */
    int n_ctx;         /* KV positions per slot; 0 = the model's n_ctx */
    zq_kv_type kv_type; /* element type of the slots' caches; 0 = auto */
    int step_delay_ms; /* sleep after each step; only for tests that need slow generation */
} zq_sched_params;

typedef struct zq_sched zq_sched;

/* Creates the slots and starts the scheduler thread. On failure returns NULL and writes the
 * reason to err. metrics may be NULL. */
zq_sched *zq_sched_create(const zq_model *model, const zq_sched_params *params,
                          zq_metrics *metrics, char *err, size_t err_cap);

typedef enum { ZQ_SUBMIT_OK, ZQ_SUBMIT_QUEUE_FULL, ZQ_SUBMIT_CLOSED } zq_submit_result;

/* Queues a job; the scheduler takes its own reference. Returns ZQ_SUBMIT_QUEUE_FULL when
 * n_slots + queue_cap jobs are already decoding or queued. */
zq_submit_result zq_sched_submit(zq_sched *sched, zq_job *job);

/* Stops accepting jobs and waits up to timeout_s for queued and active ones to finish.
 * Returns whether the scheduler became idle in time. */
bool zq_sched_drain(zq_sched *sched, double timeout_s);

/* Stops the thread; jobs still queued or active finish with ZQ_FINISH_ERROR, and later
 * submits return ZQ_SUBMIT_CLOSED. The scheduler stays valid until zq_sched_free. */
void zq_sched_stop(zq_sched *sched);

/* Stops the scheduler (as zq_sched_stop) and frees it. */
void zq_sched_free(zq_sched *sched);

/* Returns the context size of each slot. */
int zq_sched_n_ctx(const zq_sched *sched);

/* Returns monotonic seconds (CLOCK_MONOTONIC). */
double zq_now(void);

#endif /* ZQ_SERVER_SCHED_H */
