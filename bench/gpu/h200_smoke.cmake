# cmake -DSCRIPT=bench/gpu/h200.sh -DBUILD=<build dir with bin/fusedmoe> -DWORK=<scratch dir>
#   -P h200_smoke.cmake
# The guard rails of the GPU call script, on any machine (no step here touches a GPU): a misspelt
# step fails before any work, STOP_AFTER stops steps from starting, PACK=1 leaves summary.txt and
# logs.tgz alone in $OUT, and an h200: step is skipped where no H200 is seen.

file(REMOVE_RECURSE ${WORK})

# $1: expected exit status; the rest: the script's steps. OUT is ${WORK}/out.
function(run_script code)
  execute_process(COMMAND env OUT=${WORK}/out BUILD=${BUILD} ${env} bash ${SCRIPT} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL code)
    message(FATAL_ERROR "h200.sh ${ARGN}: exit ${rc}, expected ${code}\n${out}\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
  set(last_err "${err}" PARENT_SCOPE)
endfunction()

set(env "")
run_script(2 info grdi)
if(NOT last_err MATCHES "unknown step grdi" OR EXISTS ${WORK}/out)
  message(FATAL_ERROR "a misspelt step should fail before $OUT is made:\n${last_err}")
endif()

set(env PACK=1 STOP_AFTER=0)
run_script(0 info h200:grid)
file(GLOB left RELATIVE ${WORK}/out ${WORK}/out/*)
list(SORT left)
if(NOT left STREQUAL "logs.tgz;summary.txt")
  message(FATAL_ERROR "PACK=1 should leave logs.tgz and summary.txt, found: ${left}")
endif()
file(READ ${WORK}/out/summary.txt summary)
if(NOT summary MATCHES "not run: info \\(STOP_AFTER=0" OR NOT summary MATCHES "not run: h200:grid \\(STOP_AFTER")
  message(FATAL_ERROR "STOP_AFTER=0 should start no step:\n${summary}")
endif()

find_program(NVIDIA_SMI nvidia-smi)
if(NOT NVIDIA_SMI)
  file(REMOVE_RECURSE ${WORK}/out)
  set(env "")
  run_script(0 h200:grid)
  file(READ ${WORK}/out/summary.txt summary)
  if(NOT summary MATCHES "not run: grid \\(h200: only")
    message(FATAL_ERROR "an h200: step should be skipped without an H200:\n${summary}")
  endif()
endif()
message(STATUS "h200.sh: unknown steps, STOP_AFTER, PACK and h200: steps behave")
