"""CycleGAN (Zhu et al. 2017) from inverted fluorescence to H&E, as CyC-PDAM's pixel-level
adaptation: ResNet generators with instance norm, 70 x 70 PatchGAN discriminators, least-squares
GAN loss, cycle loss weight 10, a pool of 50 fakes, Adam (0.5, 0.999) with the learning rate
constant for the first half and linearly decayed to 0 over the second.

Images are float tensors [B, 3, H, W] in [-1, 1]; a fluorescence image enters inverted (dark
nuclei on a bright background, as H&E) and replicated to three channels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Generator", "PatchDiscriminator", "CycleGAN", "to_gan", "from_gan", "translate"]


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


class Generator(nn.Module):
    """ResNet generator: [B, 3, H, W] -> [B, 3, H, W] in [-1, 1] (H, W multiples of 4)."""

    def __init__(self, width: int = 24, blocks: int = 6):
        super().__init__()
        w = width
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, w, 7), nn.InstanceNorm2d(w), nn.ReLU(inplace=True)]
        for m in (1, 2):
            layers += [nn.Conv2d(w * m, w * m * 2, 3, 2, 1), nn.InstanceNorm2d(w * m * 2), nn.ReLU(inplace=True)]
        layers += [_Res(4 * w) for _ in range(blocks)]
        for m in (4, 2):
            layers += [nn.ConvTranspose2d(w * m, w * m // 2, 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(w * m // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """70 x 70 PatchGAN: [B, 3, H, W] -> real/fake logits [B, 1, H/8 - 2, W/8 - 2]."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.InstanceNorm2d(4 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1), nn.InstanceNorm2d(8 * w), nn.LeakyReLU(0.2, True),
            nn.Conv2d(8 * w, 1, 4, 1, 1))

    def forward(self, x):
        return self.net(x)


class _Pool:
    """History of generated images (size 50): half the time the discriminator sees an old fake."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.items, self.rng = size, [], rng

    def query(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if len(self.items) < self.size:
            self.items.append(x)
            return x
        if self.rng.random() < 0.5:
            i = int(self.rng.integers(self.size))
            old, self.items[i] = self.items[i], x
            return old
        return x


class CycleGAN(nn.Module):
    """Both generators (``s2t``: fluorescence -> H&E, ``t2s``) and both discriminators."""

    def __init__(self, width: int = 24, blocks: int = 6):
        super().__init__()
        self.s2t, self.t2s = Generator(width, blocks), Generator(width, blocks)
        self.d_t, self.d_s = PatchDiscriminator(max(16, width)), PatchDiscriminator(max(16, width))

    def optimisers(self, lr: float):
        g = torch.optim.Adam(list(self.s2t.parameters()) + list(self.t2s.parameters()), lr=lr, betas=(0.5, 0.999))
        d = torch.optim.Adam(list(self.d_t.parameters()) + list(self.d_s.parameters()), lr=lr, betas=(0.5, 0.999))
        return g, d

    def step(self, src: torch.Tensor, tgt: torch.Tensor, opt_g, opt_d, pools, cycle_weight: float = 10.0,
             identity: float = 0.5, structure: float = 0.0) -> dict:
        """One optimisation step on a source batch and a target batch ([B, 3, h, w] in [-1, 1]);
        returns the losses {G, D, cycle, identity, structure} as floats.

        ``identity``: the original CycleGAN's identity loss, G_s2t(t) ~ t and G_t2s(s) ~ s, weighted
        ``identity * cycle_weight`` (the reference code's default 0.5). ``structure`` (ours, 0 = off):
        1 - the correlation between the brightness of a source image and of its translation, which
        stops the generator from turning dark nuclei into bright holes and painting nuclei elsewhere."""
        fake_t, fake_s = self.s2t(src), self.t2s(tgt)
        rec_s, rec_t = self.t2s(fake_t), self.s2t(fake_s)
        for p in list(self.d_t.parameters()) + list(self.d_s.parameters()):
            p.requires_grad_(False)
        pt, ps = self.d_t(fake_t), self.d_s(fake_s)
        adv = F.mse_loss(pt, torch.ones_like(pt)) + F.mse_loss(ps, torch.ones_like(ps))
        cyc = F.l1_loss(rec_s, src) + F.l1_loss(rec_t, tgt)
        g_loss = adv + cycle_weight * cyc
        idt = src.new_zeros(())
        if identity > 0:
            idt = F.l1_loss(self.s2t(tgt), tgt) + F.l1_loss(self.t2s(src), src)
            g_loss = g_loss + identity * cycle_weight * idt
        struct = src.new_zeros(())
        if structure > 0:
            struct = 1 - _correlation(fake_t.mean(1), src.mean(1))
            g_loss = g_loss + structure * struct
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in list(self.d_t.parameters()) + list(self.d_s.parameters()):
            p.requires_grad_(True)
        d_loss = 0.0
        for d, real, fake in ((self.d_t, tgt, pools[0].query(fake_t)), (self.d_s, src, pools[1].query(fake_s))):
            pr, pf = d(real), d(fake)
            d_loss = d_loss + 0.5 * (F.mse_loss(pr, torch.ones_like(pr)) + F.mse_loss(pf, torch.zeros_like(pf)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        return {"G": adv.item(), "D": d_loss.item(), "cycle": cyc.item(), "identity": idt.item(),
                "structure": struct.item()}


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Pearson correlation of ``a`` and ``b`` [B, H, W]."""
    a = a.flatten(1) - a.flatten(1).mean(1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)).mean()


def to_gan(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] (or [B, H, W, 3]) -> float [B, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float()
    if x.ndim == 3:
        x = x[None]
    return x.permute(0, 3, 1, 2) / 127.5 - 1.0


def from_gan(x: torch.Tensor) -> np.ndarray:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def translate(generator: nn.Module, rgb: np.ndarray, device="cpu", tile: int = 512) -> np.ndarray:
    """Apply a generator to a whole uint8 RGB image [H, W, 3] (reflect-padded to a multiple of 4;
    processed in tiles of ``tile`` px with a 32 px margin) -> uint8 [H, W, 3]."""
    generator.eval()
    h, w = rgb.shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    m = 32
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            y0, x0 = max(0, y - m), max(0, x - m)
            y1, x1 = min(h, y + tile + m), min(w, x + tile + m)
            t = to_gan(rgb[y0:y1, x0:x1]).to(device)
            ph, pw = (-t.shape[2]) % 4, (-t.shape[3]) % 4
            mode = "reflect" if min(t.shape[2], t.shape[3]) > max(ph, pw) else "replicate"
            t = F.pad(t, (0, pw, 0, ph), mode=mode)
            r = from_gan(generator(t))[0][: y1 - y0, : x1 - x0]
            ty1, tx1 = min(h, y + tile), min(w, x + tile)
            out[y:ty1, x:tx1] = r[y - y0: ty1 - y0, x - x0: tx1 - x0]
    return out
