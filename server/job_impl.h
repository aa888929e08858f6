/*
 * job_impl.h - the layout of a job and the functions the scheduler uses to fill it. Only
 * job.c and sched.c include this; the rest of the server uses sched.h.
 */
#ifndef ZQ_SERVER_JOB_IMPL_H
#define ZQ_SERVER_JOB_IMPL_H

#include "sched.h"

#include <pthread.h>

struct zq_job {
    /* Inputs, read-only once submitted. */
    zq_job_params params;
    int32_t *prompt; /* [n_prompt], owned */

    /* Progress, guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t changed; /* on CLOCK_MONOTONIC */
    zq_buf text;            /* reply so far, after masking */
    zq_word_masker *masker; /* NULL without an output filter */
    int n_tokens;
    zq_finish finish;
    bool output_masked;
    bool cancel_requested;
    char error[200];
    int refs;
};

bool zq_job_cancel_requested(zq_job *job);

/* Appends a piece of reply text (through the masker) and records the token count. */
void zq_job_emit(zq_job *job, const char *piece, size_t len, int n_tokens);

/* Ends the job (flushing the masker) unless it has already ended; error may be NULL. */
void zq_job_finish(zq_job *job, zq_finish finish, const char *error);

#endif /* ZQ_SERVER_JOB_IMPL_H */
