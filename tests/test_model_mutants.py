"""Unit tests of the model modules written against `make mutation` (docs/testing.md).

Every expected value is computed independently of the module under test: the LSTMs by
hand from their weights, the KL against ``torch.distributions``, kernels and masks from
their definitions with explicit loops, heat maps from the pixel-centre formula. Inputs
are chosen so that a one-token change shows (distinct sizes for every axis, values off
the grid, coordinates past the border). All run in milliseconds without data: they are
part of the mutation test selection in pyproject.toml ([tool.mutmut]).
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vidpred.models import pose as pose_mod
from vidpred.models import transform as tf
from vidpred.models.recurrent import GaussianLSTM, PredictorLSTM, gaussian_kl, reparameterize


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- models/recurrent.py ----------------------------------------------------------------


def lstm_by_hand(lstm: torch.nn.LSTM, x: torch.Tensor, state=None):
    """A batch-first multi-layer LSTM written out: gates i, f, g, o (PyTorch's order)."""
    B, T, _ = x.shape
    H, L = lstm.hidden_size, lstm.num_layers
    h0 = torch.zeros(L, B, H) if state is None else state[0]
    c0 = torch.zeros(L, B, H) if state is None else state[1]
    inp, hs, cs = x, [], []
    for layer in range(L):
        w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        h, c, outs = h0[layer], c0[layer], []
        for t in range(T):
            gates = inp[:, t] @ w_ih.T + h @ w_hh.T + b
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        inp = torch.stack(outs, 1)
        hs.append(h)
        cs.append(c)
    return inp, (torch.stack(hs), torch.stack(cs))


def linear_by_hand(lin: torch.nn.Linear, x):
    return x @ lin.weight.T + lin.bias


@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "carried-state"])
def test_predictor_lstm_by_hand(with_state):
    """g = tanh(out(LSTM(embed(x)))) over a batch-first sequence, two layers, state in and out."""
    torch.manual_seed(0)
    B, T, IN, HID, OUT = 2, 3, 5, 6, 7  # every axis a different size
    net = PredictorLSTM(IN, HID, OUT, layers=2)
    x = torch.randn(B, T, IN, generator=gen(1))
    state = (torch.randn(2, B, HID, generator=gen(2)), torch.randn(2, B, HID, generator=gen(3))) \
        if with_state else None
    with torch.no_grad():
        g, (h, c) = net(x, state)
        y, (h_ref, c_ref) = lstm_by_hand(net.lstm, linear_by_hand(net.embed, x), state)
    assert net.lstm.num_layers == 2 and net.lstm.batch_first
    assert g.shape == (B, T, OUT)
    torch.testing.assert_close(g, torch.tanh(linear_by_hand(net.out, y)))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


@pytest.mark.parametrize("with_state", [False, True], ids=["fresh", "carried-state"])
def test_gaussian_lstm_by_hand(with_state):
    """(mu, logvar) are two linear heads on the LSTM output; the state is returned."""
    torch.manual_seed(0)
    B, T, IN, HID, Z = 3, 2, 5, 6, 4
    net = GaussianLSTM(IN, HID, Z, layers=2)
    x = torch.randn(B, T, IN, generator=gen(1))
    state = (torch.randn(2, B, HID, generator=gen(2)), torch.randn(2, B, HID, generator=gen(3))) \
        if with_state else None
    with torch.no_grad():
        mu, logvar, (h, c) = net(x, state)
        y, (h_ref, c_ref) = lstm_by_hand(net.lstm, linear_by_hand(net.embed, x), state)
    assert net.lstm.num_layers == 2 and net.lstm.batch_first
    torch.testing.assert_close(mu, linear_by_hand(net.mu, y))
    torch.testing.assert_close(logvar, linear_by_hand(net.logvar, y))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_reparameterisation_by_hand():
    mu = torch.tensor([0.3, -1.0, 2.0])
    logvar = torch.tensor([1.2, -0.5, 0.0])
    eps = torch.tensor([1.5, -0.7, 0.4])
    want = [m + math.exp(lv / 2) * e for m, lv, e in zip(mu.tolist(), logvar.tolist(), eps.tolist())]
    torch.testing.assert_close(reparameterize(mu, logvar, eps), torch.tensor(want))


def test_gaussian_kl_against_torch_distributions_over_the_last_axis():
    """Summed over the last (latent) axis only, for a 3-D input of distinct axis sizes."""
    g = gen(4)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(2, 3, 5, generator=g) for _ in range(4))
    ours = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    ref = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert ours.shape == (2, 3)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # one latent by hand: q = N(1, e^1), p = N(0, 1): 0.5 * (0 - 1 + (e + 1) / 1 - 1) = (e - 1) / 2
    one = gaussian_kl(torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1))
    torch.testing.assert_close(one, torch.tensor([(math.e - 1) / 2]))


# -- models/pose.py -----------------------------------------------------------------------


def heat_by_hand(positions, size, sigma_grid=1.5 * 2 / 64):
    """Pixel (i, j) has its centre at ((j + 0.5) / size, (i + 0.5) / size) in table fractions;
    a blob of width sigma (grid units, -1..1 across the image) widened by one pixel of this scale."""
    N, P, _ = positions.shape
    out = torch.empty(N, P, size, size)
    s2 = sigma_grid**2 + (1 / size) ** 2
    for n in range(N):
        for p in range(P):
            u, v = 2 * float(positions[n, p, 0]) - 1, 2 * float(positions[n, p, 1]) - 1
            for i in range(size):
                for j in range(size):
                    xc, yc = 2 * (j + 0.5) / size - 1, 2 * (i + 0.5) / size - 1
                    out[n, p, i, j] = math.exp(-((xc - u) ** 2 + (yc - v) ** 2) / (2 * s2))
    return out


POSITIONS = torch.tensor([[[0.30, 0.70, 0.9], [0.55, 0.20, -0.4]],
                          [[0.80, 0.45, 0.1], [0.10, 0.95, 0.0]]])  # (N 2, P 2, 3), off the pixel grid


def test_pose_heat_maps_by_hand():
    """Position, width and the z-independence of every blob at three scales, cell by cell."""
    pm = pose_mod.PoseMap([3, 5], [4, 8], out_channels=2)
    assert pm.log_sigma.item() == pytest.approx(math.log(1.5 * 2 / 64))
    torch.testing.assert_close(pm.project.weight.detach(), torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]))
    torch.testing.assert_close(pm.project.bias.detach(), torch.tensor([-1.0, -1.0]))
    for size in (4, 8, 16):
        with torch.no_grad():
            torch.testing.assert_close(pm.heat(POSITIONS, size), heat_by_hand(POSITIONS, size))
    # integer positions (an int tensor from a data file) are converted, not rejected
    with torch.no_grad():
        torch.testing.assert_close(pm.heat(torch.ones(1, 2, 3, dtype=torch.int64), 4),
                                   heat_by_hand(torch.ones(1, 2, 3), 4))


def test_pose_heat_follows_its_learned_width_and_device():
    pm = pose_mod.PoseMap([3], [4])
    with torch.no_grad():
        pm.log_sigma.fill_(math.log(0.3))
        torch.testing.assert_close(pm.heat(POSITIONS, 8), heat_by_hand(POSITIONS, 8, sigma_grid=0.3))
    meta = pose_mod.PoseMap([3], [4]).to("meta")  # every tensor made on the positions' device
    assert meta.heat(POSITIONS.to("meta"), 8).device.type == "meta"


def test_pose_map_forward_is_one_1x1_convolution_of_the_heat_per_stage():
    torch.manual_seed(0)
    pm = pose_mod.PoseMap([3, 5], [4, 8], out_channels=6)
    with torch.no_grad():
        stages, out = pm(POSITIONS)
    assert len(stages) == 2 and [s.shape for s in stages] == [(2, 3, 4, 4), (2, 5, 8, 8)]
    for conv, size, got in zip(pm.stages, (4, 8), stages):
        heat = heat_by_hand(POSITIONS, size)  # (N, P, s, s)
        want = torch.einsum("cp,npij->ncij", conv.weight[:, :, 0, 0].detach(), heat) + conv.bias.detach()[:, None, None]
        torch.testing.assert_close(got, want)
    assert out.shape == (2, 6, 64, 64)
    heat = heat_by_hand(POSITIONS, 64)
    want = torch.einsum("cp,npij->ncij", pm.out.weight[:, :, 0, 0].detach(), heat) + pm.out.bias.detach()[:, None, None]
    torch.testing.assert_close(out, want)


def test_pose_map_defaults_two_points_and_no_output_shift():
    pm = pose_mod.PoseMap([3], [4])
    assert pm.out is None and pm.stages[0].in_channels == 2
    stages, out = pm(POSITIONS)
    assert out is None and stages[0].shape == (2, 3, 4, 4)
    three = pose_mod.PoseMap([3], [4], out_channels=1, points=3)
    assert three.stages[0].in_channels == 3 and three.out.in_channels == 3 and three.out.out_channels == 1


# -- models/transform.py ------------------------------------------------------------------


def kernels_by_hand(image, kernels):
    """out[n, j, c, y, x] = sum_ab kernels[n, j, a, b] * padded[n, c, y + a, x + b], the border
    replicated (correlation: the centre tap is zero displacement)."""
    N, C, H, W = image.shape
    K, k = kernels.shape[1], kernels.shape[-1]
    p = k // 2
    rows = torch.arange(H)[:, None] + torch.arange(-p, p + 1)[None]  # (H, k)
    cols = torch.arange(W)[:, None] + torch.arange(-p, p + 1)[None]
    rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    out = torch.zeros(N, K, C, H, W, dtype=image.dtype)
    for a in range(k):
        for b in range(k):
            tap = image[:, :, rows[:, a]][:, :, :, cols[:, b]]  # (N, C, H, W) read at (y + a - p, x + b - p)
            out += kernels[:, :, a, b, None, None, None].to(image.dtype) * tap[:, None]
    return out


def test_apply_kernels_by_hand():
    """Random kernels of distinct (N, K, C, H, W, k), float64 kernels on a float32 image."""
    g = gen(5)
    image = torch.rand(2, 3, 7, 9, generator=g)
    kernels = torch.rand(2, 4, 5, 5, generator=g, dtype=torch.float64)
    out = tf.apply_kernels(image, kernels)
    assert out.shape == (2, 4, 3, 7, 9) and out.dtype == torch.float32
    torch.testing.assert_close(out, kernels_by_hand(image, kernels))
    small = torch.rand(3, 2, 3, 3, generator=g)  # k = 3
    torch.testing.assert_close(tf.apply_kernels(image[:1].expand(3, -1, -1, -1), small),
                               kernels_by_hand(image[:1].expand(3, -1, -1, -1), small))


def test_cdna_head_starts_as_the_identity_with_the_previous_mask_ahead():
    K, k = 3, 5
    head = tf.CDNAHead(g_dim=6, kernels=K, kernel_size=k)
    assert head.n_kernels == K and head.kernel_size == k
    assert head.n_masks == K + 4 and head.decoder_channels == 3 + K + 4
    assert head.kernel_logits.out_features == K * k * k
    # weights small (std 0.01): the kernels of any g stay near the identity start
    assert 0.003 < head.kernel_logits.weight.std().item() < 0.03
    kern = head.kernels(torch.randn(4, 6, generator=gen(6)))
    assert kern.shape == (4, K, k, k)
    assert ((kern[:, :, 2, 2] - 0.9).abs() < 0.02).all()
    # bias alone: exactly IDENTITY_WEIGHT on the centre tap, the rest spread evenly
    with torch.no_grad():
        head.kernel_logits.weight.zero_()
    kern = head.kernels(torch.randn(2, 6, generator=gen(7)))
    want = torch.full((k, k), 0.1 / (k * k - 1))
    want[2, 2] = 0.9
    torch.testing.assert_close(kern, want.expand(2, K, k, k))
    mask_bias = torch.zeros(K + 4)
    mask_bias[K] = 4.0  # "previous", the first background after the K kernels
    torch.testing.assert_close(head.mask_bias.detach(), mask_bias)
    assert isinstance(head.mask_bias, torch.nn.Parameter)
    three = tf.CDNAHead(g_dim=6, kernels=2, kernel_size=3)  # the centre of a 3x3 kernel is tap 4
    with torch.no_grad():
        three.kernel_logits.weight.zero_()
    want = torch.full((3, 3), 0.1 / 8)
    want[1, 1] = 0.9
    torch.testing.assert_close(three.kernels(torch.zeros(1, 6)), want.expand(1, 2, 3, 3))


def test_cdna_kernels_are_a_softmax_over_the_taps_of_each_kernel():
    torch.manual_seed(0)
    head = tf.CDNAHead(g_dim=6, kernels=3, kernel_size=3)
    with torch.no_grad():
        head.kernel_logits.weight.normal_()  # far from the start: every tap matters
        g = torch.randn(2, 6, generator=gen(8))
        logits = linear_by_hand(head.kernel_logits, g)
        kern = head.kernels(g)
    assert kern.dtype == torch.float32
    for n in range(2):
        for j in range(3):
            e = logits[n, 9 * j: 9 * (j + 1)].exp()
            torch.testing.assert_close(kern[n, j], (e / e.sum()).view(3, 3))


def head_inputs(K, seed, H=6, W=7, g_dim=6):
    g = gen(seed)
    return dict(
        g=torch.randn(2, g_dim, generator=g),
        raw=torch.randn(2, 3 + K + 4, H, W, generator=g, dtype=torch.float64),
        previous=torch.rand(2, 3, H, W, generator=g),
        first=torch.rand(2, 3, H, W, generator=g),
        last_observed=torch.rand(2, 3, H, W, generator=g),
    )


def random_head(K, k, g_dim=6):
    torch.manual_seed(0)
    head = tf.CDNAHead(g_dim=g_dim, kernels=K, kernel_size=k)
    with torch.no_grad():
        head.kernel_logits.weight.normal_()
        head.mask_bias.normal_()
    return head


def masks_by_hand(raw, mask_bias):
    logits = raw[:, 3:].float() + mask_bias[None, :, None, None]
    e = logits.exp()
    return e / e.sum(1, keepdim=True)


def test_cdna_composite_by_hand():
    """frame = sum_m mask_m * candidate_m, candidates [K moved, previous, first, last observed,
    generated], masks a softmax over M of the raw logits plus the learned bias; in fp32."""
    K, k = 2, 3
    head = random_head(K, k)
    x = head_inputs(K, seed=9)
    with torch.no_grad():
        frame, masks = head(**x)
        kern = head.kernels(x["g"])
        want_masks = masks_by_hand(x["raw"], head.mask_bias)
    assert frame.dtype == torch.float32 and masks.shape == (2, K + 4, 6, 7)
    torch.testing.assert_close(masks, want_masks)
    moved = kernels_by_hand(x["previous"], kern)
    cands = [moved[:, 0], moved[:, 1], x["previous"], x["first"], x["last_observed"],
             torch.sigmoid(x["raw"][:, :3].float())]
    want = sum(want_masks[:, m, None] * c for m, c in enumerate(cands))
    torch.testing.assert_close(frame, want)
    # the candidates one at a time: a mask logit far ahead of the others picks that candidate
    for m, c in enumerate(cands):
        raw = x["raw"].clone()
        raw[:, 3 + m] += 100.0
        with torch.no_grad():
            torch.testing.assert_close(head(**{**x, "raw": raw})[0], c)


def coords_by_hand(head, x, ref, coords):
    K = head.n_kernels
    N, _, H, W = x["previous"].shape
    masks = masks_by_hand(x["raw"], head.mask_bias)
    moved = kernels_by_hand(coords, head.kernels(x["g"]))  # (N, K, 2, H, W)
    # grid_sample, bilinear, pixel centres (align_corners False), border clamped, written out
    warped = torch.empty(N, K, 3, H, W)
    for n in range(N):
        for j in range(K):
            for yy in range(H):
                for xx in range(W):
                    px = ((float(moved[n, j, 0, yy, xx]) + 1) * W - 1) / 2
                    py = ((float(moved[n, j, 1, yy, xx]) + 1) * H - 1) / 2
                    px, py = min(max(px, 0.0), W - 1.0), min(max(py, 0.0), H - 1.0)
                    x0, y0 = min(int(math.floor(px)), W - 2), min(int(math.floor(py)), H - 2)
                    fx, fy = px - x0, py - y0
                    r = ref[n]
                    warped[n, j, :, yy, xx] = ((1 - fx) * (1 - fy) * r[:, y0, x0] + fx * (1 - fy) * r[:, y0, x0 + 1]
                                               + (1 - fx) * fy * r[:, y0 + 1, x0] + fx * fy * r[:, y0 + 1, x0 + 1])
    cands = [warped[:, j] for j in range(K)] + [x["previous"], x["first"], x["last_observed"],
                                                torch.sigmoid(x["raw"][:, :3].float())]
    frame = sum(masks[:, m, None] * c for m, c in enumerate(cands))
    w = masks[:, : K + 1]
    carried = [moved[:, j] for j in range(K)] + [coords]
    coords_t = sum(w[:, m, None] * c for m, c in enumerate(carried)) / w.sum(1)[:, None]
    return frame, masks, coords_t


def test_cdna_coordinate_mode_by_hand():
    """Kernels move a coordinate map (here partly past the border), the moved maps sample ref
    bilinearly, and the new coordinates are the kernel and previous masks' weighted mean."""
    K, k = 2, 3
    head = random_head(K, k)
    x = head_inputs(K, seed=10)
    g = gen(11)
    ref = torch.rand(2, 3, 6, 7, generator=g)
    coords = (tf.identity_coords(2, 6, 7, "cpu") * 1.2 + 0.3 * torch.randn(2, 2, 6, 7, generator=g)).double()
    with torch.no_grad(), warnings.catch_warnings():
        # no warning: grid_sample warns when align_corners is left to its default
        warnings.simplefilter("error")
        frame, masks, coords_t = head.forward_coords(x["g"], x["raw"], x["previous"], x["first"],
                                                     x["last_observed"], ref, coords)
        want = coords_by_hand(head, x, ref, coords.float())
    assert frame.dtype == coords_t.dtype == torch.float32
    for got, w in zip((frame, masks, coords_t), want):
        torch.testing.assert_close(got, w)
    # the previous frame's coordinates are carried where its mask wins, a moved map where a kernel's does
    raw = x["raw"].clone()
    raw[:, 3 + K] += 100.0
    with torch.no_grad():
        torch.testing.assert_close(head.forward_coords(x["g"], raw, x["previous"], x["first"], x["last_observed"],
                                                       ref, coords)[2], coords.float())


def test_cdna_coordinate_mode_with_no_weight_on_moved_pixels():
    """Where the masks put (almost) nothing on the moved and previous candidates, the weighted
    mean of the coordinates is guarded by a tiny floor, not blown up, and the frame is the rest."""
    K = 2
    head = random_head(K, 3)
    x = head_inputs(K, seed=12)
    raw = x["raw"].clone()
    raw[:, 3 + K + 3] += 40.0  # the generated image's mask: the others get ~e^-40
    coords = tf.identity_coords(2, 6, 7, "cpu")
    with torch.no_grad():
        frame, masks, coords_t = head.forward_coords(x["g"], raw, x["previous"], x["first"], x["last_observed"],
                                                     x["previous"], coords)
        _, _, want = coords_by_hand(head, {**x, "raw": raw}, x["previous"], coords)
    assert masks[:, : K + 1].sum(1).max() < 1e-9  # far below the 1e-6 floor
    w = masks[:, : K + 1]
    floor = (w[:, :, None] * torch.cat([kernels_by_hand(coords, head.kernels(x["g"])), coords[:, None]], 1)).sum(1) / 1e-6
    torch.testing.assert_close(coords_t, floor)
    assert coords_t.abs().max() < 1e-6  # and not the (unguarded) mean of the coordinates
    assert (want - coords_t).abs().max() > 0.1
    torch.testing.assert_close(frame, torch.sigmoid(raw[:, :3].float()))


def test_cdna_runs_in_fp32_under_bf16_autocast():
    """The kernels and the composite stay fp32 (bf16 would lose about 1/255 per pixel)."""
    K, k = 2, 3
    head = random_head(K, k)
    x = head_inputs(K, seed=13)
    with torch.no_grad():
        plain = head(**x)[0]
        coords = tf.identity_coords(2, 6, 7, "cpu") * 0.9
        plain_c = head.forward_coords(**x, ref=x["first"], coords=coords)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = head(**x)[0]
            auto_c = head.forward_coords(**x, ref=x["first"], coords=coords)
    torch.testing.assert_close(auto, plain, rtol=0, atol=1e-6)
    for a, b in zip(auto_c, plain_c):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_identity_coords_are_the_pixel_centres():
    with warnings.catch_warnings():
        # torch.meshgrid warns without an explicit indexing, whose default is announced to change
        # (a warning torch gives once per process unless told to warn always)
        warnings.simplefilter("error")
        torch.set_warn_always(True)
        try:
            coords = tf.identity_coords(3, 4, 5, "cpu")
        finally:
            torch.set_warn_always(False)
    assert coords.shape == (3, 2, 4, 5) and coords.dtype == torch.float32
    for i in range(4):
        for j in range(5):
            torch.testing.assert_close(coords[:, 0, i, j], torch.full((3,), (2 * j + 1) / 5 - 1))  # x
            torch.testing.assert_close(coords[:, 1, i, j], torch.full((3,), (2 * i + 1) / 4 - 1))  # y
    assert tf.identity_coords(1, 4, 5, "meta").device.type == "meta"
    assert tf.identity_coords(1, 4, 5, "cpu", torch.float64).dtype == torch.float64


# -- models/svg.py ----------------------------------------------------------------------
# The reference below writes the model's equations out step by step (docs in svg.py's
# module docstring) from its sub-modules (codec, LSTMs, heads), so a change to how svg.py
# wires them (which frame, which step, which state, which level) shows as a difference.

from vidpred.config import ModelConfig  # noqa: E402
from vidpred.errors import ConfigError  # noqa: E402
from vidpred.models.codecs import CondScaleShift  # noqa: E402
from vidpred.models import svg as svg_mod  # noqa: E402

TINY = dict(width=2, g_dim=6, z_dim=3, rnn_size=5, cond_embed=4)
CDNA = dict(decoder="cdna", kernels=2, kernel_size=3)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**TINY, **kw})


def svg_batch(B=2, T=5, seed=0):
    g = gen(seed)
    return torch.rand(B, T, 3, 64, 64, generator=g), torch.randn(B, T, 7, generator=g)


def model_with_stats(cfg, seed=0):
    torch.manual_seed(seed)
    model = svg_mod.SVG(cfg)
    g = gen(seed + 100)
    mean, std = torch.randn(cfg.cond_dim, generator=g), 0.5 + torch.rand(cfg.cond_dim, generator=g)
    model.set_condition_stats(mean, std)
    with torch.no_grad():  # parts that start as the identity, made to matter
        for m in model.modules():
            if isinstance(m, CondScaleShift):
                m.scale.weight.normal_(std=0.5, generator=g)
                m.shift.weight.normal_(std=0.5, generator=g)
        if model.transform is not None:
            model.transform.kernel_logits.weight.normal_(std=0.5, generator=g)
    return model


def conditions_by_hand(model, conds, n_past):
    """Per step t = 1..T-1: the step embedding e_t's input, and for each frame j its own
    condition (the encoder's, cond_conv=both), and the 2 positions of the pose maps of step t."""
    cfg = model.cfg
    mean, std = model.cond_mean, model.cond_std
    B, T, _ = conds.shape
    norm = (conds - mean) / std
    if cfg.condition == "lab":
        step = [torch.cat([norm[:, t - 1], norm[:, t]], -1) for t in range(1, T)]
        frame = [norm[:, j] for j in range(T)]
        pose = [torch.stack([conds[:, t - 1, 4:], conds[:, t, 4:]], 1) for t in range(1, T)]
        return step, frame, pose
    lag = cfg.action_lag

    def position(f, o):  # recorded if f < o, else p_o + sum_{k=o+1..f} a_{k-lag}[:3]
        if f < o:
            return conds[:, max(f, 0), 4:]
        p = conds[:, o, 4:].clone()
        for k in range(o + 1, f + 1):
            p = p + conds[:, k - lag, :3]
        return p

    def causal(f, o):
        act = (conds[:, f - lag, :4] - mean[:4]) / std[:4] if f - lag >= 0 else torch.zeros(B, 4)
        p0 = (position(f - 1, o) - mean[4:]) / std[4:]
        p1 = (position(f, o) - mean[4:]) / std[4:]
        return torch.cat([act, p0, p1], -1)

    step = [causal(t, min(t - 1, n_past - 1)) for t in range(1, T)]
    frame = [causal(j, min(j, n_past - 1)) for j in range(T)]
    pose = [torch.stack([position(t - 1, min(t - 1, n_past - 1)), position(t, min(t - 1, n_past - 1))], 1)
            for t in range(1, T)]
    return step, frame, pose


def align_by_hand(model, skips, g):
    N = g.shape[0]
    flow = torch.tanh(linear_by_hand(model.flow, g)).view(N, 2, 8, 8)
    out = []
    for s in skips:
        H, W = s.shape[-2:]
        f = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
        xs = torch.tensor([(2 * j + 1) / W - 1 for j in range(W)])
        ys = torch.tensor([(2 * i + 1) / H - 1 for i in range(H)])
        base = torch.stack([xs[None, :].expand(H, W), ys[:, None].expand(H, W)], -1)
        out.append(F.grid_sample(s, base + f.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                                 align_corners=False))
    return out


def rollout_by_hand(model, frames, conds, n_past, use_posterior, teacher_forcing, noise):
    cfg = model.cfg
    B, T = conds.shape[:2]
    L, Z = cfg.levels, cfg.z_dim
    step_in, frame_in, pose_in = conditions_by_hand(model, conds, n_past)
    e = [None if model.step_cond is None else linear_by_hand(model.step_cond, s) for s in step_in]
    fc = [None if model.frame_cond is None else linear_by_hand(model.frame_cond, f) for f in frame_in]
    enc = lambda x, j: model.encoder(x, fc[j])  # noqa: E731
    n_known = T if use_posterior else n_past
    post_state, prior_state, pred_state = [None] * L, [None] * L, None
    preds, kls = [], []
    ident = tf.identity_coords(B, 64, 64, "cpu")
    ref = coords = last_seen = None
    for t in range(1, T):
        if t - 1 < n_past or (teacher_forcing and t - 1 < n_known):
            x_prev, ref, coords = frames[:, t - 1], frames[:, t - 1], ident
            if t - 1 < n_past:
                last_seen = x_prev
        else:
            x_prev = preds[-1]
        h_prev, skips_prev = enc(x_prev, t - 1)
        skips = skips_prev if cfg.skip_frame == "previous" else enc(frames[:, min(t - 1, n_past - 1)],
                                                                    min(t - 1, n_past - 1))[1]
        posterior_now = use_posterior or t < n_past
        h_tgt = enc(frames[:, t], t)[0] if posterior_now else None
        zs, kl_t, above = [], [], []
        for lv in range(L):
            if model.prior is not None:
                mu_p, lv_p, prior_state[lv] = model.prior[lv](torch.cat([h_prev] + above, -1)[:, None],
                                                              prior_state[lv])
                mu_p, lv_p = mu_p[:, 0], lv_p[:, 0]
            else:
                mu_p = lv_p = torch.zeros(B, Z)
            eps = noise[:, t - 1, lv * Z:(lv + 1) * Z]
            if posterior_now:
                mu_q, lv_q, post_state[lv] = model.posterior[lv](torch.cat([h_tgt] + above, -1)[:, None],
                                                                 post_state[lv])
                mu_q, lv_q = mu_q[:, 0], lv_q[:, 0]
                z = mu_q + torch.exp(lv_q / 2) * eps
                kl = kl_divergence(Normal(mu_q, (lv_q / 2).exp()), Normal(mu_p, (lv_p / 2).exp())).sum(-1)
            else:
                z = mu_p + torch.exp(lv_p / 2) * eps
                kl = torch.zeros(B)
            zs.append(z)
            kl_t.append(kl if use_posterior else torch.zeros(B))
            above = [z]
        inp = torch.cat([h_prev, zs[0]] + ([] if e[t - 1] is None else [e[t - 1]]), -1)[:, None]
        g, pred_state = model.predictor(inp, pred_state)
        g = g[:, 0]
        if model.flow is not None:
            skips = align_by_hand(model, skips, g)
        inject = [linear_by_hand(model.inject[lv], zs[lv + 1])[:, :, None, None] for lv in range(L - 1)]
        out_shift = None
        if model.pose is not None:
            maps, out_shift = model.pose(pose_in[t - 1])
            inject = [m + (inject[i] if i < len(inject) else 0) for i, m in enumerate(maps)]
        x = model.decoder(g, skips, e[t - 1] if cfg.cond_conv != "none" else None, inject)
        if out_shift is not None:
            x = x + out_shift
        if model.transform is not None:
            if cfg.coords:
                x, _, coords = model.transform.forward_coords(g, x, x_prev, frames[:, 0], last_seen, ref, coords)
            else:
                x, _ = model.transform(g, x, x_prev, frames[:, 0], last_seen)
        preds.append(x)
        kls.append(torch.stack(kl_t, -1))
    return torch.stack(preds, 1), torch.stack(kls, 1)


SVG_CONFIGS = {
    "pixel": dict(),
    "levels-align-fixed": dict(levels=3, align=True, prior="fixed", cond_conv="decoder", skip_frame="previous",
                               predictor_layers=1, posterior_layers=2, prior_layers=2),
    "cdna-causal-both": dict(CDNA, condition="causal", action_lag=1, cond_conv="both"),
    "coords-pose": dict(CDNA, coords=True, skip_frame="previous", condition="causal", action_lag=0, pose_map=True,
                        levels=2),
    "pose-pixel-vgg": dict(codec="vgg64", pose_map=True, cond_embed=0, levels=2),
}
MODES = {"teacher-forced": (True, True), "posterior-free": (True, False), "sampling": (False, False)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SVG_CONFIGS)
def test_rollout_by_hand(name, mode):
    """The rollout (both paths, train mode: batch norm per step) against the equations written
    out step by step, with non-trivial condition statistics and n_past = 2 of T = 5."""
    use_posterior, forced = MODES[mode]
    cfg = tiny(**SVG_CONFIGS[name])
    model = model_with_stats(cfg)
    if model.flow is not None:  # a flow far from its identity start, past the border in places
        with torch.no_grad():
            model.flow.weight.normal_(generator=gen(8))
    frames, conds = svg_batch()
    noise = torch.randn(2, 4, cfg.noise_dim, generator=gen(7))
    with torch.no_grad():
        out = model(frames, conds, 2, use_posterior=use_posterior, teacher_forcing=forced, noise=noise)
        pred, kl = rollout_by_hand(model, frames, conds, 2, use_posterior, forced, noise)
    assert out.pred.shape == (2, 4, 3, 64, 64) and out.kl.shape == (2, 4, cfg.levels)
    torch.testing.assert_close(out.pred, pred, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.kl, kl, rtol=1e-4, atol=1e-5)
    if use_posterior:
        assert (kl > 0).all()
    if forced and use_posterior:  # the step-by-step path with teacher forcing (the fast path's twin)
        with torch.no_grad():
            step, frame, pose = model.embed_conditions(conds, 2)
            out = svg_mod._rollout_stepwise(model, frames, 2, noise, step, frame, pose, True, True)
        torch.testing.assert_close(out.pred, pred, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.kl, kl, rtol=1e-4, atol=1e-5)


def test_svg_modules_have_the_documented_sizes():
    G, Z, E, R = 6, 3, 4, 5
    m = svg_mod.SVG(tiny(levels=3, prior_layers=2, posterior_layers=3, predictor_layers=1, cond_conv="both"))
    assert m.transform is None and m.pose is None and m.flow is None
    assert m.step_cond.in_features == 14 and m.step_cond.out_features == E  # (c_{t-1}, c_t)
    assert m.frame_cond.in_features == 7 and m.frame_cond.out_features == E
    assert [(p.embed.in_features, p.lstm.hidden_size, p.mu.out_features, p.lstm.num_layers) for p in m.posterior] \
        == [(G, R, Z, 3), (G + Z, R, Z, 3), (G + Z, R, Z, 3)]
    assert [(p.embed.in_features, p.lstm.hidden_size, p.mu.out_features, p.lstm.num_layers) for p in m.prior] \
        == [(G, R, Z, 2), (G + Z, R, Z, 2), (G + Z, R, Z, 2)]
    pr = m.predictor
    assert (pr.embed.in_features, pr.lstm.hidden_size, pr.out.out_features, pr.lstm.num_layers) == (G + Z + E, R, G, 1)
    assert [(i.in_features, i.out_features) for i in m.inject] == [(Z, 16), (Z, 8)]  # width 2: stages 16, 8, 4, 2
    assert m.encoder.out.cond is not None and m.decoder.inp.cond is not None
    torch.testing.assert_close(m.cond_mean, torch.zeros(7))
    torch.testing.assert_close(m.cond_std, torch.ones(7))
    assert [n for n, _ in m.named_buffers() if n.startswith("cond")] == ["cond_mean", "cond_std"]

    causal = svg_mod.SVG(tiny(condition="causal", cond_conv="decoder", prior="fixed"))
    assert causal.step_cond.in_features == 10 and causal.frame_cond is None and causal.prior is None
    assert causal.encoder.out.cond is None and causal.decoder.inp.cond is not None
    both = svg_mod.SVG(tiny(condition="causal", cond_conv="both"))
    assert both.frame_cond.in_features == 10  # a frame's causal condition: action and two positions
    plain = svg_mod.build_model(tiny(cond_embed=0))
    assert isinstance(plain, svg_mod.SVG) and plain.step_cond is None and plain.predictor.embed.in_features == G + Z
    assert plain.decoder.inp.cond is None and plain.encoder.out.cond is None


def test_svg_decoder_heads_and_extras():
    frames, _ = svg_batch(B=2, T=1)
    pixel = svg_mod.SVG(tiny())
    h, skips = pixel.encoder(frames[:, 0])
    out = pixel.decoder(h, skips)
    assert out.shape == (2, 3, 64, 64) and out.min() >= 0 and out.max() <= 1  # sigmoid: a frame
    cdna = svg_mod.SVG(tiny(**CDNA, pose_map=True, align=True, levels=2))
    assert cdna.transform.n_kernels == 2 and cdna.transform.kernel_size == 3
    raw = cdna.decoder(h, cdna.encoder(frames[:, 0])[1])
    assert raw.shape == (2, 3 + 2 + 4, 64, 64) and raw.min() < 0  # raw logits, no sigmoid
    assert cdna.pose.stage_sizes == [4, 8, 16, 32] and [s.out_channels for s in cdna.pose.stages] == [16, 8, 4, 2]
    assert cdna.pose.out.out_channels == 9
    assert pixel.pose is None and svg_mod.SVG(tiny(pose_map=True)).pose.out is None
    assert cdna.flow.out_features == 2 * 8 * 8
    assert cdna.flow.weight.abs().max() == 0 and cdna.flow.bias.abs().max() == 0  # the identity warp


@pytest.mark.parametrize("codec,fmt,want", [("vgg64", "auto", True), ("dcgan64", "auto", False),
                                            ("dcgan64", "channels_last", True), ("vgg64", "contiguous", False)])
def test_svg_memory_format(codec, fmt, want):
    m = svg_mod.SVG(tiny(codec=codec, memory_format=fmt))
    assert m.channels_last == want
    conv = m.encoder.stages[1][0].conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == want


def test_svg_levels_are_limited():
    svg_mod.SVG(tiny(levels=5))
    with pytest.raises(ConfigError, match="model.levels must be <= 5, got 6"):
        svg_mod.SVG(tiny(levels=6))


def test_condition_stats_are_stored_as_float32():
    m = svg_mod.SVG(tiny())
    m.set_condition_stats([1, 2, 3, 4, 5, 6, 7], torch.arange(1, 8, dtype=torch.float64) / 2)
    torch.testing.assert_close(m.cond_mean, torch.arange(1, 8, dtype=torch.float32))
    torch.testing.assert_close(m.cond_std, torch.arange(1, 8, dtype=torch.float32) / 2)


def test_rollout_draws_its_noise_from_the_generator_and_checks_the_frames():
    cfg = tiny(levels=2)
    model = model_with_stats(cfg).eval()
    frames, conds = svg_batch(T=5)
    with torch.no_grad():
        drawn = svg_mod.rollout(model, frames, conds, 2, generator=gen(3))
        given = svg_mod.rollout(model, frames, conds, 2, noise=torch.randn(2, 4, 6, generator=gen(3)))
        torch.testing.assert_close(drawn.pred, given.pred)
        torch.testing.assert_close(drawn.kl, given.kl)
        # sampling reads only the n_past observed frames; a posterior rollout needs all T
        svg_mod.rollout(model, frames[:, :2], conds, 2, use_posterior=False, generator=gen(3))
        with pytest.raises(ValueError, match="rollout needs 5 frames, got 4"):
            svg_mod.rollout(model, frames[:, :4], conds, 2)
        with pytest.raises(ValueError, match="rollout needs 3 frames, got 2"):
            svg_mod.rollout(model, frames[:, :2], conds, 3, use_posterior=False)


def test_last_observed_index():
    assert svg_mod._last_observed_index(6, 2, "cpu").tolist() == [0, 1, 1, 1, 1]
    assert svg_mod._last_observed_index(4, 4, "cpu").tolist() == [0, 1, 2]


def test_aligner_warps_bf16_skips_in_their_own_dtype():
    """Under bf16 autocast the skips arrive in bf16: the sampling grid is built in their dtype
    (grid_sample takes no mixed dtypes) and the warp is the float32 one, to bf16 precision."""
    model = model_with_stats(tiny(levels=2, align=True))
    with torch.no_grad():
        model.flow.weight.normal_(generator=gen(8))
        g = torch.randn(2, 6, generator=gen(9))
        skips = [torch.rand(2, 3, 8, 8, generator=gen(10)), torch.rand(2, 5, 4, 6, generator=gen(11))]
        with warnings.catch_warnings():  # grid_sample warns when align_corners is left to its default
            warnings.simplefilter("error")
            got = model._align([s.bfloat16() for s in skips], g)
        want = align_by_hand(model, [s.bfloat16().float() for s in skips], g)
    for a, b in zip(got, want):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b, rtol=0.02, atol=0.02)


def test_rollout_makes_every_tensor_on_the_frames_device():
    """On the meta device (shapes only), a tensor made on the default device instead of the
    frames' one fails to combine with them: the CPU-only stand-in for a CUDA run. (The
    transformation decoder's autocast block has no meta device type; the first meta call in
    a process also loads torch's meta kernels, about a second once.)"""
    cfg = tiny(levels=2, align=True, pose_map=True, condition="causal", cond_conv="both", skip_frame="previous")
    model = svg_mod.SVG(cfg).to("meta")
    frames, conds = torch.empty(2, 4, 3, 64, 64, device="meta"), torch.empty(2, 4, 7, device="meta")
    for use_posterior, forced in ((True, True), (False, False)):
        out = svg_mod.rollout(model, frames, conds, 2, use_posterior=use_posterior, teacher_forcing=forced)
        assert out.pred.device.type == out.kl.device.type == "meta"
        assert out.pred.shape == (2, 3, 3, 64, 64) and out.kl.shape == (2, 3, 2)
    assert svg_mod._last_observed_index(5, 2, "meta").device.type == "meta"


def test_rollout_defaults_are_teacher_forced_posterior_and_noise_takes_the_frames_dtype():
    cdna = model_with_stats(tiny(**CDNA)).eval()  # moves x_{t-1}: a free run's own frames show
    frames, conds = svg_batch(T=5)
    noise = torch.randn(2, 4, 3, generator=gen(3))
    with torch.no_grad():
        default = svg_mod.rollout(cdna, frames, conds, 2, noise=noise).pred
        forced = svg_mod.rollout(cdna, frames, conds, 2, use_posterior=True, teacher_forcing=True, noise=noise).pred
        free = svg_mod.rollout(cdna, frames, conds, 2, use_posterior=True, teacher_forcing=False, noise=noise).pred
        torch.testing.assert_close(default, forced)
        assert (default - free).abs().max() > 1e-3
        # float64 frames: the noise is drawn in float64 (a float32 draw is another stream)
        model = model_with_stats(tiny()).eval().double()
        drawn = svg_mod.rollout(model, frames.double(), conds.double(), 2, generator=gen(4)).pred
        given = svg_mod.rollout(model, frames.double(), conds.double(), 2,
                                noise=torch.randn(2, 4, 3, generator=gen(4), dtype=torch.float64)).pred
    assert drawn.dtype == torch.float64
    torch.testing.assert_close(drawn, given)


def test_sampling_with_a_one_dimensional_latent():
    """z_dim = 1: the (zero) KL of a prior sample has one entry per step and level."""
    model = model_with_stats(tiny(z_dim=1, levels=2)).eval()
    frames, conds = svg_batch(T=4)
    with torch.no_grad():
        out = svg_mod.rollout(model, frames, conds, 2, use_posterior=False, noise=torch.randn(2, 3, 2, generator=gen(5)))
    assert out.pred.shape == (2, 3, 3, 64, 64)
    torch.testing.assert_close(out.kl, torch.zeros(2, 3, 2))


@pytest.mark.parametrize("norm,kind", [("batch", "StepBatchNorm2d"), ("group", "GroupNorm")])
def test_svg_codec_has_the_configured_normalisation(norm, kind):
    m = svg_mod.SVG(tiny(norm=norm))
    for part in (m.encoder, m.decoder):
        assert sum(type(x).__name__ == kind for x in part.modules()) >= 3


def test_a_one_number_condition_embedding_is_an_embedding():
    m = svg_mod.SVG(tiny(cond_embed=1))
    assert m.step_cond.out_features == 1 and m.predictor.embed.in_features == 6 + 3 + 1


def test_decode_of_the_pixel_decoder_returns_no_coordinates():
    m = model_with_stats(tiny()).eval()
    frames, conds = svg_batch(T=3)
    with torch.no_grad():
        h, skips = m.encode(frames[:, :2])
        step, _, _ = m.embed_conditions(conds, 2)
        x, coords = m.decode(h, skips, torch.zeros(2, 2, 3), step)
    assert x.shape == (2, 2, 3, 64, 64) and coords is None
