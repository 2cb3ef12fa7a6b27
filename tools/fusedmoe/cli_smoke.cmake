# cmake -DFUSEDMOE=path/to/fusedmoe -P cli_smoke.cmake
# Runs the command on a small explicit layer and checks the exit status (and, for errors, the
# one-line message) of each invocation.

set(layer --hidden 256 --intermediate 192 --experts 8 --top-k 2)

function(expect_exit code)
  execute_process(COMMAND ${FUSEDMOE} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" " " shown "${ARGN}")
  if(NOT rc EQUAL code)
    message(FATAL_ERROR "fusedmoe ${shown}: exit ${rc}, expected ${code}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  message(STATUS "fusedmoe ${shown}: exit ${rc} as expected")
  set(last_out "${out}" PARENT_SCOPE)
  set(last_err "${err}" PARENT_SCOPE)
endfunction()

expect_exit(0 run ${layer} --tokens 7 --reps 2 --backend cpu --quiet)
if(NOT last_out MATCHES "of floor")
  message(FATAL_ERROR "run printed no floor:\n${last_out}")
endif()

expect_exit(0 verify ${layer} --tokens 1,7,33 --backend cpu)
if(NOT last_out MATCHES "summary: 3 cases, 3 passed, 0 failed")
  message(FATAL_ERROR "verify summary unexpected:\n${last_out}")
endif()

# One JSON line per cell, the keys every result file shares first and in order.
set(json ${CMAKE_CURRENT_BINARY_DIR}/cli_smoke.jsonl)
file(REMOVE ${json})
expect_exit(0 bench ${layer} --tokens 3 --reps 2 --warmup 1 --backend cpu --quiet --json ${json})
file(READ ${json} line)
set(number "-?[0-9][0-9.e+-]*")
if(NOT line MATCHES "^{\"preset\": \"custom\", \"tokens\": 3, \"skew\": \"uniform\", \"impl\": \"fusedmoe-cpu\", \"us_median\": ${number}, \"floor_us\": ${number}, \"bound\": \"(memory|compute)\", \"gpu\": null, \"commit\": \"[^\"]+\", [^\n]*}\n$")
  message(FATAL_ERROR "bench JSON line unexpected:\n${line}")
endif()

# --backend cuda works where this build has the CUDA backend and a GPU; elsewhere it is one line
# naming the reason, with the exit status of any other failure.
function(expect_cuda)
  execute_process(COMMAND ${FUSEDMOE} ${ARGN} --backend cuda
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" " " shown "${ARGN}")
  if(rc EQUAL 0)
    message(STATUS "fusedmoe ${shown} --backend cuda: ran on the GPU")
    set(cuda_ran TRUE PARENT_SCOPE)
  elseif(rc EQUAL 1 AND err MATCHES "^fusedmoe: unsupported_arch: backend cuda is not available: [^\n]+\n$")
    message(STATUS "fusedmoe ${shown} --backend cuda: no GPU here, as said: ${err}")
    set(cuda_ran FALSE PARENT_SCOPE)
  else()
    message(FATAL_ERROR "fusedmoe ${shown} --backend cuda: exit ${rc}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
endfunction()

expect_cuda(run ${layer} --tokens 7 --quiet)
if(cuda_ran AND NOT last_out MATCHES "of floor" OR cuda_ran AND NOT last_out MATCHES "CUDA graph replays")
  message(FATAL_ERROR "run on the GPU printed no floor or no graph timing:\n${last_out}")
endif()
expect_cuda(verify ${layer} --tokens 1,7,33)
if(cuda_ran AND NOT last_out MATCHES "summary: 3 cases, 3 passed, 0 failed")
  message(FATAL_ERROR "verify on the GPU failed:\n${last_out}")
endif()
expect_cuda(bench ${layer} --tokens 3,100 --quiet)
if(cuda_ran AND NOT last_out MATCHES "fusedmoe-cuda[^\n]+graph" OR cuda_ran AND NOT last_out MATCHES "fusedmoe-cuda[^\n]+stream")
  message(FATAL_ERROR "bench on the GPU did not graph-time T=3 and stream-time T=100:\n${last_out}")
endif()

expect_exit(2 run --tokns 3)
if(NOT last_err MATCHES "^fusedmoe: unknown flag '--tokns' \\(see fusedmoe run --help\\)\n$")
  message(FATAL_ERROR "bad-flag message unexpected: ${last_err}")
endif()

expect_exit(2 verify --preset no-such-model)
expect_exit(2 bench --tokens 0)
expect_exit(0 presets)
expect_exit(0 --help)
