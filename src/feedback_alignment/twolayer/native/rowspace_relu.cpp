// One step of the row-space path for ReLU, each row of Z and A touched once.
//
// Z (k, p, n) holds the pre-activations W X^T, A (k, p, n) the row-space coordinates of
// W - s W_b, G = X X^T (n, n), stored zero-padded to npad columns. For rows [r0, r1) of
// the k * p rows (row = member * p + unit):
//
//   forward:  u[member] = sum over rows of beta[row] * relu(Z[row])
//   update:   m = fb_lr[row] * 1[Z[row] > 0] * ce[member]
//             d = relu(Z[row]) . ce[member]
//             A[row] <- keep A[row] - m
//             Z[row] <- keep Z[row] - m G
//             beta[row] <- beta[row] - lr (d + lam beta[row])
//             u[member] = sum over rows of beta[row] relu(Z[row])  (the next forward)
//
// which is what paths.RowSpacePath and the engine do with torch ops (an in-place GEMM for
// m G), in one pass over memory instead of nine. m G is done four rows at a time in registers (GCC
// vector extensions, so the compiler picks AVX-512, AVX2 or NEON for the host). Float
// rounding differs from the torch path only in the order of the sums. relu(NaN) is NaN,
// as in torch, so a diverging run is still seen by its MSE.
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int kVecBytes = 64;
constexpr int kRows = 4;        // rows per register block of the product
constexpr int64_t kMaxN = 1024;  // longest row (samples n) the stack buffers hold

template <typename T>
struct Vec {
    typedef T type __attribute__((vector_size(kVecBytes), aligned(kVecBytes)));
};

template <typename T>
inline T relu(T z) {
    return std::max(z, T(0));  // (z < 0) ? 0 : z, so NaN stays NaN
}

// rows [r0, r1) all belong to one member; u is that member's (n) slot
template <typename T>
void forward(int64_t r0, int64_t r1, int64_t n, const T* Z, const T* beta, T* uu) {
    for (int64_t row = r0; row < r1; ++row) {
        const T* z = Z + row * n;
        const T b = beta[row];
        for (int64_t j = 0; j < n; ++j) uu[j] += b * relu(z[j]);
    }
}

// zp[0..4)[v, v + NV L) -= m[0..4)[0, n) G[0, n)[v, v + NV L)
template <typename T, int NV>
inline void panel(int64_t n, int64_t npad, int64_t v, const T* Gp, const T (*m)[kMaxN],
                  T (*zp)[kMaxN]) {
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    V s[kRows][NV];
    for (int b = 0; b < kRows; ++b)
        for (int q = 0; q < NV; ++q) s[b][q] = *reinterpret_cast<const V*>(&zp[b][v + q * L]);
    for (int64_t i = 0; i < n; ++i) {
        V g[NV];
        for (int q = 0; q < NV; ++q) g[q] = *reinterpret_cast<const V*>(Gp + i * npad + v + q * L);
        for (int b = 0; b < kRows; ++b) {
            const T mb = m[b][i];
            for (int q = 0; q < NV; ++q) s[b][q] -= mb * g[q];
        }
    }
    for (int b = 0; b < kRows; ++b)
        for (int q = 0; q < NV; ++q) *reinterpret_cast<V*>(&zp[b][v + q * L]) = s[b][q];
}

template <typename T>
void update(int64_t r0, int64_t r1, int64_t p, int64_t n, int64_t npad, T* Z, T* A,
            const T* Gp, const T* cep, const T* fb_lr, const T* keep, T* beta, const T* lr,
            const T* lam, T* uu) {
    // cep: ce zero-padded to npad columns, like Gp
    typedef typename Vec<T>::type V;
    constexpr int64_t L = kVecBytes / sizeof(T);
    alignas(kVecBytes) T m[kRows][kMaxN];
    alignas(kVecBytes) T zp[kRows][kMaxN];
    for (int64_t b = 0; b < kRows; ++b)
        for (int64_t j = 0; j < npad; ++j) m[b][j] = zp[b][j] = T(0);
    const V zero = {};

    for (int64_t r = r0; r < r1; r += kRows) {
        const int64_t rb = std::min<int64_t>(kRows, r1 - r);
        for (int64_t b = 0; b < rb; ++b) {
            const int64_t row = r + b, member = row / p;
            const T* z = Z + row * n;
            T* a = A + row * n;
            const T* c = cep + member * npad;
            const T f = fb_lr[row];
            const T kp = keep ? keep[member] : T(1);
            for (int64_t j = 0; j < n; ++j) zp[b][j] = z[j];
            // the padding must be 0 again: a diverging row (m = inf) leaves inf * 0 = NaN
            // there, which would reach the next rows' reductions (other members)
            for (int64_t j = n; j < npad; ++j) zp[b][j] = T(0);
            V acc = zero;
            for (int64_t v = 0; v < npad; v += L) {
                const V zv = *reinterpret_cast<const V*>(&zp[b][v]);
                const V cv = *reinterpret_cast<const V*>(c + v);
                acc += (zv < zero ? zero : zv) * cv;         // relu(z) c, NaN kept
                *reinterpret_cast<V*>(&m[b][v]) = zv > zero ? f * cv : zero;  // psi'(z) = 1[z > 0]
                if (keep) *reinterpret_cast<V*>(&zp[b][v]) = kp * zv;
            }
            T d = 0;
            for (int64_t l = 0; l < L; ++l) d += acc[l];
            beta[row] -= lr[member] * (d + lam[member] * beta[row]);
            if (keep) {
                for (int64_t j = 0; j < n; ++j) a[j] = kp * a[j] - m[b][j];
            } else {
                for (int64_t j = 0; j < n; ++j) a[j] -= m[b][j];
            }
        }
        for (int64_t b = rb; b < kRows; ++b)  // a short last block: rows of zeros
            for (int64_t j = 0; j < n; ++j) m[b][j] = T(0);
        // zp[b] -= m[b] G in panels of up to four column vectors: 4 x NV accumulators in
        // registers, each load of G shared by the four rows
        int64_t v = 0;
        for (; v + 4 * L <= npad; v += 4 * L) panel<T, 4>(n, npad, v, Gp, m, zp);
        switch ((npad - v) / L) {
            case 3: panel<T, 3>(n, npad, v, Gp, m, zp); break;
            case 2: panel<T, 2>(n, npad, v, Gp, m, zp); break;
            case 1: panel<T, 1>(n, npad, v, Gp, m, zp); break;
            default: break;
        }
        for (int64_t b = 0; b < rb; ++b) {
            const int64_t row = r + b;
            T* z = Z + row * n;
            const T bt = beta[row];
            for (int64_t j = 0; j < n; ++j) {
                z[j] = zp[b][j];
                uu[j] += bt * relu(zp[b][j]);
            }
        }
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

template <typename T>
void forward_all(int64_t k, int64_t p, int64_t n, const T* Z, const T* beta, T* u_units,
                 T* u, int threads) {
    const int64_t nu = units_per_member(p);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < k * nu; ++unit) {
            const int64_t member = unit / nu, q = unit - member * nu;
            const int64_t r0 = member * p + q * kUnit;
            const int64_t r1 = member * p + std::min(p, (q + 1) * kUnit);
            T* slot = u_units + unit * n;
            for (int64_t j = 0; j < n; ++j) slot[j] = T(0);
            forward<T>(r0, r1, n, Z, beta, slot);
        }
        sum_units<T>(k, p, n, u_units, u);
    }
}

template <typename T>
void update_all(int64_t k, int64_t p, int64_t n, int64_t npad, T* Z, T* A, const T* Gp,
                const T* cep, const T* fb_lr, const T* keep, T* beta, const T* lr,
                const T* lam, T* u_units, T* u, int threads) {
    const int64_t nu = units_per_member(p);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < k * nu; ++unit) {
            const int64_t member = unit / nu, q = unit - member * nu;
            const int64_t r0 = member * p + q * kUnit;
            const int64_t r1 = member * p + std::min(p, (q + 1) * kUnit);
            T* slot = u_units + unit * n;
            for (int64_t j = 0; j < n; ++j) slot[j] = T(0);
            update<T>(r0, r1, p, n, npad, Z, A, Gp, cep, fb_lr, keep, beta, lr, lam, slot);
        }
        sum_units<T>(k, p, n, u_units, u);
    }
}

}  // namespace

// OpenMP here is the runtime torch already loaded (same soname), so these threads are
// torch's own pool, not a second one competing for the cores.
extern "C" {

int64_t fa_max_n() { return kMaxN; }
int64_t fa_vec_bytes() { return kVecBytes; }

int64_t fa_units_per_member(int64_t p) { return units_per_member(p); }

void fa_forward_f32(int64_t k, int64_t p, int64_t n, const float* Z, const float* beta,
                    float* u_units, float* u, int threads) {
    forward_all<float>(k, p, n, Z, beta, u_units, u, threads);
}
void fa_forward_f64(int64_t k, int64_t p, int64_t n, const double* Z, const double* beta,
                    double* u_units, double* u, int threads) {
    forward_all<double>(k, p, n, Z, beta, u_units, u, threads);
}
void fa_update_f32(int64_t k, int64_t p, int64_t n, int64_t npad, float* Z, float* A,
                   const float* Gp, const float* cep, const float* fb_lr, const float* keep,
                   float* beta, const float* lr, const float* lam, float* u_units, float* u,
                   int threads) {
    update_all<float>(k, p, n, npad, Z, A, Gp, cep, fb_lr, keep, beta, lr, lam, u_units, u,
                      threads);
}
void fa_update_f64(int64_t k, int64_t p, int64_t n, int64_t npad, double* Z, double* A,
                   const double* Gp, const double* cep, const double* fb_lr,
                   const double* keep, double* beta, const double* lr, const double* lam,
                   double* u_units, double* u, int threads) {
    update_all<double>(k, p, n, npad, Z, A, Gp, cep, fb_lr, keep, beta, lr, lam, u_units, u,
                       threads);
}

}  // extern "C"
