"""Live view of a run: the pytest child reports progress events, the controller shows them.

``events``: the JSON-lines protocol between the child and the controller;
``pytest_events`` and ``step_gate``: the child's side (pytest hooks);
``display``: a status line on a terminal, plain lines elsewhere;
``monitor``: the controller's loop over the child's output, its events and the user.
"""
