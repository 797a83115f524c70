// A non-owning reference to a callable: what a loop body or a callback passed down a call needs. Unlike
// std::function it never allocates (a lambda capturing more than two pointers made std::function allocate on
// every parallel loop of every run), and it is two pointers to copy. The callable must outlive the reference:
// pass it as an argument, never store it past the call.
#pragma once
#include <memory>
#include <type_traits>
#include <utility>

namespace deltaonnx {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef> &&
                                              std::is_invocable_r_v<R, F&, Args...>>>
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): stands in for a callable argument
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace deltaonnx
