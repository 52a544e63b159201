// An emulated CUDA device for a CPU-only PyTorch build (tests/gpu_path).
//
// Tensors on "cuda:0" are real TensorImpls with the CUDA dispatch key whose memory is ordinary
// host memory. Every operator that reaches the CUDA key runs as the CPU operator on CPU views
// ("aliases") of the same memory, and its results are labelled cuda:0 again. So values are
// exactly the CPU values, while everything above the backend (autograd, autocast's CUDA rules,
// torch.optim's device checks, DataLoader pinning, Python code branching on the device) takes
// the CUDA path. What is registered:
//
// - CUDA hooks (at::CUDAHooksInterface, registry name "CUDAHooks"): CUDA present, one device,
//   pinned host memory (tracked, so is_pinned() answers), device synchronisation. getCUDAHooks()
//   caches the hooks on its first call, which `import torch` makes: this library must be loaded
//   before torch is imported (tests/gpu_path/emulator.py does so in a fresh process).
// - a device guard (c10::impl::DeviceGuardImplInterface for DeviceType::CUDA): one device, one
//   stream, events that complete at once; the autograd engine runs CUDA backward passes on its
//   device thread through it.
// - an allocator for DeviceType::CUDA (storages made directly on the device, e.g. deepcopy).
// - a boxed kernel at the CUDA key: the backend fallback, and an explicit CUDA kernel for every
//   operator whose only kernel is CompositeExplicitAutograd(NonFunctional) (those kernels would
//   otherwise run on the CUDA tensors and reach CUDA-only device stubs, e.g. copy_ or
//   convolution_backward). The kernel
//     * checks devices as CUDA kernels do: every tensor argument on cuda:0, except 0-dim CPU
//       tensors (scalars), CPU index tensors of indexing ops, and the two sides of a copy; a
//       mix raises "Expected all tensors to be on the same device, ...";
//     * refuses a CPU generator for an operator running on the device, as CUDA kernels do;
//     * counts what would make the host wait for the GPU on a real device (a sync): reading a
//       scalar (item / bool / float), device-to-host copies, blocking host-to-device copies,
//       operators whose output size depends on the data (nonzero, unique, boolean-mask
//       indexing, ...) and explicit synchronisation; an optional callback receives each one.
//
// The emulator never runs a CUDA kernel: numerics, speed and memory are not those of a GPU.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/core/StorageImpl.h>
#include <c10/core/TensorImpl.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace duda_emu {

using c10::Device;
using c10::DeviceIndex;
using c10::DeviceType;

const Device kCuda0(DeviceType::CUDA, 0);

// ------------------------------------------------------------------ counting host syncs
enum SyncKind : int {
  kItem = 0,         // a scalar read on the host (.item(), float(t), bool(t), if t: ...)
  kDeviceToHost = 1, // a blocking copy from the device (.cpu(), .tolist(), .numpy() after .cpu())
  kHostToDevice = 2, // a blocking copy to the device (.to("cuda") without non_blocking): stream sync
  kDataShape = 3,    // output size depends on the values (nonzero, unique, mask indexing, ...)
  kExplicit = 4,     // torch.cuda.synchronize, stream / event / device synchronisation
  kAsyncCopy = 5,    // non-blocking host-to-device copy (not a sync; counted for information)
  kOps = 6,          // operators run on the device (for information)
  kNumCounters = 7,
};

std::atomic<int64_t> counters[kNumCounters];
using SyncCallback = void (*)(int, const char*);
std::atomic<SyncCallback> callback{nullptr};
std::atomic<bool> trace_ops{false};  // the callback also receives every operator (debugging)

void note(int kind, const std::string& what) {
  counters[kind].fetch_add(1, std::memory_order_relaxed);
  SyncCallback cb = callback.load();
  if (cb != nullptr && (kind != kOps || trace_ops.load())) {
    cb(kind, what.c_str());
  }
}

// ------------------------------------------------------------------ memory
// Device memory: host memory labelled cuda:0.
struct DeviceAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr p = c10::GetCPUAllocator()->allocate(n);
    p.unsafe_set_device(kCuda0);
    return p;
  }
  c10::DeleterFnPtr raw_deleter() const override {
    return c10::GetCPUAllocator()->raw_deleter();
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
DeviceAllocator device_allocator;

// Pinned host memory: plain host memory whose ranges are remembered for is_pinned().
std::mutex pinned_mutex;
std::map<uintptr_t, size_t> pinned_ranges;  // start -> bytes

void free_pinned(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned_ranges.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  c10::free_cpu(ptr);
}

struct PinnedAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* ptr = c10::alloc_cpu(n == 0 ? 1 : n);
    {
      std::lock_guard<std::mutex> lock(pinned_mutex);
      pinned_ranges[reinterpret_cast<uintptr_t>(ptr)] = n == 0 ? 1 : n;
    }
    return {ptr, ptr, &free_pinned, Device(DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override {
    return &free_pinned;
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
PinnedAllocator pinned_allocator;

bool is_pinned_ptr(const void* data) {
  auto p = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(pinned_mutex);
  auto it = pinned_ranges.upper_bound(p);
  if (it == pinned_ranges.begin()) {
    return false;
  }
  --it;
  return p >= it->first && p < it->first + it->second;
}

void check_index(DeviceIndex index) {
  TORCH_CHECK(
      index == 0 || index == -1,
      "CUDA error: invalid device ordinal (the emulated CUDA machine has one device, cuda:0; got ",
      static_cast<int>(index), ")");
}

// ------------------------------------------------------------------ device guard
struct DeviceGuard final : c10::impl::DeviceGuardImplInterface {
  DeviceType type() const override {
    return DeviceType::CUDA;
  }
  Device exchangeDevice(Device d) const override {
    check_index(d.index());
    return kCuda0;
  }
  Device getDevice() const override {
    return kCuda0;
  }
  void setDevice(Device d) const override {
    check_index(d.index());
  }
  void uncheckedSetDevice(Device) const noexcept override {}
  c10::Stream getStream(Device d) const override {
    return c10::Stream(c10::Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  c10::Stream getDefaultStream(Device d) const override {
    return c10::Stream(c10::Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  c10::Stream getStreamFromGlobalPool(Device d, bool) const override {
    return c10::Stream(c10::Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  c10::Stream getNewStream(Device d, int) const override {
    return c10::Stream(c10::Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  c10::Stream exchangeStream(c10::Stream s) const override {
    return c10::Stream(c10::Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  void destroyEvent(void* event, const DeviceIndex) const noexcept override {
    delete static_cast<int*>(event);
  }
  void record(void** event, const c10::Stream&, const DeviceIndex, const c10::EventFlag) const override {
    if (*event == nullptr) {
      *event = new int(0);
    }
  }
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override {
    return true;
  }
  DeviceIndex deviceCount() const noexcept override {
    return 1;
  }
  bool queryStream(const c10::Stream&) const override {
    return true;
  }
  void synchronizeStream(const c10::Stream&) const override {
    note(kExplicit, "stream synchronize");
  }
  void synchronizeEvent(void*) const override {
    note(kExplicit, "event synchronize");
  }
  void synchronizeDevice(const DeviceIndex) const override {
    note(kExplicit, "device synchronize");
  }
  void recordDataPtrOnStream(const c10::DataPtr&, const c10::Stream&) const override {}
  double elapsedTime(void*, void*, const DeviceIndex) const override {
    return 0.0;
  }
};

}  // namespace duda_emu

C10_REGISTER_GUARD_IMPL(CUDA, duda_emu::DeviceGuard);

// ------------------------------------------------------------------ CUDA hooks
namespace at {
struct DudaEmulatedCUDAHooks final : CUDAHooksInterface {
  explicit DudaEmulatedCUDAHooks(CUDAHooksArgs) {}
  void init() const override {}
  bool isBuilt() const override {
    return true;
  }
  bool isAvailable() const override {
    return true;
  }
  bool hasCUDA() const override {
    return true;
  }
  bool hasPrimaryContext(DeviceIndex index) const override {
    duda_emu::check_index(index);
    return true;
  }
  DeviceIndex deviceCount() const override {
    return 1;
  }
  int getNumGPUs() const override {
    return 1;
  }
  DeviceIndex current_device() const override {
    return 0;
  }
  void setCurrentDevice(DeviceIndex index) const override {
    duda_emu::check_index(index);
  }
  DeviceIndex getCurrentDevice() const override {
    return 0;
  }
  DeviceIndex exchangeDevice(DeviceIndex index) const override {
    duda_emu::check_index(index);
    return 0;
  }
  DeviceIndex maybeExchangeDevice(DeviceIndex index) const override {
    duda_emu::check_index(index);
    return 0;
  }
  bool isPinnedPtr(const void* data) const override {
    return duda_emu::is_pinned_ptr(data);
  }
  Allocator* getPinnedMemoryAllocator() const override {
    return &duda_emu::pinned_allocator;
  }
  Allocator* getCUDADeviceAllocator() const override {
    return &duda_emu::device_allocator;
  }
  Device getDeviceFromPtr(void*) const override {
    return duda_emu::kCuda0;
  }
  void deviceSynchronize(DeviceIndex) const override {
    duda_emu::note(duda_emu::kExplicit, "device synchronize");
  }
};
C10_REGISTER_CLASS(CUDAHooksRegistry, CUDAHooks, DudaEmulatedCUDAHooks);
}  // namespace at

namespace duda_emu {

// ------------------------------------------------------------------ the CUDA kernel
// One call of an operator on the device: the CPU aliases handed to the CPU kernel and how to
// map its results back.
struct Call {
  const c10::OperatorHandle& op;
  std::string name;  // aten::add.Tensor
  // device memory -> its CPU alias storage, and back
  std::unordered_map<c10::StorageImpl*, c10::Storage> alias_storage;
  std::unordered_map<c10::StorageImpl*, c10::Storage> device_storage;
  std::vector<std::pair<at::Tensor, at::Tensor>> aliases;  // (device tensor, CPU alias)
  std::unordered_map<c10::StorageImpl*, at::Tensor> viewed;  // device memory -> a tensor on it
  std::unordered_set<c10::TensorImpl*> host_inputs;
  std::unordered_set<c10::StorageImpl*> host_storages;
  bool on_device = false;
  std::optional<Device> first_device;
  std::string mismatch;  // the first argument on the wrong device

  explicit Call(const c10::OperatorHandle& handle) : op(handle) {
    const auto& s = handle.schema();
    name = s.name() + (s.overload_name().empty() ? "" : "." + s.overload_name());
  }

  static void release_storage(void* ctx) {
    delete static_cast<c10::Storage*>(ctx);
  }

  c10::Storage cpu_storage_for(const c10::Storage& st) {
    c10::StorageImpl* key = st.unsafeGetStorageImpl();
    auto found = alias_storage.find(key);
    if (found != alias_storage.end()) {
      return found->second;
    }
    void* ptr = key->_mutable_data_ptr_no_checks().get();
    auto* keep = new c10::Storage(st);  // the device memory lives while the alias does
    c10::DataPtr data(ptr, keep, &Call::release_storage, Device(DeviceType::CPU));
    auto impl = c10::make_intrusive<c10::StorageImpl>(
        c10::StorageImpl::use_byte_size_t(), st.sym_nbytes(), std::move(data), c10::GetCPUAllocator(),
        /*resizable=*/true);
    c10::Storage alias(std::move(impl));
    alias_storage.emplace(key, alias);
    device_storage.emplace(alias.unsafeGetStorageImpl(), st);
    return alias;
  }

  at::Tensor alias_of(const at::Tensor& t) {
    TORCH_CHECK(t.has_storage(), "emulated CUDA: ", name, " got a device tensor without storage");
    auto alias = at::detail::make_tensor<c10::TensorImpl>(
        cpu_storage_for(t.storage()), c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
    auto* impl = alias.unsafeGetTensorImpl();
    impl->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
    impl->_set_conj(t.is_conj());
    impl->_set_neg(t.is_neg());
    aliases.emplace_back(t, alias);
    viewed.emplace(t.storage().unsafeGetStorageImpl(), t);
    return alias;
  }

  // The argument as the CPU kernel takes it; notes device mixes.
  at::Tensor input(const at::Tensor& t, const std::string& arg, bool host_allowed) {
    if (!t.defined()) {
      return t;
    }
    Device d = t.device();
    if (!first_device) {
      first_device = d;
    }
    if (d.type() == DeviceType::CUDA) {
      check_index(d.index());
      on_device = true;
      return alias_of(t);
    }
    if (d.type() == DeviceType::CPU) {
      host_inputs.insert(t.unsafeGetTensorImpl());
      if (t.has_storage()) {
        host_storages.insert(t.storage().unsafeGetStorageImpl());
      }
      if (!host_allowed && t.dim() != 0 && mismatch.empty()) {
        mismatch = arg;
      }
      return t;
    }
    TORCH_CHECK(false, "emulated CUDA: ", name, " got a tensor on ", d, " (argument ", arg, ")");
  }

  // A result of the CPU kernel as the caller gets it.
  at::Tensor output(const at::Tensor& out, bool to_host) {
    if (!out.defined()) {
      return out;
    }
    c10::TensorImpl* impl = out.unsafeGetTensorImpl();
    for (auto& [device_tensor, alias] : aliases) {
      if (alias.unsafeGetTensorImpl() == impl) {
        return device_tensor;
      }
    }
    if (host_inputs.count(impl) || out.device().type() != DeviceType::CPU || !out.has_storage()) {
      return out;
    }
    c10::StorageImpl* st = out.storage().unsafeGetStorageImpl();
    auto view = device_storage.find(st);
    if (to_host) {
      TORCH_CHECK(view == device_storage.end(), "emulated CUDA: ", name, " returned a host view of device memory");
      return out;
    }
    if (view != device_storage.end()) {
      // a view of device memory: made as the backends make views, with the viewed tensor's keys
      // (a view of a normal tensor taken in inference mode is a normal tensor)
      auto base = viewed.find(view->second.unsafeGetStorageImpl());
      auto result = base != viewed.end()
          ? at::detail::make_tensor<c10::TensorImpl>(
                c10::TensorImpl::VIEW, c10::Storage(view->second), base->second.key_set(), out.dtype())
          : at::detail::make_tensor<c10::TensorImpl>(
                c10::Storage(view->second), c10::DispatchKeySet(c10::DispatchKey::CUDA), out.dtype());
      finish(result, out);
      return result;
    }
    c10::Storage memory;
    if (host_storages.count(st)) {
      return output(out.clone(), false);  // shares host memory with an input: copy it over
    } else {
      memory = out.storage();  // fresh memory: it becomes device memory
      to_device_memory(st);
    }
    auto result = at::detail::make_tensor<c10::TensorImpl>(
        std::move(memory), c10::DispatchKeySet(c10::DispatchKey::CUDA), out.dtype());
    finish(result, out);
    return result;
  }

  // Fresh host memory made by the CPU kernel becomes device memory.
  static void to_device_memory(c10::StorageImpl* st) {
    if (!st->device().is_cuda()) {
      st->_mutable_data_ptr_no_checks().unsafe_set_device(kCuda0);
      st->set_allocator(&device_allocator);
    }
  }

  static void finish(at::Tensor& result, const at::Tensor& out) {
    auto* r = result.unsafeGetTensorImpl();
    r->set_sizes_and_strides(out.sizes(), out.strides(), out.storage_offset());
    r->_set_conj(out.is_conj());
    r->_set_neg(out.is_neg());
  }

  // After the CPU kernel: a mutated device argument takes its alias's new memory and shape
  // (resize_, set_, in-place view ops, out= arguments that were resized).
  void write_back() {
    for (auto& [device_tensor, alias] : aliases) {
      c10::TensorImpl* dst = device_tensor.unsafeGetTensorImpl();
      c10::TensorImpl* src = alias.unsafeGetTensorImpl();
      c10::StorageImpl* alias_st = src->storage().unsafeGetStorageImpl();
      auto mapped = device_storage.find(alias_st);
      if (mapped == device_storage.end()) {
        // the alias was pointed at other memory (set_): device memory, or fresh host memory
        c10::Storage memory = src->storage();
        to_device_memory(alias_st);
        if (dst->storage().unsafeGetStorageImpl() != memory.unsafeGetStorageImpl()) {
          dst->set_storage_keep_dtype(memory);
        }
      } else {
        c10::StorageImpl* memory = mapped->second.unsafeGetStorageImpl();
        void* now = alias_st->_mutable_data_ptr_no_checks().get();
        if (now != memory->_mutable_data_ptr_no_checks().get() || alias_st->nbytes() != memory->nbytes()) {
          // the CPU kernel reallocated (resize): the device memory takes the new block
          c10::DataPtr moved = alias_st->set_data_ptr(c10::DataPtr());
          moved.unsafe_set_device(kCuda0);
          size_t bytes = alias_st->nbytes();
          memory->set_data_ptr_noswap(std::move(moved));
          memory->set_nbytes(bytes);
          // keep the alias usable for outputs that view it
          void* block = memory->_mutable_data_ptr_no_checks().get();
          alias_st->set_data_ptr_noswap(c10::DataPtr(block, Device(DeviceType::CPU)));
        }
        if (dst->storage().unsafeGetStorageImpl() != memory) {
          dst->set_storage_keep_dtype(mapped->second);
        }
      }
      if (dst->sizes() != src->sizes() || dst->strides() != src->strides() ||
          dst->storage_offset() != src->storage_offset()) {
        dst->set_sizes_and_strides(src->sizes(), src->strides(), src->storage_offset());
      }
    }
  }
};

bool base_is(const std::string& name, std::initializer_list<const char*> bases) {
  std::string base = name.substr(0, name.find('.'));
  for (const char* b : bases) {
    if (base == b) {
      return true;
    }
  }
  return false;
}

bool is_pinned_tensor(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.has_storage() && is_pinned_ptr(t.storage().data());
}

void kernel(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  Call call(op);
  const auto& schema = op.schema();
  const auto& args = schema.arguments();
  const size_t n = args.size();
  const size_t first = stack->size() - n;
  const std::string& name = call.name;

  if (base_is(name, {"aten::record_stream"})) {  // one stream: nothing to record
    torch::jit::drop(*stack, n);
    return;
  }
  // the two sides of a copy may be on either device; CPU index tensors are allowed
  const bool copy_like = base_is(
      name, {"aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize", "aten::_to_copy", "aten::_to_cpu"});
  const bool indexing = base_is(
      name, {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_", "aten::_unsafe_index",
             "aten::_unsafe_index_put"});
  // their device argument names the accelerator of pinned memory, not where the result goes
  const bool keeps_device_arg = base_is(name, {"aten::is_pinned", "aten::_pin_memory", "aten::pin_memory"});

  std::optional<Device> target;  // a device argument
  std::vector<at::Generator> generators;
  bool host_index_tensor = false, device_mask_index = false;
  std::vector<bool> on_device_arg(n, false);  // a device tensor was passed here
  for (size_t i = 0; i < n; ++i) {
    c10::IValue& v = (*stack)[first + i];
    const std::string& arg = args[i].name();
    const bool host_ok = copy_like || (indexing && arg == "indices");
    if (v.isTensor()) {
      on_device_arg[i] = v.toTensor().defined() && v.toTensor().device().is_cuda();
      v = call.input(v.toTensor(), arg, host_ok);
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      c10::List<at::Tensor> moved;
      moved.reserve(list.size());
      for (size_t j = 0; j < list.size(); ++j) {
        moved.push_back(call.input(list.get(j), arg, host_ok));
      }
      v = std::move(moved);
    } else if (v.isOptionalTensorList()) {
      auto list = v.toOptionalTensorList();
      c10::List<std::optional<at::Tensor>> moved;
      moved.reserve(list.size());
      for (size_t j = 0; j < list.size(); ++j) {
        std::optional<at::Tensor> t = list.get(j);
        if (t.has_value() && t->defined()) {
          if (indexing && arg == "indices") {
            bool mask = t->scalar_type() == at::kBool || t->scalar_type() == at::kByte;
            if (t->device().is_cuda() && mask) {
              device_mask_index = true;
            } else if (t->device().is_cpu() && t->dim() > 0) {
              host_index_tensor = true;
            }
          }
          t = call.input(*t, arg, host_ok);
        }
        moved.push_back(t);
      }
      v = std::move(moved);
    } else if (v.isStorage()) {  // set_(tensor, storage, ...)
      c10::Storage st = v.toStorage();
      if (st.device().is_cuda()) {
        call.on_device = true;
        v = c10::IValue(call.cpu_storage_for(st));
      } else if (call.mismatch.empty()) {
        call.mismatch = arg;
      }
    } else if (v.isGenerator()) {
      generators.push_back(v.toGenerator());
    } else if (v.isDevice() && !keeps_device_arg) {
      Device d = v.toDevice();
      target = d;
      if (d.is_cuda()) {
        check_index(d.index());
        call.on_device = true;
        v = c10::IValue(Device(DeviceType::CPU));
      }
    }
  }

  // what a CUDA kernel refuses
  if (!call.mismatch.empty()) {
    const bool host_first = call.first_device && call.first_device->is_cpu();
    const Device first_seen = host_first ? Device(DeviceType::CPU) : kCuda0;
    const Device other = host_first ? kCuda0 : Device(DeviceType::CPU);
    TORCH_CHECK(
        false, "Expected all tensors to be on the same device, but found at least two devices, ", first_seen,
        " and ", other, "! (when checking argument for argument ", call.mismatch, " in method ", name,
        " [emulated CUDA])");
  }
  for (const auto& g : generators) {
    TORCH_CHECK(
        !g.defined() || g.device().type() == DeviceType::CUDA,
        "Expected a 'cuda' device type for generator but found '",
        c10::DeviceTypeName(g.device().type(), /*lower_case=*/true), "' (", name, " [emulated CUDA])");
  }

  // what a real device would wait for
  note(kOps, name);
  const bool to_host = target.has_value() && target->is_cpu();
  auto arg_index = [&](const char* arg) -> std::optional<size_t> {
    for (size_t i = 0; i < n; ++i) {
      if (args[i].name() == arg) return i;
    }
    return std::nullopt;
  };
  auto flag = [&](const char* arg) {
    auto i = arg_index(arg);
    return i && (*stack)[first + *i].isBool() && (*stack)[first + *i].toBool();
  };
  if (base_is(name, {"aten::_local_scalar_dense", "aten::equal"})) {
    note(kItem, name);
  } else if (base_is(name, {"aten::copy_", "aten::_copy_from", "aten::_copy_from_and_resize"})) {
    // copy_(self=dst, src); _copy_from(self=src, dst)
    const bool is_copy = base_is(name, {"aten::copy_"});
    const size_t dst = is_copy ? 0 : 1, src = is_copy ? 1 : 0;
    const bool non_blocking = flag("non_blocking");
    if (on_device_arg[src] && !on_device_arg[dst]) {
      const bool pinned = is_pinned_tensor((*stack)[first + dst].toTensor());
      note(non_blocking && pinned ? kAsyncCopy : kDeviceToHost, name);
    } else if (on_device_arg[dst] && !on_device_arg[src]) {
      note(non_blocking ? kAsyncCopy : kHostToDevice, name);
    }
  } else if (base_is(name, {"aten::_to_copy"})) {
    const bool non_blocking = flag("non_blocking");
    if (on_device_arg[0] && to_host) {
      note(non_blocking && flag("pin_memory") ? kAsyncCopy : kDeviceToHost, name);
    } else if (!on_device_arg[0] && target && target->is_cuda()) {
      note(non_blocking ? kAsyncCopy : kHostToDevice, name);
    }
  } else if (base_is(name, {"aten::_to_cpu"})) {
    note(kDeviceToHost, name);
  } else if (base_is(name, {"aten::nonzero", "aten::masked_select", "aten::_unique", "aten::_unique2",
                            "aten::unique_dim", "aten::unique_consecutive", "aten::unique_dim_consecutive",
                            "aten::bincount", "aten::histc"})) {
    note(kDataShape, name);
  } else if (name == "aten::repeat_interleave.Tensor") {
    auto i = arg_index("output_size");
    if (!i || (*stack)[first + *i].isNone()) {
      note(kDataShape, name);
    }
  }
  if (indexing && device_mask_index) {
    note(kDataShape, name + " (boolean mask)");
  }
  if (indexing && host_index_tensor) {
    note(kHostToDevice, name + " (host index tensor)");
  }

  try {
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  } catch (const c10::NotImplementedError& e) {
    TORCH_CHECK(
        false, "emulated CUDA: ", name, " has no CPU kernel to run it with (", e.what_without_backtrace(), ")");
  }
  call.write_back();

  const size_t n_out = schema.returns().size();
  const size_t out_first = stack->size() - n_out;
  for (size_t i = 0; i < n_out; ++i) {
    c10::IValue& r = (*stack)[out_first + i];
    if (r.isTensor()) {
      r = call.output(r.toTensor(), to_host);
    } else if (r.isTensorList()) {
      auto list = r.toTensorList();
      c10::List<at::Tensor> moved;
      moved.reserve(list.size());
      for (size_t j = 0; j < list.size(); ++j) {
        moved.push_back(call.output(list.get(j), to_host));
      }
      r = std::move(moved);
    }
  }
}

std::vector<std::unique_ptr<c10::RegistrationHandleRAII>>& registrations() {
  static auto* handles = new std::vector<std::unique_ptr<c10::RegistrationHandleRAII>>();
  return *handles;
}

}  // namespace duda_emu

extern "C" {

// Register the CUDA kernels; returns how many operators got an explicit one (the others use the
// fallback). Idempotent.
int64_t duda_emu_install() {
  using namespace duda_emu;
  static std::once_flag once;
  static int64_t explicit_ops = 0;
  std::call_once(once, [] {
    c10::SetAllocator(DeviceType::CUDA, &device_allocator);
    auto& dispatcher = c10::Dispatcher::singleton();
    registrations().push_back(std::make_unique<c10::RegistrationHandleRAII>(dispatcher.registerFallback(
        c10::DispatchKey::CUDA, c10::KernelFunction::makeFromBoxedFunction<&kernel>(), "duda emulated CUDA")));
    for (const auto& op_name : dispatcher.getAllOpNames()) {
      auto handle = dispatcher.findOp(op_name);
      if (!handle || !handle->hasSchema()) {
        continue;
      }
      const bool composite = handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutograd) ||
          handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeExplicitAutogradNonFunctional);
      if (!composite || handle->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd) ||
          handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) {
        continue;
      }
      registrations().push_back(std::make_unique<c10::RegistrationHandleRAII>(dispatcher.registerImpl(
          op_name, c10::DispatchKey::CUDA, c10::KernelFunction::makeFromBoxedFunction<&kernel>(), std::nullopt,
          nullptr, "duda emulated CUDA")));
      ++explicit_ops;
    }
  });
  return explicit_ops;
}

int duda_emu_has_cuda() {
  return at::detail::getCUDAHooks().hasCUDA() ? 1 : 0;
}

void duda_emu_counts(int64_t* out) {
  for (int i = 0; i < duda_emu::kNumCounters; ++i) {
    out[i] = duda_emu::counters[i].load();
  }
}

void duda_emu_reset() {
  for (auto& c : duda_emu::counters) {
    c.store(0);
  }
}

void duda_emu_set_callback(duda_emu::SyncCallback cb) {
  duda_emu::callback.store(cb);
}

void duda_emu_set_trace(int on) {
  duda_emu::trace_ops.store(on != 0);
}

void duda_emu_note_sync(const char* what) {
  duda_emu::note(duda_emu::kExplicit, what);
}

}  // extern "C"
