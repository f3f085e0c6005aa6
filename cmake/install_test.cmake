# Registers `install_consumer`: installs this build into a scratch prefix, then configures, builds
# and runs tests/install (one consumer through find_package(kvcache), one C program through
# pkg-config) against it. Included from the top-level install section.
#
# Not registered under sanitizers: the installed library then references the sanitizer runtimes,
# which the consumer project (built without -fsanitize, as a user's would be) cannot link. The
# normal (ci) build covers installation; sanitizers add nothing to it.
if(NOT KVCACHE_BUILD_TESTS)
  return()
endif()
if(KVCACHE_SANITIZE)
  message(STATUS "kvcache: install_consumer test not registered (KVCACHE_SANITIZE=${KVCACHE_SANITIZE})")
  return()
endif()

enable_testing()
add_test(NAME install_consumer
  COMMAND ${CMAKE_COMMAND}
    -DKVCACHE_BUILD_DIR=${PROJECT_BINARY_DIR}
    -DCONSUMER_SOURCE_DIR=${PROJECT_SOURCE_DIR}/tests/install
    -DWORK_DIR=${PROJECT_BINARY_DIR}/install_test
    -DGENERATOR=${CMAKE_GENERATOR}
    -DBUILD_TYPE=$<CONFIG>
    -DC_COMPILER=${CMAKE_C_COMPILER}
    -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
    -P ${CMAKE_CURRENT_LIST_DIR}/run_install_test.cmake)
# Two runs at once (ctest -j with repeats) would share WORK_DIR.
set_tests_properties(install_consumer PROPERTIES TIMEOUT 120 RESOURCE_LOCK kvcache_install_tree)
