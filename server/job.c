/*
 * job.c - generation jobs: a request's inputs and its growing output, shared between the
 * connection thread that waits for text and the scheduler thread that produces it. The
 * progress fields are guarded by the job's mutex, and `changed` is broadcast whenever text
 * is added or the job ends.
 */
#include "job_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double zq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *zq_finish_reason(zq_finish finish)
{
    switch (finish) {
    case ZQ_FINISH_STOP:
        return "stop";
    case ZQ_FINISH_LENGTH:
        return "length";
    case ZQ_FINISH_FILTERED:
        return "content_filter";
    case ZQ_FINISH_CANCELLED:
        return "cancelled";
    case ZQ_FINISH_ERROR:
        return "error";
    case ZQ_FINISH_NONE:
        break;
    }
    return "none";
}

static zq_job *job_alloc(void)
{
    zq_job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    pthread_mutex_init(&job->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&job->changed, &attr);
    pthread_condattr_destroy(&attr);
    job->refs = 1;
    return job;
}

zq_job *zq_job_create(const zq_job_params *params)
{
    zq_job *job = job_alloc();
    if (!job)
        return NULL;
    job->params = *params;
    job->prompt = malloc((size_t)(params->n_prompt > 0 ? params->n_prompt : 1) * sizeof(int32_t));
    if (params->output_filter)
        job->masker = zq_word_masker_create(params->output_filter);
    if (!job->prompt || (params->output_filter && !job->masker)) {
        zq_job_release(job);
        return NULL;
    }
    memcpy(job->prompt, params->prompt, (size_t)params->n_prompt * sizeof(int32_t));
    job->params.prompt = job->prompt;
    return job;
}

zq_job *zq_job_create_done(const char *text, int n_tokens, zq_finish finish)
{
    zq_job *job = job_alloc();
    if (!job)
        return NULL;
    if (!zq_buf_puts(&job->text, text)) {
        zq_job_release(job);
        return NULL;
    }
    job->n_tokens = n_tokens;
    job->finish = finish;
    return job;
}

void zq_job_retain(zq_job *job)
{
    pthread_mutex_lock(&job->lock);
    job->refs++;
    pthread_mutex_unlock(&job->lock);
}

void zq_job_release(zq_job *job)
{
    if (!job)
        return;
    pthread_mutex_lock(&job->lock);
    int refs = --job->refs;
    pthread_mutex_unlock(&job->lock);
    if (refs > 0)
        return;
    zq_word_masker_free(job->masker);
    zq_buf_free(&job->text);
    free(job->prompt);
    pthread_cond_destroy(&job->changed);
    pthread_mutex_destroy(&job->lock);
    free(job);
}

void zq_job_cancel(zq_job *job)
{
    pthread_mutex_lock(&job->lock);
    job->cancel_requested = true;
    pthread_mutex_unlock(&job->lock);
}

static void fill_state(const zq_job *job, zq_job_state *state)
{
    state->finish = job->finish;
    state->n_tokens = job->n_tokens;
    state->output_masked = job->output_masked;
    snprintf(state->error, sizeof state->error, "%s", job->error);
}

size_t zq_job_poll(zq_job *job, size_t offset, int timeout_ms, zq_buf *out,
                   zq_job_state *state)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&job->lock);
    while (job->text.len <= offset && job->finish == ZQ_FINISH_NONE) {
        if (pthread_cond_timedwait(&job->changed, &job->lock, &deadline) == ETIMEDOUT)
            break;
    }
    size_t end = job->text.len;
    if (out && end > offset)
        zq_buf_append(out, job->text.data + offset, end - offset);
    fill_state(job, state);
    pthread_mutex_unlock(&job->lock);
    return end > offset ? end : offset;
}

bool zq_job_cancel_requested(zq_job *job)
{
    pthread_mutex_lock(&job->lock);
    bool cancel = job->cancel_requested;
    pthread_mutex_unlock(&job->lock);
    return cancel;
}

void zq_job_emit(zq_job *job, const char *piece, size_t len, int n_tokens)
{
    pthread_mutex_lock(&job->lock);
    if (job->masker) {
        zq_word_masker_push(job->masker, piece, len, &job->text);
        job->output_masked = zq_word_masker_masked(job->masker);
    } else {
        zq_buf_append(&job->text, piece, len);
    }
    job->n_tokens = n_tokens;
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}

void zq_job_finish(zq_job *job, zq_finish finish, const char *error)
{
    pthread_mutex_lock(&job->lock);
    if (job->finish == ZQ_FINISH_NONE) {
        if (job->masker) {
            zq_word_masker_finish(job->masker, &job->text);
            job->output_masked = zq_word_masker_masked(job->masker);
        }
        job->finish = finish;
        if (error)
            snprintf(job->error, sizeof job->error, "%s", error);
        if (job->text.failed && finish != ZQ_FINISH_ERROR) {
            job->finish = ZQ_FINISH_ERROR;
            snprintf(job->error, sizeof job->error, "out of memory for the reply text");
        }
    }
    pthread_cond_broadcast(&job->changed);
    pthread_mutex_unlock(&job->lock);
}
