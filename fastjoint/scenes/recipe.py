"""Scene-kit recipes: TOML files under data/ that describe materials, lights, styles,
scenes built of primitives, and the cameras that photograph them.

A style is a set of changes applied identically to every scene (so the ground truth of a
restyled target exists): it may change any material's fields and may replace the lights.
The dataclasses below are the file's schema, read by the validator the run config uses
(`fastjoint.schema`): every problem is a UserError naming the recipe file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib

from fastjoint.errors import UserError
from fastjoint.schema import Invalid, Range, from_dict

SHAPE_KINDS = ("sphere", "box", "cylinder")
PATTERN_KINDS = ("check", "stripes", "noise")
PATTERN_FRAMES = ("world", "local")
BACKDROP_KINDS = ("sky",)
MIN_EXTENT = 1e-3  # a shape's smallest radius, height or side

Vector = tuple[float, float, float]
Colour = Annotated[tuple[float, float, float], Range(0.0, 1.0)]  # RGB in [0, 1]


@dataclass(frozen=True)
class Pattern:
    # "check": a 3-D checkerboard; "stripes": bands across the frame's z axis; "noise": 3-D value noise (no two
    # places alike, so that feature matching finds the right match)
    kind: Literal[PATTERN_KINDS] = "check"
    scale: Annotated[float, Range(0.01)] = 4.0  # cells (or bands, or the noise's coarsest cells) per world unit
    colours: tuple[Colour, Colour] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    frame: Literal[PATTERN_FRAMES] = "world"  # "world": world coordinates; "local": each shape's own frame (centre, rotation)


@dataclass(frozen=True)
class Material:
    colour: Colour
    specular: Annotated[float, Range(0.0)] = 0.0
    shininess: Annotated[float, Range(1.0)] = 16.0
    pattern: Pattern | None = None


@dataclass(frozen=True)
class MaterialChange:
    """A style's change of a material: the fields it gives replace the material's."""

    colour: Colour | None = None
    specular: Annotated[float, Range(0.0)] | None = None
    shininess: Annotated[float, Range(1.0)] | None = None
    pattern: Pattern | None = None


@dataclass(frozen=True)
class Light:
    direction: Vector  # towards the light
    colour: Vector

    def __post_init__(self) -> None:
        if sum(v * v for v in self.direction) == 0.0:
            raise Invalid("direction", "must not be zero")


@dataclass(frozen=True)
class Lighting:
    ambient: Vector = (0.0, 0.0, 0.0)
    directional: tuple[Light, ...] = ()


@dataclass(frozen=True)
class Backdrop:
    """An opaque background seen at infinity (a function of the ray's direction only)."""

    kind: Literal[BACKDROP_KINDS] = "sky"  # "sky": a vertical gradient with soft clouds above the horizon
    zenith: Colour = (0.22, 0.42, 0.82)  # sky colour straight up
    horizon: Colour = (0.72, 0.82, 0.93)  # sky colour at the horizon
    ground: Colour = (0.42, 0.4, 0.36)  # below the horizon
    clouds: Annotated[float, Range(0.0, 1.0)] = 0.45  # cloud cover
    cloud_scale: Annotated[float, Range(0.01)] = 2.0  # cloud features per unit of the sky plane (larger: smaller clouds)
    seed: Annotated[int, Range(0)] = 0  # the cloud pattern
    scenes: tuple[str, ...] | None = None  # the scenes that have it in this style; None: all
    alpha: bool = False  # write these opaque photos as RGBA whose alpha is 255 everywhere (as some tools do)

    def __post_init__(self) -> None:
        if self.scenes == ():
            raise Invalid("scenes", "must be a non-empty list of scene names")


@dataclass(frozen=True)
class Shape:
    kind: Literal[SHAPE_KINDS]
    material: str
    center: Vector
    radius: float = 0.0  # sphere, cylinder
    size: Vector = (0.0, 0.0, 0.0)  # box: full extents
    height: float = 0.0  # cylinder: along its local z axis
    rotation: Vector = (0.0, 0.0, 0.0)  # degrees about x, then y, then z

    def __post_init__(self) -> None:
        used = {"sphere": ("radius",), "box": ("size",), "cylinder": ("radius", "height")}[self.kind]
        for name in ("radius", "size", "height"):
            value = getattr(self, name)
            if name not in used and value != getattr(Shape, name):
                raise Invalid(name, f"is not a field of a {self.kind}")
            if name in used and min(value if isinstance(value, tuple) else (value,)) < MIN_EXTENT:
                raise Invalid(name, f"must be given, at least {MIN_EXTENT:g}, for a {self.kind}, got {value!r}")


@dataclass(frozen=True)
class Views:
    train: Annotated[int, Range(1)]
    val: Annotated[int, Range(1)]
    test: Annotated[int, Range(1)]
    seed: Annotated[int, Range(0)] = 0
    min_elevation: float = -30.0  # degrees, training and validation views
    max_elevation: float = 75.0
    test_elevation: float = 25.0  # degrees, the test views ring the scene at this height

    def __post_init__(self) -> None:
        if not -90.0 <= self.min_elevation < self.max_elevation <= 90.0:
            raise Invalid("min_elevation", "and 'max_elevation' need -90 <= min < max <= 90")


@dataclass(frozen=True)
class CameraRig:
    size: Annotated[int, Range(8)]  # width = height in pixels
    angle_x: Annotated[float, Range(0.01)] = 0.6911112070083618  # horizontal field of view, radians
    radius: Annotated[float, Range(0.1)] = 4.0  # distance of every camera from the origin
    supersample: Annotated[int, Range(1)] = 2  # rays per pixel side


@dataclass(frozen=True)
class StyleChanges:
    """A style as the recipe writes it: `[styles.<name>]`."""

    materials: dict[str, MaterialChange] = field(default_factory=dict)
    lights: Lighting | None = None
    backdrop: Backdrop | None = None


@dataclass(frozen=True, kw_only=True)
class RecipeFile:
    """A recipe file as written; `load_recipe` checks what refers to what and makes a `Recipe`."""

    description: str = ""
    camera: CameraRig
    views: Views
    lights: Lighting
    materials: dict[str, Material]
    styles: dict[str, StyleChanges]
    scenes: dict[str, tuple[Shape, ...]]


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
        return _recipe(path, from_dict(RecipeFile, raw), hashlib.sha256(raw_bytes).hexdigest())
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


def _recipe(path: Path, file: RecipeFile, digest: str) -> Recipe:
    """The recipe, once what refers to what is checked: materials, scenes and styles."""
    if not file.materials:
        raise UserError("'materials' must be a table with at least one material")
    if "original" not in file.styles:
        raise UserError("'styles' must be a table that includes [styles.original]")
    if not file.scenes:
        raise UserError("'scenes' must be a table of shape lists ([[scenes.<name>]])")
    for name, shapes in file.scenes.items():
        if not shapes:
            raise UserError(f"'scenes.{name}' must be a non-empty list of shapes ([[scenes.{name}]])")
        for i, shape in enumerate(shapes):
            if shape.material not in file.materials:
                raise UserError(f"'scenes.{name}[{i}].material' names an unknown material {shape.material!r}")
    styles = {}
    for name, style in file.styles.items():
        changes: dict[str, Any] = {}
        for material, change in style.materials.items():
            if material not in file.materials:
                raise UserError(f"'styles.{name}.materials.{material}' changes a material that 'materials' does not define")
            given = {f.name: getattr(change, f.name) for f in dataclasses.fields(change) if getattr(change, f.name) is not None}
            changes.setdefault("materials", {})[material] = given
        if style.lights is not None:
            changes["lights"] = style.lights
        if style.backdrop is not None:
            for scene in style.backdrop.scenes or ():
                if scene not in file.scenes:
                    raise UserError(f"'styles.{name}.backdrop.scenes' names an unknown scene {scene!r}")
            changes["backdrop"] = style.backdrop
        styles[name] = changes
    return Recipe(path.stem, path, file.description, file.camera, file.views, file.materials, file.lights, styles, file.scenes, digest)


def with_size(recipe: Recipe, size: int) -> Recipe:
    """The recipe rendered at another image size."""
    return dataclasses.replace(recipe, camera=dataclasses.replace(recipe.camera, size=size))
