"""The viewer panel's editing and comparing controls, and who may write to the run.

`EditControls` gives a browser's session (fastjoint.viewer.app.Session) its "Compare with"
choice, clicking the scene to recolour the material under the cursor (a colour, a falloff
and whether the material keeps its shading, which retune the last click's recolour), and
Undo. A viewer served beyond this
machine is read-only unless the user allows writes (`writes_allowed`).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

from fastjoint.viewer.recolour import Recolour

NONE = "none"  # "Compare with": no comparison
RECOLOUR_TO = (40, 90, 230)  # the colour picker's first colour
FALLOFF = 0.25  # feature units; the demo's paint spreads about 0.15 around its mean
READ_ONLY = "read-only: this viewer is served beyond this machine, so it cannot save styles (start it with --allow-writes to allow it)"


def is_loopback(host: str) -> bool:
    """Whether `host` serves this machine alone: a loopback address, or a name that resolves to loopback addresses only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def writes_allowed(host: str, allow_writes: bool) -> bool:
    """A viewer writes to the run (saves styles) when it serves this machine alone, or when the user allows it."""
    return allow_writes or is_loopback(host)


def rgb01(value: Any) -> tuple[float, float, float]:
    """A viser colour (0-255 per channel) in [0, 1]."""
    red, green, blue = (float(c) / 255.0 for c in value)
    return (red, green, blue)


class EditControls:
    """One session's "Compare with" choice, click-to-recolour controls and Undo (added where the panel is being built)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        core, gui = session.core, session.client.gui
        self.compare = gui.add_dropdown(
            "Compare with", [NONE, *core.styles], initial_value=NONE, hint="the right half of the view in this style"
        )
        with gui.add_folder("Recolour: click a material"):
            self.colour = gui.add_rgb("Recolour to", RECOLOUR_TO)
            self.falloff = gui.add_slider(
                "Falloff", min=0.02, max=1.0, step=0.01, initial_value=FALLOFF, hint="how far in the feature plane the colour reaches"
            )
            self.shading = gui.add_checkbox("Keep shading", True, hint="the material's shades follow the colour (off: one flat colour)")
            self.undo_button = gui.add_button("Undo", hint="forget the last recolour or paint")
        self.clicked: Recolour | None = None  # the last click's recolour, which the colour and falloff retune while it is the last edit
        session.client.scene.on_click()(lambda event: session._guarded(lambda: self._clicked(event)))
        self.compare.on_update(lambda _: session._guarded(self._compare_chosen))
        self.colour.on_update(lambda _: session._guarded(self._retune))
        self.falloff.on_update(lambda _: session._guarded(self._retune))
        self.shading.on_update(lambda _: session._guarded(self._retune))
        self.undo_button.on_click(lambda _: session._guarded(self._undo))

    def _clicked(self, event: Any) -> None:
        start = time.perf_counter()
        core = self.session.core
        colour, radius, shading = rgb01(self.colour.value), float(self.falloff.value), bool(self.shading.value)
        image = core.recolour_at(event.ray_origin, event.ray_direction, colour, radius, shading)
        self.clicked = core.edits[-1]
        self._shown(image, start)
        x, y = self.clicked.centre
        self.session.message.content = f"recoloured the material at feature ({x:.2f}, {y:.2f}); Undo takes it back"

    def _retune(self) -> None:
        core = self.session.core
        if self.clicked is None or not core.edits or core.edits[-1] is not self.clicked:
            return  # the colour and falloff apply to the next click
        start = time.perf_counter()
        self.clicked = self.clicked._replace(
            colour=rgb01(self.colour.value), radius=float(self.falloff.value), keep_shading=bool(self.shading.value)
        )
        self._shown(core.recolour(self.clicked, replace_last=True), start)

    def _undo(self) -> None:
        start = time.perf_counter()
        core = self.session.core
        image = core.undo()
        self.clicked = core.edits[-1] if core.edits and isinstance(core.edits[-1], Recolour) else None
        self._shown(image, start)
        self.session.message.content = f"undone; {len(core.edits)} edit(s) left"

    def _compare_chosen(self) -> None:
        start = time.perf_counter()
        value = self.compare.value
        self.session._show(self.session.core.set_compare(None if value == NONE else value), start)

    def _shown(self, image: Any, start: float) -> None:
        """Shows an edit's frame first, then brings the style lists and the feature plane up to date."""
        self.session._show(image, start)
        self.session._set_styles()
        self.session._update_plane()

    def refresh_styles(self) -> None:
        """The comparison's choices after the run's styles changed (a saved style, the painted one)."""
        core = self.session.core
        self.compare.options = [NONE, *core.styles]
        self.compare.value = core.compare or NONE
