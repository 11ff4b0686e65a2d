"""An analytic ray tracer for the scene kit: spheres, boxes and cylinders, Lambert plus a
Blinn-Phong specular term under directional lights and an ambient term. No shadows, so a
surface point's colour depends only on its material, normal and the view: the same
function in every scene of a recipe, which is what makes an analogy well posed.
"""

from __future__ import annotations

import math

import numpy as np

from fastjoint.scenes.recipe import Backdrop, Lighting, Material, Shape

EPS = 1e-6


def rotation_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (local -> world)."""
    ax, ay, az = (math.radians(d) for d in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def intersect(shape: Shape, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit ahead of each ray: t [N] (inf on a miss) and the world normal [N, 3]."""
    rotation = rotation_matrix(shape.rotation)
    o = (origins - np.asarray(shape.center)) @ rotation  # world -> local: R^T x, row-wise
    d = dirs @ rotation
    if shape.kind == "sphere":
        t, n = _sphere(o, d, shape.radius)
    elif shape.kind == "box":
        t, n = _box(o, d, np.asarray(shape.size) * 0.5)
    elif shape.kind == "cylinder":
        t, n = _cylinder(o, d, shape.radius, shape.height * 0.5)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}")
    return t, n @ rotation.T


def _sphere(o: np.ndarray, d: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    b = np.einsum("ij,ij->i", o, d)
    c = np.einsum("ij,ij->i", o, o) - radius * radius
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = -b - root
    t = np.where((disc >= 0) & (t > EPS), t, np.inf)
    normal = (o + d * np.where(np.isfinite(t), t, 0.0)[:, None]) / radius
    return t, normal


def _box(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(d == 0, EPS, d)
        t0 = (-half - o) * inv
        t1 = (half - o) * inv
    t_low = np.minimum(t0, t1)
    t_near = t_low.max(axis=1)
    t_far = np.maximum(t0, t1).min(axis=1)
    t = np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)
    axis = t_low.argmax(axis=1)
    normal = np.zeros_like(o)
    normal[np.arange(len(o)), axis] = -np.sign(d[np.arange(len(o)), axis])
    return t, normal


def _cylinder(o: np.ndarray, d: np.ndarray, radius: float, half_height: float) -> tuple[np.ndarray, np.ndarray]:
    # Side: (ox + t dx)^2 + (oy + t dy)^2 = r^2 with |z| <= h/2.
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius * radius
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    z = o[:, 2] + t_side * d[:, 2]
    t_side = np.where((a > EPS) & (disc >= 0) & (t_side > EPS) & (np.abs(z) <= half_height), t_side, np.inf)
    # Caps: z = +-h/2 with x^2 + y^2 <= r^2.
    t_cap = np.full(len(o), np.inf)
    cap_sign = np.zeros(len(o))
    for sign in (-1.0, 1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (sign * half_height - o[:, 2]) / d[:, 2]
        p = o + d * np.where(np.isfinite(t), t, 0.0)[:, None]
        ok = np.isfinite(t) & (t > EPS) & (p[:, 0] ** 2 + p[:, 1] ** 2 <= radius * radius) & (t < t_cap)
        t_cap = np.where(ok, t, t_cap)
        cap_sign = np.where(ok, sign, cap_sign)
    side = t_side <= t_cap
    t = np.where(side, t_side, t_cap)
    p = o + d * np.where(np.isfinite(t), t, 0.0)[:, None]
    normal = np.where(
        side[:, None],
        np.stack([p[:, 0] / radius, p[:, 1] / radius, np.zeros(len(o))], axis=1),
        np.stack([np.zeros(len(o)), np.zeros(len(o)), cap_sign], axis=1),
    )
    return t, normal


def albedo(material: Material, points: np.ndarray, shape: Shape | None = None) -> np.ndarray:  # [N, 3] -> [N, 3]
    """The material's colour at world points of `shape`.

    A pattern is a 3-D checkerboard ("check"), bands across the z axis ("stripes") or value noise
    blending its two colours ("noise", `value_noise`), in world coordinates or, for `frame = "local"`,
    in the shape's own frame: axes turned with it, measured from its centre in x and y and from its
    base (its lowest point along its own z axis) in z, so that the bands start at each part's base
    whatever its size and place.
    """
    pattern = material.pattern
    if pattern is None:
        return np.broadcast_to(np.asarray(material.colour), points.shape).copy()
    if pattern.frame == "local":
        if shape is None:
            raise ValueError("a local-frame pattern needs the shape it is drawn on")
        points = (points - np.asarray(shape.center)) @ rotation_matrix(shape.rotation)  # world -> local
        points = points + np.array([0.0, 0.0, _half_height(shape)])
    a, b = (np.asarray(c) for c in pattern.colours)
    if pattern.kind == "noise":
        mix = value_noise(points * pattern.scale)[:, None]
        return a * (1.0 - mix) + b * mix
    cells = np.floor(points * pattern.scale + 1e-4).astype(np.int64)
    parity = ((cells.sum(axis=1) if pattern.kind == "check" else cells[:, 2]) % 2)[:, None]
    return np.where(parity == 0, a, b)


NOISE_OCTAVES = (1.0, 0.5, 0.25, 0.125)  # weights of the octaves, each at twice the last's frequency


def value_noise(points: np.ndarray) -> np.ndarray:  # [N, 3] -> [N] in [0, 1]
    """Smooth 3-D value noise: a hashed random value at every integer lattice point, interpolated
    with a smoothstep inside each cell, summed over `NOISE_OCTAVES` and stretched to fill [0, 1]."""
    total = np.zeros(len(points))
    for octave, weight in enumerate(NOISE_OCTAVES):
        x = points * 2.0**octave + 17.0 * octave  # octaves shifted apart, so that their lattices do not line up
        cell = np.floor(x)
        f = x - cell
        f = f * f * (3.0 - 2.0 * f)  # smoothstep
        cell = cell.astype(np.int64)
        value = np.zeros(len(points))
        for corner in range(8):
            offset = np.array([(corner >> axis) & 1 for axis in range(3)])
            w = np.prod(np.where(offset == 1, f, 1.0 - f), axis=1)
            value += w * _lattice_random(cell + offset)
        total += weight * value
    total /= sum(NOISE_OCTAVES)
    return np.clip((total - 0.5) * 2.5 + 0.5, 0.0, 1.0)  # the sum of octaves sits near 0.5: stretch its contrast


def _lattice_random(cells: np.ndarray) -> np.ndarray:  # [N, 3] int64 -> [N] in [0, 1)
    """A fixed pseudo-random value per integer lattice point (a multiplicative hash)."""
    h = cells.astype(np.uint64) * np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D], dtype=np.uint64)
    h = h[:, 0] ^ h[:, 1] ^ h[:, 2]
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def _half_height(shape: Shape) -> float:
    """Distance from a shape's centre to its base along its own z axis."""
    if shape.kind == "box":
        return shape.size[2] / 2
    return shape.height / 2 if shape.kind == "cylinder" else shape.radius


def shade(
    base: np.ndarray,  # [N, 3] albedo
    normals: np.ndarray,  # [N, 3] unit
    view_dirs: np.ndarray,  # [N, 3] unit, from the camera towards the point
    material: Material,
    lighting: Lighting,
) -> np.ndarray:  # [N, 3] in [0, 1]
    """Ambient + Lambert + Blinn-Phong specular, clamped to [0, 1]."""
    colour = base * np.asarray(lighting.ambient)
    to_eye = -view_dirs
    for light in lighting.directional:
        direction = np.asarray(light.direction) / np.linalg.norm(light.direction)
        lambert = np.clip(normals @ direction, 0.0, None)[:, None]
        colour = colour + base * lambert * np.asarray(light.colour)
        if material.specular > 0:
            half = to_eye + direction
            half /= np.linalg.norm(half, axis=1, keepdims=True) + 1e-12
            spec = np.clip(np.einsum("ij,ij->i", normals, half), 0.0, None) ** material.shininess
            spec = np.where(lambert[:, 0] > 0, spec, 0.0)[:, None]
            colour = colour + material.specular * spec * np.asarray(light.colour)
    return np.clip(colour, 0.0, 1.0)


def trace(
    shapes: tuple[Shape, ...],
    materials: dict[str, Material],
    lighting: Lighting,
    origins: np.ndarray,  # [N, 3]
    dirs: np.ndarray,  # [N, 3] unit
) -> tuple[np.ndarray, np.ndarray]:  # colour [N, 3], coverage [N] in {0, 1}
    """Colour of the nearest surface along each ray; coverage 0 where the ray misses."""
    n = len(origins)
    best_t = np.full(n, np.inf)
    best_normal = np.zeros((n, 3))
    best_shape = np.full(n, -1)
    for i, shape in enumerate(shapes):
        t, normal = intersect(shape, origins, dirs)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_normal[closer] = normal[closer]
        best_shape[closer] = i
    colour = np.zeros((n, 3))
    hit = best_shape >= 0
    points = origins + dirs * np.where(hit, best_t, 0.0)[:, None]
    normals = best_normal / (np.linalg.norm(best_normal, axis=1, keepdims=True) + 1e-12)
    # Light the side of the surface that faces the camera.
    facing = np.einsum("ij,ij->i", normals, dirs) > 0
    normals[facing] *= -1.0
    for i, shape in enumerate(shapes):
        mask = best_shape == i
        if mask.any():
            material = materials[shape.material]
            colour[mask] = shade(albedo(material, points[mask], shape), normals[mask], dirs[mask], material, lighting)
    return colour, hit.astype(np.float64)


CLOUD_WAVES = 24  # sinusoids summed into the cloud field
CLOUD_COLOUR = np.array([0.97, 0.97, 0.98])
REFLECTION = 0.6  # below the horizon: this much of the mirrored sky, the rest ground colour


def sky(backdrop: Backdrop, dirs: np.ndarray) -> np.ndarray:  # [N, 3] unit, world z up -> [N, 3] in [0, 1]
    """A procedural sky seen at infinity: a function of the ray's direction only.

    Above the horizon, a vertical gradient from the horizon colour to the zenith colour
    (square root of the elevation's sine, so it changes fastest near the horizon) under
    soft clouds: a smooth field on the sphere of directions (a sum of seeded sinusoids
    along random directions), thresholded softly by the cover. Below the horizon, a
    calm lake: the mirrored sky mixed with the ground colour, so views from above (most of
    the kit's) still see detail.
    """
    up = dirs[:, 2]
    mirrored = np.concatenate([dirs[:, :2], np.abs(up)[:, None]], axis=1)
    t = np.sqrt(np.abs(up))[:, None]
    colour = np.asarray(backdrop.horizon) + (np.asarray(backdrop.zenith) - np.asarray(backdrop.horizon)) * t
    rng = np.random.default_rng(backdrop.seed)
    axes = rng.normal(size=(CLOUD_WAVES, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    frequencies = backdrop.cloud_scale * 2.0 * math.pi * np.exp(rng.uniform(0.0, math.log(4.0), CLOUD_WAVES))
    phases = rng.uniform(0.0, 2.0 * math.pi, CLOUD_WAVES)
    amplitudes = 1.0 / frequencies  # fewer fine details than coarse ones
    field = (amplitudes[None] * np.sin(frequencies[None] * (mirrored @ axes.T) + phases[None])).sum(axis=1)
    field = 0.5 + 0.5 * field / np.sqrt(0.5 * (amplitudes**2).sum()) / 2.5  # about [0, 1], mean 0.5
    threshold = 1.0 - backdrop.clouds
    cover = _smoothstep(threshold - 0.15, threshold + 0.15, field)[:, None]
    colour = colour * (1.0 - cover) + CLOUD_COLOUR * cover
    below = _smoothstep(0.0, -0.05, up)[:, None]
    lake = REFLECTION * colour + (1.0 - REFLECTION) * np.asarray(backdrop.ground)
    return np.clip(colour * (1.0 - below) + lake * below, 0.0, 1.0)


def _smoothstep(low: float, high: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
