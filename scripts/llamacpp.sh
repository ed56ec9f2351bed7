#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only) into .llamacpp/bin/llama-server from the llama.cpp sources vendored in
# the PyPI sdist of llama-cpp-python, so it is fetched through the package registry (no GitHub access needed).
# Idempotent: the sdist is downloaded and unpacked once into $LLAMACPP_CACHE, cmake reuses its build directory, and
# nothing is done when the installed binary already exists (FORCE=1 rebuilds).
# Choices: a static binary (BUILD_SHARED_LIBS=OFF: one self-contained file to install); GGML_NATIVE=OFF, which in
# ggml means the portable x86-64 AVX2/FMA/F16C/BMI2 baseline rather than -march=native, so the binary also runs on
# another machine; no HTTPS (LLAMA_OPENSSL=OFF; LLAMA_CURL is deprecated and ignored by this version), no web UI
# download (LLAMA_USE_PREBUILT_UI=OFF, it would fetch from Hugging Face), no tests or examples.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PREFIX=${LLAMACPP_PREFIX:-$PWD/.llamacpp}
CACHE=${LLAMACPP_CACHE:-$PREFIX/cache}
JOBS=${JOBS:-2}
SDIST_DIR="$CACHE/llama_cpp_python-$VERSION"
SRC="$SDIST_DIR/vendor/llama.cpp"
BUILD="$PREFIX/build"

if [ -x "$PREFIX/bin/llama-server" ] && [ -z "${FORCE:-}" ]; then
  "$PREFIX/bin/llama-server" --version 2>&1 | head -n 2
  echo "already built: $PREFIX/bin/llama-server (FORCE=1 rebuilds)"
  exit 0
fi

mkdir -p "$CACHE" "$PREFIX/bin"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
  [ -f "$SDIST" ] || "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$VERSION" --dest "$CACHE"
  tar -xzf "$SDIST" -C "$CACHE"
fi

cmake -S "$SRC" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF
cmake --build "$BUILD" --target llama-server -j "$JOBS"
install -m 0755 "$BUILD/bin/llama-server" "$PREFIX/bin/llama-server"
"$PREFIX/bin/llama-server" --version 2>&1 | head -n 2
echo "installed $PREFIX/bin/llama-server"
