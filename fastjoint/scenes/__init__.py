"""The procedural scene kit: analogies with ground truth, written as Blender datasets."""

from fastjoint.scenes.make import make_datasets, output_folder, view_poses
from fastjoint.scenes.recipe import Recipe, find_recipe, list_recipes, load_recipe

__all__ = ["Recipe", "find_recipe", "list_recipes", "load_recipe", "make_datasets", "output_folder", "view_poses"]
