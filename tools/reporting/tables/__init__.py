"""The report's tables, one module each, over the results API (``tools.reporting.results``).

``common``: what they share (reading a training step, formatting figures, ``EmptyReport``); ``summary``: the
text report laid out like the reference run; ``markdown``: its markdown tables; ``precision``: every precision;
``quality``: speed x quality; ``reference``: against the reference run; ``data_parallel``: the DDP table.
Each table is a function ``(measurements, machine, ...) -> str`` that raises ``EmptyReport`` where the results hold
none of what it shows.
"""
