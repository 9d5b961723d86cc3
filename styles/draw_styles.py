"""Draw the two style images the shipped config points at: stained_glass.png and swirl.png.

Why drawn rather than downloaded: the shipped config must work on a fresh machine with no network,
and images we make ourselves carry no licence questions (they are under the project's licence).
Both are built to have rich Gram statistics (many colours, edges and textures at several scales),
which is what the style loss feeds on.

Regenerate them (deterministic: fixed seeds, numpy + Pillow only) with

    python styles/draw_styles.py

which writes into the folder this script lives in.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SIZE_PX = 512


def value_noise(rng: np.random.Generator, size_px: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1], (size_px, size_px): a random `cells` x `cells` grid, upsampled."""
    grid = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    smooth = Image.fromarray(grid).resize((size_px, size_px), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 127.5 - 1.0


# --- stained glass ----------------------------------------------------------------------------

JEWELS = {  # (R, G, B) in 0..255, a few shades per family so neighbouring panes differ
    "blue": [(18, 38, 140), (28, 64, 178), (12, 26, 98), (40, 90, 190)],
    "red": [(160, 18, 36), (192, 30, 52), (120, 10, 30), (200, 60, 40)],
    "gold": [(226, 172, 30), (240, 200, 60), (205, 130, 20)],
    "green": [(18, 122, 58), (36, 150, 80), (10, 90, 60), (20, 120, 110)],
    "purple": [(92, 28, 128), (120, 40, 150)],
}


def voronoi_sites(rng: np.random.Generator, count: int, relax_steps: int) -> np.ndarray:
    """`count` sites (x, y) in pixels, spread by Lloyd relaxation so panes are of similar size."""
    sites = rng.uniform(0, SIZE_PX, (count, 2))
    yy, xx = np.mgrid[0:SIZE_PX:4, 0:SIZE_PX:4]  # a coarse grid is enough to move the sites
    points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    for _ in range(relax_steps):
        nearest = ((points[:, None, :] - sites[None, :, :]) ** 2).sum(-1).argmin(1)
        weight = np.bincount(nearest, minlength=count)
        for axis in (0, 1):
            moved = np.bincount(nearest, points[:, axis], minlength=count)
            sites[:, axis] = np.where(weight > 0, moved / np.maximum(weight, 1), sites[:, axis])
    return sites


def nearest_two(sites: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: index of the nearest site, and the distance in px to the nearest pane edge."""
    label = np.empty((SIZE_PX, SIZE_PX), dtype=np.int64)
    edge_px = np.empty((SIZE_PX, SIZE_PX), dtype=np.float64)
    xs = np.arange(SIZE_PX) + 0.5
    for y in range(0, SIZE_PX, 64):  # in bands of rows to keep the (pixels, sites) array small
        ys = np.arange(y, y + 64) + 0.5
        px = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # (P, 2)
        d2 = ((px[:, None, :] - sites[None, :, :]) ** 2).sum(-1)  # (P, S)
        two = np.argpartition(d2, 1, axis=1)[:, :2]
        rows = np.arange(len(px))
        d2_two = d2[rows[:, None], two]
        swap = d2_two[:, 0] > d2_two[:, 1]
        first = np.where(swap, two[:, 1], two[:, 0])
        second = np.where(swap, two[:, 0], two[:, 1])
        # Distance to the bisector of the two nearest sites, i.e. to the shared Voronoi edge.
        gap = np.linalg.norm(sites[first] - sites[second], axis=1)
        dist = (d2[rows, second] - d2[rows, first]) / (2 * gap)
        label[y : y + 64] = first.reshape(64, SIZE_PX)
        edge_px[y : y + 64] = dist.reshape(64, SIZE_PX)
    return label, edge_px


def pane_family(x: float, y: float, rng: np.random.Generator) -> str:
    """A rose-window design: gold heart, red ring, blue field with green petals; a few strays."""
    dx, dy = x - SIZE_PX / 2, y - SIZE_PX / 2
    radius = np.hypot(dx, dy) / (SIZE_PX / 2)
    petal = np.cos(8 * np.arctan2(dy, dx))
    if rng.random() < 0.1:
        return str(rng.choice(list(JEWELS)))
    if radius < 0.22:
        return "gold"
    if radius < 0.45:
        return "red" if petal < 0.55 else "gold"
    if radius < 0.8:
        return "green" if petal > 0.3 else "blue"
    return "purple" if petal > 0.8 else "blue"


def draw_stained_glass(path: Path) -> None:
    """Voronoi panes in jewel colours, lit unevenly, with textured glass and rounded dark leads."""
    rng = np.random.default_rng(1150)
    sites = voronoi_sites(rng, count=200, relax_steps=3)
    label, edge_px = nearest_two(sites)

    colours = np.array(
        [JEWELS[f][rng.integers(len(JEWELS[f]))] for f in (pane_family(*s, rng) for s in sites)],
        dtype=np.float32,
    )
    # Each pane is brighter towards one side, as if lit through unevenly thick glass.
    tilt = rng.normal(0, 1, (len(sites), 2)) * 0.012
    yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX] + 0.5
    offset = np.stack([xx, yy], axis=-1) - sites[label]  # (H, W, 2) from the pane's site
    shade = rng.uniform(0.85, 1.15, len(sites))[label] + (offset * tilt[label]).sum(-1)
    shade -= 0.25 * np.clip(np.hypot(offset[..., 0], offset[..., 1]) / 40, 0, 1) ** 2
    # Glass texture: cloudy at two scales, plus fine seeds and streaks.
    shade += 0.10 * value_noise(rng, SIZE_PX, 12) + 0.06 * value_noise(rng, SIZE_PX, 48)
    streaks = Image.fromarray(rng.uniform(0, 255, (SIZE_PX, SIZE_PX)).astype(np.uint8))
    streaks = streaks.filter(ImageFilter.BoxBlur(1)).rotate(30, resample=Image.Resampling.BILINEAR)
    shade += 0.05 * (np.asarray(streaks, dtype=np.float32) / 127.5 - 1.0)
    glass = colours[label] * np.clip(shade, 0.35, 1.5)[..., None]

    # Leads: rounded came, darkest at the edge of the glass and with a dull highlight on the ridge.
    border_px = np.minimum.reduce([xx, yy, SIZE_PX - xx, SIZE_PX - yy])
    lead_dist = np.minimum(edge_px, border_px - 2)
    half_width_px = 3.4
    ridge = np.sqrt(np.clip(1 - (lead_dist / half_width_px) ** 2, 0, 1))
    lead = (10 + 36 * ridge)[..., None] * np.array([1.0, 1.0, 1.08])
    cover = np.clip(half_width_px - lead_dist + 0.5, 0, 1)[..., None]  # anti-aliased coverage
    image = glass * (1 - cover) + lead * cover
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, optimize=True)


# --- swirl ------------------------------------------------------------------------------------

SCALE = 2  # drawn at twice the size and downsampled, so stroke edges come out anti-aliased

# (x, y, radius, strength) of the vortices, in output pixels; the sign sets the turning direction.
VORTICES = [
    (150, 150, 95, 1.0),
    (330, 120, 80, -0.9),
    (420, 250, 70, 1.0),
    (240, 280, 110, -1.1),
    (90, 360, 70, 0.8),
    (380, 420, 90, 0.9),
]
MOONS = [(150, 150, 34), (420, 250, 24), (380, 420, 28)]  # bright halos: (x, y, radius)


def flow(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit direction of a swirling field at (x, y): the curl of Gaussian vortices plus a drift."""
    u = np.full_like(x, 0.35)  # a slow wind to the right, so no region is still
    v = 0.12 * np.sin(y / 40.0)
    for cx, cy, r, s in VORTICES:
        dx, dy = x - cx, y - cy
        g = s * np.exp(-(dx**2 + dy**2) / (2 * r**2)) * (SIZE_PX / r)
        # Stream function psi = s * exp(-d^2 / 2r^2); velocity = (dpsi/dy, -dpsi/dx).
        u += -dy / r * g
        v += dx / r * g
    norm = np.hypot(u, v) + 1e-9
    return u / norm, v / norm


def paint_colour(x: float, y: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """Palette by place: yellow near the moons, ochre in the lower band, blues elsewhere."""
    for mx, my, mr in MOONS:
        d = np.hypot(x - mx, y - my) / mr
        if d < 1.0:
            base = (250, 226, 110) if d < 0.55 else (236, 196, 60)
            break
        if d < 1.9 and rng.random() < 0.7:
            base = (200, 210, 150) if rng.random() < 0.5 else (120, 170, 200)
            break
    else:
        hill = 440 + 22 * np.sin(x / 55.0)
        if y > hill:
            base = [(196, 140, 40), (160, 104, 30), (110, 84, 40), (214, 170, 70)][rng.integers(4)]
        else:
            palette = [(20, 44, 120), (34, 74, 160), (60, 110, 190), (16, 30, 82), (94, 140, 200)]
            weights = np.array([3, 3, 2, 2, 1.0])
            base = palette[rng.choice(len(palette), p=weights / weights.sum())]
            if rng.random() < 0.06:  # scattered yellow dabs keep the sky alive
                base = (226, 190, 70)
    jitter = rng.normal(0, 10, 3)
    return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter, strict=True))


def stroke_path(x: float, y: float, steps: int, step_px: float) -> list[tuple[float, float]]:
    """Follow the field from (x, y) for `steps` steps (midpoint rule); points in drawing pixels."""
    points = [(x * SCALE, y * SCALE)]
    for _ in range(steps):
        u, v = flow(np.array(x), np.array(y))
        um, vm = flow(np.array(x + u * step_px / 2), np.array(y + v * step_px / 2))
        x, y = x + float(um) * step_px, y + float(vm) * step_px
        points.append((x * SCALE, y * SCALE))
    return points


def draw_swirl(path: Path) -> None:
    """Thousands of short thick strokes along the field, each with a dark rim and a light ridge."""
    rng = np.random.default_rng(1889)
    size = SIZE_PX * SCALE
    canvas = Image.new("RGB", (size, size), (22, 40, 96))
    draw = ImageDraw.Draw(canvas)
    for layer, count in enumerate((2500, 3500)):
        width_px = (7.0, 5.0)[layer]  # a broad underpainting, then finer strokes on top
        for _ in range(count):
            x, y = rng.uniform(-10, SIZE_PX + 10, 2)
            colour = paint_colour(x, y, rng)
            points = stroke_path(x, y, steps=int(rng.integers(4, 9)), step_px=3.2)
            width = int(width_px * SCALE * rng.uniform(0.8, 1.2))
            dark = tuple(int(c * 0.55) for c in colour)
            light = tuple(int(c + (255 - c) * 0.45) for c in colour)
            # A rim of darker paint, the body, then a thin ridge of light off-centre.
            draw.line(points, fill=dark, width=width + 2 * SCALE, joint="curve")
            draw.line(points, fill=colour, width=width, joint="curve")
            ridge = [(px - SCALE, py - SCALE) for px, py in points[1:-1]]
            if len(ridge) > 1:
                draw.line(ridge, fill=light, width=max(2, width // 4), joint="curve")
    canvas = canvas.resize((SIZE_PX, SIZE_PX), Image.Resampling.LANCZOS)
    canvas.save(path, optimize=True)


def main() -> None:
    """Write both images next to this script."""
    draw_stained_glass(HERE / "stained_glass.png")
    draw_swirl(HERE / "swirl.png")


if __name__ == "__main__":
    main()
