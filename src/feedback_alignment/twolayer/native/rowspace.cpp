// One step of the row-space path (linear, ReLU, tanh or sigmoid), each number of Z and A
// touched once.
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
// fa_steps_* takes several such steps in one call, forming each step's
// error e = u / sqrt p - y and ce = e c_p from the output as the engine does (run_steps).
//
// With dropout, psi and psi' are times this step's scaled masks and the next forward's
// psi times the next step's; the kernels draw the masks where they use them (keep_scale).
//
// which is what paths.RowSpacePath and the engine do with torch ops (an in-place GEMM for
// m G), in one pass over memory instead of nine. Every operation runs on vectors of
// consecutive units (GCC vector extensions, so the compiler picks AVX-512, AVX2 or NEON
// for the host): no padding of n to the vector length, and no sum across a vector's lanes
// but one per column and unit block of rows. m G is done a block of units at a time in
// registers. tanh is computed here as t / (t + 2), t = expm1(2|z|) (range reduction and
// a Taylor polynomial, a few ulp from libm's), psi' = 1 - tanh^2 from the same t; sigmoid
// from t = expm1(|z|) likewise. Float
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

// The build compiles the float and the double kernels apart, side by side (FA_PART 32 and
// 64: each half the time), and links them; FA_PART 0 (unset) compiles both.
#ifndef FA_PART
#define FA_PART 0
#endif
#define FA_WITH_F32 (FA_PART == 0 || FA_PART == 32)
#define FA_WITH_F64 (FA_PART == 0 || FA_PART == 64)

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

// expm1(S a) for 0 <= S a <= 88 in float, 709 in double (or NaN), S = 1 or 2 (tanh takes
// expm1(2 |z|)): S a = k ln2 + r, |r| <= ln2 / 2, expm1(S a) = 2^k expm1(r) + (2^k - 1),
// expm1(r) by its Taylor series. k = rint(S a / ln2) is taken with the round-to-nearest of
// adding 1.5 2^mant + bias (its low mantissa bits then hold bias + k: no tie in this range),
// so there is no float-to-integer conversion (AVX2 has none for 64-bit integers: the
// compiler went lane by lane there) and 2^k is those bits shifted into the exponent field.
// S is folded into the constants, never multiplied in: h = r / S is reduced from a, and
// expm1(r) = h P(h) with P's terms times powers of S, so every rounding is that of the
// same steps on x = S a scaled by a power of two (the same numbers as S a formed first,
// two operations fewer a vector).
template <typename T, int S = 1>
inline typename Vec<T>::type vexpm1(typename Vec<T>::type a) {
    static_assert(S == 1 || S == 2, "S is 1 or 2");
    typedef typename Vec<T>::type V;
    typedef typename Bits<T>::I I;
    const T ln2_hi = T(0.693145751953125), ln2_lo = T(1.42860682030941723212e-6);
    const T magic = T(1.5) * T(int64_t(1) << Bits<T>::kMant) + T(Bits<T>::kBias);
    const V s = a * (T(S) * T(1.44269504088896340736)) + magic;  // magic + rint(S a / ln2)
    const V kf = s - magic;
    const V h = (a - kf * (ln2_hi / T(S))) - kf * (ln2_lo / T(S));  // r / S
    constexpr int kTerms = sizeof(T) == 4 ? FA_EXPM1_TERMS_F32 : FA_EXPM1_TERMS_F64;
    T coef = T(1), scale = T(1);
    T coefs[kTerms];  // S/1!, S^2/2!, ..., S^kTerms/kTerms!
    for (int i = 1; i <= kTerms; ++i) coefs[i - 1] = (coef /= T(i)) * (scale *= T(S));
    V poly = V{} + coefs[kTerms - 1];  // S/1! + S^2 h/2! + ... (S times expm1's in r)
    for (int i = kTerms - 2; i >= 0; --i) poly = poly * h + coefs[i];
    const V em1 = h * poly;  // expm1(r)
    // the low bits of s are bias + k (0 <= k < 2^(exponent bits - 1)): shifted into the
    // exponent field they are 2^k; the bits above shift out
    const V two_k = (V)((I)s << Bits<T>::kMant);
    return two_k * em1 + (two_k - T(1));
}

struct Linear {
    template <typename V>
    static inline void eval(V z, V& psi, V& dpsi) {
        psi = z;
        dpsi = V{} + 1;
    }
};

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
        const V t = vexpm1<T, 2>(a);  // expm1(2 |z|)
        const V th = t / (t + T(2));
        psi = (V)((I)th ^ sign);
        dpsi = T(1) - th * th;
    }
};

struct Sigmoid {
    // sigmoid(-|z|) = r = 1 / (t + 2) and sigmoid(|z|) = 1 - r, t = expm1(|z|),
    // picked by z's sign; psi' = psi (1 - psi), as activations.py writes it. |z| is clamped
    // where e^|z| would overflow (88 in float, 709 in double): below -88 (-709) psi is
    // 1 / (e^88 + 1) = 6e-39 (1e-308) instead of smaller (torch's is subnormal there).
    template <typename V>
    static inline void eval(V z, V& psi, V& dpsi) {
        typedef decltype(z[0] + 0) T;
        typedef typename Bits<T>::I I;
        constexpr T kMax = sizeof(T) == 4 ? T(88) : T(709);
        const I sign = (I)z & Bits<T>::kSign;
        V a = (V)((I)z ^ sign);             // |z|; NaN stays NaN
        a = a > kMax ? V{} + kMax : a;      // NaN compares false: kept
        const V t = vexpm1<T>(a);
        const V r = T(1) / (t + T(2));      // <= 1/2, so 1 - r rounds once, at >= 1/2
        psi = sign != 0 ? r : T(1) - r;
        dpsi = psi * (T(1) - psi);
    }
};

// ---- dropout masks (dropout.py: keep_bits): counter-based, so the kernels draw them where
// they use them. Step t of a member with key K has the key mix64(K + (t + 1) gamma)
// (step_key); unit r of sample j is kept iff word
// (r & 1) of mix64(key + (j ceil(p/2) + r / 2 + 1) gamma) (SplitMix64's output function)
// is >= thr, and then scaled by 1 / (1 - q).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "word 0 of a pair is its low half");
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;
typedef uint64_t U64 __attribute__((vector_size(kVecBytes)));
constexpr int kLanes64 = kVecBytes / 8;

template <typename U>  // uint64_t or U64
inline U mix64(U z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline uint64_t step_key(uint64_t key, int64_t t) { return mix64(key + uint64_t(t + 1) * kGamma); }

inline U64 lane_index() {
    U64 l;
    for (int i = 0; i < kLanes64; ++i) l[i] = uint64_t(i);
    return l;
}

// one member's masks at one step
template <typename T>
struct Drop {
    uint64_t key, thr;
    T scale;
    int64_t half;  // ceil(p / 2): pairs of units per sample
};

// the masks' factors (scale or 0) of units r0 .. r0 + L - 1 (r0 even) of sample j
template <typename T>
inline typename Vec<T>::type keep_scale(const Drop<T>& d, int64_t j, int64_t r0) {
    typedef typename Vec<T>::type V;
    const uint64_t pair = uint64_t(j * d.half + r0 / 2) + 1;
    const U64 lane = lane_index();
    if constexpr (sizeof(T) == 4) {  // a lane per pair: its two words are two units
        typedef uint32_t U32 __attribute__((vector_size(kVecBytes)));
        typedef int32_t I32 __attribute__((vector_size(kVecBytes)));
        const U64 w = mix64((U64{} + (d.key + pair * kGamma)) + lane * kGamma);
        const I32 keep = (U32)w >= uint32_t(d.thr);
        return (V)((I32)(V{} + d.scale) & keep);
    } else {  // a lane per unit: word (r & 1) of its pair's
        typedef int64_t I64 __attribute__((vector_size(kVecBytes)));
        const U64 w = mix64(U64{} + d.key + (pair + (lane >> 1)) * kGamma);
        const U64 bits = (w >> ((lane & 1) << 5)) & 0xFFFFFFFFull;
        const I64 keep = bits >= d.thr;
        return (V)((I64)(V{} + d.scale) & keep);
    }
}

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

// What the blocks of one work unit share: the member's columns and settings, its masks
// (null without dropout: `Masked` false) and the thread's scratch.
template <typename T>
struct Rows {
    int64_t p, n;
    T *Z, *A;  // the member's columns (A: null, or as Z)
    const T *G, *ce, *fb_lr;
    T kp;
    bool keep;
    T *beta, lr_m, lam_m;
    const Drop<T>*now, *next;  // this step's masks and the next's
    T *m, *uacc;
};

// A block: NV L consecutive hidden units of one member, from unit r0 (of the member). z
// points at its first unit in column 0, column j at z + j ld (ld = p, or NV L in a padded
// copy); a likewise (or null); f (fb_lr) and beta at its first unit.
template <typename T>
struct Block {
    int64_t ld, r0, valid;  // valid: its real units (fewer than NV L in a padded copy)
    T *z, *a;
    const T* f;
    T* beta;
};

// psi and psi' of z (units r0 + q L .. of sample j), times this step's masks if any
template <typename T, typename Act, bool Masked>
inline void eval_now(const Rows<T>& w, typename Vec<T>::type z, int64_t j, int64_t r,
                     typename Vec<T>::type& psi, typename Vec<T>::type& dpsi) {
    Act::eval(z, psi, dpsi);
    if constexpr (Masked) {
        const typename Vec<T>::type s = keep_scale(*w.now, j, r);
        psi = psi * s, dpsi = dpsi * s;
    }
}

// uacc[j] += beta psi(z[j]) for the block's columns j
template <typename T, typename Act, int NV, bool Masked>
inline void forward_block(const Rows<T>& w, const Block<T>& k) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V b[NV];
    for (int q = 0; q < NV; ++q) b[q] = load(k.beta + q * L);
    for (int64_t j = 0; j < w.n; ++j) {
        V acc = *reinterpret_cast<V*>(w.uacc + j * L);
        for (int q = 0; q < NV; ++q) {
            V psi, dpsi;
            eval_now<T, Act, Masked>(w, load(k.z + j * k.ld + q * L), j, k.r0 + q * L, psi,
                                     dpsi);
            acc += b[q] * psi;
        }
        *reinterpret_cast<V*>(w.uacc + j * L) = acc;
    }
}

// columns [j0, j0 + NR) of the block: z[j] <- keep z[j] - sum_i G[i, j] m[i], with NR x NV
// accumulators in registers (each load of m serves NR columns, each broadcast of G NV
// vectors); then, from the registers, the next output's share uacc[j] += beta psi(z[j])
// (times the next step's masks if any)
template <typename T, typename Act, int NV, int NR, bool Masked>
inline void product(const Rows<T>& w, const Block<T>& k, int64_t j0,
                    const typename Vec<T>::type* b) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    const int64_t n = w.n, ld = k.ld;
    T* z = k.z;
    V s[NR][NV];
    for (int c = 0; c < NR; ++c)
        for (int q = 0; q < NV; ++q) {
            const V zv = load(z + (j0 + c) * ld + q * L);
            s[c][q] = w.keep ? w.kp * zv : zv;
        }
    for (int64_t i = 0; i < n; ++i) {
        V mv[NV];
        for (int q = 0; q < NV; ++q) mv[q] = *reinterpret_cast<const V*>(w.m + (i * NV + q) * L);
        const T* g = w.G + i * n + j0;
        for (int c = 0; c < NR; ++c) {
            const T gc = g[c];
            for (int q = 0; q < NV; ++q) s[c][q] -= gc * mv[q];
        }
    }
    for (int c = 0; c < NR; ++c) {
        V acc = *reinterpret_cast<V*>(w.uacc + (j0 + c) * L);
        for (int q = 0; q < NV; ++q) {
            store(z + (j0 + c) * ld + q * L, s[c][q]);
            V psi, dpsi;
            Act::eval(s[c][q], psi, dpsi);
            if constexpr (Masked) psi = psi * keep_scale(*w.next, j0 + c, k.r0 + q * L);
            acc += b[q] * psi;
        }
        *reinterpret_cast<V*>(w.uacc + (j0 + c) * L) = acc;
    }
}

// the step on one block (see the top of the file), and its share of the next output
template <typename T, typename Act, int NV, bool Masked>
inline void update_block(const Rows<T>& w, const Block<T>& k) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    const int64_t n = w.n;
    V fv[NV], d[NV];
    for (int q = 0; q < NV; ++q) fv[q] = load(k.f + q * L), d[q] = V{};
    // m = fb_lr psi'(z) ce, d = psi(z) . ce, a <- keep a - m: one pass over the block.
    // The next block's part of column j is fetched meanwhile (a read hint into L2): a
    // block reads n columns p apart, more streams than the hardware prefetcher follows,
    // and tanh's work between loads left too few loads in flight (tanh at p = 12800 took
    // twice as long without it on an Intel Xeon: docs/performance.md). Prefetches past
    // the block's member or the array are hints, never faults.
    for (int64_t j = 0; j < n; ++j) {
        const T cj = w.ce[j];
        for (int q = 0; q < NV; ++q) {
            __builtin_prefetch(k.z + j * k.ld + (q + NV) * L, 0, 1);
            if (k.a) __builtin_prefetch(k.a + j * k.ld + (q + NV) * L, 0, 1);
        }
        for (int q = 0; q < NV; ++q) {
            V psi, dpsi;
            eval_now<T, Act, Masked>(w, load(k.z + j * k.ld + q * L), j, k.r0 + q * L, psi,
                                     dpsi);
            d[q] += psi * cj;
            const V mv = (fv[q] * dpsi) * cj;
            *reinterpret_cast<V*>(w.m + (j * NV + q) * L) = mv;
            if (k.a) {
                T* aj = k.a + j * k.ld + q * L;
                store(aj, (w.keep ? w.kp * load(aj) : load(aj)) - mv);
            }
        }
    }
    V b[NV];
    for (int q = 0; q < NV; ++q) {
        const V bv = load(k.beta + q * L);
        b[q] = bv - w.lr_m * (d[q] + w.lam_m * bv);
        store(k.beta + q * L, b[q]);
    }
    // a padded copy's zero units: beta stays 0 in the next output's share (their d is
    // psi(0) . ce, not 0 where psi(0) != 0: sigmoid)
    for (int64_t c = k.valid; c < NV * L; ++c) b[c / L][c % L] = T(0);
    // the columns in blocks of kRows, the last n mod kRows in pairs and a single: three
    // register blocks to compile per block width, not one per rest size (which doubled
    // the build time); n = 50 (the paper's) leaves one pair
    int64_t j0 = 0;
    for (; j0 + kRows <= n; j0 += kRows) product<T, Act, NV, kRows, Masked>(w, k, j0, b);
    for (; j0 + 2 <= n; j0 += 2) product<T, Act, NV, 2, Masked>(w, k, j0, b);
    if (j0 < n) product<T, Act, NV, 1, Masked>(w, k, j0, b);
}

template <typename T, typename Act, bool Update, int NV, bool Masked>
inline void run_block(const Rows<T>& w, const Block<T>& k) {
    if constexpr (Update)
        update_block<T, Act, NV, Masked>(w, k);
    else
        forward_block<T, Act, NV, Masked>(w, k);
}

// the last cnt < kPanel L units, from unit rr, in NV = ceil(cnt / L) vectors: run on a
// copy padded with zero units (zero z, a, f and beta: they add 0 to u), copied back
template <typename T, typename Act, bool Update, bool Masked, int NV = kPanel>
inline void short_block(const Rows<T>& w, Scratch<T>& s, int64_t rr, int64_t cnt) {
    constexpr int64_t L = kVecBytes / sizeof(T), U = NV * L;
    if constexpr (NV > 1) {
        if (cnt <= (NV - 1) * L) return short_block<T, Act, Update, Masked, NV - 1>(w, s, rr, cnt);
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
        s.beta[c] = c < cnt ? w.beta[rr + c] : T(0);
        s.f[c] = c < cnt && Update ? w.fb_lr[rr + c] : T(0);
    }
    run_block<T, Act, Update, NV, Masked>(w,
                                          Block<T>{U, rr, cnt, zc, ac, s.f.data(), s.beta.data()});
    if (!Update) return;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t c = 0; c < cnt; ++c) {
            w.Z[j * p + rr + c] = zc[j * U + c];
            if (ac) w.A[j * p + rr + c] = ac[j * U + c];
        }
    for (int64_t c = 0; c < cnt; ++c) w.beta[rr + c] = s.beta[c];
}

// The settings of one call, as the engine passes them (pointers to all members')
template <typename T>
struct Step {
    int64_t k, p, n;
    T *Z, *A;
    const T* G;
    int64_t g_stride;
    const T *ce, *fb_lr, *keep;
    T* beta;
    const T *lr, *lam;
    const uint64_t *keys, *thr;  // the members' keys and thresholds (null: no dropout)
    int64_t t;                   // this step (the masks' counter)
    const T* scale;
};

// rows [r0, r1), all of one member, in blocks of kPanel L units; uu is the unit's (n) slot
// of u
template <typename T, typename Act, bool Update, bool Masked>
void run_rows(const Step<T>& c, int64_t r0, int64_t r1, T* uu) {
    constexpr int64_t L = kVecBytes / sizeof(T), U = kPanel * L;
    const int64_t p = c.p, n = c.n, member = r0 / p;
    Scratch<T>& s = scratch<T>(n);
    std::fill(s.uacc.begin(), s.uacc.begin() + n, typename Scratch<T>::Lanes{});
    Drop<T> now{}, next{};
    if constexpr (Masked) {
        const int64_t half = (p + 1) / 2;
        const uint64_t key = c.keys[member], thr = c.thr[member];
        now = Drop<T>{step_key(key, c.t), thr, c.scale[member], half};
        if (Update) next = Drop<T>{step_key(key, c.t + 1), thr, c.scale[member], half};
    }
    const Rows<T> w{p,
                    n,
                    c.Z + member * n * p,
                    c.A ? c.A + member * n * p : nullptr,
                    Update ? c.G + member * c.g_stride : nullptr,
                    Update ? c.ce + member * n : nullptr,
                    Update ? c.fb_lr + member * p : nullptr,
                    c.keep ? c.keep[member] : T(1),
                    c.keep != nullptr,
                    c.beta + member * p,
                    Update ? c.lr[member] : T(0),
                    Update ? c.lam[member] : T(0),
                    &now,
                    &next,
                    reinterpret_cast<T*>(s.m.data()),
                    reinterpret_cast<T*>(s.uacc.data())};
    int64_t rr = r0 - member * p;
    const int64_t end = r1 - member * p;
    for (; rr + U <= end; rr += U) {
        T* a = w.A ? w.A + rr : nullptr;
        const T* f = Update ? w.fb_lr + rr : nullptr;
        run_block<T, Act, Update, kPanel, Masked>(w, Block<T>{p, rr, U, w.Z + rr, a, f, w.beta + rr});
    }
    if (rr < end) short_block<T, Act, Update, Masked>(w, s, rr, end - rr);
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

// forward (Update false: u = beta^T psi(Z), times this step's masks) or the step
template <typename T, typename Act, bool Update>
void run_all(const Step<T>& c, T* u_units, T* u, int threads) {
    for_each_unit<T>(c.k, c.p, c.n, u_units, u, threads, [&](int64_t r0, int64_t r1, T* slot) {
        if (c.keys)
            run_rows<T, Act, Update, true>(c, r0, r1, slot);
        else
            run_rows<T, Act, Update, false>(c, r0, r1, slot);
    });
}

// `steps` steps from the raw output u (k, n: beta^T psi(Z), as an update leaves it), the
// first step c.t: at each, e = u / sqrt_p - y (written to e_out, (steps, k, n)) and ce =
// e c_p, then the update with ce (and that step's masks, if c.keys), which leaves the next
// raw output in u. A member whose fb_beta flag is set (backprop) takes fb_lr = beta lr,
// formed afresh each step from its beta; the others keep c.fb_lr's rows. The engine's
// loop takes these steps one at a time with the same roundings in torch ops (u / sqrt p,
// - y, * c_p; beta * lr), so the numbers are the same; here they cost no call from Python
// a step.
template <typename T, typename Act>
void run_steps(int64_t steps, Step<T> c, const T* y, T sqrt_p, T c_p, const uint8_t* fb_beta,
               T* e_out, T* u_units, T* u, int threads) {
    const int64_t kn = c.k * c.n, t0 = c.t, p = c.p;
    std::vector<T> ce(kn), fb_lr;
    c.ce = ce.data();
    if (fb_beta) {
        fb_lr.assign(c.fb_lr, c.fb_lr + c.k * p);
        c.fb_lr = fb_lr.data();
    }
    for (int64_t s = 0; s < steps; ++s) {
        T* e = e_out + s * kn;
        for (int64_t i = 0; i < kn; ++i) {
            e[i] = u[i] / sqrt_p - y[i];
            ce[i] = e[i] * c_p;
        }
        if (fb_beta) {
#pragma omp parallel for num_threads(threads) schedule(static)
            for (int64_t m = 0; m < c.k; ++m) {
                if (!fb_beta[m]) continue;
                for (int64_t r = 0; r < p; ++r) fb_lr[m * p + r] = c.beta[m * p + r] * c.lr[m];
            }
        }
        c.t = t0 + s;
        run_all<T, Act, true>(c, u_units, u, threads);
    }
}

}  // namespace

// OpenMP here is the runtime torch already loaded (same soname), so these threads are
// torch's own pool, not a second one competing for the cores.
extern "C" {

#if FA_WITH_F32  // the functions of the whole library: in one part only
int64_t fa_max_n() { return kMaxN; }
int64_t fa_vec_bytes() { return kVecBytes; }
int64_t fa_panel() { return kPanel; }
int64_t fa_units_per_member(int64_t p) { return units_per_member(p); }
#endif

// for the tests: psi and psi' of n values (n a multiple of the vector length)
#define FA_EVAL(ACT, NAME, T, SUF)                                                          \
    void fa_eval_##NAME##_##SUF(int64_t n, const T* z, T* psi, T* dpsi) {                 \
        typedef Vec<T>::type V;                                                           \
        for (int64_t i = 0; i < n; i += kVecBytes / sizeof(T))                            \
            ACT::eval(*reinterpret_cast<const V*>(z + i), *reinterpret_cast<V*>(psi + i), \
                      *reinterpret_cast<V*>(dpsi + i));                                   \
    }

// keys, thr (uint64, k each), t and scale (k): the members' dropout masks at step t (the
// update's next output takes step t + 1's), or keys null (no dropout)
#define FA_KERNELS(ACT, NAME, T, SUF)                                                       \
    void fa_forward_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, const T* Z,             \
                                   const T* beta, const uint64_t* keys, int64_t t,          \
                                   const uint64_t* thr, const T* scale, T* u_units, T* u,   \
                                   int threads) {                                           \
        const Step<T> c{k,       p,       n,       const_cast<T*>(Z), nullptr, nullptr, 0,  \
                        nullptr, nullptr, nullptr, const_cast<T*>(beta), nullptr, nullptr,  \
                        keys,    thr,     t,       scale};                                  \
        run_all<T, ACT, false>(c, u_units, u, threads);                                     \
    }                                                                                       \
    void fa_update_##NAME##_##SUF(int64_t k, int64_t p, int64_t n, T* Z, T* A, const T* G,  \
                                  int64_t g_stride, const T* ce, const T* fb_lr,            \
                                  const T* keep, T* beta, const T* lr, const T* lam,        \
                                  const uint64_t* keys, int64_t t, const uint64_t* thr,     \
                                  const T* scale, T* u_units, T* u, int threads) {          \
        const Step<T> c{k,    p,    n,  Z,   A,    G,  g_stride, ce,   fb_lr,               \
                        keep, beta, lr, lam, keys, thr, t,       scale};                    \
        run_all<T, ACT, true>(c, u_units, u, threads);                                      \
    }                                                                                       \
    void fa_steps_##NAME##_##SUF(int64_t steps, int64_t k, int64_t p, int64_t n, T* Z, T* A, \
                                 const T* G, int64_t g_stride, const T* y, T sqrt_p, T c_p, \
                                 const T* fb_lr, const T* keep, T* beta, const T* lr,       \
                                 const T* lam, const uint64_t* keys, int64_t t,             \
                                 const uint64_t* thr, const T* scale,                       \
                                 const uint8_t* fb_beta, T* e_out, T* u_units, T* u,        \
                                 int threads) {                                             \
        const Step<T> c{k,    p,    n,  Z,   A,    G,   g_stride, nullptr, fb_lr,           \
                        keep, beta, lr, lam, keys, thr, t,        scale};                   \
        run_steps<T, ACT>(steps, c, y, sqrt_p, c_p, fb_beta, e_out, u_units, u, threads);   \
    }


// for the tests: the masks' factors (scale or 0) of units [0, count) of sample j, with
// half = ceil(p / 2) (count a multiple of the vector length)
#define FA_KEEP_SCALE(T, SUF)                                                                \
    void fa_keep_scale_##SUF(uint64_t key, uint64_t thr, T scale, int64_t half, int64_t j,  \
                             int64_t count, T* out) {                                       \
        const Drop<T> d{key, thr, scale, half};                                             \
        for (int64_t r = 0; r < count; r += kVecBytes / sizeof(T))                          \
            store(out + r, keep_scale(d, j, r));                                            \
    }

#define FA_ALL(T, SUF)                      \
    FA_EVAL(Linear, linear, T, SUF)         \
    FA_EVAL(ReLU, relu, T, SUF)             \
    FA_EVAL(Tanh, tanh, T, SUF)             \
    FA_EVAL(Sigmoid, sigmoid, T, SUF)       \
    FA_KERNELS(Linear, linear, T, SUF)      \
    FA_KERNELS(ReLU, relu, T, SUF)          \
    FA_KERNELS(Tanh, tanh, T, SUF)          \
    FA_KERNELS(Sigmoid, sigmoid, T, SUF)    \
    FA_KEEP_SCALE(T, SUF)
#if FA_WITH_F32
FA_ALL(float, f32)
#endif
#if FA_WITH_F64
FA_ALL(double, f64)
#endif


}  // extern "C"
