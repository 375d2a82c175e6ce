"""How cells run: the run of an experiment, from plan to merged results (``run``), one cell where
the model lives (``worker``), where cells run (``executors``: this process; ``ray_cluster``: a Ray
cluster), the machine's conditions and threads (``conditions``) and a cell's sensors (``sensors``)."""
