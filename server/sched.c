/*
 * sched.c - the batching scheduler of sched.h.
 *
 * A step has three parts. Under the lock, it moves queued jobs into free slots. It prefills
 * each new slot with zq_context_eval and samples its first token. Then one zq_decode_batch
 * call runs over every slot that has a token to feed, and each slot is sampled. Slots whose job ends ([SEP], length,
 * cancel, error) are freed at once, so jobs join and leave between steps.
 *
 * Sampling mirrors zq_chat_reply: special tokens other than [SEP] are masked, and the
 * repetition penalty looks at the last repeat_last_n ids of prompt plus reply. Each job
 * has its own sampler seeded from its request, so batching does not change what a job
 * samples; the runtime keeps batched logits equal to single-sequence logits within rounding.
 */
#include "job_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    zq_context *ctx;
    zq_sampler *sampler; /* created per job from its parameters */
    zq_detok_stream detok;
    zq_job *job;  /* NULL when the slot is free */
    int32_t *ids; /* prompt + reply, [n_ctx] */
    int n_ids;
    int n_generated;
    int32_t next; /* token to decode at the next step, -1 when none */
} slot;

struct zq_sched {
    const zq_model *model;
    zq_sched_params params;
    zq_metrics *metrics;
    int n_vocab;
    zq_special_tokens special;
    slot *slots;
    float *logits; /* sampling scratch, [n_vocab] */
    zq_context **batch_ctxs;
    int32_t *batch_ids;
    int *batch_slots;
    bool *admitted; /* [n_slots]: the slot received a job in this step */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a job was queued or stopping was set */
    pthread_cond_t idle; /* the queue and all slots became empty */
    zq_job **queue;      /* ring of queue_cap + n_slots jobs, see zq_sched_submit */
    int queue_head, queue_count;
    int n_active;
    bool draining, stopping;
};

static void publish_load(zq_sched *s)
{
    if (s->metrics)
        zq_metrics_set_load(s->metrics, s->n_active, s->queue_count);
}

/* Ends the job of a slot and frees the slot; called by the scheduler thread only. */
static void release_slot(zq_sched *s, slot *sl, zq_finish finish, const char *error)
{
    if (finish == ZQ_FINISH_CANCELLED && s->metrics)
        zq_metrics_cancelled(s->metrics);
    zq_job_finish(sl->job, finish, error);
    if (sl->job->output_masked && s->metrics)
        zq_metrics_filter_hit(s->metrics, false);
    zq_job_release(sl->job);
    zq_sampler_free(sl->sampler);
    sl->sampler = NULL;
    sl->job = NULL;
    sl->next = -1;
    pthread_mutex_lock(&s->lock);
    s->n_active--;
    publish_load(s);
    pthread_mutex_unlock(&s->lock);
}

static void mask_special(const zq_sched *s, float *logits, bool mask_sep)
{
    const int32_t banned[] = {s->special.pad, s->special.unk, s->special.cls, s->special.mask,
                              mask_sep ? s->special.sep : -1};
    for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
        if (banned[i] >= 0 && banned[i] < s->n_vocab)
            logits[banned[i]] = -INFINITY;
}

/* Samples the slot's next token from the logits of its context and emits its text. */
static void sample_slot(zq_sched *s, slot *sl)
{
    const zq_job_params *p = &sl->job->params;
    memcpy(s->logits, zq_context_logits(sl->ctx), (size_t)s->n_vocab * sizeof(float));
    mask_special(s, s->logits, p->ignore_eos);
    const int window = p->sampling.repeat_last_n;
    const int hist = sl->n_ids < window ? sl->n_ids : window;
    const int32_t id = zq_sampler_sample(sl->sampler, s->logits, sl->ids + sl->n_ids - hist, hist);

    if (sl->n_generated == 0 && s->metrics)
        zq_metrics_first_token(s->metrics, zq_now() - p->t_arrival);
    if (id < 0 || id == s->special.sep) {
        release_slot(s, sl, ZQ_FINISH_STOP, NULL);
        return;
    }

    char piece[320];
    const size_t len = zq_detok_stream_push(&sl->detok, id, piece, sizeof piece);
    sl->ids[sl->n_ids++] = id;
    sl->n_generated++;
    zq_job_emit(sl->job, piece, len, sl->n_generated);
    if (s->metrics)
        zq_metrics_add_tokens(s->metrics, 1);

    if (sl->n_generated >= p->max_new_tokens || sl->n_ids >= zq_context_size(sl->ctx))
        release_slot(s, sl, ZQ_FINISH_LENGTH, NULL);
    else
        sl->next = id;
}

/* Prefills a newly admitted job and samples its first token. */
static void start_slot(zq_sched *s, slot *sl)
{
    const zq_job_params *p = &sl->job->params;
    if (zq_job_cancel_requested(sl->job)) {
        release_slot(s, sl, ZQ_FINISH_CANCELLED, NULL);
        return;
    }
    zq_status st = zq_sampler_create(&p->sampling, s->n_vocab, &sl->sampler);
    if (st == ZQ_OK && p->n_prompt > zq_context_size(sl->ctx))
        st = ZQ_ERR_CONTEXT_FULL;
    if (st == ZQ_OK) {
        zq_context_truncate(sl->ctx, 0);
        st = zq_context_eval(sl->ctx, p->prompt, p->n_prompt, NULL);
    }
    if (st != ZQ_OK) {
        char error[200];
        snprintf(error, sizeof error, "prefill failed: %s", zq_last_error());
        release_slot(s, sl, ZQ_FINISH_ERROR, error);
        return;
    }
    memcpy(sl->ids, p->prompt, (size_t)p->n_prompt * sizeof(int32_t));
    sl->n_ids = p->n_prompt;
    sl->n_generated = 0;
    zq_detok_stream_init(&sl->detok, s->model);
    sample_slot(s, sl);
}

/* Decodes one token for every slot that has one, as one batch, and samples them all. */
static void decode_step(zq_sched *s)
{
    int n = 0;
    for (int i = 0; i < s->params.n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job || sl->next < 0)
            continue;
        if (zq_job_cancel_requested(sl->job)) {
            release_slot(s, sl, ZQ_FINISH_CANCELLED, NULL);
            continue;
        }
        s->batch_ctxs[n] = sl->ctx;
        s->batch_ids[n] = sl->next;
        s->batch_slots[n] = i;
        n++;
    }
    if (n == 0)
        return;

    const zq_status st = zq_decode_batch(s->batch_ctxs, s->batch_ids, n);
    if (s->metrics)
        zq_metrics_batch(s->metrics, n);
    for (int k = 0; k < n; k++) {
        slot *sl = &s->slots[s->batch_slots[k]];
        if (st != ZQ_OK) {
            char error[200];
            snprintf(error, sizeof error, "decode failed: %s", zq_last_error());
            release_slot(s, sl, ZQ_FINISH_ERROR, error);
            continue;
        }
        sl->next = -1;
        sample_slot(s, sl);
    }
}

/* Jobs that were submitted to a free slot wait in the queue until the next step admits
 * them, so the ring has room for those as well as for queue_cap jobs that wait for a busy
 * slot. */
static int queue_ring_size(const zq_sched *s)
{
    return s->params.queue_cap + s->params.n_slots;
}

/* Moves queued jobs into free slots and marks them in s->admitted; the caller holds the
 * lock. */
static void admit_locked(zq_sched *s)
{
    memset(s->admitted, 0, (size_t)s->params.n_slots * sizeof *s->admitted);
    for (int i = 0; i < s->params.n_slots && s->queue_count > 0; i++) {
        if (s->slots[i].job)
            continue;
        s->slots[i].job = s->queue[s->queue_head];
        s->queue_head = (s->queue_head + 1) % queue_ring_size(s);
        s->queue_count--;
        s->n_active++;
        s->admitted[i] = true;
    }
    publish_load(s);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *scheduler_main(void *arg)
{
    zq_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->stopping && s->queue_count == 0 && s->n_active == 0) {
            pthread_cond_broadcast(&s->idle);
            pthread_cond_wait(&s->wake, &s->lock);
        }
        if (s->stopping) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        admit_locked(s);
        pthread_mutex_unlock(&s->lock);

        for (int i = 0; i < s->params.n_slots; i++)
            if (s->admitted[i])
                start_slot(s, &s->slots[i]);
        decode_step(s);
        if (s->params.step_delay_ms > 0)
            sleep_ms(s->params.step_delay_ms);
    }
    return NULL;
}

static bool alloc_slots(zq_sched *s, char *err, size_t err_cap)
{
    const int n_slots = s->params.n_slots;
    s->slots = calloc((size_t)n_slots, sizeof *s->slots);
    s->batch_ctxs = calloc((size_t)n_slots, sizeof *s->batch_ctxs);
    s->batch_ids = calloc((size_t)n_slots, sizeof *s->batch_ids);
    s->batch_slots = calloc((size_t)n_slots, sizeof *s->batch_slots);
    s->admitted = calloc((size_t)n_slots, sizeof *s->admitted);
    s->logits = malloc((size_t)s->n_vocab * sizeof(float));
    s->queue = calloc((size_t)queue_ring_size(s), sizeof *s->queue);
    if (!s->slots || !s->batch_ctxs || !s->batch_ids || !s->batch_slots || !s->admitted ||
        !s->logits ||
        !s->queue) {
        snprintf(err, err_cap, "out of memory for %d slots", n_slots);
        return false;
    }
    const zq_context_params cp = {
        .n_ctx = s->params.n_ctx, .n_threads = s->params.n_threads, .kv_type = s->params.kv_type};
    for (int i = 0; i < n_slots; i++) {
        slot *sl = &s->slots[i];
        sl->next = -1;
        if (zq_context_create(s->model, &cp, &sl->ctx) != ZQ_OK) {
            snprintf(err, err_cap, "cannot create context %d of %d: %s", i + 1, n_slots,
                     zq_last_error());
            return false;
        }
        sl->ids = malloc((size_t)zq_context_size(sl->ctx) * sizeof(int32_t));
        if (!sl->ids) {
            snprintf(err, err_cap, "out of memory for %d slots", n_slots);
            return false;
        }
    }
    return true;
}

zq_sched *zq_sched_create(const zq_model *model, const zq_sched_params *params,
                          zq_metrics *metrics, char *err, size_t err_cap)
{
    if (params->n_slots < 1 || params->queue_cap < 1) {
        snprintf(err, err_cap, "need at least one slot and a queue of at least one job");
        return NULL;
    }
    zq_sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    s->model = model;
    s->params = *params;
    s->metrics = metrics;
    s->n_vocab = zq_model_hparams(model)->n_vocab;
    s->special = *zq_model_special(model);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->idle, NULL);
    if (!alloc_slots(s, err, err_cap)) {
        zq_sched_free(s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, scheduler_main, s) != 0) {
        snprintf(err, err_cap, "cannot start the scheduler thread");
        zq_sched_free(s);
        return NULL;
    }
    s->thread_started = true;
    return s;
}

zq_submit_result zq_sched_submit(zq_sched *s, zq_job *job)
{
    pthread_mutex_lock(&s->lock);
    zq_submit_result result = ZQ_SUBMIT_OK;
    /* A job is counted against the slots and the queue together: comparing queue_count
     * alone with queue_cap would reject jobs that arrive while slots are free but the
     * scheduler thread has not yet moved the earlier jobs into them. */
    const int taken = s->n_active + s->queue_count;
    if (s->draining || s->stopping) {
        result = ZQ_SUBMIT_CLOSED;
    } else if (taken >= s->params.n_slots + s->params.queue_cap) {
        result = ZQ_SUBMIT_QUEUE_FULL;
    } else {
        zq_job_retain(job);
        s->queue[(s->queue_head + s->queue_count) % queue_ring_size(s)] = job;
        s->queue_count++;
        publish_load(s);
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    return result;
}

bool zq_sched_drain(zq_sched *s, double timeout_s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    const double whole = floor(timeout_s);
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((timeout_s - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    s->draining = true;
    bool idle = true;
    while (s->queue_count > 0 || s->n_active > 0) {
        if (pthread_cond_timedwait(&s->idle, &s->lock, &deadline) != 0) {
            idle = s->queue_count == 0 && s->n_active == 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return idle;
}

void zq_sched_stop(zq_sched *s)
{
    pthread_mutex_lock(&s->lock);
    const bool join = s->thread_started && !s->stopping;
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (join)
        pthread_join(s->thread, NULL);

    /* The thread has ended, so the queue and the slots belong to this thread now. */
    const char *reason = "the server is shutting down";
    pthread_mutex_lock(&s->lock);
    for (int i = 0; s->queue && i < s->queue_count; i++) {
        zq_job *job = s->queue[(s->queue_head + i) % queue_ring_size(s)];
        zq_job_finish(job, ZQ_FINISH_ERROR, reason);
        zq_job_release(job);
    }
    s->queue_count = 0;
    for (int i = 0; s->slots && i < s->params.n_slots; i++) {
        slot *sl = &s->slots[i];
        if (sl->job) {
            zq_job_finish(sl->job, ZQ_FINISH_ERROR, reason);
            zq_job_release(sl->job);
            sl->job = NULL;
        }
    }
    s->n_active = 0;
    publish_load(s);
    pthread_mutex_unlock(&s->lock);
}

void zq_sched_free(zq_sched *s)
{
    if (!s)
        return;
    zq_sched_stop(s);
    for (int i = 0; s->slots && i < s->params.n_slots; i++) {
        slot *sl = &s->slots[i];
        zq_sampler_free(sl->sampler);
        zq_context_free(sl->ctx);
        free(sl->ids);
    }
    free(s->slots);
    free(s->batch_ctxs);
    free(s->batch_ids);
    free(s->batch_slots);
    free(s->admitted);
    free(s->logits);
    free(s->queue);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int zq_sched_n_ctx(const zq_sched *s)
{
    return zq_context_size(s->slots[0].ctx);
}
