"""One module per benchmark scenario; each adds a section and its targets to the report."""
