# expect_compile_errors.cmake — cmake -D CC=... -D SRC=... -D INCLUDES="a;b" -D CASES="X;Y" -P this
#
# Compiles SRC as is (it must compile: the control) and once with each of CASES defined (each must
# fail with a static assertion): a check that compile-time checks refuse what they are meant to.
foreach(dir ${INCLUDES})
  list(APPEND inc "-I${dir}")
endforeach()
set(flags -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -fsyntax-only ${inc})
execute_process(COMMAND ${CC} ${flags} ${SRC} RESULT_VARIABLE rc ERROR_VARIABLE out OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the control does not compile:\n${out}")
endif()
foreach(case ${CASES})
  execute_process(COMMAND ${CC} ${flags} -D${case} ${SRC} RESULT_VARIABLE rc ERROR_VARIABLE out OUTPUT_VARIABLE out)
  if(rc EQUAL 0)
    message(FATAL_ERROR "${case}: compiled, the table's checks let it through")
  endif()
  if(NOT out MATCHES "static.assert")
    message(FATAL_ERROR "${case}: failed, but not on a static assertion:\n${out}")
  endif()
  message(STATUS "${case}: refused")
endforeach()
