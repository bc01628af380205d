#!/bin/sh
# Copies the socket.io browser bundle from node_modules into vendor/, where
# index.html loads it. Runs as npm's postinstall; the copy is committed so the
# server can serve a working client without npm.
set -eu
cd "$(dirname "$0")/.."
src=node_modules/socket.io-client/dist/socket.io.min.js
if [ ! -f "$src" ]; then
  echo "vendor.sh: $src not found; run 'npm install' in webclient/ first" >&2
  exit 1
fi
mkdir -p vendor
cp "$src" vendor/socket.io.min.js
version=$(node -p "require('./node_modules/socket.io-client/package.json').version" 2>/dev/null || echo unknown)
echo "vendor.sh: copied socket.io-client $version to vendor/socket.io.min.js"
