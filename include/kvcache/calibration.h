// ACT-style attention calibration: damp the attention that detected hidden sinks receive.
#pragma once

#include <cstdint>
#include <span>

#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"

namespace kvcache {

/// Rescales, after the fact, one query's attention as if every *non-initial* token that the
/// detector calls a sink in (layer, head) had its softmax weight multiplied by `beta` before
/// normalisation (ACT, Yu et al. 2024, section 4). Initial sinks (PinReason::initial, the first
/// tokens) are left alone: removing their mass is what breaks models. With C the calibrated set
/// of a head and p its probabilities, the output becomes
///     out' = (out - (1 - beta) * sum_{j in C} p_j v_j) / (1 - (1 - beta) * sum_{j in C} p_j)
/// which equals re-running attention with log(beta) added to those logits, without touching the
/// kernels; mass is updated to the calibrated probabilities.
/// out: n_heads x head_dim as attend() wrote it; mass: n_heads x n_kept from the same call.
/// beta in (0, 1]; 1 changes nothing. Returns how many (head, token) pairs were calibrated.
/// Throws InvalidArgument for sizes that do not match the cache or beta outside (0, 1].
std::uint32_t calibrate_sinks(StreamCache& cache, const SinkDetector& detector, std::uint32_t layer,
                              float beta, std::span<float> out, std::span<float> mass);

}  // namespace kvcache
