"""RepViT blocks, and C3k / C3k2-style containers built from them for Ultralytics YOLO.

Paper: Ao Wang, Hui Chen, Zijia Lin, Jungong Han, Guiguang Ding, "RepViT: Revisiting Mobile CNN From ViT
Perspective", CVPR 2024, https://arxiv.org/abs/2307.09283

A RepViT block separates a token mixer (re-parameterisable 3x3 depth-wise conv, optional squeeze-excite) from a
channel mixer (residual 1x1 expand / GELU / 1x1 project). The depth-wise branch trains with three paths and folds
into one 3x3 conv for inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules.block import C3, C2f
from ultralytics.nn.modules.block import RepVGGDW as _UltralyticsRepVGGDW

from ._utils import check_bool, check_channels, check_int, make_divisible

__all__ = ["C3k2_RVB", "C3k2_RVB_SE", "C3k_RVB", "RepVGGDW", "RepViTBlock", "SqueezeExcite"]


def _check_expansion(owner: str, c2: int, e: float) -> int:
    """Return the hidden width ``int(c2 * e)``, raising if it would be below one channel."""
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0:
        raise ValueError(f"{owner}: e must be a number > 0, got {e!r}; the default is 0.5")
    c_ = int(c2 * e)
    if c_ < 1:
        raise ValueError(
            f"{owner}: hidden width int(c2 * e) = int({c2} * {e}) = {c_} must be >= 1; "
            f"raise e to at least {1 / c2:g} or use more output channels"
        )
    return c_


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(y) == y * scale + shift`` in eval mode (float32)."""
    std = (bn.running_var.float() + bn.eps).sqrt()
    weight = bn.weight.float() if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias.float() if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean.float() * scale


class RepVGGDW(_UltralyticsRepVGGDW):
    """RepViT's re-parameterisable depth-wise mixer: ``bn(dw3x3_bn(x) + dw1x1(x) + x)``, folding into one 3x3 conv.

    Subclasses Ultralytics' ``RepVGGDW`` (the YOLOv10 7x7 variant) so that ``BaseModel.fuse()`` / ``is_fused()``,
    which test ``isinstance(m, RepVGGDW)`` and ``hasattr(m, "conv1")`` and then call ``m.fuse()`` and
    ``m.forward_fuse``, fold it: Ultralytics offers no fuse hook for other classes (every case in ``fuse()`` is an
    ``isinstance`` test), and wrapping ``BaseModel.fuse`` would change Ultralytics for every model. The parent's
    ``__init__`` runs, so its contract holds (``conv``, ``conv1``, ``dim``, ``act``, ``fuse``, ``forward_fuse``);
    RepViT's branches then replace the YOLOv10 ones, and ``act`` is an identity (RepViT's mixer has none).

    Args:
        ed (int): Input (= output) channels.

    Examples:
        >>> m = RepVGGDW(16).eval()
        >>> x = torch.randn(1, 16, 8, 8)
        >>> y = m(x)
        >>> m.fuse()
        >>> torch.allclose(m.forward_fuse(x), y, atol=1e-5)
        True
    """

    def __init__(self, ed: int) -> None:
        """Build the 3x3 depth-wise conv + BN, the 1x1 depth-wise conv and the outer BN."""
        ed = check_channels("RepVGGDW", ed, arg="ed")
        super().__init__(ed)  # the parent's attributes exist; its YOLOv10 7x7 / 3x3 branches are replaced below
        self.conv = Conv(ed, ed, 3, 1, g=ed, act=False)
        self.conv1 = nn.Conv2d(ed, ed, 1, groups=ed, bias=True)
        self.bn = nn.BatchNorm2d(ed)
        self.act = nn.Identity()

    @property
    def dim(self) -> int:
        """Channels, read from the weights so it follows pruning (fused or not)."""
        conv = self.conv.conv if isinstance(self.conv, Conv) else self.conv
        return conv.weight.shape[0]

    @dim.setter
    def dim(self, value: int) -> None:
        """The parent stores its width; here it is read from the weights, so only the value they give is accepted."""
        if value != self.dim:
            raise AttributeError(f"RepVGGDW.dim follows the weights ({self.dim} channels); it cannot be set to {value}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Three-branch forward; after ``fuse()`` the single folded conv."""
        if not hasattr(self, "conv1"):  # fused without the forward swap Ultralytics does
            return self.conv(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Forward of the folded block (set as ``forward`` by Ultralytics after ``fuse()``)."""
        return self.conv(x)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold all branches and both BNs into ``self.conv``, one 3x3 depth-wise ``nn.Conv2d`` with bias.

        Idempotent. Also correct when the inner ``Conv`` had its BN folded already. Arithmetic is done in float32 and
        cast back, so half-precision checkpoints lose nothing extra.
        """
        if not hasattr(self, "conv1"):
            return  # already fused
        inner = self.conv.conv
        w = inner.weight.float()
        b = inner.bias.float() if inner.bias is not None else w.new_zeros(w.shape[0])
        if hasattr(self.conv, "bn"):
            scale, shift = _bn_scale_shift(self.conv.bn)
            w, b = w * scale.view(-1, 1, 1, 1), b * scale + shift
        w = w + F.pad(self.conv1.weight.float(), [1, 1, 1, 1])  # 1x1 at the centre of the 3x3
        b = b + self.conv1.bias.float()
        w[:, 0, 1, 1] += 1.0  # identity branch
        scale, shift = _bn_scale_shift(self.bn)
        w, b = w * scale.view(-1, 1, 1, 1), b * scale + shift

        c = w.shape[0]
        fused = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=True).to(device=inner.weight.device, dtype=inner.weight.dtype)
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        self.conv = fused.requires_grad_(False)  # like Ultralytics' fused layers
        del self.conv1, self.bn


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global average, 1x1 reduce, ReLU, 1x1 expand, sigmoid, rescale.

    Args:
        c1 (int): Input (= output) channels.
        rd_ratio (float): Reduced width relative to ``c1`` before rounding.
        rd_divisor (int): The reduced width is a multiple of this (and at least this), so it is never zero.

    Examples:
        >>> se = SqueezeExcite(64)
        >>> se(torch.randn(2, 64, 8, 8)).shape, se.rd_channels
        (torch.Size([2, 64, 8, 8]), 16)
    """

    def __init__(self, c1: int, rd_ratio: float = 0.25, rd_divisor: int = 8) -> None:
        """Build the two 1x1 convs with a width from ``make_divisible``."""
        super().__init__()
        c1 = check_channels("SqueezeExcite", c1)
        rd_divisor = check_int("SqueezeExcite", "rd_divisor", rd_divisor, 1, "the default is 8")
        if isinstance(rd_ratio, bool) or not isinstance(rd_ratio, (int, float)) or not rd_ratio > 0:
            raise ValueError(f"SqueezeExcite: rd_ratio must be a number > 0, got {rd_ratio!r}; the default is 0.25")
        rd = make_divisible(c1 * rd_ratio, rd_divisor)
        self.fc1 = nn.Conv2d(c1, rd, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, c1, 1, bias=True)

    @property
    def in_channels(self) -> int:
        """Input (= output) channels, read from the weights."""
        return self.fc1.weight.shape[1]

    @property
    def rd_channels(self) -> int:
        """Reduced width, read from the weights."""
        return self.fc1.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each channel of ``x`` by a gate from its global average."""
        s = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * s.sigmoid()


class RepViTBlock(nn.Module):
    """Stride-1 RepViT block: ``x = token_mixer(x); x = x + channel_mixer(x)``.

    The last BN of the channel mixer starts at zero, so a fresh mixer is an identity and training starts from the
    token mixer alone, as in the paper.

    Args:
        c1 (int): Input (= output) channels.
        use_se (bool): Put a ``SqueezeExcite`` after the depth-wise mixer.

    Examples:
        >>> b = RepViTBlock(32)
        >>> b(torch.randn(2, 32, 16, 16)).shape
        torch.Size([2, 32, 16, 16])
    """

    def __init__(self, c1: int, use_se: bool = True) -> None:
        """Build token mixer (RepVGGDW [+ SE]) and channel mixer (1x1 to 2*c1 with GELU, 1x1 back, BN zeroed)."""
        super().__init__()
        c1 = check_channels("RepViTBlock", c1)
        use_se = check_bool("RepViTBlock", "use_se", use_se)
        self.token_mixer = nn.Sequential(RepVGGDW(c1), SqueezeExcite(c1) if use_se else nn.Identity())
        self.channel_mixer = nn.Sequential(Conv(c1, 2 * c1, 1, act=nn.GELU()), Conv(2 * c1, c1, 1, act=False))
        nn.init.zeros_(self.channel_mixer[1].bn.weight)

    @property
    def in_channels(self) -> int:
        """Input (= output) channels, read from the weights."""
        return self.channel_mixer[0].conv.weight.shape[1]

    @property
    def hidden_channels(self) -> int:
        """Channel-mixer expansion width, read from the weights."""
        return self.channel_mixer[0].conv.weight.shape[0]

    @property
    def use_se(self) -> bool:
        """Whether the token mixer has a squeeze-excite (read from the structure)."""
        return isinstance(self.token_mixer[1], SqueezeExcite)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token mixing, then residual channel mixing."""
        x = self.token_mixer(x)
        return x + self.channel_mixer(x)


class C3k_RVB(C3):
    """Ultralytics ``C3`` whose bottlenecks are ``RepViTBlock``s (the inner block of ``C3k2_RVB`` with ``c3k=True``).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        n (int): Number of RepViT blocks.
        use_se (bool): Squeeze-excite in each block.
        e (float): Hidden width ``int(c2 * e)``.

    Examples:
        >>> m = C3k_RVB(32, 64, n=2)
        >>> m(torch.randn(1, 32, 16, 16)).shape
        torch.Size([1, 64, 16, 16])
    """

    def __init__(self, c1: int, c2: int, n: int = 2, use_se: bool = True, e: float = 0.5) -> None:
        """Build C3's three convs and replace its bottlenecks by ``n`` RepViT blocks of the hidden width."""
        name = type(self).__name__
        check_channels(name, c1)
        check_channels(name, c2, arg="c2", hint="use at least one output channel")
        check_int(name, "n", n, 1, "use at least one block")
        _check_expansion(name, c2, e)
        super().__init__(c1, c2, n, True, 1, e)
        c_ = self.cv1.conv.weight.shape[0]
        self.m = nn.Sequential(*(RepViTBlock(c_, use_se) for _ in range(n)))


class C3k2_RVB(C2f):
    """C3k2-style CSP block (Ultralytics ``C2f`` layout) with RepViT blocks, or ``C3k_RVB`` when ``c3k``.

    The arguments follow Ultralytics' ``C3k2`` (c1, c2, n, c3k, e), so the model parser fills them the same way.
    ``forward`` / ``forward_split`` are C2f's (export switches to ``forward_split``, which uses ``self.c``).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        n (int): Number of inner blocks.
        c3k (bool): Use ``C3k_RVB`` (two RepViT blocks in a C3) as the inner block instead of one ``RepViTBlock``.
        e (float): Hidden width ``self.c = int(c2 * e)``.

    Examples:
        >>> m = C3k2_RVB(32, 64, n=1)
        >>> m(torch.randn(2, 32, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    use_se: bool = False

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5) -> None:
        """Build C2f's two convs and ``n`` RepViT (or C3k_RVB) inner blocks of width ``self.c``."""
        name = type(self).__name__
        check_channels(name, c1)
        check_channels(name, c2, arg="c2", hint="use at least one output channel")
        check_int(name, "n", n, 1, "use at least one block")
        c_ = _check_expansion(name, c2, e)
        c3k = check_bool(name, "c3k", c3k)
        if c3k and c_ < 2:  # C3k_RVB halves the width again
            raise ValueError(
                f"{name}: c3k=True needs a hidden width int(c2 * e) >= 2, got int({c2} * {e}) = {c_}; "
                "use c3k=False, or raise c2 or e"
            )
        super().__init__(c1, c2, n, False, 1, e)
        self.m = nn.ModuleList(
            C3k_RVB(self.c, self.c, 2, self.use_se) if c3k else RepViTBlock(self.c, self.use_se) for _ in range(n)
        )


class C3k2_RVB_SE(C3k2_RVB):
    """``C3k2_RVB`` with squeeze-excite in every RepViT block.

    A separate class rather than a flag because YAML layers name a class (the parser passes C3k2's positional
    arguments, leaving no slot for an option), and Torch-Pruning's ``customized_pruners`` match exact classes.

    Examples:
        >>> m = C3k2_RVB_SE(32, 64, n=1, c3k=True)
        >>> m(torch.randn(1, 32, 16, 16)).shape
        torch.Size([1, 64, 16, 16])
    """

    use_se: bool = True
