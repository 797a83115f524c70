# Builds libdeltaonnx_ops_cuda (DeltaConv/DeltaPool/DeltaMapUnion for ORT's CUDAExecutionProvider) when nvcc is
# available. DELTAONNX_CUDA=AUTO (build when nvcc is found), ON (required), OFF. DELTAONNX_CUDA_ARCHS lists the
# GPU architectures: each gets SASS, and the last (newest) also gets PTX so that later GPUs JIT-compile it.
# Expects from the including project: DELTAONNX_ORT_INCLUDE, DELTAONNX_INSTALL_DIR.
set(_delta_root ${CMAKE_CURRENT_LIST_DIR}/..)

# The host code both CUDA libraries compile: the op definition, the ops' host sides and the pipeline's launches.
set(_delta_cuda_host_sources
  ${_delta_root}/ops/registration.cc
  ${_delta_root}/ops/op_definition/attribute_reader.cc
  ${_delta_root}/ops/op_definition/delta_attributes.cc
  ${_delta_root}/ops/op_definition/ort_tensors.cc
  ${_delta_root}/ops/op_definition/shape_reference.cc
  ${_delta_root}/ops/common/window_spec.cc
  ${_delta_root}/ops/cuda_common/ort_support.cc
  ${_delta_root}/ops/cuda_common/device_run.cc
  ${_delta_root}/ops/cuda_common/delta_pipeline.cc
  ${_delta_root}/ops/delta_conv/cuda/delta_conv_cuda_op.cc
  ${_delta_root}/ops/delta_pool/cuda/delta_pool_cuda_op.cc
  ${_delta_root}/ops/map_union/cuda/map_union_cuda_op.cc
  ${_delta_root}/ops/delta_gate/cuda/delta_gate_cuda_op.cc
  ${_delta_root}/ops/delta_reorder/cuda/delta_reorder_cuda_op.cc
  ${_delta_root}/ops/delta_resize/cuda/delta_resize_cuda_op.cc
  ${_delta_root}/ops/channel_ops/cuda/channel_cuda_ops.cc
  ${_delta_root}/ops/channel_ops/cuda/channel_gate_cuda_op.cc
  ${_delta_root}/ops/delta_gate/gate_op_inputs.cc
  ${_delta_root}/ops/delta_gate/gate_spec.cc)

# The same ops with every kernel run by its host emulation (ops/cuda_common/host), for ORT's CPU provider:
# a test build that proves the CUDA library's host code and kernel logic end to end without a GPU or nvcc.
option(DELTAONNX_CUDA_EMULATION "Also build deltaonnx_ops_cuda_emulated (tests only, never installed)" OFF)
if(DELTAONNX_CUDA_EMULATION)
  add_library(deltaonnx_ops_cuda_emulated SHARED ${_delta_cuda_host_sources}
    ${_delta_root}/ops/cuda_common/host/emulated_launch.cc)
  # The stand-in cuda_runtime_api.h comes first; the real CUDA headers are never on this target's path.
  target_include_directories(deltaonnx_ops_cuda_emulated PRIVATE
    ${_delta_root}/ops/cuda_common/host/emulated_cuda ${_delta_root}/ops ${DELTAONNX_ORT_INCLUDE})
  target_compile_definitions(deltaonnx_ops_cuda_emulated PRIVATE ORT_API_MANUAL_INIT DELTAONNX_CUDA_HOST_EMULATION=1 DELTAONNX_CUDA_LIBRARY=1)
  target_compile_options(deltaonnx_ops_cuda_emulated PRIVATE -O2)
  set_target_properties(deltaonnx_ops_cuda_emulated PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(NOT APPLE)
    target_link_options(deltaonnx_ops_cuda_emulated PRIVATE -Wl,--no-undefined
      -Wl,--version-script=${_delta_root}/ops/cuda_common/exports.map)
  endif()
endif()

if(DELTAONNX_CUDA STREQUAL "OFF")
  return()
endif()

include(CheckLanguage)
if(NOT CMAKE_CUDA_COMPILER)
  find_program(_delta_nvcc nvcc HINTS /usr/local/cuda/bin ENV CUDA_HOME PATH_SUFFIXES bin)
  if(_delta_nvcc)
    set(CMAKE_CUDA_COMPILER ${_delta_nvcc})
  endif()
endif()
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(DELTAONNX_CUDA STREQUAL "ON")
    message(FATAL_ERROR "deltaonnx: DELTAONNX_CUDA=ON but no nvcc was found (set CUDACXX or put nvcc on PATH)")
  endif()
  message(STATUS "deltaonnx: nvcc not found, the CUDA op library is not built")
  return()
endif()

# "75;80;90" -> "75-real;80-real;90": SASS for every architecture, PTX only for the newest (smaller library,
# shorter build; entries that already say -real/-virtual are kept as given).
set(_delta_cuda_archs "")
list(LENGTH DELTAONNX_CUDA_ARCHS _delta_arch_count)
math(EXPR _delta_last "${_delta_arch_count} - 1")
set(_delta_index 0)
foreach(_arch IN LISTS DELTAONNX_CUDA_ARCHS)
  if(_arch MATCHES "-(real|virtual)$" OR _delta_index EQUAL _delta_last)
    list(APPEND _delta_cuda_archs ${_arch})
  else()
    list(APPEND _delta_cuda_archs ${_arch}-real)
  endif()
  math(EXPR _delta_index "${_delta_index} + 1")
endforeach()
set(CMAKE_CUDA_ARCHITECTURES ${_delta_cuda_archs})
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(deltaonnx_ops_cuda SHARED ${_delta_cuda_host_sources}
  ${_delta_root}/ops/cuda_common/pipeline_kernels.cu
  ${_delta_root}/ops/delta_conv/cuda/gather_gemm_kernel.cu
  ${_delta_root}/ops/delta_pool/cuda/max_pool_kernel.cu
  ${_delta_root}/ops/map_union/cuda/map_union_kernel.cu
  ${_delta_root}/ops/delta_gate/cuda/gate_kernel.cu
  ${_delta_root}/ops/delta_resize/cuda/resize_kernel.cu
  ${_delta_root}/ops/channel_ops/cuda/channel_kernels.cu)
set_target_properties(deltaonnx_ops_cuda PROPERTIES
  CUDA_ARCHITECTURES "${_delta_cuda_archs}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_VISIBILITY_PRESET hidden
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  POSITION_INDEPENDENT_CODE ON)
target_include_directories(deltaonnx_ops_cuda PRIVATE ${_delta_root}/ops ${DELTAONNX_ORT_INCLUDE})
target_compile_definitions(deltaonnx_ops_cuda PRIVATE ORT_API_MANUAL_INIT DELTAONNX_CUDA_LIBRARY=1)
target_compile_options(deltaonnx_ops_cuda PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-O3> $<$<COMPILE_LANGUAGE:CUDA>:-O3>)
target_link_libraries(deltaonnx_ops_cuda PRIVATE CUDA::cudart_static)
if(NOT APPLE)
  target_link_options(deltaonnx_ops_cuda PRIVATE -Wl,--no-undefined
    -Wl,--version-script=${_delta_root}/ops/cuda_common/exports.map)
  set_property(TARGET deltaonnx_ops_cuda APPEND PROPERTY LINK_DEPENDS ${_delta_root}/ops/cuda_common/exports.map)
endif()
install(TARGETS deltaonnx_ops_cuda LIBRARY DESTINATION ${DELTAONNX_INSTALL_DIR})
message(STATUS "deltaonnx: building the CUDA op library for ${_delta_cuda_archs}")
