// Fused exact attention for XLA:CPU (jax.ffi): online softmax over key blocks, FlashAttention-2.
//
// Query i sees key j iff dlo <= i - j <= dhi and key_mask[j] (and, with segments, q_seg[i] ==
// kv_seg[j]). With dlo/dhi unbounded this is full attention (`blockwise`), with dlo = 0 causal,
// with both finite a band (`local`). Grouped heads: k and v have Hk = H / groups heads, query
// head h reads key head h / groups (no repeated copy). ALiBi: the scaled logit of (i, j) gets
// - slope[h] * |i - j| inside the tile.
// Layouts (attribute tokens_first): heads first, q [B..., H, L, D], k [B..., H, S, D],
// v [B..., H, S, Dv], out [B..., H, L, Dv], lse [B..., H, L], so that a head's rows are contiguous
// (strided rows 2 KB apart thrash the caches when OpenBLAS packs them); or tokens first, the
// model's own layout, q [B..., L, H, D], k [B..., S, H, D], v [B..., S, H, Dv], out
// [B..., L, H, Dv], lse [B..., L, H]: a head's rows H·D apart, which saves the caller XLA's
// transposes of q, k, v, out and their gradients (small heads: short rows, no thrashing).
// key_mask [B..., S]; lse is -inf for a query with no visible key.
//
// NaN and Inf propagate as in the XLA engines: a non-finite logit makes its query's row maximum,
// sum, output and lse NaN (never a finite row), and its p row NaN at its visible keys in the
// backward. A masked key reaches nothing, not even as 0·NaN: its logits are set to -inf (not
// added to), and a tile with masked keys reads copies of k and v whose masked rows are zero.
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
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---------------------------------------------------------------- exp over a row
#if defined(__AVX512F__)
// Cephes expf on 16 lanes (~2 ulp), the same steps as the 8-lane version below (AVX2); inputs
// below -87.3 (and -inf) give exactly 0, NaN gives NaN.
inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654475f), hi = _mm512_set1_ps(88.3762626647949f);
  const __mmask16 zero_mask = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  // max/min return their second operand when either is NaN: x second, so a NaN stays NaN (the
  // other order clamps it to exp(-87.3), a finite weight)
  x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
  __m512 fx = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f));
  fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127));
  y = _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32(e, 23)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~zero_mask), y);
}

// x[c] = exp(x[c] - m); returns the sum.
inline float exp_shift_sum(float* x, int64_t n, float m) {
  const __m512 vm = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    __m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + c), vm));
    _mm512_storeu_ps(x + c, p);
    acc = _mm512_add_ps(acc, p);
  }
  if (c < n) {  // the tail under a mask: masked-off lanes are neither read nor written
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - c)) - 1u);
    __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + c), vm));
    _mm512_mask_storeu_ps(x + c, tail, p);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(tail, p));
  }
  return _mm512_reduce_add_ps(acc);
}

// The row's maximum; NaN when any entry is NaN (max_ps alone keeps or drops a NaN by lane order).
inline float row_max(const float* x, int64_t n) {
  __m512 vm = _mm512_set1_ps(kNegInf);
  __mmask16 nan = 0;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    const __m512 xc = _mm512_loadu_ps(x + c);
    vm = _mm512_max_ps(vm, xc);
    nan |= _mm512_cmp_ps_mask(xc, xc, _CMP_UNORD_Q);
  }
  if (c < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - c)) - 1u);
    const __m512 xc = _mm512_maskz_loadu_ps(tail, x + c);
    vm = _mm512_mask_max_ps(vm, tail, vm, xc);
    nan |= _mm512_mask_cmp_ps_mask(tail, xc, xc, _CMP_UNORD_Q);
  }
  return nan ? kNaN : _mm512_reduce_max_ps(vm);
}
#elif defined(__AVX2__) && defined(__FMA__)
// Cephes expf on 8 lanes (~2 ulp); inputs below -87.3 (and -inf) give exactly 0, NaN gives NaN.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654475f), hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // x second: a NaN stays NaN (see exp16)
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

#if !defined(__AVX512F__)
// The row's maximum; NaN when any entry is NaN (std::max and max_ps drop a NaN by operand order).
inline float row_max(const float* x, int64_t n) {
  float m = kNegInf;
  bool nan = false;
  int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 vm = _mm256_set1_ps(kNegInf), vnan = _mm256_setzero_ps();
  for (; c + 8 <= n; c += 8) {
    const __m256 xc = _mm256_loadu_ps(x + c);
    vm = _mm256_max_ps(vm, xc);
    vnan = _mm256_or_ps(vnan, _mm256_cmp_ps(xc, xc, _CMP_UNORD_Q));
  }
  nan = _mm256_movemask_ps(vnan) != 0;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float lane : lanes) m = std::max(m, lane);
#endif
  for (; c < n; ++c) {
    m = std::max(m, x[c]);
    nan = nan || std::isnan(x[c]);
  }
  return nan ? kNaN : m;
}
#endif

// ---------------------------------------------------------------- geometry and masks
struct Shape {
  int64_t B, L, S, H, D, Dv, Hk, G;  // H query heads, Hk = H / G key/value heads
};

// The optional extras, per batch row b (flattened) and query head h: segment ids [B, L], [B, S]
// and ALiBi slopes [B, H] (broadcast over the batch by the caller); null when off.
struct Extras {
  const int32_t *qseg = nullptr, *kseg = nullptr;
  const float* slopes = nullptr;
  int64_t L = 0, S = 0, H = 0;
  bool any() const { return qseg != nullptr || slopes != nullptr; }
  // Is (i, j) visible as far as segments go?
  bool same(int64_t b, int64_t i, int64_t j) const {
    return qseg == nullptr || qseg[b * L + i] == kseg[b * S + j];
  }
};

// Where row i of head bh (= b·H + h) of a tensor with N rows per head and last axis X lies, in
// either layout; idx: the same for a per-row scalar (lse).
struct Layout {
  bool tokens_first;
  int64_t H, N;
  int64_t off(int64_t bh, int64_t i, int64_t X) const {
    return tokens_first ? (((bh / H) * N + i) * H + bh % H) * X : (bh * N + i) * X;
  }
  int64_t ld(int64_t X) const { return tokens_first ? H * X : X; }  // between consecutive rows
  int64_t idx(int64_t bh, int64_t i) const { return off(bh, i, 1); }
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

// Rows [j0, j0 + n) of a key-side tensor x (row stride ld, X floats a row) copied into buf (row
// stride X) with the rows of masked keys zeroed: what a tile multiplies with when some of its keys
// are masked, so that a masked key's NaN or Inf never enters a product (0 · NaN is NaN).
const float* unmasked_rows(const float* x, int64_t ld, int64_t X, int64_t n, const KeyMask& km,
                           int64_t b, int64_t j0, std::vector<float>& buf) {
  buf.resize(n * X);
  const float* kb = km.row(b) + j0;
  for (int64_t c = 0; c < n; ++c) {
    if (kb[c] == 0.0f) std::copy_n(x + c * ld, X, buf.data() + c * X);
    else std::fill_n(buf.data() + c * X, X, 0.0f);
  }
  return buf.data();
}

// Logit tile s [nr, nc] (row stride nc) for queries i0.. and keys j0..: masked entries -> -inf
// (assigned: a masked key's NaN logit must not survive).
void mask_tile(float* s, int64_t nr, int64_t nc, int64_t i0, int64_t j0, const Band& band,
               const KeyMask& km, int64_t b, const Extras& ex, int64_t h) {
  const bool all_keys = km.visible(b, j0, j0 + nc) == nc;
  const bool all_band = band.covers(i0, i0 + nr, j0, j0 + nc);
  if (all_keys && all_band && !ex.any()) return;
  const float* kb = km.row(b) + j0;
  const float slope = ex.slopes ? ex.slopes[b * ex.H + h] : 0.0f;
  for (int64_t r = 0; r < nr; ++r) {
    float* row = s + r * nc;
    if (ex.slopes)  // before the masks, which assign -inf
      for (int64_t c = 0; c < nc; ++c)
        row[c] -= slope * static_cast<float>(std::abs(i0 + r - (j0 + c)));
    if (ex.qseg) {
      const int32_t qs = ex.qseg[b * ex.L + i0 + r];
      const int32_t* ks = ex.kseg + b * ex.S + j0;
      for (int64_t c = 0; c < nc; ++c) row[c] = ks[c] == qs ? row[c] : kNegInf;
    }
    if (!all_keys)
      for (int64_t c = 0; c < nc; ++c) row[c] = kb[c] == 0.0f ? row[c] : kNegInf;
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

// The axes of [..., H, N, D] (heads first) or [..., N, H, D] (tokens first) in a rank-r shape.
inline size_t heads_axis(size_t r, bool tf) { return tf ? r - 2 : r - 3; }
inline size_t rows_axis(size_t r, bool tf) { return tf ? r - 3 : r - 2; }

Shape shape_of(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
               bool tf) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const size_t r = qd.size(), n = rows_axis(r, tf);
  const int64_t H = qd[heads_axis(r, tf)], Hk = kd[heads_axis(r, tf)];
  Shape s{1, qd[n], kd[n], H, qd[r - 1], vd[r - 1], Hk, H / Hk};
  for (size_t a = 0; a + 3 < r; ++a) s.B *= qd[a];
  return s;
}

ffi::Error check(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                 ffi::Buffer<ffi::PRED>& km, bool tf) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), md = km.dimensions();
  const size_t r = qd.size();
  if (r < 3 || kd.size() != r || vd.size() != r || md.size() != r - 2)
    return ffi::Error::InvalidArgument(
        "flash_cpu: q, k, v need [..., H, N, D] ([..., N, H, D] tokens first), key_mask [..., S]");
  for (size_t a = 0; a + 3 < r; ++a)
    if (kd[a] != qd[a] || vd[a] != qd[a] || md[a] != qd[a])
      return ffi::Error::InvalidArgument("flash_cpu: batch axes differ");
  const size_t n = rows_axis(r, tf), h = heads_axis(r, tf);
  if (kd[n] != vd[n] || md[r - 3] != kd[n] || kd[h] < 1 || qd[h] % kd[h] != 0 || vd[h] != kd[h] ||
      kd[r - 1] != qd[r - 1])
    return ffi::Error::InvalidArgument("flash_cpu: q, k, v, key_mask shapes do not agree");
  return ffi::Error::Success();
}

Extras extras_of(ffi::Buffer<ffi::S32>& qseg, ffi::Buffer<ffi::S32>& kseg,
                 ffi::Buffer<ffi::F32>& slopes, const Shape& sh, int64_t use_segments,
                 int64_t use_alibi) {
  Extras ex;
  ex.L = sh.L;
  ex.S = sh.S;
  ex.H = sh.H;
  if (use_segments) {
    ex.qseg = qseg.typed_data();
    ex.kseg = kseg.typed_data();
  }
  if (use_alibi) ex.slopes = slopes.typed_data();
  return ex;
}

ffi::Error check_extras(ffi::Buffer<ffi::S32>& qseg, ffi::Buffer<ffi::S32>& kseg,
                        ffi::Buffer<ffi::F32>& slopes, const Shape& sh) {
  if (qseg.element_count() != static_cast<size_t>(sh.B * sh.L) ||
      kseg.element_count() != static_cast<size_t>(sh.B * sh.S) ||
      slopes.element_count() != static_cast<size_t>(sh.B * sh.H))
    return ffi::Error::InvalidArgument("flash_cpu: q_seg [..., L], kv_seg [..., S], slopes [..., H] expected");
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- forward
ffi::Error Forward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                   ffi::Buffer<ffi::PRED> km, ffi::Buffer<ffi::S32> qseg, ffi::Buffer<ffi::S32> kseg,
                   ffi::Buffer<ffi::F32> slopes, ffi::ResultBuffer<ffi::F32> out,
                   ffi::ResultBuffer<ffi::F32> lse, float scale, int64_t dlo, int64_t dhi,
                   int64_t block_q, int64_t block_k, int64_t tokens_first, int64_t use_segments,
                   int64_t use_alibi) {
  const bool tf = tokens_first != 0;
  if (auto err = check(q, k, v, km, tf); !err.success()) return err;
  const Shape sh = shape_of(q, k, v, tf);
  if (auto err = check_extras(qseg, kseg, slopes, sh); !err.success()) return err;
  const Extras ex = extras_of(qseg, kseg, slopes, sh, use_segments, use_alibi);
  const Band band{dlo, dhi};
  const KeyMask mask(km.typed_data(), sh.B, sh.S);
  const int64_t bq = std::max<int64_t>(1, block_q), bk = std::max<int64_t>(1, block_k);
  const int64_t nq = (sh.L + bq - 1) / bq;
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data();
  float *O = out->typed_data(), *LSE = lse->typed_data();
  const Layout lq{tf, sh.H, sh.L}, lk{tf, sh.Hk, sh.S};
  const int64_t ldq = lq.ld(sh.D), ldk = lk.ld(sh.D), ldv = lk.ld(sh.Dv);

  parallel_for(sh.B * sh.H * nq, [&](int64_t task) {
    const int64_t bh = task / nq, i0 = (task % nq) * bq, b = bh / sh.H, h = bh % sh.H;
    const int64_t bhk = b * sh.Hk + h / sh.G;  // its key/value head
    const int64_t nr = std::min(bq, sh.L - i0);
    const int64_t jlo = band.key_lo(i0, sh.S), jhi = band.key_hi(i0 + nr, sh.S);
    const int64_t tile = std::min(bk, std::max<int64_t>(jhi - jlo, 1));
    std::vector<float> s(nr * tile), acc(nr * sh.Dv, 0.0f), m(nr, kNegInf), l(nr, 0.0f), vbuf;
    const float* qi = Q + lq.off(bh, i0, sh.D);
    for (int64_t j0 = jlo; j0 < jhi; j0 += bk) {
      const int64_t nc = std::min(bk, jhi - j0);
      const int64_t seen = mask.visible(b, j0, j0 + nc);
      if (seen == 0) continue;
      const float* kj = K + lk.off(bhk, j0, sh.D);  // masked keys' logits are overwritten below
      const float* vj = V + lk.off(bhk, j0, sh.Dv);
      int64_t ldvj = ldv;
      if (seen < nc) {
        vj = unmasked_rows(vj, ldv, sh.Dv, nc, mask, b, j0, vbuf);
        ldvj = sh.Dv;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.D, scale, qi, ldq, kj, ldk,
                  0.0f, s.data(), nc);
      mask_tile(s.data(), nr, nc, i0, j0, band, mask, b, ex, h);
      for (int64_t r = 0; r < nr; ++r) {
        float* row = s.data() + r * nc;
        const float rm = row_max(row, nc);
        // NaN-propagating: std::max returns its first argument when either one is NaN
        const float m_new = std::isnan(rm) ? rm : std::max(m[r], rm);
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
                  ldvj, 1.0f, acc.data(), sh.Dv);
    }
    for (int64_t r = 0; r < nr; ++r) {
      float* o = O + lq.off(bh, i0 + r, sh.Dv);
      // l is >= 0 or NaN: only l == 0 (no visible key) gives zeros and -inf; NaN stays NaN
      const float inv = l[r] == 0.0f ? 0.0f : 1.0f / l[r];
      for (int64_t d = 0; d < sh.Dv; ++d) o[d] = acc[r * sh.Dv + d] * inv;
      LSE[lq.idx(bh, i0 + r)] = l[r] == 0.0f ? kNegInf : m[r] + std::log(l[r]);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- backward
// ds = p (dp - delta) with delta_i = dout_i · out_i - dlse_i (a cotangent on lse shifts delta).
ffi::Error Backward(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                    ffi::Buffer<ffi::PRED> km, ffi::Buffer<ffi::S32> qseg,
                    ffi::Buffer<ffi::S32> kseg, ffi::Buffer<ffi::F32> slopes,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                    ffi::Buffer<ffi::F32> dlse, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv, float scale,
                    int64_t dlo, int64_t dhi, int64_t block_q, int64_t block_k,
                    int64_t tokens_first, int64_t use_segments, int64_t use_alibi) {
  const bool tf = tokens_first != 0;
  if (auto err = check(q, k, v, km, tf); !err.success()) return err;
  const Shape sh = shape_of(q, k, v, tf);
  if (auto err = check_extras(qseg, kseg, slopes, sh); !err.success()) return err;
  const Extras ex = extras_of(qseg, kseg, slopes, sh, use_segments, use_alibi);
  const Band band{dlo, dhi};
  const KeyMask mask(km.typed_data(), sh.B, sh.S);
  const int64_t bq = std::max<int64_t>(1, block_q), bk = std::max<int64_t>(1, block_k);
  const float *Q = q.typed_data(), *K = k.typed_data(), *V = v.typed_data();
  const float *O = out.typed_data(), *LSE = lse.typed_data(), *dO = dout.typed_data();
  const float* dLSE = dlse.typed_data();
  float *dQ = dq->typed_data(), *dK = dk->typed_data(), *dV = dv->typed_data();
  const Layout lq{tf, sh.H, sh.L}, lk{tf, sh.Hk, sh.S};
  const int64_t ldq = lq.ld(sh.D), ldg = lq.ld(sh.Dv), ldk = lk.ld(sh.D), ldv = lk.ld(sh.Dv);
  const int64_t tq = std::min(bq, std::max<int64_t>(sh.L, 1)), tk = std::min(bk, std::max<int64_t>(sh.S, 1));

  // One task per key/value head: it alone writes that head's dK, dV and the dQ of its G query
  // heads, so no two threads ever write the same gradient row.
  parallel_for(sh.B * sh.Hk, [&](int64_t bhk) {
    const int64_t b = bhk / sh.Hk, h0 = (bhk % sh.Hk) * sh.G;  // first of its query heads
    std::vector<float> delta(sh.G * sh.L), p(tq * tk), ds(tq * tk), kbuf, vbuf;
    for (int64_t g = 0; g < sh.G; ++g) {
      const int64_t bh = b * sh.H + h0 + g;
      for (int64_t i = 0; i < sh.L; ++i) {
        const float* o = O + lq.off(bh, i, sh.Dv);
        const float* gr = dO + lq.off(bh, i, sh.Dv);
        float acc = 0.0f;
        for (int64_t d = 0; d < sh.Dv; ++d) acc += o[d] * gr[d];
        delta[g * sh.L + i] = acc - dLSE[lq.idx(bh, i)];
        std::fill_n(dQ + lq.off(bh, i, sh.D), sh.D, 0.0f);
      }
    }
    for (int64_t j = 0; j < sh.S; ++j) {
      std::fill_n(dK + lk.off(bhk, j, sh.D), sh.D, 0.0f);
      std::fill_n(dV + lk.off(bhk, j, sh.Dv), sh.Dv, 0.0f);
    }
    for (int64_t j0 = 0; j0 < sh.S; j0 += bk) {
      const int64_t nc = std::min(bk, sh.S - j0);
      const int64_t seen = mask.visible(b, j0, j0 + nc);
      if (seen == 0) continue;
      const float* kj = K + lk.off(bhk, j0, sh.D);
      const float* vj = V + lk.off(bhk, j0, sh.Dv);
      int64_t ldkj = ldk, ldvj = ldv;
      if (seen < nc) {  // dS Kⱼ and dO Vⱼᵀ must not read a masked key's NaN (times its ds = 0)
        kj = unmasked_rows(kj, ldk, sh.D, nc, mask, b, j0, kbuf);
        vj = unmasked_rows(vj, ldv, sh.Dv, nc, mask, b, j0, vbuf);
        ldkj = sh.D;
        ldvj = sh.Dv;
      }
      float* dkj = dK + lk.off(bhk, j0, sh.D);
      float* dvj = dV + lk.off(bhk, j0, sh.Dv);
      const int64_t ilo = band.query_lo(j0, sh.L), ihi = band.query_hi(j0 + nc, sh.L);
      for (int64_t g = 0; g < sh.G; ++g) {
        const int64_t h = h0 + g, bh = b * sh.H + h;
        for (int64_t i0 = ilo; i0 < ihi; i0 += bq) {
          const int64_t nr = std::min(bq, ihi - i0);
          const float* qi = Q + lq.off(bh, i0, sh.D);
          const float* gi = dO + lq.off(bh, i0, sh.Dv);
          float* dqi = dQ + lq.off(bh, i0, sh.D);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.D, scale, qi, ldq, kj,
                      ldkj, 0.0f, p.data(), nc);
          mask_tile(p.data(), nr, nc, i0, j0, band, mask, b, ex, h);
          for (int64_t r = 0; r < nr; ++r) {
            float* row = p.data() + r * nc;
            const float l = LSE[lq.idx(bh, i0 + r)];  // -inf: no visible key, so its p row is 0
            if (l == kNegInf) {
              std::fill(row, row + nc, 0.0f);
            } else if (std::isnan(l)) {  // a NaN row: NaN at its visible keys, 0 at the rest, as
              // where(visible, exp(s - lse), 0); visibility from the masks (a logit may be -inf)
              const int64_t i = i0 + r;
              const float* kb = mask.row(b) + j0;
              for (int64_t c = 0; c < nc; ++c) {
                const int64_t d = i - (j0 + c);
                row[c] = kb[c] == 0.0f && d >= band.dlo && d <= band.dhi && ex.same(b, i, j0 + c)
                             ? kNaN : 0.0f;
              }
            } else {
              exp_shift_sum(row, nc, l);
            }
          }
          // dV_j += Pᵀ dO_i ; dP = dO_i V_jᵀ
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, sh.Dv, nr, 1.0f, p.data(), nc,
                      gi, ldg, 1.0f, dvj, ldv);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nc, sh.Dv, 1.0f, gi, ldg, vj,
                      ldvj, 0.0f, ds.data(), nc);
          for (int64_t r = 0; r < nr; ++r) {
            const float dl = delta[g * sh.L + i0 + r];
            float* dsr = ds.data() + r * nc;
            const float* pr = p.data() + r * nc;
            for (int64_t c = 0; c < nc; ++c) dsr[c] = pr[c] * (dsr[c] - dl) * scale;
          }
          // dQ_i += dS K_j ; dK_j += dSᵀ Q_i
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, sh.D, nc, 1.0f, ds.data(), nc,
                      kj, ldkj, 1.0f, dqi, ldq);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nc, sh.D, nr, 1.0f, ds.data(), nc,
                      qi, ldq, 1.0f, dkj, ldk);
        }
      }
    }
    // A masked key's gradient is 0 (as the XLA engines', whose mask is a jnp.where), also next to
    // a NaN query, whose NaN ds row reaches every key of its tiles through dSᵀ Qᵢ.
    if (mask.visible(b, 0, sh.S) < sh.S)
      for (int64_t j = 0; j < sh.S; ++j)
        if (mask.row(b)[j] != 0.0f) std::fill_n(dK + lk.off(bhk, j, sh.D), sh.D, 0.0f);
  });
  return ffi::Error::Success();
}

// The bindings share their leading arguments (q, k, v, key_mask, q_seg, kv_seg, slopes) and,
// last, their attributes,
// named as flash_cpu.py passes them.
template <typename Binding>
auto Inputs(Binding b) {
  return std::move(b).template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::F32>>()
      .template Arg<ffi::Buffer<ffi::PRED>>()
      .template Arg<ffi::Buffer<ffi::S32>>()   // q segment ids
      .template Arg<ffi::Buffer<ffi::S32>>()   // kv segment ids
      .template Arg<ffi::Buffer<ffi::F32>>();  // ALiBi slopes
}

template <typename Binding>
auto Attrs(Binding b) {
  return std::move(b).template Attr<float>("scale")
      .template Attr<int64_t>("dlo")
      .template Attr<int64_t>("dhi")
      .template Attr<int64_t>("block_q")
      .template Attr<int64_t>("block_k")
      .template Attr<int64_t>("tokens_first")
      .template Attr<int64_t>("use_segments")
      .template Attr<int64_t>("use_alibi");
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
