#!/usr/bin/env bash
# One device run for the Qwen engine's GPU figures (issue 22 item 4), from the project root.
#
# The device machine has torch (CUDA) and transformers 5 but no network; the project needs qwen-tts
# 0.1.1 on transformers 4.57.3, so those travel as wheels (18 MB), with faster-qwen3-tts 0.3.2 (the
# peer, last release on transformers 4.x). Once, in the project root (.whl/ is git-ignored there):
#   printf '/.whl/\n' >> .git/info/exclude; mkdir -p .whl
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl --platform manylinux_2_28_x86_64
#      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
#   .venv/bin/python -m pip download $P qwen-tts==0.1.1 transformers==4.57.3 tokenizers==0.22.2 huggingface-hub==0.36.2 \
#      librosa==0.11.0 audioread soxr pooch decorator soundfile cffi pycparser sox platformdirs msgspec faster-qwen3-tts==0.3.2
# Then one device call: command `PARTS=06b bash bench/gpu_run.sh`, carry [".whl"], timeout_s 540.
#
# What it reports, JSON per step in $OUT (the run tool brings $OUT back), on one card:
#   06b part  graph_check  graph replay == eager steps, and rows joined from cached voice prefixes ==
#                          whole prefills (bf16 tolerance)                                   ~1 min
#             one_stream   the project, one stream: first audio per first-chunk size, RTF    ~1 min
#             peer         faster-qwen3-tts, one stream, same checkpoint: first audio, RTF   ~1.5 min
#             conc_graphs  1/4/8/16/32/64 concurrent streams, CUDA graphs: first audio p50/p95,
#                          audio s per s, streams without stalls                              ~1.5 min
#             conc_eager   the same without graphs (1/8/32/64)                                ~1.5 min
#   17b part  the same for 1.7B (one_stream_17b, peer_17b, conc_17b, conc_17b_eager)        ~6 min
# With about 15 minutes of device time (machine start included), run PARTS=06b first (~7 min,
# room for a rerun), then PARTS=17b if time is left. Each step has its own limit; a failed step
# leaves its .err and the run goes on. Targets (issue 22): 0.6B first audio <= 70 ms at one stream,
# RTF <= 0.25, >= 32 streams without stalls with first audio p95 <= 300 ms; 1.7B at 64 streams above
# vLLM-Omni's 111.9 s of audio per second and 353 ms p50 first packet (H100).
#
# Locally, to check the plumbing on CPU: DEVICE=cpu SIZE06=tiny NO_WHEELS=1 PARTS=06b bash bench/gpu_run.sh
set -u
T=${SCRATCH:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=${XDG_CACHE_HOME:-$T/cache} HF_HUB_OFFLINE=1
OUT=${OUT:-$T/out}; mkdir -p "$OUT"
W=${W:-.whl}; DEVICE=${DEVICE:-cuda:0}; PARTS=${PARTS:-06b 17b}
SIZE06=${SIZE06:-0.6b}; SIZE17=${SIZE17:-1.7b}
PY=${PY:-python3}
pipi() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$@"; }
if [ -z "${NO_WHEELS:-}" ]; then
  common="$W/cffi-* $W/pycparser-* $W/librosa-* $W/audioread-* $W/soxr-* $W/pooch-* $W/decorator-* $W/soundfile-* $W/sox-* $W/platformdirs-* $W/msgspec-*"
  pipi "$T/site" $W/transformers-* $W/tokenizers-* $W/huggingface_hub-* $W/qwen_tts-0* $common || exit 1
  ls $W/faster_qwen3_tts-* >/dev/null 2>&1 && pipi "$T/site-peer" $W/faster_qwen3_tts-*
fi
OURS=$T/site:.; PEER=$T/site-peer:$T/site:.
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
step() { local name=$1 limit=$2 path=$3; shift 3; local t0=$SECONDS
  timeout "$limit" env PYTHONPATH="$path" "$PY" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
  echo "$name rc=$? $((SECONDS-t0))s"; tail -c 300 "$OUT/$name.err"; echo; }
cuda=$([ "${DEVICE#cuda}" != "$DEVICE" ] && echo 1)
dtype=$([ -n "$cuda" ] && echo bfloat16 || echo float32)
part() { local tag=$1 size=$2 levels=$3 eager=$4
  step "build$tag" 240 "$OURS" -c "import sys; from bench.qwen_concurrency import checkpoint; \
import argparse; print(checkpoint(argparse.Namespace(checkpoint=None, size='$size'), {}))"
  [ "$tag" = "" ] && step graph_check 120 "$OURS" -m bench.cuda_graph_check --device "$DEVICE" --size "$size" --frames 60
  step "one_stream$tag" 120 "$OURS" -m bench.qwen_streaming --device "$DEVICE" --dtype $dtype --size "$size" \
    --frames 100 --skip-official --first-chunks 1,2,4,1
  [ -n "$cuda" ] && [ -d "$T/site-peer" ] && step "peer$tag" 150 "$PEER" -m bench.peer_faster_qwen3 --size "$size"
  step "conc_graphs$tag" ${CONC_S:-180} "$OURS" -m bench.qwen_concurrency --device "$DEVICE" --size "$size" \
    --levels "$levels" --frames 60 --max-batch 64
  step "conc_eager$tag" 150 "$OURS" -m bench.qwen_concurrency --device "$DEVICE" --size "$size" \
    --levels "$eager" --frames 40 --max-batch 64 --no-cuda-graphs
}
for p in $PARTS; do
  case $p in
    06b) part "" "$SIZE06" "${LEVELS:-1,4,8,16,32,64}" "${EAGER_LEVELS:-1,8,32,64}" ;;
    17b) part _17b "$SIZE17" "${LEVELS:-1,4,8,16,32,64}" "${EAGER_LEVELS:-1,8,64}" ;;
  esac
done
echo "results in $OUT"; ls "$OUT"
exit 0
