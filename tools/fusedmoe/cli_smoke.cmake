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

expect_exit(2 run --tokns 3)
if(NOT last_err MATCHES "^fusedmoe: unknown flag '--tokns' \\(see fusedmoe run --help\\)\n$")
  message(FATAL_ERROR "bad-flag message unexpected: ${last_err}")
endif()

expect_exit(2 verify --preset no-such-model)
expect_exit(2 bench --tokens 0)
expect_exit(0 presets)
expect_exit(0 --help)
