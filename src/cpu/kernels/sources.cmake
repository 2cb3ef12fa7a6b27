# The CPU fast path's dot_tile kernels: one translation unit per ISA, each compiled with its own
# -m flags and chosen at run time (dot_tile.cpp), so nothing is compiled for the build machine.
# include() this file from the directory whose CMakeLists creates the target that lists
# ${FUSEDMOE_CPU_KERNEL_SOURCES}: source file properties are only seen by targets of that
# directory.
#
# Sets FUSEDMOE_CPU_KERNEL_SOURCES.

set(_fusedmoe_kernels ${CMAKE_CURRENT_LIST_DIR})
set(FUSEDMOE_CPU_KERNEL_SOURCES
    ${_fusedmoe_kernels}/dot_tile.cpp
    ${_fusedmoe_kernels}/dot_tile_portable.cpp)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT MSVC)
  # Sums must round the same way whatever the build's dialect (gnu++ turns contraction on).
  set(_fusedmoe_no_contract -ffp-contract=off)
else()
  set(_fusedmoe_no_contract "")
endif()
# GCC 12 at -O3 breaks the portable kernel's 8-lane arrays into scalar code with stores and
# reloads: 3x slower than at -O2 (measured on Zen 4), so Release builds it at -O2.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(_fusedmoe_portable_opt "$<$<CONFIG:Release>:-O2>")
else()
  set(_fusedmoe_portable_opt "")
endif()
set_source_files_properties(${_fusedmoe_kernels}/dot_tile_portable.cpp PROPERTIES
                            COMPILE_OPTIONS "${_fusedmoe_no_contract};${_fusedmoe_portable_opt}")

set(_fusedmoe_x86_kernels OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$"
   AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND NOT MSVC)
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag("-mavx512bf16" FUSEDMOE_CXX_HAS_MAVX512BF16)
  if(FUSEDMOE_CXX_HAS_MAVX512BF16)
    set(_fusedmoe_x86_kernels ON)
  endif()
endif()

if(_fusedmoe_x86_kernels)
  set(_fusedmoe_avx2 -mavx2 -mfma -mf16c)
  set(_fusedmoe_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c)
  list(APPEND FUSEDMOE_CPU_KERNEL_SOURCES
       ${_fusedmoe_kernels}/dot_tile_avx2.cpp
       ${_fusedmoe_kernels}/dot_tile_avx512.cpp
       ${_fusedmoe_kernels}/dot_tile_avx512bf16.cpp)
  set_source_files_properties(${_fusedmoe_kernels}/dot_tile_avx2.cpp PROPERTIES
                              COMPILE_OPTIONS "${_fusedmoe_avx2};${_fusedmoe_no_contract}")
  set_source_files_properties(${_fusedmoe_kernels}/dot_tile_avx512.cpp PROPERTIES
                              COMPILE_OPTIONS "${_fusedmoe_avx512};${_fusedmoe_no_contract}")
  set_source_files_properties(${_fusedmoe_kernels}/dot_tile_avx512bf16.cpp PROPERTIES
                              COMPILE_OPTIONS
                              "${_fusedmoe_avx512};-mavx512bf16;${_fusedmoe_no_contract}")
else()
  # The dispatcher must not reference kernels that are not built.
  set_source_files_properties(${_fusedmoe_kernels}/dot_tile.cpp PROPERTIES
                              COMPILE_DEFINITIONS FUSEDMOE_CPU_PORTABLE_ONLY)
endif()
