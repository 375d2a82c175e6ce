"""What each call is fed and how its answer is scored: data sets (``datasets``), images and
prompts (``inputs``), the synthetic VQA set (``synthetic``), a cell's batch (``batch``) and the
metrics (``scoring``)."""
