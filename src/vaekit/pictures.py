"""Pictures of a trained run: samples, reconstructions, interpolations, latent space, curves.

Each function takes a run's model and data, writes PNGs under <run>/pictures/ and returns their paths.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import plots
from .runs import Splits


def scale_for(image_shape) -> int:
    """Upscale small images (8x8 digits) so a grid is readable."""
    return max(1, 56 // max(image_shape[1:]))


def _images(x: torch.Tensor, image_shape) -> torch.Tensor:
    return x.detach().cpu().reshape(-1, *image_shape)


@torch.no_grad()
def samples(model, image_shape, path: Path, num_samples: int = 64, seed: int = 0) -> Path:
    """Means of p(x|z), z ~ p(z)."""
    torch.manual_seed(seed)
    return plots.save_image_grid(_images(model.sample(num_samples), image_shape), path, scale=scale_for(image_shape))


@torch.no_grad()
def reconstructions(model, x: torch.Tensor, image_shape, path: Path, num_images: int = 32) -> Path:
    """Rows of test images, each followed by a row of E[x|z] at the posterior mean."""
    x = x[:num_images]
    rec = model.decode_mean(model.encode_mean(x))
    nrow = min(8, x.shape[0])
    rows = [t for i in range(0, x.shape[0], nrow) for t in (x[i:i + nrow], rec[i:i + nrow])]
    labels = ["input", "recon."] * (len(rows) // 2)
    return plots.save_image_grid(_images(torch.cat(rows), image_shape), path, nrow=nrow, scale=scale_for(image_shape),
                                 row_labels=labels)


@torch.no_grad()
def interpolations(model, x: torch.Tensor, image_shape, path: Path, num_pairs: int = 8, num_steps: int = 10) -> Path:
    """Decoded straight lines between the posterior means of pairs of test images."""
    z = model.encode_mean(x[:2 * num_pairs])
    z0, z1 = z[0::2], z[1::2]
    t = torch.linspace(0, 1, num_steps, device=z.device)[None, :, None]  # [1, S, 1]
    path_z = (1 - t) * z0[:, None] + t * z1[:, None]  # [P, S, L]
    images = model.decode_mean(path_z.reshape(-1, z.shape[1])).reshape(z0.shape[0], num_steps, -1)
    return plots.plot_interpolation(images.cpu(), path, scale=scale_for(image_shape), image_shape=tuple(image_shape))


@torch.no_grad()
def latent_space(model, test, path_manifold: Path, path_scatter: Path) -> list[Path]:
    """For a 2-D latent space: the decoded manifold and the test encodings coloured by label."""
    device = next(model.parameters()).device
    # a Gaussian decoder's means may leave [0, 1]: clamp them as the image grids do
    decode = lambda z: model.decode_mean(z.to(device)).clamp(0, 1).cpu()
    z = model.encode_mean(test.x).cpu()
    small = max(test.image_shape[1:]) < 16  # 8x8 digits fill their frame: separate the tiles
    return [plots.plot_latent_manifold(decode, test.image_shape, path_manifold, scale=scale_for(test.image_shape),
                                       padding=int(small)),
            plots.plot_latent_scatter(z, None if test.y is None else test.y.cpu(), path_scatter,
                                      title="test encodings E_q[z|x]")]


@torch.no_grad()
def posterior_contours(model, x: torch.Tensor, path: Path, grid_size: int = 80, width: float = 4.0) -> Path:
    """For a 2-D latent space and test points x [P, D]: log p(x, z) on a grid around each q(z|x) (the
    true posterior up to its constant) beside log q(z|x)."""
    q = model.posterior(x)
    half = width * q.variance.sqrt().max(dim=-1).values.clamp_min(0.05)  # [P]: the widest std, times width
    t = torch.linspace(-1, 1, grid_size, device=x.device)
    z1 = q.mean[:, 0, None] + half[:, None] * t  # [P, G]
    z2 = q.mean[:, 1, None] + half[:, None] * t
    # z [G, G, P, 2]: samples in front, data points behind, as likelihood(z).log_prob(x) expects
    z = torch.stack(torch.broadcast_tensors(z1.T[None, :, :], z2.T[:, None, :]), dim=-1)
    log_joint = model.likelihood(z).log_prob(x) + model.prior().log_prob(z)  # [G, G, P]
    panels = lambda v: v.permute(2, 0, 1).cpu()  # [P, G, G], row = z2, column = z1
    return plots.plot_posterior_contours(z1.cpu(), z2.cpu(), panels(log_joint), panels(q.log_prob(z)), path)


def training_curves(run_dir: Path, path: Path) -> Path:
    from .train import read_rows
    return plots.plot_training_curves(read_rows(run_dir / "metrics.jsonl"), path)


def _latent(run_dir: Path, model, data: Splits) -> list[Path]:
    if model.prior().event_shape != (2,):
        return []  # a manifold and a scatter need a 2-D latent space
    return [*latent_space(model, data.test, run_dir / "pictures/latent_manifold.png",
                          run_dir / "pictures/latent_scatter.png"),
            posterior_contours(model, data.test.x[:4], run_dir / "pictures/posterior_contours.png")]


def _curves(run_dir: Path, model, data: Splits) -> list[Path]:
    if not (run_dir / "metrics.jsonl").is_file():
        return []
    return [training_curves(run_dir, run_dir / "pictures/training_curves.png")]


@torch.no_grad()
def gibbs_chain(model, x: torch.Tensor, image_shape, path: Path, num_chains: int = 8, num_frames: int = 10,
                sweeps_per_frame: int = 100) -> Path:
    """Rows of Gibbs chains: the first frame is a test image (left) or noise, then p(v|h) means every
    sweeps_per_frame sweeps: how the chain mixes. x [N, D]."""
    half = num_chains // 2
    noise = torch.bernoulli(torch.full((num_chains - half, x.shape[1]), 0.5, device=x.device))
    v = torch.cat([x[:half], noise])
    frames = [v]
    for _ in range(num_frames - 1):
        v = model.gibbs(v, sweeps_per_frame)
        frames.append(model.visible_given_hidden(model.hidden_given_visible(v).sample()).mean)
    images = torch.stack(frames, dim=1).cpu()  # [P, S, D]
    return plots.plot_interpolation(images, path, scale=scale_for(image_shape), image_shape=tuple(image_shape))


@torch.no_grad()
def filters(model, image_shape, path: Path, num_filters: int = 100) -> Path:
    """The weights of the first hidden units as images, each scaled to [0, 1]."""
    w = model.weight.T[:num_filters]  # [H, V]
    low, high = w.min(dim=1, keepdim=True).values, w.max(dim=1, keepdim=True).values
    return plots.save_image_grid(_images((w - low) / (high - low).clamp_min(1e-12), image_shape), path,
                                 scale=scale_for(image_shape))


@torch.no_grad()
def prior_interpolations(model, image_shape, path: Path, num_pairs: int = 8, num_steps: int = 10,
                         seed: int = 0) -> Path:
    """Decoded straight lines between pairs of latents drawn from the prior: for generators without
    an encoder. Seeded, on its own stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = model.prior().sample((2 * num_pairs,))
    z0, z1 = z[0::2], z[1::2]
    t = torch.linspace(0, 1, num_steps, device=z.device)[None, :, None]  # [1, S, 1]
    path_z = (1 - t) * z0[:, None] + t * z1[:, None]  # [P, S, L]
    images = model.decode_mean(path_z.reshape(-1, z.shape[1])).reshape(num_pairs, num_steps, -1)
    return plots.plot_interpolation(images.clamp(0, 1).cpu(), path, scale=scale_for(image_shape),
                                    image_shape=tuple(image_shape))


# name -> fn(run_dir, model, data) -> written paths; each family names the ones it draws
PICTURES = {
    "samples": lambda run, m, d: [samples(m, d.test.image_shape, run / "pictures/samples.png")],
    "reconstructions": lambda run, m, d: [reconstructions(m, d.test.x, d.test.image_shape,
                                                          run / "pictures/reconstructions.png")],
    "interpolations": lambda run, m, d: [interpolations(m, d.test.x, d.test.image_shape,
                                                        run / "pictures/interpolations.png")],
    "prior_interpolations": lambda run, m, d: [prior_interpolations(m, d.test.image_shape,
                                                                    run / "pictures/interpolations.png")],
    "latent": _latent,
    "curves": _curves,
    "chain": lambda run, m, d: [gibbs_chain(m, d.test.x, d.test.image_shape, run / "pictures/gibbs_chain.png")],
    "filters": lambda run, m, d: [filters(m, d.test.image_shape, run / "pictures/filters.png")],
}


def pick(*names: str, **renamed: str) -> dict:
    """A family's pictures from PICTURES: pick("samples", "curves", interpolations="prior_interpolations")."""
    return {**{n: PICTURES[n] for n in names}, **{n: PICTURES[source] for n, source in renamed.items()}}


def check(family, which: tuple[str, ...]) -> None:
    """Refuse, saying why, a picture the family does not draw."""
    for name in which:
        if name not in family.pictures:
            why = family.no_pictures.get(name, f"the {family.name!r} family does not draw it")
            raise ValueError(f"{name}: {why}; it draws {', '.join(family.pictures) or 'no pictures'}")


def draw(run_dir: str | Path, model, data: Splits, family, which: tuple[str, ...] | None = None) -> list[Path]:
    """Write the chosen pictures of a run into <run>/pictures/ (default: all its family draws);
    returns their paths. A default picture the data cannot give (a grid of 2 images, a 1-pixel image)
    is skipped with a note: training and evaluation have finished by then, and stay done."""
    check(family, which or ())
    paths = []
    for name in which or family.pictures:
        try:
            paths += family.pictures[name](Path(run_dir), model, data)
        except (ValueError, IndexError, RuntimeError) as e:
            if which:
                raise ValueError(f"picture {name!r}: {e}") from None
            print(f"note: picture {name!r} skipped: {e}", flush=True)
    return paths
