# Cross-compiling ortserve for 64-bit Arm Linux with Debian's cross toolchain and multiarch libraries:
#
#   apt-get install gcc-aarch64-linux-gnu; dpkg --add-architecture arm64; apt-get install <lib>-dev:arm64
#   cmake -S . -B build/arm64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DONNXRUNTIME_ROOT=third_party/onnxruntime-arm64
#
# `tools/deps.sh arm64` installs all of that; `make test-arm64` builds and runs the suite under
# qemu-user (docs/PORTABILITY.md). Libraries and .pc files come from /usr/lib/aarch64-linux-gnu,
# headers from /usr/include (Debian's cross gcc searches /usr/include/aarch64-linux-gnu first).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(OSV_CROSS_TRIPLE aarch64-linux-gnu)

set(CMAKE_C_COMPILER ${OSV_CROSS_TRIPLE}-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE ${OSV_CROSS_TRIPLE})

# Search the multiarch directories only: never pick up an x86-64 library or .pc file by accident.
set(CMAKE_FIND_ROOT_PATH /usr/${OSV_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${OSV_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Tests built for arm64 run through qemu-user (ctest prepends this to every target command).
# tools/qemu-arm64.sh sets up what ONNX Runtime needs under emulation (see docs/PORTABILITY.md).
if(NOT CMAKE_CROSSCOMPILING_EMULATOR)
  find_program(OSV_QEMU_AARCH64 qemu-aarch64)
  if(OSV_QEMU_AARCH64)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${OSV_QEMU_AARCH64})
  endif()
endif()

# Debian's libhttp-parser-dev is not co-installable across architectures (no Multi-Arch: same), so
# tools/deps.sh installs only the arm64 runtime library: link it by path, with the native header
# (/usr/include/http_parser.h, the same file on every architecture).
if(NOT HTTP_PARSER_LIBRARY AND NOT EXISTS /usr/lib/${OSV_CROSS_TRIPLE}/libhttp_parser.so)
  file(GLOB _osv_hp /usr/lib/${OSV_CROSS_TRIPLE}/libhttp_parser.so.2*)
  if(_osv_hp)
    list(GET _osv_hp 0 _osv_hp)
    set(HTTP_PARSER_LIBRARY ${_osv_hp} CACHE FILEPATH "http-parser (arm64 runtime library)")
  endif()
endif()
