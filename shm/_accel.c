/* shm._accel: the C parts of shm (optional; shm works without them).
 *
 * Zone.fast_incr(key, delta, init, init_ttl, pid) is SharedDict.incr's common call whole: it
 * checks the arguments, hashes the key (zlib's crc32), takes the zone lock (a short spin of
 * sem_trywait, then None so that the Python code waits cooperatively), writes the owner pid,
 * does what Zone.incr does, clears the owner and posts the semaphore. Zone.incr(key, hash,
 * delta) runs under a lock the caller holds. It walks the key's hash chain, and when it finds
 * a live integer entry whose new value fits in 64 bits, stores it (one aligned 8-byte store,
 * as the Python code does), moves the entry to the LRU head and returns the new value. In
 * every other case (missing or expired key, a non-integer value, an overflow, a zone that
 * looks damaged) it changes nothing and returns None, and the Python code handles the call
 * (fast_incr: after releasing the lock; incr: under the caller's). The layout is shm/layout.py's:
 * node = hash-next u32, lru-prev u32, lru-next u32, hash u32, expires i64 (monotonic ms, 0 =
 * never), flags u32, value length u32, key length u16, value type u8, class u8; the key at +36;
 * the value 8-byte aligned after it.  Every offset read from the zone is checked against the
 * zone's size before use, so a damaged zone cannot make this code read or write outside it.
 *
 * Semaphore is the zone lock's POSIX semaphore, the subset of posix_ipc.Semaphore that shm uses
 * (create or open by name, acquire(0), release(), value, close()), raising posix_ipc's
 * exceptions. Its acquire(0) is a sem_trywait without releasing the GIL (it never blocks) and
 * without argument parsing: about a tenth of posix_ipc's cost per lock round trip.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>

/* shm/layout.py's values; tests/test_shm_accel.py checks each against layout.py */
#define NODE_SIZE 36
#define N_LPREV 4 /* node: lru-prev u32 */
#define N_LNEXT 8 /* node: lru-next u32 */
#define N_HASH 12 /* node: hash u32 */
#define N_EXPIRES 16 /* node: expires i64 */
#define N_KLEN 32 /* node: key length u16 */
#define N_VTYPE 34 /* node: value type u8 */
#define N_KEY 36 /* node: the key's bytes */
#define VALUE_PAD 43 /* the value is at (klen + VALUE_PAD) & ~7 */
#define VTYPE_INT 2 /* layout.py T_INT (structmember.h has its own T_INT) */
#define H_OWNER 48 /* owner pid u32 */
#define H_LRU 104 /* head u32, tail u32 */
#define SPIN 200 /* lock tries in fast_incr before leaving the wait to Python */
#define MAX_CHAIN 1000000 /* a longer chain is a damaged zone (a cycle): leave it to Python */
#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* the head of each type's PyTypeObject: its name, size and dealloc (T_dealloc) */
#define ACCEL_TYPE(T)                                                                         \
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shm._accel." #T, .tp_basicsize = sizeof(T),   \
    .tp_dealloc = (destructor)T##_dealloc

/* ------------------------------------------------------------------------------ Semaphore */

static PyObject *ExistentialError, *BusyError, *PermissionsError;

typedef struct {
    PyObject_HEAD
    sem_t *sem; /* NULL once closed */
    PyObject *name;
} Semaphore;

static PyObject *
sem_error(const char *name)
{
    int e = errno;
    if (e == EEXIST)
        PyErr_Format(ExistentialError, "A semaphore named %s already exists", name);
    else if (e == ENOENT)
        PyErr_Format(ExistentialError, "No semaphore exists with the specified name");
    else if (e == EACCES)
        PyErr_SetString(PermissionsError, "Permission denied");
    else
        PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
}

static int
Semaphore_init(Semaphore *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "flags", "mode", "initial_value", NULL};
    const char *name;
    int flags = 0;
    unsigned int mode = 0600, value = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|iII", kwlist, &name, &flags, &mode, &value))
        return -1;
    if (self->sem != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Semaphore already initialised");
        return -1;
    }
    flags &= O_CREAT | O_EXCL;
    sem_t *sem = flags & O_CREAT ? sem_open(name, flags, (mode_t)mode, value) : sem_open(name, 0);
    if (sem == SEM_FAILED) {
        sem_error(name);
        return -1;
    }
    self->sem = sem;
    self->name = PyUnicode_FromString(name);
    return self->name == NULL ? -1 : 0;
}

static void
Semaphore_dealloc(Semaphore *self)
{
    if (self->sem != NULL)
        sem_close(self->sem);
    Py_XDECREF(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
sem_open_or_raise(Semaphore *self)
{
    if (self->sem == NULL) {
        PyErr_SetString(ExistentialError, "The semaphore has been closed");
        return -1;
    }
    return 0;
}

static PyObject *
Semaphore_acquire(Semaphore *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* acquire(0): take the semaphore if it is free, else raise BusyError. Never blocks (a
     * blocking wait would freeze a gevent worker); shm's lock waits cooperatively itself. */
    if (nargs != 1 || !PyLong_Check(args[0]) || PyLong_AsLong(args[0]) != 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "only acquire(0) is supported");
        return NULL;
    }
    if (sem_open_or_raise(self) < 0)
        return NULL;
    if (sem_trywait(self->sem) == 0)
        Py_RETURN_NONE;
    if (errno == EAGAIN) {
        PyErr_SetString(BusyError, "Semaphore is busy");
        return NULL;
    }
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *
Semaphore_release(Semaphore *self, PyObject *Py_UNUSED(ignored))
{
    if (sem_open_or_raise(self) < 0)
        return NULL;
    if (sem_post(self->sem) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_close(Semaphore *self, PyObject *Py_UNUSED(ignored))
{
    if (sem_open_or_raise(self) < 0)
        return NULL;
    sem_t *sem = self->sem;
    self->sem = NULL;
    if (sem_close(sem) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
Semaphore_value(Semaphore *self, void *Py_UNUSED(closure))
{
    int v;
    if (sem_open_or_raise(self) < 0)
        return NULL;
    if (sem_getvalue(self->sem, &v) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(v);
}

static PyObject *
Semaphore_get_name(Semaphore *self, void *Py_UNUSED(closure))
{
    if (self->name == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->name);
    return self->name;
}

static PyMethodDef Semaphore_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Semaphore_acquire, METH_FASTCALL,
     "acquire(0): take the semaphore or raise posix_ipc.BusyError (never blocks)."},
    {"release", (PyCFunction)Semaphore_release, METH_NOARGS, "Post the semaphore."},
    {"close", (PyCFunction)Semaphore_close, METH_NOARGS, "Close this process's handle."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Semaphore_getset[] = {
    {"value", (getter)Semaphore_value, NULL, "The semaphore's current value.", NULL},
    {"name", (getter)Semaphore_get_name, NULL, "The semaphore's name.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SemaphoreType = {
    ACCEL_TYPE(Semaphore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Semaphore(name, flags=0, mode=0o600, initial_value=0): a named POSIX semaphore "
              "(flags: posix_ipc.O_CREX to create it).",
    .tp_methods = Semaphore_methods,
    .tp_getset = Semaphore_getset,
    .tp_init = (initproc)Semaphore_init,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------------ Zone */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int held;
    uint32_t bidx; /* u32 index of the bucket array */
    uint32_t mask;
    Semaphore *lock; /* the zone's semaphore (fast_incr), or NULL */
} Zone;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline uint32_t rd32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void wr32(char *p, uint32_t v) { memcpy(p, &v, 4); }

static int
Zone_init(Zone *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "bucket_index", "mask", "lock", NULL};
    PyObject *buf, *lock = Py_None;
    unsigned int bidx, mask;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OII|O", kwlist, &buf, &bidx, &mask, &lock))
        return -1;
    if (lock != Py_None && !PyObject_TypeCheck(lock, &SemaphoreType)) {
        PyErr_SetString(PyExc_TypeError, "lock must be a shm._accel.Semaphore or None");
        return -1;
    }
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    if (PyObject_GetBuffer(buf, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    self->held = 1;
    if (((uintptr_t)self->view.buf & 7) != 0 ||
        ((Py_ssize_t)bidx + (Py_ssize_t)mask + 1) * 4 > self->view.len || H_LRU + 8 > self->view.len) {
        PyBuffer_Release(&self->view);
        self->held = 0;
        PyErr_SetString(PyExc_ValueError, "buffer too small or misaligned for this geometry");
        return -1;
    }
    self->bidx = bidx;
    self->mask = mask;
    Py_XSETREF(self->lock, lock == Py_None ? NULL : (Semaphore *)Py_NewRef(lock));
    return 0;
}

static void
Zone_dealloc(Zone *self)
{
    if (self->held)
        PyBuffer_Release(&self->view);
    Py_XDECREF(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Zone_release(Zone *self, PyObject *Py_UNUSED(ignored))
{
    if (self->held) {
        PyBuffer_Release(&self->view);
        self->held = 0;
    }
    Py_RETURN_NONE;
}

/* Move node `off` (not the head: its lru-prev is `lp`) to the LRU head; as SharedDict._touch. */
static int
touch(char *base, Py_ssize_t len, uint32_t off, uint32_t lp)
{
    uint32_t ln = rd32(base + off + N_LNEXT);
    uint32_t head = rd32(base + H_LRU);
    if ((Py_ssize_t)lp + N_LNEXT + 4 > len || (Py_ssize_t)ln + N_LNEXT + 4 > len ||
        (Py_ssize_t)head + N_LNEXT + 4 > len || !head)
        return -1;
    wr32(base + lp + N_LNEXT, ln);
    if (ln)
        wr32(base + ln + N_LPREV, lp);
    else
        wr32(base + H_LRU + 4, lp);
    wr32(base + off + N_LPREV, 0);
    wr32(base + off + N_LNEXT, head);
    wr32(base + head + N_LPREV, off);
    wr32(base + H_LRU, off);
    return 0;
}

/* The chain walk (SharedDict._lookup's): the offset of the record of key kb (n bytes, hash h),
 * 0 if the key is absent, or -1 if the chain looks damaged (an offset out of the zone or not
 * 8-byte aligned, or a chain longer than MAX_CHAIN: a cycle). */
static int64_t
find_node(Zone *self, const char *kb, Py_ssize_t n, uint32_t h)
{
    const char *base = (const char *)self->view.buf;
    Py_ssize_t len = self->view.len;
    uint32_t off = rd32(base + ((Py_ssize_t)self->bidx + (Py_ssize_t)(h & self->mask)) * 4);
    for (long steps = 0; off; steps++) {
        if (steps > MAX_CHAIN || (off & 7) || (Py_ssize_t)off + NODE_SIZE > len) /* nodes: 16-aligned */
            return -1;
        const char *node = base + off;
        uint16_t kl;
        memcpy(&kl, node + N_KLEN, 2);
        if (rd32(node + N_HASH) == h && kl == n && (Py_ssize_t)off + N_KEY + n <= len &&
            memcmp(node + N_KEY, kb, (size_t)n) == 0)
            return off;
        off = rd32(node);
    }
    return 0;
}

/* Take the zone's semaphore as the Python lock does and write pid as its owner: 0, or -1
 * when it is still taken after SPIN tries (the Python code then waits cooperatively).
 * Critical sections are ~0.1 us: a short spin gets most contended calls through. */
static int
take_lock(Zone *self, unsigned long pid)
{
    sem_t *sem = self->lock->sem;
    int spin = 0;
    while (sem_trywait(sem) != 0) {
        if (++spin > SPIN)
            return -1;
        cpu_relax();
    }
    wr32((char *)self->view.buf + H_OWNER, (uint32_t)pid); /* right after taking it */
    return 0;
}

/* Clear the owner and post the semaphore (take_lock's undo). */
static void
give_lock(Zone *self)
{
    wr32((char *)self->view.buf + H_OWNER, 0);
    sem_post(self->lock->sem);
}

/* The key's entry += delta under the lock; a new reference to the new value, or to None
 * when the Python code must handle the call (nothing changed). */
static PyObject *
do_incr(Zone *self, PyObject *key, unsigned long h, long long delta)
{
    char *base = (char *)self->view.buf;
    Py_ssize_t len = self->view.len;
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    int64_t found = find_node(self, PyBytes_AS_STRING(key), n, (uint32_t)h);
    if (found <= 0)
        Py_RETURN_NONE;
    uint32_t off = (uint32_t)found;
    const char *node = base + off;
    int64_t exp;
    memcpy(&exp, node + N_EXPIRES, 8);
    if (exp) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic_ns()'s clock */
        if (exp <= (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000)
            Py_RETURN_NONE;
    }
    if ((unsigned char)node[N_VTYPE] != VTYPE_INT)
        Py_RETURN_NONE;
    Py_ssize_t vo = (Py_ssize_t)off + ((n + VALUE_PAD) & ~(Py_ssize_t)7);
    if (vo + 8 > len)
        Py_RETURN_NONE;
    int64_t *slot = (int64_t *)(base + vo); /* 8-byte aligned: the zone is */
    int64_t v;
    if (__builtin_add_overflow(*slot, (int64_t)delta, &v))
        Py_RETURN_NONE;
    __atomic_store_n(slot, v, __ATOMIC_RELAXED); /* one store: never torn by a kill */
    uint32_t lp = rd32(node + N_LPREV);
    if (lp)
        touch(base, len, off, lp); /* a damaged LRU link is left for verify to repair */
    return PyLong_FromLongLong(v);
}

/* The checks the Zone methods share: an argument count in [lo, hi] (TypeError with the usage
 * otherwise) and, when `held`, a zone whose buffer is still held (ValueError). 0, or -1 with
 * the error set. */
static int
zone_args(Zone *self, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi, const char *usage, int held)
{
    if (nargs < lo || nargs > hi) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (held && !self->held) {
        PyErr_SetString(PyExc_ValueError, "zone released");
        return -1;
    }
    return 0;
}

/* o as an unsigned long (a hash, a pid) into *v: 0, or -1 with the error set. */
static int
ulong_arg(PyObject *o, unsigned long *v)
{
    *v = PyLong_AsUnsignedLong(o);
    return *v == (unsigned long)-1 && PyErr_Occurred() ? -1 : 0;
}

/* lookup(key, hash[, pid]): find_node as a method; RuntimeError for a damaged chain. With
 * pid, it first takes the zone lock (take_lock: None when it is busy, nothing done) and
 * returns holding it, as SharedDict._lookup(..., lock=True); it releases it if it raises. */
static PyObject *
Zone_lookup(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char usage[] = "lookup(key: bytes, hash[, pid])";
    unsigned long h, pid = 0;
    if (zone_args(self, nargs, 2, 3, usage, 1) < 0)
        return NULL;
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    if (ulong_arg(args[1], &h) < 0 || (nargs == 3 && ulong_arg(args[2], &pid) < 0))
        return NULL;
    if (nargs == 3) {
        if (self->lock == NULL || self->lock->sem == NULL) {
            PyErr_SetString(PyExc_ValueError, "no open lock for lookup");
            return NULL;
        }
        if (take_lock(self, pid) < 0)
            Py_RETURN_NONE;
    }
    int64_t off = find_node(self, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), (uint32_t)h);
    PyObject *r = off < 0 ? NULL : PyLong_FromLongLong(off);
    if (r == NULL) {
        if (off < 0)
            PyErr_SetString(PyExc_RuntimeError, "shm: hash chain damaged");
        if (nargs == 3)
            give_lock(self);
    }
    return r;
}

static PyObject *
Zone_incr(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long h;
    if (zone_args(self, nargs, 3, 3, "incr(key, hash, delta)", 1) < 0)
        return NULL;
    if (!PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "key must be bytes");
        return NULL;
    }
    if (ulong_arg(args[1], &h) < 0)
        return NULL;
    int over = 0;
    long long delta = PyLong_AsLongLongAndOverflow(args[2], &over);
    if (delta == -1 && PyErr_Occurred())
        return NULL;
    if (over)
        Py_RETURN_NONE; /* a delta past 64 bits: the Python code raises OverflowError */
    return do_incr(self, args[0], h, delta);
}

/* zlib's crc32 (reflected 0xEDB88320, as zlib.crc32): the key's hash, as the Python code's */
static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t
crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static PyObject *
Accel_crc32(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "crc32 takes bytes");
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        crc32_of((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}

/* SharedDict.incr's common call whole, with incr's arguments. Any that incr would treat
 * specially or reject (a str key, a float or huge delta, init_ttl without init, a negative
 * init_ttl, a bool...) give None at once, and the Python code then handles (or rejects) the
 * call. pid is written as the lock's owner while it is held. */
static PyObject *
fast_incr_impl(Zone *self, PyObject *key, PyObject *d, PyObject *init, PyObject *ttl,
               unsigned long pid)
{
    if (!PyBytes_CheckExact(key) || !PyLong_CheckExact(d))
        Py_RETURN_NONE;
    int ttl_zero;
    if (PyLong_CheckExact(ttl)) {
        /* (the sign of any int: a huge one overflows to the side of its sign) */
        int ttl_over = 0;
        long long t = PyLong_AsLongLongAndOverflow(ttl, &ttl_over);
        if (ttl_over < 0 || (ttl_over == 0 && t < 0))
            Py_RETURN_NONE;
        ttl_zero = ttl_over == 0 && t == 0;
    } else if (PyFloat_CheckExact(ttl)) {
        double t = PyFloat_AS_DOUBLE(ttl);
        if (!(t >= 0)) /* negative or NaN */
            Py_RETURN_NONE;
        ttl_zero = t == 0;
    } else {
        Py_RETURN_NONE;
    }
    if (init == Py_None ? !ttl_zero : !(PyLong_CheckExact(init) || PyFloat_CheckExact(init)))
        Py_RETURN_NONE;
    int over = 0;
    long long delta = PyLong_AsLongLongAndOverflow(d, &over);
    if (over || (delta == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!self->held) {
        PyErr_SetString(PyExc_ValueError, "zone released");
        return NULL;
    }
    Semaphore *lock = self->lock;
    if (lock == NULL || lock->sem == NULL) {
        PyErr_SetString(PyExc_ValueError, "no open lock for fast_incr");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    if (n == 0 || n > 65535)
        Py_RETURN_NONE; /* the Python code raises the key length error */
    uint32_t h = crc32_of((const unsigned char *)PyBytes_AS_STRING(key), n);
    if (take_lock(self, pid) < 0)
        Py_RETURN_NONE; /* the holder was preempted, say: the Python code waits */
    PyObject *v = do_incr(self, key, h, delta);
    give_lock(self);
    return v;
}

/* fast_incr(key, delta, init, init_ttl, pid): fast_incr_impl as a method. */
static PyObject *
Zone_fast_incr(Zone *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long pid;
    if (zone_args(self, nargs, 5, 5, "fast_incr(key, delta, init, init_ttl, pid)", 0) < 0 ||
        ulong_arg(args[4], &pid) < 0)
        return NULL;
    return fast_incr_impl(self, args[0], args[1], args[2], args[3], pid);
}

static PyMethodDef Zone_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))Zone_lookup, METH_FASTCALL,
     "lookup(key, hash[, pid]) -> offset of the key's record, 0 if absent (SharedDict._lookup's\n"
     "walk). The caller holds the zone lock, or passes pid: the lock is then taken first (None\n"
     "if it is busy) and held on return."},
    {"incr", (PyCFunction)(void (*)(void))Zone_incr, METH_FASTCALL,
     "incr(key, hash, delta) -> new value, or None when the Python code must handle the call.\n"
     "The caller holds the zone lock."},
    {"fast_incr", (PyCFunction)(void (*)(void))Zone_fast_incr, METH_FASTCALL,
     "fast_incr(key, delta, init, init_ttl, pid) -> new value, or None (lock taken, or a case\n"
     "for the Python code). Takes and releases the zone lock itself (pid as its owner)."},
    {"release", (PyCFunction)Zone_release, METH_NOARGS, "Release the zone's buffer."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ZoneType = {
    ACCEL_TYPE(Zone),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Zone(buffer, bucket_index, mask, lock=None): C hit paths over a formatted shm zone.",
    .tp_methods = Zone_methods,
    .tp_init = (initproc)Zone_init,
    .tp_new = PyType_GenericNew,
};


/* ------------------------------------------------------------------------------ module */

static PyMethodDef accel_methods[] = {
    {"crc32", (PyCFunction)Accel_crc32, METH_O, "crc32(data) -> zlib.crc32(data) (fast_incr's key hash)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "shm._accel",
    .m_doc = "C hit paths for shm.SharedDict (optional).",
    .m_size = -1,
    .m_methods = accel_methods,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    crc_init();
    if (PyType_Ready(&ZoneType) < 0 || PyType_Ready(&SemaphoreType) < 0)
        return NULL;
    /* the Semaphore raises posix_ipc's exceptions, so callers catch one set of errors */
    PyObject *pi = PyImport_ImportModule("posix_ipc");
    if (pi == NULL)
        return NULL;
    ExistentialError = PyObject_GetAttrString(pi, "ExistentialError");
    BusyError = PyObject_GetAttrString(pi, "BusyError");
    PermissionsError = PyObject_GetAttrString(pi, "PermissionsError");
    Py_DECREF(pi);
    if (ExistentialError == NULL || BusyError == NULL || PermissionsError == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&accel_module);
    if (m == NULL)
        return NULL;
    /* the layout constants compiled in, under shm/layout.py's names: the tests compare them */
    static const struct {
        const char *name;
        long value;
    } layout[] = {
        {"NODE_SIZE", NODE_SIZE}, {"N_LPREV", N_LPREV},     {"N_LNEXT", N_LNEXT},
        {"N_HASH", N_HASH},       {"N_EXPIRES", N_EXPIRES}, {"N_KLEN", N_KLEN},
        {"N_VTYPE", N_VTYPE},     {"N_KEY", N_KEY},         {"VALUE_PAD", VALUE_PAD},
        {"T_INT", VTYPE_INT},     {"H_OWNER", H_OWNER},     {"H_LRU", H_LRU},
    };
    for (size_t i = 0; i < NELEMS(layout); i++)
        if (PyModule_AddIntConstant(m, layout[i].name, layout[i].value) < 0)
            goto fail;
    PyTypeObject *types[] = {&ZoneType, &SemaphoreType};
    for (size_t i = 0; i < NELEMS(types); i++)
        if (PyModule_AddType(m, types[i]) < 0) /* under the name after tp_name's last dot */
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
