"""ResNet-50 and VGG16 as torchvision builds them, without their pooling and classifier; their
parameter names stay torchvision's so that torchvision and DINO state dicts load.
A trunk maps images (B, 3, H, W) to a feature map (B, d, h, w)."""

from collections import OrderedDict

import torchvision
from torch import nn

RESNET_DILATIONS = {1: [False, False, False], 2: [False, False, True], 4: [False, True, True]}


class ConvFeatures(nn.Sequential):
    """The convolutional trunk of a torchvision classifier: (B, 3, H, W) -> (B, d, h, w).

    Sub-modules keep torchvision's names (``conv1``, ``layer4.2.bn3``, ``features.28``), so a
    torchvision or DINO state dict loads once its classifier keys are set aside.
    """


def resnet50_features(resnet_dilate: int = 2) -> ConvFeatures:
    """torchvision ResNet-50 without avgpool and fc; the last stages dilated instead of strided
    (output stride 32, 16, 8 for ``resnet_dilate`` 1, 2, 4)."""
    resnet = torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=RESNET_DILATIONS[resnet_dilate]
    )
    layers = [(name, m) for name, m in resnet.named_children() if name not in ("avgpool", "fc")]
    return ConvFeatures(OrderedDict(layers))


def vgg16_features() -> ConvFeatures:
    """torchvision VGG16 ``features`` without the last max-pool (output stride 16)."""
    vgg = torchvision.models.vgg16(weights=None)
    return ConvFeatures(OrderedDict(features=vgg.features[:-1]))
