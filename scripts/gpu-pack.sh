#!/usr/bin/env bash
# Packs .gpu/ for the GPU machines (see ../shared/gpu/pack.sh), small enough to travel beside
# the repo's fixtures (the device tool carries 64 MiB in all): dawn.node goes xz-compressed
# (21 MB -> 5 MB), and the library's own runtime packages ride along in .gpu/node_modules,
# which run.sh copies into node_modules there. Run after `npm ci && npm run build`; then
# carry [".gpu", "dist"] and run `bash .gpu/run-lite.sh dist/bench/<script>.js`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
shared="${SHARED_DIR:-../shared}"
bash "$shared/gpu/pack.sh"
dawn=.gpu/node_modules/webgpu/dist/linux-x64/dawn.node
if [ -f "$dawn" ]; then
  xz -T2 -6 -c "$dawn" > "$dawn.xz"
  rm "$dawn"
fi
for p in wgsl-preprocessor wasm-feature-detect; do
  rm -rf ".gpu/node_modules/$p"
  cp -rL "node_modules/$p" .gpu/node_modules/
done
cat > .gpu/run-lite.sh <<'RUN'
#!/usr/bin/env bash
# Restores dawn.node, then runs .gpu/run.sh (node on the NVIDIA Vulkan driver).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dawn="$here/node_modules/webgpu/dist/linux-x64/dawn.node"
[ -f "$dawn" ] || xz -dc "$dawn.xz" > "$dawn"
exec bash "$here/run.sh" "$@"
RUN
du -sh .gpu
