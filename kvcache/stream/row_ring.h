// Internal: a FIFO of fixed-width float rows in one growable ring buffer, so every row is
// contiguous (a std::deque<float> would split rows across chunks).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <span>
#include <vector>

namespace kvcache::detail {

class RowRing {
 public:
  explicit RowRing(std::size_t width = 0) : width_(width) {}

  std::size_t size() const { return size_; }
  void push_back_zero() {
    if (width_ == 0) {
      ++size_;
      return;
    }
    if (size_ == capacity()) grow();
    std::span<float> r = row(size_++);
    std::fill(r.begin(), r.end(), 0.f);
  }
  void pop_front(std::size_t n) {
    assert(n <= size_);
    if (capacity() > 0) head_ = (head_ + n) % capacity();
    size_ -= n;
  }
  std::span<float> row(std::size_t i) {
    assert(i < size_);
    if (width_ == 0) return {};
    return {data_.data() + ((head_ + i) % capacity()) * width_, width_};
  }
  std::span<const float> row(std::size_t i) const {
    assert(i < size_);
    if (width_ == 0) return {};
    return {data_.data() + ((head_ + i) % capacity()) * width_, width_};
  }

 private:
  std::size_t capacity() const { return width_ == 0 ? 0 : data_.size() / width_; }
  void grow() {
    const std::size_t old_cap = capacity();
    const std::size_t new_cap = std::max<std::size_t>(16, old_cap * 2);
    std::vector<float> next(new_cap * width_);
    for (std::size_t i = 0; i < size_; ++i) {
      const float* src = data_.data() + ((head_ + i) % old_cap) * width_;
      std::copy(src, src + width_, next.data() + i * width_);
    }
    data_ = std::move(next);
    head_ = 0;
  }

  std::size_t width_;        // floats per row
  std::vector<float> data_;  // capacity() rows
  std::size_t head_ = 0;     // row index of the front
  std::size_t size_ = 0;     // rows held
};

}  // namespace kvcache::detail
