#!/usr/bin/env bash
# Start NVIDIA MPS on a GPU node, so that trials packed on one GPU (a fractional --gpus-per-trial) run their
# kernels side by side instead of taking turns: without MPS, kernels of different processes never overlap.
#
#   bash cluster/start-mps.sh          # before `ray start` on the node, as the user that runs the trials
#
# Optional: RESNET_STUDIES_MPS=0 skips it, and a node without a GPU or without nvidia-cuda-mps-control is left
# as it is. MPS serves only processes of the user that started it, through the pipes in CUDA_MPS_PIPE_DIRECTORY
# (default /tmp/nvidia-mps). Stop it with `echo quit | nvidia-cuda-mps-control`. cluster/README.md: "Packing".
set -euo pipefail
if [ "${RESNET_STUDIES_MPS:-1}" = 0 ]; then
  echo "MPS: off (RESNET_STUDIES_MPS=0)"
  exit 0
fi
if ! command -v nvidia-cuda-mps-control >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "MPS: not started (no NVIDIA GPU or no nvidia-cuda-mps-control on this node)"
  exit 0
fi
if echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1; then
  echo "MPS: already running"
  exit 0
fi
nvidia-cuda-mps-control -d
echo "MPS: control daemon started (pipes in ${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps})"
