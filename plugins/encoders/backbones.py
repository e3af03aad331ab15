"""Encoders wrapping torchvision ResNets and any timm model (random initialisation only)."""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from selfsup.interfaces import Encoder, Features, LibraryModel

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "resnext50_32x4d")


class TorchvisionResNet(Encoder):
    """A torchvision ResNet by name, classifier removed.

    small_image_stem: replace the 7x7/2 conv and max-pool with a 3x3/1 conv, as for
    CIFAR-sized (32x32) inputs in the MoCo and SimCLR CIFAR experiments. Default: on for
    images up to 64 pixels. Returns global ``[N, 512 or 2048]`` and the last stage's map.
    """

    def __init__(
        self, arch: str = "resnet18", in_channels: int = 3, image_size: int = 32, small_image_stem: bool | None = None
    ) -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in RESNETS:
            hint = difflib.get_close_matches(arch, RESNETS, n=1)
            raise ValueError(f"unknown ResNet {arch!r}{' (did you mean ' + repr(hint[0]) + '?)' if hint else ''}; choose from {', '.join(RESNETS)}")
        net = getattr(tvm, arch)(weights=None)
        if small_image_stem is None:
            small_image_stem = image_size <= 64
        if small_image_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.out_dim = net.fc.in_features
        self.local_channels = self.out_dim
        net.fc = nn.Identity()
        self.net = net
        self.arch = arch
        self._changes = {"fc": "torch.nn.Identity()"}
        if small_image_stem:
            self._changes["conv1"] = (f"torch.nn.Conv2d({in_channels}, 64, kernel_size=3, stride=1, padding=1, "
                                      "bias=False)")
            self._changes["maxpool"] = "torch.nn.Identity()"
        elif in_channels != 3:
            self._changes["conv1"] = (f"torch.nn.Conv2d({in_channels}, 64, kernel_size=7, stride=2, padding=3, "
                                      "bias=False)")

    def library_model(self) -> LibraryModel:
        """``torchvision.models.<arch>(weights=None)`` with ``changes`` applied (classifier
        replaced by an identity, and the small-image stem or channel count); its ``forward``
        returns this encoder's ``global_``."""
        return LibraryModel("torchvision", self.arch, {"weights": None}, self.net, dict(self._changes))

    def forward(self, x: Tensor) -> Features:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        local = n.layer4(n.layer3(n.layer2(n.layer1(x))))  # [N, C, H', W']
        return Features(global_=local.mean(dim=(2, 3)), local=local)


class TimmEncoder(Encoder):
    """Any timm model by name (``timm.list_models()``), head removed, random initialisation.

    Returns global ``[N, num_features]`` and, when the model has a spatial feature map,
    the map ``[N, C, H, W]``.
    """

    #: Small arguments for the conformance kit (selfsup.testing): timm's tiny test ResNet.
    conformance_params = {"model": "test_resnet"}

    def __init__(self, model: str, in_channels: int = 3, image_size: int = 32, **kwargs) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model):
            hint = difflib.get_close_matches(model, timm.list_models(), n=3)
            raise ValueError(f"unknown timm model {model!r}" + (f"; did you mean {', '.join(hint)}?" if hint else ""))
        self.net = timm.create_model(model, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
        self.out_dim = int(self.net.num_features)
        self.local_channels = self.out_dim
        self.model_name = model
        self._create_kwargs = {"pretrained": False, "num_classes": 0, "in_chans": in_channels, **kwargs}

    def library_model(self) -> LibraryModel:
        """``timm.create_model(model, pretrained=False, num_classes=0, in_chans=C, **kwargs)``;
        its ``forward`` returns this encoder's ``global_``."""
        return LibraryModel("timm", self.model_name, dict(self._create_kwargs), self.net)

    def forward(self, x: Tensor) -> Features:
        feats = self.net.forward_features(x)
        local = feats if feats.dim() == 4 else None
        return Features(global_=self.net.forward_head(feats, pre_logits=True), local=local)
