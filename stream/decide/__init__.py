"""Rule files and decisions: schema, loading with file:line errors, deciders."""
