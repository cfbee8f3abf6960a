"""Tests for vaekit.plots: exact grid layout, PNG round-trips and input validation."""

from statistics import NormalDist

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    # signature + IHDR + IEND alone take 57 bytes; anything with pixel data is longer
    assert data[:8] == PNG_SIGNATURE and len(data) > 57 and b"IDAT" in data


def _read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# ----------------------------------------------------------------------------- image_grid


@pytest.mark.parametrize(
    "n, nrow, padding, expected",
    [
        (1, None, 1, (1, 4, 5)),
        (4, None, 1, (1, 9, 11)),  # 2x2
        (5, None, 2, (1, 4 * 2 + 2, 5 * 3 + 2 * 2)),  # ceil(sqrt 5)=3 per row, 2 rows
        (10, 4, 0, (1, 4 * 3, 5 * 4)),  # 3 rows of 4
        (3, 8, 1, (1, 4, 5 * 3 + 2)),  # nrow > N: one row of N
        (9, 1, 3, (1, 9 * 4 + 8 * 3, 5)),  # one column
    ],
)
def test_image_grid_shape(n, nrow, padding, expected):
    images = torch.rand(n, 1, 4, 5)
    assert tuple(plots.image_grid(images, nrow=nrow, padding=padding).shape) == expected


def test_image_grid_tiles_equal_inputs_and_padding_is_white():
    n, c, h, w, nrow, pad = 7, 3, 4, 5, 3, 2
    images = torch.rand(n, c, h, w) * 0.5  # < 1 so any white pixel must be padding
    grid = plots.image_grid(images, nrow=nrow, padding=pad)
    assert grid.shape == (c, 3 * h + 2 * pad, 3 * w + 2 * pad)
    is_tile = torch.zeros(grid.shape[1:], dtype=torch.bool)
    for k in range(9):
        r, col = divmod(k, nrow)
        y, x = r * (h + pad), col * (w + pad)
        tile = grid[:, y:y + h, x:x + w]
        if k < n:
            assert torch.equal(tile, images[k])
            is_tile[y:y + h, x:x + w] = True
        else:  # missing trailing tiles are blank (white)
            assert torch.all(tile == 1.0)
    assert torch.all(grid[:, ~is_tile] == 1.0)


def test_image_grid_accepts_three_dim_input():
    images = torch.rand(4, 6, 7)
    grid = plots.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (1, 13, 15)
    assert torch.equal(grid[0, 7:13, 8:15], images[3])


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.rand(2, 3, 4, 5, 6), "images"),  # ndim 5
        (torch.rand(4, 2, 5, 5), "images"),  # C = 2
        (torch.rand(5), "images"),
        (torch.zeros(0, 1, 4, 4), "images"),
        (torch.full((2, 1, 3, 3), float("nan")), "images.*finite"),
        (torch.full((2, 1, 3, 3), 1.5), r"images.*\[0, 1\]"),
        (torch.full((2, 1, 3, 3), -0.1), r"images.*\[0, 1\]"),
    ],
)
def test_image_grid_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        plots.image_grid(images)


def test_image_grid_rejects_bad_nrow_and_padding():
    with pytest.raises(ValueError, match="nrow"):
        plots.image_grid(torch.rand(4, 1, 2, 2), nrow=0)
    with pytest.raises(ValueError, match="padding"):
        plots.image_grid(torch.rand(4, 1, 2, 2), padding=-1)


# ----------------------------------------------------------------------------- save_image_grid


def test_save_image_grid_checkerboard_roundtrip(tmp_path):
    board = ((torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2).float()  # 4x4 0/1
    images = torch.stack([board, 1 - board])  # [2, 4, 4]
    path = plots.save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=2, padding=1, scale=3)
    assert path == tmp_path / "sub" / "grid.png"
    _assert_png(path)
    pixels = _read_png(path)
    assert pixels.shape == (4 * 3, 9 * 3)  # grayscale, 1 row x (4 + 1 + 4) columns, scaled 3x
    expected = plots.image_grid(images, nrow=2, padding=1)[0]
    expected = expected.repeat_interleave(3, 0).repeat_interleave(3, 1).numpy() * 255
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))
    assert pixels[0, 0] == 0 and pixels[0, 3] == 255  # first 3x3 block black, next one white


def test_save_image_grid_rgb_and_clamping(tmp_path):
    images = torch.zeros(1, 3, 2, 2)
    images[0, 0] = 1.7  # red overshoots: clamped to 1
    images[0, 2] = -0.3  # blue undershoots: clamped to 0
    pixels = _read_png(plots.save_image_grid(images, tmp_path / "rgb.png"))
    assert pixels.shape == (2, 2, 3)
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:] == 0).all()


def test_save_image_grid_rejects_nonfinite_and_bad_scale(tmp_path):
    bad = torch.rand(2, 1, 3, 3)
    bad[1, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="images.*finite"):
        plots.save_image_grid(bad, tmp_path / "x.png")
    with pytest.raises(ValueError, match="scale"):
        plots.save_image_grid(torch.rand(2, 1, 3, 3), tmp_path / "x.png", scale=0)
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- training curves


RECORDS = [
    {"epoch": 1, "step": 40, "train/elbo": -120.0, "valid/elbo": -121.0, "train/kl": 10.0,
     "lr": 1e-3, "images_per_s": 2e4},
    {"epoch": 2, "step": 80, "train/elbo": -110.0, "lr": 1e-3},  # no valid row this epoch
    {"epoch": 3, "step": 120, "train/elbo": -100.0, "valid/elbo": -103.0, "test/elbo": -104.0,
     "train/kl": 12.0, "note": "text"},
]


def test_curve_groups_by_suffix():
    groups = plots._curve_groups(RECORDS, None)
    bounds = "log p(x) and its bounds"
    assert groups == {bounds: ["train/elbo", "valid/elbo", "test/elbo"], "kl": ["train/kl"]}
    assert plots._curve_groups(RECORDS, ["lr", "train/kl"]) == {"lr": ["lr"], "kl": ["train/kl"]}
    rows = [{"epoch": 1, "test/elbo": -3.0, "test/iwae100": -2.5, "test/log_px": -2.0, "test/kl": 1.0}]
    assert plots._curve_groups(rows, None) == {bounds: ["test/elbo", "test/iwae100", "test/log_px"],
                                               "kl": ["test/kl"]}


def test_plot_training_curves_writes_png(tmp_path):
    path = plots.plot_training_curves(RECORDS, tmp_path / "a" / "b" / "curves.png")
    _assert_png(path)
    _assert_png(plots.plot_training_curves(RECORDS, tmp_path / "lr.png", keys=["lr"], x_key="step"))


@pytest.mark.parametrize(
    "records, keys, match",
    [
        ([], None, "records"),
        ([{"epoch": 1, "lr": 1e-3, "note": "x"}], None, "plottable"),
        ([{"epoch": 1, "train/note": "text"}], None, "plottable"),
        (RECORDS, ["valid/typo"], "valid/typo"),
        ([1, 2], None, "records"),
    ],
)
def test_plot_training_curves_rejects_bad_input(tmp_path, records, keys, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_training_curves(records, tmp_path / "c.png", keys=keys)


# ----------------------------------------------------------------------------- latent manifold


def test_plot_latent_manifold_calls_decode_once_on_quantile_grid(tmp_path):
    g, calls = 3, []

    def decode(z):
        calls.append(z.clone())
        # 1x1 image whose brightness encodes z2, to check orientation in the PNG.
        return ((z[:, 1:] + 2.0) / 4.0).clamp(0, 1)

    path = plots.plot_latent_manifold(decode, (1, 1, 1), tmp_path / "m.png", grid_size=g, scale=2)
    assert len(calls) == 1 and calls[0].shape == (g * g, 2)
    q = [NormalDist().inv_cdf(p) for p in (0.05, 0.5, 0.95)]
    expected = torch.tensor([[q[j], q[g - 1 - i]] for i in range(g) for j in range(g)])
    torch.testing.assert_close(calls[0], expected, atol=1e-5, rtol=0)
    pixels = _read_png(path).astype(int)
    assert pixels.shape == (g * 2, g * 2)
    rows = pixels[::2, 0]
    assert rows[0] > rows[1] > rows[2]  # highest z2 on top
    assert (pixels == pixels[:, :1]).all()  # z1 does not change brightness


def test_plot_latent_manifold_flat_decoder_output(tmp_path):
    decode = lambda z: torch.sigmoid(z.sum(1, keepdim=True) * torch.ones(1, 3 * 4 * 5))
    path = plots.plot_latent_manifold(decode, (3, 4, 5), tmp_path / "m.png", grid_size=4)
    _assert_png(path)
    assert _read_png(path).shape == (16, 20, 3)


@pytest.mark.parametrize(
    "decode, image_shape, match",
    [
        (lambda z: torch.rand(z.shape[0], 10), (1, 2, 2), r"decode output.*\[9, 4\]"),
        (lambda z: torch.rand(z.shape[0] - 1, 4), (1, 2, 2), "decode output"),
        (lambda z: z[:, :1] * 10, (1, 1, 1), r"decode output.*\[0, 1\]"),
        (lambda z: torch.full((z.shape[0], 1), float("nan")), (1, 1, 1), "decode output.*finite"),
        (lambda z: torch.rand(z.shape[0], 4), (2, 2), "image_shape"),
        (lambda z: torch.rand(z.shape[0], 4), (2, 1, 2), "image_shape"),
    ],
)
def test_plot_latent_manifold_rejects_bad_decoder(tmp_path, decode, image_shape, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_latent_manifold(decode, image_shape, tmp_path / "m.png", grid_size=3)


# ----------------------------------------------------------------------------- latent scatter


def test_plot_latent_scatter_writes_png(tmp_path):
    z = torch.randn(200, 2)
    _assert_png(plots.plot_latent_scatter(z, torch.randint(0, 10, (200,)), tmp_path / "s.png", title="t"))
    _assert_png(plots.plot_latent_scatter(z, None, tmp_path / "t" / "s.png"))


@pytest.mark.parametrize(
    "z, labels, match",
    [
        (torch.randn(10, 3), None, r"z.*\(10, 3\)"),
        (torch.randn(10), None, "z"),
        (torch.tensor([[0.0, float("nan")]]), None, "z.*finite"),
        (torch.randn(10, 2), torch.zeros(9, dtype=torch.long), "labels"),
        (torch.randn(10, 2), torch.rand(10), "labels.*integer"),
    ],
)
def test_plot_latent_scatter_rejects_bad_input(tmp_path, z, labels, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_latent_scatter(z, labels, tmp_path / "s.png")


# ----------------------------------------------------------------------------- interpolation


def test_plot_interpolation_layout(tmp_path):
    images = torch.rand(2, 5, 1, 3, 4)
    pixels = _read_png(plots.plot_interpolation(images, tmp_path / "i.png", scale=2))
    assert pixels.shape == (2 * (2 * 3 + 1), 2 * (5 * 4 + 4))  # one row per pair
    flat = plots.plot_interpolation(images.reshape(2, 5, 12), tmp_path / "j.png", scale=2,
                                    image_shape=(1, 3, 4))
    np.testing.assert_array_equal(_read_png(flat), pixels)


@pytest.mark.parametrize(
    "images, image_shape, match",
    [
        (torch.rand(2, 5, 12), None, "image_shape"),
        (torch.rand(2, 5, 12), (1, 3, 5), "images.*D"),
        (torch.rand(5, 1, 3, 4), None, "images"),
        (torch.full((1, 2, 1, 2, 2), float("nan")), None, "images.*finite"),
    ],
)
def test_plot_interpolation_rejects_bad_input(tmp_path, images, image_shape, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_interpolation(images, tmp_path / "i.png", image_shape=image_shape)
