#!/usr/bin/env bash
# He 2015 Figure 6 end to end on CIFAR-10 with the exact recipe: plain-20/32/44/56/110 and
# ResNet-20/32/44/56/110, then the figures. Meant for a GPU machine (hours); rerunning it resumes.
#   bash scripts/reproduce_fig6.sh                       # one GPU, runs one after another
#   bash scripts/reproduce_fig6.sh hydra/launcher=submitit_slurm hydra.launcher.gpus_per_node=1
set -euo pipefail
depthstudy sweep experiment=he2015_fig6 data.download=true "$@"
depthstudy report runs/he2015_fig6
echo "figures and report.md in runs/he2015_fig6/report/"
