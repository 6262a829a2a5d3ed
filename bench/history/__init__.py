"""The run history: every ``npabench run`` stored in SQLite (``store``), two runs compared
(``compare``), and what ``npabench history`` and ``npabench compare`` print (``commands``)."""
