#!/usr/bin/env bash
# The tutorial's ResNet-18 CIFAR-10 pair on a CUDA machine: the library's tests on the GPU, the
# torchrun path, then as many epochs of the pair as BUDGET_S seconds allow, then the pair's
# lesson figures (vae.evaluate). Prints what bench/README.md quotes.
#
#   bash bench/gpu_resnet18.sh DATA_DIR OUT_DIR      # DATA_DIR holds cifar10-jpg.tar.gz and mnist.npz
#
# Env: BUDGET_S (training seconds for the pair, default 240), LIMIT (a --limit-train for a dry run
# on a CPU), DEVICE (default cuda), PY (default python3), TESTS=0 skips the tests.
set -uo pipefail
DATA=${1:?data folder}; OUT=${2:?out folder}
BUDGET_S=${BUDGET_S:-240}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
LIMIT_ARGS=(); [ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit-train "$LIMIT" --limit-test "$LIMIT")
WORK=$(mktemp -d); mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step "library tests on $DEVICE (models, training, losses, latent, fused)"
[ "${TESTS:-1}" = 1 ] && timeout 90 $PY -m pytest -q -x -p no:cacheprovider tests/test_models.py tests/test_train.py \
  tests/test_losses.py tests/test_latent.py tests/test_fused.py 2>&1 | tail -5

step "torchrun, one process on $DEVICE, then --resume under torchrun"
mkdir -p "$WORK/cifar"; tar xzf "$DATA/cifar10-jpg.tar.gz" -C "$WORK/cifar"
for extra in "" "--resume"; do
  timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m vae.train --preset mnist-2d \
    --data "$DATA/mnist.npz" --epochs $([ -z "$extra" ] && echo 1 || echo 2) --limit-train 10000 \
    --device "$DEVICE" --out "$WORK/ddp/mnist-2d" $extra 2>&1 | tr '\r' '\n' | grep -E "training|after|^  (ae|vae) |rror" 
done

step "ResNet-18 pair: the preset's 30 epochs, stopped (SIGINT: a clean stop that saves) after BUDGET_S=$BUDGET_S s"
timeout -s INT "$BUDGET_S" $PY -m vae.train --preset tutorial-cifar-resnet18 --data "$WORK/cifar" --device "$DEVICE" \
  --checkpoint-every 1 --out "$WORK/r18/pair" "${LIMIT_ARGS[@]}" 2>&1 | tr '\r' '\n' | grep -E "training|test |after|^  (ae|vae) |note"

step "bfloat16 mixed precision: one epoch of the VAE on 10,000 images"
$PY -m vae.train --preset tutorial-cifar-resnet18 --data "$WORK/cifar" --models vae --epochs 1 \
  --limit-train "${LIMIT:-10000}" --limit-test 1000 --precision bfloat16 --device "$DEVICE" \
  --out "$WORK/bf16/pair" 2>&1 | tr '\r' '\n' | grep -E "training|after|^  vae |note"

step "the pair's lesson figures (classifier-cifar10 judges)"
timeout 120 $PY -m vae.evaluate "$WORK/r18/pair-ae.safetensors" "$WORK/r18/pair-vae.safetensors" \
  --data "$WORK/cifar" --n 500 --iwae-k 10 --iwae-images 100 --pairs 40 2>&1 | tail -40
ls -la "$WORK/r18"
step done
