"""From rows to events: cells read and validated, event times resolved, events built and encoded as JSON."""
