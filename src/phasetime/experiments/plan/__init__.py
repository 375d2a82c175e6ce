"""What to measure: the experiment file (``spec``), its values checked (``options``), the grid of
cells and the tasks they become (``grid``), the experiment behind ``phasetime run --model``
(``quick``) and the checks made before anything runs (``checks``)."""
