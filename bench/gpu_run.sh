#!/usr/bin/env bash
# One device run for the Qwen engine's GPU figures (see ../shared/gpu/README.md for the machine and
# how to carry the wheels: run from the project root with the wheels in .whl/, carry [".whl"]).
# Installs the carried qwen-tts/transformers wheels into a target folder, builds random full-size
# checkpoints with the project's own writer, then: graph replay vs eager, one-stream costs, and
# concurrent streams with and without CUDA graphs (0.6B, then 1.7B). Each step has its own limit;
# JSON results land in $OUT.
set -u
T=${SCRATCH:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=$T/cache HF_HUB_OFFLINE=1
OUT=${OUT:-$T/out}; mkdir -p "$OUT"
W=${W:-.whl}
common="$W/cffi-* $W/pycparser-* $W/librosa-* $W/audioread-* $W/soxr-* $W/pooch-* $W/decorator-* $W/soundfile-* $W/sox-* $W/platformdirs-* $W/msgspec-*"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$T/site" \
  $W/transformers-* $W/tokenizers-* $W/huggingface_hub-* $W/qwen_tts-0* $common || exit 1
export PYTHONPATH=$T/site:.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"; echo "$name rc=$? $((SECONDS-t0))s"; tail -c 300 "$OUT/$name.err"; echo; }
step graph_check 90 python3 -m bench.cuda_graph_check --device cuda:0 --frames 60
step one_stream 90 python3 -m bench.qwen_streaming --device cuda:0 --dtype bfloat16 --frames 100 --skip-official --first-chunks 1,2,4,1
step conc_graphs ${CONC_S:-150} python3 -m bench.qwen_concurrency --device cuda:0 --levels ${LEVELS:-1,2,4,8,16,32,64} --frames 60
step conc_eager 90 python3 -m bench.qwen_concurrency --device cuda:0 --levels 1,8 --frames 40 --no-cuda-graphs --max-batch 64
[ -z "${SKIP_17B:-}" ] && step conc_17b 150 python3 -m bench.qwen_concurrency --device cuda:0 --size 1.7b --levels 1,8,32 --frames 60
exit 0
