# Script mode (cmake -P), run by the install_consumer test; see install_test.cmake.
# Inputs: KVCACHE_BUILD_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, GENERATOR, BUILD_TYPE, C_COMPILER,
# CXX_COMPILER.
cmake_minimum_required(VERSION 3.25)

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "install_consumer: failed (${rc}): ${cmd}")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
run(${CMAKE_COMMAND} --install ${KVCACHE_BUILD_DIR} --prefix ${prefix} --config ${BUILD_TYPE})

# The .pc file sits under the library directory, which GNUInstallDirs may have made multiarch.
file(GLOB_RECURSE pc_files ${prefix}/kvcache.pc)
if(NOT pc_files)
  message(FATAL_ERROR "install_consumer: no kvcache.pc under ${prefix}")
endif()
list(GET pc_files 0 pc_file)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
# Only the scratch prefix: a kvcache installed on the system must not satisfy the test.
set(ENV{PKG_CONFIG_PATH} ${pc_dir})

run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build --config ${BUILD_TYPE})
run(${WORK_DIR}/build/consumer_cmake)
# pkg-config gives no rpath: with a shared libkvcache the loader must be told where it is.
get_filename_component(libdir ${pc_dir} DIRECTORY)
set(ENV{LD_LIBRARY_PATH} "${libdir}:$ENV{LD_LIBRARY_PATH}")
run(${WORK_DIR}/build/consumer_pkgconfig)
message(STATUS "install_consumer: both consumers built and ran against ${prefix}")
