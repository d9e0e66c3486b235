# Compiles one .cu with nvcc for every architecture in ARCHS with `-Xptxas -v`, and fails on a
# compile error or on any register spill (the ptxas report says "N bytes spill stores").
set(gencode "")
foreach(arch ${ARCHS})
  list(APPEND gencode -gencode arch=compute_${arch},code=sm_${arch})
endforeach()
get_filename_component(out_dir ${OUT} DIRECTORY)
file(MAKE_DIRECTORY ${out_dir})
execute_process(
  COMMAND ${NVCC} -std=c++17 -O3 ${gencode} -Xptxas -v -I${SOURCE_DIR}/src -I${SOURCE_DIR}
          -I${SOURCE_DIR}/tests -c ${SOURCE} -o ${OUT}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nvcc failed on ${SOURCE}:\n${out}${err}")
endif()
string(REGEX MATCHALL "[1-9][0-9]* bytes spill (stores|loads)" spills "${err}")
if(spills)
  message(FATAL_ERROR "register spills in ${SOURCE}:\n${err}")
endif()
string(REGEX MATCHALL "Used [0-9]+ registers" registers "${err}")
list(LENGTH registers kernels)
message(STATUS "${SOURCE}: ${kernels} kernel builds, no spills")
