"""Pathfinder generator (after Linsley et al. 2018): are the two marker dots joined by one path?

Every image holds two target snakes of `contour_length` paddles (short dashes whose direction
turns by at most `continuity` x 0.4 rad from one paddle to the next) and distractor snakes of
`distractor_length` paddles; no two snakes touch or cross. Positive: both markers sit on the two
ends of the same target snake; negative: one marker on an end of each target snake. Both labels
therefore draw the same number of paddles; only the marker placement differs. The markers are at
least `seed_distance` pixels apart in both cases. Rendering is anti-aliased (4x supersampling).

Image i is a pure function of (seed, resolution, contour length, i); labels come in balanced
pairs (images 2j and 2j+1 have opposite labels, order drawn per pair), so any even count is
exactly 50/50. Settings per resolution follow LRA's (REFERENCE.md); where LRA says "default" the
paddle length is 5, the default of Linsley's generator. Our reading of two settings: `continuity`
scales the largest turn between paddles and `seed_distance` is the least distance between markers.
"""
from __future__ import annotations

import numpy as np

DIFFICULTIES = {"baseline": 6, "intermediate": 9, "hard": 14}
SUPERSAMPLE = 4
GRID = 4  # occupancy cells per pixel
MAX_TURN = 1.0  # radians: the largest turn between paddles is MAX_TURN / continuity


def settings(resolution: int, difficulty: str) -> dict:
    """Generator settings for one (resolution, difficulty); REFERENCE.md's table."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    c = DIFFICULTIES[difficulty]
    table = {  # marker radius, paddle length, thickness, seed distance, continuity, distractor paddles
        32: (1.5, 2.0, 0.5, 7.0, 1.0, 20),
        64: (2.5, 3.0, 1.0, 12.0, 1.8, 22),
        128: (3.0, 5.0, 1.5, 20.0, 1.8, 35),
    }
    if resolution not in table:
        raise ValueError(f"resolution must be one of 32, 64, 128, got {resolution}")
    radius, length, thick, seed_distance, continuity, total = table[resolution]
    if resolution == 32:  # LRA: 14//3 paddles, 20//(14//3) distractors
        d_len = max(c // 3, 1)
        d_count = total // d_len
    else:  # LRA: 14/3 and 22/(14/3) (or 35/...): truncated to whole paddles and snakes
        d_len = max(int(c / 3), 1)
        d_count = int(total / (c / 3))
    return dict(resolution=resolution, contour_length=c, marker_radius=radius, paddle_length=length,
                paddle_thickness=thick, seed_distance=seed_distance, continuity=continuity,
                distractor_length=d_len, distractor_count=d_count,
                paddle_gap=max(1.0, length / 2), separation=2 * thick + 1.0)


class _Retry(Exception):
    pass


def _paddle_points(p, theta, length):
    """Points every <= 0.5 px along paddles from p at angles theta [K] -> [K, n, 2]."""
    t = np.arange(max(int(np.ceil(length / 0.5)), 1) + 1) * (length / max(int(np.ceil(length / 0.5)), 1))
    direction = np.stack([np.cos(theta), np.sin(theta)], -1)  # [K, 2]
    return p + t[None, :, None] * direction[:, None, :]


class _Canvas:
    """Geometry of one image: snakes as lists of paddles (start, end), and an occupancy grid at
    GRID cells per pixel whose int bits say which snakes lie within `separation` of each cell."""

    def __init__(self, s, rng):
        self.s, self.rng = s, rng
        self.snakes = []
        self.lo = s["paddle_thickness"] + 0.5
        self.hi = s["resolution"] - self.lo
        self.size = s["resolution"] * GRID
        self.bits = np.zeros((self.size, self.size), np.int64)
        r = int(np.ceil(s["separation"] * GRID))
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        keep = dx ** 2 + dy ** 2 <= (s["separation"] * GRID) ** 2
        self.disc = np.stack([dy[keep], dx[keep]], -1)  # [C, 2] cell offsets within `separation`

    def _cells(self, pts):
        c = np.minimum(np.maximum((pts * GRID).astype(np.int64), 0), self.size - 1)
        return c[..., 1], c[..., 0]  # rows (y), columns (x)

    def _stamp(self, grid, pts, value):
        cy, cx = self._cells(pts.reshape(-1, 2))
        top = self.size - 1
        ys = np.minimum(np.maximum(cy[:, None] + self.disc[None, :, 0], 0), top)
        xs = np.minimum(np.maximum(cx[:, None] + self.disc[None, :, 1], 0), top)
        grid[ys, xs] |= value

    def _free(self, pts, owner, own=None):
        """[K] bool: candidates [K, n, 2] inside the image, clear of other snakes (and of `own`)."""
        inside = ((pts >= self.lo) & (pts <= self.hi)).all(axis=(1, 2))
        cy, cx = self._cells(pts)
        clear = ((self.bits[cy, cx] & ~(1 << owner)) == 0).all(axis=1)
        if own is not None:
            clear &= ~own[cy, cx].any(axis=1)
        return inside & clear

    def add_snake(self, num_paddles, tries=30, candidates=16, backtracks=8):
        """Grow a snake paddle by paddle; when stuck, step back two paddles (a few times)."""
        s, rng = self.s, self.rng
        owner = len(self.snakes)
        max_turn = MAX_TURN / s["continuity"]
        for _ in range(tries):
            # starts[i] = (start point of paddle i, heading of paddle i-1 or None)
            starts, own_pts, left = [(rng.uniform(self.lo, self.hi, 2), None)], [], backtracks
            own = np.zeros((self.size, self.size), bool)  # own paddles but the last two: no loops
            while len(own_pts) < num_paddles:
                p, prev = starts[len(own_pts)]
                theta = (rng.uniform(0, 2 * np.pi, candidates) if prev is None
                         else prev + rng.uniform(-max_turn, max_turn, candidates))
                pts = _paddle_points(p, theta, s["paddle_length"])
                ok = np.flatnonzero(self._free(pts, owner, own))
                if len(ok):
                    pts, th = pts[ok[0]], theta[ok[0]]
                    own_pts.append(pts)
                    del starts[len(own_pts):]
                    starts.append((pts[-1] + s["paddle_gap"] * np.array([np.cos(th), np.sin(th)]), th))
                    if len(own_pts) > 2:
                        self._stamp(own, own_pts[-3], True)
                    continue
                if left == 0 or len(own_pts) < 2:
                    break
                left -= 1
                del own_pts[-2:]
                own[:] = False
                for q in own_pts[:-2]:
                    self._stamp(own, q, True)
            if len(own_pts) == num_paddles:
                paddles = [(q[0], q[-1]) for q in own_pts]
                self.snakes.append(paddles)
                self._stamp(self.bits, np.concatenate(own_pts), 1 << owner)
                return paddles
        raise _Retry

    def add_marker(self, center, snake):
        """Reserve the marker's disc against later snakes (its own snake is exempt)."""
        r = self.s["marker_radius"]
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ring = np.concatenate([center[None], center + r * np.stack([np.cos(ang), np.sin(ang)], -1)])
        ring = np.clip(ring, self.lo, self.hi)
        if not self._free(ring[None], snake)[0]:
            raise _Retry
        self._stamp(self.bits, ring, 1 << snake)


def _layout(s, rng, label):
    """(paddles [(p0, p1)], markers [(x, y)]) of one image; raises _Retry when it does not fit."""
    canvas = _Canvas(s, rng)
    a = canvas.add_snake(s["contour_length"])
    b = canvas.add_snake(s["contour_length"])
    ends_a = [a[0][0], a[-1][1]]
    if label:
        markers = [(ends_a[0], 0), (ends_a[1], 0)]
    else:
        markers = [(ends_a[rng.integers(2)], 0), ([b[0][0], b[-1][1]][rng.integers(2)], 1)]
    if np.hypot(*(markers[0][0] - markers[1][0])) < s["seed_distance"]:
        raise _Retry
    for center, snake in markers:
        canvas.add_marker(center, snake)
    for _ in range(s["distractor_count"]):
        canvas.add_snake(s["distractor_length"])
    return [p for snake in canvas.snakes for p in snake], [m for m, _ in markers]


def render(s, paddles, markers) -> np.ndarray:
    """[R, R] uint8: anti-aliased paddles (width = thickness) and marker discs."""
    R, S = s["resolution"], SUPERSAMPLE
    canvas = np.zeros((R * S, R * S), np.float32)
    half = s["paddle_thickness"] / 2
    for p0, p1 in paddles:
        lo = np.floor((np.minimum(p0, p1) - half - 1) * S).astype(int).clip(0, R * S)
        hi = np.ceil((np.maximum(p0, p1) + half + 1) * S).astype(int).clip(0, R * S)
        ys, xs = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]]
        pts = (np.stack([xs, ys], -1) + 0.5) / S
        d = p1 - p0
        t = np.clip(((pts - p0) @ d) / max(d @ d, 1e-9), 0, 1)
        dist = np.linalg.norm(pts - (p0 + t[..., None] * d), axis=-1)
        canvas[lo[1]:hi[1], lo[0]:hi[0]] = np.maximum(canvas[lo[1]:hi[1], lo[0]:hi[0]], dist <= half)
    ys, xs = (np.mgrid[0:R * S, 0:R * S] + 0.5) / S
    for cx, cy in markers:
        canvas = np.maximum(canvas, (xs - cx) ** 2 + (ys - cy) ** 2 <= s["marker_radius"] ** 2)
    img = canvas.reshape(R, S, R, S).mean(axis=(1, 3))
    return np.rint(img * 255).astype(np.uint8)


def label_of(seed, s, index) -> int:
    """Images 2j and 2j+1 have opposite labels; which one is positive is drawn per pair."""
    flip = np.random.default_rng([seed, s["resolution"], s["contour_length"], 1 << 30, index // 2]).integers(2)
    return int((index + flip) % 2)


def make_image(seed, s, index):
    """(image [R, R] uint8, label) for image `index`: a pure function of (seed, settings, index)."""
    label = label_of(seed, s, index)
    rng = np.random.default_rng([seed, s["resolution"], s["contour_length"], index])
    for _ in range(1000):
        try:
            paddles, markers = _layout(s, rng, label)
            return render(s, paddles, markers), label
        except _Retry:
            continue
    raise RuntimeError(f"pathfinder: could not lay out image {index} with settings {s}")


def make_images(seed, s, start, stop):
    imgs, labels = zip(*(make_image(seed, s, i) for i in range(start, stop)))
    return np.stack(imgs), np.asarray(labels, np.uint8)
