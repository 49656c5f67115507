"""activelab's built-in plugins: tasks, the SSVAE trainer, data sets, query strategies and
analyzers. They register through the same hooks a third-party plugin uses."""
