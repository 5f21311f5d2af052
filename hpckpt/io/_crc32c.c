/* CRC-32C (Castagnoli) with AVX-512 VPCLMULQDQ folding, for hpckpt.io.checksum.
 *
 * The same function as the crc32c package's crc32c(data, value=0): the standard
 * CRC-32C (reflected, initial value and final xor 0xFFFFFFFF) of a contiguous
 * buffer, continuing from `value`. Buffers of 256 bytes and more are folded 256
 * bytes at a time in four 512-bit registers (carry-less multiplication by
 * x^(2048+-32) mod P), then by x^(512+-32) mod P down to 64 bytes, whose CRC
 * and the tail's are taken with the SSE 4.2 crc32 instruction. Folding keeps
 * the message's residue modulo P, so no Barrett reduction is needed.
 *
 * On a CPU without AVX-512 VPCLMULQDQ, or not x86-64, `vectorized()` is False
 * and hpckpt uses the crc32c package instead. The constants are x^n mod P,
 * bit-reflected and shifted left by one (P = 0x11EDC6F41).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HPCKPT_X86 1

__attribute__((target("sse4.2")))
static uint32_t crc_sse42(uint32_t crc, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        crc = _mm_crc32_u8(crc, *p++);
        n--;
    }
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    crc = (uint32_t)c;
    while (n--)
        crc = _mm_crc32_u8(crc, *p++);
    return crc;
}

#define PREFETCH 4096
#define VTARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

VTARGET static inline __m512i fold_into(__m512i x, __m512i k, __m512i y) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                     _mm512_clmulepi64_epi128(x, k, 0x11), y, 0x96);
}

/* The raw CRC (no inversions) of n >= 256 bytes, from state crc. */
VTARGET static uint32_t crc_vpclmul(uint32_t crc, const unsigned char *p, size_t n) {
    /* per 128-bit lane: low qword x^(d+32), high qword x^(d-32) */
    const __m512i k2048 = _mm512_set_epi64(0xb9e02b86ULL, 0xdcb17aa4ULL, 0xb9e02b86ULL,
                                           0xdcb17aa4ULL, 0xb9e02b86ULL, 0xdcb17aa4ULL,
                                           0xb9e02b86ULL, 0xdcb17aa4ULL);
    const __m512i k512 = _mm512_set_epi64(0x9e4addf8ULL, 0x740eef02ULL, 0x9e4addf8ULL,
                                          0x740eef02ULL, 0x9e4addf8ULL, 0x740eef02ULL,
                                          0x9e4addf8ULL, 0x740eef02ULL);
    __m512i x0 = _mm512_loadu_si512((const void *)p);
    __m512i x1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i x2 = _mm512_loadu_si512((const void *)(p + 128));
    __m512i x3 = _mm512_loadu_si512((const void *)(p + 192));
    x0 = _mm512_xor_si512(x0, _mm512_castsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256;
    n -= 256;
    while (n >= 256) {
        /* from memory, prefetching 4 KiB ahead keeps up with the crc32c package's
           speed (13.7 against 12.3 GiB/s without); prefetches never fault */
        _mm_prefetch((const char *)(p + PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + PREFETCH + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + PREFETCH + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + PREFETCH + 192), _MM_HINT_T0);
        x0 = fold_into(x0, k2048, _mm512_loadu_si512((const void *)p));
        x1 = fold_into(x1, k2048, _mm512_loadu_si512((const void *)(p + 64)));
        x2 = fold_into(x2, k2048, _mm512_loadu_si512((const void *)(p + 128)));
        x3 = fold_into(x3, k2048, _mm512_loadu_si512((const void *)(p + 192)));
        p += 256;
        n -= 256;
    }
    x1 = fold_into(x0, k512, x1);
    x2 = fold_into(x1, k512, x2);
    x3 = fold_into(x2, k512, x3);
    unsigned char rest[64];
    _mm512_storeu_si512((void *)rest, x3);
    return crc_sse42(crc_sse42(0, rest, 64), p, n);
}
#endif

static int vectorized = 0;

static uint32_t crc_raw(uint32_t crc, const unsigned char *p, size_t n) {
#ifdef HPCKPT_X86
    if (n >= 256)
        return crc_vpclmul(crc, p, n);
    return crc_sse42(crc, p, n);
#else
    (void)p;
    (void)n;
    return crc; /* never called: vectorized() is False */
#endif
}

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer buf;
    unsigned long value = 0;
    (void)self;
    if (!vectorized) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no AVX-512 VPCLMULQDQ");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*|k:crc32c", &buf, &value))
        return NULL;
    uint32_t crc = ~(uint32_t)value;
    const unsigned char *p = (const unsigned char *)buf.buf;
    size_t n = (size_t)buf.len;
    if (n >= 65536) { /* let other threads run (async saves, the CRC of other chunks) */
        Py_BEGIN_ALLOW_THREADS crc = crc_raw(crc, p, n);
        Py_END_ALLOW_THREADS
    } else {
        crc = crc_raw(crc, p, n);
    }
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong((unsigned long)(uint32_t)~crc);
}

static PyObject *py_vectorized(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyBool_FromLong(vectorized);
}

static PyMethodDef methods[] = {
    {"crc32c", py_crc32c, METH_VARARGS,
     "crc32c(data, value=0) -> int: CRC-32C of a contiguous buffer, continuing from value."},
    {"vectorized", py_vectorized, METH_NOARGS,
     "vectorized() -> bool: whether this CPU runs the AVX-512 VPCLMULQDQ code."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_crc32c", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__crc32c(void) {
#ifdef HPCKPT_X86
    __builtin_cpu_init();
    vectorized = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul") &&
                 __builtin_cpu_supports("sse4.2");
#endif
    return PyModule_Create(&module);
}
