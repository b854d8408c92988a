"""Train (or evaluate) a class-agnostic Faster R-CNN on LOST pseudo-boxes (CAD).

    python tools/train_net_for_LOST_CAD.py --num-gpus 4 \\
        --config-file tools/configs/RN50_DINO_FRCNN_VOC07_CAD.yaml DATALOADER.NUM_WORKERS 8 \\
        OUTPUT_DIR ./outputs/RN50_DINO_FRCNN_VOC07_CAD MODEL.WEIGHTS ./data/dino_RN50_pretrain_d2_format.pkl
    python tools/train_net_for_LOST_CAD.py --resume --eval-only --num-gpus 4 \\
        --config-file tools/configs/RN50_DINO_FRCNN_VOC07_CAD.yaml OUTPUT_DIR ./outputs/RN50_DINO_FRCNN_VOC07_CAD \\
        MODEL.WEIGHTS ./outputs/RN50_DINO_FRCNN_VOC07_CAD/model_final.pth \\
        DATASETS.TEST '("voc_2007_trainval_CAD_coco_style", )'

The detections land in OUTPUT_DIR/inference/coco_instances_results.json; their CorLoc (top box per
image) comes from main_corloc_evaluation.py --type_pred detectron.

Flags are detectron2's (--config-file, --num-gpus, --resume, --eval-only, ...) plus --prepared-dir,
the folder of the files written by the tools/prepare_*.py scripts (default $LOST_PREPARED_DIR or
datasets); KEY VALUE pairs after them override the config.
"""

import sys

from lost.detection.launch import run_training_script

if __name__ == "__main__":
    sys.exit(run_training_script(__doc__.splitlines()[0]))
