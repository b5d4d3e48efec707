// An AsyncWorker that settles a Promise. Execute() runs on the libuv thread pool and must not touch
// JS: it records a SystemFailure instead of throwing; Resolve() builds the result on the JS thread.
#ifndef HOTMEM_NATIVE_PROMISE_WORKER_H_
#define HOTMEM_NATIVE_PROMISE_WORKER_H_

#include <napi.h>

#include "errors.h"

namespace hotmem {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  // Queues the worker (which deletes itself when done) and returns its promise.
  Napi::Promise Start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  virtual Napi::Value Resolve(Napi::Env env) { return env.Undefined(); }
  // Lets a worker decorate the error (e.g. with the kernel's busy_pfn) before rejecting.
  virtual void Decorate(Napi::Error& /*error*/) {}

  SystemFailure failure_;

 private:
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (failure_) {
      Napi::Error error = ErrnoError(env, failure_);
      Decorate(error);
      deferred_.Reject(error.Value());
      return;
    }
    try {
      deferred_.Resolve(Resolve(env));
    } catch (const Napi::Error& error) {
      deferred_.Reject(error.Value());
    }
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

  Napi::Promise::Deferred deferred_;
};

}  // namespace hotmem

#endif  // HOTMEM_NATIVE_PROMISE_WORKER_H_
