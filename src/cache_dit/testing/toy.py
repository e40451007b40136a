"""A small DiT that no registry knows: the worked example for declared and derived (`"auto"`) adapters.

Two stages in a ModuleDict: "dual" blocks update the image and text streams separately and return
(hidden, context); then the model concatenates text and image and "joint" blocks update the joint sequence and
return the tensor. So a cached middle that spans both stages needs one residual per segment.
"""

from __future__ import annotations

import torch
from torch import nn


class ToyDualBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.img = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.txt = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.mod = nn.Linear(dim, dim)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden (B, N, D), context (B, S, D), temb (B, D)
        attn = torch.softmax(hidden @ context.transpose(1, 2) / hidden.shape[-1] ** 0.5, dim=-1) @ context
        hidden = hidden + self.img(hidden + attn) * torch.sigmoid(self.mod(temb))[:, None]
        context = context + self.txt(context)
        return hidden, context


class ToyJointBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # tokens (B, S + N, D)
        attn = torch.softmax(tokens @ tokens.transpose(1, 2) / tokens.shape[-1] ** 0.5, dim=-1) @ tokens
        return tokens + self.mlp(tokens + attn + temb[:, None])


class ToyDiT(nn.Module):
    """x (B, N, C) latent tokens, text (B, S, T), timestep (B,) -> (B, N, C). 2 dual + 3 joint blocks."""

    def __init__(self, channels: int = 8, text_dim: int = 12, dim: int = 32, dual: int = 2, joint: int = 3):
        super().__init__()
        self.proj_in = nn.Linear(channels, dim)
        self.text_in = nn.Linear(text_dim, dim)
        self.time = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.stages = nn.ModuleDict(
            {
                "dual": nn.ModuleList(ToyDualBlock(dim) for _ in range(dual)),
                "joint": nn.ModuleList(ToyJointBlock(dim) for _ in range(joint)),
            }
        )
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        hidden, context = self.proj_in(x), self.text_in(text)
        temb = self.time(timestep[:, None].float() / 1000)
        for block in self.stages["dual"]:
            hidden, context = block(hidden, context, temb)
        tokens = torch.cat([context, hidden], dim=1)
        for block in self.stages["joint"]:
            tokens = block(tokens, temb)
        return self.proj_out(tokens[:, context.shape[1] :])


def toy_dit(seed: int = 0, **kwargs: int) -> ToyDiT:
    torch.manual_seed(seed)
    return ToyDiT(**kwargs).eval()


@torch.no_grad()
def denoise(
    model: nn.Module, steps: int = 6, seed: int = 0, tokens: int = 16, text_len: int = 5
) -> torch.Tensor:
    """A plain Euler loop over timesteps 1000 -> 0: what a pipeline would do, on random inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, tokens, model.proj_in.in_features, generator=g)
    text = torch.randn(1, text_len, model.text_in.in_features, generator=g)
    timesteps = torch.linspace(1000, 0, steps + 1)
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        velocity = model(x, text, t.reshape(1))
        x = x + (t_next - t) / 1000 * velocity
    return x
