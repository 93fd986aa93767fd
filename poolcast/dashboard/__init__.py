"""The read-only ops dashboard over the published outputs.

- :mod:`poolcast.dashboard.data`: the only module that reads the outputs database (read-only,
  one short connection per request; a table or view that is not published yet is reported,
  not raised);
- :mod:`poolcast.dashboard.app`: the Dash app (run history, leaderboard, fan charts, inventory
  plan), served by ``poolcast dashboard --work-dir DIR``.

Importing this package does not import Dash.
"""
