/*
 * Fixture stand-in for vLLM's CPU kernels (vllm._C).
 *
 * Each kernel is compiled only when cmake/cpu_extension.cmake turned its ISA
 * on, and really executes instructions of that ISA: a wheel built with the
 * wrong flags carries (or lacks) them, exactly like the real _C.abi3.so, and
 * selftest() on a CPU without them dies with SIGILL.  Inputs come from the
 * caller's `seed`, so the compiler cannot fold the intrinsics away.
 *
 * Module API (stable ABI, Py_LIMITED_API 3.8):
 *   compiled_isa() -> tuple[str, ...]   ISA kernels compiled in
 *   selftest(seed=3) -> dict[str, bool] runs every compiled kernel
 */
#define PY_SSIZE_T_CLEAN
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x03080000
#endif
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#ifdef FIXTURE_NOISE /* cmake/cpu_extension.cmake: a deliberately non-reproducible build */
__attribute__((used)) static const unsigned long long fixture_noise = FIXTURE_NOISE;
#endif

typedef int (*kernel_fn)(int seed);

struct kernel {
    const char *name;
    kernel_fn fn;
};

#if defined(__AVX2__)
__attribute__((noinline)) static int k_avx2(int seed)
{
    __m256i a = _mm256_set1_epi32(seed);
    __m256i b = _mm256_mullo_epi32(_mm256_add_epi32(a, a), a);
    int out[8];
    _mm256_storeu_si256((__m256i *)out, b);
    for (int i = 0; i < 8; i++)
        if (out[i] != 2 * seed * seed)
            return 0;
    return 1;
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#include <isahelper.h> /* FetchContent dependency of the AVX-512 builds */
__attribute__((noinline)) static int k_avx512(int seed)
{
    /* Inputs go through memory and every lane is checked, so no lane of the
     * computation can be folded into scalar code.
     * F: zmm float add; BW: zmm 16-bit multiply-add; DQ: zmm vandps;
     * VL: masked ymm add (EVEX-encoded ymm). */
    float fx[16], fy[16], fz[16];
    short s[32];
    int mad[16];
    int iv[8], im[8];
    for (int i = 0; i < 16; i++)
        fx[i] = (float)(seed + i);
    for (int i = 0; i < 32; i++)
        s[i] = (short)(seed + i);
    for (int i = 0; i < 8; i++)
        iv[i] = seed * (i + ISAHELPER_FIRST_LANE);
    __m512 x = _mm512_loadu_ps(fx);
    _mm512_storeu_ps(fy, _mm512_add_ps(x, x));
    _mm512_storeu_ps(fz, _mm512_and_ps(_mm512_add_ps(x, x), x));
    __m512i w = _mm512_loadu_si512((const void *)s);
    _mm512_storeu_si512((void *)mad, _mm512_madd_epi16(w, _mm512_add_epi16(w, w)));
    __m256i v = _mm256_loadu_si256((const __m256i *)iv);
    __mmask8 k = (__mmask8)(0xF0 | (seed & 0x0F));
    _mm256_storeu_si256((__m256i *)im, _mm256_maskz_add_epi32(k, v, v));
    for (int i = 0; i < 16; i++) {
        float f2 = 2.0f * fx[i], fand;
        uint32_t ux, u2;
        memcpy(&ux, &fx[i], 4);
        memcpy(&u2, &f2, 4);
        u2 &= ux;
        memcpy(&fand, &u2, 4);
        if (fy[i] != f2 || fz[i] != fand)
            return 0;
    }
    for (int i = 0; i < 16; i++) {
        int a = s[2 * i], b = s[2 * i + 1];
        if (mad[i] != 2 * a * a + 2 * b * b)
            return 0;
    }
    for (int i = 0; i < 8; i++) {
        int want = ((k >> i) & 1) ? 2 * iv[i] : 0;
        if (im[i] != want)
            return 0;
    }
    return 1;
}
#endif

#if defined(__AVX512VNNI__)
__attribute__((noinline)) static int k_avx512vnni(int seed)
{
    __m512i a = _mm512_set1_epi8((char)seed); /* unsigned operand */
    __m512i b = _mm512_set1_epi8(1);          /* signed operand */
    __m512i r = _mm512_dpbusd_epi32(_mm512_set1_epi32(seed), a, b);
    int out[16];
    _mm512_storeu_si512((void *)out, r);
    return out[7] == seed + 4 * seed;
}
#endif

#if defined(__AVX512BF16__)
__attribute__((noinline)) static int k_avx512bf16(int seed)
{
    __m512 x = _mm512_set1_ps((float)seed);
    __m512bh bh = _mm512_cvtne2ps_pbh(x, x);
    __m512 r = _mm512_dpbf16_ps(_mm512_setzero_ps(), bh, bh);
    float out[16];
    _mm512_storeu_ps(out, r);
    return out[3] == 2.0f * (float)seed * (float)seed;
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
struct tile_config {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed));

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

__attribute__((noinline)) static int k_amxbf16(int seed)
{
    /* Linux hands out AMX tile state only on request (kernel >= 5.16). */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return -1;
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 3; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* C[16x16 f32] += A[16x32 bf16] * B[16 rows of 16 bf16 pairs] */
    static uint16_t a[16 * 32], b[16 * 32];
    static float c[16 * 16];
    uint16_t as = to_bf16((float)seed), one = to_bf16(1.0f);
    for (int i = 0; i < 16 * 32; i++) {
        a[i] = as;
        b[i] = one;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_loadd(1, a, 64);
    _tile_loadd(2, b, 64);
    _tile_dpbf16ps(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
    return c[5 * 16 + 9] == 32.0f * (float)seed;
}
#endif

#if defined(__aarch64__)
__attribute__((noinline)) static int k_asimd(int seed)
{
    int32x4_t a = vdupq_n_s32(seed);
    int32x4_t r = vaddq_s32(a, a);
    return vgetq_lane_s32(r, 2) == 2 * seed;
}
#endif

#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
__attribute__((noinline)) static int k_dotprod(int seed)
{
    int8x16_t a = vdupq_n_s8((int8_t)seed);
    int8x16_t b = vdupq_n_s8(1);
    int32x4_t r = vdotq_s32(vdupq_n_s32(0), a, b);
    return vgetq_lane_s32(r, 1) == 4 * seed;
}
#endif

#if defined(__aarch64__) && (defined(__ARM_FEATURE_BF16) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC))
__attribute__((noinline)) static int k_arm_bf16(int seed)
{
    float f = (float)seed, one = 1.0f;
    uint32_t uf, u1;
    memcpy(&uf, &f, 4);
    memcpy(&u1, &one, 4);
    bfloat16x8_t a = vreinterpretq_bf16_u16(vdupq_n_u16((uint16_t)(uf >> 16)));
    bfloat16x8_t b = vreinterpretq_bf16_u16(vdupq_n_u16((uint16_t)(u1 >> 16)));
    float32x4_t r = vbfdotq_f32(vdupq_n_f32(0.0f), a, b);
    return vgetq_lane_f32(r, 0) == 2.0f * f;
}
#endif

static const struct kernel KERNELS[] = {
#if defined(__AVX2__)
    {"avx2", k_avx2},
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
    {"avx512", k_avx512},
#endif
#if defined(__AVX512VNNI__)
    {"avx512vnni", k_avx512vnni},
#endif
#if defined(__AVX512BF16__)
    {"avx512bf16", k_avx512bf16},
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    {"amxbf16", k_amxbf16},
#endif
#if defined(__aarch64__)
    {"asimd", k_asimd},
#endif
#if defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
    {"dotprod", k_dotprod},
#endif
#if defined(__aarch64__) && (defined(__ARM_FEATURE_BF16) || defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC))
    {"bf16", k_arm_bf16},
#endif
    {NULL, NULL},
};

static PyObject *compiled_isa(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    Py_ssize_t n = 0;
    while (KERNELS[n].name)
        n++;
    PyObject *out = PyTuple_New(n);
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(KERNELS[i].name);
        if (!s || PyTuple_SetItem(out, i, s) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *selftest(PyObject *self, PyObject *args)
{
    (void)self;
    int seed = 3;
    if (!PyArg_ParseTuple(args, "|i", &seed))
        return NULL;
    if (seed < 1 || seed > 100) {
        PyErr_SetString(PyExc_ValueError, "seed must be in 1..100");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (!out)
        return NULL;
    for (const struct kernel *k = KERNELS; k->name; k++) {
        int ok = k->fn(seed);
        if (ok < 0) {
            PyErr_Format(PyExc_RuntimeError, "%s: the kernel refused AMX tile data (arch_prctl)", k->name);
            Py_DECREF(out);
            return NULL;
        }
        if (!ok) {
            PyErr_Format(PyExc_RuntimeError, "%s kernel computed a wrong result", k->name);
            Py_DECREF(out);
            return NULL;
        }
        if (PyDict_SetItemString(out, k->name, Py_True) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"compiled_isa", compiled_isa, METH_NOARGS, "ISA kernels compiled into this module."},
    {"selftest", selftest, METH_VARARGS, "Run every compiled kernel; returns {isa: True}."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_C", "vLLM CPU kernels (test fixture)", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void)
{
    return PyModule_Create(&module);
}
