"""Per-session view-models: state and actions of each page, no layout (tested directly)."""
