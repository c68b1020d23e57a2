/*
 * _ringbuf: a multi-producer multi-consumer ring of byte messages in shared memory.
 *
 * This is the C half of multitask._core._ring (read that module's docstring for the data flow).
 * The Python class ``Ring`` subclasses ``RingBase`` defined here, so put/get are called without
 * an intermediate Python frame.
 *
 * Layout of the mapping (one memfd, shared by every process that uses the ring):
 *
 *     [ header: RB_HDR_SIZE bytes ][ data: capacity bytes, used as a circular buffer ]
 *
 * Every record in the data area is  [u32 length][u32 flags][payload, padded to 8 bytes].
 * Records may wrap around the end of the data area (the payload is then copied in two parts);
 * the 8-byte header never wraps because capacity and every record size are multiples of 8.
 *
 * Positions (head, tail) are monotonically increasing byte counters; the offset in the data area is
 * position % capacity.  used = tail - head.
 *
 * Crash safety ("no wedging, no torn messages"):
 *   - the header holds a process-shared *robust* pthread mutex.  If its owner dies, the next locker
 *     gets EOWNERDEAD, replays the journal (below) and marks the mutex consistent.
 *   - a put copies the record into free space first (invisible to readers), then commits.  A get
 *     copies the record out first, then commits.  A commit changes several words (tail+nwritten
 *     [+unfinished], or head+nread), so it is journalled: the new values are written to j_*, then
 *     `jop` is set with a release store (the single store that makes the commit durable), then the
 *     real fields are updated and `jop` is cleared.  Recovery redoes a journalled commit; a process
 *     that died before setting `jop` left nothing visible.  A get that empties the ring then
 *     "rewinds" it, a journalled commit of its own: head = tail = the next multiple of capacity,
 *     so the next record starts at offset 0, on warm pages (see rb_punch_idle).
 *   - wake-ups use raw futex(2) (non-private, the words live in shared memory) on sequence words,
 *     with waiter counts so a put/get issues FUTEX_WAKE only when someone waits.  "Not empty"
 *     wakes one consumer per committed message (a consumer leaving messages behind, or giving
 *     up because its ring object closes, passes the wake-up on); "not full" and "joined" wake
 *     all, since a woken producer whose record does not fit must not hide the room from others.  A waiter killed
 *     while sleeping leaves its count incremented: harmless, it only costs later puts/gets a wake
 *     syscall that wakes nobody.
 *   - nothing is ever waited for while holding the mutex, so a dead or stopped waiter cannot
 *     block anyone.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RB_MAGIC 0x31304e4752544d4dULL /* "MMTRGN01" */
#define RB_HDR_SIZE 4096
#define RB_MAX_PIDS 128
#define REC_HDR 8
#define FLAG_SPILL 1u
#define ALIGN8(n) (((uint64_t)(n) + 7u) & ~(uint64_t)7u)
/* How long a get() on an empty ring polls before it sleeps (see rb_spin).  100 us covers a pool
 * worker's turnaround between tasks and a parent's between results on a loaded 2-core machine. */
#define DEFAULT_SPIN_NS 100000
#define PUNCH_MIN_CAPACITY (16u << 20)
/* The first capacity/PUNCH_WARM_DIV bytes of a punched ring are never punched: a ring that empties
 * is rewound to offset 0 (rb_commit_get), so a stream whose backlog stays small writes and reads
 * there on pages both sides have mapped already -- no page allocation, no fault, no punch. */
#define PUNCH_WARM_DIV 8

enum { JOP_NONE = 0, JOP_PUT = 1, JOP_GET = 2, JOP_REWIND = 3 };
enum { GATE_FREE = 0, GATE_FOLLOWER = 1, GATE_LEADER = 2 };

typedef struct {
    int32_t pid;
    int32_t count;
} rb_pidslot;

typedef struct {
    uint64_t magic;
    uint64_t capacity;
    uint64_t maxitems;
    uint32_t joinable;
    uint32_t pid_overflow;    /* more attached processes than slots: never treat anyone as last */
    char token[16];
    pthread_mutex_t mutex;
    /* committed state, protected by mutex */
    uint64_t head;
    uint64_t tail;
    uint64_t nwritten;
    uint64_t nread;
    int64_t unfinished;       /* JoinableQueue: puts not yet matched by task_done */
    uint64_t dirty_hi;        /* highest data offset written since the last punch (a hint) */
    /* journal (see top comment) */
    uint32_t jop;
    uint32_t _pad0;
    uint64_t j_pos;
    uint64_t j_count;
    int64_t j_unfinished;
    /* attach bookkeeping, protected by mutex */
    uint32_t pending_attach;  /* pickled/forked but not yet attached */
    uint32_t recoveries;      /* times a locker found the owner dead (EOWNERDEAD) */
    rb_pidslot pids[RB_MAX_PIDS];
    /* futex words on their own cache line: touched without the mutex */
    uint32_t _align[16] __attribute__((aligned(64)));
    uint32_t ne_seq, ne_waiters;      /* "not empty" */
    uint32_t nf_seq, nf_waiters;      /* "not full" */
    uint32_t join_seq, join_waiters;  /* unfinished reached zero */
} rb_header;

_Static_assert(sizeof(rb_header) <= RB_HDR_SIZE, "header too large");

typedef struct {
    PyObject_HEAD
    char *base;          /* the mapping, NULL when unmapped */
    size_t maplen;
    rb_header *hdr;
    char *data;
    uint64_t cap;
    uint64_t spill_threshold;   /* payloads longer than this are spilled */
    int closing;
    int busy;            /* calls of this object currently running (threads) */
    int64_t spin_ns;     /* a get on an empty ring polls this long before sleeping (0 = never) */
    int64_t spin_budget; /* what the next get polls: spin_ns, cut while polling keeps failing */
    /* the reader gate (process-local; see "leader/follower" below) */
    pthread_mutex_t gate_mu;
    int gate_ready;      /* gate_mu initialised */
    int gate;            /* GATE_FREE, GATE_FOLLOWER or GATE_LEADER: who may take messages */
    int fol_sleeping;    /* the follower sleeps on the ring's ne_seq ... */
    int fol_counted;     /* ... counted in ne_waiters (only while nobody leads) */
    int heir;            /* a caller waits for the follower to hand it the gate */
    int handed;          /* ... and the follower did (the gate is GATE_LEADER on its behalf) */
    uint32_t gate_word;  /* private futex word the heir sleeps on, bumped when it is handed */
    unsigned long leader_tid;  /* thread that holds the gate as leader (0: none) */
    PyObject *weakreflist;
    PyObject *dict;
} RingObject;

static PyObject *ClosedError = NULL;   /* set from Python: multitask._core._errors.ClosedError */

/* Holding back Ctrl-C while taken messages are settled (see _lead_get and _defer_note).
 * Protected by the GIL. */
static int defer_depth = 0;
static int defer_caught = 0;

/* ------------------------------------------------------------------ helpers */

static inline long futex_wait(uint32_t *addr, uint32_t val, const struct timespec *rel)
{
    return syscall(SYS_futex, addr, FUTEX_WAIT, val, rel, NULL, 0);
}

static inline long futex_wait_private(uint32_t *addr, uint32_t val)
{
    return syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static inline void futex_wake_private(uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void futex_wake_all(uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline void futex_wake_n(uint32_t *addr, uint64_t n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, n > INT_MAX ? INT_MAX : (int)n, NULL, NULL, 0);
}

/* Wake every waiter: used where a waiter may not be able to proceed after all (a producer woken
 * for room its record does not fit in must not hide the room from a smaller one). */
static inline void wake_if_waiting(uint32_t *seq, uint32_t *waiters)
{
    if (__atomic_load_n(waiters, __ATOMIC_SEQ_CST) > 0) {
        __atomic_add_fetch(seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(seq);
    }
}

/* Wake at most `n` waiters ("not empty": one consumer per committed message, no thundering herd
 * when many consumers wait).  Correct because every woken consumer either takes at least one
 * message or passes the wake-up on (get_many_impl wakes one more waiter when it leaves messages
 * behind, rb_wait passes it on when it gives up because its ring object is closing). */
static inline void wake_n_if_waiting(uint32_t *seq, uint32_t *waiters, uint64_t n)
{
    if (n && __atomic_load_n(waiters, __ATOMIC_SEQ_CST) > 0) {
        __atomic_add_fetch(seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_n(seq, n);
    }
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* timeout object -> deadline in ns (-1 = forever, 0 = non-blocking).  Returns -2 on error. */
static int64_t parse_deadline(PyObject *timeout, int *nonblock)
{
    *nonblock = 0;
    if (timeout == NULL || timeout == Py_None)
        return -1;
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -2;
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -2;
    }
    if (t < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number or None");
        return -2;
    }
    if (t == 0) {
        *nonblock = 1;
        return 0;
    }
    if (t > 1e9)
        return -1;
    return now_ns() + (int64_t)(t * 1e9);
}

/* journal replay after EOWNERDEAD: redo a commit whose journal entry was made durable. */
static void rb_recover(rb_header *h)
{
    uint32_t op = __atomic_load_n(&h->jop, __ATOMIC_ACQUIRE);
    if (op == JOP_PUT) {
        h->tail = h->j_pos;
        h->nwritten = h->j_count;
        h->unfinished = h->j_unfinished;
    } else if (op == JOP_GET) {
        h->head = h->j_pos;
        h->nread = h->j_count;
    } else if (op == JOP_REWIND) {
        h->head = h->j_pos;
        h->tail = h->j_pos;
    }
    __atomic_store_n(&h->jop, JOP_NONE, __ATOMIC_RELEASE);
}

static int check_open(RingObject *self)
{
    if (self->base == NULL || self->closing) {
        PyErr_SetString(ClosedError ? ClosedError : PyExc_ValueError, "ring is closed");
        return -1;
    }
    return 0;
}

/* Lock the ring.  GIL held on entry and exit; released only while blocking. */
static int rb_lock(RingObject *self)
{
    rb_header *h = self->hdr;
    int r = pthread_mutex_trylock(&h->mutex);
    if (r == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        r = pthread_mutex_lock(&h->mutex);
        Py_END_ALLOW_THREADS
    }
    if (r == EOWNERDEAD) {
        /* the previous owner died inside a critical section: finish or drop its commit */
        rb_recover(h);
        h->recoveries++;
        pthread_mutex_consistent(&h->mutex);
        r = 0;
    }
    if (r != 0) {
        errno = r;
        if (r == EDEADLK)
            PyErr_SetString(PyExc_RuntimeError,
                            "ring used re-entrantly from inside its own critical section");
        else
            PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static inline void rb_unlock(RingObject *self)
{
    pthread_mutex_unlock(&self->hdr->mutex);
}

/*
 * Wait on a futex word.  Called with the mutex held; drops it, sleeps, and re-locks.
 * Returns 0 (locked again, re-check the condition), 1 (timed out, still locked),
 * or -1 (exception set, NOT locked).
 */
static int rb_wait(RingObject *self, uint32_t *seq, uint32_t *waiters, int64_t deadline)
{
    struct timespec ts, *pts = NULL;
    if (deadline >= 0) {
        int64_t rem = deadline - now_ns();
        if (rem <= 0)
            return 1;
        ts.tv_sec = rem / 1000000000LL;
        ts.tv_nsec = rem % 1000000000LL;
        pts = &ts;
    }
    __atomic_add_fetch(waiters, 1, __ATOMIC_SEQ_CST);
    uint32_t v = __atomic_load_n(seq, __ATOMIC_SEQ_CST);
    rb_unlock(self);
    long r;
    int err;
    Py_BEGIN_ALLOW_THREADS
    r = futex_wait(seq, v, pts);
    err = errno;
    Py_END_ALLOW_THREADS
    __atomic_sub_fetch(waiters, 1, __ATOMIC_SEQ_CST);
    if (r == -1 && err == EINTR) {
        /* run Python signal handlers: Ctrl-C in a blocked get() raises KeyboardInterrupt */
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    if (self->closing) {
        /* we may have been handed a wake-up meant for a consumer/producer: pass it on */
        wake_n_if_waiting(seq, waiters, 1);
        PyErr_SetString(ClosedError ? ClosedError : PyExc_ValueError,
                        "ring was closed while waiting");
        return -1;
    }
    if (rb_lock(self) < 0)
        return -1;
    return 0;
}

/*
 * Before sleeping in get(): poll for a new message for up to ``spin_ns``, without the mutex and
 * without the GIL.  A futex wake-up costs a context switch on both sides (25-50 us on a busy
 * virtual machine); a consumer that expects an answer soon (a pool worker between tasks, a
 * caller waiting for its result) gets it in about a microsecond instead.  The poll yields the
 * CPU on every round, so a spinning consumer never keeps a runnable process off its core.
 *
 * The budget adapts (spin_adapt): a consumer whose waits are long (a parent collecting results
 * of 1 ms tasks, a worker fed in bursts) stops polling after a few misses, because every miss
 * is CPU taken from the processes doing the work on a small machine; one wait short enough to
 * have been caught by polling restores the full budget.
 * Called with the mutex held; returns with it held (0) or with an exception set, unlocked (-1).
 */
static int rb_spin(RingObject *self, int64_t deadline)
{
    rb_header *h = self->hdr;
    uint64_t seen = __atomic_load_n(&h->nwritten, __ATOMIC_ACQUIRE);
    int64_t until = now_ns() + self->spin_budget;
    if (deadline >= 0 && deadline < until)
        until = deadline;
    rb_unlock(self);
    Py_BEGIN_ALLOW_THREADS
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(&h->nwritten, __ATOMIC_ACQUIRE) != seen || self->closing)
            break;
        if ((i & 15) == 15 && now_ns() >= until)
            break;
        sched_yield();
    }
    Py_END_ALLOW_THREADS
    /* a Ctrl-C that came while polling must not wait for the futex sleep to end */
    if (PyErr_CheckSignals() < 0)
        return -1;
    return rb_lock(self);
}

/* After a get that had to wait `waited` ns: keep polling next time if polling (nearly) would
 * have caught the message, else poll a quarter as long (to nothing after a few long waits).
 * "Nearly": a wait that ended in a futex wake-up includes the wake-up's own latency (tens of
 * us on a loaded VM), and a consumer that stops polling makes its producer's answers slower,
 * hence its own waits longer -- a strict test would lock itself out of polling. */
static inline void spin_adapt(RingObject *self, int64_t waited)
{
    if (waited <= 4 * self->spin_ns)
        self->spin_budget = self->spin_ns;
    else
        self->spin_budget = self->spin_budget >= 8000 ? self->spin_budget / 4 : 0;
}

static void rb_copy_in(RingObject *self, uint64_t pos, const char *src, uint64_t n)
{
    uint64_t off = pos % self->cap;
    uint64_t first = self->cap - off;
    if (first >= n) {
        memcpy(self->data + off, src, n);
    } else {
        memcpy(self->data + off, src, first);
        memcpy(self->data, src + first, n - first);
    }
}

static void rb_copy_out(RingObject *self, uint64_t pos, char *dst, uint64_t n)
{
    uint64_t off = pos % self->cap;
    uint64_t first = self->cap - off;
    if (first >= n) {
        memcpy(dst, self->data + off, n);
    } else {
        memcpy(dst, self->data + off, first);
        memcpy(dst + first, self->data, n - first);
    }
}

/* Write one record at `pos` if it fits given `pending` already-written-but-uncommitted bytes and
 * `pending_items` records.  Returns the record size, or 0 if it does not fit. */
static uint64_t rb_try_write(RingObject *self, uint64_t pos, uint64_t pending_items,
                             const char *p, uint64_t n, uint32_t flags)
{
    rb_header *h = self->hdr;
    uint64_t need = REC_HDR + ALIGN8(n);
    if ((pos - h->head) + need > self->cap)
        return 0;
    if (h->maxitems && (h->nwritten + pending_items - h->nread) >= h->maxitems)
        return 0;
    uint32_t rh[2] = {(uint32_t)n, flags};
    uint64_t end = pos % self->cap + need;
    if (end > h->dirty_hi)
        h->dirty_hi = end > self->cap ? self->cap : end;   /* a wrapped record: everything */
    memcpy(self->data + (pos % self->cap), rh, REC_HDR);
    if (n)
        rb_copy_in(self, pos + REC_HDR, p, n);
    return need;
}

static void rb_commit_put(rb_header *h, uint64_t new_tail, uint64_t k)
{
    h->j_pos = new_tail;
    h->j_count = h->nwritten + k;
    h->j_unfinished = h->unfinished + (h->joinable ? (int64_t)k : 0);
    __atomic_store_n(&h->jop, JOP_PUT, __ATOMIC_RELEASE);  /* the commit point */
    h->tail = h->j_pos;
    h->nwritten = h->j_count;
    h->unfinished = h->j_unfinished;
    __atomic_store_n(&h->jop, JOP_NONE, __ATOMIC_RELEASE);
}

/* Return the pages of a big ring to the OS once it is empty (an unbounded queue uses a large,
 * sparse ring; without this every page would stay resident once the ring has wrapped), except the
 * warm first capacity/PUNCH_WARM_DIV bytes, where the rewound ring writes next.  Only when empty:
 * punching pages behind the reader while a backlog streams through made every record land on
 * fresh pages (tmpfs allocation + a fault on each side, ~1 ms per MiB here, against ~0.03 ms for
 * the copy), so a streaming ring now keeps its pages until it drains.  Called locked. */
static void rb_punch_idle(RingObject *self)
{
    rb_header *h = self->hdr;
    uint64_t warm = self->cap / PUNCH_WARM_DIV;
    if (self->cap < PUNCH_MIN_CAPACITY || h->dirty_hi <= warm)
        return;
    uint64_t hi = (h->dirty_hi + 4095) & ~(uint64_t)4095;
    if (hi > self->cap)
        hi = self->cap;
    madvise(self->data + warm, hi - warm, MADV_REMOVE);
    h->dirty_hi = 0;
}

static void rb_commit_get(RingObject *self, uint64_t new_head, uint64_t k)
{
    rb_header *h = self->hdr;
    h->j_pos = new_head;
    h->j_count = h->nread + k;
    __atomic_store_n(&h->jop, JOP_GET, __ATOMIC_RELEASE);  /* the commit point */
    h->head = h->j_pos;
    h->nread = h->j_count;
    __atomic_store_n(&h->jop, JOP_NONE, __ATOMIC_RELEASE);
    if (new_head != h->tail)
        return;
    uint64_t off = new_head % self->cap;
    if (off != 0) {
        /* Empty: rewind, so the next record starts at offset 0 (warm pages, hot cache lines)
         * instead of wherever this one ended.  Nothing but positions refer to the data area. */
        h->j_pos = new_head - off + self->cap;
        __atomic_store_n(&h->jop, JOP_REWIND, __ATOMIC_RELEASE);
        h->head = h->j_pos;
        h->tail = h->j_pos;
        __atomic_store_n(&h->jop, JOP_NONE, __ATOMIC_RELEASE);
    }
    rb_punch_idle(self);
}

static inline int bytes_view(PyObject *o, Py_buffer *view, const char **p, Py_ssize_t *n)
{
    if (PyBytes_CheckExact(o)) {
        *p = PyBytes_AS_STRING(o);
        *n = PyBytes_GET_SIZE(o);
        view->obj = NULL;
        return 0;
    }
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) < 0)
        return -1;
    *p = view->buf;
    *n = view->len;
    return 0;
}

/* busy accounting so that close() from one thread never unmaps under another */
static void rb_do_unmap(RingObject *self)
{
    if (self->base) {
        munmap(self->base, self->maplen);
        self->base = NULL;
        self->hdr = NULL;
        self->data = NULL;
    }
}

static inline int enter(RingObject *self)
{
    if (check_open(self) < 0)
        return -1;
    self->busy++;
    return 0;
}

static inline void leave(RingObject *self)
{
    self->busy--;
    if (self->closing && self->busy == 0)
        rb_do_unmap(self);
}

/* ------------------------------------------------------------------ put */

static PyObject *spill_out(RingObject *self, PyObject *data)
{
    PyObject *ref = PyObject_CallMethod((PyObject *)self, "_spill_out", "O", data);
    if (ref && !PyBytes_CheckExact(ref)) {
        Py_DECREF(ref);
        PyErr_SetString(PyExc_TypeError, "_spill_out must return bytes");
        return NULL;
    }
    return ref;
}

static void spill_abort(RingObject *self, PyObject *ref)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_spill_abort", "O", ref);
    if (r == NULL)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(r);
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

static PyObject *put_impl(RingObject *self, PyObject *data, PyObject *timeout)
{
    int nonblock;
    int64_t deadline = parse_deadline(timeout, &nonblock);
    if (deadline == -2)
        return NULL;
    Py_buffer view;
    const char *p;
    Py_ssize_t n;
    if (bytes_view(data, &view, &p, &n) < 0)
        return NULL;
    PyObject *ref = NULL;
    uint32_t flags = 0;
    if ((uint64_t)n > self->spill_threshold) {
        if (view.obj)
            PyBuffer_Release(&view);
        view.obj = NULL;
        ref = spill_out(self, data);
        if (ref == NULL)
            return NULL;
        p = PyBytes_AS_STRING(ref);
        n = PyBytes_GET_SIZE(ref);
        flags = FLAG_SPILL;
    }
    rb_header *h = self->hdr;
    int ok = 0;
    if (rb_lock(self) < 0)
        goto fail;
    for (;;) {
        uint64_t sz = rb_try_write(self, h->tail, 0, p, (uint64_t)n, flags);
        if (sz) {
            rb_commit_put(h, h->tail + sz, 1);
            ok = 1;
            break;
        }
        if (nonblock)
            break;
        int w = rb_wait(self, &h->nf_seq, &h->nf_waiters, deadline);
        if (w < 0)
            goto fail;
        if (w == 1)
            break;
    }
    rb_unlock(self);
    if (view.obj)
        PyBuffer_Release(&view);
    if (ok) {
        wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, 1);
    } else if (ref) {
        spill_abort(self, ref);
    }
    Py_XDECREF(ref);
    return PyBool_FromLong(ok);
fail:
    if (view.obj)
        PyBuffer_Release(&view);
    if (ref)
        spill_abort(self, ref);
    Py_XDECREF(ref);
    return NULL;
}

static PyObject *Ring_put(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "timeout", NULL};
    PyObject *data, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:put", kwlist, &data, &timeout))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = put_impl(self, data, timeout);
    leave(self);
    return r;
}

static PyObject *put_many_impl(RingObject *self, PyObject *items, PyObject *timeout)
{
    int nonblock;
    int64_t deadline = parse_deadline(timeout, &nonblock);
    if (deadline == -2)
        return NULL;
    PyObject *seq = PySequence_Fast(items, "put_many() expects a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq);
    PyObject **src = PySequence_Fast_ITEMS(seq);
    PyObject *work = NULL;      /* a copy of the items with large ones replaced by spill refs */
    unsigned char *spilled = NULL;
    Py_ssize_t i;
    /* pre-pass: spill the large items before taking the lock */
    for (i = 0; i < total; i++) {
        PyObject *o = src[i];
        Py_ssize_t n;
        if (PyBytes_CheckExact(o)) {
            n = PyBytes_GET_SIZE(o);
        } else {
            Py_buffer v;
            if (PyObject_GetBuffer(o, &v, PyBUF_SIMPLE) < 0)
                goto fail;
            n = v.len;
            PyBuffer_Release(&v);
        }
        if ((uint64_t)n > self->spill_threshold) {
            if (work == NULL) {
                work = PyList_GetSlice(seq, 0, total);
                spilled = PyMem_Calloc((size_t)total, 1);
                if (work == NULL || spilled == NULL) {
                    PyErr_NoMemory();
                    goto fail;
                }
            }
            PyObject *ref = spill_out(self, o);
            if (ref == NULL)
                goto fail;
            PyList_SET_ITEM(work, i, ref);  /* steals ref */
            Py_DECREF(o);                   /* the slice's reference */
            spilled[i] = 1;
        }
    }
    PyObject **it = work ? PySequence_Fast_ITEMS(work) : src;
    rb_header *h = self->hdr;
    Py_ssize_t done = 0;
    uint64_t last_k = 0;   /* committed in the last round and not yet announced */
    if (rb_lock(self) < 0)
        goto fail;
    while (done < total) {
        uint64_t pos = h->tail;
        uint64_t k = 0;
        while (done < total) {
            Py_buffer v;
            const char *p;
            Py_ssize_t n;
            if (bytes_view(it[done], &v, &p, &n) < 0) {
                if (k)
                    rb_commit_put(h, pos, k);
                rb_unlock(self);
                wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, k);
                goto fail_spills;
            }
            uint64_t sz = rb_try_write(self, pos, k, p, (uint64_t)n,
                                       (spilled && spilled[done]) ? FLAG_SPILL : 0);
            if (v.obj)
                PyBuffer_Release(&v);
            if (!sz)
                break;
            pos += sz;
            k++;
            done++;
        }
        if (k) {
            /* one commit for the whole batch: all of it becomes visible at once */
            rb_commit_put(h, pos, k);
            if (done < total) {
                /* let consumers drain before we wait for space */
                rb_unlock(self);
                wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, k);
                if (rb_lock(self) < 0)
                    goto fail_spills;
                continue;
            }
            last_k = k;
            break;
        }
        if (nonblock)
            break;
        int w = rb_wait(self, &h->nf_seq, &h->nf_waiters, deadline);
        if (w < 0)
            goto fail_spills;
        if (w == 1)
            break;
    }
    rb_unlock(self);
    wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, last_k);
    if (spilled) {
        for (i = done; i < total; i++)
            if (spilled[i])
                spill_abort(self, it[i]);
    }
    PyMem_Free(spilled);
    Py_XDECREF(work);
    Py_DECREF(seq);
    return PyLong_FromSsize_t(done);
fail_spills:
    /* the error came while waiting: items [done:] were not put */
    if (spilled) {
        for (i = done; i < total; i++)
            if (spilled[i])
                spill_abort(self, it[i]);
        PyMem_Free(spilled);
        spilled = NULL;
    }
fail:
    if (spilled) {
        PyObject **w = PySequence_Fast_ITEMS(work);
        for (i = 0; i < total; i++)
            if (spilled[i])
                spill_abort(self, w[i]);
    }
    PyMem_Free(spilled);
    Py_XDECREF(work);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Ring_put_many(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"items", "timeout", NULL};
    PyObject *items, *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:put_many", kwlist, &items, &timeout))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = put_many_impl(self, items, timeout);
    leave(self);
    return r;
}

/* ------------------------------------------------------------------ get */

/*
 * Take up to `max` records into `out` (a list).  Spill references are noted in *spills (indices
 * into out, PyMem-allocated).  Returns number taken, or -1 on error (nothing committed).
 */
static Py_ssize_t rb_take(RingObject *self, PyObject *out, Py_ssize_t max,
                          Py_ssize_t **spills, Py_ssize_t *nspills)
{
    rb_header *h = self->hdr;
    uint64_t avail = h->nwritten - h->nread;
    uint64_t pos = h->head;
    Py_ssize_t k = 0;
    Py_ssize_t base = PyList_GET_SIZE(out);
    while ((uint64_t)k < avail && k < max) {
        uint32_t rh[2];
        memcpy(rh, self->data + (pos % self->cap), REC_HDR);
        PyObject *b = PyBytes_FromStringAndSize(NULL, rh[0]);
        if (b == NULL)
            goto error;
        if (rh[0])
            rb_copy_out(self, pos + REC_HDR, PyBytes_AS_STRING(b), rh[0]);
        if (PyList_Append(out, b) < 0) {
            Py_DECREF(b);
            goto error;
        }
        Py_DECREF(b);
        if (rh[1] & FLAG_SPILL) {
            Py_ssize_t *s = PyMem_Realloc(*spills, sizeof(Py_ssize_t) * (size_t)(*nspills + 1));
            if (s == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            *spills = s;
            s[(*nspills)++] = base + k;
        }
        pos += REC_HDR + ALIGN8(rh[0]);
        k++;
    }
    if (k)
        rb_commit_get(self, pos, (uint64_t)k);
    return k;
error:
    PyList_SetSlice(out, base, PyList_GET_SIZE(out), NULL);
    return -1;
}

/* After unlock: replace spill references by their data (mapped and unlinked by _spill_in). */
static int resolve_spills(RingObject *self, PyObject *out, Py_ssize_t *spills, Py_ssize_t nspills)
{
    int rc = 0;
    for (Py_ssize_t i = 0; i < nspills; i++) {
        PyObject *ref = PyList_GET_ITEM(out, spills[i]);
        PyObject *val = PyObject_CallMethod((PyObject *)self, "_spill_in", "O", ref);
        if (val == NULL) {
            /* keep going so every other spilled segment is still released */
            if (rc == 0) {
                rc = -1;
                continue;
            }
            PyErr_WriteUnraisable((PyObject *)self);
            continue;
        }
        PyList_SetItem(out, spills[i], val);
    }
    return rc;
}

/* get_many_impl(..., defer): with defer, a call that takes messages also starts holding back
 * Ctrl-C (defer_depth++) before anything else can run -- in particular before the spill hooks
 * run Python code, where a KeyboardInterrupt would lose what was taken.  The caller ends it with
 * _defer_exit() once the messages are settled. */
static PyObject *get_many_impl_d(RingObject *self, Py_ssize_t max, PyObject *timeout, int single,
                                 int defer);

static PyObject *get_many_impl(RingObject *self, Py_ssize_t max, PyObject *timeout, int single)
{
    return get_many_impl_d(self, max, timeout, single, 0);
}

static PyObject *get_many_impl_d(RingObject *self, Py_ssize_t max, PyObject *timeout, int single,
                                 int defer)
{
    int nonblock;
    int64_t deadline = parse_deadline(timeout, &nonblock);
    if (deadline == -2)
        return NULL;
    /* allocated before locking: creating GC-tracked objects may run the GC (and finalizers) */
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t *spills = NULL, nspills = 0;
    rb_header *h = self->hdr;
    Py_ssize_t k = 0;
    uint64_t left = 0;
    int spun = 0;
    int64_t wait_start = -1;
    if (rb_lock(self) < 0)
        goto fail;
    for (;;) {
        k = rb_take(self, out, max, &spills, &nspills);
        if (k < 0) {
            rb_unlock(self);
            goto fail;
        }
        if (k > 0 || nonblock)
            break;
        if (wait_start < 0)
            wait_start = now_ns();
        if (!spun && self->spin_ns > 0) {
            spun = 1;
            if (self->spin_budget > 0) {
                if (rb_spin(self, deadline) < 0)
                    goto fail;
                continue;
            }
        }
        int w = rb_wait(self, &h->ne_seq, &h->ne_waiters, deadline);
        if (w < 0)
            goto fail;
        if (w == 1)
            break;
    }
    if (k > 0)
        left = h->nwritten - h->nread;
    rb_unlock(self);
    if (k > 0 && defer)
        defer_depth++;
    if (wait_start >= 0 && self->spin_ns > 0)
        spin_adapt(self, k > 0 ? now_ns() - wait_start : INT64_MAX);
    if (k > 0) {
        wake_if_waiting(&h->nf_seq, &h->nf_waiters);
        /* messages left behind: hand the wake-up on to another waiting consumer */
        if (left)
            wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, 1);
    }
    if (nspills) {
        int rc = resolve_spills(self, out, spills, nspills);
        PyMem_Free(spills);
        spills = NULL;
        if (rc < 0)
            goto fail;
    }
    if (single) {
        PyObject *r = k > 0 ? PyList_GET_ITEM(out, 0) : Py_None;
        Py_INCREF(r);
        Py_DECREF(out);
        return r;
    }
    return out;
fail:
    if (k > 0 && defer)
        defer_depth--;
    PyMem_Free(spills);
    Py_DECREF(out);
    return NULL;
}

static PyObject *Ring_get(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:get", kwlist, &timeout))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = get_many_impl(self, 1, timeout, 1);
    leave(self);
    return r;
}

static PyObject *Ring_get_many(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_items", "timeout", NULL};
    Py_ssize_t max;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|O:get_many", kwlist, &max, &timeout))
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be >= 1");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    PyObject *r = get_many_impl(self, max, timeout, 0);
    leave(self);
    return r;
}


/* ------------------------------------------------------------------ leader/follower gate
 *
 * Within one process, several threads may consume a ring whose messages must be handled one
 * batch at a time and in ring order (a pool's result ring: a worker's results must be settled
 * before the "worker died" message that follows them).  A background *follower* thread reads
 * whenever nobody else does; a thread waiting for something only the ring can bring (a caller
 * blocked in AsyncResult.get() or IMapIterator.next()) becomes the *leader* and reads the ring
 * itself, so the answer need not be handed from the follower to it -- on a loaded virtual
 * machine every such hand-off (a futex wake-up, then the GIL) costs tens of microseconds.
 *
 * The gate says who may take messages: FREE, FOLLOWER (taking, or settling what it took, until
 * _follow_done) or LEADER (between _lead_acquire and _lead_release).  A caller that finds the
 * follower in the middle of a batch becomes the *heir*: the follower hands the gate to it
 * when the batch is done instead of reading on.  A caller that finds another leader (or heir)
 * does not wait for the gate: it waits for its result, which that reader delivers.
 *
 * While nobody leads, the follower sleeps on the ring's "not empty" futex and is counted in
 * its waiters, so producers wake it.  While a caller leads (or waits to), the follower stays
 * asleep there *uncounted*: producers do not wake it, and the leader's reads cost no wake-up
 * anywhere.  _lead_release counts it again (and wakes it if messages are waiting), without a
 * system call in the common case of an empty ring.  A wake-up a producer meant for a leader
 * sleeping in get() may still reach the follower (both sleep on ne_seq): the follower passes
 * it on.  Lock order: the ring's mutex, then gate_mu.
 */

static inline void follower_count_locked(RingObject *self)
{
    if (self->fol_sleeping && !self->fol_counted) {
        __atomic_add_fetch(&self->hdr->ne_waiters, 1, __ATOMIC_SEQ_CST);
        self->fol_counted = 1;
    }
}

static inline void follower_uncount_locked(RingObject *self)
{
    if (self->fol_counted) {
        __atomic_sub_fetch(&self->hdr->ne_waiters, 1, __ATOMIC_SEQ_CST);
        self->fol_counted = 0;
    }
}

/* The follower is done with the gate: hand it to a waiting heir, else free it.  Returns 1 if
 * the heir must be woken (after gate_mu is released). */
static int follower_release_locked(RingObject *self)
{
    if (self->gate != GATE_FOLLOWER)
        return 0;
    if (self->heir && !self->handed) {
        self->gate = GATE_LEADER;
        self->leader_tid = 0;      /* the heir's, once it has woken and taken it */
        self->handed = 1;
        __atomic_add_fetch(&self->gate_word, 1, __ATOMIC_SEQ_CST);
        return 1;
    }
    self->gate = GATE_FREE;
    return 0;
}

/* Give the gate up if thread `tid` leads (a no-op otherwise: a release that follows a failed
 * or interrupted acquire must not free another thread's gate). */
static void leader_release(RingObject *self, unsigned long tid)
{
    rb_header *h = self->hdr;
    int wake = 0;
    pthread_mutex_lock(&self->gate_mu);
    if (self->gate == GATE_LEADER && self->leader_tid == tid && !self->handed) {
        self->gate = GATE_FREE;
        self->leader_tid = 0;
        follower_count_locked(self);
        wake = self->fol_sleeping && h != NULL &&
               __atomic_load_n(&h->nwritten, __ATOMIC_SEQ_CST) !=
               __atomic_load_n(&h->nread, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&self->gate_mu);
    if (wake)   /* messages left behind: the follower takes over now */
        wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, 1);
}

/* _lead_acquire(timeout=None) -> bool: take the gate as leader.  If the follower is settling a
 * batch, wait (polling, then sleeping; at most `timeout` seconds) for it to hand the gate over.
 * False at once if another thread leads or waits to. */
static PyObject *Ring_lead_acquire(RingObject *self, PyObject *args)
{
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "|O:_lead_acquire", &timeout))
        return NULL;
    int nonblock;
    int64_t deadline = parse_deadline(timeout, &nonblock);
    if (deadline == -2)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *res = NULL;
    pthread_mutex_lock(&self->gate_mu);
    if (self->gate == GATE_FREE) {
        self->gate = GATE_LEADER;
        self->leader_tid = PyThread_get_thread_ident();
        follower_uncount_locked(self);
        pthread_mutex_unlock(&self->gate_mu);
        res = Py_NewRef(Py_True);
        goto done;
    }
    if (self->gate == GATE_LEADER || self->heir || nonblock) {
        pthread_mutex_unlock(&self->gate_mu);
        res = Py_NewRef(Py_False);
        goto done;
    }
    self->heir = 1;
    pthread_mutex_unlock(&self->gate_mu);
    unsigned long me = PyThread_get_thread_ident();
    int64_t spin_until = self->spin_ns > 0 ? now_ns() + self->spin_budget : 0;
    for (;;) {
        int got = 0, gave_up = 0, interrupted = 0;
        uint32_t w = __atomic_load_n(&self->gate_word, __ATOMIC_SEQ_CST);
        Py_BEGIN_ALLOW_THREADS
        /* poll first: the follower's batch is usually short */
        for (unsigned i = 0; !__atomic_load_n(&self->handed, __ATOMIC_SEQ_CST); i++) {
            if (self->closing || ((i & 15) == 15 && now_ns() >= spin_until))
                break;
            sched_yield();
        }
        if (!__atomic_load_n(&self->handed, __ATOMIC_SEQ_CST) && !self->closing) {
            struct timespec ts, *pts = NULL;
            if (deadline >= 0) {
                int64_t rem = deadline - now_ns();
                if (rem < 0)
                    rem = 0;
                ts.tv_sec = rem / 1000000000LL;
                ts.tv_nsec = rem % 1000000000LL;
                pts = &ts;
            }
            if (syscall(SYS_futex, &self->gate_word, FUTEX_WAIT_PRIVATE, w, pts, NULL, 0) == -1
                && errno == EINTR)
                interrupted = 1;
        }
        pthread_mutex_lock(&self->gate_mu);
        if (self->handed) {
            self->handed = 0;
            self->heir = 0;
            self->leader_tid = me;
            follower_uncount_locked(self);
            got = 1;
        } else if (self->closing || (deadline >= 0 && now_ns() >= deadline)) {
            self->heir = 0;
            gave_up = 1;
        }
        pthread_mutex_unlock(&self->gate_mu);
        Py_END_ALLOW_THREADS
        if (got) {
            res = Py_NewRef(Py_True);
            break;
        }
        if (gave_up) {
            if (self->closing)
                PyErr_SetString(ClosedError ? ClosedError : PyExc_ValueError,
                                "ring was closed while waiting");
            else
                res = Py_NewRef(Py_False);
            break;
        }
        if (interrupted && PyErr_CheckSignals() < 0) {
            /* Ctrl-C while waiting to lead: withdraw (or give back what we were just handed) */
            pthread_mutex_lock(&self->gate_mu);
            int handed = self->handed;
            self->handed = 0;
            self->heir = 0;
            if (handed)
                self->leader_tid = me;
            pthread_mutex_unlock(&self->gate_mu);
            if (handed)
                leader_release(self, me);
            break;
        }
    }
done:
    leave(self);
    return res;
}

/* _lead_release(): give the gate up if the calling thread leads; otherwise do nothing. */
static PyObject *Ring_lead_release(RingObject *self, PyObject *unused)
{
    if (self->gate_ready && self->hdr != NULL)
        leader_release(self, PyThread_get_thread_ident());
    Py_RETURN_NONE;
}

static PyObject *Ring_follow_done(RingObject *self, PyObject *unused)
{
    if (self->gate_ready) {
        pthread_mutex_lock(&self->gate_mu);
        int wake = follower_release_locked(self);
        pthread_mutex_unlock(&self->gate_mu);
        if (wake)
            futex_wake_private(&self->gate_word);
    }
    Py_RETURN_NONE;
}

/* _follow_get(max_items): block until there are messages and nobody leads or waits to, take up
 * to max_items, and return them holding the gate (call _follow_done after settling them).
 * Raises ClosedError when this ring object is closed. */
static PyObject *Ring_follow_get(RingObject *self, PyObject *arg)
{
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be >= 1");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    rb_header *h = self->hdr;
    PyObject *out = NULL;
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        goto done;
    for (;;) {
        if (self->closing) {
            PyErr_SetString(ClosedError ? ClosedError : PyExc_ValueError,
                            "ring was closed while waiting");
            goto done;
        }
        uint32_t v;
        int wake_heir = 0, sleep = 1;
        pthread_mutex_lock(&self->gate_mu);
        if (self->gate == GATE_FREE && !self->heir) {
            self->gate = GATE_FOLLOWER;
            pthread_mutex_unlock(&self->gate_mu);
            out = get_many_impl(self, max, zero, 0);      /* take what is there, never wait */
            if (out != NULL && PyList_GET_SIZE(out) > 0)
                break;                                    /* returned holding the gate */
            Py_CLEAR(out);
            /* nothing there (or an error): give the gate back, then sleep counted -- under
             * the ring's mutex, so no commit can slip between the check and the count */
            if (PyErr_Occurred() || rb_lock(self) < 0) {
                pthread_mutex_lock(&self->gate_mu);
                wake_heir = follower_release_locked(self);
                pthread_mutex_unlock(&self->gate_mu);
                if (wake_heir)
                    futex_wake_private(&self->gate_word);
                goto done;
            }
            pthread_mutex_lock(&self->gate_mu);
            wake_heir = follower_release_locked(self);
            self->fol_sleeping = 1;
            if (self->gate == GATE_FREE)
                follower_count_locked(self);
            v = __atomic_load_n(&h->ne_seq, __ATOMIC_SEQ_CST);
            sleep = h->nwritten == h->nread;
            pthread_mutex_unlock(&self->gate_mu);
            rb_unlock(self);
            if (wake_heir)
                futex_wake_private(&self->gate_word);
        } else {
            /* a leader reads (or a caller waits to): sleep uncounted until it is done.  The
             * producer's wake-up that woke us may have been meant for a leader asleep in get():
             * pass it on first, then read the futex word (reading it before would make our own
             * pass-on wake us again, in a loop, until the leader has run). */
            self->fol_sleeping = 1;
            pthread_mutex_unlock(&self->gate_mu);
            wake_n_if_waiting(&h->ne_seq, &h->ne_waiters, 1);
            v = __atomic_load_n(&h->ne_seq, __ATOMIC_SEQ_CST);
            pthread_mutex_lock(&self->gate_mu);
            sleep = self->gate != GATE_FREE || self->heir;   /* still led: else look again */
            pthread_mutex_unlock(&self->gate_mu);
        }
        if (sleep) {
            Py_BEGIN_ALLOW_THREADS
            futex_wait(&h->ne_seq, v, NULL);
            Py_END_ALLOW_THREADS
        }
        pthread_mutex_lock(&self->gate_mu);
        follower_uncount_locked(self);
        self->fol_sleeping = 0;
        pthread_mutex_unlock(&self->gate_mu);
    }
done:
    Py_XDECREF(zero);
    leave(self);
    return out;
}

/* A fork child has no leader and no follower (only the forking thread exists there). */
static PyObject *Ring_gate_reset(RingObject *self, PyObject *unused)
{
    if (self->gate_ready) {
        pthread_mutex_init(&self->gate_mu, NULL);
        self->gate = GATE_FREE;
        self->fol_sleeping = self->fol_counted = self->heir = self->handed = 0;
        self->leader_tid = 0;
    }
    Py_RETURN_NONE;
}

/* _lead_get(max_items, timeout=None): get_many for a leader.  Interruptible while it waits; once
 * it has taken messages, Ctrl-C is held back (module-level _defer_exit ends that). */
static PyObject *Ring_lead_get(RingObject *self, PyObject *args)
{
    Py_ssize_t max;
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "n|O:_lead_get", &max, &timeout))
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be >= 1");
        return NULL;
    }
    if (enter(self) < 0)
        return NULL;
    PyObject *r = get_many_impl_d(self, max, timeout, 0, 1);
    leave(self);
    return r;
}

/* Remove every pending record without resolving spills: [(flags, bytes), ...].  Used by the last
 * closer to release what nobody will read. */
static PyObject *Ring_drain_raw(RingObject *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    PyObject *res = NULL;
    if (out == NULL)
        goto done;
    if (rb_lock(self) < 0)
        goto done;
    rb_header *h = self->hdr;
    uint64_t pos = h->head;
    uint64_t avail = h->nwritten - h->nread;
    for (uint64_t i = 0; i < avail; i++) {
        uint32_t rh[2];
        memcpy(rh, self->data + (pos % self->cap), REC_HDR);
        PyObject *b = PyBytes_FromStringAndSize(NULL, rh[0]);
        if (b == NULL) {
            rb_unlock(self);
            goto done;
        }
        if (rh[0])
            rb_copy_out(self, pos + REC_HDR, PyBytes_AS_STRING(b), rh[0]);
        PyObject *t = Py_BuildValue("(IN)", rh[1], b);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            rb_unlock(self);
            goto done;
        }
        Py_DECREF(t);
        pos += REC_HDR + ALIGN8(rh[0]);
    }
    if (avail)
        rb_commit_get(self, pos, avail);
    rb_unlock(self);
    wake_if_waiting(&h->nf_seq, &h->nf_waiters);
    res = out;
    out = NULL;
done:
    Py_XDECREF(out);
    leave(self);
    return res;
}

/* ------------------------------------------------------------------ counters, joinable */

static PyObject *Ring_qsize(RingObject *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    if (rb_lock(self) == 0) {
        uint64_t n = self->hdr->nwritten - self->hdr->nread;
        rb_unlock(self);
        r = PyLong_FromUnsignedLongLong(n);
    }
    leave(self);
    return r;
}

static PyObject *Ring_task_done(RingObject *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    if (rb_lock(self) == 0) {
        rb_header *h = self->hdr;
        if (h->unfinished <= 0) {
            rb_unlock(self);
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        } else {
            /* a single store: no journal needed */
            int64_t left = --h->unfinished;
            rb_unlock(self);
            if (left == 0)
                wake_if_waiting(&h->join_seq, &h->join_waiters);
            r = Py_NewRef(Py_None);
        }
    }
    leave(self);
    return r;
}

static PyObject *Ring_join_wait(RingObject *self, PyObject *args)
{
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "|O:_join_wait", &timeout))
        return NULL;
    int nonblock;
    int64_t deadline = parse_deadline(timeout, &nonblock);
    if (deadline == -2)
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    rb_header *h = self->hdr;
    if (rb_lock(self) < 0)
        goto out;
    int done = 0;
    for (;;) {
        if (h->unfinished <= 0) {
            done = 1;
            break;
        }
        if (nonblock)
            break;
        int w = rb_wait(self, &h->join_seq, &h->join_waiters, deadline);
        if (w < 0)
            goto out;
        if (w == 1)
            break;
    }
    rb_unlock(self);
    r = PyBool_FromLong(done);
out:
    leave(self);
    return r;
}

static PyObject *Ring_unfinished(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLongLong(__atomic_load_n(&self->hdr->unfinished, __ATOMIC_ACQUIRE));
}

static PyObject *Ring_write_count(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->hdr->nwritten, __ATOMIC_ACQUIRE));
}

static PyObject *Ring_read_count(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->hdr->nread, __ATOMIC_ACQUIRE));
}

static PyObject *Ring_recoveries(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->hdr->recoveries, __ATOMIC_ACQUIRE));
}

static PyObject *Ring_capacity(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->cap);
}

static PyObject *Ring_maxitems(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->hdr->maxitems);
}

static PyObject *Ring_token(RingObject *self, void *closure)
{
    if (check_open(self) < 0)
        return NULL;
    return PyUnicode_FromStringAndSize(self->hdr->token, strnlen(self->hdr->token, 16));
}

static PyObject *Ring_spill_threshold(RingObject *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->spill_threshold);
}

static PyObject *Ring_get_spin_ns(RingObject *self, void *closure)
{
    return PyLong_FromLongLong(self->spin_ns);
}

static PyObject *Ring_get_spin_budget(RingObject *self, void *closure)
{
    return PyLong_FromLongLong(self->spin_budget);
}

static int Ring_set_spin_ns(RingObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyLong_Check(value) || PyBool_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "spin_ns must be an int");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 100000000LL) {
        PyErr_Format(PyExc_ValueError, "spin_ns must be between 0 and 10**8 (0.1 s), got %lld", v);
        return -1;
    }
    self->spin_ns = v;
    self->spin_budget = v;
    return 0;
}

static PyObject *Ring_closed(RingObject *self, void *closure)
{
    return PyBool_FromLong(self->base == NULL || self->closing);
}

/* ------------------------------------------------------------------ mapping, attach bookkeeping */

static int init_header(rb_header *h, uint64_t cap, uint64_t maxitems, int joinable,
                       const char *token, Py_ssize_t toklen)
{
    memset(h, 0, sizeof(*h));
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a))
        return -1;
    int r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!r)
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r)   /* error-checking: re-locking from a finalizer raises instead of deadlocking */
        r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (!r)
        r = pthread_mutex_init(&h->mutex, &a);
    pthread_mutexattr_destroy(&a);
    if (r) {
        errno = r;
        return -1;
    }
    h->capacity = cap;
    h->maxitems = maxitems;
    h->joinable = joinable ? 1 : 0;
    memcpy(h->token, token, (size_t)(toklen < 16 ? toklen : 15));
    __atomic_store_n(&h->magic, RB_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static void set_threshold(RingObject *self)
{
    /* big messages go to their own segment: keeps the ring for many small ones */
    self->spill_threshold = self->cap / 4 - REC_HDR;
}

/* _map(fd, create, capacity, maxitems, joinable, token) */
static PyObject *Ring_map(RingObject *self, PyObject *args)
{
    int fd, create, joinable;
    unsigned long long cap, maxitems;
    const char *token;
    Py_ssize_t toklen;
    if (!PyArg_ParseTuple(args, "ipKKps#:_map", &fd, &create, &cap, &maxitems, &joinable,
                          &token, &toklen))
        return NULL;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ring already mapped");
        return NULL;
    }
    self->spin_ns = self->spin_budget = DEFAULT_SPIN_NS;
    if (!self->gate_ready) {
        if (pthread_mutex_init(&self->gate_mu, NULL) != 0) {
            PyErr_SetString(PyExc_OSError, "cannot initialise the reader gate");
            return NULL;
        }
        self->gate_ready = 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (!create) {
        if ((size_t)st.st_size < RB_HDR_SIZE) {
            PyErr_SetString(PyExc_ValueError, "not a multitask ring (too small)");
            return NULL;
        }
        rb_header tmp;
        if (pread(fd, &tmp, sizeof(tmp), 0) != (ssize_t)sizeof(tmp))
            return PyErr_SetFromErrno(PyExc_OSError);
        if (tmp.magic != RB_MAGIC || strncmp(tmp.token, token, 16) != 0) {
            PyErr_SetString(PyExc_ValueError, "not the expected multitask ring (bad magic/token)");
            return NULL;
        }
        cap = tmp.capacity;
    }
    size_t len = RB_HDR_SIZE + (size_t)cap;
    if ((size_t)st.st_size < len) {
        PyErr_SetString(PyExc_ValueError, "ring file is smaller than its capacity");
        return NULL;
    }
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    rb_header *h = (rb_header *)m;
    if (create && init_header(h, cap, maxitems, joinable, token, toklen) < 0) {
        munmap(m, len);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->base = m;
    self->maplen = len;
    self->hdr = h;
    self->data = (char *)m + RB_HDR_SIZE;
    self->cap = cap;
    self->closing = 0;
    set_threshold(self);
    Py_RETURN_NONE;
}

static int pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* _attach(pending_delta): count this process as a user (and adjust the pending-attach count). */
static PyObject *Ring_attach(RingObject *self, PyObject *args)
{
    int pending_delta;
    if (!PyArg_ParseTuple(args, "i:_attach", &pending_delta))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    if (rb_lock(self) == 0) {
        rb_header *h = self->hdr;
        pid_t me = getpid();
        int slot = -1, free_slot = -1;
        for (int i = 0; i < RB_MAX_PIDS; i++) {
            if (h->pids[i].pid == me) {
                slot = i;
                break;
            }
            if (free_slot < 0 && (h->pids[i].pid == 0 || !pid_alive(h->pids[i].pid)))
                free_slot = i;
        }
        if (slot < 0 && free_slot >= 0) {
            slot = free_slot;
            h->pids[slot].pid = me;
            h->pids[slot].count = 0;
        }
        if (slot >= 0)
            h->pids[slot].count++;
        else
            h->pid_overflow = 1;
        if (pending_delta < 0 && h->pending_attach > 0)
            h->pending_attach--;
        rb_unlock(self);
        r = Py_NewRef(Py_None);
    }
    leave(self);
    return r;
}

/* _pending(delta): someone pickled (+1) or forked with this ring; the receiver attaches (-1). */
static PyObject *Ring_pending(RingObject *self, PyObject *args)
{
    int delta;
    if (!PyArg_ParseTuple(args, "i:_pending", &delta))
        return NULL;
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    if (rb_lock(self) == 0) {
        rb_header *h = self->hdr;
        if (delta > 0)
            h->pending_attach += (uint32_t)delta;
        else if (h->pending_attach >= (uint32_t)(-delta))
            h->pending_attach -= (uint32_t)(-delta);
        rb_unlock(self);
        r = Py_NewRef(Py_None);
    }
    leave(self);
    return r;
}

/* _detach() -> bool: stop counting this process; True if no other live process may use the ring
 * (so the caller should release what is left in it). */
static PyObject *Ring_detach(RingObject *self, PyObject *unused)
{
    if (enter(self) < 0)
        return NULL;
    PyObject *r = NULL;
    if (rb_lock(self) == 0) {
        rb_header *h = self->hdr;
        pid_t me = getpid();
        int others = 0;
        for (int i = 0; i < RB_MAX_PIDS; i++) {
            pid_t p = h->pids[i].pid;
            if (p == 0)
                continue;
            if (p == me) {
                if (--h->pids[i].count <= 0)
                    h->pids[i].pid = 0;
                else
                    others = 1;   /* another Ring object in this process still uses it */
            } else if (pid_alive(p)) {
                others = 1;
            } else {
                h->pids[i].pid = 0;
            }
        }
        int last = !others && !h->pid_overflow && h->pending_attach == 0;
        rb_unlock(self);
        r = PyBool_FromLong(last);
    }
    leave(self);
    return r;
}

/* _unmap(): unmap now, or as soon as the calls running in other threads return. */
static PyObject *Ring_unmap(RingObject *self, PyObject *unused)
{
    if (self->base == NULL)
        Py_RETURN_NONE;
    if (self->busy > 0) {
        /* wake our own waiters so they notice; other processes just re-check and sleep again */
        rb_header *h = self->hdr;
        self->closing = 1;
        __atomic_add_fetch(&h->ne_seq, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&h->nf_seq, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&h->join_seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_all(&h->ne_seq);
        futex_wake_all(&h->nf_seq);
        futex_wake_all(&h->join_seq);
        __atomic_add_fetch(&self->gate_word, 1, __ATOMIC_SEQ_CST);
        futex_wake_private(&self->gate_word);   /* an heir waiting in _lead_acquire */
    } else {
        self->closing = 1;
        rb_do_unmap(self);
    }
    Py_RETURN_NONE;
}

static PyObject *mod_set_closed_error(PyObject *mod, PyObject *cls)
{
    Py_XSETREF(ClosedError, Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ type */

static int Ring_traverse(RingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Ring_clear(RingObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void Ring_dealloc(RingObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    rb_do_unmap(self);
    Ring_clear(self);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Ring_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Ring_put, METH_VARARGS | METH_KEYWORDS,
     "put(data, timeout=None) -> bool"},
    {"put_many", (PyCFunction)(void (*)(void))Ring_put_many, METH_VARARGS | METH_KEYWORDS,
     "put_many(items, timeout=None) -> int"},
    {"get", (PyCFunction)(void (*)(void))Ring_get, METH_VARARGS | METH_KEYWORDS,
     "get(timeout=None) -> bytes | memoryview | None"},
    {"get_many", (PyCFunction)(void (*)(void))Ring_get_many, METH_VARARGS | METH_KEYWORDS,
     "get_many(max_items, timeout=None) -> list"},
    {"qsize", (PyCFunction)Ring_qsize, METH_NOARGS, "exact number of messages in the ring"},
    {"_lead_acquire", (PyCFunction)Ring_lead_acquire, METH_VARARGS, NULL},
    {"_lead_get", (PyCFunction)Ring_lead_get, METH_VARARGS, NULL},
    {"_lead_release", (PyCFunction)Ring_lead_release, METH_NOARGS, NULL},
    {"_follow_get", (PyCFunction)Ring_follow_get, METH_O, NULL},
    {"_follow_done", (PyCFunction)Ring_follow_done, METH_NOARGS, NULL},
    {"_gate_reset", (PyCFunction)Ring_gate_reset, METH_NOARGS, NULL},
    {"_task_done", (PyCFunction)Ring_task_done, METH_NOARGS, NULL},
    {"_join_wait", (PyCFunction)Ring_join_wait, METH_VARARGS, NULL},
    {"_drain_raw", (PyCFunction)Ring_drain_raw, METH_NOARGS, NULL},
    {"_map", (PyCFunction)Ring_map, METH_VARARGS, NULL},
    {"_attach", (PyCFunction)Ring_attach, METH_VARARGS, NULL},
    {"_pending", (PyCFunction)Ring_pending, METH_VARARGS, NULL},
    {"_detach", (PyCFunction)Ring_detach, METH_NOARGS, NULL},
    {"_unmap", (PyCFunction)Ring_unmap, METH_NOARGS, NULL},
    {NULL}};

static PyGetSetDef Ring_getset[] = {
    {"write_count", (getter)Ring_write_count, NULL, "messages ever committed by put", NULL},
    {"read_count", (getter)Ring_read_count, NULL, "messages ever removed by get", NULL},
    {"capacity", (getter)Ring_capacity, NULL, "data capacity in bytes", NULL},
    {"recoveries", (getter)Ring_recoveries, NULL,
     "times a process found the ring's lock owner dead and repaired the state", NULL},
    {"maxitems", (getter)Ring_maxitems, NULL, "max message count (0 = unbounded)", NULL},
    {"token", (getter)Ring_token, NULL, "random id of this ring", NULL},
    {"spill_threshold", (getter)Ring_spill_threshold, NULL, "larger payloads are spilled", NULL},
    {"closed", (getter)Ring_closed, NULL, "True after close()", NULL},
    {"spin_budget", (getter)Ring_get_spin_budget, NULL,
     "what the next get() on an empty ring polls, in ns: spin_ns, cut after long waits", NULL},
    {"spin_ns", (getter)Ring_get_spin_ns, (setter)Ring_set_spin_ns,
     "nanoseconds a get() on an empty ring polls before it sleeps, in this process (0 = never)",
     NULL},
    {"_unfinished", (getter)Ring_unfinished, NULL, NULL, NULL},
    {NULL}};

static PyMemberDef Ring_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(RingObject, weakreflist), READONLY},
    {"__dictoffset__", T_PYSSIZET, offsetof(RingObject, dict), READONLY},
    {NULL}};

static PyType_Slot Ring_slots[] = {
    {Py_tp_dealloc, Ring_dealloc},
    {Py_tp_traverse, Ring_traverse},
    {Py_tp_clear, Ring_clear},
    {Py_tp_methods, Ring_methods},
    {Py_tp_getset, Ring_getset},
    {Py_tp_members, Ring_members},
    {Py_tp_doc, "C base of multitask._core._ring.Ring (use Ring, not this)."},
    {0, NULL}};

static PyType_Spec Ring_spec = {
    .name = "multitask._core._ringbuf.RingBase",
    .basicsize = sizeof(RingObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Ring_slots,
};

/* Held-back Ctrl-C.  A region that must not be cut by KeyboardInterrupt (settling messages a
 * leader took; popping an item off an iterator's queue) runs between _defer_enter() (or a
 * _lead_get that took messages) and _defer_exit().  multitask's SIGINT handler asks
 * _defer_note() first: True means "inside such a region: noted, do not raise now"; the
 * outermost _defer_exit() then returns True and the caller raises KeyboardInterrupt. */
static PyObject *mod_defer_enter(PyObject *mod, PyObject *unused)
{
    defer_depth++;
    Py_RETURN_NONE;
}

static PyObject *mod_defer_exit(PyObject *mod, PyObject *unused)
{
    if (defer_depth > 0)
        defer_depth--;
    if (defer_depth == 0 && defer_caught) {
        defer_caught = 0;
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *mod_defer_note(PyObject *mod, PyObject *unused)
{
    if (defer_depth > 0) {
        defer_caught = 1;
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* A fork child starts outside any region (the forking thread may have been inside one). */
static PyObject *mod_defer_reset(PyObject *mod, PyObject *unused)
{
    defer_depth = 0;
    defer_caught = 0;
    Py_RETURN_NONE;
}

/* prctl(PR_SET_PDEATHSIG, sig): here rather than through ctypes, whose import (~3 ms) would sit
 * on the path of every pool's start.  Raises OSError on failure. */
static PyObject *mod_set_pdeathsig(PyObject *mod, PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if (prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0UL, 0UL, 0UL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* _pack_typed(list, tag) -> bytes | None: a list whose items are all exactly int (each fitting
 * in 64 bits) or all exactly float, as ``tag, typecode ('q'/'d'), 6 zero bytes, native items``
 * (multitask._core._serialize's typed-list message); None for anything else.  Checking and
 * packing in one pass here costs ~2 ns an item; the same in Python (a type check, then
 * array.array) costs more than pickling.  No Python code runs in the loop (exact types only), so
 * the list cannot change under it. */
static PyObject *mod_pack_typed(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_pack_typed(list, tag)");
        return NULL;
    }
    PyObject *lst = args[0];
    long tag = PyLong_AsLong(args[1]);
    if (tag == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(lst) || PyList_GET_SIZE(lst) == 0)
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(lst);
    PyObject *first = PyList_GET_ITEM(lst, 0);
    int is_int = PyLong_CheckExact(first);
    if (!is_int && !PyFloat_CheckExact(first))
        Py_RETURN_NONE;
    if (n > (PY_SSIZE_T_MAX - 8) / 8)
        Py_RETURN_NONE;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 8 + 8 * n);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    memset(p, 0, 8);
    p[0] = (char)tag;
    p[1] = is_int ? 'q' : 'd';
    p += 8;
    for (Py_ssize_t i = 0; i < n; i++, p += 8) {
        PyObject *item = PyList_GET_ITEM(lst, i);
        if (is_int) {
            if (!PyLong_CheckExact(item))
                goto other;
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow)
                goto other;
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(out);
                return NULL;
            }
            int64_t w = (int64_t)v;
            memcpy(p, &w, 8);
        } else {
            if (!PyFloat_CheckExact(item))
                goto other;
            double d = PyFloat_AS_DOUBLE(item);
            memcpy(p, &d, 8);
        }
    }
    return out;
other:
    Py_DECREF(out);
    Py_RETURN_NONE;
}

/* ---- arena segments (multitask._core._arena) ------------------------------------------------
 *
 * A reused shared-memory segment starts with a u32 state word: 0 free (its owner may fill it),
 * 1 busy (a message names it, or the receiver's objects still use it), 2 retired (unlinked by
 * its owner; a receiver drops its cached mapping).  Only the owner moves 0 -> 1 and 0 -> 2;
 * the receiver moves 1 -> 0, when the Lease below dies. */

/* _state(buffer, offset, expected, desired) -> int: compare-and-swap of the u32 at offset
 * (sequentially consistent); returns the value found (== expected on success).  expected < 0:
 * an atomic load only. */
static PyObject *mod_state(PyObject *mod, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t off;
    long expected, desired;
    if (!PyArg_ParseTuple(args, "w*nll", &b, &off, &expected, &desired))
        return NULL;
    if (off < 0 || off % 4 != 0 || off + 4 > b.len) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "state word outside the buffer or misaligned");
        return NULL;
    }
    uint32_t *w = (uint32_t *)((char *)b.buf + off);
    uint32_t found;
    if (expected < 0) {
        found = __atomic_load_n(w, __ATOMIC_SEQ_CST);
    } else {
        found = (uint32_t)expected;
        __atomic_compare_exchange_n(w, &found, (uint32_t)desired, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST);
    }
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(found);
}

/* _copy_into(dst, offset, src): memcpy src into dst at offset, without the GIL (100 MB takes
 * ~10 ms; other threads run meanwhile).  The caller owns the destination range exclusively. */
static PyObject *mod_copy_into(PyObject *mod, PyObject *args)
{
    Py_buffer d, s;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "w*ny*", &d, &off, &s))
        return NULL;
    if (off < 0 || s.len > d.len - off) {
        PyBuffer_Release(&d);
        PyBuffer_Release(&s);
        PyErr_SetString(PyExc_ValueError, "source does not fit the destination at offset");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    memcpy((char *)d.buf + off, s.buf, (size_t)s.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&d);
    PyBuffer_Release(&s);
    Py_RETURN_NONE;
}

/* Lease(mapping, state_offset): exports the whole writable mapping as a buffer.  The arrays a
 * receiver unpickles from an arena message view the mapping through one Lease; when the last of
 * them is gone the Lease dies and sets the segment's state word busy -> free, which hands the
 * segment back to its owner for the next message (no channel, no Python code in the way). */
typedef struct {
    PyObject_HEAD
    Py_buffer view;
    Py_ssize_t state_off;
} LeaseObject;

static int Lease_init(LeaseObject *self, PyObject *args, PyObject *kw)
{
    PyObject *obj;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "On", &obj, &off))
        return -1;
    if (self->view.obj != NULL) {
        PyErr_SetString(PyExc_TypeError, "Lease already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(obj, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (off < 0 || off % 4 != 0 || off + 4 > self->view.len) {
        PyBuffer_Release(&self->view);
        self->view.obj = NULL;
        PyErr_SetString(PyExc_ValueError, "state word outside the buffer or misaligned");
        return -1;
    }
    self->state_off = off;
    return 0;
}

static int Lease_getbuffer(LeaseObject *self, Py_buffer *view, int flags)
{
    if (self->view.obj == NULL) {
        PyErr_SetString(PyExc_ValueError, "Lease not initialised");
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, self->view.buf, self->view.len, 0, flags);
}

static void Lease_dealloc(LeaseObject *self)
{
    if (self->view.obj != NULL) {
        uint32_t *w = (uint32_t *)((char *)self->view.buf + self->state_off);
        uint32_t busy = 1;
        __atomic_compare_exchange_n(w, &busy, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        PyBuffer_Release(&self->view);
    }
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot Lease_slots[] = {
    {Py_tp_init, Lease_init},
    {Py_tp_dealloc, Lease_dealloc},
    {Py_bf_getbuffer, Lease_getbuffer},
    {Py_tp_doc, "Lease(mapping, state_offset): the receiver's hold on an arena segment."},
    {0, NULL}};

static PyType_Spec Lease_spec = {"multitask._core._ringbuf.Lease", sizeof(LeaseObject), 0,
                                 Py_TPFLAGS_DEFAULT, Lease_slots};

static PyMethodDef mod_methods[] = {
    {"_pack_typed", (PyCFunction)(void (*)(void))mod_pack_typed, METH_FASTCALL, NULL},
    {"_set_pdeathsig", mod_set_pdeathsig, METH_O, NULL},
    {"_set_closed_error", mod_set_closed_error, METH_O, NULL},
    {"_defer_enter", mod_defer_enter, METH_NOARGS, NULL},
    {"_defer_exit", mod_defer_exit, METH_NOARGS, NULL},
    {"_defer_note", mod_defer_note, METH_NOARGS, NULL},
    {"_defer_reset", mod_defer_reset, METH_NOARGS, NULL},
    {"_state", mod_state, METH_VARARGS, NULL},
    {"_copy_into", mod_copy_into, METH_VARARGS, NULL},
    {NULL}};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_ringbuf",
    "Shared-memory MPMC ring buffer (C half of multitask._core._ring).", -1, mod_methods};

PyMODINIT_FUNC PyInit__ringbuf(void)
{
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL)
        return NULL;
    PyObject *t = PyType_FromSpec(&Ring_spec);
    if (t == NULL || PyModule_AddObject(m, "RingBase", t) < 0) {
        Py_XDECREF(t);
        Py_DECREF(m);
        return NULL;
    }
    PyObject *lt = PyType_FromSpec(&Lease_spec);
    if (lt == NULL || PyModule_AddObject(m, "Lease", lt) < 0) {
        Py_XDECREF(lt);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "HEADER_SIZE", RB_HDR_SIZE);
    PyModule_AddIntConstant(m, "RECORD_HEADER", REC_HDR);
    PyModule_AddIntConstant(m, "FLAG_SPILL", FLAG_SPILL);
    return m;
}
