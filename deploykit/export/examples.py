"""Built-in example decoders covering the field, small enough for CPU tests.

Each factory returns `(module, example_inputs)` with weights seeded for reproducibility.  torch
is imported inside the factories so that listing them needs no torch.
"""

from __future__ import annotations

from typing import Callable


def _torch():
    from deploykit.errors import lazy_import

    return lazy_import("torch", "torch", "torch")


def dcgan():
    """DCGAN generator: latent 1x1 -> 32x32 RGB through a k4 s2 p1 ConvTranspose2d stack."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.ConvTranspose2d(16, 64, 4, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.ConvTranspose2d(16, 3, 4, 2, 1, bias=False), nn.Tanh(),
    )
    return module.eval(), (torch.randn(1, 16, 1, 1),)


def vae_decoder():
    """VAE-style decoder with grouped ConvTranspose2d and output_padding."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv2d(4, 32, 1), nn.SiLU(),
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1, groups=4), nn.SiLU(),
        nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1, groups=2), nn.SiLU(),
        nn.Conv2d(16, 3, 3, padding=1),
    )
    return module.eval(), (torch.randn(1, 4, 8, 8),)


def hifigan_upsampler():
    """HiFi-GAN-style 1D upsampler: large kernels and strides (k16 s8 p4, k4 s2 p1)."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Conv1d(16, 32, 7, padding=3), nn.LeakyReLU(0.1),
        nn.ConvTranspose1d(32, 16, 16, stride=8, padding=4), nn.LeakyReLU(0.1),
        nn.ConvTranspose1d(16, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
        nn.Conv1d(8, 1, 7, padding=3), nn.Tanh(),
    )
    return module.eval(), (torch.randn(1, 16, 20),)


def unet3d_decoder():
    """3D volumetric decoder (medical imaging): k2 s2 and k3 s2 p1 op1 ConvTranspose3d."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.ConvTranspose3d(16, 8, 2, stride=2), nn.ReLU(),
        nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.Conv3d(4, 1, 1),
    )
    return module.eval(), (torch.randn(1, 16, 3, 3, 3),)


def dilated_decoder():
    """output_padding with dilation, kept below the stride so every runtime accepts it."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.ConvTranspose2d(8, 8, 3, stride=2, padding=2, dilation=2, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1, output_padding=1),
    )
    return module.eval(), (torch.randn(1, 8, 6, 6),)


EXAMPLES: dict[str, Callable] = {
    "dcgan": dcgan,
    "vae-decoder": vae_decoder,
    "hifigan-upsampler": hifigan_upsampler,
    "unet3d-decoder": unet3d_decoder,
    "dilated-decoder": dilated_decoder,
}
