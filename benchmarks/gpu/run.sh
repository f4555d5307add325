#!/usr/bin/env bash
# The GPU check in one call, on a machine with a CUDA device, cupy and torch (CUDA) installed and no package
# registry: the GPU tests, benchmarks/compare_gpu.py, then benchmarks/gpu/probe_gemm.py and probe_conv.py.
# Every output lands under $OUT; each part runs under `timeout`, so the whole stays under 9 minutes (the device
# tool allows 10 per call). Nothing here reads MNIST (compare_gpu trains on synthetic data), so no data has to
# travel with the tree.
#
#     OUT=/some/dir bash benchmarks/gpu/run.sh        # from the project root
#     OUT=/some/dir bash benchmarks/gpu/run.sh predict
#
# `predict` runs the cost model's check instead, in its own call (at most 9 minutes): this device's calibration
# (profiling/gpu_calibration.py, cached under $OUT/data, which comes back with the results), then `profile
# predict --measure` on lenet5 and convnet at the batch sizes of the CPU's check, the tracer's kernels at B=16 and
# 256 (predict-<model>/ under $OUT, and calibration.log, predict-<model>.log).
#
# It lays the package out inside the tree (kernels/ -> minigrad/kernels, profiling/ -> minigrad/profiling,
# as an install does), which is why it refuses to run where there is no GPU: that tree is a throwaway copy.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${OUT:-}" ] || ! command -v nvidia-smi >/dev/null; then
    echo "benchmarks/gpu/run.sh: run it on the GPU machine with OUT set (it rewrites minigrad/kernels in this tree)" >&2
    exit 2
fi
mkdir -p "$OUT"
rm -rf minigrad/kernels minigrad/profiling
cp -r kernels minigrad/kernels
cp -r profiling minigrad/profiling
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
status=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import cupy, numpy, torch; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/device.txt"

if [ "${1:-}" = predict ]; then
    sizes=1,2,3,5,8,12,16,17,32,48,64,100,128,256,512
    export MINIGRAD_DATA="$OUT/data"  # the calibration is cached there and comes back with the results
    echo "== calibration"
    timeout 220 python3 -c "from minigrad.profiling import gpu_calibration as g; g.load('float32', progress=print)" \
        2>&1 | tee "$OUT/calibration.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
    for model in lenet5 convnet; do
        echo "== predict $model"
        timeout 150 python3 -m minigrad.profile predict --backend cupy --model "$model" --batch-sizes "$sizes" \
            --measure --kernels-at 16,256 --rounds 2 --dataset synthetic --out "$OUT/predict-$model" 2>&1 \
            | tee "$OUT/predict-$model.log"
        [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    done
    exit $status
fi

echo "== GPU tests"
timeout 120 python3 -m pytest tests -k "cupy or cuda" -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== compare_gpu"
timeout 300 python3 -m benchmarks.compare_gpu --json "$OUT/compare_gpu.json" 2>&1 | tee "$OUT/compare_gpu.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== probe_gemm"
timeout 60 python3 -m benchmarks.gpu.probe_gemm 2>&1 | tee "$OUT/probe_gemm.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== probe_conv"
timeout 60 python3 -m benchmarks.gpu.probe_conv 2>&1 | tee "$OUT/probe_conv.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
