# ONNX Runtime's C/C++ headers (onnxruntime_cxx_api.h). deltaonnx compiles against them and links against no
# ORT library (the op library resolves ORT's API when ORT loads it), so the headers are all a build needs.
#
# deltaonnx_find_ort_headers(<out>) sets <out> to the directory holding them, looking in this order:
#   1. ORT_INCLUDE_DIR, when set (a directory given on purpose must hold them: otherwise an error);
#   2. DELTAONNX_ORT_SYSTEM_DIRS (where Debian's libonnxruntime-dev and manual installs put them);
#   3. DELTAONNX_ORT_FETCH_DIR, the build tree's copy from an earlier configure;
#   4. unless DELTAONNX_FETCH_ORT_HEADERS is OFF: fetched into DELTAONNX_ORT_FETCH_DIR by
#      scripts/fetch_ort_headers.sh (Debian's libonnxruntime-dev, from the trixie suite of the mirror apt already
#      uses on Debian 12; no root needed: only the build tree is written).
# Works in a project and in script mode (cmake -P), so tests can run it with the system locations hidden.
set(_deltaonnx_ort_fetch_script "${CMAKE_CURRENT_LIST_DIR}/../scripts/fetch_ort_headers.sh")

function(deltaonnx_find_ort_headers out)
  set(header onnxruntime_cxx_api.h)
  set(advice
    "  Debian 13+:  apt-get install libonnxruntime-dev\n"
    "  Debian 12:   bash scripts/fetch_ort_headers.sh DIR   (extracts them from the trixie package; DIR/onnxruntime)\n"
    "  elsewhere:   pass -DORT_INCLUDE_DIR=/path/to/include/onnxruntime (or set ORT_INCLUDE_DIR; with pip:\n"
    "               pip install . --config-settings=cmake.define.ORT_INCLUDE_DIR=/path)")
  if(ORT_INCLUDE_DIR)
    foreach(dir "${ORT_INCLUDE_DIR}" "${ORT_INCLUDE_DIR}/onnxruntime")
      if(EXISTS "${dir}/${header}")
        set(${out} "${dir}" PARENT_SCOPE)
        return()
      endif()
    endforeach()
    message(FATAL_ERROR "deltaonnx: ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} holds no ${header} (nor its onnxruntime/ "
                        "subdirectory).\n" ${advice})
  endif()
  foreach(dir IN LISTS DELTAONNX_ORT_SYSTEM_DIRS ITEMS "${DELTAONNX_ORT_FETCH_DIR}/onnxruntime")
    if(EXISTS "${dir}/${header}")
      set(${out} "${dir}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  if(NOT DELTAONNX_FETCH_ORT_HEADERS)
    message(FATAL_ERROR "deltaonnx: ONNX Runtime's C/C++ headers (${header}) were not found in "
                        "${DELTAONNX_ORT_SYSTEM_DIRS}, and fetching them is off (DELTAONNX_FETCH_ORT_HEADERS).\n" ${advice})
  endif()
  message(STATUS "deltaonnx: fetching ORT's headers into ${DELTAONNX_ORT_FETCH_DIR} (scripts/fetch_ort_headers.sh)")
  execute_process(COMMAND bash "${_deltaonnx_ort_fetch_script}" "${DELTAONNX_ORT_FETCH_DIR}"
                  RESULT_VARIABLE status OUTPUT_VARIABLE printed ERROR_VARIABLE errors
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  # The script prints the include directory last (a system one when the package is installed meanwhile).
  string(REGEX REPLACE ".*\n" "" dir "${printed}")
  if(NOT status EQUAL 0 OR NOT EXISTS "${dir}/${header}")
    message(FATAL_ERROR "deltaonnx: ONNX Runtime's C/C++ headers (${header}) were not found, and fetching them "
                        "failed (scripts/fetch_ort_headers.sh, exit ${status}):\n${errors}\n" ${advice})
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()
