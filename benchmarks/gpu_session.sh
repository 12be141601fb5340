#!/usr/bin/env bash
# Everything a lent GPU is for, in one prepared run (a device session has 15 minutes in all,
# the machine's start included): the GPU tests, torch.profiler traces of the trainer against
# the compiled model alone, the trainer's step against torchvision eager, the measured
# profile (224 and 64 px, fp32 and bf16 + channels_last, compile where it pays, each
# compressor's encoding), the accounting hook's overhead on nccl. In order of value;
# each part under its own time limit, so one that hangs cannot take the rest with it.
# Results go to $OUT (default runs/gpu): log.txt and one JSON per part. PARTS names the parts
# to run (default all). The limits are what a cold machine needed on 2026-11-26
# (benchmarks/results/gpu/): torch.compile's first builds and cuDNN's algorithm search take
# most of it; a machine whose caches are warm needs about half. All seven limits add up to 16
# minutes, more than a session's device time with the start: choose PARTS (round 2, issue
# 41: PARTS="trace gpu_step overhead_nccl profile_64", about 10 minutes).
#
#   OUT=runs/gpu [PARTS="tests profile_224"] bash benchmarks/gpu_session.sh
#
# On a machine without pydantic, put its wheels in .whl/ first (the script installs them
# into /tmp/site). Afterwards, on any machine: python benchmarks/gpu_profile.py merges the
# profiles into dist_sqz/compute/profile_data/h100.json.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
exec > >(tee -a "$OUT/log.txt") 2>&1

PARTS=${PARTS:-tests trace gpu_step profile_224 profile_64 profile_compile overhead_nccl}
part() {  # part NAME SECONDS COMMAND...: run it under a limit, say how it ended and when
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    echo "=== $name (limit ${limit}s) ==="
    timeout -k 5 "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0))s ==="
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), \
'nccl', '.'.join(map(str, torch.cuda.nccl.version())), torch.cuda.get_device_name())"
nproc

P="python3 -m dist_sqz profile --steps 20 --warmup 5"
V=topk:density=0.001,dgc:density=0.001,powersgd:rank=2,powersgd:rank=4,fp16,int8
M=alexnet,squeezenet1_0,squeezenet1_1,resnet50

XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 5")  # the tests side by side
part tests 180 python3 -m pytest -q -p no:cacheprovider $XDIST tests/test_gpu.py
# torch.profiler over ten of the trainer's steps and ten of the compiled model's (issue 41)
part trace 150 python3 benchmarks/gpu_trace.py --models squeezenet1_1,alexnet \
    --out "$OUT/trace"
part gpu_step 300 python3 benchmarks/gpu_step.py --models squeezenet1_1,alexnet \
    --repeats 2 --steps 20 --warmup 10 --out "$OUT/gpu_step.json"
part profile_224 120 $P --models $M --batch-sizes 64,256 --image-size 224 \
    --compression $V --out "$OUT/profile_224.json"
part profile_64 90 $P --models $M --batch-sizes 64,256 --image-size 64 --out "$OUT/profile_64.json"
part profile_compile 90 $P --models squeezenet1_1,alexnet --batch-sizes 256 --image-size 224 \
    --precisions bf16_cl --compile --out "$OUT/profile_compile.json"
part overhead_nccl 45 python3 benchmarks/overhead.py --backend nccl --batch-size 256 \
    --image-size 224 --rounds 20 --out "$OUT/overhead_nccl.json"
echo "=== all parts done after ${SECONDS}s ==="
