// kg2text's CPU kernels, built at first use by kg2text/kernels.py (g++, no Python headers).
//
// decode_attention: one new query token per row against that row's keys/values in the decoding cache.
// Why: at batch 32 x beam 5, torch's batched matmuls multiply 480 tiny (3 x 64) x (64 x T) blocks per layer and
// step and read each row's keys and values at a fraction of the memory rate; this reads them once, all query
// heads of a key/value head together, each (row, key/value head) a task on torch's own thread pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cfloat>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t LANES = 8;  // one AVX2 register of floats; the compiler vectorizes these fixed-width loops

// scores[g] = q[g] . key for the ``group`` query heads of one key/value head, the key read once for all of them
void group_dots(const float* q, const float* key, int64_t group, int64_t dim, float* scores) {
  const int64_t whole = dim - dim % LANES;
  for (int64_t g = 0; g < group; ++g) {
    float lanes[LANES] = {0.f};
    const float* qg = q + g * dim;
    for (int64_t i = 0; i < whole; i += LANES)
      for (int64_t l = 0; l < LANES; ++l) lanes[l] += qg[i + l] * key[i + l];
    float sum = 0.f;
    for (int64_t l = 0; l < LANES; ++l) sum += lanes[l];
    for (int64_t i = whole; i < dim; ++i) sum += qg[i] * key[i];
    scores[g] = sum;
  }
}

void add_scaled(float* out, const float* v, float scale, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] += scale * v[i];
}

// query (R, H, D); keys, values (R, KV, T, D) with a contiguous last dim (views of the cache); valid (R, T) bool.
// Returns (R, 1, H, D): softmax(q k^T * scaling, masked) v, a masked key scored as the lowest float (as
// kg2text.prefix.grouped_attention does: a row with no valid key averages all).
at::Tensor decode_attention(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& valid, double scaling) {
  TORCH_CHECK(query.dim() == 3 && keys.dim() == 4 && values.dim() == 4 && valid.dim() == 2, "decode_attention: shapes");
  TORCH_CHECK(query.scalar_type() == at::kFloat && keys.scalar_type() == at::kFloat &&
                  values.scalar_type() == at::kFloat && valid.scalar_type() == at::kBool,
              "decode_attention: fp32 query/keys/values, bool mask");
  TORCH_CHECK(keys.stride(3) == 1 && values.stride(3) == 1 && valid.stride(1) == 1, "decode_attention: strides");
  const auto q = query.contiguous();
  const int64_t rows = q.size(0), heads = q.size(1), dim = q.size(2);
  const int64_t kv_heads = keys.size(1), length = keys.size(2), group = heads / kv_heads;
  TORCH_CHECK(keys.size(0) == rows && values.sizes() == keys.sizes() && keys.size(3) == dim &&
                  heads % kv_heads == 0 && valid.size(0) == rows && valid.size(1) == length,
              "decode_attention: sizes");
  auto out = at::empty({rows, 1, heads, dim}, q.options());
  const float* q_data = q.data_ptr<float>();
  const float* k_data = keys.data_ptr<float>();
  const float* v_data = values.data_ptr<float>();
  const bool* valid_data = valid.data_ptr<bool>();
  float* out_data = out.data_ptr<float>();
  const float scale = static_cast<float>(scaling);
  const int64_t k_row = keys.stride(0), k_head = keys.stride(1), k_slot = keys.stride(2);
  const int64_t v_row = values.stride(0), v_head = values.stride(1), v_slot = values.stride(2);
  const int64_t valid_row = valid.stride(0);
  at::parallel_for(0, rows * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(group * length), dots(group);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / kv_heads, head = task % kv_heads;
      const float* k = k_data + row * k_row + head * k_head;
      const float* v = v_data + row * v_row + head * v_head;
      const bool* row_valid = valid_data + row * valid_row;
      const float* q_group = q_data + (row * heads + head * group) * dim;
      float* o = out_data + (row * heads + head * group) * dim;
      for (int64_t t = 0; t < length; ++t) {
        const float* key = k + t * k_slot;
        group_dots(q_group, key, group, dim, dots.data());
        for (int64_t g = 0; g < group; ++g) scores[g * length + t] = row_valid[t] ? dots[g] * scale : -FLT_MAX;
      }
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * length;
        float top = -FLT_MAX, total = 0.f;
        for (int64_t t = 0; t < length; ++t) top = std::max(top, s[t]);
        for (int64_t t = 0; t < length; ++t) total += (s[t] = std::exp(s[t] - top));
        for (int64_t t = 0; t < length; ++t) s[t] /= total;
        std::fill(o + g * dim, o + (g + 1) * dim, 0.f);
      }
      for (int64_t t = 0; t < length; ++t) {
        const float* value = v + t * v_slot;
        for (int64_t g = 0; g < group; ++g)
          if (scores[g * length + t] != 0.f) add_scaled(o + g * dim, value, scores[g * length + t], dim);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(kg2text, m) {
  m.def("decode_attention(Tensor query, Tensor keys, Tensor values, Tensor valid, float scaling) -> Tensor");
  m.impl("decode_attention", c10::DispatchKey::CPU, TORCH_FN(decode_attention));
}
