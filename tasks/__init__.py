"""activelab's built-in plugins: tasks, the SSVAE trainer, data sets and query strategies.
They register through the same hooks a third-party plugin uses."""
