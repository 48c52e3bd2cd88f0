// Fused exact attention for XLA:CPU (jax.ffi): online softmax over key blocks, FlashAttention-2.
//
// Query i sees key j iff dlo <= i - j <= dhi and key_mask[j]. With dlo/dhi unbounded this is
// full attention (`blockwise`), with dlo = 0 causal, with both finite a band (`local`).
// Layout, heads first so that a head's rows are contiguous (strided rows 2 KB apart thrash the
// caches when OpenBLAS packs them): q [B..., H, L, D], k [B..., H, S, D], v [B..., H, S, Dv],
// key_mask [B..., S], out [B..., H, L, Dv], lse [B..., H, L] (-inf: no visible key).
//
// Why it exists: XLA:CPU runs the tile products of a lax.scan kernel at a fraction of the
// machine's GEMM rate and materialises every softmax pass. Here each (query block, key block)
// tile is two or five sgemm calls (OpenBLAS, one thread each) and one vectorised pass, and the
// threads split the work: the forward by (batch·head, query block), the backward by batch·head,
// so no two threads ever write the same gradient row. Memory: O(block_q · block_k) per thread.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif

#include <cblas.h>  // scipy-openblas32: every symbol carries the scipy_ prefix
#define cblas_sgemm scipy_cblas_sgemm

#include "xla/ffi/api/ffi.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------- exp over a row
#if defined(__AVX2__) && defined(__FMA__)
// Cephes expf on 8 lanes (~2 ulp); inputs below -87.3 (and -inf) give exactly 0.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654475f), hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
  return _mm256_andnot_ps(zero_mask, y);
}

// x[c] = exp(x[c] - m); returns the sum.
inline float exp_shift_sum(float* x, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 p = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + c), vm));
    _mm256_storeu_ps(x + c, p);
    acc = _mm256_add_ps(acc, p);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  for (; c < n; ++c) {
    x[c] = x[c] - m < -87.33654475f ? 0.0f : std::exp(x[c] - m);
    sum += x[c];
  }
  return sum;
}
#else
inline float exp_shift_sum(float* x, int64_t n, float m) {
  float sum = 0.0f;
  for (int64_t c = 0; c < n; ++c) {
    x[c] = std::exp(x[c] - m);
    sum += x[c];
  }
  return sum;
}
#endif

inline float row_max(const float* x, int64_t n) {
  float m = kNegInf;
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 vm = _mm256_set1_ps(kNegInf);
  for (; c + 8 <= n; c += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + c));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float lane : lanes) m = std::max(m, lane);
#endif
  for (; c < n; ++c) m = std::max(m, x[c]);
  return m;
}

// ---------------------------------------------------------------- geometry and masks
struct Shape {
  int64_t B, L, S, H, D, Dv;
};

// dlo <= i - j <= dhi. "Unbounded" limits are ±2^30 from Python: int64 sums never overflow.
struct Band {
  int64_t dlo, dhi;
  // Keys some query in [i0, i1) may see: [key_lo, key_hi), clamped to [0, S].
  int64_t key_lo(int64_t i0, int64_t S) const { return std::clamp(i0 - dhi, int64_t{0}, S); }
  int64_t key_hi(int64_t i1, int64_t S) const { return std::clamp(i1 - dlo, int64_t{0}, S); }
  // Queries some key in [j0, j1) is seen by: [query_lo, query_hi), clamped to [0, L].
  int64_t query_lo(int64_t j0, int64_t L) const { return std::clamp(j0 + dlo, int64_t{0}, L); }
  int64_t query_hi(int64_t j1, int64_t L) const { return std::clamp(j1 + dhi, int64_t{0}, L); }
  bool covers(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {  // every pair in band?
    return i0 - (j1 - 1) >= dlo && (i1 - 1) - j0 <= dhi;
  }
};

// Per batch row: a 0/-inf bias per key and a prefix count of visible keys (to skip empty tiles).
struct KeyMask {
  std::vector<float> bias;      // [B, S]
  std::vector<int64_t> prefix;  // [B, S + 1]
  int64_t S;
  KeyMask(const bool* km, int64_t B, int64_t S_) : bias(B * S_), prefix(B * (S_ + 1)), S(S_) {
    for (int64_t b = 0; b < B; ++b) {
      int64_t* p = &prefix[b * (S + 1)];
      p[0] = 0;
      for (int64_t j = 0; j < S; ++j) {
        bias[b * S + j] = km[b * S + j] ? 0.0f : kNegInf;
        p[j + 1] = p[j] + (km[b * S + j] ? 1 : 0);
      }
    }
  }
  int64_t visible(int64_t b, int64_t j0, int64_t j1) const {
    return prefix[b * (S + 1) + j1] - prefix[b * (S + 1) + j0];
  }
  const float* row(int64_t b) const { return &bias[b * S]; }
};

// Logit tile s [nr, nc] (row stride nc) for queries i0.. and keys j0..: masked entries -> -inf.
void mask_tile(float* s, int64_t nr, int64_t nc, int64_t i0, int64_t j0, const Band& band,
               const KeyMask& km, int64_t b) {
  const bool all_keys = km.visible(b, j0, j0 + nc) == nc;
  const bool all_band = band.covers(i0, i0 + nr, j0, j0 + nc);
  if (all_keys && all_band) return;
  const float* kb = km.row(b) + j0;
  for (int64_t r = 0; r < nr; ++r) {
    float* row = s + r * nc;
    if (!all_keys)
      for (int64_t c = 0; c < nc; ++c) row[c] += kb[c];
    if (!all_band) {
      const int64_t i = i0 + r;  // visible columns: j in [i - dhi, i - dlo]
      const int64_t lo = std::clamp(i - band.dhi - j0, int64_t{0}, nc);
      const int64_t hi = std::clamp(i - band.dlo - j0 + 1, int64_t{0}, nc);
      std::fill(row, row + lo, kNegInf);
      std::fill(row + std::max(lo, hi), row + nc, kNegInf);
    }
  }
}

// ---------------------------------------------------------------- threads
int num_threads() {
  if (const char* env = std::getenv("ATTN_ZOO_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
#ifdef __linux__
  cpu_set_t set;  // the cores this process may use (taskset, containers), not the machine's
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// Runs fn(task) for task in [0, n) on up to num_threads() threads, dynamically scheduled.
template <typename Fn>
void parallel_for(int64_t n, Fn fn) {
  static const bool once = [] { scipy_openblas_set_num_threads(1); return true; }();
  (void)once;
  const int64_t nt = std::min<int64_t>(num_threads(), n);
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t t = next++; t < n; t = next++) fn(t);
  };
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < nt; ++w) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

Shape shape_of(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const size_t r = qd.size();
  Shape s{1, qd[r - 2], kd[r - 2], qd[r - 3], qd[r - 1], vd[r - 1]};
  for (size_t a = 0; a + 3 < r; ++a) s.B *= qd[a];
  return s;
}

ffi::Error check(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                 ffi::Buffer<ffi::PRED>& km) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = km.dimensions();
  const size_t r = qd.size();
  if (r < 3 || kd.size() != r || vd.size() != r || md.size() != r - 2)
    return ffi::Error::InvalidArgument("flash_cpu: q, k, v need [..., H, N, D], key_mask [..., S]");
  for (size_t a = 0; a + 3 < r; ++a)
    if (kd[a] != qd[a] || vd[a] != qd[a] || md[a] != qd[a])
      return ffi::Error::InvalidArgument("flash_cpu: batch axes differ");
  if (kd[r - 2] != vd[r - 2] || md[r - 3] != kd[r - 2] || kd[r - 3] != qd[r - 3] ||
      vd[r - 3] != qd[r - 3] || kd[r - 1] != qd[r - 1])
    return ffi::Error::InvalidArgument("flash_cpu: q, k, v, key_mask shapes do not agree");
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- forward
ffi::Error Forward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::Buffer<ffi::PRED> km, ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> lse, float scale, int64_t dlo, int64_t dhi,
                   int64_t block_q, int64_t block_k) {
  if (auto err = check(q, k, v, km); !err.success()) return err;
  const Shape sh = shape_of(q, k, v);
  const Band band{dlo, dhi};
  const KeyMask mask(km.typed_data(), sh.B, sh.S);
  const int64_t bq = std::max<int64_t>(1, block_q), bk = std::max<int64_t>(1, block_k);
  const int64_t nq = (sh.L + bq - 1) / bq;
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data();
  float *O = out->typed_data(), *LSE = lse->typed_data();
  const int64_t ldq = sh.D, ldv = sh.Dv;

  parallel_for(sh.B * sh.H * nq, [&](int64_t task) {
    const int64_t bh = task / nq, i0 = (task % nq) * bq, b = bh / sh.H;
    const int64_t nr = std::min(bq, sh.L - i0);
    std::vector<float> s(nr * bk), acc(nr * sh.Dv, 0.0f), m(nr, kNegInf), l(nr, 0.0f);
    const float* qi = Q + (bh * sh.L + i0) * ldq;
    const int64_t jlo = band.key_lo(i0, sh.S), jhi = band.key_hi(i0 + nr, sh.S);
    for (int64_t j0 = jlo; j0 < jhi; j0 += bk) {
      const int64_t nc = std::min(bk, jhi - j0);
      if (mask.visible(b, j0, j0 + nc) == 0) continue;
      const float* kj = K + (bh * sh.S + j0) * ldq;
      const float* vj = V + (bh * sh.S + j0) * ldv;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.D, scale, qi, ldq, kj, ldq,
                  0.0f, s.data(), nc);
      mask_tile(s.data(), nr, nc, i0, j0, band, mask, b);
      for (int64_t r = 0; r < nr; ++r) {
        float* row = s.data() + r * nc;
        const float m_new = std::max(m[r], row_max(row, nc));
        if (m_new == kNegInf) {  // nothing visible in this row yet
          std::fill(row, row + nc, 0.0f);
          continue;
        }
        const float alpha = m[r] == kNegInf ? 0.0f : std::exp(m[r] - m_new);
        l[r] = alpha * l[r] + exp_shift_sum(row, nc, m_new);
        m[r] = m_new;
        if (alpha != 1.0f)
          for (int64_t d = 0; d < sh.Dv; ++d) acc[r * sh.Dv + d] *= alpha;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, sh.Dv, nc, 1.0f, s.data(), nc, vj,
                  ldv, 1.0f, acc.data(), sh.Dv);
    }
    for (int64_t r = 0; r < nr; ++r) {
      float* o = O + (bh * sh.L + i0 + r) * ldv;
      const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
      for (int64_t d = 0; d < sh.Dv; ++d) o[d] = acc[r * sh.Dv + d] * inv;
      LSE[bh * sh.L + i0 + r] = l[r] > 0.0f ? m[r] + std::log(l[r]) : kNegInf;
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- backward
// ds = p (dp - delta) with delta_i = dout_i · out_i - dlse_i (a cotangent on lse shifts delta).
ffi::Error Backward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::PRED> km, ffi::Buffer<ffi::F32> out,
                    ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                    ffi::Buffer<ffi::F32> dlse, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, float scale,
                    int64_t dlo, int64_t dhi, int64_t block_q, int64_t block_k) {
  if (auto err = check(q, k, v, km); !err.success()) return err;
  const Shape sh = shape_of(q, k, v);
  const Band band{dlo, dhi};
  const KeyMask mask(km.typed_data(), sh.B, sh.S);
  const int64_t bq = std::max<int64_t>(1, block_q), bk = std::max<int64_t>(1, block_k);
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data();
  const float *O = out.typed_data(), *LSE = lse.typed_data(), *dO = dout.typed_data();
  const float* dLSE = dlse.typed_data();
  float *dQ = dq->typed_data(), *dK = dk->typed_data(), *dV = dv->typed_data();
  const int64_t ldq = sh.D, ldv = sh.Dv;

  parallel_for(sh.B * sh.H, [&](int64_t bh) {
    const int64_t b = bh / sh.H;
    std::vector<float> delta(sh.L), p(bq * bk), ds(bq * bk);
    const float* lse_row = LSE + bh * sh.L;  // -inf: no visible key, so its p row is 0 below
    for (int64_t i = 0; i < sh.L; ++i) {
      const float* o = O + (bh * sh.L + i) * ldv;
      const float* g = dO + (bh * sh.L + i) * ldv;
      float acc = 0.0f;
      for (int64_t d = 0; d < sh.Dv; ++d) acc += o[d] * g[d];
      delta[i] = acc - dLSE[bh * sh.L + i];
    }
    std::fill_n(dQ + bh * sh.L * ldq, sh.L * ldq, 0.0f);
    std::fill_n(dK + bh * sh.S * ldq, sh.S * ldq, 0.0f);
    std::fill_n(dV + bh * sh.S * ldv, sh.S * ldv, 0.0f);
    for (int64_t j0 = 0; j0 < sh.S; j0 += bk) {
      const int64_t nc = std::min(bk, sh.S - j0);
      if (mask.visible(b, j0, j0 + nc) == 0) continue;
      const float* kj = K + (bh * sh.S + j0) * ldq;
      const float* vj = V + (bh * sh.S + j0) * ldv;
      float* dkj = dK + (bh * sh.S + j0) * ldq;
      float* dvj = dV + (bh * sh.S + j0) * ldv;
      const int64_t ilo = band.query_lo(j0, sh.L), ihi = band.query_hi(j0 + nc, sh.L);
      for (int64_t i0 = ilo; i0 < ihi; i0 += bq) {
        const int64_t nr = std::min(bq, ihi - i0);
        const float* qi = Q + (bh * sh.L + i0) * ldq;
        const float* gi = dO + (bh * sh.L + i0) * ldv;
        float* dqi = dQ + (bh * sh.L + i0) * ldq;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.D, scale, qi, ldq, kj,
                    ldq, 0.0f, p.data(), nc);
        mask_tile(p.data(), nr, nc, i0, j0, band, mask, b);
        for (int64_t r = 0; r < nr; ++r) {
          float* row = p.data() + r * nc;
          const float l = lse_row[i0 + r];
          if (l == kNegInf) std::fill(row, row + nc, 0.0f);
          else exp_shift_sum(row, nc, l);
        }
        // dV_j += Pᵀ dO_i ; dP = dO_i V_jᵀ
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, sh.Dv, nr, 1.0f, p.data(), nc,
                    gi, ldv, 1.0f, dvj, ldv);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.Dv, 1.0f, gi, ldv, vj,
                    ldv, 0.0f, ds.data(), nc);
        for (int64_t r = 0; r < nr; ++r) {
          const float dl = delta[i0 + r];
          float* dsr = ds.data() + r * nc;
          const float* pr = p.data() + r * nc;
          for (int64_t c = 0; c < nc; ++c) dsr[c] = pr[c] * (dsr[c] - dl) * scale;
        }
        // dQ_i += dS K_j ; dK_j += dSᵀ Q_i
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, sh.D, nc, 1.0f, ds.data(), nc,
                    kj, ldq, 1.0f, dqi, ldq);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, sh.D, nr, 1.0f, ds.data(), nc,
                    qi, ldq, 1.0f, dkj, ldq);
      }
    }
  });
  return ffi::Error::Success();
}

// The bindings share their leading arguments (q, k, v, key_mask) and, last, their attributes,
// named as flash_cpu.py passes them.
template <typename Binding>
auto Inputs(Binding b) {
  return std::move(b).template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::PRED>>();
}

template <typename Binding>
auto Attrs(Binding b) {
  return std::move(b).template Attr<float>("scale")
      .template Attr<int64_t>("dlo")
      .template Attr<int64_t>("dhi")
      .template Attr<int64_t>("block_q")
      .template Attr<int64_t>("block_k");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AttnZooFlashForward, Forward,
                              Attrs(Inputs(ffi::Ffi::Bind())
                                        .Ret<ffi::Buffer<ffi::F32>>()     // out
                                        .Ret<ffi::Buffer<ffi::F32>>()));  // lse

XLA_FFI_DEFINE_HANDLER_SYMBOL(AttnZooFlashBackward, Backward,
                              Attrs(Inputs(ffi::Ffi::Bind())
                                        .Arg<ffi::Buffer<ffi::F32>>()     // out
                                        .Arg<ffi::Buffer<ffi::F32>>()     // lse
                                        .Arg<ffi::Buffer<ffi::F32>>()     // dout
                                        .Arg<ffi::Buffer<ffi::F32>>()     // dlse
                                        .Ret<ffi::Buffer<ffi::F32>>()     // dq
                                        .Ret<ffi::Buffer<ffi::F32>>()     // dk
                                        .Ret<ffi::Buffer<ffi::F32>>()));  // dv
