// One step of the row-space path (ReLU or tanh), each row of Z and A touched once.
//
// Z (k, p, n) holds the pre-activations W X^T, A (k, p, n) the row-space coordinates of
// W - s W_b (or nothing: A = null when the fit keeps no weights), G = X X^T (n, n), one
// shared by all members (g_stride = 0) or one per member (g_stride = n * npad), stored
// zero-padded to npad columns (as is ce). For the rows [r0, r1) of the k * p rows
// (row = member * p + unit):
//
//   forward:  u[member] = sum over rows of beta[row] psi(Z[row])
//   update:   m = fb_lr[row] * psi'(Z[row]) * ce[member]
//             d = psi(Z[row]) . ce[member]
//             A[row] <- keep A[row] - m
//             Z[row] <- keep Z[row] - m G
//             beta[row] <- beta[row] - lr (d + lam beta[row])
//             u[member] = sum over rows of beta[row] psi(Z[row])  (the next forward)
//
// which is what paths.RowSpacePath and the engine do with torch ops (an in-place GEMM for
// m G), in one pass over memory instead of nine. m G is done a block of rows at a time in
// registers (GCC vector extensions, so the compiler picks AVX-512, AVX2 or NEON for the
// host). tanh is computed here as t / (t + 2), t = expm1(2|z|) (range reduction and a
// Taylor polynomial, a few ulp from libm's), psi' = 1 - tanh^2 from the same t. Float
// rounding differs from the torch path only there and in the order of the sums. NaN stays
// NaN through psi, as in torch, so a diverging run is still seen by its MSE.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

#ifndef FA_VEC_BYTES
#if defined(__AVX512F__)
#define FA_VEC_BYTES 64
#elif defined(__AVX2__) || defined(__AVX__)
#define FA_VEC_BYTES 32
#else
#define FA_VEC_BYTES 16
#endif
#endif
#ifndef FA_VEC_REGS  // vector registers of that width (AVX-512: 32, AVX2, SSE, NEON: 16)
#define FA_VEC_REGS (FA_VEC_BYTES == 64 ? 32 : 16)
#endif
static_assert(FA_VEC_BYTES == 16 || FA_VEC_BYTES == 32 || FA_VEC_BYTES == 64,
              "FA_VEC_BYTES must be 16, 32 or 64");

constexpr int kVecBytes = FA_VEC_BYTES;
// The product's register block: kRows rows x kPanel column vectors of accumulators, plus
// kPanel vectors of G and one broadcast of M must fit in the vector registers, else the
// compiler reloads G from memory for every FMA (it did at 4 x 3 with 16 registers: 16
// loads for 12 FMAs, load-bound). Per i a block does kRows x kPanel FMAs for kPanel loads
// of G and kRows broadcasts: 4 x 4 (21 of 32 registers) with AVX-512, 6 x 2 (15 of 16)
// with AVX2, SSE or NEON, as BLAS kernels block it (docs/performance.md has the timings).
#ifndef FA_ROWS
#define FA_ROWS (FA_VEC_REGS >= 32 ? 4 : 6)
#endif
#ifndef FA_PANEL
#define FA_PANEL (FA_VEC_REGS >= 32 ? 4 : 2)
#endif
constexpr int kRows = FA_ROWS;
constexpr int kPanel = FA_PANEL;
static_assert(kRows * kPanel + kPanel + 1 <= FA_VEC_REGS, "register block too large");
constexpr int64_t kMaxN = 1024;  // longest row (samples n) the stack buffers hold

template <typename T>
struct Vec {
    typedef T type __attribute__((vector_size(kVecBytes), aligned(kVecBytes)));
};

// the float's bits: 2^k is built in them, and |z| and sign(z) are read from them
template <typename T>
struct Bits;
template <>
struct Bits<float> {
    typedef int32_t I __attribute__((vector_size(kVecBytes)));
    static constexpr int kMant = 23, kBias = 127;
    static constexpr int32_t kSign = INT32_MIN;
};
template <>
struct Bits<double> {
    typedef int64_t I __attribute__((vector_size(kVecBytes)));
    static constexpr int kMant = 52, kBias = 1023;
    static constexpr int64_t kSign = INT64_MIN;
};

// Taylor terms of expm1(r), |r| <= ln2 / 2, for truncation below half an ulp: the
// first left-out term r^(n+1) / (n+1)! / r is 1.5e-8 (float, n = 7; ulp 6e-8) and
// 1.2e-17 (double, n = 13; ulp 1.1e-16)
#ifndef FA_EXPM1_TERMS_F32
#define FA_EXPM1_TERMS_F32 7
#endif
#ifndef FA_EXPM1_TERMS_F64
#define FA_EXPM1_TERMS_F64 13
#endif

// expm1(x) for 0 <= x <= 64 (or NaN): x = k ln2 + r, |r| <= ln2 / 2, expm1(x) =
// 2^k expm1(r) + (2^k - 1), expm1(r) by its Taylor series. k = rint(x / ln2) is taken
// with the round-to-nearest of adding 1.5 2^mant (its low mantissa bits then hold k),
// so there is no float-to-integer conversion (AVX2 has none for 64-bit integers: the
// compiler went lane by lane there) and 2^k is made from those bits by a shift.
template <typename T>
inline typename Vec<T>::type vexpm1(typename Vec<T>::type x) {
    typedef typename Vec<T>::type V;
    typedef typename Bits<T>::I I;
    const T ln2_hi = T(0.693145751953125), ln2_lo = T(1.42860682030941723212e-6);
    const T magic = T(1.5) * T(int64_t(1) << Bits<T>::kMant);
    const V s = x * T(1.44269504088896340736) + magic;  // magic + rint(x / ln2)
    const V kf = s - magic;
    const V r = (x - kf * ln2_hi) - kf * ln2_lo;
    constexpr int kTerms = sizeof(T) == 4 ? FA_EXPM1_TERMS_F32 : FA_EXPM1_TERMS_F64;
    T coef = T(1);
    T coefs[kTerms];  // 1/1!, 1/2!, ..., 1/kTerms!
    for (int i = 1; i <= kTerms; ++i) coefs[i - 1] = (coef /= T(i));
    V poly = V{} + coefs[kTerms - 1];  // 1/1! + r/2! + ... + r^(kTerms-1)/kTerms!
    for (int i = kTerms - 2; i >= 0; --i) poly = poly * r + coefs[i];
    const V em1 = r * poly;  // expm1(r)
    // the low bits of s are k (0 <= k < 2^(exponent bits - 1)): shifted into the
    // exponent field, with the bias, they are 2^k; the bits above shift out
    const V two_k = (V)(((I)s + Bits<T>::kBias) << Bits<T>::kMant);
    return two_k * em1 + (two_k - T(1));
}

struct ReLU {
    template <typename V>
    static inline void eval(V z, V& psi, V& dpsi) {
        const V zero = {};
        psi = z < zero ? zero : z;          // NaN stays NaN
        dpsi = z > zero ? zero + 1 : zero;  // matches torch.autograd: 0 at z = 0
    }
};

struct Tanh {
    // tanh |z| = t / (t + 2), t = expm1(2 |z|), with z's sign put back by its bit;
    // psi' = 1 - tanh^2. |z| is clamped at 20 (tanh(20) = 1 in both precisions).
    template <typename V>
    static inline void eval(V z, V& psi, V& dpsi) {
        typedef decltype(z[0] + 0) T;
        typedef typename Bits<T>::I I;
        const I sign = (I)z & Bits<T>::kSign;
        V a = (V)((I)z ^ sign);            // |z|; NaN stays NaN
        a = a > T(20) ? V{} + T(20) : a;   // NaN compares false: kept
        const V t = vexpm1<T>(a + a);
        const V th = t / (t + T(2));
        psi = (V)((I)th ^ sign);
        dpsi = T(1) - th * th;
    }
};

// uacc[0, npad) += b psi(zp[0, npad))
template <typename T, typename Act>
inline void accumulate(int64_t npad, const T* zp, T b, T* uacc) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    for (int64_t v = 0; v < npad; v += L) {
        V psi, dpsi;
        Act::eval(*reinterpret_cast<const V*>(zp + v), psi, dpsi);
        *reinterpret_cast<V*>(uacc + v) += b * psi;
    }
}

// out[0, npad) = z[0, n) then zeros, by whole vectors. Copied element by element, the
// row's last vector was read back (as one vector) from several scalar stores, which
// store forwarding cannot serve: a stall on every row. A vector load of the last
// partial vector reads up to npad - n numbers past the row, which must lie in memory the
// caller owns (``past_end_ok``: the next row follows); else the tail goes element-wise.
template <typename T>
inline void load_row(int64_t n, int64_t npad, const T* z, T* out, bool past_end_ok) {
    typedef typename Vec<T>::type V;
    typedef typename Bits<T>::I I;
    constexpr int64_t L = kVecBytes / sizeof(T);
    int64_t v = 0;
    for (; v + L <= n; v += L) {
        V x;
        std::memcpy(&x, z + v, sizeof(V));
        *reinterpret_cast<V*>(out + v) = x;
    }
    if (v == npad) return;
    if (past_end_ok) {
        typedef decltype(I{}[0] + 0) E;  // the lane index's type, as wide as T
        I lane;
        for (int64_t l = 0; l < L; ++l) lane[l] = E(l);
        V x;
        std::memcpy(&x, z + v, sizeof(V));
        *reinterpret_cast<V*>(out + v) = lane < I{} + E(n - v) ? x : V{};
    } else {
        for (int64_t j = v; j < npad; ++j) out[j] = j < n ? z[j] : T(0);
    }
}

// rows [r0, r1) all belong to one member; uu is that member's (n) slot
template <typename T, typename Act>
void forward(int64_t r0, int64_t r1, int64_t n, int64_t npad, const T* Z, const T* beta,
             T* uu) {
    alignas(kVecBytes) T zp[kMaxN];
    alignas(kVecBytes) T uacc[kMaxN];
    for (int64_t j = 0; j < npad; ++j) zp[j] = uacc[j] = T(0);
    for (int64_t row = r0; row < r1; ++row) {
        const T* z = Z + row * n;
        load_row(n, npad, z, zp, row + 1 < r1);
        accumulate<T, Act>(npad, zp, beta[row], uacc);
    }
    for (int64_t j = 0; j < n; ++j) uu[j] += uacc[j];
}

// zp[b][v, v + NV L) -= m[b][0, n) G[0, n)[v, v + NV L) for the kRows rows b of a block;
// row b of m and zp starts at b * ld
template <typename T, int NV>
inline void panel(int64_t n, int64_t npad, int64_t v, const T* Gp, const T* m, T* zp,
                  int64_t ld) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V s[kRows][NV];
    for (int b = 0; b < kRows; ++b)
        for (int q = 0; q < NV; ++q) s[b][q] = *reinterpret_cast<const V*>(zp + b * ld + v + q * L);
    for (int64_t i = 0; i < n; ++i) {
        V g[NV];
        for (int q = 0; q < NV; ++q) g[q] = *reinterpret_cast<const V*>(Gp + i * npad + v + q * L);
        for (int b = 0; b < kRows; ++b) {
            const T mb = m[b * ld + i];
            for (int q = 0; q < NV; ++q) s[b][q] -= mb * g[q];
        }
    }
    for (int b = 0; b < kRows; ++b)
        for (int q = 0; q < NV; ++q) *reinterpret_cast<V*>(zp + b * ld + v + q * L) = s[b][q];
}

// rows [r0, r1), all of one member: the step on each block of kRows rows, then, while the
// block is still in L1, its share of the next step's output into uu
template <typename T, typename Act>
void update(int64_t r0, int64_t r1, int64_t p, int64_t n, int64_t npad, T* Z, T* A,
            const T* Gp, const T* cep, const T* fb_lr, const T* keep, T* beta, const T* lr,
            const T* lam, T* uu) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    // the block's rows of M and Z, npad apart: rows kMaxN apart (4 or 8 kB) all fell in
    // the same sets of L1 and stalled on 4k aliasing
    const int64_t ld = npad;
    alignas(kVecBytes) T m[kRows * kMaxN];
    alignas(kVecBytes) T zp[kRows * kMaxN];
    alignas(kVecBytes) T uacc[kMaxN];
    for (int64_t j = 0; j < npad; ++j) uacc[j] = T(0);
    for (int64_t j = 0; j < kRows * ld; ++j) m[j] = zp[j] = T(0);
    const int64_t member = r0 / p;
    const T* c = cep + member * npad;
    const T kp = keep ? keep[member] : T(1);
    const T lr_m = lr[member], lam_m = lam[member];

    for (int64_t r = r0; r < r1; r += kRows) {
        const int64_t rb = std::min<int64_t>(kRows, r1 - r);
        for (int64_t b = 0; b < rb; ++b) {
            const int64_t row = r + b;
            const T* z = Z + row * n;
            T* a = A ? A + row * n : nullptr;
            T* zb = zp + b * ld;
            T* mb = m + b * ld;
            const T f = fb_lr[row];
            // the padding must be 0 again: a diverging row (m = inf) leaves inf * 0 = NaN
            // there, which would reach the next rows' reductions (other members)
            load_row(n, npad, z, zb, row + 1 < r1);
            V acc = {};
            for (int64_t v = 0; v < npad; v += L) {
                const V zv = *reinterpret_cast<const V*>(zb + v);
                const V cv = *reinterpret_cast<const V*>(c + v);
                V psi, dpsi;
                Act::eval(zv, psi, dpsi);
                acc += psi * cv;
                *reinterpret_cast<V*>(mb + v) = (f * dpsi) * cv;  // 0 where c is padding
                if (keep) *reinterpret_cast<V*>(zb + v) = kp * zv;
            }
            T d = 0;
            for (int64_t l = 0; l < L; ++l) d += acc[l];
            beta[row] -= lr_m * (d + lam_m * beta[row]);
            if (!a) {
                // no weights kept: Z and beta are the whole state
            } else if (keep) {
                for (int64_t j = 0; j < n; ++j) a[j] = kp * a[j] - mb[j];
            } else {
                for (int64_t j = 0; j < n; ++j) a[j] -= mb[j];
            }
        }
        for (int64_t b = rb; b < kRows; ++b)  // a short last block: rows of zeros
            for (int64_t j = 0; j < n; ++j) m[b * ld + j] = T(0);
        // zp[b] -= m[b] G in panels of kPanel column vectors: kRows x kPanel accumulators
        // in registers, each load of G shared by the kRows rows
        int64_t v = 0;
        for (; v + kPanel * L <= npad; v += kPanel * L)
            panel<T, kPanel>(n, npad, v, Gp, m, zp, ld);
        switch ((npad - v) / L) {
            case 3: panel<T, 3>(n, npad, v, Gp, m, zp, ld); break;
            case 2: panel<T, 2>(n, npad, v, Gp, m, zp, ld); break;
            case 1: panel<T, 1>(n, npad, v, Gp, m, zp, ld); break;
            default: break;
        }
        for (int64_t b = 0; b < rb; ++b) {
            const int64_t row = r + b;
            T* z = Z + row * n;
            for (int64_t j = 0; j < n; ++j) z[j] = zp[b * ld + j];
            accumulate<T, Act>(npad, zp + b * ld, beta[row], uacc);
        }
    }
    for (int64_t j = 0; j < n; ++j) uu[j] += uacc[j];
}

// Work is cut into units of kUnit rows of one member; each unit adds its rows' share of
// u into its own (n) slot of u_units (k, units_per_member, n), and the slots are summed
// in order afterwards. So the numbers depend neither on the thread count nor on how the
// engine chunks the members.
constexpr int64_t kUnit = 256;

inline int64_t units_per_member(int64_t p) { return (p + kUnit - 1) / kUnit; }

template <typename T>
void sum_units(int64_t k, int64_t p, int64_t n, const T* u_units, T* u) {
    const int64_t nu = units_per_member(p);
#pragma omp for schedule(static)
    for (int64_t member = 0; member < k; ++member) {
        T* out = u + member * n;
        for (int64_t j = 0; j < n; ++j) out[j] = T(0);
        for (int64_t q = 0; q < nu; ++q) {
            const T* part = u_units + (member * nu + q) * n;
            for (int64_t j = 0; j < n; ++j) out[j] += part[j];
        }
    }
}

// work(r0, r1, slot) for every unit, on `threads` threads; then u = the slots' sums
template <typename T, typename Work>
void for_each_unit(int64_t k, int64_t p, int64_t n, T* u_units, T* u, int threads,
                   const Work& work) {
    const int64_t nu = units_per_member(p);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < k * nu; ++unit) {
            const int64_t member = unit / nu, q = unit - member * nu;
            T* slot = u_units + unit * n;
            for (int64_t j = 0; j < n; ++j) slot[j] = T(0);
            work(member * p + q * kUnit, member * p + std::min(p, (q + 1) * kUnit), slot);
        }
        sum_units<T>(k, p, n, u_units, u);
    }
}

template <typename T, typename Act>
void forward_all(int64_t k, int64_t p, int64_t n, int64_t npad, const T* Z, const T* beta,
                 T* u_units, T* u, int threads) {
    for_each_unit<T>(k, p, n, u_units, u, threads, [&](int64_t r0, int64_t r1, T* slot) {
        forward<T, Act>(r0, r1, n, npad, Z, beta, slot);
    });
}

template <typename T, typename Act>
void update_all(int64_t k, int64_t p, int64_t n, int64_t npad, T* Z, T* A, const T* Gp,
                int64_t g_stride, const T* cep, const T* fb_lr, const T* keep, T* beta,
                const T* lr, const T* lam, T* u_units, T* u, int threads) {
    for_each_unit<T>(k, p, n, u_units, u, threads, [&](int64_t r0, int64_t r1, T* slot) {
        const T* G = Gp + (r0 / p) * g_stride;  // a unit's rows are one member's
        update<T, Act>(r0, r1, p, n, npad, Z, A, G, cep, fb_lr, keep, beta, lr, lam, slot);
    });
}

}  // namespace

// OpenMP here is the runtime torch already loaded (same soname), so these threads are
// torch's own pool, not a second one competing for the cores.
extern "C" {

int64_t fa_max_n() { return kMaxN; }
int64_t fa_vec_bytes() { return kVecBytes; }
int64_t fa_panel() { return kPanel; }
int64_t fa_units_per_member(int64_t p) { return units_per_member(p); }

// for the tests: psi and psi' of n values (n a multiple of the vector length)
void fa_eval_tanh_f32(int64_t n, const float* z, float* psi, float* dpsi) {
    typedef Vec<float>::type V;
    for (int64_t i = 0; i < n; i += kVecBytes / 4)
        Tanh::eval(*reinterpret_cast<const V*>(z + i), *reinterpret_cast<V*>(psi + i),
                   *reinterpret_cast<V*>(dpsi + i));
}
void fa_eval_tanh_f64(int64_t n, const double* z, double* psi, double* dpsi) {
    typedef Vec<double>::type V;
    for (int64_t i = 0; i < n; i += kVecBytes / 8)
        Tanh::eval(*reinterpret_cast<const V*>(z + i), *reinterpret_cast<V*>(psi + i),
                   *reinterpret_cast<V*>(dpsi + i));
}

#define FA_KERNELS(ACT, NAME, T, SUF)                                                       \
    void fa_forward_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, int64_t npad,           \
                                   const T* Z, const T* beta, T* u_units, T* u,             \
                                   int threads) {                                           \
        forward_all<T, ACT>(k, p, n, npad, Z, beta, u_units, u, threads);                   \
    }                                                                                       \
    void fa_update_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, int64_t npad, T* Z,      \
                                  T* A, const T* Gp, int64_t g_stride, const T* cep,        \
                                  const T* fb_lr, const T* keep, T* beta, const T* lr,      \
                                  const T* lam, T* u_units, T* u, int threads) {            \
        update_all<T, ACT>(k, p, n, npad, Z, A, Gp, g_stride, cep, fb_lr, keep, beta, lr,   \
                           lam, u_units, u, threads);                                       \
    }

FA_KERNELS(ReLU, relu, float, f32)
FA_KERNELS(ReLU, relu, double, f64)
FA_KERNELS(Tanh, tanh, float, f32)
FA_KERNELS(Tanh, tanh, double, f64)

}  // extern "C"
