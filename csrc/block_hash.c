/*
 * poodle_vllm._native: vLLM-compatible prefix-cache block hashes in C.
 *
 * vLLM (v1/core/kv_cache_utils.py, utils/hashing.py) hashes a full block as
 *     sha256(pickle.dumps((parent_hash, tuple(block_token_ids), extra_keys), protocol=5))
 * chained from NONE_HASH.  This module writes the exact pickle bytes CPython's _pickle
 * produces for that tuple when extra_keys is None (no LoRA, multimodal or cache salt)
 * and hashes them with an embedded SHA-256, so `poodle analyze` can rehash millions of
 * logged requests without a Python object per token.  The Python fallback lives in
 * poodle_vllm/native.py; tests check both against each other and against vLLM.
 *
 * Pickle layout (protocol 5) of (parent: bytes, tokens: tuple[int, ...], None):
 *   80 05                      PROTO 5
 *   95 <u64 LE frame length>   FRAME (everything up to and including STOP)
 *   43 <u8 len> <bytes> 94     SHORT_BINBYTES + MEMOIZE   (len > 255: 42 <u32 LE len>)
 *   tokens: n == 0           -> 29                          EMPTY_TUPLE (not memoized)
 *           1 <= n <= 3      -> <ints> 85|86|87 94          TUPLE1..3 + MEMOIZE
 *           n > 3            -> 28 <ints> 74 94             MARK ... TUPLE + MEMOIZE
 *   int x:  0..255 -> 4b u8 | 256..65535 -> 4d u16 | int32 -> 4a i32 | else 8a n <n bytes>
 *   4e                         NONE
 *   87 94 2e                   TUPLE3 MEMOIZE STOP
 * A frame is split once it reaches 64 KiB; we do not reproduce that and refuse such
 * blocks (ValueError) so the caller falls back to Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef POODLE_USE_OPENSSL
/* NOTE: OpenSSL's SHA-256 uses SHA-NI / AVX2 code; setup.py defines this only
 * when a test build against libcrypto succeeds, else the embedded version below is used. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#endif

/* ---------------------------------------------------------------- SHA-256 */

typedef struct {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t buf[64];
    size_t buflen;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256_ctx *c, const uint8_t *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
               (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
    e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1;
        d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
    c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256_init(sha256_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->nbytes = 0;
    c->buflen = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n) {
    c->nbytes += n;
    if (c->buflen) {
        size_t take = 64 - c->buflen < n ? 64 - c->buflen : n;
        memcpy(c->buf + c->buflen, p, take);
        c->buflen += take; p += take; n -= take;
        if (c->buflen == 64) { sha256_block(c, c->buf); c->buflen = 0; }
    }
    while (n >= 64) { sha256_block(c, p); p += 64; n -= 64; }
    if (n) { memcpy(c->buf, p, n); c->buflen = n; }
}

static void sha256_final(sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->nbytes * 8;
    uint8_t pad[72];
    size_t padlen = (c->buflen < 56) ? 56 - c->buflen : 120 - c->buflen;
    int i;
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(c, pad, padlen + 8);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24); out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8); out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

/* ------------------------------------------------------- pickle encoding */

#define FRAME_LIMIT 65536 /* CPython's _pickle FRAME_SIZE_TARGET */

/* Append the pickle opcode for int x at p; return the number of bytes written. */
static size_t put_int(uint8_t *p, int64_t x) {
    if (x >= 0 && x <= 0xff) { p[0] = 'K'; p[1] = (uint8_t)x; return 2; }
    if (x >= 0 && x <= 0xffff) { p[0] = 'M'; p[1] = (uint8_t)x; p[2] = (uint8_t)(x >> 8); return 3; }
    if (x >= -2147483647LL - 1 && x <= 2147483647LL) {
        uint32_t u = (uint32_t)(int32_t)x;
        p[0] = 'J'; p[1] = (uint8_t)u; p[2] = (uint8_t)(u >> 8); p[3] = (uint8_t)(u >> 16); p[4] = (uint8_t)(u >> 24);
        return 5;
    }
    /* LONG1: minimal little-endian two's complement, as pickle.encode_long. */
    {
        uint64_t u = (uint64_t)x, mag = x < 0 ? (uint64_t)(-(x + 1)) + 1 : (uint64_t)x;
        int bitlen = 0, nbytes, i;
        while (bitlen < 64 && (mag >> bitlen)) bitlen++;
        nbytes = (bitlen >> 3) + 1;
        if (nbytes > 8) nbytes = 8; /* only reachable for INT64_MIN's magnitude */
        for (i = 0; i < nbytes; i++) p[2 + i] = (uint8_t)(u >> (8 * i));
        if (x < 0 && nbytes > 1 && p[2 + nbytes - 1] == 0xff && (p[2 + nbytes - 2] & 0x80)) nbytes--;
        p[0] = 0x8a; p[1] = (uint8_t)nbytes;
        return (size_t)nbytes + 2;
    }
}

/* Hash one block: tokens[0..n) with parent hash `par` (plen bytes); writes out[32].
 * `scratch` must hold at least 32 + plen + 10 * n bytes. Returns -1 if the pickle would
 * need more than one frame. */
static int hash_one_block(const int64_t *tokens, Py_ssize_t n, const uint8_t *par, Py_ssize_t plen,
                          uint8_t *scratch, uint8_t out[32]) {
    uint8_t *p = scratch + 11; /* room for PROTO + FRAME header */
    Py_ssize_t i;
    size_t body;
    sha256_ctx c;
    if (plen < 256) { *p++ = 'C'; *p++ = (uint8_t)plen; }
    else { *p++ = 'B'; p[0] = (uint8_t)plen; p[1] = (uint8_t)(plen >> 8); p[2] = (uint8_t)(plen >> 16); p[3] = (uint8_t)(plen >> 24); p += 4; }
    memcpy(p, par, (size_t)plen); p += plen;
    *p++ = 0x94;
    if (n == 0) {
        *p++ = ')';
    } else {
        if (n > 3) *p++ = '(';
        for (i = 0; i < n; i++) p += put_int(p, tokens[i]);
        *p++ = n == 1 ? 0x85 : n == 2 ? 0x86 : n == 3 ? 0x87 : 't';
        *p++ = 0x94;
    }
    *p++ = 'N'; *p++ = 0x87; *p++ = 0x94; *p++ = '.';
    body = (size_t)(p - (scratch + 11));
    if (body >= FRAME_LIMIT) return -1;
    scratch[0] = 0x80; scratch[1] = 5; scratch[2] = 0x95;
    for (i = 0; i < 8; i++) scratch[3 + i] = (uint8_t)((uint64_t)body >> (8 * i));
#ifdef POODLE_USE_OPENSSL
    {
        /* NOTE: the low-level calls, not one-shot SHA256(): in OpenSSL 3 that goes through
         * an EVP fetch per call, which costs more than hashing a 100-byte block. */
        SHA256_CTX sc;
        (void)c;
        SHA256_Init(&sc);
        SHA256_Update(&sc, scratch, body + 11);
        SHA256_Final(out, &sc);
    }
#else
    sha256_init(&c);
    sha256_update(&c, scratch, body + 11);
    sha256_final(&c, out);
#endif
    return 0;
}

/* ------------------------------------------------------- token extraction */

/* Copy a sequence or 1-D integer buffer of token ids into a fresh int64 array. */
static int64_t *read_tokens(PyObject *obj, Py_ssize_t *n_out) {
    int64_t *t;
    Py_ssize_t i, n;
    if (PyObject_CheckBuffer(obj) && !PyBytes_Check(obj)) {
        Py_buffer v;
        if (PyObject_GetBuffer(obj, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
            char f = v.format ? v.format[strlen(v.format) - 1] : 'B';
            int ok = v.ndim == 1 && strchr("bBhHiIlLqQ", f) != NULL;
            if (!ok) { PyBuffer_Release(&v); PyErr_SetString(PyExc_TypeError, "token buffer must be 1-D integers"); return NULL; }
            n = v.len / v.itemsize;
            t = (int64_t *)PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
            if (!t) { PyBuffer_Release(&v); PyErr_NoMemory(); return NULL; }
            for (i = 0; i < n; i++) {
                const char *q = (const char *)v.buf + i * v.itemsize;
                switch (f) {
                case 'b': t[i] = *(const int8_t *)q; break;
                case 'B': t[i] = *(const uint8_t *)q; break;
                case 'h': t[i] = *(const int16_t *)q; break;
                case 'H': t[i] = *(const uint16_t *)q; break;
                case 'i': t[i] = *(const int32_t *)q; break;
                case 'I': t[i] = *(const uint32_t *)q; break;
                case 'Q': case 'L':
                    if (v.itemsize == 8) {
                        uint64_t u = *(const uint64_t *)q;
                        if (u > (uint64_t)INT64_MAX) { PyMem_Free(t); PyBuffer_Release(&v); PyErr_SetString(PyExc_OverflowError, "token id > int64"); return NULL; }
                        t[i] = (int64_t)u;
                    } else t[i] = *(const uint32_t *)q;
                    break;
                default: t[i] = v.itemsize == 8 ? *(const int64_t *)q : *(const int32_t *)q;
                }
            }
            PyBuffer_Release(&v);
            *n_out = n;
            return t;
        }
        PyErr_Clear();
    }
    {
        PyObject *seq = PySequence_Fast(obj, "token ids must be a sequence of ints or an integer buffer");
        PyObject **items;
        if (!seq) return NULL;
        n = PySequence_Fast_GET_SIZE(seq);
        items = PySequence_Fast_ITEMS(seq);
        t = (int64_t *)PyMem_Malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        if (!t) { Py_DECREF(seq); PyErr_NoMemory(); return NULL; }
        for (i = 0; i < n; i++) {
            /* Only exact ints: a bool or int subclass may pickle differently. */
            if (!PyLong_CheckExact(items[i])) {
                PyErr_SetString(PyExc_TypeError, "token ids must be exact ints");
                PyMem_Free(t); Py_DECREF(seq); return NULL;
            }
            t[i] = PyLong_AsLongLong(items[i]);
            if (t[i] == -1 && PyErr_Occurred()) { PyMem_Free(t); Py_DECREF(seq); return NULL; }
        }
        Py_DECREF(seq);
        *n_out = n;
        return t;
    }
}

/* Hash the full blocks of tokens[0..n) chained from `parent`, appending 32-byte digests to
 * `out` (room for n / block_size digests). Returns the number of blocks, or -1 when a block
 * is too large for one pickle frame (no Python error is set: the GIL may be released). */
static Py_ssize_t chain_blocks(const int64_t *tokens, Py_ssize_t n, Py_ssize_t block_size, const uint8_t *parent,
                               Py_ssize_t plen, uint8_t *scratch, uint8_t *out) {
    Py_ssize_t nb = n / block_size, b;
    const uint8_t *par = parent;
    Py_ssize_t pl = plen;
    for (b = 0; b < nb; b++) {
        /* NOTE: runs without the GIL, so errors are reported by the caller. */
        if (hash_one_block(tokens + b * block_size, block_size, par, pl, scratch, out + 32 * b) < 0) return -1;
        par = out + 32 * b;
        pl = 32;
    }
    return nb;
}

static int parse_common(Py_ssize_t block_size, Py_buffer *parent) {
    if (block_size <= 0) { PyErr_SetString(PyExc_ValueError, "block_size must be > 0"); return -1; }
    if (parent->len > 0xffffffffLL) { PyErr_SetString(PyExc_ValueError, "parent hash too long"); return -1; }
    return 0;
}

static uint8_t *alloc_scratch(Py_ssize_t block_size, Py_ssize_t plen) {
    size_t need = 64 + (size_t)(plen > 32 ? plen : 32) + 10 * (size_t)block_size;
    uint8_t *s = (uint8_t *)PyMem_Malloc(need);
    if (!s) PyErr_NoMemory();
    return s;
}

/* ------------------------------------------------------------ Python API */

PyDoc_STRVAR(block_hashes_doc,
"block_hashes(token_ids, block_size, parent) -> bytes\n\n"
"Concatenated 32-byte vLLM sha256 block hashes of the full blocks of token_ids (a sequence\n"
"of ints or a 1-D integer buffer), chained from parent (NONE_HASH for a whole request).");

static PyObject *py_block_hashes(PyObject *self, PyObject *args) {
    PyObject *tok_obj, *res = NULL;
    Py_ssize_t block_size, n = 0, nb;
    Py_buffer parent;
    int64_t *tokens;
    uint8_t *scratch;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ony*", &tok_obj, &block_size, &parent)) return NULL;
    if (parse_common(block_size, &parent) < 0) { PyBuffer_Release(&parent); return NULL; }
    tokens = read_tokens(tok_obj, &n);
    if (!tokens) { PyBuffer_Release(&parent); return NULL; }
    scratch = alloc_scratch(block_size, parent.len);
    if (scratch) {
        res = PyBytes_FromStringAndSize(NULL, 32 * (n / block_size));
        if (res) {
            Py_BEGIN_ALLOW_THREADS
            nb = chain_blocks(tokens, n, block_size, (const uint8_t *)parent.buf, parent.len, scratch,
                              (uint8_t *)PyBytes_AS_STRING(res));
            Py_END_ALLOW_THREADS
            if (nb < 0) {
                PyErr_SetString(PyExc_ValueError, "block pickle exceeds one 64 KiB frame; use the Python path");
                Py_CLEAR(res);
            }
        }
        PyMem_Free(scratch);
    }
    PyMem_Free(tokens);
    PyBuffer_Release(&parent);
    return res;
}

PyDoc_STRVAR(block_hashes_flat_doc,
"block_hashes_flat(tokens, offsets, block_size, parent) -> bytes\n\n"
"Many requests at once: request i is tokens[offsets[i]:offsets[i+1]] (1-D integer buffers,\n"
"e.g. numpy int64 / Arrow list values and offsets). Returns the concatenated 32-byte hashes\n"
"of every request's full blocks, request by request (request i has len_i // block_size).");

static PyObject *py_block_hashes_flat(PyObject *self, PyObject *args) {
    PyObject *tok_obj, *off_obj, *res = NULL;
    Py_ssize_t block_size, nt = 0, no = 0, i, total = 0;
    Py_buffer parent;
    int64_t *tokens = NULL, *offs = NULL;
    uint8_t *scratch = NULL, *out;
    int err = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOny*", &tok_obj, &off_obj, &block_size, &parent)) return NULL;
    if (parse_common(block_size, &parent) < 0) goto done;
    if (!(tokens = read_tokens(tok_obj, &nt))) goto done;
    if (!(offs = read_tokens(off_obj, &no))) goto done;
    if (no < 1) { PyErr_SetString(PyExc_ValueError, "offsets needs at least one entry"); goto done; }
    for (i = 0; i + 1 < no; i++) {
        if (offs[i] < 0 || offs[i + 1] < offs[i] || offs[i + 1] > nt) {
            PyErr_SetString(PyExc_ValueError, "offsets must be non-decreasing and within tokens");
            goto done;
        }
        total += (offs[i + 1] - offs[i]) / block_size;
    }
    if (!(scratch = alloc_scratch(block_size, parent.len))) goto done;
    if (!(res = PyBytes_FromStringAndSize(NULL, 32 * total))) goto done;
    out = (uint8_t *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i + 1 < no; i++) {
        Py_ssize_t nb = chain_blocks(tokens + offs[i], offs[i + 1] - offs[i], block_size,
                                     (const uint8_t *)parent.buf, parent.len, scratch, out);
        if (nb < 0) { err = 1; break; }
        out += 32 * nb;
    }
    Py_END_ALLOW_THREADS
    if (err) {
        PyErr_SetString(PyExc_ValueError, "block pickle exceeds one 64 KiB frame; use the Python path");
        Py_CLEAR(res);
    }
done:
    PyMem_Free(scratch);
    PyMem_Free(tokens);
    PyMem_Free(offs);
    PyBuffer_Release(&parent);
    return res;
}

PyDoc_STRVAR(sha256_doc, "sha256(data) -> bytes\n\nThe embedded SHA-256 (exposed for tests).");

static PyObject *py_sha256(PyObject *self, PyObject *args) {
    Py_buffer data;
    sha256_ctx c;
    uint8_t out[32];
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    sha256_init(&c);
    sha256_update(&c, (const uint8_t *)data.buf, (size_t)data.len);
    sha256_final(&c, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *py_backend(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
#ifdef POODLE_USE_OPENSSL
    return PyUnicode_FromString("openssl");
#else
    return PyUnicode_FromString("embedded");
#endif
}

static PyMethodDef methods[] = {
    {"sha256_backend", py_backend, METH_NOARGS, "Which SHA-256 block hashing uses: 'openssl' or 'embedded'."},
    {"block_hashes", py_block_hashes, METH_VARARGS, block_hashes_doc},
    {"block_hashes_flat", py_block_hashes_flat, METH_VARARGS, block_hashes_flat_doc},
    {"sha256", py_sha256, METH_VARARGS, sha256_doc},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_native",
                                       "vLLM-compatible block hashing in C (see poodle_vllm.native).", -1,
                                       methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&moduledef); }
