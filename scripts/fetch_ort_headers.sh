#!/usr/bin/env bash
# Fetch ONNX Runtime's C/C++ headers from Debian's libonnxruntime-dev package without installing it.
#
# Debian 13 (trixie) and newer ship the package; on Debian 12 (bookworm) apt can still fetch it from the
# trixie suite of the mirror this machine is already configured with (read from the apt sources, never
# hard-coded). Only the headers are extracted: the package's shared library would need trixie's libc,
# and deltaonnx links against no ORT library anyway (the op library resolves the API at load time).
#
# Usage: scripts/fetch_ort_headers.sh [DEST]   (default DEST: /usr/local/include)
# Result: DEST/onnxruntime/onnxruntime_cxx_api.h ...; prints the include directory. No root is needed for a DEST
# you can write: the build (cmake/ort_headers.cmake) runs it with DEST in its build tree when it finds no headers.
set -euo pipefail
dest=${1:-/usr/local/include}
if [ -f "$dest/onnxruntime/onnxruntime_cxx_api.h" ]; then echo "$dest/onnxruntime"; exit 0; fi
if [ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ]; then echo /usr/include/onnxruntime; exit 0; fi
work=$(mktemp -d)
chmod 755 "$work"  # apt drops to the _apt user for downloads
trap 'rm -rf "$work"' EXIT

# The package is in this system's own suites on Debian 13+: try a plain download first.
if ! (cd "$work" && apt-get download libonnxruntime-dev >/dev/null 2>&1); then
  # Debian 12: derive the Debian mirror from the configured sources (deb822 or one-line format).
  mirror=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if($i !~ /-(security|updates|backports)$/ && u !~ /security/){print u; exit}}' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1=="deb" && $2 !~ /^\[/ && $2 !~ /security/ {print $2; exit} $1=="deb" && $2 ~ /^\[/ && $3 !~ /security/ {print $3; exit}' /etc/apt/sources.list)
  fi
  if [ -z "$mirror" ]; then
    echo "fetch_ort_headers: no Debian mirror found in the apt sources; install libonnxruntime-dev or pass -DORT_INCLUDE_DIR=..." >&2
    exit 1
  fi
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial"
  echo "deb [signed-by=$keyring] $mirror trixie main" > "$work/sources.list"
  opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State="$work/state" -o Dir::Cache="$work/cache" -o Acquire::Languages=none)
  apt-get "${opts[@]}" update >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download libonnxruntime-dev >/dev/null 2>&1)
fi
deb=$(ls "$work"/libonnxruntime-dev_*.deb)
dpkg -x "$deb" "$work/x"
mkdir -p "$dest"
cp -r "$work/x/usr/include/onnxruntime" "$dest/"
echo "$dest/onnxruntime"
