"""Train (or evaluate) a class-aware Faster R-CNN on clustered LOST pseudo-boxes (OD).

    python tools/train_net_for_LOST_OD.py --num-gpus 8 \\
        --config-file tools/configs/RN50_DINO_FRCNN_VOC07_OD.yaml DATALOADER.NUM_WORKERS 8 \\
        OUTPUT_DIR ./outputs/RN50_DINO_FRCNN_VOC07_OD MODEL.WEIGHTS ./data/dino_RN50_pretrain_d2_format.pkl

The detector predicts pseudo-classes (clusters), so the COCO AP printed during training compares
cluster ids with class ids and means nothing. Score the detections of
OUTPUT_DIR/inference/coco_instances_results.json with tools/evaluate_unsupervised_detection_voc.py,
which matches clusters to classes first.

Flags are detectron2's (--config-file, --num-gpus, --resume, --eval-only, ...) plus --prepared-dir,
the folder of the files written by the tools/prepare_*.py scripts (default $LOST_PREPARED_DIR or
datasets); KEY VALUE pairs after them override the config.
"""

import sys

from lost.detection.launch import run_training_script

if __name__ == "__main__":
    sys.exit(run_training_script(__doc__.splitlines()[0]))
