#!/usr/bin/env bash
# Installs the Debian packages MultiGPU-Web needs, only those missing:
#  - libvulkan1: the Vulkan loader, which Dawn (npm `webgpu`) opens GPUs through;
#  - chromium: the browser the tests drive, and on machines without a GPU the source of
#    SwiftShader's Vulkan driver (/usr/lib/chromium/vk_swiftshader_icd.json), a WebGPU on the CPU;
#  - clang-19, lld-19: `npm run build` compiles the CPU device's WebAssembly kernels (wasm/*.c) with
#    clang for wasm32 (SIMD, atomics) and links them with lld's wasm-ld (scripts/build-wasm.mjs).
set -euo pipefail
missing=()
[ -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ] || ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' || missing+=(libvulkan1)
# lavapipe (Mesa): the Vulkan driver Deno's own WebGPU uses in the f16 kernel tests (it has shader-f16)
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || missing+=(mesa-vulkan-drivers)
{ [ -x /usr/bin/chromium ] && [ -e /usr/lib/chromium/vk_swiftshader_icd.json ]; } || missing+=(chromium)
command -v clang-19 >/dev/null 2>&1 || missing+=(clang-19)
[ -x /usr/lib/llvm-19/bin/wasm-ld ] || missing+=(lld-19)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
