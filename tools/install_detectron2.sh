#!/usr/bin/env bash
# Install detectron2 v0.5 (Python only) from the package registry, for machines without GitHub.
#
# With GitHub access, prefer the official way:
#     pip install 'git+https://github.com/facebookresearch/detectron2.git'
#
# detectron2 publishes no wheel. The registry's `detectron2-cdo==0.5` sdist holds detectron2 v0.5's
# Python sources but not the C++/CUDA sources of its `detectron2._C` extension, and as published it
# neither builds (its setup.py imports torch and compiles that extension) nor imports with current
# numpy / Pillow / setuptools. Faster R-CNN R50-C4 does not need the extension: box NMS and RoIAlign
# come from torchvision. This script therefore:
#   1. installs the runtime dependencies (pinned as detectron2 v0.5 pins them, minus the code
#      formatter `black`, which only LazyConfig.save uses);
#   2. downloads the sdist and replaces its setup.py by a pure-Python one (no extension);
#   3. lets the modules wrapping the extension import without it, and replaces what newer libraries
#      removed: numpy's `np.bool`/`np.int`/`np.float`/`np.object` aliases, Pillow's `Image.LINEAR`,
#      setuptools' `pkg_resources`;
#   4. installs it as the distribution `detectron2` (version 0.5+cdo).
#
# Idempotent: exits at once when a working detectron2 is already importable.
# Needs torch and torchvision installed first (pip install -r requirements.txt). About 30 s on a fresh
# machine, dependencies included.
#
# Usage: bash tools/install_detectron2.sh     (PYTHON=/path/to/python picks another interpreter)
set -euo pipefail

PYTHON="${PYTHON:-python}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PYTHON" -W ignore -c "from detectron2.engine import DefaultTrainer; from detectron2.layers import nms" 2>/dev/null; then
    echo "detectron2 already installed: $("$PYTHON" -c 'import detectron2; print(detectron2.__file__)')"
    exit 0
fi

"$PYTHON" -c "import torch, torchvision" || {
    echo "error: torch and torchvision must be installed first (pip install -r requirements.txt)" >&2
    exit 2
}

"$PYTHON" -m pip install --quiet \
    "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "yacs>=0.1.6" "termcolor>=1.1" tabulate \
    cloudpickle "omegaconf>=2.1" "hydra-core>=1.1" "pycocotools>=2.0.2" matplotlib tensorboard

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --no-build-isolation: the sdist's metadata step imports torch, which is installed here.
"$PYTHON" -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: \
    "detectron2-cdo==0.5" -d "$work"
tar -xzf "$work"/detectron2_cdo-0.5.tar.gz -C "$work"
src="$work/detectron2_cdo-0.5"

cat > "$src/setup.py" <<'EOF'
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.5+cdo",
    description="detectron2 v0.5 Python sources, without the detectron2._C extension",
    url="https://github.com/facebookresearch/detectron2",
    packages=find_packages(include=("detectron2", "detectron2.*")),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    python_requires=">=3.7",
)
EOF
rm -rf "$src"/*.egg-info

# Without the extension, the modules that only wrap it (deformable conv, rotated boxes, the fast
# COCO evaluation) must still import; calling them then fails with a clear AttributeError on None.
for f in layers/deform_conv.py layers/rotated_boxes.py layers/roi_align_rotated.py \
         evaluation/fast_eval_api.py; do
    sed -i 's/^from detectron2 import _C$/try:\n    from detectron2 import _C\nexcept ImportError:  # built without the C++ extension\n    _C = None/' \
        "$src/detectron2/$f"
done
# numpy >= 1.24 removed the aliases of builtins (np.bool_, np.int64, ... are untouched by \b).
find "$src/detectron2" -name '*.py' -exec \
    sed -i -E 's/\bnp\.(bool|int|float|object|str|complex)\b/\1/g' {} +
# Pillow >= 10 removed Image.LINEAR, an alias of Image.BILINEAR.
sed -i 's/Image\.LINEAR\b/Image.BILINEAR/g' "$src/detectron2/data/transforms/transform.py"
# setuptools >= 81 no longer ships pkg_resources; model_zoo only used it to find its config folder.
perl -0pi -e 's/^import pkg_resources\n//m;
    s/pkg_resources\.resource_filename\(\s*"detectron2\.model_zoo",\s*os\.path\.join\(("configs", config_path)\)\s*\)/os.path.join(os.path.dirname(__file__), $1)/s' \
    "$src/detectron2/model_zoo/model_zoo.py"

"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation "$src"
"$PYTHON" -W ignore -c "from detectron2.engine import DefaultTrainer; import detectron2; print('installed detectron2', detectron2.__version__, 'in', detectron2.__file__)"
