"""Train (or predict with) CutLER's class-agnostic Cascade Mask R-CNN on pseudo-masks.

    python tools/train_net_cutler.py --num-gpus 8 --train_json instances.json --image_root IMAGES \\
        --config-file tools/configs/CutLER/cascade_mask_rcnn_R_50_FPN.yaml \\
        MODEL.WEIGHTS data/dino_RN50_pretrain_d2_format.pkl
    python tools/train_net_cutler.py --num-gpus 8 --eval-only --test_json instances.json --image_root IMAGES \\
        MODEL.WEIGHTS outputs/CutLER_cascade_mask_rcnn_R_50_FPN/model_final.pth

--train_json / --test_json: COCO instances files with masks (the instances.json of MaskCut, CutLER's
own JSON, or any COCO ground truth), file names relative to --image_root / --test_image_root. The
config defaults to tools/configs/CutLER/cascade_mask_rcnn_R_50_FPN.yaml. Predictions (boxes, RLE
masks, scores) land in OUTPUT_DIR/inference/coco_instances_results.json. Other flags are
detectron2's (--num-gpus, --resume, --eval-only, ...); KEY VALUE pairs after them override the
config (MODEL.WEIGHTS "" for random weights, MODEL.DEVICE cpu for a CPU).
"""

import sys

from lost.detection.launch import run_training_script

if __name__ == "__main__":
    sys.exit(run_training_script(__doc__.splitlines()[0], entry="cutler.training"))
