"""PyTorch port of the self-guided DIP step, for same-run speed comparisons (benchmark only).

The U-Net is the reference code's family (double 3x3 conv + BatchNorm + ReLU, max-pool down,
bilinear x2 align-corners up, skip concatenation, 1x1 output), the operator is ``A = M F S`` with the
centred orthonormal FFT, and the step is the self-guided objective with K noise draws as one batch:

    D(A mean_k f(z + eta_k), y) + alpha * R(f(z + eta_k), z),   eta_k = c * max|z| * U[0, 1)

with L1 or squared-L2 terms, Adam on the weights and a separate Adam on ``z``. The library never
imports this module; it needs PyTorch (``pip install torch``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, mid=None):
        super().__init__()
        mid = mid or cout
        self.net = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.net(x)


class Up(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = DoubleConv(cin, cout, cin // 2)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """Bilinear U-Net of ``depth`` pooling levels; depth 4 has 17,266,882 and depth 5 69,185,218 parameters (2->2)."""

    def __init__(self, depth=5, base=64, cin=2, cout=2):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(cin, widths[0])
        self.downs = nn.ModuleList()
        for i in range(1, depth + 1):
            out = widths[i] // 2 if i == depth else widths[i]
            self.downs.append(nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i - 1], out)))
        self.ups = nn.ModuleList()
        for i in range(depth, 0, -1):
            out = widths[i - 1] // 2 if i > 1 else widths[0]
            self.ups.append(Up(widths[i], out))
        self.outc = nn.Conv2d(widths[0], cout, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def fft2c(x):
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def make_step(net, smaps, mask, y, z, k=4, noise_scale=0.05, alpha=1.0, loss="l2", lr=1e-3, lr_z=1e-2, dtype=None):
    """Return ``step()`` performing one self-guided DIP update of ``net`` and ``z`` (in place)."""
    z = z.clone().requires_grad_(True)
    opt_w = torch.optim.Adam(net.parameters(), lr=lr)
    opt_z = torch.optim.Adam([z], lr=lr_z)
    dist = (lambda a, b: (a - b).abs().mean()) if loss == "l1" else (lambda a, b: ((a - b).abs() ** 2).mean())

    def step():
        opt_w.zero_grad(set_to_none=True)
        opt_z.zero_grad(set_to_none=True)
        eta = noise_scale * z.detach().abs().max() * torch.rand((k, *z.shape[1:]), device=z.device)
        with torch.autocast(z.device.type, dtype=dtype, enabled=dtype is not None):
            out = net(z + eta).float()
        x = out.mean(0)
        xc = torch.complex(x[0], x[1])
        ay = mask * fft2c(smaps * xc)
        data = dist(torch.view_as_real(ay), torch.view_as_real(y))
        reg = dist(out, z.expand_as(out))
        total = data + alpha * reg
        total.backward()
        opt_w.step()
        opt_z.step()
        return total

    return step
