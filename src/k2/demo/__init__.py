"""``k2 demo``: the story of what k2 claims, told on real data, each claim checked live.

``run_demo(settings, options, console)`` runs the sections in ``k2.demo.story.SECTIONS`` in a
world of their own (``k2.demo.world``) and returns the JSON summary it writes.
"""

from k2.demo.story import SECTIONS, run_demo
from k2.demo.world import DemoOptions

__all__ = ["SECTIONS", "DemoOptions", "run_demo"]
