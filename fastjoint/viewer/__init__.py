"""The browser viewer: `fastjoint view RUN`.

`core` is everything but the browser (cameras, the cached style-free part of a frame, style
swaps, feature-plane painting) and is tested without one; `app` wires it to a viser server;
`paths` makes camera paths of the browser's views (keyframes, preview, the saved file).
"""

from fastjoint.viewer.core import Frame, Stroke, ViewerCore, camera_from_viser, compose, fit_painted, render_frame

__all__ = ["Frame", "Stroke", "ViewerCore", "camera_from_viser", "compose", "fit_painted", "render_frame"]
