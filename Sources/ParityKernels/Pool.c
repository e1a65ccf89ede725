// A persistent pool of worker threads for the kernels' parallel loops (see ParityKernels.h).
//
// The forward pass runs a few hundred parallel loops per token, most of them short (a decode
// step's matrix-vector products take 0.05–1 ms each), so waking threads per loop costs a
// visible share. Workers here stay alive, spin briefly on a generation counter after each loop
// and only then sleep on a condition variable. Tasks are taken dynamically from a shared
// counter, so a core lost to another process slows a loop down instead of stalling it on its
// share. Which thread runs a task never changes what the task computes.

#include "ParityKernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PK_PAUSE() _mm_pause()
#else
#define PK_PAUSE() ((void)0)
#endif

enum { MAX_WORKERS = 63 };
static int spin_rounds = 2000;    // pauses before a waiting thread yields or sleeps

static struct {
    pthread_mutex_t dispatch;          // one loop at a time; others run inline
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    _Atomic unsigned generation;       // bumped once per loop
    _Atomic int sleepers;
    _Atomic int next;                  // next task index of the current loop
    _Atomic int busy;                  // workers still inside the current loop
    pk_task fn;
    void *ctx;
    int tasks;
    int workers;                       // threads besides the caller
} pool = {
    .dispatch = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int requested_threads = 0;

static void run_tasks(pk_task fn, void *ctx, int tasks) {
    for (;;) {
        int i = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (i >= tasks) return;
        fn(ctx, i);
    }
}

static void *worker(void *unused) {
    (void)unused;
    unsigned seen = 0;   // the generation before the first loop: a worker that starts late still sees it
    for (;;) {
        unsigned now;
        int spins = 0;
        while ((now = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen && spins < spin_rounds) {
            PK_PAUSE();
            spins++;
        }
        if (now == seen) {
            pthread_mutex_lock(&pool.sleep_lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while ((now = atomic_load(&pool.generation)) == seen) pthread_cond_wait(&pool.wake, &pool.sleep_lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep_lock);
        }
        seen = now;
        run_tasks(pool.fn, pool.ctx, pool.tasks);
        atomic_fetch_sub_explicit(&pool.busy, 1, memory_order_release);
    }
    return 0;
}

static void start_pool(void) {
    int threads = requested_threads;
    if (threads <= 0) {
        const char *env = getenv("QWEN_PARITY_THREADS");
        threads = env ? atoi(env) : 0;
    }
    if (threads <= 0) threads = 1;
    const char *spin = getenv("QWEN_PARITY_SPIN");
    if (spin) spin_rounds = atoi(spin);
    int workers = threads - 1 > MAX_WORKERS ? MAX_WORKERS : threads - 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int started = 0;
    for (int w = 0; w < workers; w++) {
        pthread_t thread;
        if (pthread_create(&thread, &attr, worker, 0) == 0) started++;
    }
    pthread_attr_destroy(&attr);
    pool.workers = started;
}

void pk_pool_start(int threads) {
    requested_threads = threads;
    pthread_once(&pool_once, start_pool);
}

int pk_pool_threads(void) {
    pthread_once(&pool_once, start_pool);
    return pool.workers + 1;
}

void pk_parallel(int tasks, pk_task fn, void *ctx) {
    if (tasks <= 0) return;
    pthread_once(&pool_once, start_pool);
    // A single task, no workers, or a loop already running (a nested or concurrent call): inline.
    if (tasks == 1 || pool.workers == 0 || pthread_mutex_trylock(&pool.dispatch) != 0) {
        for (int i = 0; i < tasks; i++) fn(ctx, i);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.tasks = tasks;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.busy, pool.workers, memory_order_relaxed);
    atomic_fetch_add(&pool.generation, 1);   // publishes fn, ctx, tasks, next, busy
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep_lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep_lock);
    }
    run_tasks(fn, ctx, tasks);
    // Every task has been taken; wait until the workers have left the loop (their writes are
    // then visible, and the next loop may reuse the shared fields).
    int spins = 0;
    while (atomic_load_explicit(&pool.busy, memory_order_acquire) > 0) {
        if (++spins < spin_rounds) PK_PAUSE(); else sched_yield();
    }
    pthread_mutex_unlock(&pool.dispatch);
}
