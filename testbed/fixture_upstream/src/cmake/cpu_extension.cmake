# Fixture copy of the shape of upstream vLLM 0.11.2's cmake/cpu_extension.cmake.
# What matters is kept: the host's /proc/cpuinfo read through the same
# `execute_process(COMMAND cat /proc/cpuinfo` anchor, find_isa() as a plain
# substring search, AVX-512 disabled only by the literal string "true", and
# VNNI/BF16/AMX turned on when the switch is set OR the build host has the
# flag (the leak), aarch64 +bf16 when the host has bf16.
# Like upstream's oneDNN, the AVX-512 builds fetch a dependency at configure
# time (isahelper, GIT_TAG v1.0; it exists only in testbed/fixture_upstream/mirror:
# a build without `--fetch-mirror`/`--fetch-source` cannot get it).
# Left out on purpose: upstream's gcc >= 12.3 gate (it silently drops
# VNNI/BF16/AMX below that; GCC 12.2 builds them fine, and the fixture must
# build on Debian 12's gcc), torch, OpenMP, NUMA, PowerPC/s390x/riscv.

include(FetchContent)

set(CMAKE_EXPORT_COMPILE_COMMANDS ON)

#
# Define environment variables for special configurations
#
set(ENABLE_AVX512BF16 $ENV{VLLM_CPU_AVX512BF16})
set(ENABLE_AVX512VNNI $ENV{VLLM_CPU_AVX512VNNI})
set(ENABLE_AMXBF16 $ENV{VLLM_CPU_AMXBF16})

include_directories("${CMAKE_SOURCE_DIR}/csrc")

#
# Check the compile flags
#

if (CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64")
    list(APPEND CXX_COMPILE_FLAGS
        "-mf16c"
    )
endif()

# Not upstream's: a build that is not reproducible, for tests/e2e/test_reproduce_e2e.py. While the
# file $FIXTURE_NOISE_FILE names exists, every build compiles a fresh random number into _C (.rodata).
if (DEFINED ENV{FIXTURE_NOISE_FILE} AND EXISTS "$ENV{FIXTURE_NOISE_FILE}")
    string(RANDOM LENGTH 15 ALPHABET 0123456789abcdef FIXTURE_NOISE)
    list(APPEND CXX_COMPILE_FLAGS "-DFIXTURE_NOISE=0x${FIXTURE_NOISE}ULL")
    message(STATUS "FIXTURE_NOISE_FILE exists: this build is not reproducible")
endif()

# No -fopenmp: libgomp is not a manylinux library and the fixture has no threads.
list(APPEND CXX_COMPILE_FLAGS
    "-DVLLM_CPU_EXTENSION")

execute_process(COMMAND cat /proc/cpuinfo
                RESULT_VARIABLE CPUINFO_RET
                OUTPUT_VARIABLE CPUINFO)
if (NOT CPUINFO_RET EQUAL 0)
    message(FATAL_ERROR "Failed to check CPU features via /proc/cpuinfo")
endif()


function (find_isa CPUINFO TARGET OUT)
    string(FIND ${CPUINFO} ${TARGET} ISA_FOUND)
    if(NOT ISA_FOUND EQUAL -1)
        set(${OUT} ON PARENT_SCOPE)
    else()
        set(${OUT} OFF PARENT_SCOPE)
    endif()
endfunction()


function (is_avx512_disabled OUT)
    set(DISABLE_AVX512 $ENV{VLLM_CPU_DISABLE_AVX512})
    if(DISABLE_AVX512 AND DISABLE_AVX512 STREQUAL "true")
        set(${OUT} ON PARENT_SCOPE)
    else()
        set(${OUT} OFF PARENT_SCOPE)
    endif()
endfunction()

is_avx512_disabled(AVX512_DISABLED)

find_isa(${CPUINFO} "avx2" AVX2_FOUND)
find_isa(${CPUINFO} "avx512f" AVX512_FOUND)
find_isa(${CPUINFO} "asimd" ASIMD_FOUND) # Check for ARM NEON support
find_isa(${CPUINFO} "bf16" ARM_BF16_FOUND) # Check for ARM BF16 support

if (AVX512_FOUND AND NOT AVX512_DISABLED)
    list(APPEND CXX_COMPILE_FLAGS
        "-mavx512f"
        "-mavx512vl"
        "-mavx512bw"
        "-mavx512dq")

    find_isa(${CPUINFO} "avx512_bf16" AVX512BF16_FOUND)
    if (AVX512BF16_FOUND OR ENABLE_AVX512BF16)
        list(APPEND CXX_COMPILE_FLAGS "-mavx512bf16")
        set(ENABLE_AVX512BF16 ON)
    else()
        set(ENABLE_AVX512BF16 OFF)
        message(WARNING "Disable AVX512-BF16 ISA support, no avx512_bf16 found in local CPU flags." " If cross-compilation is required, please set env VLLM_CPU_AVX512BF16=1.")
    endif()

    find_isa(${CPUINFO} "avx512_vnni" AVX512VNNI_FOUND)
    if (AVX512VNNI_FOUND OR ENABLE_AVX512VNNI)
        list(APPEND CXX_COMPILE_FLAGS "-mavx512vnni")
        set(ENABLE_AVX512VNNI ON)
    else()
        set(ENABLE_AVX512VNNI OFF)
        message(WARNING "Disable AVX512-VNNI ISA support, no avx512_vnni found in local CPU flags." " If cross-compilation is required, please set env VLLM_CPU_AVX512VNNI=1.")
    endif()

    find_isa(${CPUINFO} "amx_bf16" AMXBF16_FOUND)
    if (AMXBF16_FOUND OR ENABLE_AMXBF16)
        list(APPEND CXX_COMPILE_FLAGS "-mamx-bf16" "-mamx-tile")
        set(ENABLE_AMXBF16 ON)
        add_compile_definitions(-DCPU_CAPABILITY_AMXBF16)
    else()
        set(ENABLE_AMXBF16 OFF)
        message(WARNING "Disable AMX_BF16 ISA support, no amx_bf16 found in local CPU flags." " If cross-compilation is required, please set env VLLM_CPU_AMXBF16=1.")
    endif()

elseif (AVX2_FOUND)
    list(APPEND CXX_COMPILE_FLAGS "-mavx2")
    message(WARNING "vLLM CPU backend using AVX2 ISA")

elseif (ASIMD_FOUND)
    message(STATUS "ARMv8 or later architecture detected")
    if(ARM_BF16_FOUND)
        message(STATUS "BF16 extension detected")
        set(MARCH_FLAGS "-march=armv8.2-a+bf16+dotprod+fp16")
        add_compile_definitions(ARM_BF16_SUPPORT)
    else()
        message(WARNING "BF16 functionality is not available")
        set(MARCH_FLAGS "-march=armv8.2-a+dotprod+fp16")
    endif()
    list(APPEND CXX_COMPILE_FLAGS ${MARCH_FLAGS})
else()
    message(FATAL_ERROR "vLLM CPU backend requires AVX512, AVX2 or ARMv8 support.")
endif()

message(STATUS "CPU extension compile flags: ${CXX_COMPILE_FLAGS}")

#
# _C extension
#
set(VLLM_EXT_SRC
    "csrc/cpu/isa_kernels.c")

# Stable ABI (abi3) like upstream's define_gpu_extension_target(... USE_SABI 3).
Python_add_library(_C MODULE USE_SABI 3.8 WITH_SOABI ${VLLM_EXT_SRC})
target_compile_options(_C PRIVATE ${CXX_COMPILE_FLAGS})

if (AVX512_FOUND AND NOT AVX512_DISABLED)
    FetchContent_Declare(
        isahelper
        GIT_REPOSITORY https://github.com/vllm-cpu-fixture/isahelper.git
        GIT_TAG v1.0
        GIT_SHALLOW TRUE
    )
    FetchContent_MakeAvailable(isahelper)
    target_link_libraries(_C PRIVATE isahelper)
endif()
install(TARGETS _C LIBRARY DESTINATION vllm COMPONENT _C)
