#!/usr/bin/env bash
# Build LAMMPS with the NequIP team's pair_nequip_allegro plugin (pair_style nequip and
# pair_style allegro, AOTInductor models), linked against the libtorch of the Python
# environment that runs this script (the one with nequip and nequip-flash-ace installed).
#
#   tools/build_lammps.sh [--sources DIR] [--cache DIR] [--jobs N] [--mliap] [--force] [--find]
#
# Sources: by default the upstream release archives are downloaded; with --sources DIR
# (or FLASH_ACE_LAMMPS_SOURCES=DIR) the two tarballs below are taken from DIR instead and
# checked against their sha256 (`../shared/third_party/` of this project holds both).
#
# The build is cached outside the clone, keyed by LAMMPS version, plugin commit, torch
# version and library directory, Python version and options, under --cache DIR (or
# FLASH_ACE_LAMMPS_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/nequip-flash-ace/lammps): only a
# fresh machine pays for the build (about 10-20 min on 2 cores). The path of the `lmp`
# binary is the last line printed; a reused build is checked to start and list both styles;
# --find only prints it if that build exists (exit 1 otherwise) and builds nothing.
#
# Needs: cmake, a C++17 compiler, MPI (Debian: `apt-get install openmpi-bin libopenmpi-dev`);
# --mliap also needs Cython (`pip install cython`) and builds ML-IAP + PYTHON, which runs
# the ML-IAP route only with a Kokkos (GPU) LAMMPS: not needed for pair_style nequip/allegro.
set -euo pipefail

LAMMPS_VERSION="20260704"             # stable 4 Jul 2026
LAMMPS_TAG="stable_4Jul2026"
PLUGIN_COMMIT="2e19360b2639d960fb59223c5260eb87d0fbf273"
LAMMPS_TARBALL="lammps-${LAMMPS_VERSION}-min.tar.gz"
PLUGIN_TARBALL="pair_nequip_allegro-${PLUGIN_COMMIT:0:8}.tar.gz"
LAMMPS_SHA256="f60961918289bd1062e54ca268349afb0fff427f84c28a1ee27970165c2e53b1"
PLUGIN_SHA256="0fe734766e8b4a5cf52c2ae54b03461f745757b1da7d5e6a78a5d19af23a6847"
LAMMPS_URL="https://github.com/lammps/lammps/archive/refs/tags/${LAMMPS_TAG}.tar.gz"
PLUGIN_URL="https://github.com/mir-group/pair_nequip_allegro/archive/${PLUGIN_COMMIT}.tar.gz"

sources="${FLASH_ACE_LAMMPS_SOURCES:-}"
cache_root="${FLASH_ACE_LAMMPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nequip-flash-ace/lammps}"
jobs="$(nproc)"
mliap=0
force=0
find_only=0
python="${PYTHON:-python}"

die() { echo "build_lammps.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --sources) sources="$2"; shift 2 ;;
        --cache) cache_root="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --mliap) mliap=1; shift ;;
        --force) force=1; shift ;;
        --find) find_only=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (allowed: --sources DIR, --cache DIR, --jobs N, --mliap, --force, --find)" ;;
    esac
done

torch_version="$("$python" -c 'import torch; print(torch.__version__)')" \
    || die "'$python' cannot import torch: run this in the environment that has nequip installed"
torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
py_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# lmp's RUNPATH is this environment's torch/lib, so the key names that directory too (a
# short hash): a build made from another venv, since deleted, must not be picked up.
# torch's CMake prefix is <torch>/share/cmake, so no second torch import is needed
torch_lib="${torch_prefix%/share/cmake}/lib"
key="lammps-${LAMMPS_VERSION}_plugin-${PLUGIN_COMMIT:0:8}_torch-${torch_version}_py${py_version}"
key="${key}_lib-$(printf '%s' "$torch_lib" | sha256sum | cut -c1-8)"
[ "$mliap" = 1 ] && key="${key}_mliap"
prefix="${cache_root}/${key}"

check_styles() {  # check_styles LMP: lmp starts and lists both pair styles
    local help
    # the output is captured before grep reads it: `lmp -h | grep -q` under pipefail fails
    # at random with 141 when grep exits before lmp has written its last line (SIGPIPE)
    help="$("$1" -h 2>&1)" || die "$1 -h failed (--force rebuilds): $(printf '%s\n' "$help" | head -n 3)"
    for style in nequip allegro; do
        grep -qw "$style" <<<"$help" || die "the built lmp has no pair_style $style"
    done
}

# BUILD_INFO is written last: a build that stopped half-way is not reused
if [ -x "${prefix}/bin/lmp" ] && [ -f "${prefix}/BUILD_INFO" ] && [ "$force" = 0 ]; then
    echo "build_lammps.sh: reusing ${prefix}" >&2
    check_styles "${prefix}/bin/lmp"
    echo "${prefix}/bin/lmp"
    exit 0
fi
[ "$find_only" = 1 ] && die "no cached build at ${prefix}"

command -v cmake >/dev/null || die "cmake not found (Debian: apt-get install cmake)"
command -v mpicxx >/dev/null || die "MPI compiler wrapper mpicxx not found (Debian: apt-get install openmpi-bin libopenmpi-dev)"
if [ "$mliap" = 1 ]; then
    "$python" -c 'import Cython' 2>/dev/null || die "--mliap needs Cython in '$python' (pip install cython)"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/flash-ace-lammps.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"

fetch() {  # fetch NAME SHA256 URL -> ./NAME
    local name="$1" sha="$2" url="$3"
    if [ -n "$sources" ]; then
        [ -f "$sources/$name" ] || die "--sources $sources has no $name"
        cp "$sources/$name" "$name"
        echo "$sha  $name" | sha256sum -c --quiet - || die "$sources/$name: sha256 differs from $sha"
    else
        echo "build_lammps.sh: downloading $url" >&2
        curl -fsSL -o "$name" "$url" \
            || die "download of $url failed: give local tarballs with --sources DIR (or FLASH_ACE_LAMMPS_SOURCES)"
    fi
}
fetch "$LAMMPS_TARBALL" "$LAMMPS_SHA256" "$LAMMPS_URL"
fetch "$PLUGIN_TARBALL" "$PLUGIN_SHA256" "$PLUGIN_URL"
mkdir lammps plugin
tar xzf "$LAMMPS_TARBALL" -C lammps --strip-components=1
tar xzf "$PLUGIN_TARBALL" -C plugin --strip-components=1

(cd plugin && bash patch_lammps.sh ../lammps) >&2

cmake_args=(
    -S lammps/cmake -B build
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_PREFIX_PATH="$torch_prefix"
    -DNEQUIP_AOT_COMPILE=ON
    -DMKL_INCLUDE_DIR=/tmp          # torch's CMake looks for MKL headers it does not use
    # MPI for domain decomposition; OpenMP for the plugin's threaded loops. No optional
    # LAMMPS packages: the OPENMP package's *_omp styles would double the build time
    -DBUILD_MPI=ON -DBUILD_OMP=ON
)
if [ "$mliap" = 1 ]; then
    cmake_args+=(-DPKG_ML-IAP=ON -DPKG_ML-SNAP=ON -DPKG_PYTHON=ON -DMLIAP_ENABLE_PYTHON=ON
                 -DPython_EXECUTABLE="$(command -v "$python")")
fi
echo "build_lammps.sh: configuring (${key})" >&2
cmake "${cmake_args[@]}" >&2
echo "build_lammps.sh: compiling with $jobs jobs" >&2
cmake --build build -j "$jobs" >&2
# only the binary is needed (LAMMPS' install target also wants docs the trimmed source
# lacks); its build RUNPATH points at this environment's torch/lib
rm -rf "$prefix"
install -D -m 755 build/lmp "${prefix}/bin/lmp"
check_styles "${prefix}/bin/lmp"
{
    echo "lammps ${LAMMPS_VERSION} (${LAMMPS_TAG}), pair_nequip_allegro ${PLUGIN_COMMIT}"
    echo "torch ${torch_version} (${torch_prefix}), python ${py_version}, mliap=${mliap}"
    echo "sources: ${sources:-upstream}"
    date -u
} > "${prefix}/BUILD_INFO"
echo "${prefix}/bin/lmp"
