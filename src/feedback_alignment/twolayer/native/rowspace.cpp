// One step of the row-space path (ReLU or tanh), each number of Z and A touched once.
//
// Z holds the pre-activations W X^T, A the row-space coordinates of W - s W_b (or
// nothing: A = null when the fit keeps no weights), both (k, p, n) in column layout:
// member by member, column j (sample j) is a run of p numbers, one per hidden unit, so a
// block of units is a run of memory in every column. G = X X^T (n, n), one shared by all
// members (g_stride = 0) or one per member (g_stride = n n); ce (k, n). For the rows
// [r0, r1) of the k p rows (row = member p + unit):
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
// m G), in one pass over memory instead of nine. Every operation runs on vectors of
// consecutive units (GCC vector extensions, so the compiler picks AVX-512, AVX2 or NEON
// for the host): no padding of n to the vector length, and no sum across a vector's lanes
// but one per column and unit block of rows. m G is done a block of units at a time in
// registers. tanh is computed here as t / (t + 2), t = expm1(2|z|) (range reduction and
// a Taylor polynomial, a few ulp from libm's), psi' = 1 - tanh^2 from the same t. Float
// rounding differs from the torch path only there and in the order of the sums. NaN stays
// NaN through psi, as in torch, so a diverging run is still seen by its MSE.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

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
// The product's register block, for a block of kPanel vectors of units: kRows columns x
// kPanel vectors of accumulators, plus kPanel vectors of M and one broadcast of G, must
// fit in the vector registers, else the compiler reloads from memory for every FMA. Per
// i a block does kRows x kPanel FMAs for kPanel loads of M and kRows broadcasts of G.
// 6 x 4 (29 registers) with AVX-512's 32, 6 x 2 (15) with the 16 of AVX2, SSE and NEON.
// On AVX-512 (AMD EPYC, 2 threads, p = 3200 and 12800), 6 x 4 ran 6-12 % faster than
// 6 x 2, the best of 4 x 4, 8 x 3, 5 x 5 and 12 x 2 (docs/performance.md).
#ifndef FA_ROWS
#define FA_ROWS 6
#endif
#ifndef FA_PANEL
#define FA_PANEL (FA_VEC_REGS >= 32 ? 4 : 2)
#endif
constexpr int kRows = FA_ROWS;
constexpr int kPanel = FA_PANEL;
static_assert(kRows * kPanel + kPanel + 1 <= FA_VEC_REGS, "register block too large");
constexpr int64_t kMaxN = 1024;  // most samples n (the scratch is n vectors a block)

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

template <typename T>
inline typename Vec<T>::type load(const T* x) {
    typename Vec<T>::type v;
    std::memcpy(&v, x, sizeof(v));  // a column of Z starts at any multiple of T
    return v;
}
template <typename T>
inline void store(T* x, typename Vec<T>::type v) {
    std::memcpy(x, &v, sizeof(v));
}

// One thread's scratch, reused from call to call: M's block (n x kPanel vectors), the
// next output's per-column partial sums (n vectors), and a short block's padded copies.
template <typename T>
struct Scratch {
    static constexpr int64_t L = kVecBytes / sizeof(T), U = kPanel * L;
    struct alignas(kVecBytes) Lanes {
        T x[L];
    };
    std::vector<Lanes> m, uacc;  // (C++17's new aligns them)
    std::vector<T> z, a, f, beta;
    void fit(int64_t n) {
        if (int64_t(uacc.size()) >= n) return;
        m.assign(n * kPanel, Lanes{});
        uacc.assign(n, Lanes{});
        z.assign(n * U, T(0));
        a.assign(n * U, T(0));
        f.assign(U, T(0));
        beta.assign(U, T(0));
    }
};
template <typename T>
Scratch<T>& scratch(int64_t n) {
    static thread_local Scratch<T> s;
    s.fit(n);
    return s;
}

// A block: NV L consecutive hidden units of one member (NV = kPanel, fewer in a short
// last block). z points at its first unit in column 0, column j at z + j ld (ld = p, or
// NV L in a padded copy); a likewise (or null); f and beta at its first unit.

// uacc[j] += beta psi(z[j]) for the block's columns j
template <typename T, typename Act, int NV>
inline void forward_block(int64_t n, int64_t ld, const T* z, const T* beta, T* uacc) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V b[NV];
    for (int q = 0; q < NV; ++q) b[q] = load(beta + q * L);
    for (int64_t j = 0; j < n; ++j) {
        V acc = *reinterpret_cast<V*>(uacc + j * L);
        for (int q = 0; q < NV; ++q) {
            V psi, dpsi;
            Act::eval(load(z + j * ld + q * L), psi, dpsi);
            acc += b[q] * psi;
        }
        *reinterpret_cast<V*>(uacc + j * L) = acc;
    }
}

// columns [j0, j0 + NR) of the block: z[j] <- keep z[j] - sum_i G[i, j] m[i], with NR x NV
// accumulators in registers (each load of m serves NR columns, each broadcast of G NV
// vectors); then, from the registers, the next output's share uacc[j] += beta psi(z[j])
template <typename T, typename Act, int NV, int NR>
inline void product(int64_t n, int64_t ld, int64_t j0, T* z, const T* G, const T* m, T kp,
                    bool keep, const typename Vec<T>::type* b, T* uacc) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V s[NR][NV];
    for (int c = 0; c < NR; ++c)
        for (int q = 0; q < NV; ++q) {
            const V zv = load(z + (j0 + c) * ld + q * L);
            s[c][q] = keep ? kp * zv : zv;
        }
    for (int64_t i = 0; i < n; ++i) {
        V mv[NV];
        for (int q = 0; q < NV; ++q) mv[q] = *reinterpret_cast<const V*>(m + (i * NV + q) * L);
        const T* g = G + i * n + j0;
        for (int c = 0; c < NR; ++c) {
            const T gc = g[c];
            for (int q = 0; q < NV; ++q) s[c][q] -= gc * mv[q];
        }
    }
    for (int c = 0; c < NR; ++c) {
        V acc = *reinterpret_cast<V*>(uacc + (j0 + c) * L);
        for (int q = 0; q < NV; ++q) {
            store(z + (j0 + c) * ld + q * L, s[c][q]);
            V psi, dpsi;
            Act::eval(s[c][q], psi, dpsi);
            acc += b[q] * psi;
        }
        *reinterpret_cast<V*>(uacc + (j0 + c) * L) = acc;
    }
}

// the last n mod kRows columns, as one block of NR = that many
template <typename T, typename Act, int NV, int NR = kRows - 1>
inline void product_rest(int64_t rest, int64_t n, int64_t ld, int64_t j0, T* z, const T* G,
                         const T* m, T kp, bool keep, const typename Vec<T>::type* b,
                         T* uacc) {
    if constexpr (NR > 0) {
        if (rest == NR) return product<T, Act, NV, NR>(n, ld, j0, z, G, m, kp, keep, b, uacc);
        product_rest<T, Act, NV, NR - 1>(rest, n, ld, j0, z, G, m, kp, keep, b, uacc);
    }
}

// the step on one block (see the top of the file), and its share of the next output
template <typename T, typename Act, int NV>
inline void update_block(int64_t n, int64_t ld, T* z, T* a, const T* G, const T* ce,
                         const T* f, T kp, bool keep, T* beta, T lr_m, T lam_m, T* m,
                         T* uacc) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V fv[NV], d[NV];
    for (int q = 0; q < NV; ++q) fv[q] = load(f + q * L), d[q] = V{};
    // m = fb_lr psi'(z) ce, d = psi(z) . ce, a <- keep a - m: one pass over the block
    for (int64_t j = 0; j < n; ++j) {
        const T cj = ce[j];
        for (int q = 0; q < NV; ++q) {
            V psi, dpsi;
            Act::eval(load(z + j * ld + q * L), psi, dpsi);
            d[q] += psi * cj;
            const V mv = (fv[q] * dpsi) * cj;
            *reinterpret_cast<V*>(m + (j * NV + q) * L) = mv;
            if (a) {
                T* aj = a + j * ld + q * L;
                store(aj, (keep ? kp * load(aj) : load(aj)) - mv);
            }
        }
    }
    V b[NV];
    for (int q = 0; q < NV; ++q) {
        const V bv = load(beta + q * L);
        b[q] = bv - lr_m * (d[q] + lam_m * bv);
        store(beta + q * L, b[q]);
    }
    int64_t j0 = 0;
    for (; j0 + kRows <= n; j0 += kRows)
        product<T, Act, NV, kRows>(n, ld, j0, z, G, m, kp, keep, b, uacc);
    product_rest<T, Act, NV>(n - j0, n, ld, j0, z, G, m, kp, keep, b, uacc);
}

// What one unit's rows share: the member's columns and settings, the thread's scratch.
template <typename T>
struct Rows {
    int64_t p, n;
    T *Z, *A;  // the member's columns (A: null, or as Z)
    const T *G, *ce, *fb_lr;
    T kp;
    bool keep;
    T *beta, lr_m, lam_m;
    T *m, *uacc;
};

// the block of NV vectors at unit rr of the member (its index r among all rows)
template <typename T, typename Act, bool Update, int NV>
inline void full_block(const Rows<T>& w, int64_t rr, int64_t r) {
    if (Update)
        update_block<T, Act, NV>(w.n, w.p, w.Z + rr, w.A ? w.A + rr : nullptr, w.G, w.ce,
                                 w.fb_lr + r, w.kp, w.keep, w.beta + r, w.lr_m, w.lam_m, w.m,
                                 w.uacc);
    else
        forward_block<T, Act, NV>(w.n, w.p, w.Z + rr, w.beta + r, w.uacc);
}

// the last cnt < kPanel L units, in NV = ceil(cnt / L) vectors: run on a copy padded
// with zero units (zero z, a, f and beta add 0 to d and to u), copied back
template <typename T, typename Act, bool Update, int NV = kPanel>
inline void short_block(const Rows<T>& w, Scratch<T>& s, int64_t rr, int64_t r, int64_t cnt) {
    constexpr int64_t L = kVecBytes / sizeof(T), U = NV * L;
    if constexpr (NV > 1) {
        if (cnt <= (NV - 1) * L) return short_block<T, Act, Update, NV - 1>(w, s, rr, r, cnt);
    }
    const int64_t n = w.n, p = w.p;
    T* zc = s.z.data();
    T* ac = w.A ? s.a.data() : nullptr;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < U; ++c) {
            zc[j * U + c] = c < cnt ? w.Z[j * p + rr + c] : T(0);
            if (ac) ac[j * U + c] = c < cnt ? w.A[j * p + rr + c] : T(0);
        }
    for (int64_t c = 0; c < U; ++c) {
        s.beta[c] = c < cnt ? w.beta[r + c] : T(0);
        s.f[c] = c < cnt && Update ? w.fb_lr[r + c] : T(0);
    }
    if (!Update) return forward_block<T, Act, NV>(n, U, zc, s.beta.data(), w.uacc);
    update_block<T, Act, NV>(n, U, zc, ac, w.G, w.ce, s.f.data(), w.kp, w.keep, s.beta.data(),
                             w.lr_m, w.lam_m, w.m, w.uacc);
    for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < cnt; ++c) {
            w.Z[j * p + rr + c] = zc[j * U + c];
            if (ac) w.A[j * p + rr + c] = ac[j * U + c];
        }
    for (int64_t c = 0; c < cnt; ++c) w.beta[r + c] = s.beta[c];
}

// rows [r0, r1), all of one member, in blocks of kPanel L units; uu is the unit's (n) slot
// of u
template <typename T, typename Act, bool Update>
void run_rows(int64_t r0, int64_t r1, int64_t p, int64_t n, T* Z, T* A, const T* G,
              const T* ce, const T* fb_lr, T kp, bool keep, T* beta, T lr_m, T lam_m, T* uu) {
    constexpr int64_t L = kVecBytes / sizeof(T), U = kPanel * L;
    Scratch<T>& s = scratch<T>(n);
    std::fill(s.uacc.begin(), s.uacc.begin() + n, typename Scratch<T>::Lanes{});
    const int64_t member = r0 / p;
    const Rows<T> w{p,    n,    Z + member * n * p, A ? A + member * n * p : nullptr,
                    G,    ce,   fb_lr,              kp,
                    keep, beta, lr_m,               lam_m,
                    reinterpret_cast<T*>(s.m.data()), reinterpret_cast<T*>(s.uacc.data())};
    int64_t r = r0;
    for (; r + U <= r1; r += U) full_block<T, Act, Update, kPanel>(w, r - member * p, r);
    if (r < r1) short_block<T, Act, Update>(w, s, r - member * p, r, r1 - r);
    for (int64_t j = 0; j < n; ++j) {  // the lanes' partial sums, in a fixed order
        T sum = T(0);
        for (int64_t l = 0; l < L; ++l) sum += w.uacc[j * L + l];
        uu[j] += sum;
    }
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
void forward_all(int64_t k, int64_t p, int64_t n, const T* Z, const T* beta, T* u_units, T* u,
                 int threads) {
    for_each_unit<T>(k, p, n, u_units, u, threads, [&](int64_t r0, int64_t r1, T* slot) {
        run_rows<T, Act, false>(r0, r1, p, n, const_cast<T*>(Z), nullptr, nullptr, nullptr,
                                nullptr, T(1), false, const_cast<T*>(beta), T(0), T(0), slot);
    });
}

template <typename T, typename Act>
void update_all(int64_t k, int64_t p, int64_t n, T* Z, T* A, const T* G, int64_t g_stride,
                const T* ce, const T* fb_lr, const T* keep, T* beta, const T* lr, const T* lam,
                T* u_units, T* u, int threads) {
    for_each_unit<T>(k, p, n, u_units, u, threads, [&](int64_t r0, int64_t r1, T* slot) {
        const int64_t member = r0 / p;  // a unit's rows are one member's
        run_rows<T, Act, true>(r0, r1, p, n, Z, A, G + member * g_stride, ce + member * n,
                               fb_lr, keep ? keep[member] : T(1), keep != nullptr, beta,
                               lr[member], lam[member], slot);
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
    void fa_forward_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, const T* Z,             \
                                   const T* beta, T* u_units, T* u, int threads) {          \
        forward_all<T, ACT>(k, p, n, Z, beta, u_units, u, threads);                         \
    }                                                                                       \
    void fa_update_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, T* Z, T* A, const T* G,  \
                                  int64_t g_stride, const T* ce, const T* fb_lr,            \
                                  const T* keep, T* beta, const T* lr, const T* lam,        \
                                  T* u_units, T* u, int threads) {                          \
        update_all<T, ACT>(k, p, n, Z, A, G, g_stride, ce, fb_lr, keep, beta, lr, lam,      \
                           u_units, u, threads);                                            \
    }

FA_KERNELS(ReLU, relu, float, f32)
FA_KERNELS(ReLU, relu, double, f64)
FA_KERNELS(Tanh, tanh, float, f32)
FA_KERNELS(Tanh, tanh, double, f64)

}  // extern "C"
