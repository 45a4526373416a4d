"""The Neural Knitwork (paper Fig. 2): three small MLPs around random Fourier features.

coordinates ─► Fourier features ─► Patch MLP ─► patch stack (C, S, P, P) ─► Reconstructor ─► colour
                                                       └──────────────► Discriminator ─► real/fake

The conventional coordinate-MLP baseline is the same network with 1×1 patches at one scale and
no reconstructor: its "patch" is the pixel colour.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from knitwork.config import ModelConfig
from knitwork.kernels import LearnedDownsampler
from knitwork.patches import add_finest_votes, centre_index, stack_width

RENDER_CHUNK = 65536  # coordinates per forward pass when drawing an image


def pixel_grid(
    height: int,
    width: int,
    device: torch.device | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """(H·W, 2) pixel-centre coordinates (row, col) in (0, 1), row-major; with ``box`` = (top,
    left, rows, cols), only that window's pixels of the H×W grid.

    Pixel centres rather than the authors' ``i / H`` make renders at other resolutions cover
    exactly the same continuous image.
    """
    top, left, ch, cw = box if box is not None else (0, 0, height, width)
    rows = (torch.arange(top, top + ch, device=device, dtype=torch.float32) + 0.5) / height
    cols = (torch.arange(left, left + cw, device=device, dtype=torch.float32) + 0.5) / width
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2)


class FourierFeatures(nn.Module):
    """γ(v) = [sin(2π v Bᵀ), cos(2π v Bᵀ)] with B ~ N(0, scale²), drawn from a fixed seed."""

    def __init__(self, features: int, scale: float, seed: int, spread: float = 1.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        B = torch.randn(features, 2, generator=generator) * scale
        if spread != 1.0:  # row stds log-uniform in [scale / spread, scale · spread]
            u = torch.rand(features, 1, generator=generator)
            B = B * spread ** (2 * u - 1)
        self.register_buffer("B", B)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        projected = 2 * math.pi * coords @ self.B.T
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)


def mlp(widths: list[int], activation: type[nn.Module] | nn.Module, bias: bool = True):
    """Linear layers between consecutive ``widths``, ``activation`` between them (not after)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(activation() if isinstance(activation, type) else activation)
    return nn.Sequential(*layers)


class PatchMLP(nn.Module):
    """Fourier features → ``layers`` ReLU linear layers → sigmoid patch stack (N, C, S, P, P)."""

    def __init__(self, config: ModelConfig, channels: int) -> None:
        super().__init__()
        p = config.patches
        self.shape = (channels, len(p.scales), p.size, p.size)
        inputs = 2 * config.encoding.features
        widths = [inputs] + [config.hidden] * (config.layers - 1) + [stack_width(channels, p)]
        self.net = mlp(widths, nn.ReLU)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features)).view(-1, *self.shape)


class Reconstructor(nn.Module):
    """Flattened patch stack → one colour. "linear": the authors' deep linear net (no bias, no
    activation inside) + sigmoid; "mlp": ReLU hidden layers + sigmoid. With ``residual`` the
    net's output is added to the logit of the finest centre element, and its last layer starts
    at zero, so the reconstructor starts as the identity on the centre pixel."""

    def __init__(self, config: ModelConfig, channels: int) -> None:
        super().__init__()
        inputs = stack_width(channels, config.patches)
        widths = [inputs] + [config.reconstructor_width] * (config.reconstructor_depth - 1)
        widths.append(channels)
        if config.reconstructor == "linear":
            self.net = mlp(widths, nn.Identity(), bias=False)
        else:
            self.net = mlp(widths, nn.ReLU)
        self.centre = centre_index(config.patches) if config.reconstructor_residual else None
        if self.centre is not None:
            nn.init.zeros_(self.net[-1].weight)
            if self.net[-1].bias is not None:
                nn.init.zeros_(self.net[-1].bias)

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        logits = self.net(stack.flatten(1))
        if self.centre is not None:
            s, r, c = self.centre
            logits = logits + torch.logit(stack[:, :, s, r, c], eps=1e-4)
        return torch.sigmoid(logits)


class Discriminator(nn.Module):
    """Flattened patch stack → one logit (LeakyReLU(0.2) hidden layers)."""

    def __init__(self, config: ModelConfig, channels: int) -> None:
        super().__init__()
        widths = [stack_width(channels, config.patches), *config.discriminator_hidden, 1]
        self.net = mlp(widths, nn.LeakyReLU(0.2))

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        return self.net(stack.flatten(1)).squeeze(-1)


class Knitwork(nn.Module):
    """The whole model. ``discriminator`` is None when the GAN term is off (γ = 0);
    ``downsampler`` is the learned kernel of blind super-resolution (``kernel_scale``), else
    None. ``structure()`` gives the construction arguments, which a checkpoint stores."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        channels: int,
        seed: int,
        discriminator: bool = True,
        kernel_scale: int | None = None,
        extent: int = 1,
    ) -> None:
        super().__init__()
        self.config = config
        self.channels = channels
        self.seed = seed
        self.extent = extent  # pixels along the longest side, for ``encoding.unit: pixel``
        scale = config.encoding.scale * (extent if config.encoding.unit == "pixel" else 1)
        self.encoding = FourierFeatures(
            config.encoding.features, scale, seed, config.encoding.spread
        )
        self.patch_mlp = PatchMLP(config, channels)
        self.reconstructor = (
            None if config.reconstructor == "none" else Reconstructor(config, channels)
        )
        self.discriminator = Discriminator(config, channels) if discriminator else None
        self.downsampler = (
            LearnedDownsampler(config.kernel_layers, config.kernel_width, kernel_scale)
            if kernel_scale is not None
            else None
        )

    def structure(self) -> dict:
        """Keyword arguments that rebuild this model's shape (with its ``config``)."""
        return {
            "channels": self.channels,
            "seed": self.seed,
            "discriminator": self.discriminator is not None,
            "kernel_scale": None if self.downsampler is None else self.downsampler.scale,
            "extent": self.extent,
        }

    def generator_parameters(self) -> list[nn.Parameter]:
        params = list(self.patch_mlp.parameters())
        if self.reconstructor is not None:
            params += list(self.reconstructor.parameters())
        if self.downsampler is not None:
            params += list(self.downsampler.parameters())
        return params

    def pixels(self, field: torch.Tensor) -> torch.Tensor:
        """(N, C) colours from a patch field: the reconstructor, or the stack's centre element."""
        if self.reconstructor is None:
            s, r, c = centre_index(self.config.patches)
            return field[:, :, s, r, c]
        return self.reconstructor(field)

    @torch.no_grad()
    def render(self, height: int, width: int, chunk: int = RENDER_CHUNK) -> torch.Tensor:
        """(H, W, C) image at any resolution, in chunks of ``chunk`` coordinates."""
        device = self.encoding.B.device
        coords = pixel_grid(height, width, device)
        if not self.config.aggregate:
            out = [self.pixels(self.patch_mlp(self.encoding(c))) for c in coords.split(chunk)]
            return torch.cat(out).view(height, width, self.channels)
        # each pixel: the mean of the finest-scale patches that cover it (``add_finest_votes``)
        sums = torch.zeros(height * width, self.channels, device=device)
        counts = torch.zeros(height * width, device=device)
        for start in range(0, height * width, chunk):
            part = coords[start : start + chunk]
            index = torch.arange(start, start + len(part), device=device)
            finest = self.patch_mlp(self.encoding(part))[:, :, 0]
            add_finest_votes(finest, index, height, width, sums, counts)
        return (sums / counts[:, None]).view(height, width, self.channels)


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
