"""Scene-kit recipes: TOML files under data/ that describe materials, lights, styles,
scenes built of primitives, and the cameras that photograph them.

A style is a set of changes applied identically to every scene (so the ground truth of a
restyled target exists): it may change any material's fields and may replace the lights.
Every problem is a UserError naming the recipe file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from fastjoint.errors import UserError

SHAPE_KINDS = ("sphere", "box", "cylinder")
PATTERN_KINDS = ("check", "stripes")
PATTERN_FRAMES = ("world", "local")
BACKDROP_KINDS = ("sky",)


@dataclass(frozen=True)
class Pattern:
    kind: str  # "check": a 3-D checkerboard; "stripes": bands across the frame's z axis
    scale: float  # cells (or bands) per world unit
    colours: tuple[tuple[float, float, float], tuple[float, float, float]]
    frame: str = "world"  # "world": world coordinates; "local": each shape's own frame (centre, rotation)


@dataclass(frozen=True)
class Material:
    colour: tuple[float, float, float]
    specular: float = 0.0
    shininess: float = 16.0
    pattern: Pattern | None = None


@dataclass(frozen=True)
class Light:
    direction: tuple[float, float, float]  # towards the light
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class Lighting:
    ambient: tuple[float, float, float]
    directional: tuple[Light, ...]


@dataclass(frozen=True)
class Backdrop:
    """An opaque background seen at infinity (a function of the ray's direction only)."""

    kind: str  # "sky": a vertical gradient with soft clouds above the horizon
    zenith: tuple[float, float, float] = (0.22, 0.42, 0.82)  # sky colour straight up
    horizon: tuple[float, float, float] = (0.72, 0.82, 0.93)  # sky colour at the horizon
    ground: tuple[float, float, float] = (0.42, 0.4, 0.36)  # below the horizon
    clouds: float = 0.45  # cloud cover in [0, 1]
    cloud_scale: float = 2.0  # cloud features per unit of the sky plane (larger: smaller clouds)
    seed: int = 0  # the cloud pattern
    scenes: tuple[str, ...] | None = None  # the scenes that have it in this style; None: all


@dataclass(frozen=True)
class Shape:
    kind: str
    material: str
    center: tuple[float, float, float]
    radius: float = 0.0  # sphere, cylinder
    size: tuple[float, float, float] = (0.0, 0.0, 0.0)  # box: full extents
    height: float = 0.0  # cylinder: along its local z axis
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # degrees about x, then y, then z


@dataclass(frozen=True)
class Views:
    train: int
    val: int
    test: int
    seed: int
    min_elevation: float  # degrees, training and validation views
    max_elevation: float
    test_elevation: float  # degrees, the test views ring the scene at this height


@dataclass(frozen=True)
class CameraRig:
    size: int  # width = height in pixels
    angle_x: float  # horizontal field of view, radians
    radius: float  # distance of every camera from the origin
    supersample: int  # rays per pixel side


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    camera: CameraRig
    views: Views
    materials: dict[str, Material]
    lighting: Lighting
    styles: dict[str, dict[str, Any]]  # style -> its raw changes (validated)
    scenes: dict[str, tuple[Shape, ...]]
    digest: str = field(default="")  # sha256 of the recipe file: the cache key of its datasets

    def backdrop(self, scene: str, style: str) -> Backdrop | None:
        """The opaque backdrop of a scene in a style, or None (transparent)."""
        backdrop = self.styles[style].get("backdrop")
        if backdrop is None or (backdrop.scenes is not None and scene not in backdrop.scenes):
            return None
        return backdrop

    def style(self, name: str) -> tuple[dict[str, Material], Lighting]:
        """Materials and lighting with a style's changes applied."""
        changes = self.styles[name]
        materials = dict(self.materials)
        for material, fields in changes.get("materials", {}).items():
            base = materials[material]
            materials[material] = dataclasses.replace(base, **fields)
        lighting = changes.get("lights", self.lighting)
        return materials, lighting


def find_recipe(name: str) -> Path:
    """A recipe file: `name` itself when it is a path to a .toml file, else data/<name>.toml
    in the working folder, else in the fastjoint checkout."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise UserError(f"{name}: scene-kit recipe not found")
        return Path(name)
    candidates = [Path("data") / f"{name}.toml", Path(__file__).resolve().parents[2] / "data" / f"{name}.toml"]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(f"data/{name}.toml: scene-kit recipe not found (see `fastjoint scenes list`)")


def list_recipes() -> list[Path]:
    """Recipe files visible from here, working folder first."""
    seen: dict[str, Path] = {}
    for folder in (Path("data"), Path(__file__).resolve().parents[2] / "data"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                seen.setdefault(path.stem, path)
    return list(seen.values())


def load_recipe(path: Path) -> Recipe:
    raw_bytes = path.read_bytes()
    try:
        raw = tomllib.loads(raw_bytes.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    try:
        return _parse(path, raw, hashlib.sha256(raw_bytes).hexdigest())
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


# --- parsing with one-line errors -----------------------------------------------------


class _Table:
    """A TOML table read key by key; leftover keys are errors."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise UserError(f"'{where}' must be a table")
        self.raw = dict(raw)
        self.where = where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def take(self, name: str, default: Any = ...) -> Any:
        if name not in self.raw:
            if default is ...:
                raise UserError(f"missing key '{self.key(name)}'")
            return default
        return self.raw.pop(name)

    def number(self, name: str, default: Any = ..., low: float | None = None) -> float:
        value = self.take(name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"'{self.key(name)}' must be a number, got {value!r}")
        if low is not None and value < low:
            raise UserError(f"'{self.key(name)}' must be at least {low}, got {value!r}")
        return float(value)

    def integer(self, name: str, default: Any = ..., low: int = 0) -> int:
        value = self.take(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise UserError(f"'{self.key(name)}' must be an integer of at least {low}, got {value!r}")
        return value

    def vector(self, name: str, default: Any = ..., unit: bool = False) -> tuple[float, float, float]:
        value = self.take(name, default)
        ok = isinstance(value, (list, tuple)) and len(value) == 3
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if ok and unit:
            ok = all(0.0 <= v <= 1.0 for v in value)
        if not ok:
            kind = "3 numbers in [0, 1]" if unit else "3 numbers"
            raise UserError(f"'{self.key(name)}' must be a list of {kind}, got {value!r}")
        return tuple(float(v) for v in value)

    def done(self) -> None:
        if self.raw:
            raise UserError(f"unknown key '{self.key(next(iter(self.raw)))}'")


def _parse(path: Path, raw: dict, digest: str) -> Recipe:
    top = _Table(raw, "")
    description = top.take("description", "")
    if not isinstance(description, str):
        raise UserError("'description' must be a string")

    cam = _Table(top.take("camera"), "camera")
    camera = CameraRig(
        size=cam.integer("size", low=8),
        angle_x=cam.number("angle_x", 0.6911112070083618, low=0.01),
        radius=cam.number("radius", 4.0, low=0.1),
        supersample=cam.integer("supersample", 2, low=1),
    )
    cam.done()

    vw = _Table(top.take("views"), "views")
    views = Views(
        train=vw.integer("train", low=1),
        val=vw.integer("val", low=1),
        test=vw.integer("test", low=1),
        seed=vw.integer("seed", 0),
        min_elevation=vw.number("min_elevation", -30.0),
        max_elevation=vw.number("max_elevation", 75.0),
        test_elevation=vw.number("test_elevation", 25.0),
    )
    vw.done()
    if not -90.0 <= views.min_elevation < views.max_elevation <= 90.0:
        raise UserError("'views.min_elevation' and 'views.max_elevation' need -90 <= min < max <= 90")

    lighting = _parse_lights(top.take("lights"), "lights")

    raw_materials = top.take("materials")
    if not isinstance(raw_materials, dict) or not raw_materials:
        raise UserError("'materials' must be a table with at least one material")
    materials = {name: Material(**_parse_material(value, f"materials.{name}", full=True)) for name, value in raw_materials.items()}

    raw_styles = top.take("styles")
    if not isinstance(raw_styles, dict) or "original" not in raw_styles:
        raise UserError("'styles' must be a table that includes [styles.original]")
    styles = {}
    for name, value in raw_styles.items():
        table = _Table(value, f"styles.{name}")
        changes: dict[str, Any] = {}
        raw_changes = table.take("materials", {})
        if not isinstance(raw_changes, dict):
            raise UserError(f"'styles.{name}.materials' must be a table")
        for material, fields in raw_changes.items():
            if material not in materials:
                raise UserError(f"'styles.{name}.materials.{material}' changes a material that 'materials' does not define")
            changes.setdefault("materials", {})[material] = _parse_material(fields, f"styles.{name}.materials.{material}", full=False)
        if "lights" in table.raw:
            changes["lights"] = _parse_lights(table.take("lights"), f"styles.{name}.lights")
        if "backdrop" in table.raw:
            changes["backdrop"] = _parse_backdrop(table.take("backdrop"), f"styles.{name}.backdrop")
        table.done()
        styles[name] = changes

    raw_scenes = top.take("scenes")
    if not isinstance(raw_scenes, dict) or not raw_scenes:
        raise UserError("'scenes' must be a table of shape lists ([[scenes.<name>]])")
    scenes = {}
    for name, shapes in raw_scenes.items():
        if not isinstance(shapes, list) or not shapes:
            raise UserError(f"'scenes.{name}' must be a non-empty list of shapes ([[scenes.{name}]])")
        scenes[name] = tuple(_parse_shape(shape, f"scenes.{name}[{i}]", materials) for i, shape in enumerate(shapes))
    top.done()
    for name, changes in styles.items():
        backdrop = changes.get("backdrop")
        for scene in (backdrop.scenes or ()) if backdrop else ():
            if scene not in scenes:
                raise UserError(f"'styles.{name}.backdrop.scenes' names an unknown scene {scene!r}")
    return Recipe(path.stem, path, description, camera, views, materials, lighting, styles, scenes, digest)


def _parse_lights(raw: Any, where: str) -> Lighting:
    table = _Table(raw, where)
    ambient = table.vector("ambient", (0.0, 0.0, 0.0))
    lights = table.take("directional", [])
    if not isinstance(lights, list):
        raise UserError(f"'{where}.directional' must be a list of lights ([[{where}.directional]])")
    parsed = []
    for i, light in enumerate(lights):
        lt = _Table(light, f"{where}.directional[{i}]")
        direction = lt.vector("direction")
        if sum(v * v for v in direction) == 0.0:
            raise UserError(f"'{lt.key('direction')}' must not be zero")
        parsed.append(Light(direction=direction, colour=lt.vector("colour")))
        lt.done()
    table.done()
    return Lighting(ambient, tuple(parsed))


def _parse_material(raw: Any, where: str, full: bool) -> dict[str, Any]:
    """A material's fields; with full=False (a style's change) every field is optional."""
    table = _Table(raw, where)
    fields: dict[str, Any] = {}
    if full or "colour" in table.raw:
        fields["colour"] = table.vector("colour", unit=True)
    for name, low in (("specular", 0.0), ("shininess", 1.0)):
        if name in table.raw:
            fields[name] = table.number(name, low=low)
    if "pattern" in table.raw:
        pt = _Table(table.take("pattern"), f"{where}.pattern")
        kind = pt.take("kind", "check")
        if kind not in PATTERN_KINDS:
            raise UserError(f"'{pt.key('kind')}' must be one of {', '.join(PATTERN_KINDS)}, got {kind!r}")
        colours = pt.take("colours", [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
        if not isinstance(colours, list) or len(colours) != 2:
            raise UserError(f"'{pt.key('colours')}' must be a list of two colours")
        pair = tuple(_Table({"c": c}, pt.key(f"colours[{i}]")).vector("c", unit=True) for i, c in enumerate(colours))
        frame = pt.take("frame", "world")
        if frame not in PATTERN_FRAMES:
            raise UserError(f"'{pt.key('frame')}' must be one of {', '.join(PATTERN_FRAMES)}, got {frame!r}")
        fields["pattern"] = Pattern(kind, pt.number("scale", 4.0, low=0.01), pair, frame)
        pt.done()
    table.done()
    return fields


def _parse_backdrop(raw: Any, where: str) -> Backdrop:
    table = _Table(raw, where)
    kind = table.take("kind", "sky")
    if kind not in BACKDROP_KINDS:
        raise UserError(f"'{table.key('kind')}' must be one of {', '.join(BACKDROP_KINDS)}, got {kind!r}")
    default = Backdrop(kind)
    fields: dict[str, Any] = {"kind": kind}
    for name in ("zenith", "horizon", "ground"):
        fields[name] = table.vector(name, getattr(default, name), unit=True)
    fields["clouds"] = table.number("clouds", default.clouds, low=0.0)
    if fields["clouds"] > 1.0:
        raise UserError(f"'{table.key('clouds')}' must be in [0, 1], got {fields['clouds']!r}")
    fields["cloud_scale"] = table.number("cloud_scale", default.cloud_scale, low=0.01)
    fields["seed"] = table.integer("seed", default.seed)
    scenes = table.take("scenes", None)
    if scenes is not None:
        if not isinstance(scenes, list) or not scenes or not all(isinstance(v, str) for v in scenes):
            raise UserError(f"'{table.key('scenes')}' must be a non-empty list of scene names")
        scenes = tuple(scenes)
    fields["scenes"] = scenes
    table.done()
    return Backdrop(**fields)


def _parse_shape(raw: Any, where: str, materials: dict[str, Material]) -> Shape:
    table = _Table(raw, where)
    kind = table.take("kind")
    if kind not in SHAPE_KINDS:
        raise UserError(f"'{table.key('kind')}' must be one of {', '.join(SHAPE_KINDS)}, got {kind!r}")
    material = table.take("material")
    if material not in materials:
        raise UserError(f"'{table.key('material')}' names an unknown material {material!r}")
    fields: dict[str, Any] = dict(kind=kind, material=material, center=table.vector("center"))
    fields["rotation"] = table.vector("rotation", (0.0, 0.0, 0.0))
    if kind in ("sphere", "cylinder"):
        fields["radius"] = table.number("radius", low=1e-3)
    if kind == "cylinder":
        fields["height"] = table.number("height", low=1e-3)
    if kind == "box":
        fields["size"] = table.vector("size")
        if min(fields["size"]) <= 0:
            raise UserError(f"'{table.key('size')}' must be positive")
    table.done()
    return Shape(**fields)


def with_size(recipe: Recipe, size: int) -> Recipe:
    """The recipe rendered at another image size."""
    return dataclasses.replace(recipe, camera=dataclasses.replace(recipe.camera, size=size))
