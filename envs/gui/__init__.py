"""GUI environments: agents operate real web pages in headless Chromium (Playwright).

- :class:`~turngym.envs.gui.env.GUIEnv`: the base (snapshot observation, ref-based tools).
- :class:`~turngym.envs.gui.miniwob.MiniWoBEnv`: MiniWoB++ tasks from the ``miniwob`` package.
- :class:`~turngym.envs.gui.webapps.WebAppEnv`: turngym's own shop, form and settings apps.

Nothing here imports Playwright until an environment starts its browser.
"""
