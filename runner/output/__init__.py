"""What xarch writes for people and tools: console text, reports (more moves here in the redesign)."""
