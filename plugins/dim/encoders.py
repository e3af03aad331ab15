"""Deep InfoMax's DCGAN-like conv encoders (cortex_DIM ``basic28x28`` / ``basic32x32``)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from selfsup.interfaces import Encoder, Features

#: Per variant: conv layers as (channels, kernel, stride, padding) and the index of the
#: layer whose output is the local feature map (cortex_DIM's ``local_idx``).
VARIANTS: dict[str, tuple[tuple[tuple[int, int, int, int], ...], int]] = {
    "28x28": (((64, 5, 2, 2), (128, 5, 2, 2)), 1),
    "32x32": (((64, 4, 2, 1), (128, 4, 2, 1), (256, 4, 2, 1)), 1),
}


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class DIMConvEncoder(Encoder):
    """Deep InfoMax conv net: conv-BN-ReLU layers, fc 1024-BN-ReLU, linear to a 64-d code.

    Variants (Hjelm et al. 2019, appendix; cortex_DIM's configs):

    - ``32x32``: conv 64-128-256, kernel 4, stride 2 (32 -> 16 -> 8 -> 4), fc 1024, 64-d.
    - ``28x28``: conv 64-128, kernel 5, stride 2 (28 -> 14 -> 7), fc 1024, 64-d.

    ``variant="auto"`` picks ``32x32`` for images of 32 pixels or more, else ``28x28``
    (which also serves smaller images, e.g. 8x8 digits -> a 2x2 local map). Input
    ``[N, in_channels, S, S]`` with any number of channels (1 for grey, 3 for RGB).
    Returns the code ``global_ [N, out_dim]`` and the local map ``[N, 128, S', S']``: the
    second conv layer's output, as in cortex_DIM (``local_idx=1``): 8x8 for 32x32 input,
    7x7 for 28x28. ``local_layer`` picks another conv layer (0 = the first, 64 channels:
    a 4x4 map for 8x8 digits instead of 2x2).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        variant: Literal["auto", "28x28", "32x32"] = "auto",
        out_dim: int = 64,
        fc_dim: int = 1024,
        local_layer: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_dim", out_dim), ("fc_dim", fc_dim)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if variant == "auto":
            variant = "32x32" if image_size >= 32 else "28x28"
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of auto, {', '.join(VARIANTS)}; got {variant!r}")
        convs, local_index = VARIANTS[variant]
        if local_layer is not None:
            if not 0 <= local_layer < len(convs):
                raise ValueError(f"local_layer must be in 0..{len(convs) - 1} for the {variant} variant, got {local_layer}")
            local_index = local_layer
        size, c_in, layers = image_size, in_channels, []
        for c_out, kernel, stride, padding in convs:
            size = _conv_out(size, kernel, stride, padding)
            if size < 1:
                raise ValueError(f"image_size {image_size} is too small for the {variant} DIM encoder")
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
            ))
            c_in = c_out
        self.variant = variant
        self.local_index = local_index
        self.convs = nn.ModuleList(layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * size * size, fc_dim, bias=False), nn.BatchNorm1d(fc_dim), nn.ReLU()
        )
        self.head = nn.Linear(fc_dim, out_dim)
        self.out_dim = out_dim
        self.local_channels = convs[local_index][0]  # C of the local map

    def forward(self, x: Tensor) -> Features:
        outputs = self.layer_outputs(x)
        return Features(global_=outputs["code"], local=outputs["local"])

    def layer_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """Every representation the DIM paper evaluates, for input ``[N, C, S, S]``.

        ``local`` ``[N, 128, S', S']``; ``conv`` the last conv layer flattened ``[N, C*H*W]``
        (for the 28x28 variant that is the local map); ``fc`` ``[N, fc_dim]`` (after BN and
        ReLU); ``code`` ``[N, out_dim]`` (what ``forward`` returns as ``global_``).
        """
        outputs: dict[str, Tensor] = {}
        for i, layer in enumerate(self.convs):
            x = layer(x)
            if i == self.local_index:
                outputs["local"] = x
        outputs["conv"] = x.flatten(1)
        outputs["fc"] = self.fc(x)
        outputs["code"] = self.head(outputs["fc"])
        return outputs
