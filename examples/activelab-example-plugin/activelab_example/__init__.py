"""An example activelab plugin package."""
